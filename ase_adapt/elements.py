"""Element bookkeeping: the model's species table and the unknown-element policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .errors import UnknownElementError

UnknownPolicy = Literal["error", "nearest"]


def atomic_number(element: int | str) -> int:
    """Atomic number of a symbol (``"C"``) or number (``6``); raises ValueError on anything else."""
    if isinstance(element, str):
        if element not in atomic_numbers or atomic_numbers[element] == 0:
            raise ValueError(f"unknown element symbol {element!r}")
        return atomic_numbers[element]
    z = int(element)
    if not 1 <= z < len(chemical_symbols):
        raise ValueError(f"invalid atomic number {element!r}")
    return z


def as_atomic_numbers(elements: Iterable[int | str]) -> list[int]:
    """Atomic numbers of ``elements`` (symbols or numbers), unique, sorted by Z."""
    return sorted({atomic_number(e) for e in elements})


def _period_group(z: int) -> tuple[int, int]:
    """(period, group) of element ``z``; lanthanides/actinides are placed in group 3."""
    edges = [0, 2, 10, 18, 36, 54, 86, 118]
    period = next(p for p in range(1, 8) if z <= edges[p])
    pos = z - edges[period - 1]  # 1-based position inside the period
    if period == 1:
        return 1, 1 if z == 1 else 18
    if period <= 3:
        return period, pos if pos <= 2 else pos + 10
    if period <= 5:
        return period, pos
    # periods 6 and 7 hold 14 f-block elements after group 2
    if pos <= 2:
        return period, pos
    if pos <= 17:
        return period, 3
    return period, pos - 14


def nearest_known_element(z: int, known: Iterable[int]) -> int:
    """The known element chemically closest to ``z``: same group first, then nearest period.

    This is the "nearest element" mapping of the unknown-element policy; Si maps to C, S to O,
    Cl to F when those are known.
    """
    known = sorted(set(int(k) for k in known))
    if not known:
        raise ValueError("no known elements to map to")
    p0, g0 = _period_group(z)

    def distance(k: int) -> tuple[int, int, int]:
        p, g = _period_group(k)
        return (abs(g - g0), abs(p - p0), abs(k - z))

    return min(known, key=distance)


MAX_PERIOD_DISTANCE = 2  # the nearest policy maps within one group (±1) and two periods


def _close(z: int, k: int) -> bool:
    """May ``k`` stand in for ``z``? Neighbouring groups, at most two periods apart; never the f-block,
    and never hydrogen (group 1 on paper, but no alkali metal is like it)."""
    (p0, g0), (p1, g1) = _period_group(z), _period_group(k)
    f_block = (57 <= z <= 71) or (89 <= z <= 103)
    if f_block or 1 in (z, k):
        return False
    return abs(g1 - g0) <= 1 and abs(p1 - p0) <= MAX_PERIOD_DISTANCE


@dataclass(frozen=True)
class SpeciesMapping:
    """The result of checking a structure's elements against a model's elements."""

    numbers: np.ndarray  # atomic numbers actually fed to the model
    mapped: dict[int, int] = field(default_factory=dict)  # unknown Z -> known Z substitution

    @property
    def report(self) -> dict[str, str]:
        return {chemical_symbols[a]: chemical_symbols[b] for a, b in self.mapped.items()}


def check_elements(
    numbers: np.ndarray, known: Iterable[int], policy: UnknownPolicy = "error"
) -> SpeciesMapping:
    """Check ``numbers`` against ``known`` and apply the unknown-element ``policy``.

    ``"error"`` raises :class:`UnknownElementError` naming the elements; ``"nearest"`` maps each
    unknown element to :func:`nearest_known_element` and records the mapping. Never silent.
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    known_set = set(int(k) for k in known)
    unknown = sorted(set(numbers.tolist()) - known_set)
    if not unknown:
        return SpeciesMapping(numbers=numbers)
    names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in unknown)
    if policy == "error":
        known_names = ", ".join(chemical_symbols[z] for z in sorted(known_set))
        raise UnknownElementError(
            f"element(s) {names} not in the model's training elements ({known_names}); "
            "pass unknown_elements='nearest' to map them to the closest known element"
        )
    if policy != "nearest":
        raise ValueError(f"unknown_elements must be 'error' or 'nearest', got {policy!r}")
    if any(z < 1 or z > 118 for z in unknown):
        raise UnknownElementError(f"invalid atomic number(s): {names}")
    mapped = {z: nearest_known_element(z, known_set) for z in unknown}
    far = {z: k for z, k in mapped.items() if not _close(z, k)}
    if far:
        raise UnknownElementError(
            "no known element is close enough to stand in for "
            + ", ".join(f"{chemical_symbols[z]} (nearest: {chemical_symbols[k]})" for z, k in far.items())
            + f"; the nearest policy maps only to a neighbouring group at most {MAX_PERIOD_DISTANCE} periods away, "
            "never to or from H or the f-block (Si -> C, S -> O); use a model trained on these elements")
    out = numbers.copy()
    for a, b in mapped.items():
        out[numbers == a] = b
    return SpeciesMapping(numbers=out, mapped=mapped)
