"""Atomic reference energies (E0s): computed, averaged, re-estimated, applied, saved.

Three ways to get the per-element E0s of a head (see ``docs/e0.md``):

- :func:`isolated_atom_e0`: the energy of each element as a single atom, from an ASE calculator;
- :func:`average_e0`: a least-squares fit ``E ≈ Σ_Z n_Z E0_Z`` over labelled frames;
- :func:`reestimate_e0`: model-aware, ``E0_new = E0_pre + ΔE0`` where ``ΔE0`` is the
  least-squares fit of the per-element offsets between the pretrained head's predictions and the
  new reference energies. Keeping E0s consistent with the new reference level matters more than
  the choice of fine-tuning method.

Both fits share one solver (:func:`_fit_offsets`): minimum-norm when the compositions do not
determine every element separately (with an :class:`E0Warning`), and never a silent zero-fill.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, chemical_symbols

from .. import _keys as K
from .._io import bar_disabled, write_json
from ..elements import as_atomic_numbers, atomic_number
from ..errors import UnknownElementError
from ..graph import build_graph
from .data import get_label

__all__ = [
    "E0Warning", "isolated_atom_e0", "average_e0", "relative_e0", "reestimate_e0", "head_e0", "apply_e0",
    "e0_to_json", "e0_from_json",
]

_PROGRESS_MIN_FRAMES = 50


class E0Warning(UserWarning):
    """An E0 fit is not fully determined by the data (minimum-norm solution, untouched elements)."""


# ---------------------------------------------------------------------------------------- helpers
def _symbols(numbers: Iterable[int]) -> list[str]:
    return [chemical_symbols[z] for z in numbers]


def _frame_energy(atoms: Atoms, index: int, energy_key: str) -> float:
    """Reference energy of one frame (``atoms.info`` or single-point results); DataError if absent."""
    return get_label(atoms, energy_key, index)


def _frame_energies(frames: Sequence[Atoms], energy_key: str) -> np.ndarray:
    return np.array([_frame_energy(a, k, energy_key) for k, a in enumerate(frames)], dtype=np.float64)


def _composition(frames: Sequence[Atoms], numbers: Sequence[int]) -> np.ndarray:
    """[n_frames, n_elements] element counts; raises if a frame holds an element not in ``numbers``."""
    column = {z: k for k, z in enumerate(numbers)}
    counts = np.zeros((len(frames), len(numbers)), dtype=np.float64)
    for i, atoms in enumerate(frames):
        zs, n = np.unique(atoms.numbers, return_counts=True)
        missing = [int(z) for z in zs if int(z) not in column]
        if missing:
            raise UnknownElementError(
                f"frame {i} contains {_symbols(missing)}, not among the elements {_symbols(numbers)}"
            )
        counts[i, [column[int(z)] for z in zs]] = n
    return counts


def _fit_offsets(counts: np.ndarray, targets: np.ndarray, numbers: Sequence[int], what: str) -> np.ndarray:
    """Least-squares ``targets ≈ counts @ x`` (minimum-norm if rank-deficient, with a warning)."""
    if counts.shape[0] == 0:
        raise ValueError(f"cannot fit {what}: no frames")
    if not np.all(np.isfinite(targets)):
        bad = np.flatnonzero(~np.isfinite(targets))[:5].tolist()
        raise ValueError(f"cannot fit {what}: non-finite targets in frames {bad}")
    x, _, rank, _ = np.linalg.lstsq(counts, targets, rcond=None)
    if rank < counts.shape[1]:
        # elements taking part in an undetermined combination (the null space of counts)
        _, _, vt = np.linalg.svd(counts)
        null = vt[rank:]
        loose = [z for k, z in enumerate(numbers) if np.any(np.abs(null[:, k]) > 1e-8)]
        warnings.warn(
            f"{what}: the compositions of {counts.shape[0]} frames determine only {rank} of "
            f"{counts.shape[1]} per-element values; the values of {_symbols(loose)} are not "
            "separately determined, returning the minimum-norm least-squares solution",
            E0Warning,
            stacklevel=3,
        )
    if not np.all(np.isfinite(x)):
        raise RuntimeError(f"cannot fit {what}: the least-squares solution is not finite")
    return x


# ------------------------------------------------------------------------------- the three ways
def isolated_atom_e0(
    elements: Iterable[int | str],
    calculator: BaseCalculator,
    *,
    box: float | None = None,
    spin_polarized_hint: Mapping[int | str, float] | None = None,
) -> dict[int, float]:
    """E0 of each element as one isolated, non-periodic atom computed with ``calculator``.

    ``box`` (Å) gives the atom a cubic cell (still non-periodic) for calculators that need one,
    the atom at its centre. The calculator decides the spin state; ``spin_polarized_hint`` only
    sets initial magnetic moments ``{element: moment}`` for it to start from.
    """
    hints = {atomic_number(e): float(m) for e, m in (spin_polarized_hint or {}).items()}
    numbers = as_atomic_numbers(elements)
    if not numbers:
        raise ValueError("no elements given")
    e0 = {}
    for z in numbers:
        atoms = Atoms(numbers=[z], pbc=False)
        if box is not None:
            if box <= 0:
                raise ValueError(f"box must be positive, got {box}")
            atoms.set_cell([box, box, box])
            atoms.center()
        if z in hints:
            atoms.set_initial_magnetic_moments([hints[z]])
        atoms.calc = calculator
        try:
            energy = float(atoms.get_potential_energy())
        except Exception as exc:
            raise RuntimeError(
                f"isolated-atom E0 of {chemical_symbols[z]} (Z={z}) failed with "
                f"{type(calculator).__name__}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            atoms.calc = None
        if not math.isfinite(energy):
            raise RuntimeError(f"isolated-atom E0 of {chemical_symbols[z]} is not finite ({energy})")
        e0[z] = energy
    return e0


def average_e0(
    frames: Sequence[Atoms],
    elements: Iterable[int | str] | None = None,
    energy_key: str = "energy",
) -> dict[int, float]:
    """Least-squares E0s with ``E ≈ Σ_Z n_Z E0_Z`` over ``frames``.

    Energies come from ``atoms.info[energy_key]`` or an attached SinglePointCalculator.
    ``elements`` defaults to those in the frames; a requested element absent from every frame
    raises. When the compositions do not separate every element (e.g. all frames of one
    stoichiometry) the minimum-norm solution is returned with an :class:`E0Warning`.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("cannot average E0s: no frames")
    present = as_atomic_numbers(z for a in frames for z in np.unique(a.numbers))
    numbers = present if elements is None else as_atomic_numbers(elements)
    absent = sorted(set(numbers) - set(present))
    if absent:
        raise ValueError(f"cannot average E0s: elements {_symbols(absent)} occur in none of the {len(frames)} frames")
    counts = _composition(frames, numbers)
    x = _fit_offsets(counts, _frame_energies(frames, energy_key), numbers, "E0 averaging")
    return {z: float(v) for z, v in zip(numbers, x)}


