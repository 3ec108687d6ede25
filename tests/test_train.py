"""Training a new model: the modes learn, freezing is exact, runs resume bit-identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ase_adapt
from ase_adapt.errors import CheckpointError, DataError
from ase_adapt.testing import toy_frames
from ase_adapt.train import OptimSettings, TrainSettings, train_model
from ase_adapt._settings import load_settings, settings_to_dict


def _settings(mode: str, epochs: int = 12, **optim) -> TrainSettings:
    o = dict(epochs=epochs, batch_size=6, lr=5e-3, progress=False, patience=None, **optim)
    return TrainSettings(mode=mode, optim=OptimSettings(**o), compute_stats=False)


@pytest.fixture(scope="module")
def frames():
    return toy_frames(30, seed=1)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _learned(history, stage: str, key: str = "train_loss", factor: float = 0.5) -> tuple[float, float]:
    rows = [r for r in history if r["stage"] == stage]
    first, last = rows[0][key], min(r[key] for r in rows)
    assert last < factor * first, f"{stage}: {key} went from {first:.4g} to {last:.4g}"
    return first, last


def test_joint_training_learns_both_heads(frames, make_model, tmp_path):
    model = make_model()
    result = train_model(model, frames, _settings("joint", epochs=15), tmp_path)
    _learned(result.history, "joint")
    _learned(result.history, "joint", "val_prior_forces_rmse_mev", 0.7)
    for name in ("best.safetensors", "last.safetensors", "state.pt", "metrics.csv", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert len(rows) == 15 and (tmp_path / "metrics.csv").read_text().count("\n") == 16
    loaded = ase_adapt.load_model(tmp_path / "best.safetensors")
    assert loaded.training_stats["training"]["mode"] == "joint"
    # the best checkpoint is the returned model
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0)


def test_pretrain_freeze_finetune_learns_and_freezes_the_representation(frames, make_model, tmp_path):
    model = make_model()
    seen = {}

    def snapshot(row):  # after the first epoch of stage 2
        if row["stage"] == "finetune-main" and "rep" not in seen:
            seen["rep"] = [p.detach().clone() for p in model.representation_parameters()]
            seen["prior"] = [p.detach().clone() for p in model.heads["prior"].parameters()]
            seen["main"] = [p.detach().clone() for p in model.heads["main"].parameters()]

    result = train_model(model, frames, _settings("pretrain-freeze-finetune", epochs=10), tmp_path,
                         callbacks=[snapshot])
    _learned(result.history, "pretrain-prior")
    _learned(result.history, "finetune-main", factor=0.9)
    stage2 = [r for r in result.history if r["stage"] == "finetune-main"]
    assert len(stage2) == 10 and "val_main_forces_rmse_mev" in stage2[-1]
    assert "val_prior_forces_rmse_mev" not in stage2[-1]
    # frozen in stage 2: bit-identical representation and prior head; the main head moved
    for a, b in zip(model.representation_parameters(), seen["rep"]):
        assert torch.equal(a, b)
    for a, b in zip(model.heads["prior"].parameters(), seen["prior"]):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(model.heads["main"].parameters(), seen["main"]))


def test_main_mode_needs_reference_labels(make_model, tmp_path):
    frames = toy_frames(6, seed=2)
    frames[3].calc = None
    with pytest.raises(DataError, match=r"frame 3.*'energy'|'energy'.*frame 3"):
        train_model(make_model(), frames, _settings("main"), tmp_path, val_frames=[])


def test_joint_mode_needs_prior_labels_but_not_main_labels(make_model, tmp_path):
    frames = toy_frames(8, seed=3)
    frames[2].calc = None  # a prior-only frame is fine in joint training
    train_model(make_model(), frames, _settings("joint", epochs=1), tmp_path / "ok", val_frames=[])
    del frames[5].arrays["prior_forces"]
    with pytest.raises(DataError, match="prior_forces"):
        train_model(make_model(), frames, _settings("joint", epochs=1), tmp_path / "bad", val_frames=[])


def test_e0_and_scale_are_fitted_from_the_data(make_model, tmp_path):
    frames = toy_frames(12, seed=4)
    model = make_model()
    train_model(model, frames, _settings("main", epochs=1), tmp_path)
    assert model.heads["main"].e0[model.elements.index(6)] != 0.0
    assert float(model.heads["main"].scale[0]) != 1.0
    assert model.config["avg_num_neighbors"] == model.interactions[0].avg_num_neighbors != 12.0


class _Kill(Exception):
    pass


@pytest.mark.parametrize("mode,kill_at", [("joint", 3), ("pretrain-freeze-finetune", 5)])
def test_resume_after_kill_is_bit_identical(frames, make_model, tmp_path, mode, kill_at):
    settings = _settings(mode, epochs=4)
    ref = make_model()
    ref_result = train_model(ref, frames, settings, tmp_path / "ref")

    def kill(row, n=[0]):
        n[0] += 1
        if n[0] == kill_at:
            raise _Kill

    model = make_model()
    with pytest.raises(_Kill):
        train_model(model, frames, settings, tmp_path / "run", callbacks=[kill])
    with pytest.raises(FileExistsError, match="resume"):
        train_model(make_model(), frames, settings, tmp_path / "run")
    resumed = make_model()
    result = train_model(resumed, frames, settings, tmp_path / "run", resume=True)
    assert [r["epoch"] for r in result.history] == [r["epoch"] for r in ref_result.history]
    for a, b in zip(result.history, ref_result.history):
        assert a["train_loss"] == b["train_loss"]
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_refuses_other_settings(frames, make_model, tmp_path):
    train_model(make_model(), frames, _settings("joint", epochs=1), tmp_path)
    with pytest.raises(CheckpointError, match="different settings"):
        train_model(make_model(), frames, _settings("joint", epochs=2), tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="different data"):
        train_model(make_model(), frames[:-1], _settings("joint", epochs=1), tmp_path, resume=True)


def test_resume_may_change_progress_bars_and_device(frames, make_model, tmp_path):
    """How visibly and where a run computes is not what it computes: a --quiet run resumes loud."""
    import dataclasses

    quiet = _settings("joint", epochs=2)
    train_model(make_model(), frames, dataclasses.replace(quiet, optim=dataclasses.replace(quiet.optim, epochs=1)),
                tmp_path)
    loud = dataclasses.replace(quiet, optim=dataclasses.replace(quiet.optim, epochs=1, progress=True))
    result = train_model(make_model(), frames, loud, tmp_path, resume=True)
    assert len(result.history) == 1


def test_settings_yaml_roundtrip_and_errors(tmp_path):
    s = load_settings(TrainSettings, "train-joint")
    assert s.mode.value == "joint" and s.optim.epochs == 200
    path = tmp_path / "s.yaml"
    import yaml

    path.write_text(yaml.safe_dump(settings_to_dict(s)))
    assert load_settings(TrainSettings, path) == s
    with pytest.raises(ValueError, match="unknown TrainSettings settings"):
        load_settings(TrainSettings, None, modee="joint")
    with pytest.raises(ValueError, match="not one of"):
        load_settings(TrainSettings, None, mode="sideways")
    with pytest.raises(ValueError, match="unknown OptimSettings"):
        load_settings(TrainSettings, None, optim={"lr": 1e-3, "epoch": 3})
    assert load_settings(TrainSettings, "train-joint", optim={"epochs": 3}).optim.lr == s.optim.lr


def test_huber_loss_and_cosine_schedule_train(frames, make_model, tmp_path):
    result = train_model(make_model(), frames, _settings("joint", epochs=6, loss="huber", scheduler="cosine",
                                                         huber_delta=0.05), tmp_path)
    lrs = [r["lr"] for r in result.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]
    assert np.isfinite([r["train_loss"] for r in result.history]).all()


def test_joint_training_with_one_head_per_prior_kind(make_model, tmp_path):
    """prior:<kind> heads learn prior_<kind>_* labels; TTT can then pick the head per prior."""
    from ase_adapt.priors import make_prior

    frames = toy_frames(12, seed=6, prior=make_prior("lj"))
    for a, b in zip(frames, toy_frames(12, seed=6, prior=make_prior("lj", epsilon=0.05, sigma=1.2))):
        a.info["prior_lj_energy"] = a.info.pop("prior_energy")
        a.arrays["prior_lj_forces"] = a.arrays.pop("prior_forces")
        a.info["prior_soft_energy"] = b.info["prior_energy"]
        a.arrays["prior_soft_forces"] = b.arrays["prior_forces"]
    model = make_model(heads=("main", "prior:lj", "prior:soft"))
    s = TrainSettings(prior_heads=("prior:lj", "prior:soft"), optim=OptimSettings(epochs=3, batch_size=6, progress=False))
    result = train_model(model, frames, s, tmp_path)
    last = result.history[-1]
    assert "val_prior:lj_forces_rmse_mev" in last and "val_prior:soft_forces_rmse_mev" in last
    stats = model.training_stats
    assert set(stats["prior_loss_by_head"]) == {"prior:lj", "prior:soft"}
    assert set(stats["prior_force_norm_by_head"]) == {"prior:lj", "prior:soft"}
    with pytest.raises(ValueError, match="prior:<kind>"):
        TrainSettings(prior_heads=("gfn-ff",))
