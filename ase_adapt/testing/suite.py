"""The whole calculator suite in one call, and the default structures it runs on."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from ase import Atoms
from ase.build import bulk, molecule

from . import calculator_contracts as cc
from ._core import CalculatorFactory, sheared_rattled_supercell, tolerances
from ._core import finite_differences as fd_settings


def default_molecules() -> list[Atoms]:
    """Rattled ethanol and water (H, C, O): small, asymmetric, non-zero forces everywhere."""
    out = []
    for k, name in enumerate(("CH3CH2OH", "H2O")):
        a = molecule(name)
        a.rattle(0.05, seed=k)
        out.append(a)
    return out


def default_periodic() -> list[Atoms]:
    """A sheared (triclinic), rattled diamond-Si supercell."""
    return [sheared_rattled_supercell(bulk("Si", "diamond", a=5.43), repeat=(2, 2, 1))]


def run_all_contracts(
    factory: CalculatorFactory,
    *,
    dtype: object,
    molecules: Sequence[Atoms] | None = None,
    periodic: Sequence[Atoms] | None = None,
    atomic_energies: Mapping[str, float] | None = None,
    cutoff: float | None = None,
    dimer: tuple[str, str] = ("C", "O"),
    finite_differences: bool = True,
    fd_max_atoms: int = 6,
    reflections: bool = True,
) -> list[str]:
    """Run every calculator contract; return the names that ran, or raise one AssertionError
    listing every failure.

    ``molecules`` (non-periodic, two or more for additivity) and ``periodic`` (any pbc; stress is
    checked where all three directions are periodic) default to :func:`default_molecules` and
    :func:`default_periodic`. The isolated-atom check needs ``atomic_energies`` (symbol -> E0) and
    the cutoff check ``cutoff``. Finite-difference steps and tolerances follow the dtype (see
    :func:`~ase_adapt.testing.finite_differences`); they are checked on ``fd_max_atoms`` atoms.
    ``reflections=False`` skips the reflection check, for models built equivariant under proper
    rotations only (SO(3), e.g. SevenNet-0, whose ``is_parity`` is false: it tells mirror images apart).
    """
    tol = tolerances(dtype)
    mols = list(default_molecules() if molecules is None else molecules)
    cells = list(default_periodic() if periodic is None else periodic)
    fd = fd_settings(dtype)
    checks: list[tuple[str, Callable[[], None]]] = []
    for k, a in enumerate(mols + cells):
        label = f"[{k}:{a.get_chemical_formula()}]"
        checks += [
            (f"rotation{label}", lambda a=a: cc.check_rotation_equivariance(factory, a, tol, seed=1)),
            (f"translation{label}", lambda a=a: cc.check_translation_invariance(factory, a, tol)),
            (f"permutation{label}", lambda a=a: cc.check_permutation_equivariance(factory, a, tol)),
            (f"energy_decomposition{label}", lambda a=a: cc.check_energy_decomposition(factory, a, tol)),
            (f"determinism{label}", lambda a=a: cc.check_determinism(factory, a)),
        ]
        if reflections:
            checks.append((f"reflection{label}", lambda a=a: cc.check_reflection_equivariance(factory, a, tol, seed=2)))
        if a.pbc.any():
            checks.append((f"periodic_image{label}", lambda a=a: cc.check_periodic_image_invariance(factory, a, tol)))
        if finite_differences:
            idx = range(min(len(a), fd_max_atoms))
            checks.append((f"fd_forces{label}", lambda a=a, idx=idx: cc.check_finite_difference_forces(
                factory, a, atol=fd.force_atol, delta=fd.force_delta, indices=idx)))
            if a.pbc.all():
                checks.append((f"fd_stress{label}", lambda a=a: cc.check_finite_difference_stress(
                    factory, a, atol=fd.stress_atol, delta=fd.stress_delta)))
    if len(mols) >= 2:
        checks.append(("additivity", lambda: cc.check_far_apart_additivity(factory, mols[0], mols[1], tol)))
    if cutoff is not None:
        checks.append(("smooth_cutoff", lambda: cc.check_smooth_cutoff(factory, dimer, cutoff, tol)))
    for symbol, e0 in (atomic_energies or {}).items():
        checks.append((f"isolated_atom[{symbol}]", lambda s=symbol, e=e0: cc.check_isolated_atom(factory, s, e)))

    failures = []
    for name, check in checks:
        try:
            check()
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    if failures:
        raise AssertionError(f"{len(failures)} of {len(checks)} contracts failed:\n" + "\n".join(failures))
    return [name for name, _ in checks]
