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
from ase_adapt.adapt import GuardSettings, check_adaptation, make_samples
from ase_adapt.adapt.ttt import TTTSettings, prior_head_for, test_time_train


@pytest.fixture(scope="module")
def ready(tmp_path_factory):
    """A tiny TTT-ready model (joint training on toy data) with training statistics."""
    from conftest import ttt_ready_model  # noqa: PLC0415

    return ttt_ready_model(tmp_path_factory.mktemp("ttt"), epochs=10, n_frames=32, seed=20)


@pytest.fixture
def system():
    return toy_frames(1, seed=77, symbols="HCO", with_reference=False, with_prior=False)[0]


def _clone(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


NO_GUARD = dict(guard=None, md_steps=0)  # the step mechanics alone; the guard has its own tests


def test_ttt_lowers_the_prior_loss_and_moves_only_the_shared_representation(ready, system):
    model = copy.deepcopy(ready)
    shared_ids = {id(p) for p in model.representation_parameters()}
    heads = _clone([p for p in model.parameters() if id(p) not in shared_ids])
    last_block = _clone(model.interactions[-1].parameters())
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, **NO_GUARD), head="prior")
    assert r.loss_after < 0.9 * r.loss_before and not r.rolled_back and r.steps > 0
    assert r.n_samples == 5 and r.n_holdout == 1
    assert not _same(model.interactions[-1].parameters(), last_block)  # default: every shared block
    assert _same([p for p in model.parameters() if id(p) not in shared_ids], heads)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_ttt_adapted_blocks_limits_the_moved_parameters(ready, system):
    model = copy.deepcopy(ready)
    early_ids = {id(p) for p in model.parameters_before(1)}
    late = _clone([p for p in model.parameters() if id(p) not in early_ids])
    early = _clone(model.parameters_before(1))
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, adapted_blocks=1, **NO_GUARD), head="prior")
    assert r.steps > 0 and not r.rolled_back
    assert not _same(model.parameters_before(1), early)
    assert _same([p for p in model.parameters() if id(p) not in early_ids], late)


def test_ttt_rolls_back_a_diverging_run(ready, system):
    model = copy.deepcopy(ready)
    before = copy.deepcopy(model.state_dict())
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e4, max_steps=20, **NO_GUARD), head="prior")
    assert r.rolled_back and "rolled back" in r.stop_reason and r.loss_after == r.loss_before
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_ttt_keeps_the_weights_with_the_lowest_held_out_loss(ready, system, monkeypatch):
    """Selection is on the held-out samples, never on the ones being fitted: the weights kept
    are those of the lowest held-out loss seen, even when the fitted loss went on falling."""
    import ase_adapt.adapt.ttt as ttt_module
    from ase_adapt.adapt.samples import make_samples
    from ase_adapt.graph import build_graph
    from ase_adapt.losses import make_targets, model_loss
    from ase_adapt.adapt.ttt import _split, ttt_loss_weights

    held, fitted = [], []

    def recording(*args, **kwargs):
        out = model_loss(*args, **kwargs)
        (fitted if kwargs.get("create_graph") else held).append(float(out[0].detach()))
        return out

    s = TTTSettings(lr=1.0, max_steps=60, eval_every=2, patience=10**6, n_rattled=11, **NO_GUARD)
    model = copy.deepcopy(ready)
    monkeypatch.setattr(ttt_module, "model_loss", recording)
    r = test_time_train(model, system, toy_prior(), s, head="prior")
    monkeypatch.undo()
    assert held[-1] > min(held)  # the run did overshoot on the held-out samples
    assert r.loss_after == min(held) and r.loss_before == held[0] and r.n_holdout == 3
    samples, labels = make_samples(system, s.sample_settings(), toy_prior())
    _, hold = _split(len(samples), s.holdout_fraction, np.random.default_rng(s.seed))
    graph = build_graph([samples[i] for i in hold], model.cutoff, dtype=model.dtype)
    targets = make_targets([labels[i] for i in hold], [len(system)] * len(hold), model.dtype)
    kept = float(model_loss(model, graph, targets, "prior", ttt_loss_weights(model, s))[0])
    assert kept == pytest.approx(r.loss_after, rel=1e-6)


