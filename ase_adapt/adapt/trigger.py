"""When is a system new? The topology trigger of :class:`~ase_adapt.AdaptiveCalculator`.

A check runs on the first call, when the atomic numbers change, when the covalent bond graph
differs from the one at the last check by more than ``topology_threshold``, and optionally every
``every_n_steps`` calls (such a check runs afresh, not from the cache). Between checks an MD step
costs one neighbour-list bond comparison. The fingerprint (numbers + bond graph + pbc) names a
system for the adaptation cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from .._settings import check_types
from ..labels import charge_and_spin
from .topology import bond_changes, covalent_bonds

__all__ = ["TriggerSettings", "TopologyTrigger", "system_fingerprint"]


@dataclass(frozen=True)
class TriggerSettings:
    topology_threshold: float = 0.1  # fraction of covalent bonds changed since the last check
    bond_factor: float = 1.2         # a bond forms: distance < bond_factor * (r_cov,i + r_cov,j)
    break_factor: float = 1.5        # a bond of the last check breaks: distance > break_factor * (...)
    # The gap between the two is hysteresis: a C-H bond stretching past 1.2x at 500 K is not a
    # new topology (without it, thermal flicker re-triggered checks and TTT every few MD steps).
    every_n_steps: int | None = None

    def __post_init__(self) -> None:
        check_types(self)
        if not 0 < self.topology_threshold <= 1:
            raise ValueError(f"topology_threshold must be in (0, 1], got {self.topology_threshold}")
        if not 0 < self.bond_factor <= self.break_factor:
            raise ValueError(f"need 0 < bond_factor <= break_factor, got {self.bond_factor}, {self.break_factor}")
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 or None, got {self.every_n_steps}")


def system_fingerprint(atoms: Atoms, bonds: np.ndarray) -> str:
    """Numbers + covalent bond graph + pbc + charge and spin: 'the same system' for the cache."""
    h = hashlib.sha256(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(bonds, dtype=np.int64).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    h.update(repr(charge_and_spin(atoms)).encode())  # a cation is not the neutral molecule
    return h.hexdigest()[:16]


class TopologyTrigger:
    """Counts calls and decides when the system must be checked again."""

    def __init__(self, settings: TriggerSettings | None = None) -> None:
        self.settings = settings or TriggerSettings()
        self.calls = 0
        self.reset()

    def reset(self) -> None:
        """Forget the last check: the next call checks."""
        self._numbers: np.ndarray | None = None
        self._bonds: np.ndarray | None = None
        self._electrons: tuple[int, int | None] = (0, None)
        self._last = 0
        self.fresh = False  # the pending check must not reuse the cache (a periodic check)

    def bonds(self, atoms: Atoms) -> np.ndarray:
        return covalent_bonds(atoms, self.settings.bond_factor)

    def checked(self, atoms: Atoms) -> np.ndarray:
        """Record a check of ``atoms`` now; return its bonds (for the fingerprint)."""
        bonds = self.bonds(atoms)
        self._bonds, self._numbers, self._last, self.fresh = bonds, atoms.numbers.copy(), self.calls, False
        self._electrons = charge_and_spin(atoms)
        return bonds

    def needs_check(self, atoms: Atoms) -> bool:
        if self._numbers is None or not np.array_equal(atoms.numbers, self._numbers):
            return True
        if charge_and_spin(atoms) != self._electrons:
            return True
        s = self.settings
        if s.every_n_steps and self.calls - self._last >= s.every_n_steps:
            self.fresh = True
            return True
        bonds, ref = self.bonds(atoms), self._bonds
        if bonds.shape == ref.shape and np.array_equal(bonds, ref):
            return False  # the MD hot path: one neighbour list, nothing else
        return bond_changes(atoms, ref, bonds, s.break_factor) / max(len(ref), 1) > s.topology_threshold
