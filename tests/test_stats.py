"""Training statistics: known values on tiny labelled frames, checkpoint round trips, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

import ase_adapt
from ase_adapt.cli.main import main
from ase_adapt.errors import DataError
from ase_adapt.models.build import new_head
from ase_adapt.shift.spectrum import average_spectrum, laplacian_spectrum, spectral_distance
from ase_adapt.labels import prior_label_keys
from ase_adapt.shift.stats import (
    MissingStatisticsError,
    TrainingStats,
    attach_training_stats,
    compute_training_stats,
    distribution,
    stats_to_json,
)
from ase_adapt.train.data import write_frames
from ase_adapt.losses import LossKind, LossWeights, make_targets, model_loss


def labelled(atoms: Atoms, prefix: str = "") -> Atoms:
    """EMT reference labels and LJ prior labels (``prior_<prefix>energy``...) in info/arrays."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    atoms.info["energy"] = atoms.get_potential_energy()
    atoms.arrays["forces"] = atoms.get_forces()
    atoms.calc = LennardJones(sigma=1.0, epsilon=0.1, rc=4.0)
    atoms.info[f"prior_{prefix}energy"] = atoms.get_potential_energy()
    atoms.arrays[f"prior_{prefix}forces"] = atoms.get_forces()
    atoms.calc = None
    return atoms


@pytest.fixture(scope="module")
def frames() -> list[Atoms]:
    out = []
    for k, name in enumerate(["CH4", "H2O", "NH3", "C2H4", "CH3OH", "HCN"]):
        a = molecule(name)
        a.rattle(0.05, seed=k)
        out.append(labelled(a))
    iso = Atoms("H", positions=[[0, 0, 0]])
    iso.info.update(energy=-13.6, config_type="IsolatedAtom")
    return out[:3] + [iso] + out[3:]


def by_hand_norms(frames: list[Atoms], key: str) -> np.ndarray:
    return np.array([np.linalg.norm(a.arrays[key], axis=1).mean() for a in frames if len(a) > 1])


def single_batch_loss(model, frames, head: str, ek: str, fk: str, weights: LossWeights) -> float:
    data = [a for a in frames if len(a) > 1]
    graph = ase_adapt.build_graph(data, model.cutoff, dtype=model.dtype)
    labels = [{"energy": a.info[ek], "forces": a.arrays[fk]} for a in data]
    targets = make_targets(labels, [len(a) for a in data], model.dtype)
    return float(model_loss(model, graph, targets, head, weights)[0])