def test_the_objective_has_no_energy_zero(ready, system):
    """A prior whose energies sit 50 eV away (a per-molecule sGDML model) adapts exactly as the
    same prior without the offset; with an absolute energy loss it would not."""
    runs = {}
    for shift in (0.0, 50.0):
        for offset in (True, False):
            model = copy.deepcopy(ready)
            r = test_time_train(model, system, _Shifted(shift), TTTSettings(lr=1e-2, max_steps=20, energy_offset=offset,
                                                                             **NO_GUARD), head="prior")
            runs[shift, offset] = (r.loss_before, _clone(model.parameters_before(1)))
    assert runs[0.0, True][0] == pytest.approx(runs[50.0, True][0], rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(runs[0.0, True][1], runs[50.0, True][1]))
    assert runs[50.0, False][0] > 100 * runs[0.0, False][0]


def test_ttt_is_deterministic_on_cpu(ready, system):
    runs = []
    for _ in range(2):
        model = copy.deepcopy(ready)
        test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, max_steps=15, **NO_GUARD), head="prior")
        runs.append(_clone(model.parameters()))
    assert _same(*runs)


def test_the_guard_rolls_back_and_says_why(ready, system):
    model = copy.deepcopy(ready)
    before = _clone(model.parameters())
    strict = GuardSettings(max_move_ratio=1e-9)  # any movement of the main head is "a jump"
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, md_steps=0, guard=strict), head="prior")
    assert r.rolled_back and r.steps > 0 and "guard" in r.stop_reason and "jumped" in r.stop_reason
    assert r.guard["accepted"] is False and r.guard["move_ratio"] > 0
    assert _same(model.parameters(), before)
    lenient = GuardSettings(max_prior_loss_ratio=1.0, max_prior_distance_ratio=1e9, max_move_ratio=1e9)
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, md_steps=0, guard=lenient), head="prior")
    assert not r.rolled_back and r.guard["accepted"] is True


def test_guard_decisions():
    f_prior = np.zeros((4, 3))
    main = np.full((4, 3), 0.5)  # the unadapted main head: 0.5 eV/Å from the prior everywhere
    ok = check_adaptation(GuardSettings(), prior_loss_before=1.0, prior_loss_after=0.5,
                          main_before=main, main_after=0.8 * main, prior_forces=f_prior)
    assert ok.accepted and ok.prior_distance_ratio == pytest.approx(0.8)
    no_gain = check_adaptation(GuardSettings(), prior_loss_before=1.0, prior_loss_after=0.99,
                               main_before=main, main_after=0.8 * main, prior_forces=f_prior)
    assert not no_gain.accepted and "prior loss" in no_gain.reasons[0]
    away = check_adaptation(GuardSettings(), prior_loss_before=1.0, prior_loss_after=0.5,
                            main_before=main, main_after=1.2 * main, prior_forces=f_prior)
    assert not away.accepted and "closer to the prior" in away.reasons[0]
    blowup = main.copy()
    blowup[0] = [-5.0, 5.0, 0.0]  # one atom's force flips and grows 10x: the 8.5x blow-up kind
    jump = check_adaptation(GuardSettings(), prior_loss_before=1.0, prior_loss_after=0.2,
                            main_before=main, main_after=blowup, prior_forces=f_prior)
    assert not jump.accepted and any("jumped" in x for x in jump.reasons)


