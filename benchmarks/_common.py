"""Helpers shared by the scripts in ``benchmarks/`` (see ``benchmarks/README.md``).

Scripts import this as ``from _common import ...``: running ``python benchmarks/<name>.py`` puts
``benchmarks/`` on ``sys.path``. Nothing here imports torch or ase-adapt at module level, so a
benchmark can start its workers before paying for those imports.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent


# ---------------------------------------------------------------------------------------- output
def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths, without importing numpy here
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def _clean(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (``ase_adapt._io.atomic_write``).

    A crash while writing leaves any previous result untouched and no temp file behind.
    """
    from ase_adapt._io import atomic_write  # lazy: keeps torch out of the workers' start-up

    text = json.dumps(_clean(json.loads(json.dumps(data, default=_json_default))), indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def format_value(value: Any, fmt: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str = ".3g",
                file=None) -> None:
    """Print a plain fixed-width table (floats formatted with ``fmt``, None as ``-``)."""
    cells = [[format_value(v, fmt) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[k]) for r in cells]) for k, h in enumerate(headers)]
    out = file or sys.stdout
    line = "  ".join(h.ljust(w) if k == 0 else h.rjust(w) for k, (h, w) in enumerate(zip(headers, widths)))
    print(line, file=out)
    print("-" * len(line), file=out)
    for r in cells:
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))),
              file=out)


# ---------------------------------------------------------------------------------------- memory
def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, in GB (10^9 bytes), from ru_maxrss."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return maxrss * scale / 1e9


def current_rss_gb() -> float | None:
    """Current resident set size in GB (Linux /proc; psutil elsewhere; None if neither)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e9
    except ImportError:
        return None


# ---------------------------------------------------------------------------------------- timing
def time_calls(
    call: Callable[[], Any],
    prepare: Callable[[int], Any] | None = None,
    *,
    warmup: int = 1,
    min_repeats: int = 5,
    max_repeats: int = 30,
    budget_s: float = 10.0,
) -> dict[str, Any]:
    """Time ``call()`` after ``warmup`` untimed calls; ``prepare(k)`` runs untimed before each call.

    Repeats until at least ``min_repeats`` timed calls are done and either ``max_repeats`` is
    reached or the timed calls have used ``budget_s`` seconds. Returns the per-call times and
    their summary (the median is the headline figure: robust to the odd preempted call).
    """
    warm = []
    for k in range(warmup):
        if prepare is not None:
            prepare(-1 - k)
        t0 = time.perf_counter()
        call()
        warm.append(time.perf_counter() - t0)
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < budget_s):
        if prepare is not None:
            prepare(len(times))
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"warmup_seconds": warm, "times": times, **summarize(times)}


def summarize(times: Sequence[float]) -> dict[str, Any]:
    s = sorted(times)
    n = len(s)
    q = lambda p: s[min(n - 1, max(0, round(p * (n - 1))))]  # noqa: E731
    return {
        "n": n,
        "median": statistics.median(s),
        "mean": statistics.fmean(s),
        "min": s[0],
        "max": s[-1],
        "q25": q(0.25),
        "q75": q(0.75),
    }


def fit_loglog(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Slope of the least-squares line through (log x, log y); None with fewer than 2 points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


# ---------------------------------------------------------------------------------------- context
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


def machine_info() -> dict[str, Any]:
    """Where and with what a benchmark ran (no torch import: workers report torch themselves)."""
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": affinity,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        # thread counts and allocator settings change CPU timings several-fold
        "env": {k: os.environ.get(k) for k in ENV_KEYS},
        "git": _git_revision(),
    }


def timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def torch_info() -> dict[str, Any]:
    """Torch version and thread settings of the calling process (imports torch)."""
    import torch

    return {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }


# ---------------------------------------------------------------------------------------- workers
class WorkerError(RuntimeError):
    pass


def run_worker(script: str | Path, spec: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """Run ``python script --worker JSON`` in a fresh process and return the JSON it prints last.

    A fresh process per measurement keeps peak RSS attributable to one measurement and stops
    one backend's imports, caches or thread settings from leaking into another's timings.
    """
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise WorkerError(f"worker timed out after {timeout_s} s") from None
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise WorkerError(f"worker exited with {r.returncode}: " + " | ".join(tail))
    return json.loads(lines[-1])
