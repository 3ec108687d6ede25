"""Covalent bond graphs: the one helper behind the adaptation trigger, the cache fingerprint and
the check that prior-driven sampling kept the molecule intact."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from ..graph import neighbour_list

__all__ = ["covalent_bonds"]


def covalent_bonds(atoms: Atoms, factor: float = 1.2) -> np.ndarray:
    """Sorted unique bonds (i < j) with distance < ``factor`` × (r_cov,i + r_cov,j), as [M, 2].

    Periodic images are collapsed: a bond to any image of j counts once.
    """
    radii = covalent_radii[atoms.numbers]
    i, j, _, d = neighbour_list(atoms, float(2 * radii.max() * factor) + 1e-6)
    keep = (i < j) & (d < factor * (radii[i] + radii[j]))
    pairs = np.unique(np.stack([i[keep], j[keep]], axis=1), axis=0)
    return pairs.reshape(-1, 2)
