"""Label frames with a (prior) calculator: resumable, atomic, with clear failures.

:func:`label_frames` computes energy and forces (and stress for 3D-periodic frames, when the
calculator implements it) of every frame with any ASE calculator and stores them as
``{prefix}_energy`` (info), ``{prefix}_forces`` (arrays) and ``{prefix}_stress`` (info, Voigt),
keeping every label the frame already had.

Crash safety: finished frames are appended (and fsynced) in chunks to a sidecar file
``<out>.partial`` next to the output. Rerunning the same call skips the frames found there; a
trailing frame cut short by a kill is dropped. The output itself appears only when every frame
is done, written atomically; the sidecar is removed then. Each sidecar frame carries a
fingerprint of the input and the settings, so a resume against different input refuses rather
than mixing labels.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import math
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .._io import bar_disabled, check_writable
from ..errors import DataError
from .data import DataWarning, _file_format, _labels_in_info, frames_to_extxyz, read_frames, write_frames

__all__ = ["OnError", "label_frames", "partial_path"]

# Labels are the calculator's raw energy gradient (no constraint projection) since 2026-12-08; a
# partial file written before then has another fingerprint and is not resumed into.
LABELS_VERSION = "raw-gradient"

# bookkeeping keys of the sidecar frames (never in the output)
_INDEX = "ase_adapt_label_index"
_INPUT = "ase_adapt_label_input"
_SKIPPED = "ase_adapt_label_skipped"
_FLUSH_SECONDS = 30.0  # expensive calculators: never lose more than this much work to a kill
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")  # prior_gfn-ff: the keys of head prior:gfn-ff


class OnError(str, enum.Enum):
    """What :func:`label_frames` does when the calculator fails on a frame."""

    RAISE = "raise"  # stop with DataError; finished frames stay in the sidecar for a resume
    SKIP = "skip"  # leave the frame out of the output and warn once at the end


def partial_path(out_path: str | Path) -> Path:
    """The sidecar file where :func:`label_frames` keeps finished frames until it completes."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".partial")


def _check_label_args(out_path: Path, calculator: Calculator, prefix: str, stress: bool | None,
                      on_error: OnError | str, flush_every: int) -> tuple[OnError, set[str]]:
    """Refuse bad arguments before any work; (the on-error policy, the calculator's properties)."""
    _file_format(out_path)  # a bad suffix fails before any work
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"label prefix must be letters, digits, '_' or '-' such as 'prior' or 'prior_gfn-ff', "
                         f"got {prefix!r}")
    try:
        on_error = OnError(on_error)
    except ValueError:
        raise ValueError(f"on_error must be one of {[m.value for m in OnError]}, got {on_error!r}") from None
    if int(flush_every) < 1:
        raise ValueError(f"flush_every must be at least 1, got {flush_every}")
    implemented = set(getattr(calculator, "implemented_properties", ()))
    if stress and "stress" not in implemented:
        raise ValueError(f"stress=True, but {type(calculator).__name__} does not implement stress")
    return on_error, implemented