def test_prior_label_keys_and_distribution() -> None:
    assert prior_label_keys("prior") == ("prior_energy", "prior_forces", "prior_stress")
    assert prior_label_keys("prior:gfn-ff") == ("prior_gfn-ff_energy", "prior_gfn-ff_forces", "prior_gfn-ff_stress")
    for bad in ("main", "prior:", "priors"):
        with pytest.raises(ValueError):
            prior_label_keys(bad)
    d = distribution([1.0, 2.0, 3.0, 4.0])
    assert d["mean"] == 2.5 and d["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert d["q50"] == 2.5 and d["q05"] == pytest.approx(1.15) and d["n"] == 4
    assert distribution([7.0])["std"] == 0.0


def test_statistics_have_the_values_computed_by_hand(make_model, frames) -> None:
    model = make_model(dtype="float64")
    stats = compute_training_stats(model, frames, batch_size=2, progress=False)
    assert stats["elements"] == [1, 6, 7, 8] and stats["n_frames"] == 6 and stats["n_isolated_skipped"] == 1
    assert stats["cutoff"] == model.cutoff == 4.0
    ref, prior = by_hand_norms(frames, "forces"), by_hand_norms(frames, "prior_forces")
    assert stats["force_norm_reference"]["mean"] == pytest.approx(ref.mean(), rel=1e-12)
    assert stats["force_norm_reference"]["std"] == pytest.approx(ref.std(ddof=1), rel=1e-12)
    assert stats["force_norm_reference"]["q95"] == pytest.approx(np.percentile(ref, 95), rel=1e-12)
    assert stats["prior_force_norm_by_head"]["prior"]["mean"] == pytest.approx(prior.mean(), rel=1e-12)
    assert set(stats["prior_force_norm_by_head"]) == {"prior"}

    spectra = [laplacian_spectrum(a, 4.0) for a in frames if len(a) > 1]
    mean = average_spectrum(spectra)
    assert isinstance(stats["spectrum_mean"], np.ndarray) and stats["spectrum_mean"].shape == (6,)
    np.testing.assert_allclose(stats["spectrum_mean"], mean, atol=1e-12)
    distances = [spectral_distance(s, mean) for s in spectra]
    assert stats["spectral_distance"]["mean"] == pytest.approx(np.mean(distances), rel=1e-10)
    assert stats["spectral_distance"]["n"] == 6

    # batched pooling equals the one loss definition on a single batch of every frame
    w = LossWeights()
    assert stats["prior_loss_by_head"]["prior"] == pytest.approx(
        single_batch_loss(model, frames, "prior", "prior_energy", "prior_forces", w), rel=1e-10)
    assert stats["main_loss"] == pytest.approx(single_batch_loss(model, frames, "main", "energy", "forces", w), rel=1e-10)
    assert stats["loss_weights"] == {"energy": 1.0, "forces": 10.0, "stress": 0.0, "kind": "mse", "huber_delta": 0.01,
                                           "energy_offset": False}


def test_huber_pooling_matches_a_single_batch(make_model, frames) -> None:
    model = make_model(dtype="float64")
    w = LossWeights(energy=2.0, forces=5.0, kind=LossKind.HUBER, huber_delta=0.05)
    stats = compute_training_stats(model, frames, loss_weights=w, batch_size=4, progress=False)
    assert stats["prior_loss_by_head"]["prior"] == pytest.approx(
        single_batch_loss(model, frames, "prior", "prior_energy", "prior_forces", w), rel=1e-10)
    assert TrainingStats.from_dict(stats).loss_weights() == w


def test_prior_heads_keys_and_missing_labels(make_model, frames) -> None:
    model = make_model(dtype="float64")
    new_head(model, "prior:lj")
    lj = [labelled(a, prefix="lj_") if len(a) > 1 else a for a in frames]
    for a in lj:
        for key in ("prior_energy", "prior_forces"):
            a.info.pop(key, None)
            if key in a.arrays:
                del a.arrays[key]
    stats = compute_training_stats(model, lj, progress=False)
    assert set(stats["prior_loss_by_head"]) == {"prior:lj"} and set(stats["prior_force_norm_by_head"]) == {"prior:lj"}
    assert stats["label_keys"]["prior:lj"] == ["prior_lj_energy", "prior_lj_forces"]
    assert any("'prior'" in n for n in stats["notes"])
    with pytest.raises(DataError, match="prior_energy"):
        compute_training_stats(model, lj, prior_heads=["prior"], progress=False)
    # a frame without reference forces (a prior-only frame of joint training) is left out of them
    no_forces = [a.copy() for a in frames]
    del no_forces[4].arrays["forces"]
    partial = compute_training_stats(model, no_forces, progress=False)
    assert partial["force_norm_reference"]["n"] == stats["n_frames"] - 1


def test_round_trip_through_safetensors_and_pt(make_model, frames, tmp_path: Path) -> None:
    model = make_model(dtype="float64")
    stats = compute_training_stats(model, frames, progress=False)
    attach_training_stats(model, stats)
    for suffix in (".safetensors", ".pt"):
        loaded = ase_adapt.load_model(model.save(tmp_path / f"m{suffix}")).training_stats
        assert set(loaded) == set(stats)
        assert isinstance(loaded["spectrum_mean"], np.ndarray) and loaded["spectrum_mean"].dtype == np.float64
        np.testing.assert_array_equal(loaded["spectrum_mean"], stats["spectrum_mean"])
        assert {k: v for k, v in loaded.items() if k != "spectrum_mean"} == \
            {k: v for k, v in stats.items() if k != "spectrum_mean"}
        view = TrainingStats.from_dict(loaded)
        assert view.elements == (1, 6, 7, 8)
        assert view.prior_force_norm("prior") == stats["prior_force_norm_by_head"]["prior"]
        assert view.spectral_distance_std == stats["spectral_distance"]["std"]
        assert view.prior_loss("prior") == stats["prior_loss_by_head"]["prior"]


def test_missing_statistics_give_a_clear_error(make_model) -> None:
    model = make_model()
    with pytest.raises(MissingStatisticsError, match="ase-adapt stats"):
        TrainingStats.from_model(model)
    with pytest.raises(MissingStatisticsError, match="spectrum_mean"):
        TrainingStats.from_dict({"elements": [1], "cutoff": 4.0, "n_frames": 1, "spectral_distance": {}})
    view = TrainingStats.from_dict({"elements": [1], "cutoff": 4.0, "n_frames": 1, "spectrum_mean": [0.0, 2.0],
                                    "spectral_distance": {"mean": 0.0, "std": 0.0, "n": 1}})
    with pytest.raises(MissingStatisticsError, match="prior"):
        view.prior_force_norm()
    with pytest.raises(MissingStatisticsError, match="prior:xtb"):
        view.prior_loss("prior:xtb")
    with pytest.raises(ValueError, match="cutoff"):
        attach_training_stats(make_model(cutoff=5.0), view)
    assert json.loads(json.dumps(stats_to_json(view)))["spectrum_mean"] == [0.0, 2.0]


def test_cli_writes_only_the_given_outputs(make_model, frames, tmp_path: Path, monkeypatch, capsys) -> None:
    ckpt = make_model().save(tmp_path / "in" / "model.safetensors")
    data = write_frames(tmp_path / "in" / "train.xyz", frames)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out, js = tmp_path / "out" / "model.pt", tmp_path / "out" / "stats.json"
    args = ["stats", "--model", str(ckpt), "--data", str(data), "--quiet", "--batch-size", "3"]
    assert main(args + ["--out", str(out), "--json", str(js)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.pt", "stats.json"]
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in ckpt.parent.iterdir()) == ["model.safetensors", "train.xyz"]
    stats = ase_adapt.load_model(out).training_stats
    written = json.loads(js.read_text())
    assert written["elements"] == [1, 6, 7, 8] and written["n_frames"] == 6
    np.testing.assert_allclose(written["spectrum_mean"], stats["spectrum_mean"])
    assert written["prior_loss_by_head"] == stats["prior_loss_by_head"]
    capsys.readouterr()
    assert main(args) == 0  # neither output: the summary is the result
    assert "prior loss  prior:" in capsys.readouterr().out and list(cwd.iterdir()) == []
    # YAML settings, relative paths taken relative to the YAML file
    (tmp_path / "in" / "stats.yaml").write_text("model: model.safetensors\ndata: train.xyz\njson: s2.json\nloss: huber\n")
    assert main(["stats", "--config", str(tmp_path / "in" / "stats.yaml"), "--quiet"]) == 0
    assert json.loads((tmp_path / "in" / "s2.json").read_text())["loss_weights"]["kind"] == "huber"


def test_cli_reports_bad_input(make_model, tmp_path: Path, capsys) -> None:
    ckpt = make_model().save(tmp_path / "model.safetensors")
    assert main(["stats", "--model", str(ckpt), "--data", str(tmp_path / "missing.xyz")]) == 2
    assert "missing.xyz" in capsys.readouterr().err
    (tmp_path / "bad.xyz").write_text("3\nnot a header\nH 0 0\n")
    assert main(["stats", "--model", str(ckpt), "--data", str(tmp_path / "bad.xyz")]) == 2
    assert "bad.xyz" in capsys.readouterr().err
    assert main(["stats", "--data", str(tmp_path / "bad.xyz")]) == 2
    assert "--model" in capsys.readouterr().err
    assert list(p.name for p in tmp_path.iterdir() if p.suffix not in (".safetensors", ".xyz")) == []