def relative_e0(
    frames: Sequence[Atoms],
    energy_key: str,
    reference_key: str,
    reference_e0: Mapping[int, float],
) -> dict[int, float]:
    """E0s of a level without isolated-atom labels, anchored to a reference level on the same frames.

    ``E0_Z = reference_e0[Z] + d_Z`` with ``E - E_ref ≈ Σ_Z n_Z d_Z`` fitted by least squares
    (minimum norm, with an :class:`E0Warning`, when the compositions do not separate the
    elements). A prior fitted to reference labels, such as sGDML, then shares the reference's
    energy zero, where a plain minimum-norm average would put tens of eV of binding energy into
    arbitrary per-element offsets.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("cannot fit relative E0s: no frames")
    numbers = as_atomic_numbers(z for a in frames for z in np.unique(a.numbers))
    missing = [z for z in numbers if z not in reference_e0]
    if missing:
        raise ValueError(f"cannot fit relative E0s: the reference has no E0 for {_symbols(missing)}")
    counts = _composition(frames, numbers)
    diff = _frame_energies(frames, energy_key) - _frame_energies(frames, reference_key)
    d = _fit_offsets(counts, diff, numbers, "relative E0 fit")
    return {z: float(reference_e0[z] + v) for z, v in zip(numbers, d)}


def head_e0(model: torch.nn.Module, head: str = K.MAIN_HEAD) -> dict[int, float]:
    """The E0s of ``model.heads[head]`` as ``{Z: E0}``."""
    if head not in model.heads:
        raise KeyError(f"model has no head {head!r}; heads: {list(model.heads)}")
    return {z: float(v) for z, v in zip(model.elements, model.heads[head].e0)}


def _predict_energies(
    model: torch.nn.Module, frames: Sequence[Atoms], head: str, batch_size: int, progress: bool | None
) -> np.ndarray:
    """Total energies (float64, E0 included) of ``frames`` from one head, batch by batch."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if progress is None:
        progress = len(frames) >= _PROGRESS_MIN_FRAMES and sys.stderr.isatty()
    out = np.empty(len(frames), dtype=np.float64)
    with tqdm(total=len(frames), desc="predicting energies", unit="frame", disable=bar_disabled(progress)) as bar:
        for start in range(0, len(frames), batch_size):
            chunk = frames[start:start + batch_size]
            graph = build_graph(chunk, model.cutoff, dtype=model.dtype, device=model.device)
            with torch.no_grad():
                energy = model(graph, head, compute_forces=False)[K.ENERGY]
            out[start:start + len(chunk)] = energy.detach().to("cpu", torch.float64).numpy()
            bar.update(len(chunk))
    if not np.all(np.isfinite(out)):
        bad = np.flatnonzero(~np.isfinite(out))[:5].tolist()
        raise RuntimeError(f"head {head!r} predicted non-finite energies for frames {bad}")
    return out