def label_frames(
    frames_or_path: str | Path | Atoms | Sequence[Atoms],
    calculator: Calculator,
    out_path: str | Path,
    *,
    prefix: str = "prior",
    stress: bool | None = None,
    resume: bool = True,
    progress: bool = True,
    on_error: OnError | str = OnError.RAISE,
    flush_every: int = 10,
) -> Path:
    """Label every frame with ``calculator`` and write them to ``out_path`` (extxyz or .db).

    ``stress``: ``None`` computes ``{prefix}_stress`` for 3D-periodic frames when the calculator
    implements stress, ``True`` requires the calculator to, ``False`` never computes it.
    ``resume=False`` discards finished frames of an earlier, interrupted run. A calculator
    exception or a non-finite result on frame k raises :class:`DataError` naming frame k
    (``on_error="raise"``) or drops the frame with a summary warning (``"skip"``).
    ``flush_every``: finished frames are made durable at least this often (and every 30 s).
    Returns ``out_path``.
    """
    out_path = Path(out_path)
    on_error, implemented = _check_label_args(out_path, calculator, prefix, stress, on_error, flush_every)
    check_writable(out_path)  # before the first frame is labelled

    frames, source = _input_frames(frames_or_path)
    n = len(frames)
    with_stress = [bool(stress is not False and "stress" in implemented and a.pbc.all()) for a in frames]
    fingerprint = _fingerprint(frames, prefix, stress, calculator)
    partial = partial_path(out_path)
    if not resume:
        partial.unlink(missing_ok=True)
    records = _load_partial(partial, fingerprint, n) if partial.exists() else {}
    done = {i for i, rec in records.items() if not rec.info.get(_SKIPPED)}
    if on_error is OnError.SKIP:  # a frame that failed before is not retried in skip mode
        done |= set(records)
    todo = [i for i in range(n) if i not in done]

    errors: dict[int, str] = {}
    buffer: list[Atoms] = []
    last_flush = time.monotonic()
    from tqdm import tqdm

    with tqdm(total=n, initial=n - len(todo), disable=bar_disabled(progress), unit="frame",
              desc=f"labelling with {type(calculator).__name__}") as bar:
        try:
            for i in todo:
                try:
                    record = _label_one(frames[i], calculator, prefix, with_stress[i])
                except Exception as exc:  # any calculator failure, PriorError included
                    message = f"{type(exc).__name__}: {exc}"
                    if on_error is OnError.RAISE:
                        raise DataError(
                            f"{source}: frame {i}: {type(calculator).__name__} failed ({message}); "
                            f"finished frames are kept in {partial} and rerunning the same call "
                            f"resumes after them (on_error='skip' leaves failing frames out)"
                        ) from exc
                    errors[i] = message
                    record = frames[i].copy()
                    record.info[_SKIPPED] = True
                record.info[_INDEX] = i
                record.info[_INPUT] = fingerprint
                buffer.append(record)
                if len(buffer) >= flush_every or time.monotonic() - last_flush > _FLUSH_SECONDS:
                    _append(partial, buffer)
                    buffer.clear()
                    last_flush = time.monotonic()
                bar.update(1)
        finally:  # on any exit, including Ctrl-C, what is finished is kept
            if buffer:
                _append(partial, buffer)
    return _finish(partial, out_path, fingerprint, n, source, errors)


def _input_frames(frames_or_path: Any) -> tuple[list[Atoms], str]:
    if isinstance(frames_or_path, (str, Path)):
        return read_frames(frames_or_path), str(frames_or_path)
    frames = [frames_or_path] if isinstance(frames_or_path, Atoms) else list(frames_or_path)
    if not frames:
        raise DataError("label_frames: no frames to label")
    return frames, "input"


def _label_one(atoms: Atoms, calculator: Calculator, prefix: str, with_stress: bool) -> Atoms:
    work = atoms.copy()  # the frame itself never gets the calculator attached
    work.constraints = []  # labels are the calculator's raw energy gradient, never constraint-projected
    work.calc = calculator
    energy = float(work.get_potential_energy(apply_constraint=False))
    forces = np.array(work.get_forces(apply_constraint=False), dtype=np.float64)
    stress = (np.array(work.get_stress(voigt=True, apply_constraint=False), dtype=np.float64)
              if with_stress else None)
    if not math.isfinite(energy):
        raise FloatingPointError(f"non-finite energy {energy}")
    if forces.shape != (len(atoms), 3) or not np.isfinite(forces).all():
        raise FloatingPointError(f"non-finite or malformed forces (shape {forces.shape})")
    if stress is not None and not np.isfinite(stress).all():
        raise FloatingPointError("non-finite stress")
    out = _labels_in_info(atoms)  # keeps reference labels from a single-point calculator
    out.info[f"{prefix}_energy"] = energy
    out.arrays[f"{prefix}_forces"] = forces
    if stress is not None:
        out.info[f"{prefix}_stress"] = stress
    return out


