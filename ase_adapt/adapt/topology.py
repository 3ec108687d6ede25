"""Covalent bond graphs: the one helper behind the adaptation trigger, the cache fingerprint and
the check that prior-driven sampling kept the molecule intact."""

from __future__ import annotations

import functools

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from ..graph import neighbour_list

__all__ = ["covalent_bonds", "bond_changes", "min_distance_ratio"]

_DENSE_MAX = 64  # atoms: below this (non-periodic), every pair is cheaper than a cell list


@functools.lru_cache(maxsize=8)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(n, k=1)  # sorted by (i, j), as the cell-list path returns them
    i.flags.writeable = j.flags.writeable = False
    return i, j


def covalent_bonds(atoms: Atoms, factor: float = 1.2) -> np.ndarray:
    """Sorted unique bonds (i < j) with distance < ``factor`` × (r_cov,i + r_cov,j), as [M, 2].

    Periodic images are collapsed: a bond to any image of j counts once.
    """
    radii = covalent_radii[atoms.numbers]
    n = len(atoms)
    if n <= _DENSE_MAX and not atoms.pbc.any():  # the MD hot path of small molecules: all pairs at once
        i, j = _pairs(n)
        pos = atoms.positions
        d = np.linalg.norm(pos[i] - pos[j], axis=1)
        keep = d < factor * (radii[i] + radii[j])
        return np.stack([i[keep], j[keep]], axis=1)
    i, j, _, d = neighbour_list(atoms, float(2 * radii.max() * factor) + 1e-6, full=False)
    keep = (i != j) & (d < factor * (radii[i] + radii[j]))  # i == j: an atom and its own image
    lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    keys = np.unique(lo * n + hi)  # sorted, images collapsed (1-D keys: far faster than unique rows)
    return np.stack([keys // n, keys % n], axis=1)


def bond_changes(atoms: Atoms, reference: np.ndarray, now: np.ndarray, break_factor: float = 1.5) -> int:
    """Bonds formed plus bonds broken between ``reference`` and ``atoms`` (whose bonds are ``now``).

    A bond forms when it appears in ``now`` (built at the forming factor); a reference bond breaks
    only when it is longer than ``break_factor`` × (r_cov,i + r_cov,j). The gap is hysteresis: a
    C-H bond stretching past 1.2x at 500 K is not a new topology.
    """
    n = len(atoms)
    a, r = now[:, 0] * n + now[:, 1], reference[:, 0] * n + reference[:, 1]
    formed = len(np.setdiff1d(a, r, assume_unique=True))
    gone = reference[~np.isin(r, a)]  # reference bonds beyond the forming factor: broken only past break_factor
    if not len(gone):
        return formed
    vec = atoms.positions[gone[:, 1]] - atoms.positions[gone[:, 0]]
    if atoms.pbc.any():
        from ase.geometry import find_mic

        vec = find_mic(vec, atoms.cell, atoms.pbc)[0]
    radii = covalent_radii[atoms.numbers]
    limit = break_factor * (radii[gone[:, 0]] + radii[gone[:, 1]])
    return formed + int((np.linalg.norm(vec, axis=1) > limit).sum())


def min_distance_ratio(atoms: Atoms, up_to: float = 1.5) -> float | None:
    """min over pairs (periodic images and an atom's own images included) of d / (r_cov,i + r_cov,j).

    ``None`` when no pair is closer than ``up_to`` times its covalent sum (only pairs within that
    are searched). Below 0.5 the atoms overlap (the RSS hole criterion).
    """
    radii = covalent_radii[atoms.numbers]
    if not len(atoms):
        return None
    if atoms.pbc.any():
        i, j, _, d = neighbour_list(atoms, float(2 * radii.max() * up_to), full=False)
    else:
        i, j = _pairs(len(atoms))
        d = np.linalg.norm(atoms.positions[i] - atoms.positions[j], axis=1)
    ratio = d / (radii[i] + radii[j])
    ratio = ratio[ratio < up_to]
    return float(ratio.min()) if ratio.size else None
