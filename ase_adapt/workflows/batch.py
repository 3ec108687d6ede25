"""``ase-adapt evaluate`` over many molecules: one task per file, serially or on Dask.

Each file's frames travel with its task as extxyz text (workers need not see the data files) and
its result is kept in ``out/tasks/<name>.json``; a re-run skips the files already done. The model
travels as a checkpoint path or bytes (:class:`~ase_adapt.workflows.tasks.ModelSource`), and each
task adapts its own private copy (one TTT per molecule), so the order of the tasks and the
executor change nothing.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from .._io import write_json
from .tasks import ModelSource, Task, load_source, run_tasks

__all__ = ["evaluate_files", "evaluate_task"]

_KEEP = ("n_frames", "force_mae_mev_per_A", "energy_mae_mev_per_atom", "energy_mae_offset_corrected_mev_per_atom",
         "prior_force_mae_mev_per_A", "shifted")


def evaluate_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one file's frames (extxyz text in the payload) with the payload's model and settings."""
    from ase.io import read

    from ..evaluate import evaluate_frames

    model = load_source(ModelSource(**payload["model"]))
    frames = read(io.StringIO(payload["frames"]), index=":", format="extxyz")
    result = evaluate_frames(model, frames, payload["settings"])
    result["data"] = payload["name"]
    return result


def _extxyz_text(path: Path) -> str:
    from ..train.data import read_frames

    from ase.io import write

    buf = io.StringIO()
    write(buf, read_frames(path), format="extxyz")
    return buf.getvalue()


def evaluate_files(model: Any, paths: Sequence[str | Path], settings: Any, out: str | Path, *,
                   scheduler: str | None = None, n_workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """:func:`~ase_adapt.evaluate.evaluate_frames` on every file; writes ``out/evaluate.json`` and returns it."""
    out = Path(out)
    source = ModelSource.of(model, ship=scheduler not in (None, "local"))
    names = [re.sub(r"[^0-9A-Za-z_.-]", "_", Path(p).stem) or "data" for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"two data files share a name: {names}; give each molecule its own file name")
    tasks = [Task(n, {"name": str(p), "frames": _extxyz_text(Path(p)), "settings": settings,
                      "model": asdict(source)}) for n, p in zip(names, paths)]
    run = run_tasks(evaluate_task, tasks, out / "tasks", scheduler=scheduler, n_workers=n_workers,
                    progress=progress, desc="evaluate")
    summary = {"model": source.identity(), "executor": run.executor, "computed": len(run.computed),
               "reused": len(run.reused),
               "molecules": {n: {k: r.get(k) for k in _KEEP} | {"adaptation": r["adaptation"]["kind"]}
                             for n, r in run.results.items()}}
    write_json(out / "evaluate.json", summary)
    return summary
