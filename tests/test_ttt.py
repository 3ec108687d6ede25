"""Test-time training: what moves, when it stops, rollback, determinism, prior failures."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator

import ase_adapt
from ase_adapt.errors import PriorError
from ase_adapt.testing import toy_frames, toy_prior
from ase_adapt.train import OptimSettings, TrainSettings, train_model
from ase_adapt.ttt import TTTSettings, make_samples, prior_head_for, test_time_train


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    """A tiny TTT-ready model (joint training on toy data) with training statistics."""
    from conftest import tiny_model  # noqa: PLC0415

    model = tiny_model(elements=("H", "C", "O"))
    s = TrainSettings(mode="joint", optim=OptimSettings(epochs=10, batch_size=8, progress=False))
    train_model(model, toy_frames(32, seed=20), s, tmp_path_factory.mktemp("ttt"))
    return model


@pytest.fixture
def system():
    return toy_frames(1, seed=77, symbols="HCO", with_reference=False, with_prior=False)[0]


def _clone(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_ttt_lowers_the_prior_loss_and_moves_only_early_parameters(ready, system):
    model = copy.deepcopy(ready)
    early_ids = {id(p) for p in model.parameters_before(1)}
    late = _clone([p for p in model.parameters() if id(p) not in early_ids])
    early = _clone(model.parameters_before(1))
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, stop_at_training_loss=False), head="prior")
    assert r.loss_after < 0.9 * r.loss_before and not r.rolled_back and r.steps > 0
    assert not _same(model.parameters_before(1), early)
    assert _same([p for p in model.parameters() if id(p) not in early_ids], late)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_ttt_stops_at_the_training_level_prior_loss(ready, system):
    model = copy.deepcopy(ready)
    target = model.training_stats["prior_loss"]["prior"]
    assert target > 0
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, target_factor=1e6), head="prior")
    assert r.steps == 0 and "training-level" in r.stop_reason and r.target == pytest.approx(target * 1e6)


def test_ttt_rolls_back_a_diverging_run(ready, system):
    model = copy.deepcopy(ready)
    before = copy.deepcopy(model.state_dict())
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e4, max_steps=20, stop_at_training_loss=False),
                        head="prior")
    assert r.rolled_back and "rolled back" in r.stop_reason and r.loss_after == r.loss_before
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_ttt_keeps_the_lowest_loss_weights_when_the_run_overshoots(ready, system, monkeypatch):
    """An lr large enough to oscillate: the weights kept are the best seen, and loss_after is their loss."""
    from ase_adapt.graph import build_graph
    from ase_adapt.train.losses import LossWeights, make_targets, model_loss
    from ase_adapt.ttt import label_samples

    import ase_adapt.ttt as ttt_module

    seen = []

    def recording(*args, **kwargs):
        out = model_loss(*args, **kwargs)
        seen.append(float(out[0].detach()))
        return out

    s = TTTSettings(lr=0.5, max_steps=30, patience=10**6, stop_at_training_loss=False)
    model = copy.deepcopy(ready)
    monkeypatch.setattr(ttt_module, "model_loss", recording)
    r = test_time_train(model, system, toy_prior(), s, head="prior")
    monkeypatch.undo()
    assert seen[-1] > min(seen)  # the run did overshoot, so "best" and "last" differ
    assert r.loss_after == min(seen)
    samples = make_samples(system, s)
    targets = make_targets(label_samples(samples, toy_prior()), [len(a) for a in samples], model.dtype, model.device)
    weights = LossWeights(**model.training_stats["prior_loss_weights"])
    graph = build_graph(samples, model.cutoff, dtype=model.dtype, device=model.device)
    kept = float(model_loss(model, graph, targets, "prior", weights)[0].detach())
    assert kept == pytest.approx(r.loss_after, rel=1e-6)
    assert r.loss_after <= r.loss_before

def test_ttt_is_deterministic_on_cpu(ready, system):
    runs = []
    for _ in range(2):
        model = copy.deepcopy(ready)
        test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, max_steps=15, stop_at_training_loss=False),
                        head="prior")
        runs.append(_clone(model.parameters()))
    assert _same(*runs)


class _Broken(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("SCF did not converge")


def test_a_failing_prior_raises_before_any_weight_moves(ready, system):
    model = copy.deepcopy(ready)
    before = _clone(model.parameters())
    with pytest.raises(PriorError, match="SCF did not converge"):
        test_time_train(model, system, _Broken(), head="prior")
    assert _same(model.parameters(), before)


def test_prior_head_matching_refuses_unknown_priors(ready):
    class Fake:
        kind = "gfn-ff"

    with pytest.raises(ValueError, match="prior:gfn-ff"):
        prior_head_for(ready, Fake())
    model = copy.deepcopy(ready)
    from ase_adapt.models.build import new_head

    new_head(model, "prior:gfn-ff")
    assert prior_head_for(model, Fake()) == "prior:gfn-ff"
    assert prior_head_for(model, Fake(), "prior") == "prior"


def test_samples_are_seeded_and_include_the_structure(system):
    s = TTTSettings(n_rattled=3, seed=5)
    a, b = make_samples(system, s), make_samples(system, s)
    assert len(a) == 4 and np.array_equal(a[0].positions, system.positions)
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b))
    md = make_samples(system, TTTSettings(n_rattled=0, md_steps=10, md_stride=5), toy_prior())
    assert len(md) == 3
