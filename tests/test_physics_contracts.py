"""Physics contracts (ase_adapt.testing) applied to the built-in MLFF and MLFFCalculator.

Tiny models (8 channels, 2 layers, l_max 1) in float32 and float64 on molecules (H, C, N, O) and
periodic silicon: a sheared triclinic supercell, a primitive cell smaller than twice the cutoff
and a mixed-pbc slab (no stress). Untrained heads give forces of ~1e-2 eV/Å, so the head scales
are raised to make forces O(0.1-1) eV/Å and the contracts meaningful.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, diamond100, molecule
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.lj import LennardJones

import ase_adapt
from ase_adapt import testing as T
from ase_adapt.testing import CalculatorContract

ELEMENTS = ("H", "C", "N", "O", "Si")
CUTOFF = 4.0
TINY = dict(channels=8, num_layers=2, l_max=1, radial_hidden=8, head_hidden=8, cutoff=CUTOFF)
E0_MAIN = {"H": -13.6, "C": -1029.8, "N": -1485.3, "O": -2042.6, "Si": -7849.9}
E0_PRIOR = {"H": -0.5, "C": -3.7, "N": -5.1, "O": -6.2, "Si": -1.9}
DTYPES = ("float32", "float64")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine OpenMP
    # waiting makes each call ~10x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_model(dtype: str) -> ase_adapt.MLFF:
    """A tiny model with non-trivial E0s and per-element head scales (O(1) eV/Å forces)."""
    model = ase_adapt.build_model(elements=ELEMENTS, dtype=dtype, seed=3, **TINY)
    T.scaled_heads(model, {"main": [20.0, 10.0, 15.0, 12.0, 60.0], "prior": [8.0, 25.0, 9.0, 30.0, 40.0]})
    model.heads["main"].set_e0([E0_MAIN[s] for s in ELEMENTS])
    model.heads["prior"].set_e0([E0_PRIOR[s] for s in ELEMENTS])
    return model


@pytest.fixture(scope="module")
def models() -> dict[str, ase_adapt.MLFF]:
    return {dt: make_model(dt) for dt in DTYPES}


@pytest.fixture(params=DTYPES)
def model(request, models) -> ase_adapt.MLFF:
    return models[request.param]


def _rattled(atoms: Atoms, seed: int, amount: float = 0.05) -> Atoms:
    atoms.rattle(amount, seed=seed)
    return atoms


def MOLECULES() -> list[Atoms]:  # noqa: N802 (a constant-like factory)
    """Rattled ethanol, acetamide (H, C, N, O) and water."""
    return [_rattled(molecule(name), k) for k, name in enumerate(("CH3CH2OH", "CH3CONH2", "H2O"))]


def CELLS() -> list[Atoms]:  # noqa: N802
    """Sheared Si supercell, small primitive Si cell, Si slab (pbc T,T,F), CH4 in a triclinic box."""
    si = bulk("Si", "diamond", a=5.43)
    sheared = T.sheared_rattled_supercell(si, repeat=(2, 2, 1), shear=0.08, rattle=0.05, seed=5)
    small = _rattled(si.copy(), 6, 0.08)  # 2 atoms, cell vectors 3.84 Å < 2 r_cut: self-images
    slab = _rattled(diamond100("Si", (2, 2, 2), vacuum=5.0), 7)  # pbc (T, T, F): no stress
    ch4_box = _rattled(molecule("CH4", cell=[[4.6, 0.0, 0.0], [1.1, 4.9, 0.0], [-0.7, 0.9, 5.3]], pbc=True), 8)
    return [sheared, small, slab, ch4_box]


# ---------------------------------------------------------------------------- calculator suite
class _BuiltinContract(CalculatorContract):
    cutoff = CUTOFF
    isolated_box = 2.5 * CUTOFF

    @pytest.fixture(scope="class")
    @classmethod
    def make_calculator(cls, models):
        model = models[cls.dtype]
        return lambda: ase_adapt.MLFFCalculator(model)

    @pytest.fixture(scope="class")
    @classmethod
    def molecules(cls):
        return MOLECULES()

    @pytest.fixture(scope="class")
    @classmethod
    def periodic_structures(cls):
        return CELLS()

    @pytest.fixture(scope="class")
    @classmethod
    def atomic_energies(cls):
        return E0_MAIN


class TestBuiltinFloat32(_BuiltinContract):
    dtype = "float32"


class TestBuiltinFloat64(_BuiltinContract):
    dtype = "float64"
    dimer = ("Si", "O")


def test_forces_are_not_trivial(models):
    """The contracts compare O(0.1-1) eV/Å forces, not numerical noise."""
    factory = T.model_calculator_factory(models["float64"])
    for atoms in MOLECULES() + CELLS():
        fmax = np.abs(T.evaluate(factory, atoms).forces).max()
        assert 0.05 < fmax < 20.0, f"{atoms.get_chemical_formula()}: max |F| = {fmax}"


def test_slab_gives_no_stress(models):
    slab = CELLS()[2]
    slab.calc = ase_adapt.MLFFCalculator(models["float64"])
    assert np.isfinite(slab.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def test_finite_difference_stress_on_small_cell(models):
    """The 2-atom primitive cell sees its own periodic images: the stress must still be exact."""
    factory = T.model_calculator_factory(models["float64"])
    T.check_finite_difference_stress(factory, CELLS()[1], atol=1e-8)
    T.check_finite_difference_stress(factory, CELLS()[3], atol=1e-8)


def test_isolated_atom_in_float32_is_exact(models):
    factory = T.model_calculator_factory(models["float32"])
    for symbol, e0 in E0_MAIN.items():
        T.check_isolated_atom(factory, symbol, e0)


class _RefinedRadius(ase_adapt.MLFFCalculator):
    """Builds graphs at a radius below the training cutoff, as radius refinement does."""

    radius = 3.0

    def make_graph(self, atoms, cutoff=None):
        return super().make_graph(atoms, self.radius)


@pytest.mark.parametrize("dtype", DTYPES)
def test_smooth_cutoff_at_a_refined_radius(models, dtype):
    """The envelope follows the graph radius: forces vanish smoothly at the refined radius too."""
    model = models[dtype]
    T.check_smooth_cutoff(lambda: _RefinedRadius(model), ("C", "N"), _RefinedRadius.radius, T.tolerances(dtype))


# ---------------------------------------------------------------------------- model contracts
def test_isolated_atoms_return_e0_for_every_head(model):
    T.check_isolated_atoms_e0(model)


def test_multihead_evaluation_equals_single_heads(model):
    T.check_multihead_consistency(model, MOLECULES() + CELLS(), ["main", "prior"])
    periodic = [a for a in CELLS() if a.pbc.all()]
    T.check_multihead_consistency(model, periodic, ["main", "prior"])  # with stress


def test_batch_equals_single(model):
    T.check_batch_consistency(model, MOLECULES() + CELLS())  # mixed pbc: energy and forces
    T.check_batch_consistency(model, [a for a in CELLS() if a.pbc.all()])  # stress too
    T.check_batch_consistency(model, MOLECULES() + CELLS(), head="prior")


def test_save_load_round_trip(model, tmp_path):
    structures = [MOLECULES()[1], CELLS()[0]]
    T.check_save_load_roundtrip(model, structures, tmp_path, suffixes=(".safetensors", ".pt"),
                                atol=1e-8 if model.dtype == torch.float64 else None)


def test_model_determinism(model):
    T.check_model_determinism(model, MOLECULES() + CELLS())


def test_run_all_contracts_float32(models):
    names = T.run_all_contracts(
        T.model_calculator_factory(models["float32"]), dtype=torch.float32,
        molecules=MOLECULES()[:2], periodic=CELLS()[:2], atomic_energies={"N": E0_MAIN["N"]}, cutoff=CUTOFF,
    )
    assert {"additivity", "smooth_cutoff", "isolated_atom[N]"} <= set(names)
    assert any(n.startswith("fd_stress") for n in names)  # coarse steps and tolerances in float32


# ---------------------------------------------------------------------------- the suite itself
def test_tolerances_by_dtype():
    assert T.tolerances(torch.float32) == T.tolerances("float32") == T.tolerances(np.float32)
    assert T.tolerances(torch.float64).energy == 1e-8 and T.tolerances("float32").energy == 1e-3
    assert T.finite_differences(torch.float64).force_atol == 1e-5
    with pytest.raises(ValueError, match="float16"):
        T.tolerances(torch.float16)


def test_suite_runs_on_a_foreign_backend():
    """A smooth ASE Lennard-Jones passes the generic suite: nothing in it is MLFF-specific."""
    factory = lambda: LennardJones(sigma=0.8, epsilon=0.05, rc=CUTOFF, ro=3.0, smooth=True)  # noqa: E731
    names = T.run_all_contracts(factory, dtype="float64", molecules=MOLECULES()[:2], periodic=CELLS()[:2],
                                atomic_energies={"C": 0.0}, cutoff=CUTOFF, fd_max_atoms=3)
    assert any(n.startswith("fd_stress") for n in names)


class _Distorted(Calculator):
    """Wraps a calculator and distorts its results, to prove that the contracts catch bugs."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, inner: Calculator, distort) -> None:
        super().__init__()
        self.inner, self.distort = inner, distort

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.inner
        res = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "energies": a.get_potential_energies()}
        if "stress" in properties:
            res["stress"] = a.get_stress()
        self.distort(self.atoms, res)
        res["free_energy"] = res["energy"]
        self.results = res


