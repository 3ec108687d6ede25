"""Many independent tasks (RSS structures, molecules, one TTT per molecule), serially or on Dask.

:func:`run_tasks` runs ``fn(payload)`` for every :class:`Task` and keeps one result file per task,
``<folder>/<task id>.json``, written atomically by the driver as soon as the task is done. So:

- **nothing is lost:** a run killed midway keeps every finished task's file, and a re-run reads
  them back instead of recomputing (``reused`` in :class:`TaskRun`);
- **results are the inputs' and not the run's:** a result file records the task's fingerprint
  (a hash of its payload); a file with another fingerprint means other settings, and is refused
  rather than silently mixed into a new run;
- **the executor changes nothing:** each task is seeded by its payload and runs with one torch
  thread (restored afterwards), in the driver (``scheduler=None``) or on a Dask worker, so the
  serial and the distributed path return identical results.

Dask is optional (``pip install "ase-adapt[dask]"``): ``scheduler="local"`` starts a
``distributed.LocalCluster`` of ``n_workers`` single-threaded worker processes; any other string
is the address of a running scheduler (``tcp://host:8786``), for example one started by
dask-jobqueue on a SLURM/PBS cluster or by the Dask Kubernetes operator (docs/workflows.md).
Payloads must be plain data: models travel as names, paths with their content hash, or checkpoint
bytes (:class:`ModelSource`; bytes for in-memory models and, with a remote scheduler, for
ase-adapt checkpoint files), never as pickled modules. The result files are written by the driver.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .._io import check_writable, write_json

__all__ = ["Task", "TaskRun", "ModelSource", "run_tasks", "fingerprint", "one_thread"]

_FORMAT = "ase-adapt task result 1"


@dataclass(frozen=True)
class Task:
    """One unit of work: ``id`` names its result file (letters, digits, ``-_.``), ``payload`` is plain data."""

    id: str
    payload: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.id or any(not (c.isalnum() or c in "-_.") for c in self.id) or self.id.startswith("."):
            raise ValueError(f"invalid task id {self.id!r}: letters, digits, '-', '_' and '.' only")


@dataclass
class TaskRun:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> result, in task order
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    executor: str = "serial"


def fingerprint(payload: Any) -> str:
    """A stable hash of plain data (bytes hashed by content)."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, functools.partial):
            h.update(b"P")
            feed(x.func)
            feed(list(x.args))
            feed(dict(x.keywords))
        elif callable(x):  # a calculator factory: by its importable name (its address changes between runs)
            h.update(f"F{_importable_name(x)}".encode())
        elif isinstance(x, (bytes, bytearray)):
            h.update(b"B" + hashlib.sha256(x).digest())
        elif isinstance(x, dict):
            h.update(b"D")
            for k in sorted(x, key=str):
                feed(str(k))
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"L%d" % len(x))
            for v in x:
                feed(v)
        else:
            h.update(json.dumps(x, default=str).encode())

    feed(payload)
    return h.hexdigest()[:16]


def _importable_name(fn: Any) -> str:
    """``module.qualname`` of a module-level function or class; anything else has no stable identity."""
    qual, module = getattr(fn, "__qualname__", None), getattr(fn, "__module__", None)
    if not qual or not module or "<lambda>" in qual or "<locals>" in qual:
        raise ValueError(f"a calculator factory must be a module-level function or class (or a functools.partial "
                         f"of one), so that its results can be recognised in a later run; got {fn!r}")
    return f"{module}.{qual}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _spec_parts(spec: str) -> tuple[str, Path | None, str | None]:
    """(``"mace:"``/``"sevennet:"``/``""``, the file the spec names if it is one, the ``@`` choice)."""
    prefix, body, choice = "", spec, None
    if spec.startswith(("mace:", "sevennet:")):
        from ..models.foreign import split_choice

        prefix, body = spec.split(":", 1)
        prefix += ":"
        body, choice = split_choice(body, None, "choice")
    path = Path(body)
    return prefix, (path if path.is_file() else None), choice


@dataclass(frozen=True)
class ModelSource:
    """A model as it travels to a worker: a name or path (with the file's content hash), or checkpoint bytes.

    A model file is identified by its content, not its path: a checkpoint retrained in place is a
    new model, whose results are never mixed with the old one's.
    """

    spec: str | None = None
    data: bytes | None = None
    digest: str | None = None  # content hash of the file ``spec`` names

    @classmethod
    def of(cls, model: Any, ship: bool = False) -> "ModelSource":
        """From a path or name, or an in-memory model (saved to checkpoint bytes).

        ``ship``: send an ase-adapt checkpoint file's bytes rather than its path, for workers that do
        not share this file system. Names (``default``, ``sevennet:7net-0``) and foreign model files
        (``mace:PATH``) are always sent as they are and must be available on the workers.
        """
        if isinstance(model, ModelSource):
            return model
        if isinstance(model, (str, Path)):
            spec = str(model)
            prefix, path, choice = _spec_parts(spec)
            if path is None:
                return cls(spec=spec)
            data = path.read_bytes()
            if ship and not prefix:
                return cls(data=data)
            suffix = f"@{choice}" if choice else ""
            return cls(spec=f"{prefix}{path.resolve()}{suffix}", digest=_digest(data))
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = model.save(Path(tmp) / "model.safetensors")
            return cls(data=Path(path).read_bytes())

    def identity(self) -> str:
        if self.spec is None:
            return "bytes:" + _digest(self.data or b"")
        return self.spec + (f"#{self.digest}" if self.digest else "")