def _fingerprint(frames: list[Atoms], prefix: str, stress: bool | None, calculator: Calculator) -> str:
    """``n<count>_<hash>`` of the geometries and the labelling settings."""
    h = hashlib.sha256()
    for a in frames:
        for arr in (a.numbers.astype(np.int64), a.positions.astype(np.float64),
                    np.asarray(a.cell, dtype=np.float64), a.pbc.astype(np.int8)):
            h.update(np.ascontiguousarray(arr).tobytes())
    params = getattr(calculator, "parameters", None) or {}
    try:  # objects are named by type only: a repr with a memory address would never match again
        params_text = json.dumps(params, sort_keys=True, default=_json_default)
    except (TypeError, ValueError):
        params_text = ""
    h.update(f"{prefix}|{stress}|{type(calculator).__module__}.{type(calculator).__qualname__}|{params_text}".encode())
    h.update(LABELS_VERSION.encode())  # labels made before the raw-gradient fix are not resumed into
    return f"n{len(frames)}_{h.hexdigest()[:20]}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return type(obj).__name__


def _append(partial: Path, records: list[Atoms]) -> None:
    text = frames_to_extxyz(records)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "ab") as fh:
        fh.write(text.encode())
        fh.flush()
        os.fsync(fh.fileno())


def _complete_length(data: bytes) -> int:
    """Bytes of ``data`` that hold whole extxyz frames (a kill may cut the last one short)."""
    lines = data.splitlines(keepends=True)
    pos = good = k = 0
    while k < len(lines):
        try:
            natoms = int(lines[k])
        except ValueError:
            break
        block = lines[k:k + natoms + 2]
        if len(block) < natoms + 2 or not all(line.endswith(b"\n") for line in block):
            break
        k += natoms + 2
        pos += sum(len(line) for line in block)
        good = pos
    return good


def _load_partial(partial: Path, fingerprint: str, n: int) -> dict[int, Atoms]:
    """Finished frames of an earlier run by index (a labelled record beats a skipped one)."""
    from ase.io import read

    data = partial.read_bytes()
    good = _complete_length(data)
    if good < len(data):
        os.truncate(partial, good)  # drop the cut-off tail so appends continue cleanly
    if good == 0:
        return {}
    try:
        frames = read(io.StringIO(data[:good].decode()), index=":", format="extxyz")
    except Exception as exc:
        raise DataError(f"{partial}: unreadable sidecar of an interrupted labelling run ({exc}); "
                        f"delete it or rerun with resume=False (--no-resume)") from exc
    records: dict[int, Atoms] = {}
    for rec in frames:
        found = rec.info.get(_INPUT)
        index = rec.info.get(_INDEX)
        if found != fingerprint or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            what = f"{str(found).split('_')[0][1:]} frames" if isinstance(found, str) else "unknown input"
            raise DataError(
                f"{partial} holds labels of a different input or different settings (made for "
                f"{what} with fingerprint {found}; this call has {n} frames, {fingerprint}). "
                f"Resuming would mix them: delete it or rerun with resume=False (--no-resume)"
            )
        if int(index) not in records or not rec.info.get(_SKIPPED):
            records[int(index)] = rec
    return records


def _finish(partial: Path, out_path: Path, fingerprint: str, n: int, source: str,
            errors: dict[int, str]) -> Path:
    records = _load_partial(partial, fingerprint, n) if partial.exists() else {}
    missing = [i for i in range(n) if i not in records]
    if missing:  # cannot happen unless the sidecar was tampered with while running
        raise DataError(f"{partial}: frames {missing[:10]} are missing; rerun to complete them")
    skipped = sorted(i for i, rec in records.items() if rec.info.get(_SKIPPED))
    out = []
    for i in range(n):
        rec = records[i]
        if rec.info.get(_SKIPPED):
            continue
        for key in (_INDEX, _INPUT, _SKIPPED):
            rec.info.pop(key, None)
        out.append(rec)
    if not out:
        raise DataError(f"{source}: the calculator failed on every one of the {n} frames "
                        f"(first error: {next(iter(errors.values()), 'in an earlier run')}); nothing written")
    write_frames(out_path, out)
    partial.unlink(missing_ok=True)
    if skipped:
        first = next(iter(errors.items()), None)
        detail = f"; first error, frame {first[0]}: {first[1]}" if first else " (in an earlier run)"
        warnings.warn(f"{source}: {len(skipped)} of {n} frames skipped because the calculator failed: "
                      f"{skipped}{detail}", DataWarning, stacklevel=3)
    return out_path
