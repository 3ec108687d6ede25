"""How many intra-op threads torch uses for one system's compute.

torch defaults to one intra-op thread per core. For a molecule of tens of atoms the operations
are too small to split, and every parallel region still waits for all threads: measured on a
2-core machine (benchmarks/train_speed.py), an energy+forces call of the default model on 20
atoms took 5.2 ms with 1 thread and 15.3 ms with 2, a TTT step 47 ms and 158 ms; beside another
CPU-bound job, 2 threads collapsed further. So by default (``threads=None``) a calculator computes
systems of fewer than :data:`SMALL_SYSTEM` atoms on one thread and leaves larger ones to torch's
setting; ``threads=N`` fixes it. The process-wide setting is restored after each computation.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["SMALL_SYSTEM", "threads_for", "intra_op_threads"]

SMALL_SYSTEM = 1000  # atoms


def threads_for(n_atoms: int, threads: int | None) -> int | None:
    """The thread count to use (None: leave torch's setting alone)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        return int(threads)
    return 1 if n_atoms < SMALL_SYSTEM else None


@contextlib.contextmanager
def intra_op_threads(n_atoms: int, threads: int | None = None) -> Iterator[None]:
    """Run the enclosed torch compute with :func:`threads_for` threads, then restore the setting."""
    want = threads_for(n_atoms, threads)
    before = torch.get_num_threads()
    if want is None or want == before:
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)
