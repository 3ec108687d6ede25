"""MLFFCalculator: the ASE contract and the reliability checklist (1, 2, 8, 9, 10, 14, 15)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import CalculationFailed as AseCalculationFailed
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet

import ase_adapt
from ase_adapt import CalculationFailed, MLFFCalculator, UnknownElementError


def _ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    return atoms


def _periodic() -> Atoms:
    """A small 3D-periodic cell of C/O (cell smaller than twice the cutoff)."""
    atoms = bulk("C", "diamond", a=3.57, cubic=False) * (1, 1, 2)
    atoms.numbers[1] = 8
    atoms.rattle(0.05, seed=1)
    return atoms


# ---------------------------------------------------------------- checklist 1: the cache
def _move(a):
    a.positions[0, 0] += 1e-3


def _renumber(a):
    a.numbers[1] = 7


def _cell(a):
    a.cell = a.cell.array * 1.01


def _pbc(a):
    a.pbc = [True, True, False]


def _charges(a):
    a.set_initial_charges(np.linspace(-0.2, 0.2, len(a)))


def _magmoms(a):
    a.set_initial_magnetic_moments(np.linspace(0.0, 1.0, len(a)))


def _info_charge(a):
    a.info["charge"] = 1


def _info_spin(a):
    a.info["spin"] = 2


SYSTEM_CHANGES = [_move, _renumber, _cell, _pbc, _charges, _magmoms, _info_charge, _info_spin]


@pytest.mark.parametrize("change", SYSTEM_CHANGES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("system", ["molecule", "periodic"])
def test_cache_invalidated_by_system_change(model32, count_calls, change, system):
    atoms = _ethanol() if system == "molecule" else _periodic()
    if system == "molecule":
        atoms.cell = [12.0, 12.0, 12.0]  # a box, so that a cell change is a real change
    calls = count_calls(model32)
    atoms.calc = MLFFCalculator(model32)
    e1 = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energies()
    assert calls.n == 1
    change(atoms)
    e2 = atoms.get_potential_energy()
    assert calls.n == 2
    atoms.get_forces()
    assert calls.n == 2
    if change in (_move, _renumber) or (change is _cell and system == "periodic"):
        assert e2 != e1


def test_identical_atoms_do_not_call_model_again(model32, count_calls):
    atoms = _ethanol()
    calls = count_calls(model32)
    calc = MLFFCalculator(model32)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    for _ in range(3):
        assert atoms.get_potential_energy() == e
        np.testing.assert_array_equal(atoms.get_forces(), f)
        assert calc.get_potential_energy(atoms.copy()) == e  # an equal copy is the same system
        assert calc.get_potential_energy() == e
    atoms.info["comment"] = "not physical"  # info keys other than charge/spin are not the system
    atoms.get_potential_energy()
    assert calls.n == 1


def _add_in_place(model):
    with torch.no_grad():
        next(model.interactions[0].parameters()).add_(0.05)


def _data_copy(model):
    """Legacy style (e.g. EMA ``copy_to``): ``.data`` has no shared version counter."""
    p = next(model.interactions[1].parameters())
    p.data.copy_(p.data * 1.5 + 0.01)


def _sgd_step(model):
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()


def _load_state_dict(model):
    other = ase_adapt.build_model(**{**model.config, "seed": 7})
    model.load_state_dict(other.state_dict())


def _set_e0(model):
    model.heads["main"].set_e0([-1.0, -2.0, -3.0, -4.0])


def _scale_buffer(model):
    with torch.no_grad():
        model.heads["main"].scale.mul_(3.0)


WEIGHT_UPDATES = [_add_in_place, _data_copy, _sgd_step, _load_state_dict, _set_e0, _scale_buffer]


@pytest.mark.parametrize("update", WEIGHT_UPDATES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("ask", ["calc-no-atoms", "atoms", "forces"])
def test_cache_invalidated_by_weight_update(model32, count_calls, update, ask):
    atoms = _ethanol()
    calls = count_calls(model32)
    calc = MLFFCalculator(model32)
    atoms.calc = calc
    e1 = atoms.get_potential_energy()
    f1 = atoms.get_forces()
    assert calls.n == 1
    update(model32)
    if ask == "calc-no-atoms":
        e2 = calc.get_potential_energy()
    elif ask == "atoms":
        e2 = atoms.get_potential_energy()
    else:
        f2 = calc.get_forces()
        assert calls.n == 2
        assert not np.array_equal(f1, f2) or update is _set_e0
        e2 = calc.get_potential_energy()
    assert calls.n == 2
    assert e2 != e1
    # the fresh result is cached again
    atoms.get_potential_energy()
    calc.get_forces()
    assert calls.n == 2


# ---------------------------------------------------------------- checklist 2: copies, properties
def test_returned_arrays_are_copies(model32):
    atoms = _periodic()
    atoms.calc = MLFFCalculator(model32)
    getters = [atoms.get_forces, atoms.get_stress, atoms.get_potential_energies]
    for get in getters:
        first = get()
        expected = first.copy()
        first[...] = 12345.0
        np.testing.assert_array_equal(get(), expected)
        assert get() is not get()


def test_unimplemented_properties_raise(model32):
    atoms = _ethanol()
    calc = MLFFCalculator(model32)
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_dipole_moment()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_magnetic_moment()
    for name in ("dipole", "magmom", "magmoms", "charges"):
        with pytest.raises(PropertyNotImplementedError):
            calc.get_property(name, atoms)
    assert "dipole" not in MLFFCalculator.implemented_properties
    assert MLFFCalculator.implemented_properties is not ase_adapt.calculator.Calculator.implemented_properties


@pytest.mark.parametrize("pbc", [False, [True, True, False], [True, False, False]])
def test_stress_needs_3d_periodic_cell(model32, pbc):
    atoms = _ethanol()
    atoms.cell = [10.0, 10.0, 10.0]
    atoms.pbc = pbc
    atoms.calc = MLFFCalculator(model32)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    assert np.isfinite(atoms.get_potential_energy())  # the calculator still works afterwards


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_results_are_float64_numpy(_models, dtype):
    atoms = _periodic()
    atoms.calc = MLFFCalculator(_models[dtype])
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    for value, shape in [(atoms.get_forces(), (len(atoms), 3)), (atoms.get_stress(), (6,)),
                         (atoms.get_potential_energies(), (len(atoms),))]:
        assert isinstance(value, np.ndarray) and value.dtype == np.float64 and value.shape == shape
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, abs=1e-9)
    assert atoms.calc.get_property("free_energy", atoms) == energy


def test_calculator_dtype_argument(model32):
    calc = MLFFCalculator(model32, dtype="float64")
    assert calc.model.dtype == torch.float64
    atoms = _ethanol()
    atoms.calc = calc
    assert atoms.get_forces().dtype == np.float64


# ---------------------------------------------------------------- checklist 8: E0
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("symbol", ["H", "C", "O"])
def test_isolated_atom_returns_exactly_its_e0(_models, dtype, symbol):
    import copy

    model = copy.deepcopy(_models[dtype])
    e0 = {"H": -13.6123456789, "C": -1037.123456789, "N": -1485.25, "O": -2040.987654321}
    model.heads["main"].set_e0([e0[s] for s in ("H", "C", "N", "O")])
    model.heads["prior"].set_e0([1.5, 2.5, 3.5, 4.5])
    with torch.no_grad():
        for head in model.heads.values():
            head.scale.fill_(10.0)
    atoms = Atoms(symbol, positions=[[0.3, -0.2, 0.1]])
    atoms.calc = MLFFCalculator(model)
    assert atoms.get_potential_energy() == e0[symbol]
    assert atoms.get_potential_energies().tolist() == [e0[symbol]]
    assert np.all(atoms.get_forces() == 0.0)
    prior = MLFFCalculator(model, head="prior")
    assert prior.get_potential_energy(atoms) == {"H": 1.5, "C": 2.5, "O": 4.5}[symbol]

    # in a periodic box larger than the cutoff, and next to a far-away molecule
    boxed = atoms.copy()
    boxed.cell = [3 * model.cutoff] * 3
    boxed.pbc = True
    boxed.calc = MLFFCalculator(model)
    assert boxed.get_potential_energy() == e0[symbol]
    np.testing.assert_array_equal(boxed.get_stress(), np.zeros(6))
    far = _ethanol() + Atoms(symbol, positions=[[0.0, 0.0, 3 * model.cutoff]])
    far.calc = MLFFCalculator(model)
    assert far.get_potential_energies()[-1] == e0[symbol]


# ---------------------------------------------------------------- checklist 9: unknown elements
def test_unknown_element_rejected_before_compute(model32, count_calls):
    calls = count_calls(model32)
    atoms = molecule("SiH4")
    calc = MLFFCalculator(model32)
    atoms.calc = calc
    with pytest.raises(UnknownElementError, match="Si"):
        atoms.get_potential_energy()
    assert calls.n == 0
    with pytest.raises(UnknownElementError):  # asking again never returns anything stale
        calc.get_potential_energy()
    assert calls.n == 0


@pytest.mark.parametrize("formula, mapping", [("SiH4", {"Si": "C"}), ("SH2", {"S": "O"})])
def test_nearest_element_policy(model32, formula, mapping):
    atoms = molecule(formula)
    before = atoms.numbers.copy()
    calc = MLFFCalculator(model32, unknown_elements="nearest")
    atoms.calc = calc
    with pytest.warns(UserWarning, match=next(iter(mapping))):
        energy = atoms.get_potential_energy()
    assert calc.species_mapping is not None
    assert calc.species_mapping.report == mapping
    np.testing.assert_array_equal(atoms.numbers, before)  # the user's Atoms are untouched
    assert atoms.get_chemical_formula() == molecule(formula).get_chemical_formula()

    substituted = atoms.copy()
    for old, new in mapping.items():
        substituted.symbols[substituted.symbols == old] = new
    substituted.calc = MLFFCalculator(model32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert substituted.get_potential_energy() == energy
    assert substituted.calc.species_mapping.report == {}


def test_invalid_policy_rejected(model32):
    with pytest.raises(ValueError):
        MLFFCalculator(model32, unknown_elements="ignore")
    with pytest.raises(KeyError):
        MLFFCalculator(model32, head="no-such-head")


# ---------------------------------------------------------------- checklist 10: CalculationFailed
def _nan(a):
    a.positions[2, 1] = np.nan


def _inf(a):
    a.positions[0, 0] = -np.inf


def _overlap(a):
    a.positions[3] = a.positions[0] + [0.02, 0.0, 0.03]


@pytest.mark.parametrize("spoil", [_nan, _inf, _overlap], ids=lambda f: f.__name__.strip("_"))
def test_bad_geometry_raises_calculation_failed(model32, count_calls, spoil):
    atoms = _ethanol()
    calc = MLFFCalculator(model32)
    atoms.calc = calc
    atoms.get_forces()
    calls = count_calls(model32)
    spoil(atoms)
    with pytest.raises(CalculationFailed) as info:
        atoms.get_forces()
    assert isinstance(info.value, AseCalculationFailed)
    assert calls.n == 0
    with pytest.raises(AseCalculationFailed):  # no stale forces from the previous geometry
        calc.get_forces()


def test_min_distance_floor(model32):
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    h2.calc = MLFFCalculator(model32)
    assert np.isfinite(h2.get_potential_energy())
    h2.calc = MLFFCalculator(model32, min_distance=0.8)
    with pytest.raises(CalculationFailed, match="min_distance"):
        h2.get_potential_energy()
    # the floor also applies across periodic images
    cell = Atoms("H", positions=[[0, 0, 0]], cell=[0.05, 5.0, 5.0], pbc=True)
    cell.calc = MLFFCalculator(model32)
    with pytest.raises(CalculationFailed):
        cell.get_potential_energy()


@pytest.mark.parametrize("key", ["energy", "forces", "node_energy", "stress"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_model_output_raises(model32, monkeypatch, key, bad):
    original = model32.forward

    def broken(*args, **kwargs):
        out = original(*args, **kwargs)
        out[key] = torch.full_like(out[key], bad)
        return out

    atoms = _periodic()
    calc = MLFFCalculator(model32)
    atoms.calc = calc
    monkeypatch.setattr(model32, "forward", broken)
    for get in (atoms.get_potential_energy, atoms.get_forces, atoms.get_stress):
        with pytest.raises(CalculationFailed, match="non-finite"):
            get()
    assert not calc.results


def test_short_nve_run_conserves_energy(model64):
    atoms = molecule("CH3OH")
    atoms.rattle(0.1, seed=2)
    atoms.calc = MLFFCalculator(model64)
    assert np.abs(atoms.get_forces()).max() > 0.05  # forces are not trivial
    kt = 300 * units.kB
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(np.sqrt(masses * kt) * np.random.default_rng(0).standard_normal((len(atoms), 3)))
    e_start = atoms.get_total_energy()
    energies = []
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dyn.run(20)
    energies = np.array(energies)
    assert np.all(np.isfinite(energies)) and np.all(np.isfinite(atoms.positions))
    assert np.abs(energies - e_start).max() / len(atoms) < 1e-3
    assert np.abs(atoms.positions - molecule("CH3OH").positions).max() < 1.0


def test_nve_with_the_default_model_drifts_less_than_the_checklist_bound():
    """Checklist 5 at its bound (1e-4 eV/atom, float64, 0.5 fs, TTT off), CI-sized: 1,000 steps of
    ethanol. E_0 and E_end are means over the first and last 100 steps, so the bound measures drift,
    not Verlet's bounded oscillation (itself checked against 1e-3). benchmarks/nve_drift.py runs
    the full 10,000 steps."""
    from ase_adapt.workflows import nve_energies

    atoms = molecule("CH3CH2OH")
    energies, _ = nve_energies(atoms, MLFFCalculator("default", dtype="float64"), 1000)
    n = len(atoms)
    drift = abs(energies[-100:].mean() - energies[:100].mean()) / n
    assert np.isfinite(energies).all() and drift < 1e-4, drift
    assert np.abs(energies - energies[0]).max() / n < 1e-3


# ---------------------------------------------------------------- checklist 15: determinism
def test_repeated_evaluation_is_bit_identical(model32):
    atoms = _periodic()
    runs = []
    for _ in range(3):
        calc = MLFFCalculator(model32)
        runs.append((calc.get_potential_energy(atoms), calc.get_forces(atoms), calc.get_stress(atoms)))
        calc.reset()
        again = (calc.get_potential_energy(atoms), calc.get_forces(atoms), calc.get_stress(atoms))
        for x, y in zip(runs[-1], again):
            np.testing.assert_array_equal(x, y)
    for run in runs[1:]:
        for x, y in zip(runs[0], run):
            np.testing.assert_array_equal(x, y)


def test_build_is_seeded_and_leaves_global_rng_alone(make_model):
    tiny_model = make_model
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = tiny_model()
    b = tiny_model()
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    c = tiny_model(seed=1)
    assert any(not torch.equal(sa[k], v) for k, v in c.state_dict().items() if v.is_floating_point())
    assert torch.equal(torch.get_rng_state(), state)
    ase_adapt.models.new_head(a, "prior:lj")
    assert torch.equal(torch.get_rng_state(), state)


def test_small_systems_compute_on_one_thread_and_the_setting_is_restored(monkeypatch):
    """torch's default (a thread per core) made a 20-atom call 3x slower on 2 cores (_threads.py)."""
    import torch
    from ase.build import molecule

    import ase_adapt
    from ase_adapt._threads import threads_for

    seen = []
    model = ase_adapt.build_model(elements=["H", "C", "O"], channels=4, num_layers=1)
    original = type(model).forward

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for threads, expected in ((None, 1), (2, 2), (1, 1)):
            atoms = molecule("CH3CH2OH")
            atoms.calc = ase_adapt.MLFFCalculator(model, threads=threads)
            atoms.get_forces()
            assert seen[-1] == expected and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert threads_for(5000, None) is None and threads_for(10, 3) == 3
    with pytest.raises(ValueError, match="threads must be"):
        ase_adapt.MLFFCalculator(model, threads=0)
