"""Datasets: reading and writing frames, label access, isolated-atom frames, splitting.

Label access (``get_label``, ``frame_labels``...) lives in :mod:`ase_adapt.labels`, below both
training and run time; it is re-exported here.

Files are extxyz (``.xyz``, ``.extxyz``) or ASE databases (``.db``). Every problem with a file
raises :class:`~ase_adapt.errors.DataError` naming the file and, where known, the frame.
Labelling frames with a prior calculator lives in :mod:`ase_adapt.train.label`.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from .._io import atomic_write
from ..errors import DataError
from ..labels import frame_labels, get_label, has_label, is_isolated_atom  # noqa: F401  (re-exported)

__all__ = [
    "get_label", "has_label", "frame_labels", "is_isolated_atom",
    "DataWarning", "read_frames", "write_frames", "isolated_atom_frames", "training_frames",
    "split_frames", "check_labels",
]

EXTXYZ_SUFFIXES = (".xyz", ".extxyz")
DB_SUFFIXES = (".db",)


class DataWarning(UserWarning):
    """A dataset is usable but suspicious (duplicate isolated atoms, a possibly truncated file)."""

# --- reading -----------------------------------------------------------------------------------

def _file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in EXTXYZ_SUFFIXES:
        return "extxyz"
    if suffix in DB_SUFFIXES:
        return "db"
    raise DataError(
        f"{path}: unknown dataset format {suffix or '(no suffix)'!r}; "
        f"accepted: {', '.join(EXTXYZ_SUFFIXES + DB_SUFFIXES)} (extxyz or ASE database)"
    )


def _select(frames: list[Atoms], index: int | slice | str, path: Path) -> list[Atoms]:
    if isinstance(index, str):
        from ase.io.formats import string2index

        try:
            index = string2index(index)
        except ValueError:
            raise DataError(f"{path}: bad frame index {index!r} (use e.g. ':', '0', '-1', '10:20')") from None
    if isinstance(index, slice):
        return frames[index]
    try:
        return [frames[int(index)]]
    except IndexError:
        raise DataError(f"{path}: no frame {index} (the file has {len(frames)} frames)") from None


def read_frames(path: str | Path, index: int | slice | str = ":") -> list[Atoms]:
    """Frames of an extxyz file or ASE database, labels kept (see the module docstring).

    ``index`` selects frames as in ``ase.io.read`` (``":"``, ``"-1"``, ``"10:20"``, an int or a
    slice). A missing, unreadable, corrupt or truncated file, or an empty selection, raises
    :class:`DataError` naming the file (and the frame, when known).
    """
    path = Path(path)
    fmt = _file_format(path)
    if not path.is_file():
        raise DataError(f"{path}: no such dataset file")
    frames = _read_extxyz(path) if fmt == "extxyz" else _read_db(path)
    if not frames:
        raise DataError(f"{path}: the file holds no frames")
    selected = _select(frames, index, path)
    if not selected:
        raise DataError(f"{path}: index {index!r} selects none of its {len(frames)} frames")
    return selected


def _read_extxyz(path: Path) -> list[Atoms]:
    from ase.io import iread

    frames: list[Atoms] = []
    try:
        for atoms in iread(str(path), index=":", format="extxyz"):
            frames.append(atoms)
    except Exception as exc:  # ASE raises XYZError, ValueError, IndexError, UnicodeDecodeError...
        raise DataError(
            f"{path}: frame {len(frames)} cannot be read (corrupt or truncated extxyz?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if frames and not _ends_with_newline(path):
        # a cut inside the last number still parses, so say so rather than stay silent
        warnings.warn(f"{path} does not end with a newline: its last frame may be truncated",
                      DataWarning, stacklevel=3)
    return frames


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        if fh.tell() == 0:
            return True
        fh.seek(-1, io.SEEK_END)
        return fh.read(1) in (b"\n", b"\r")


def _read_db(path: Path) -> list[Atoms]:
    import ase.db

    if path.stat().st_size == 0:  # sqlite would quietly initialise it as a new database
        return []
    frames: list[Atoms] = []
    try:
        db = ase.db.connect(str(path), type="db", use_lock_file=False)
        for row in db.select():
            frames.append(_row_to_atoms(row))
    except Exception as exc:  # sqlite3.DatabaseError, JSON decoding errors, ...
        raise DataError(
            f"{path}: row {len(frames)} cannot be read (corrupt or not an ASE database?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return frames


def _row_to_atoms(row: Any) -> Atoms:
    atoms = row.toatoms()  # stored results come back as a SinglePointCalculator
    atoms.info.update(row.key_value_pairs)
    n = len(atoms)
    data = dict(row.data)
    for key, value in dict(data.pop(_DB_PER_ATOM, None) or {}).items():
        atoms.arrays[key] = np.asarray(value)
    for key, value in data.items():
        # foreign databases keep per-atom arrays flat in ``data``: [n, k] arrays are taken as
        # such (not for 3 atoms, where a 3x3 matrix would be ambiguous)
        if isinstance(value, np.ndarray) and value.ndim == 2 and value.shape[0] == n and n != 3:
            atoms.arrays[key] = value
        else:
            atoms.info[key] = value
    return atoms


# --- writing -----------------------------------------------------------------------------------

_DB_PER_ATOM = "per_atom"  # the data entry holding per-atom arrays in databases we write
_PER_ATOM_RESULTS = {"forces", "energies", "stresses", "charges", "magmoms"}
_PER_FRAME_RESULTS = {"energy", "free_energy", "stress", "dipole", "magmom"}
_DB_NATIVE_ARRAYS = {"numbers", "positions", "momenta", "masses", "tags", "initial_magmoms", "initial_charges"}
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _single_point_results(atoms: Atoms) -> dict[str, Any]:
    # only single-point results are labels: a live calculator's cache (a model's prediction)
    # must never be written out as a reference label
    calc = atoms.calc
    return dict(calc.results) if isinstance(calc, SinglePointCalculator) else {}


def _labels_in_info(atoms: Atoms) -> Atoms:
    """A calculator-free copy whose single-point results sit in info/arrays (explicit keys win)."""
    out = atoms.copy()
    for key, value in _single_point_results(atoms).items():
        if key in out.info or key in out.arrays:
            continue  # get_label reads info/arrays first, so that is the label to keep
        if key in _PER_ATOM_RESULTS:
            out.arrays[key] = np.asarray(value)
        else:
            out.info[key] = value
    return out


def frames_to_extxyz(frames: Iterable[Atoms]) -> str:
    """The extxyz text of ``frames`` with every label under an explicit key (no calculator)."""
    from ase.io import write

    buf = io.StringIO()
    write(buf, [_labels_in_info(a) for a in frames], format="extxyz")
    return buf.getvalue()


def write_frames(path: str | Path, frames: Atoms | Sequence[Atoms]) -> Path:
    """Write ``frames`` atomically (temp file + rename) as extxyz or an ASE database (by suffix).

    Labels in ``info``/``arrays`` and single-point results round-trip through
    :func:`read_frames` + :func:`get_label`; where both hold a key, ``info``/``arrays`` wins
    (as in :func:`get_label`).
    """
    path = Path(path)
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise DataError(f"{path}: no frames to write")
    if _file_format(path) == "extxyz":
        text = frames_to_extxyz(frames)
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return atomic_write(path, lambda tmp: _write_db(tmp, frames))


def _write_db(tmp: Path, frames: list[Atoms]) -> None:
    import ase.db
    from ase.db.core import reserved_keys

    db = ase.db.connect(str(tmp), type="db", use_lock_file=False)
    with db:
        for atoms in frames:
            plain = _labels_in_info(atoms)
            results: dict[str, Any] = {}
            for key in [k for k in plain.info if k in _PER_FRAME_RESULTS]:  # -> calculator columns
                results[key] = plain.info.pop(key)
            for key in [k for k in plain.arrays if k in _PER_ATOM_RESULTS]:
                results[key] = plain.arrays.pop(key)
            if "stress" in results and np.shape(results["stress"]) == (3, 3):
                results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(results["stress"]))
            kvp, data = {}, {}
            for key, value in plain.info.items():
                scalar = isinstance(value, (bool, int, float, str, np.bool_, np.integer, np.floating))
                ok_key = _KEY_RE.match(key) and key not in reserved_keys
                (kvp if scalar and ok_key else data)[key] = value
            per_atom = {k: plain.arrays.pop(k) for k in list(plain.arrays) if k not in _DB_NATIVE_ARRAYS}
            if per_atom:
                data[_DB_PER_ATOM] = per_atom
            plain.info = {}
            if results:
                plain.calc = SinglePointCalculator(plain, **results)
            db.write(plain, key_value_pairs=kvp, data=data)


# --- selection and checks -----------------------------------------------------------------------

def isolated_atom_frames(frames: Iterable[Atoms]) -> dict[int, Atoms]:
    """Isolated-atom frames by atomic number; for duplicates the last wins, with a warning."""
    out: dict[int, Atoms] = {}
    for i, atoms in enumerate(frames):
        if not is_isolated_atom(atoms):
            continue
        z = int(atoms.numbers[0])
        if z in out:
            warnings.warn(f"frame {i}: a second isolated-atom frame of Z={z}; the last one is used",
                          DataWarning, stacklevel=2)
        out[z] = atoms
    return out


def training_frames(frames: Iterable[Atoms]) -> list[Atoms]:
    """``frames`` without the isolated-atom (E0 reference) frames."""
    return [a for a in frames if not is_isolated_atom(a)]


def split_frames(
    n_or_frames: int | Sequence[Atoms], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[int], list[int]]:
    """(train, validation) frame indices, disjoint, sorted, and fixed by ``seed``.

    Validation gets ``round(val_fraction * n)`` frames, at least one when ``val_fraction > 0``
    and ``n >= 2``, and never all of them. ``val_fraction`` must lie in [0, 1).
    """
    n = n_or_frames if isinstance(n_or_frames, (int, np.integer)) else len(n_or_frames)
    n = int(n)
    if n < 0:
        raise ValueError(f"split_frames: negative frame count {n}")
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"split_frames: val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


def check_labels(frames: Sequence[Atoms], keys: Iterable[str], *, path: str | Path | None = None) -> None:
    """Raise :class:`DataError` unless every frame carries every label in ``keys``, well-formed.

    The message names the file (``path``), the first offending frame and the key, and how many
    frames lack that key.
    """
    where = f"{path}: " if path is not None else ""
    keys = list(keys)
    missing = {key: [i for i, a in enumerate(frames) if not has_label(a, key)] for key in keys}
    missing = {key: idx for key, idx in missing.items() if idx}
    if missing:  # report the earliest frame that lacks a key
        key = min(missing, key=lambda k: missing[k][0])
        i = missing[key][0]
        present = sorted(set(frames[i].info) | set(frames[i].arrays) - {"numbers", "positions"}
                         | set(_single_point_results(frames[i])))
        raise DataError(
            f"{where}frame {i} has no label {key!r} ({len(missing[key])} of {len(frames)} "
            f"frames lack it; frame {i} has: {present})"
        )
    for i, atoms in enumerate(frames):
        for key in keys:
            try:
                get_label(atoms, key, i)
            except DataError as exc:
                raise DataError(f"{where}{exc}") from None
