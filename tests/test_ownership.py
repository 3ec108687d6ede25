"""A calculator owns its adaptation: the user's model is never changed, calculators never share
adapted weights, and an interrupted TTT never leaves half-trained weights in use (checklist 13)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.langevin import Langevin

import ase_adapt.adapt.ttt as ttt_module
from ase_adapt import AdaptiveCalculator, CalculationFailed, MLFFCalculator
from ase_adapt.adaptive import TriggerSettings
from ase_adapt.models.mlff import MLFF
from ase_adapt.testing import toy_prior
from ase_adapt.adapt.ttt import test_time_train

from conftest import fast_ttt  # noqa: E402

FAST_TTT = fast_ttt()  # mechanics; the guard is tested apart


def _adaptive(model, **kw) -> AdaptiveCalculator:
    kw.setdefault("ttt", FAST_TTT)
    kw.setdefault("adapt_when", "always")
    return AdaptiveCalculator(model, toy_prior(), prior_head="prior", **kw)


def _ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def _pretrained_energy(ready, atoms: Atoms) -> float:
    return MLFFCalculator(copy.deepcopy(ready)).get_potential_energy(atoms.copy())


def _snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "e0": {n: list(h.e0) for n, h in model.heads.items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [p.grad for p in model.parameters()],
        "dtype": model.dtype,
        "device": model.device,
        "ids": [id(p) for p in model.parameters()],
    }


def _assert_unchanged(model: torch.nn.Module, snap: dict) -> None:
    assert model.dtype == snap["dtype"] and model.device == snap["device"]
    assert [m.training for m in model.modules()] == snap["training"]
    assert [p.requires_grad for p in model.parameters()] == snap["requires_grad"]
    assert all(p.grad is g for p, g in zip(model.parameters(), snap["grad"]))
    assert [id(p) for p in model.parameters()] == snap["ids"]
    assert {n: list(h.e0) for n, h in model.heads.items()} == snap["e0"]
    state = model.state_dict()
    assert state.keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k


# ---------------------------------------------------------------- (a) two calculators, one model
def test_two_calculators_on_one_model_stay_independent(ready):
    model = copy.deepcopy(ready)
    calc_a, calc_b = _adaptive(model), _adaptive(model)
    atoms = _ethanol()
    atoms.calc = calc_a
    e_a, f_a = atoms.get_potential_energy(), atoms.get_forces()
    assert calc_a.ttt_result.steps > 0
    other = molecule("CH3CHO")
    other.calc = calc_b
    other.get_potential_energy()
    assert calc_b.ttt_result.steps > 0

    assert atoms.get_potential_energy() == e_a  # unchanged structure: bit-identical
    calc_a.reset()  # recomputed, not just cached
    assert atoms.get_potential_energy() == e_a
    atoms.positions[0, 0] += 1e-3  # 1 mÅ: same system, no new check, energy moves by ~ -F·dx
    e_moved = atoms.get_potential_energy()
    assert len(calc_a.events) == 1
    assert abs(e_moved - e_a + 1e-3 * f_a[0, 0]) < 1e-5  # float32 rounding; B's weights gave ~5e-3


# ---------------------------------------------------------------- (b) MD with TTT
@pytest.mark.parametrize("dtype", [None, "float64"])
def test_md_with_ttt_leaves_the_users_model_unchanged(ready, dtype):
    model = copy.deepcopy(ready).train()  # a user's model in training mode stays in training mode
    snap = _snapshot(model)
    calc = _adaptive(model, dtype=dtype, trigger=TriggerSettings(every_n_steps=6))
    atoms = _ethanol()
    atoms.calc = calc
    dyn = Langevin(atoms, 0.25 * units.fs, temperature_K=300, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(0))
    dyn.run(10)
    assert np.isfinite(atoms.get_forces()).all()
    assert sum(bool(e["ttt"] and e["ttt"]["steps"] > 0) for e in calc.events) >= 2
    assert calc.model is not model and calc.model.dtype == (torch.float64 if dtype else model.dtype)
    _assert_unchanged(model, snap)


# ---------------------------------------------------------------- (c) built after another adapted
def test_a_calculator_built_after_another_adapted_starts_from_the_pretrained_weights(ready):
    model = copy.deepcopy(ready)
    atoms = _ethanol()
    first = _adaptive(model)
    e_adapted = first.get_potential_energy(atoms.copy())
    assert first.ttt_result.steps > 0
    e_pretrained = _pretrained_energy(ready, atoms)
    assert e_adapted != e_pretrained

    later = _adaptive(model, adapt_when="never")
    assert later.get_potential_energy(atoms.copy()) == e_pretrained
    assert all(torch.equal(b, p) for b, p in zip(later._store.base, ready.parameters_before(1)))
    again = _adaptive(model)  # CPU TTT from the same start is deterministic: the same adaptation
    assert again.get_potential_energy(atoms.copy()) == e_adapted


# ---------------------------------------------------------------- (d) interrupted TTT
def _fail_in_ttt(monkeypatch, model, n: int, exc: BaseException) -> dict:
    """Make the TTT loss raise ``exc`` on its ``n``-th call (after n-1 optimiser steps)."""
    original, start = ttt_module.model_loss, [p.detach().clone() for p in model.parameters_before(1)]
    seen = {"calls": 0, "moved": False}

    def failing(*args, **kwargs):
        seen["calls"] += 1
        if seen["calls"] == n:
            seen["moved"] = not all(torch.equal(p, s) for p, s in zip(model.parameters_before(1), start))
            raise exc
        return original(*args, **kwargs)

    monkeypatch.setattr(ttt_module, "model_loss", failing)
    return seen


OOMS = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
        RuntimeError("CUDA error: out of memory")]


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), *OOMS[:2]], ids=["interrupt", "cuda-oom", "cpu-oom"])
def test_interrupted_ttt_restores_the_starting_weights(ready, monkeypatch, exc):
    model = copy.deepcopy(ready)
    with torch.no_grad():  # start away from the pretrained weights: "starting", not "base"
        model.parameters_before(1)[0].mul_(1.01)
    snap = _snapshot(model)
    seen = _fail_in_ttt(monkeypatch, model, 4, exc)
    with pytest.raises(type(exc)):
        test_time_train(model, _ethanol(), toy_prior(), FAST_TTT, head="prior")
    assert seen["moved"]  # three steps were taken before it raised
    _assert_unchanged(model, snap)


@pytest.mark.parametrize("exc", OOMS, ids=["torch-oom", "cpu-oom", "cuda-runtime-oom"])
def test_ttt_out_of_memory_becomes_calculation_failed(ready, monkeypatch, exc):
    user = copy.deepcopy(ready)
    calc = _adaptive(user)
    base = _snapshot(calc.model)
    atoms = _ethanol()
    atoms.calc = calc
    seen = _fail_in_ttt(monkeypatch, calc.model, 4, exc)
    with pytest.raises(CalculationFailed, match=f"{len(atoms)} atoms") as info:
        atoms.get_forces()
    assert seen["moved"] and "out of memory" in str(info.value)
    _assert_unchanged(calc.model, base)
    assert calc.events[-1]["action"].startswith("TTT failed: ") and calc.ttt_result is None
    # the next calculation answers with the unadapted weights, without retrying TTT
    assert atoms.get_potential_energy() == _pretrained_energy(ready, atoms)
    assert len(calc.events) == 1 and seen["calls"] == 4
    calc.check(atoms, fresh=True)  # an explicit retry adapts as usual
    assert calc.ttt_result.steps > 0 and atoms.get_potential_energy() != _pretrained_energy(ready, atoms)


def test_keyboard_interrupt_in_ttt_propagates_after_restoring(ready, monkeypatch):
    calc = _adaptive(copy.deepcopy(ready), radius_refinement=True)
    base = _snapshot(calc.model)
    atoms = _ethanol()
    atoms.calc = calc
    seen = _fail_in_ttt(monkeypatch, calc.model, 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        atoms.get_potential_energy()
    assert seen["moved"]
    _assert_unchanged(calc.model, base)
    assert calc.events[-1]["action"] == "TTT failed: KeyboardInterrupt; base weights restored"
    assert calc.radius == calc.model.cutoff and calc.ttt_result is None
    assert atoms.get_potential_energy() == _pretrained_energy(ready, atoms)
    assert len(calc.events) == 1


def test_plain_calculator_out_of_memory_names_the_system_size(model32, monkeypatch):
    atoms = _ethanol()
    calc = MLFFCalculator(model32)
    atoms.calc = calc

    def oom(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")

    monkeypatch.setattr(model32, "forward", oom)
    with pytest.raises(CalculationFailed, match=f"{len(atoms)} atoms"):
        atoms.get_forces()
    monkeypatch.setattr(model32, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # other errors are not disguised as OOM
        atoms.get_forces()


# ---------------------------------------------------------------- (e) the explicit export
def test_adapted_model_reproduces_the_calculator_and_is_independent(ready):
    calc = _adaptive(copy.deepcopy(ready))
    atoms = _ethanol()
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    assert calc.ttt_result.steps > 0
    exported = calc.adapted_model()
    assert isinstance(exported, MLFF) and exported is not calc.model
    assert exported.training_stats.keys() == calc.model.training_stats.keys()
    assert exported.training_stats is not calc.model.training_stats
    plain = MLFFCalculator(exported)
    assert plain.get_potential_energy(atoms.copy()) == e
    np.testing.assert_array_equal(plain.get_forces(atoms.copy()), f)

    snap = _snapshot(exported)
    other = molecule("CH3CHO")
    other.calc = calc
    other.get_potential_energy()  # the calculator adapts to another system...
    _assert_unchanged(exported, snap)  # ...and the export does not follow
    with torch.no_grad():
        exported.parameters_before(1)[0].add_(0.1)  # nor does the calculator follow the export
    calc.reset()
    assert atoms.get_potential_energy() == e


# ---------------------------------------------------------------- the plain calculator
def test_plain_calculator_casts_a_copy_and_shares_otherwise(model32):
    snap = _snapshot(model32)
    atoms = _ethanol()
    shared = MLFFCalculator(model32)
    assert shared.model is model32  # it follows the user's later weight updates (test_calculator)
    cast = MLFFCalculator(model32, dtype="float64")
    assert cast.model is not model32 and cast.model.dtype == torch.float64 and not cast.model.training
    assert np.isfinite(cast.get_potential_energy(atoms.copy()))
    shared.get_potential_energy(atoms.copy())
    _assert_unchanged(model32, snap)  # still float32, still in training mode


def test_mode_dependent_layers_in_training_mode_are_evaluated_on_a_copy(model32):
    model32.add_module("dropout", torch.nn.Dropout(0.5))  # evaluated in training mode it would be noise
    calc = MLFFCalculator(model32)
    assert calc.model is not model32 and not calc.model.dropout.training and model32.dropout.training
    model32.eval()
    assert MLFFCalculator(model32).model is model32