_MODELS: dict[str, Any] = {}  # per process (driver or worker): loaded once, reused by every task


def load_source(source: ModelSource) -> Any:
    """The model of ``source``, loaded once per process."""
    key = source.identity()
    if key not in _MODELS:
        from ..checkpoint import load_model

        if source.data is None:
            path = _spec_parts(source.spec or "")[1]
            if source.digest and (path is None or _digest(path.read_bytes()) != source.digest):
                raise ValueError(f"model file of {source.spec!r} is missing here or differs from the driver's "
                                 "(a worker without the same file system? give the model as bytes)")
            _MODELS[key] = load_model(source.spec)
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.safetensors"
                path.write_bytes(source.data)
                _MODELS[key] = load_model(path)
    return _MODELS[key]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for the duration (results do not depend on the executor)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _call(fn: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any]) -> dict[str, Any]:
    with one_thread():
        return fn(payload)


def _read_done(path: Path, fp: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or record.get("format") != _FORMAT or not isinstance(record.get("result"), dict):
            raise ValueError("not a task result file")
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable task result ({exc}); delete it to recompute the task") from None
    if record.get("fingerprint") != fp:
        raise ValueError(f"{path} was computed with other settings (fingerprint {record.get('fingerprint')} != {fp}); "
                         "use another output folder, or delete the old results")
    return record["result"]


def run_tasks(fn: Callable[[dict[str, Any]], dict[str, Any]], tasks: Sequence[Task], folder: str | Path, *,
              scheduler: str | None = None, n_workers: int = 2, progress: bool = True,
              desc: str = "tasks") -> TaskRun:
    """Run ``fn`` (a top-level, picklable function returning JSON-able data) on every task not done yet."""
    folder = check_writable(folder, directory=True)
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("task ids must be unique")
    run = TaskRun(executor="serial" if scheduler is None else f"dask:{scheduler}")
    todo = []
    for t in tasks:
        done = _read_done(folder / f"{t.id}.json", fingerprint(t.payload))
        if done is None:
            todo.append(t)
        else:
            run.results[t.id] = done
            run.reused.append(t.id)

    def finish(t: Task, result: dict[str, Any]) -> None:
        write_json(folder / f"{t.id}.json", {"format": _FORMAT, "id": t.id,
                                            "fingerprint": fingerprint(t.payload), "result": result})
        run.results[t.id] = result
        run.computed.append(t.id)

    from tqdm.auto import tqdm

    with tqdm(total=len(tasks), initial=len(run.reused), unit="task", desc=desc,
              disable=None if progress else True) as bar:
        if scheduler is None:
            for t in todo:
                finish(t, _failed_as(t, lambda: _call(fn, t.payload)))
                bar.update()
        elif todo:
            _run_dask(fn, todo, scheduler, n_workers, finish, bar)
    run.results = {i: run.results[i] for i in ids}
    return run


def _failed_as(task: Task, get: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The task's result; a failure stops the run with the task named (finished tasks stay saved)."""
    try:
        return get()
    except Exception as exc:
        raise RuntimeError(f"task {task.id} failed ({type(exc).__name__}: {exc}); the tasks finished before it "
                           "are saved, and a re-run computes only the rest") from exc


def _run_dask(fn, todo: list[Task], scheduler: str, n_workers: int, finish, bar) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ImportError('the Dask executor needs dask.distributed: pip install "ase-adapt[dask]"') from None
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            if n_workers < 1:
                raise ValueError(f"n_workers must be >= 1, got {n_workers}")
            cluster = stack.enter_context(LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler))
        futures = {client.submit(_call, fn, t.payload, key=f"{t.id}-{fingerprint(t.payload)}", pure=False): t
                   for t in todo}
        saved: set = set()
        try:
            for future in as_completed(futures):
                finish(futures[future], _failed_as(futures[future], future.result))
                saved.add(future)
                bar.update()
        except BaseException:
            for future, t in futures.items():  # keep what finished meanwhile, then stop the rest
                if future not in saved and future.status == "finished":
                    finish(t, future.result())
            client.cancel(list(futures))
            raise