class _Shifted(Calculator):
    """The toy prior with every energy shifted by a constant (no shared energy zero)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift, self.inner = shift, toy_prior()

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.inner
        self.results = {"energy": a.get_potential_energy() + self.shift, "forces": a.get_forces()}


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
    s = TTTSettings(n_rattled=3, md_steps=0, seed=5).sample_settings()
    (a, la), (b, _) = make_samples(system, s, toy_prior()), make_samples(system, s, toy_prior())
    assert len(a) == len(la) == 4 and np.array_equal(a[0].positions, system.positions)
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b))


def test_md_snapshots_carry_the_prior_labels_of_their_own_step():
    from ase.build import molecule
    from ase.calculators.emt import EMT

    water = molecule("H2O")
    s = TTTSettings(n_rattled=0, md_steps=20, md_stride=5, md_temperature=300.0).sample_settings()
    samples, labels = make_samples(water, s, EMT())
    assert len(samples) == 5  # the structure and 4 snapshots
    for a, lab in zip(samples, labels):
        b = a.copy()
        b.calc = EMT()
        assert lab["energy"] == pytest.approx(b.get_potential_energy(), abs=1e-10)
        assert np.allclose(lab["forces"], b.get_forces(), atol=1e-10)


def test_md_stops_when_the_prior_breaks_the_molecule():
    """A prior that cannot hold a molecule (a purely repulsive one here) never turns broken
    structures into targets: the MD ends at the first snapshot whose bonds changed."""
    from ase.build import molecule
    from ase.calculators.lj import LennardJones

    repulsive = LennardJones(sigma=2.0, epsilon=1.0, rc=6.0)
    s = TTTSettings(n_rattled=0, md_steps=200, md_stride=5, md_temperature=300.0).sample_settings()
    samples, _ = make_samples(molecule("H2O"), s, repulsive)
    assert 1 <= len(samples) < 41


def _loss_turning_nan_after(monkeypatch, steps: int) -> None:
    """TTT's training loss becomes NaN after ``steps`` good steps (held-out losses stay finite)."""
    import ase_adapt.adapt.ttt as ttt_module
    from ase_adapt.losses import model_loss

    calls = {"n": 0}

    def turning_nan(*args, **kwargs):
        out = model_loss(*args, **kwargs)
        if kwargs.get("create_graph"):
            calls["n"] += 1
            if calls["n"] > steps:
                return (out[0] * float("nan"),) + tuple(out[1:])
        return out

    monkeypatch.setattr(ttt_module, "model_loss", turning_nan)


def test_a_loss_that_turns_nan_rolls_back_to_the_start(ready, system, monkeypatch):
    """Checklist 12: TTT that produces NaN keeps nothing of the steps before it."""
    model = copy.deepcopy(ready)
    before = _clone(model.parameters())
    _loss_turning_nan_after(monkeypatch, 5)  # a few good steps, then NaN
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, max_steps=50, eval_every=100, **NO_GUARD),
                        head="prior")
    assert r.steps > 0 and "non-finite" in r.stop_reason and r.rolled_back
    assert _same(model.parameters(), before)


def test_a_loss_that_turns_nan_after_held_out_gains_still_rolls_back(ready, system, monkeypatch):
    """The held-out loss fell before the NaN (so there were 'best' weights): still nothing is kept."""
    model = copy.deepcopy(ready)
    before = _clone(model.parameters())
    _loss_turning_nan_after(monkeypatch, 12)
    r = test_time_train(model, system, toy_prior(), TTTSettings(lr=1e-2, max_steps=50, eval_every=2, **NO_GUARD),
                        head="prior")
    assert r.steps == 12 and r.rolled_back and "non-finite loss after 12 steps" in r.stop_reason
    assert r.loss_after == r.loss_before
    assert _same(model.parameters(), before)


def test_a_prior_loss_that_is_not_finite_before_ttt_is_refused(ready, system, monkeypatch):
    import ase_adapt.adapt.ttt as ttt_module
    from ase_adapt.errors import PriorError
    from ase_adapt.losses import model_loss

    monkeypatch.setattr(ttt_module, "model_loss",
                        lambda *a, **k: (model_loss(*a, **k)[0] * float("inf"),) + tuple(model_loss(*a, **k)[1:]))
    model = copy.deepcopy(ready)
    before = _clone(model.parameters())
    with pytest.raises(PriorError, match="not finite before TTT"):
        test_time_train(model, system, toy_prior(), TTTSettings(max_steps=5, **NO_GUARD), head="prior")
    assert _same(model.parameters(), before)


def test_the_adaptation_contracts_hold_for_the_built_in_model(ready):
    """The same contracts the foreign adapters pass (ase_adapt.testing), on the built-in MLFF."""
    from ase_adapt import testing as T
    from ase_adapt.testing import random_cluster, toy_prior

    rng = np.random.default_rng(4)
    atoms = random_cluster(rng, n_min=5, n_max=5)
    T.check_ttt_adapts_only_early_blocks(ready, atoms, toy_prior(), head="prior", lr=1e-3)
    T.check_adaptive_md(ready, atoms, toy_prior(), [random_cluster(rng) for _ in range(3)], head="prior")