def reestimate_e0(
    model: torch.nn.Module,
    frames: Sequence[Atoms],
    head: str = K.MAIN_HEAD,
    energy_key: str = "energy",
    *,
    batch_size: int = 32,
    progress: bool | None = None,
) -> dict[int, float]:
    """Model-aware E0s for ``head``: ``E0_pre + ΔE0`` for every model element.

    ``ΔE0`` is the least-squares fit of ``E_ref − E_pred`` against the element counts, where
    ``E_pred`` is the head's prediction (E0s included). Elements absent from ``frames`` keep
    ``ΔE0 = 0`` (reported with an :class:`E0Warning`). ``batch_size`` frames are evaluated at a
    time; a progress bar shows for 50 frames or more on a terminal unless ``progress`` says.
    The model is not modified: pass the result to :func:`apply_e0`.
    """
    e0_pre = head_e0(model, head)
    frames = list(frames)
    if not frames:
        raise ValueError("cannot re-estimate E0s: no frames")
    present = as_atomic_numbers(z for a in frames for z in np.unique(a.numbers))
    unknown = sorted(set(present) - set(model.elements))
    if unknown:
        raise UnknownElementError(
            f"frames contain {_symbols(unknown)}, not among the model's elements {_symbols(model.elements)}"
        )
    absent = [z for z in model.elements if z not in present]
    if absent:
        warnings.warn(
            f"E0 re-estimation: {_symbols(absent)} occur in none of the {len(frames)} frames; "
            "their E0s keep the pretrained values (ΔE0 = 0)",
            E0Warning,
            stacklevel=2,
        )
    reference = _frame_energies(frames, energy_key)  # fail on missing labels before any compute
    predicted = _predict_energies(model, frames, head, batch_size, progress)
    delta = _fit_offsets(_composition(frames, present), reference - predicted, present, "E0 re-estimation")
    shift = dict(zip(present, delta))
    return {z: e0_pre[z] + float(shift.get(z, 0.0)) for z in model.elements}


# ------------------------------------------------------------------------------ apply and save
def apply_e0(model: torch.nn.Module, e0: Mapping[int | str, float], head: str = K.MAIN_HEAD) -> None:
    """Write ``e0`` (``{Z or symbol: E0}``) into ``model.heads[head]``.

    Every model element must be covered; entries for other elements are ignored.
    """
    if head not in model.heads:
        raise KeyError(f"model has no head {head!r}; heads: {list(model.heads)}")
    values = {atomic_number(k): float(v) for k, v in e0.items()}
    missing = [z for z in model.elements if z not in values]
    if missing:
        raise ValueError(f"E0s for head {head!r} miss the model elements {_symbols(missing)}")
    bad = [chemical_symbols[z] for z in model.elements if not math.isfinite(values[z])]
    if bad:
        raise ValueError(f"E0s of {bad} are not finite")
    model.heads[head].set_e0([values[z] for z in model.elements])


def e0_to_json(e0: Mapping[int | str, float], path: str | Path) -> Path:
    """Write ``e0`` as JSON ``{symbol: E0 in eV}`` (ordered by Z), atomically."""
    values = {atomic_number(k): float(v) for k, v in e0.items()}
    return write_json(path, {chemical_symbols[z]: values[z] for z in sorted(values)})


def e0_from_json(path: str | Path) -> dict[int, float]:
    """Read E0s written by :func:`e0_to_json` (keys: element symbols) as ``{Z: E0}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{symbol: E0}}, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        if key not in atomic_numbers or atomic_numbers[key] == 0:
            raise ValueError(f"{path}: {key!r} is not an element symbol")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: E0 of {key} is not a finite number ({value!r})")
        out[atomic_numbers[key]] = float(value)
    return out
