"""``ase-adapt evaluate``: the evaluation contract on one molecule, with and without adaptation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_adapt.cli.main import main
from ase_adapt.priors import make_prior
from ase_adapt.testing import toy_frames
from ase_adapt.train import OptimSettings, TrainSettings, train_model
from ase_adapt.train.data import write_frames

KEYS = ("n_frames", "force_mae_mev_per_A", "energy_mae_mev_per_atom", "energy_mae_offset_corrected_mev_per_atom",
        "shift", "radius", "ttt", "unknown_elements")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny TTT-ready model with a prior:lj head, and EMT-labelled frames of two molecules."""
    from conftest import tiny_model  # noqa: PLC0415

    root = tmp_path_factory.mktemp("evaluate")
    frames = toy_frames(24, seed=3, prior=make_prior("lj"))
    for a in frames:
        a.info["prior_lj_energy"] = a.info.pop("prior_energy")
        a.arrays["prior_lj_forces"] = a.arrays.pop("prior_forces")
    model = tiny_model(elements=("H", "C", "O"), heads=("main", "prior:lj"))
    s = TrainSettings(prior_heads=("prior:lj",), optim=OptimSettings(epochs=4, progress=False))
    train_model(model, frames, s, root / "run")
    rng = np.random.default_rng(0)
    for name, formula in (("ethanol", "CH3CH2OH"), ("methylamine", "H3CNH2")):
        out = []
        for _ in range(12):
            a = molecule(formula)
            a.positions += rng.normal(0, 0.05, a.positions.shape)
            b = a.copy()
            b.calc = EMT()
            a.calc = SinglePointCalculator(a, energy=b.get_potential_energy(), forces=b.get_forces())
            out.append(a)
        write_frames(root / f"{name}.xyz", out)
    return root


