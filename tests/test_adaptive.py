"""AdaptiveCalculator: checks on structure changes only, adapts once per system, never silent."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import Calculator
from ase.md.verlet import VelocityVerlet

import ase_adapt
from ase_adapt import AdaptiveCalculator, MLFFCalculator
from ase_adapt.adaptive import TriggerSettings
from ase_adapt.errors import UnknownElementError
from ase_adapt.shift.detectors import DetectorSettings
from ase_adapt.testing import toy_frames, toy_prior
from ase_adapt.adapt.ttt import TTTSettings

from conftest import fast_ttt  # noqa: E402

FAST_TTT = fast_ttt()  # mechanics; the guard is tested apart


def _calc(model, **kw) -> AdaptiveCalculator:
    kw.setdefault("ttt", FAST_TTT)
    return AdaptiveCalculator(copy.deepcopy(model), toy_prior(), prior_head="prior", **kw)


def _far_from_training() -> Atoms:
    return molecule("CH3CH2OH")  # bonded and denser than the toy clusters


def test_shifted_system_is_adapted_and_reported(ready):
    atoms = _far_from_training()
    plain = atoms.copy()
    plain.calc = MLFFCalculator(copy.deepcopy(ready))
    calc = _calc(ready)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    report = calc.shift_report
    assert report.shifted and "connectivity" in report.reasons
    assert set(report.detectors) == {"elements", "force_norm", "connectivity"}
    assert calc.ttt_result is not None and calc.ttt_result.steps > 0
    assert calc.ttt_result.loss_after < calc.ttt_result.loss_before
    assert e != pytest.approx(plain.get_potential_energy(), abs=1e-9)  # adapted weights answered
    assert calc.events[-1]["shifted"] and "TTT" in calc.events[-1]["action"]


def test_md_adapts_once_and_reuses_the_cache(ready):
    atoms = _far_from_training()
    calc = _calc(ready, trigger=None)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 0.1 * units.fs)
    dyn.run(5)
    assert len(calc.events) == 1  # bonds unchanged: no further checks
    other = molecule("H2O")
    other.calc = calc
    other.get_potential_energy()
    atoms.get_potential_energy()  # back to the first system: free
    assert [e["action"] for e in calc.events][-1] == "reused cached adaptation"
    assert len(calc.events) == 3


def test_weight_update_resets_cached_results(ready):
    atoms = _far_from_training()
    calc = _calc(ready, adapt_when="never")
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    with torch.no_grad():
        calc.model.parameters_before(1)[0].add_(0.05)
    assert atoms.get_potential_energy() != e0


def test_in_distribution_frames_are_left_alone(ready):
    calc = _calc(ready, detectors=DetectorSettings(k_force=50, k_spectral=50))
    frame = toy_frames(1, seed=30)[0]
    frame.calc = calc
    frame.get_potential_energy()
    assert not calc.shift_report.shifted and calc.ttt_result is None
    assert calc.events[-1]["action"] == "none"


def test_unknown_elements_error_or_nearest(ready):
    atoms = molecule("CH3CH2OH")
    atoms[0].symbol = "N"  # the model knows H, C, O
    atoms.calc = _calc(ready)
    with pytest.raises(UnknownElementError):
        atoms.get_potential_energy()
    calc = _calc(ready, unknown_elements="nearest")
    atoms.calc = calc
    with pytest.warns(UserWarning, match="mapped"):
        e = atoms.get_potential_energy()
    assert np.isfinite(e)
    assert calc.shift_report.unknown_elements == {"N": "C"}
    assert calc.shift_report.detectors["elements"].shifted


class _Broken(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise RuntimeError("SCF did not converge")


def test_prior_failure_skips_ttt_and_returns_the_unadapted_prediction(ready):
    atoms = _far_from_training()
    plain = atoms.copy()
    plain.calc = MLFFCalculator(copy.deepcopy(ready))
    calc = AdaptiveCalculator(copy.deepcopy(ready), _Broken(), prior_head="prior", ttt=FAST_TTT)
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(plain.get_potential_energy(), abs=1e-6)
    assert calc.ttt_result is None
    assert "prior failed" in calc.events[-1]["action"] and "SCF" in calc.events[-1]["prior_error"]


def test_event_log_is_jsonl(ready, tmp_path):
    log = tmp_path / "events.jsonl"
    atoms = _far_from_training()
    atoms.calc = _calc(ready, event_log=log)
    atoms.get_potential_energy()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["report"]["shifted"] and lines[0]["ttt"]["steps"] > 0


def test_radius_refinement_never_raises_the_spectral_distance(ready):
    calc = _calc(ready, radius_refinement=True, adapt_when="always")
    atoms = _far_from_training()
    atoms.calc = calc
    atoms.get_potential_energy()
    detail = calc.shift_report.radius_detail
    assert detail["candidates"][-1] == ready.cutoff
    # recomputed here, not read from the record: the chosen radius's spectrum is at least as close
    # to the training spectrum as the training cutoff's
    from ase_adapt.shift.spectrum import laplacian_spectrum, spectral_distance

    mean = ready.training_stats["spectrum_mean"]
    at = {r: spectral_distance(laplacian_spectrum(atoms, r), mean) for r in (calc.shift_report.radius, ready.cutoff)}
    assert at[calc.shift_report.radius] <= at[ready.cutoff] + 1e-12
    assert at[calc.shift_report.radius] == pytest.approx(min(detail["distances"]), abs=1e-9)
    best = min(detail["distances"])  # ties go to the larger radius
    assert calc.shift_report.radius == max(c for c, d in zip(detail["candidates"], detail["distances"]) if d == best)


def test_prior_without_a_matching_head_is_refused(ready):
    with pytest.raises(ValueError, match="no head for the prior"):
        AdaptiveCalculator(copy.deepcopy(ready), toy_prior())


def test_model_without_statistics_is_refused_for_detection(make_model):
    with pytest.raises(ValueError, match="ase-adapt stats"):
        AdaptiveCalculator(make_model(), toy_prior(), prior_head="prior")


def test_adapted_calculator_keeps_the_physics_contracts(ready):
    """One calculator, as in MD: a rotated or displaced copy is the same system (cached weights)."""
    from ase_adapt.testing import check_finite_difference_forces, check_rotation_equivariance, tolerances

    calc = AdaptiveCalculator(copy.deepcopy(ready).double(), toy_prior(), prior_head="prior", ttt=FAST_TTT)
    factory = lambda: calc  # noqa: E731
    atoms = _far_from_training()
    check_rotation_equivariance(factory, atoms, tolerances("float64"))
    check_finite_difference_forces(factory, atoms)
    assert len(calc.events) == 1 and calc.ttt_result.steps > 0


@pytest.mark.parametrize("ensemble", ["nvt", "nve"])
def test_200_md_steps_on_a_small_molecule(ready, ensemble):
    from ase.md.langevin import Langevin

    atoms = molecule("H2O")
    calc = _calc(ready, adapt_when="always")
    atoms.calc = calc
    if ensemble == "nvt":
        dyn = Langevin(atoms, 0.25 * units.fs, temperature_K=300, friction=0.02, fixcm=False,
                       rng=np.random.default_rng(0))
    else:
        dyn = VelocityVerlet(atoms, 0.25 * units.fs)
    dyn.run(200)
    assert np.isfinite(atoms.get_positions()).all() and np.isfinite(atoms.get_forces()).all()
    # the first call checks, and a later check happens only for a new topology (the tiny model
    # may break the molecule apart): every check adapted, and no two in a row saw the same system
    kinds, prints = [e["kind"] for e in calc.events], [e["fingerprint"] for e in calc.events]
    assert calc.events[0]["call"] == 1 and set(kinds) == {"adapted"}
    assert all(a != b for a, b in zip(prints, prints[1:])) and len(kinds) < 10


class _FailsLater(Calculator):
    """A prior that works for ``ok`` calls, then fails (SCF trouble mid-run)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, ok: int):
        super().__init__()
        self.ok, self.calls, self.inner = ok, 0, toy_prior()

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        self.calls += 1
        if self.calls > self.ok:
            raise RuntimeError("SCF did not converge")
        Calculator.calculate(self, atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.inner
        self.results = {"energy": a.get_potential_energy(), "forces": a.get_forces()}


def test_prior_failure_mid_run_gives_an_event_and_unadapted_results(ready):
    atoms = _far_from_training()
    prior = _FailsLater(ok=5)  # enough for the first check: 1 structure + 4 rattled samples
    calc = AdaptiveCalculator(copy.deepcopy(ready), prior, prior_head="prior", ttt=FAST_TTT,
                              trigger=TriggerSettings(every_n_steps=10))
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 0.1 * units.fs)
    dyn.run(25)
    assert calc.events[0]["ttt"] is not None
    failed = [e for e in calc.events if "prior_error" in e]
    assert failed and all("SCF" in e["prior_error"] for e in failed)
    # after the failed check the model answers with its base (unadapted) weights
    plain = atoms.copy()
    plain.calc = MLFFCalculator(copy.deepcopy(ready))
    assert atoms.get_potential_energy() == pytest.approx(plain.get_potential_energy(), abs=1e-6)


