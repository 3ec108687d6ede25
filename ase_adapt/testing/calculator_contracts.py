"""Physics contracts for any ASE calculator, given as a factory of fresh calculators.

Each ``check_*`` function raises :class:`AssertionError` with a message naming the contract and the
worst deviation. Tolerances come from :func:`~ase_adapt.testing.tolerances`, except for the
finite-difference checks, whose steps and absolute tolerances are arguments (defaults: the float64
contract; :func:`~ase_adapt.testing.finite_differences` gives coarser float32 settings).
Per-atom energies are compared whenever the calculator implements ``energies``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

from ._core import (
    CalculatorFactory,
    Tolerances,
    assert_close,
    assert_predictions_close,
    evaluate,
    far_apart,
    random_rotation,
    transformed,
)


def check_rotation_equivariance(
    factory: CalculatorFactory, atoms: Atoms, tol: Tolerances, seed: int = 0, reflect: bool = False
) -> None:
    """E(Rx) = E(x), F(Rx) = R F(x), σ(Rx) = R σ R^T, for a random rotation (or rotoreflection)."""
    what = "reflection" if reflect else "rotation"
    rot = random_rotation(seed, reflect=reflect)
    ref = evaluate(factory, atoms, energies=None)
    new = evaluate(factory, transformed(atoms, rot), energies=None)
    ref.forces = ref.forces @ rot.T
    if ref.stress is not None:
        ref.stress = rot @ ref.stress @ rot.T
    assert_predictions_close(new, ref, tol, f"{what} equivariance")


def check_reflection_equivariance(factory: CalculatorFactory, atoms: Atoms, tol: Tolerances, seed: int = 0) -> None:
    """E is invariant and F, σ are equivariant under an improper rotation (det -1)."""
    check_rotation_equivariance(factory, atoms, tol, seed=seed, reflect=True)


def check_translation_invariance(
    factory: CalculatorFactory, atoms: Atoms, tol: Tolerances, shift: Sequence[float] = (1.37, -2.11, 0.73)
) -> None:
    """Rigidly translating every atom (and, for periodic cells, wrapping) changes nothing."""
    ref = evaluate(factory, atoms, energies=None)
    moved = atoms.copy()
    moved.translate(shift)
    assert_predictions_close(evaluate(factory, moved, energies=None), ref, tol, "translation invariance")
    if moved.pbc.any():
        moved.wrap()
        assert_predictions_close(evaluate(factory, moved, energies=None), ref, tol, "translation + wrap invariance")


def check_permutation_equivariance(factory: CalculatorFactory, atoms: Atoms, tol: Tolerances, seed: int = 0) -> None:
    """Reordering the atoms reorders forces and per-atom energies; E and σ are unchanged."""
    perm = np.random.default_rng(seed).permutation(len(atoms))
    if len(atoms) > 1 and np.all(perm == np.arange(len(atoms))):
        perm = np.roll(perm, 1)
    ref = evaluate(factory, atoms, energies=None)
    new = evaluate(factory, atoms[perm], energies=None)
    ref.forces = ref.forces[perm]
    if ref.energies is not None:
        ref.energies = ref.energies[perm]
    assert_predictions_close(new, ref, tol, "permutation equivariance")


def check_finite_difference_forces(
    factory: CalculatorFactory,
    atoms: Atoms,
    atol: float = 1e-5,
    delta: float = 1e-4,
    indices: Sequence[int] | None = None,
) -> None:
    """Forces equal the central finite difference -(E(x+h) - E(x-h)) / 2h (run it in float64)."""
    calc = factory()
    forces = evaluate(factory, atoms, stress=False, calc=calc).forces
    indices = range(len(atoms)) if indices is None else indices
    for i in indices:
        for c in range(3):
            energies = []
            for sign in (1.0, -1.0):
                a = atoms.copy()
                a.positions[i, c] += sign * delta
                a.calc = calc
                energies.append(a.get_potential_energy())
            numeric = -(energies[0] - energies[1]) / (2 * delta)
            assert_close(forces[i, c], numeric, atol, 0.0, f"finite-difference force on atom {i}, axis {'xyz'[c]}")


def check_finite_difference_stress(
    factory: CalculatorFactory, atoms: Atoms, atol: float = 1e-6, delta: float = 1e-5
) -> None:
    """σ_ij = (1/V) dE/dε_ij by central differences of a symmetric strain of cell and positions."""
    if not atoms.pbc.all():
        raise ValueError("the stress contract needs a cell periodic in all three directions")
    calc = factory()
    stress = evaluate(factory, atoms, stress=True, calc=calc).stress
    volume = atoms.get_volume()
    numeric = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            energies = []
            for sign in (1.0, -1.0):
                eps = np.zeros((3, 3))
                eps[i, j] += sign * delta / (1 if i == j else 2)
                eps[j, i] = eps[i, j]
                a = atoms.copy()
                a.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                a.calc = calc
                energies.append(a.get_potential_energy())
            numeric[i, j] = numeric[j, i] = (energies[0] - energies[1]) / (2 * delta * volume)
    assert_close(stress, numeric, atol, 0.0, "finite-difference stress (eV/Å³)")


def check_energy_decomposition(factory: CalculatorFactory, atoms: Atoms, tol: Tolerances) -> None:
    """E = sum of per-atom energies, and the forces sum to zero (no external field)."""
    p = evaluate(factory, atoms, energies=True)
    assert_close(p.energies.sum(), p.energy, tol.energy, tol.rtol, "energy vs sum of per-atom energies")
    scale = max(1.0, float(np.abs(p.forces).max()))
    atol = tol.forces * scale * np.sqrt(len(atoms))
    assert_close(p.forces.sum(axis=0), np.zeros(3), atol, 0.0, "sum of forces (net force)")


def check_isolated_atom(
    factory: CalculatorFactory,
    symbol: str | int,
    e0: float,
    *,
    exact: bool = True,
    tol: Tolerances | None = None,
    box: float | None = None,
) -> None:
    """A lone atom (in vacuum, or in a periodic cubic ``box`` wider than the cutoff) has energy E0
    and zero force; ``exact`` demands bit equality, otherwise ``tol.energy``/``tol.forces`` apply."""
    if not exact and tol is None:
        raise ValueError("pass tol when exact=False")
    atoms = Atoms([symbol], positions=[[0.3, -0.2, 0.1]])
    if box is not None:
        atoms.set_cell(np.eye(3) * box)
        atoms.pbc = True
    p = evaluate(factory, atoms)
    where = f"isolated {atoms.get_chemical_symbols()[0]}" + (f" in a {box} Å box" if box else "")
    if exact:
        if p.energy != e0:
            raise AssertionError(f"{where}: energy {p.energy!r} != E0 {e0!r} (diff {p.energy - e0:.3e})")
        if np.any(p.forces != 0.0):
            raise AssertionError(f"{where}: forces {p.forces.tolist()} are not exactly zero")
    else:
        assert_close(p.energy, e0, tol.energy, 0.0, f"{where}: energy vs E0")
        assert_close(p.forces, np.zeros((1, 3)), tol.forces, 0.0, f"{where}: forces")


def check_far_apart_additivity(
    factory: CalculatorFactory, a: Atoms, b: Atoms, tol: Tolerances, gap: float = 15.0
) -> None:
    """Two fragments further apart than the (receptive-field) cutoff are additive in E, F, E_i."""
    pa = evaluate(factory, a, stress=False, energies=None)
    pb = evaluate(factory, b, stress=False, energies=None)
    pab = evaluate(factory, far_apart(a, b, gap), stress=False, energies=None)
    if pab.energies is not None:
        assert_close(pab.energies, np.concatenate([pa.energies, pb.energies]), tol.energy, tol.rtol,
                     "additivity: per-atom energies")
    assert_close(pab.energy, pa.energy + pb.energy, tol.energy, tol.rtol, "additivity: energy")
    assert_close(pab.forces, np.concatenate([pa.forces, pb.forces]), tol.forces, tol.rtol, "additivity: forces")


def _dimer(pair: tuple[str, str], r: float) -> Atoms:
    return Atoms(list(pair), positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])


def check_smooth_cutoff(
    factory: CalculatorFactory,
    pair: tuple[str, str],
    cutoff: float,
    tol: Tolerances,
    *,
    deltas: Sequence[float] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4),
    exact_zero: bool = True,
) -> None:
    """A dimer's energy and force go continuously to their values at r_cut as r -> r_cut from below;
    at and beyond r_cut the force is zero (exactly, when ``exact_zero``) and the energy constant."""
    far = [evaluate(factory, _dimer(pair, r), stress=False) for r in (cutoff, cutoff + 1e-6, cutoff + 1.0)]
    for r, p in zip((cutoff, cutoff + 1e-6, cutoff + 1.0), far):
        if exact_zero and np.any(p.forces != 0.0):
            raise AssertionError(f"smooth cutoff: {pair} dimer at r={r:.7g} (r_cut={cutoff}) has forces "
                                 f"{p.forces.tolist()}, expected exactly zero")
        assert_close(p.forces, np.zeros((2, 3)), tol.forces, 0.0, f"smooth cutoff: force at r={r:.7g}")
        assert_close(p.energy, far[-1].energy, tol.energy, tol.rtol, f"smooth cutoff: energy at r={r:.7g} vs r_cut+1")
    de, fn = [], []
    for d in deltas:
        p = evaluate(factory, _dimer(pair, cutoff - d), stress=False)
        de.append(abs(p.energy - far[0].energy))
        fn.append(float(np.abs(p.forces).max()))
    report = ", ".join(f"r_cut-{d:g}: |ΔE|={e:.2e} |F|={f:.2e}" for d, e, f in zip(deltas, de, fn))
    # continuity: the deviation at the closest distance is within tolerance, or at least 100x
    # smaller than at the farthest one (a hard cutoff keeps a finite force right up to r_cut)
    if de[-1] > max(tol.energy, 1e-2 * de[0]) or fn[-1] > max(tol.forces, 1e-2 * fn[0]):
        raise AssertionError(f"smooth cutoff: {pair} dimer does not approach its r_cut values ({report})")
    # close to r_cut the deviation must shrink monotonically (up to the tolerance): no jump, no wiggle
    for k in range(len(deltas) - 3, len(deltas)):
        if de[k] > de[k - 1] + tol.energy or fn[k] > fn[k - 1] + tol.forces:
            raise AssertionError(f"smooth cutoff: {pair} deviation does not decrease towards r_cut ({report})")


def check_periodic_image_invariance(
    factory: CalculatorFactory,
    atoms: Atoms,
    tol: Tolerances,
    index: int = 0,
    lattice_shift: Sequence[int] = (1, -2, 1),
) -> None:
    """Moving one atom by a whole lattice vector (along periodic axes), then wrapping, changes nothing."""
    if not atoms.pbc.any():
        raise ValueError("periodic-image invariance needs at least one periodic direction")
    n = np.where(atoms.pbc, np.asarray(lattice_shift, dtype=float), 0.0)
    ref = evaluate(factory, atoms, energies=None)
    moved = atoms.copy()
    moved.positions[index] += n @ atoms.cell.array
    assert_predictions_close(evaluate(factory, moved, energies=None), ref, tol,
                             f"periodic image: atom {index} shifted by lattice vector {n.tolist()}")
    moved.wrap()
    assert_predictions_close(evaluate(factory, moved, energies=None), ref, tol, "periodic image: wrapped cell")


def check_determinism(factory: CalculatorFactory, atoms: Atoms, repeats: int = 3) -> None:
    """Repeated evaluation (fresh calculators and a reset one) is bit-identical."""
    calc = factory()
    runs = [evaluate(factory, atoms, energies=None)]
    for _ in range(repeats - 1):
        runs.append(evaluate(factory, atoms, energies=None, calc=calc))
        calc.reset()
    for k, p in enumerate(runs[1:], start=1):
        for field in ("energy", "forces", "energies", "stress"):
            a, b = getattr(runs[0], field), getattr(p, field)
            if not np.array_equal(np.asarray(a), np.asarray(b)):
                diff = np.max(np.abs(np.asarray(a) - np.asarray(b)))
                raise AssertionError(f"determinism: {field} of run {k} differs from run 0 (max |diff| {diff:.3e})")
