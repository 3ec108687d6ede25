"""Fine-tuning strategies on an existing model: what moves, what stays, where the E0s go."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

import ase_adapt
from ase_adapt.errors import DataError
from ase_adapt.testing import toy_frames
from ase_adapt.train import (
    FinetuneSettings, OptimSettings, TrainSettings, finetune_model, pseudolabel, reestimate_e0, train_model,
)
from ase_adapt.train.lora import _lora_modules

SHIFT = {1: 0.5, 6: -2.0, 8: 1.5}  # the new reference level's per-element offsets (eV)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from conftest import tiny_model  # noqa: PLC0415  (tests dir is on sys.path under pytest)

    model = tiny_model()
    s = TrainSettings(mode="joint", optim=OptimSettings(epochs=8, batch_size=6, progress=False), compute_stats=False)
    train_model(model, toy_frames(24, seed=10), s, tmp_path_factory.mktemp("pre"))
    return model


@pytest.fixture(scope="module")
def new_data():
    """New molecules at a 'new level': the toy reference shifted per element."""
    frames = toy_frames(16, seed=11)
    for a in frames:
        e = a.get_potential_energy() + sum(SHIFT[z] for z in a.numbers)
        a.calc = SinglePointCalculator(a, energy=e, forces=a.get_forces())
    return frames


def _ft(strategy: str, epochs: int = 3, **kw) -> FinetuneSettings:
    o = OptimSettings(epochs=epochs, batch_size=6, lr=3e-3, progress=False, patience=None, val_fraction=0.2)
    return FinetuneSettings(strategy=strategy, optim=o, compute_stats=False, **kw)


def _params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_freeze_readout_moves_only_the_main_head(pretrained, new_data, tmp_path):
    model = copy.deepcopy(pretrained)
    rep, prior, main = _params(model.embedding) + _params(model.interactions), _params(model.heads["prior"]), _params(model.heads["main"])
    finetune_model(model, new_data, _ft("freeze", freeze="readout"), tmp_path)
    assert _same(_params(model.embedding) + _params(model.interactions), rep)
    assert _same(_params(model.heads["prior"]), prior)
    assert not _same(_params(model.heads["main"]), main)


def test_freeze_early_keeps_embedding_and_first_block(pretrained, new_data, tmp_path):
    model = copy.deepcopy(pretrained)
    early = [p.detach().clone() for p in model.parameters_before(1)]
    late = _params(model.interactions[1])
    finetune_model(model, new_data, _ft("freeze", freeze="early"), tmp_path)
    assert _same(model.parameters_before(1), early)
    assert not _same(_params(model.interactions[1]), late)


@pytest.mark.filterwarnings("ignore::ase_adapt.train.e0.E0Warning")  # N is absent from the toy data
def test_naive_reestimates_e0_and_moves_everything(pretrained, new_data, tmp_path):
    model = copy.deepcopy(pretrained)
    expected = reestimate_e0(model, new_data)  # what fine-tuning must start from
    rep = _params(model.embedding)
    result = finetune_model(model, new_data, _ft("naive"), tmp_path, val_frames=[])
    assert dict(zip(model.elements, model.heads["main"].e0)) == pytest.approx(expected, abs=1e-9)
    assert not _same(_params(model.embedding), rep)
    loaded = ase_adapt.load_model(result.best_path)
    assert loaded.heads["main"].e0 == model.heads["main"].e0


@pytest.mark.parametrize("labels", ["pseudo", "original"])
def test_multihead_replay_keeps_per_head_e0s(pretrained, new_data, tmp_path, labels):
    model = copy.deepcopy(pretrained)
    original_e0 = list(model.heads["main"].e0)
    replay = toy_frames(10, seed=12)
    result = finetune_model(model, new_data, _ft("multihead", replay_labels=labels), tmp_path, replay_frames=replay)
    assert model.head_names == ["main", "prior", "replay"]
    assert model.heads["replay"].e0 == original_e0           # the replay head keeps the old level
    assert model.heads["main"].e0 != original_e0             # the main head moved to the new one
    loaded = ase_adapt.load_model(result.best_path)
    assert loaded.heads["replay"].e0 == original_e0 and loaded.heads["main"].e0 == model.heads["main"].e0
    assert any("val_main" in k for k in result.history[-1])


def test_pseudolabels_are_the_starting_models_predictions(pretrained):
    frames = toy_frames(3, seed=13, with_reference=False, with_prior=False)
    labelled = pseudolabel(pretrained, frames)
    calc = ase_adapt.MLFFCalculator(pretrained)
    for a, b in zip(frames, labelled):
        a.calc = calc
        assert b.info["pseudo_energy"] == pytest.approx(a.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(b.arrays["pseudo_forces"], a.get_forces(), atol=1e-5)


def test_replay_strategies_need_replay_frames(pretrained, new_data, tmp_path):
    with pytest.raises(DataError, match="replay frames"):
        finetune_model(copy.deepcopy(pretrained), new_data, _ft("multihead"), tmp_path)


@pytest.mark.parametrize("strategy", ["lora", "replay-lora"])
def test_lora_strategies_train_adapters_and_merge(pretrained, new_data, tmp_path, strategy):
    model = copy.deepcopy(pretrained)
    replay = toy_frames(6, seed=14) if strategy == "replay-lora" else None
    keys = set(model.state_dict())
    rep = _params(model.interactions)
    result = finetune_model(model, new_data, _ft(strategy), tmp_path, replay_frames=replay)
    assert not _lora_modules(model)                  # merged: plain modules, plain state dict
    extra = {"heads.replay." + k.split(".", 2)[2] for k in keys if k.startswith("heads.main.")} if replay else set()
    assert set(model.state_dict()) == keys | extra
    assert not _same(_params(model.interactions), rep)   # the merged adapters changed the weights
    loaded = ase_adapt.load_model(result.best_path)
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])


def test_mft_trains_the_prior_head_jointly(pretrained, new_data, tmp_path):
    model = copy.deepcopy(pretrained)
    prior = _params(model.heads["prior"])
    result = finetune_model(model, new_data, _ft("mft"), tmp_path)
    assert not _same(_params(model.heads["prior"]), prior)
    assert any(k.startswith("val_prior_") for k in result.history[-1])
    bare = [copy.copy(a) for a in new_data]
    for a in bare:
        a.arrays.pop("prior_forces", None)
    with pytest.raises(DataError, match="prior_forces"):
        finetune_model(copy.deepcopy(pretrained), bare, _ft("mft"), tmp_path / "bad")


def test_finetune_presets_carry_the_documented_defaults():
    s = FinetuneSettings.from_yaml("finetune-multihead")
    assert (s.optim.lr, s.optim.ema_decay, s.replay_labels.value) == (1e-4, 0.9999, "pseudo")
    assert FinetuneSettings.from_yaml("finetune-naive").optim.lr == 1e-3
    assert FinetuneSettings.from_yaml("finetune-lora").lora_rank == 4
