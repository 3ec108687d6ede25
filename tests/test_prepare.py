"""``ase-adapt prepare`` on SevenNet-0 (from the sevenn wheel, offline): prior heads, replay, checkpoints.

Tiny data: rattled 4-atom Cu cells with an EMT prior, a few epochs, one CPU thread.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write
from ase.md.verlet import VelocityVerlet

import sevenn  # noqa: E402,F401  (the test extra installs it: a missing sevenn is a failure)

import ase_adapt  # noqa: E402
from ase_adapt import AdaptiveCalculator, CheckpointError, build_graph  # noqa: E402
from ase_adapt.adapt.ttt import TTTSettings  # noqa: E402
from ase_adapt.cli.main import main  # noqa: E402
from ase_adapt.models.sevennet import SevenNetModel  # noqa: E402
from ase_adapt.train import OptimSettings  # noqa: E402
from ase_adapt.priors import make_prior  # noqa: E402
from ase_adapt.train.prepare import PREPARE_OPTIM, PrepareSettings, prepare_model  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cells(n: int = 12, seed: int = 0) -> list:
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.61 + 0.03 * (k % 3 - 1), cubic=True)
        a.rattle(0.08, seed=seed + k)
        out.append(a)
    return out


def _settings(epochs: int, **kw) -> PrepareSettings:
    import dataclasses

    return PrepareSettings(optim=dataclasses.replace(PREPARE_OPTIM, epochs=epochs, progress=False), **kw)


@pytest.fixture(scope="module")
def base() -> SevenNetModel:
    return ase_adapt.load_model("sevennet:7net-0")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    path = tmp_path_factory.mktemp("prepared") / "7net-0-emt.safetensors"
    result = prepare_model("sevennet:7net-0", _cells(), [make_prior("emt")], _settings(6), out=path)
    return result, path


def _predict(model, atoms, head):
    g = build_graph(atoms, model.cutoff, dtype=model.dtype)
    out = model(g, head, compute_stress=True)
    return float(out["energy"]), out["forces"].double().numpy(), out["stress"].double().numpy()


def _emt_forces_rms(frames) -> float:
    f = []
    for a in frames:
        b = a.copy()
        b.calc = EMT()
        f.append(b.get_forces())
    return float(np.sqrt(np.mean(np.concatenate(f) ** 2)))


# ---------------------------------------------------------------------------- prepare
def test_frozen_prepare_keeps_the_main_head_and_learns_the_prior(prepared, base):
    result, _ = prepared
    model = result.model
    assert model.head_names == ["main", "prior:emt"]
    for a in _cells(3, seed=100):  # new structures: the main head is SevenNet-0 itself
        e0, f0, s0 = _predict(base, a, "main")
        e1, f1, s1 = _predict(model, a, "main")
        assert e1 == e0 and np.array_equal(f1, f0) and np.array_equal(s1, s0)
    assert result.report["main_change"] == {"max_force_mev": 0.0, "max_energy_mev_per_atom": 0.0}
    rmse = result.report["prior_force_rmse"]["prior:emt"]
    label_rms = 1e3 * _emt_forces_rms(_cells()[-3:])
    assert rmse["after_mev"] < 0.5 * rmse["before_mev"], rmse
    assert rmse["after_mev"] < label_rms, (rmse, label_rms)  # better than predicting zero forces
    # E0s: EMT's isolated Cu atom
    iso = ase_adapt.train.isolated_atom_e0(["Cu"], EMT())[29]
    assert model.heads["prior:emt"].e0[model.elements.index(29)] == pytest.approx(iso)
    assert result.report["e0"]["prior:emt"]["source"] == "isolated atoms of the prior"


def test_statistics_are_computed_and_stored(prepared):
    result, path = prepared
    stats = result.model.training_stats
    assert stats["elements"] == [29] and stats["n_frames"] == 12
    assert set(stats["prior_force_norm_by_head"]) == {"prior:emt"} and stats["prior_loss_by_head"]["prior:emt"] > 0
    assert stats["training"]["prepare"]["priors"] == ["emt"]
    loaded = ase_adapt.load_model(path)
    assert json.dumps(loaded.training_stats["training"]) == json.dumps(stats["training"])
    assert np.array_equal(loaded.training_stats["spectrum_mean"], stats["spectrum_mean"])


def test_train_representation_with_replay_stays_close(base):
    s = _settings(3, train_representation=True, joint_epochs=2)
    result = prepare_model(ase_adapt.load_model("sevennet:7net-0"), _cells(8), [make_prior("emt")], s)
    change = result.report["main_change"]
    assert 0 < change["max_force_mev"] < 150 and change["max_energy_mev_per_atom"] < 100, change
    assert [r["stage"] for r in result.history] == ["prior-heads"] * 3 + ["joint-replay"] * 2
    original = dict(base.named_parameters())
    moved = {n for n, p in result.model.named_parameters() if n in original and not torch.equal(p, original[n])}
    assert any(n.startswith("interactions.") for n in moved)
    assert not any(n.startswith("heads.main.") for n in moved)  # the main head's own weights stay frozen


# ---------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip(prepared):
    result, path = prepared
    model = result.model
    loaded = ase_adapt.load_model(path)
    assert isinstance(loaded, SevenNetModel) and loaded.head_names == model.head_names
    for k in ("source", "shared_blocks", "modal", "kind", "elements", "cutoff"):
        assert loaded.config[k] == model.config[k]
    a = _cells(1, seed=50)[0]
    for head in model.head_names:
        assert loaded.heads[head].e0 == model.heads[head].e0
        for x, y in zip(_predict(model, a, head), _predict(loaded, a, head)):
            np.testing.assert_array_equal(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same sevenn: no version warning
        ase_adapt.load_model(path)


def test_other_sevenn_version_warns_and_missing_sevenn_names_the_extra(prepared, tmp_path, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    _, path = prepared
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["config"])
    config["sevenn_version"] = "0.0.1"
    meta["config"] = json.dumps(config)
    other = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(other), metadata=meta)
    with pytest.warns(UserWarning, match="prepared with sevenn 0.0.1"):
        ase_adapt.load_model(other)
    monkeypatch.setitem(sys.modules, "sevenn", None)
    with pytest.raises(ImportError, match=r'pip install "ase-adapt\[sevenn\]"'):
        ase_adapt.load_model(path)


def test_corrupt_or_mismatched_checkpoints_are_clear(prepared, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    _, path = prepared
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ase_adapt.load_model(bad)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors.pop(next(k for k in tensors if k.startswith("model.heads.prior_emt")))
    missing = tmp_path / "missing.safetensors"
    save_file(tensors, str(missing), metadata=meta)
    with pytest.raises(CheckpointError, match="missing"):
        ase_adapt.load_model(missing)
    config = json.loads(meta["config"])
    config["source"] = "sevennet:7net-42"
    meta["config"] = json.dumps(config)
    foreign = tmp_path / "foreign.safetensors"
    save_file(load_file(str(path)), str(foreign), metadata=meta)
    with pytest.raises(CheckpointError, match="cannot rebuild its sevennet base model"):
        ase_adapt.load_model(foreign)


# ---------------------------------------------------------------------------- use
def test_adaptive_calculator_runs_md_with_ttt(prepared):
    _, path = prepared
    calc = AdaptiveCalculator(ase_adapt.load_model(path), prior="emt", adapt_when="always",
                              ttt=TTTSettings(lr=1e-4, max_steps=3, md_steps=0, n_rattled=3, guard=None))
    atoms = _cells(1, seed=77)[0]
    atoms.calc = calc
    VelocityVerlet(atoms, 1.0 * units.fs).run(3)
    assert calc.ttt_result is not None and calc.ttt_result.head == "prior:emt" and calc.ttt_result.steps > 0
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()


def test_cli_end_to_end_and_bad_prior(tmp_path, capsys):
    data = tmp_path / "cu.xyz"
    write(data, _cells(6))
    out = tmp_path / "ckpt.safetensors"
    rc = main(["prepare", "sevennet:7net-0", str(data), "--prior", "emt", "--out", str(out), "--epochs", "1",
               "--quiet"])
    assert rc == 0 and out.is_file()
    assert "prior:emt force RMSE" in capsys.readouterr().out
    assert ase_adapt.load_model(out).head_names == ["main", "prior:emt"]
    rc = main(["prepare", "sevennet:7net-0", str(data), "--prior", "nope", "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "unknown prior 'nope'" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_prepare_refuses_a_built_in_model(make_model):
    with pytest.raises(ValueError, match="foreign models"):
        prepare_model(make_model(), _cells(2), [make_prior("emt")], _settings(1))
    with pytest.raises(TypeError, match="make_prior"):
        prepare_model("sevennet:7net-0", _cells(2), ["emt"], _settings(1))


def test_prepare_refuses_a_prior_that_gives_zero_forces_everywhere(tmp_path):
    """It exited 0 with 'force RMSE 0.0 -> 0.0' and wrote a checkpoint."""
    from ase import Atoms

    from ase_adapt.errors import DataError

    far = [Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 20.0 + k]]) for k in range(4)]  # beyond LJ's range
    with pytest.raises(DataError, match="zero forces on every structure"):
        prepare_model("sevennet:7net-0", far, [make_prior("lj")], _settings(1), out=tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_a_failing_prior_says_what_was_kept(tmp_path):
    """The advice named a .partial file in a deleted temporary folder, and on_error='skip', which
    prepare does not take."""
    from ase_adapt.errors import DataError

    cells = _cells(3) + [bulk("Si", "diamond", a=5.43)]  # EMT has no Si
    with pytest.raises(DataError, match="frame 3.*nothing was kept; with --labels DIR") as err:
        prepare_model("sevennet:7net-0", cells, [make_prior("emt")], _settings(1))
    assert "partial" not in str(err.value) and "on_error" not in str(err.value)
    with pytest.raises(DataError, match="kept in .*labels, and rerunning the same command resumes"):
        prepare_model("sevennet:7net-0", cells, [make_prior("emt")], _settings(1), labels_dir=tmp_path / "labels")
    assert any((tmp_path / "labels").iterdir())
