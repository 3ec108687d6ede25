"""Tiny labelled datasets for tests, docs and examples (seconds to make, no network).

Reference labels come from ASE's EMT (which has H, C, N, O parameters) and prior labels from a
smooth Lennard-Jones potential. Neither is chemistry; they are two different, cheap, smooth
potential-energy surfaces, which is all a training or TTT test needs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

from .. import _keys as K

__all__ = ["random_cluster", "toy_prior", "toy_frames"]


def random_cluster(rng: np.random.Generator, symbols: Sequence[str] = "HCO", n_min: int = 3, n_max: int = 6,
                   box: float = 3.0, min_distance: float = 1.0) -> Atoms:
    """A random non-periodic cluster with atoms at least ``min_distance`` Å apart."""
    n = int(rng.integers(n_min, n_max + 1))
    pos: list[np.ndarray] = []
    while len(pos) < n:
        p = rng.uniform(0.0, box, size=3)
        if all(np.linalg.norm(p - q) > min_distance for q in pos):
            pos.append(p)
    return Atoms(list(rng.choice(list(symbols), size=n)), positions=pos)


def toy_prior() -> BaseCalculator:
    """The toy prior: smooth LJ, sigma 1 Å, epsilon 0.05 eV, cutoff 4 Å."""
    return LennardJones(sigma=1.0, epsilon=0.05, rc=4.0, smooth=True)


def toy_frames(
    n: int = 20,
    seed: int = 0,
    symbols: Sequence[str] = "HCO",
    *,
    reference: BaseCalculator | None = None,
    prior: BaseCalculator | None = None,
    with_reference: bool = True,
    with_prior: bool = True,
) -> list[Atoms]:
    """``n`` random clusters with reference labels (EMT: single-point ``energy``/``forces``) and
    prior labels (``prior_energy`` in info, ``prior_forces`` in arrays)."""
    rng = np.random.default_rng(seed)
    reference = reference or EMT()
    prior = prior or toy_prior()
    frames = []
    for _ in range(n):
        atoms = random_cluster(rng, symbols)
        if with_prior:
            p = atoms.copy()
            p.calc = prior
            atoms.info[K.PRIOR_ENERGY] = float(p.get_potential_energy())
            atoms.arrays[K.PRIOR_FORCES] = p.get_forces().copy()
        if with_reference:
            r = atoms.copy()
            r.calc = reference
            atoms.calc = SinglePointCalculator(atoms, energy=float(r.get_potential_energy()),
                                               forces=r.get_forces().copy())
        frames.append(atoms)
    return frames