def test_returned_arrays_are_copies(ready):
    atoms = _far_from_training()
    atoms.calc = _calc(ready)
    f = atoms.get_forces()
    f[:] = 0.0
    assert np.abs(atoms.get_forces()).sum() > 0


def test_periodic_cell_gives_stress_after_adaptation(ready):
    from ase.build import bulk

    atoms = bulk("C", "diamond", a=3.6).repeat((2, 1, 1))
    calc = _calc(ready, adapt_when="always")
    atoms.calc = calc
    stress = atoms.get_stress()
    assert stress.shape == (6,) and np.isfinite(stress).all()
    assert calc.ttt_result is not None and np.isfinite(atoms.get_forces()).all()


def test_bond_flicker_does_not_retrigger_but_a_broken_bond_does(ready):
    """Hysteresis: a bond stretched past the formation factor is not broken until break_factor."""
    atoms = _far_from_training()
    calc = _calc(ready, adapt_when="never")
    atoms.calc = calc
    atoms.get_potential_energy()
    h = [i for i, z in enumerate(atoms.numbers) if z == 1][0]
    partner = int(np.argsort(atoms.get_distances(h, range(len(atoms))))[1])
    d0 = atoms.get_distance(h, partner)
    direction = (atoms.positions[h] - atoms.positions[partner]) / d0
    atoms.positions[h] += direction * (0.3 * d0)  # about 1.3x the covalent sum: thermal flicker
    atoms.get_potential_energy()
    assert len(calc.events) == 1
    atoms.positions[h] += direction * (0.6 * d0)  # far past 1.5x: broken
    atoms.get_potential_energy()
    assert len(calc.events) == 2