def _evaluate(files, *args) -> dict:
    out = files / "out.json"
    assert main(["evaluate", "--model", str(files / "run" / "best.safetensors"), *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_base_model(files):
    r = _evaluate(files, "--data", str(files / "ethanol.xyz"))
    for key in KEYS:
        assert key in r
    assert r["n_frames"] == 12 and r["ttt"] is None and r["radius"] is None
    assert r["energy_mae_offset_corrected_mev_per_atom"] <= r["energy_mae_mev_per_atom"] + 1e-9
    assert set(r["shift"]["detectors"]) == {"elements", "force_norm", "connectivity"}


def test_ttt_and_rr_with_a_prior(files):
    r = _evaluate(files, "--data", str(files / "ethanol.xyz"), "--prior", "lj", "--ttt", "--rr",
                  "--ttt-steps", "20", "--ttt-lr", "1e-2")
    assert r["ttt"]["steps"] > 0 and r["ttt"]["head"] == "prior:lj"
    assert r["ttt"]["loss_after"] <= r["ttt"]["loss_before"]
    assert r["radius"] is not None and "prior_force_mae_mev_per_A" in r


def test_sgdml_prior_is_fitted_on_the_first_frames_only(files):
    r = _evaluate(files, "--data", str(files / "ethanol.xyz"), "--sgdml-prior-frames", "6")
    assert r["n_frames"] == 6 and r["n_frames_total"] == 12
    assert r["prior_kind"] == "sgdml" and r["prior_force_mae_mev_per_A"] > 0


def test_unseen_elements_are_refused_by_default_and_mapped_on_request(files, capsys):
    """One default in every command that predicts: refuse (evaluate alone used to map)."""
    code = main(["evaluate", "--model", str(files / "run" / "best.safetensors"), "--data",
                 str(files / "methylamine.xyz")])
    assert code == 2 and "not in the model's training elements" in capsys.readouterr().err
    r = _evaluate(files, "--data", str(files / "methylamine.xyz"), "--unknown-elements", "nearest")
    assert r["unknown_elements"] == {"policy": "nearest", "mapped": {"N": "C"}}
    assert r["shift"]["detectors"]["elements"]["shifted"] and np.isfinite(r["force_mae_mev_per_A"])


def test_bad_requests_fail_clearly(files, tmp_path, capsys):
    model = str(files / "run" / "best.safetensors")
    assert main(["evaluate", "--model", model, "--data", str(files / "ethanol.xyz"), "--ttt"]) == 2
    assert "needs a prior" in capsys.readouterr().err
    assert main(["evaluate", "--model", model, "--data", str(files / "ethanol.xyz"), "--prior", "emt",
                 "--ttt"]) == 2
    assert "prior:emt" in capsys.readouterr().err
    assert main(["evaluate", "--model", model, "--data", str(files / "ethanol.xyz"), "--prior", "lj", "--ttt",
                 "--ttt-blocks", "99"]) == 2
    assert "block must be in" in capsys.readouterr().err
    mixed = tmp_path / "mixed.xyz"
    from ase_adapt.train.data import read_frames

    write_frames(mixed, read_frames(files / "ethanol.xyz")[:2] + read_frames(files / "methylamine.xyz")[:2])
    assert main(["evaluate", "--model", model, "--data", str(mixed)]) == 2
    assert "one molecule" in capsys.readouterr().err


def test_many_files_are_tasks_that_a_rerun_skips(files, tmp_path, capsys):
    args = ["evaluate", "--model", str(files / "run" / "best.safetensors"), "--data", str(files / "ethanol.xyz"),
            str(files / "methylamine.xyz"), "--unknown-elements", "nearest", "--out", str(tmp_path / "batch"), "--quiet"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "batch" / "evaluate.json").read_text())
    assert summary["computed"] == 2 and set(summary["molecules"]) == {"ethanol", "methylamine"}
    single = _evaluate(files, "--data", str(files / "ethanol.xyz"))
    assert summary["molecules"]["ethanol"]["force_mae_mev_per_A"] == single["force_mae_mev_per_A"]
    assert "methylamine" in capsys.readouterr().out
    assert main(args) == 0
    assert json.loads((tmp_path / "batch" / "evaluate.json").read_text())["reused"] == 2
    assert main(args[:-3] + ["--json", str(tmp_path / "x.json")]) == 2  # several files need --out


def test_many_files_on_dask_match_the_serial_run(files, tmp_path):
    base = ["evaluate", "--model", str(files / "run" / "best.safetensors"), "--data", str(files / "ethanol.xyz"),
            str(files / "methylamine.xyz"), "--unknown-elements", "nearest", "--prior", "lj", "--ttt", "--ttt-steps", "3",
            "--quiet"]
    assert main([*base, "--out", str(tmp_path / "serial")]) == 0
    assert main([*base, "--out", str(tmp_path / "dask"), "--dask", "local", "--workers", "2"]) == 0
    serial, dask = (json.loads((tmp_path / d / "evaluate.json").read_text()) for d in ("serial", "dask"))
    assert dask["executor"] == "dask:local" and dask["molecules"] == serial["molecules"]


def test_transductive_ttt_learns_from_the_evaluated_frames(files, capsys):
    r = _evaluate(files, "--data", str(files / "ethanol.xyz"), "--prior", "lj", "--ttt", "--ttt-on-frames",
                  "--ttt-steps", "20", "--ttt-lr", "1e-2")
    assert r["settings"]["ttt_on_frames"] is True
    assert r["ttt"]["n_samples"] == 12 and r["ttt"]["steps"] > 0  # the 12 frames, no rattled copies or MD
    md = _evaluate(files, "--data", str(files / "ethanol.xyz"), "--prior", "lj", "--ttt", "--ttt-steps", "20",
                   "--ttt-lr", "1e-2")
    assert md["ttt"]["n_samples"] != 12 and md["settings"]["ttt_on_frames"] is False
    model = str(files / "run" / "best.safetensors")
    assert main(["evaluate", "--model", model, "--data", str(files / "ethanol.xyz"), "--prior", "lj",
                 "--ttt-on-frames"]) == 2
    assert "needs --ttt" in capsys.readouterr().err


def test_transductive_ttt_never_reads_the_structures_labels(files):
    """Structures carrying NaN reference labels adapt exactly as bare ones: only the prior labels them."""
    from ase_adapt import AdaptiveCalculator, load_model
    from ase_adapt.adapt.ttt import TTTSettings
    from ase_adapt.train.data import read_frames

    model = load_model(files / "run" / "best.safetensors")
    frames = read_frames(files / "ethanol.xyz")
    bare = [a.copy() for a in frames]
    for a in frames:
        a.calc = SinglePointCalculator(a, energy=np.nan, forces=np.full((len(a), 3), np.nan))
    s = TTTSettings(max_steps=10, lr=1e-2, guard=None)
    results = []
    for structures in (frames[1:], bare[1:]):
        calc = AdaptiveCalculator(model, "lj", ttt=s, adapt_when="always", detectors=False)
        calc.check(bare[0].copy(), structures=structures)
        assert calc.ttt_result.n_samples == len(frames) and not calc.ttt_result.rolled_back
        results.append(calc.ttt_result.loss_after)
    assert results[0] == results[1]
    methylamine = read_frames(files / "methylamine.xyz")
    with pytest.raises(ValueError, match="does not hold the atoms"):
        AdaptiveCalculator(model, "lj", ttt=s, adapt_when="always", detectors=False).check(
            bare[0].copy(), structures=methylamine[:2])