def test_contracts_catch_broken_calculators(models):
    model, tol = models["float64"], T.tolerances("float64")
    mol, cell = MOLECULES()[0], CELLS()[0]

    def broken(distort):
        return lambda: _Distorted(ase_adapt.MLFFCalculator(model), distort)

    def field(atoms, res):  # an external field in the energy only
        res["energy"] += 0.01 * atoms.positions[:, 0].sum()

    def push(atoms, res):  # a net force
        res["forces"] = res["forces"] + np.array([0.01, 0.0, 0.0])

    with pytest.raises(AssertionError, match="finite-difference force"):
        T.check_finite_difference_forces(broken(lambda a, r: r.update(forces=r["forces"] * 1.001)), mol, indices=[0])
    def flip_stress(atoms, res):
        if "stress" in res:
            res["stress"] = -res["stress"]

    with pytest.raises(AssertionError, match="finite-difference stress"):
        T.check_finite_difference_stress(broken(flip_stress), cell)
    with pytest.raises(AssertionError, match="translation invariance: energy"):
        T.check_translation_invariance(broken(field), mol, tol)
    with pytest.raises(AssertionError, match="rotation equivariance: energy"):
        T.check_rotation_equivariance(broken(field), mol, tol)
    with pytest.raises(AssertionError, match="sum of forces"):
        T.check_energy_decomposition(broken(push), mol, tol)
    with pytest.raises(AssertionError, match="per-atom energies"):
        T.check_energy_decomposition(broken(lambda a, r: r.update(energy=r["energy"] + 1e-6)), mol, tol)
    with pytest.raises(AssertionError, match="E0"):
        T.check_isolated_atom(broken(lambda a, r: r.update(energy=r["energy"] + 1e-12)), "O", E0_MAIN["O"])
    hard = lambda: LennardJones(sigma=3.0, epsilon=0.1, rc=CUTOFF, smooth=False)  # noqa: E731
    with pytest.raises(AssertionError, match="smooth cutoff"):
        T.check_smooth_cutoff(hard, ("C", "O"), CUTOFF, tol)
