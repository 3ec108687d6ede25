"""Atomic file output: everything ase-adapt writes goes through a temp file and a rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``.

    A crash or an exception inside ``write`` leaves any previous file at ``path`` untouched and
    no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes 0600, and a writer may recreate the file (safetensors did): the usual mode, after it
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as fh:  # the data is on disk before the rename publishes it
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False, default=float) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


def check_writable(path: str | Path, directory: bool = False) -> Path:
    """Make sure ``path`` (a file, or with ``directory`` a folder) can be written, before any work.

    Creates the missing folders (the output would create them anyway) and writes and removes a
    probe file where the output will go, so a read-only place, a path below a regular file or a
    full permission denial fails now, in one line, not after hours of compute. This is a real
    write, not ``os.access``, so it also holds for root and for read-only file systems.
    """
    path = Path(path)
    folder = path if directory else path.parent
    if directory and path.exists() and not path.is_dir():
        raise ValueError(f"cannot write output folder {str(path)!r}: a file of that name exists")
    if not directory and path.is_dir():
        raise ValueError(f"cannot write output file {str(path)!r}: it is a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ase-adapt-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"cannot write {'folder' if directory else 'file'} {str(path)!r}: "
                         f"{exc.strerror or exc}") from None
    return path


def bar_disabled(progress: bool) -> bool | None:
    """tqdm's ``disable`` for a progress flag: off when asked, and drawn only on a terminal otherwise
    (tqdm's ``None``), so a redirected log never fills with bar updates."""
    return None if progress else True