def test_a_guard_rollback_is_visible_and_the_unadapted_answer_returned(ready):
    from ase_adapt.adapt import GuardSettings

    atoms = _far_from_training()
    plain = MLFFCalculator(copy.deepcopy(ready)).get_potential_energy(atoms.copy())
    strict = TTTSettings(lr=1e-2, max_steps=30, md_steps=0, guard=GuardSettings(max_move_ratio=1e-9))
    calc = _calc(ready, ttt=strict)
    assert calc.get_potential_energy(atoms) == pytest.approx(plain, abs=1e-9)
    assert calc.ttt_result.rolled_back and calc.ttt_result.guard["accepted"] is False
    assert "rolled back by the guard" in calc.events[-1]["action"] and "jumped" in calc.events[-1]["action"]


def test_every_check_has_a_typed_kind(ready, tmp_path):
    """Programs switch on ``kind`` (adapt.events.EventKind), not on the readable ``action``."""
    import json

    from ase_adapt.adapt.events import EventKind

    log = tmp_path / "events.jsonl"
    atoms = _far_from_training()
    calc = _calc(ready, event_log=log, trigger=TriggerSettings(every_n_steps=1))
    atoms.calc = calc
    atoms.get_potential_energy()
    assert calc.events[-1]["kind"] == EventKind.ADAPTED.value
    calc.check(atoms.copy())  # the same system again: its cached adaptation
    assert calc.events[-1]["kind"] == EventKind.REUSED.value
    never = _calc(ready, adapt_when="never")
    never.get_potential_energy(atoms.copy())
    assert never.events[-1]["kind"] == EventKind.NOT_ADAPTED.value
    assert [json.loads(line)["kind"] for line in log.read_text().splitlines()] == [e["kind"] for e in calc.events]


def test_force_norm_detector_uses_the_priors_head_without_ttt():
    """Detection alone (no TTT) still reads the statistics of the prior's own head, prior:gfn-ff."""
    import ase_adapt

    atoms = molecule("CH3CH2OH")
    for ttt in (False, True):
        calc = AdaptiveCalculator(ase_adapt.load_model("default"), "gfn-ff", ttt=ttt, adapt_when="never")
        force_norm = calc.check(atoms.copy()).detectors["force_norm"]
        assert force_norm.score is not None, force_norm.detail
        assert "vs training 1.83" in force_norm.detail  # prior:gfn-ff's mean |F|, not another head's
