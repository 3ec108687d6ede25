"""Shared pieces of the physics contracts: tolerances, evaluation, comparison, transforms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

CalculatorFactory = Callable[[], Calculator]
"""A callable returning a *fresh* ASE calculator (so contracts never share a cache by accident)."""


@dataclass(frozen=True)
class Tolerances:
    """Absolute tolerances (eV, eV/Å, eV/Å³) plus a relative one, for comparing two evaluations."""

    energy: float
    forces: float
    stress: float
    rtol: float


_TOLERANCES = {
    "float32": Tolerances(energy=1e-3, forces=1e-4, stress=1e-5, rtol=1e-4),
    "float64": Tolerances(energy=1e-8, forces=1e-10, stress=1e-10, rtol=1e-10),
}


@dataclass(frozen=True)
class FiniteDifferences:
    """Step sizes and absolute tolerances of the central finite-difference checks.

    float64 is the real contract (forces within 1e-5 eV/Å). float32 rounding noise in the energy
    (~1e-6 relative) forces larger steps and looser tolerances: a sanity check for sign and
    factor errors only.
    """

    force_delta: float  # Å
    force_atol: float  # eV/Å
    stress_delta: float  # strain
    stress_atol: float  # eV/Å³


_FINITE_DIFFERENCES = {
    "float32": FiniteDifferences(force_delta=3e-3, force_atol=1e-2, stress_delta=1e-3, stress_atol=1e-4),
    "float64": FiniteDifferences(force_delta=1e-4, force_atol=1e-5, stress_delta=1e-5, stress_atol=1e-6),
}


def _dtype_name(dtype: object) -> str:
    text = str(dtype)
    if text.startswith("torch."):
        name = text[len("torch."):]
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = text
    if name not in _TOLERANCES:
        raise ValueError(f"no tolerances for dtype {dtype!r}; expected float32 or float64")
    return name


def tolerances(dtype: object) -> Tolerances:
    """Tolerances for a model evaluated in ``dtype`` (torch/numpy dtype or ``"float32"``/``"float64"``)."""
    return _TOLERANCES[_dtype_name(dtype)]


def finite_differences(dtype: object) -> FiniteDifferences:
    """Finite-difference steps and tolerances for a model evaluated in ``dtype``."""
    return _FINITE_DIFFERENCES[_dtype_name(dtype)]


@dataclass
class Prediction:
    """What one calculator returned for one structure (float64 numpy, stress as 3x3)."""

    energy: float
    forces: np.ndarray
    energies: np.ndarray | None = None
    stress: np.ndarray | None = None


def evaluate(
    factory: CalculatorFactory,
    atoms: Atoms,
    *,
    stress: bool | None = None,
    energies: bool | None = False,
    calc: Calculator | None = None,
) -> Prediction:
    """Evaluate a copy of ``atoms`` with a fresh calculator from ``factory`` (or with ``calc``).

    ``stress=None`` asks for the stress only when the cell is periodic in all three directions;
    ``energies=None`` asks for per-atom energies only when the calculator implements them.
    """
    a = atoms.copy()
    a.calc = calc if calc is not None else factory()
    want_stress = bool(a.pbc.all()) if stress is None else stress
    if energies is None:
        energies = "energies" in getattr(a.calc, "implemented_properties", ())
    return Prediction(
        energy=float(a.get_potential_energy()),
        forces=np.array(a.get_forces(), dtype=np.float64),
        energies=np.array(a.get_potential_energies(), dtype=np.float64) if energies else None,
        stress=np.array(a.get_stress(voigt=False), dtype=np.float64) if want_stress else None,
    )


def assert_close(actual, expected, atol: float, rtol: float = 0.0, what: str = "value") -> None:
    """Raise AssertionError naming ``what`` and the worst element unless |a - e| <= atol + rtol |e|."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {e.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
        raise AssertionError(f"{what}: non-finite values (actual {a}, expected {e})")
    diff = np.abs(a - e)
    excess = diff - (atol + rtol * np.abs(e))
    if a.size and excess.max() > 0:
        k = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
        raise AssertionError(
            f"{what}: max |difference| {diff.max():.3e} (worst at index {tuple(int(i) for i in k)}: "
            f"actual {a[k]:.12g}, expected {e[k]:.12g}) exceeds atol={atol:g} + rtol={rtol:g}*|expected|"
        )


def assert_predictions_close(
    actual: Prediction, expected: Prediction, tol: Tolerances, what: str
) -> None:
    """Compare every field the two predictions both carry."""
    assert_close(actual.energy, expected.energy, tol.energy, tol.rtol, f"{what}: energy")
    assert_close(actual.forces, expected.forces, tol.forces, tol.rtol, f"{what}: forces")
    if actual.energies is not None and expected.energies is not None:
        assert_close(actual.energies, expected.energies, tol.energy, tol.rtol, f"{what}: per-atom energies")
    if actual.stress is not None and expected.stress is not None:
        assert_close(actual.stress, expected.stress, tol.stress, tol.rtol, f"{what}: stress")


def random_rotation(seed: int = 0, reflect: bool = False) -> np.ndarray:
    """A random proper rotation (det +1), or an improper one (det -1) when ``reflect``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ np.diag([-1.0, 1.0, 1.0])
    return q


def transformed(atoms: Atoms, matrix: np.ndarray) -> Atoms:
    """``atoms`` with positions and cell vectors mapped by the orthogonal ``matrix`` (x -> M x)."""
    out = atoms.copy()
    out.positions = atoms.positions @ matrix.T
    out.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
    return out


def sheared_rattled_supercell(
    atoms: Atoms, repeat=(2, 2, 1), shear: float = 0.08, rattle: float = 0.05, seed: int = 0
) -> Atoms:
    """A periodic supercell with an off-diagonal (triclinic) strain and rattled positions."""
    out = atoms.repeat(repeat)
    strain = np.eye(3) + shear * np.array([[0.0, 1.0, 0.5], [0.0, 0.0, -0.7], [0.3, 0.0, 0.0]])
    out.set_cell(out.cell.array @ strain, scale_atoms=True)
    out.rattle(rattle, seed=seed)
    return out


def far_apart(a: Atoms, b: Atoms, gap: float) -> Atoms:
    """Non-periodic ``a + b`` with ``b`` moved so the two are at least ``gap`` Å apart."""
    b = b.copy()
    b.translate([a.positions[:, 0].max() - b.positions[:, 0].min() + gap, 0.0, 0.0])
    out = a.copy() + b
    out.pbc = False
    out.set_cell(np.zeros((3, 3)))
    return out
