"""Label access and the naming of prior heads: what run time and training both read.

Labels live in ``atoms.info`` (energies, stress) and ``atoms.arrays`` (forces) under explicit
keys (:mod:`ase_adapt._keys`): reference labels ``energy``/``forces``/``stress``, prior labels
``prior_energy``/``prior_forces``/``prior_stress`` for the generic head ``prior`` and
``prior_<kind>_*`` for a head ``prior:<kind>``. Results of an attached ``SinglePointCalculator``
(what ``ase.io.read`` makes of an extxyz ``energy=`` or ``forces`` column) are read too. This room
sits below :mod:`ase_adapt.train`, :mod:`ase_adapt.shift` and the calculator, so that run time
never imports training code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from . import _keys as K
from .errors import DataError

__all__ = ["get_label", "has_label", "frame_labels", "is_isolated_atom", "is_prior_head", "prior_heads",
           "prior_head_name", "prior_label_keys"]


_MISSING = object()


def _raw_label(atoms: Atoms, key: str) -> Any:
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    calc = atoms.calc
    if isinstance(calc, SinglePointCalculator) and key in calc.results:
        return calc.results[key]
    return _MISSING


def has_label(atoms: Atoms, key: str) -> bool:
    """Whether ``atoms`` carries ``key`` (info, arrays, or single-point results)."""
    return _raw_label(atoms, key) is not _MISSING


def get_label(atoms: Atoms, key: str, index: int | None = None, *, required: bool = True) -> Any:
    """The label ``key`` of ``atoms`` as float64 (energy: float; forces: [n, 3]; stress: [3, 3]).

    Which shape is expected follows the key's suffix (``energy``, ``forces``, ``stress``).
    Raises :class:`DataError` naming the frame ``index`` and the key when the label is missing
    (unless ``required=False``, which returns ``None``) or malformed or non-finite.
    """
    where = f"frame {index}" if index is not None else "frame"
    value = _raw_label(atoms, key)
    if value is _MISSING:
        if not required:
            return None
        raise DataError(
            f"{where} has no label {key!r} (looked in atoms.info, atoms.arrays and single-point "
            f"results; info keys: {sorted(atoms.info)}, array keys: {sorted(atoms.arrays)})"
        )
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: label {key!r} is not numeric ({value!r})") from None
    if key.endswith("energy"):
        if arr.size != 1:
            raise DataError(f"{where}: energy label {key!r} must be one number, got shape {arr.shape}")
        out: Any = float(arr.reshape(()))
        ok = math.isfinite(out)
    elif key.endswith("forces"):
        if arr.shape != (len(atoms), 3):
            raise DataError(f"{where}: forces label {key!r} has shape {arr.shape}, expected ({len(atoms)}, 3)")
        out, ok = arr, bool(np.isfinite(arr).all())
    elif key.endswith("stress"):
        if arr.shape == (6,):
            arr = voigt_6_to_full_3x3_stress(arr)
        elif arr.shape == (9,):
            arr = arr.reshape(3, 3)
        if arr.shape != (3, 3):
            raise DataError(f"{where}: stress label {key!r} has shape {arr.shape}, expected (6,), (9,) or (3, 3)")
        out, ok = arr, bool(np.isfinite(arr).all())
    else:
        out, ok = arr, bool(np.isfinite(arr).all())
    if not ok:
        raise DataError(f"{where}: label {key!r} is not finite")
    return out


def frame_labels(
    atoms: Atoms,
    index: int | None,
    energy_key: str | None,
    forces_key: str | None,
    stress_key: str | None = None,
    *,
    required: bool = True,
) -> dict[str, Any]:
    """``{"energy", "forces", "stress"}`` of one frame under the given keys (a ``None`` key is skipped).

    With ``required=True`` a missing energy or forces label raises; stress is always optional
    (and only read for 3D-periodic frames).
    """
    out: dict[str, Any] = {K.LABEL_ENERGY: None, K.LABEL_FORCES: None, K.LABEL_STRESS: None}
    if energy_key:
        out[K.LABEL_ENERGY] = get_label(atoms, energy_key, index, required=required)
    if forces_key:
        out[K.LABEL_FORCES] = get_label(atoms, forces_key, index, required=required)
    if stress_key and atoms.pbc.all():
        out[K.LABEL_STRESS] = get_label(atoms, stress_key, index, required=False)
    return out


def is_isolated_atom(atoms: Atoms) -> bool:
    """A single-atom frame marked ``config_type=IsolatedAtom`` (an E0 reference, not training data)."""
    return len(atoms) == 1 and str(atoms.info.get(K.CONFIG_TYPE, "")) == K.ISOLATED_ATOM



# --- prior heads ------------------------------------------------------------------------------

def is_prior_head(head: str) -> bool:
    """``prior`` or ``prior:<kind>``."""
    return head == K.PRIOR_HEAD or (head.startswith(K.PRIOR_HEAD + ":") and len(head) > len(K.PRIOR_HEAD) + 1)


def prior_heads(model) -> list[str]:
    """The model's prior heads, in model order."""
    return [h for h in model.heads if is_prior_head(h)]


def prior_head_name(kind: str) -> str:
    """The head that learns a prior of this kind: ``gfn-ff`` -> ``prior:gfn-ff``."""
    return f"{K.PRIOR_HEAD}:{kind}"


def prior_label_keys(head: str) -> tuple[str, str, str]:
    """(energy, forces, stress) label keys a prior head is trained on.

    ``"prior"`` reads ``prior_energy``/``prior_forces``/``prior_stress``; ``"prior:<kind>"`` reads
    ``prior_<kind>_*`` (``ase-adapt label --prefix prior_<kind>``).
    """
    if head == K.PRIOR_HEAD:
        return K.PRIOR_ENERGY, K.PRIOR_FORCES, K.PRIOR_STRESS
    if not is_prior_head(head):
        raise ValueError(f"{head!r} is not a prior head (expected 'prior' or 'prior:<kind>')")
    kind = head[len(K.PRIOR_HEAD) + 1:]
    return f"prior_{kind}_energy", f"prior_{kind}_forces", f"prior_{kind}_stress"


def charge_and_spin(atoms: Atoms) -> tuple[int, int | None]:
    """The system's total charge and spin multiplicity (2S+1) from ``atoms.info``.

    ``atoms.info["charge"]`` (default 0) and ``atoms.info["spin"]`` (the multiplicity, as in
    fairchem's convention; default None: the calculator's choice, closed shell for xTB). Anything
    that is not an integer charge or a multiplicity >= 1 is refused with ValueError.
    """
    charge, spin = atoms.info.get("charge", 0), atoms.info.get("spin")
    if isinstance(charge, bool) or not isinstance(charge, (int, float, np.integer, np.floating)) \
            or not float(charge).is_integer():
        raise ValueError(f"atoms.info['charge'] must be an integer total charge, got {charge!r}")
    if spin is not None and (isinstance(spin, bool) or not isinstance(spin, (int, float, np.integer, np.floating))
                             or not float(spin).is_integer() or spin < 1):
        raise ValueError(f"atoms.info['spin'] must be the spin multiplicity 2S+1 (an integer >= 1), got {spin!r}")
    return int(charge), None if spin is None else int(spin)
