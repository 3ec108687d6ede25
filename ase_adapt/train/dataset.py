"""Labelled frames for training: which head learns which labels from which frames.

A :class:`Task` ties a head to label keys and loss weights (``main`` on ``energy``/``forces``;
``prior`` on ``prior_energy``/``prior_forces``; a replay head on replay frames...). A
:class:`LabelledFrames` reads every task's labels once (float64, validated, with errors naming
the frame and key) and turns index batches into a graph plus per-head targets. Frames are
grouped (``"data"``, ``"replay"``) so that a task can be restricted to one group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from .. import _keys as K
from ..errors import DataError
from ..graph import AtomicGraph, build_graph
from .data import frame_labels, is_isolated_atom
from ..losses import LossWeights, Targets, make_targets

__all__ = ["Task", "LabelledFrames", "DATA", "REPLAY"]

DATA = "data"
REPLAY = "replay"


@dataclass(frozen=True)
class Task:
    """One head's learning target.

    ``required``: every frame of the task's group must carry its energy and forces labels
    (otherwise frames without them simply do not contribute). ``weight`` multiplies the head's
    loss in the total (the λ of joint training).
    """

    head: str
    energy_key: str | None = K.REF_ENERGY
    forces_key: str | None = K.REF_FORCES
    stress_key: str | None = K.REF_STRESS
    weights: LossWeights = field(default_factory=LossWeights)
    weight: float = 1.0
    required: bool = True
    group: str = DATA


class LabelledFrames:
    """Frames plus every task's labels, validated up front."""

    def __init__(
        self,
        frames: Sequence[Atoms],
        tasks: Sequence[Task],
        groups: Sequence[str] | None = None,
        name: str = "dataset",
    ) -> None:
        self.frames = [a for a in frames]
        self.tasks = list(tasks)
        self.groups = list(groups) if groups is not None else [DATA] * len(self.frames)
        if len(self.groups) != len(self.frames):
            raise ValueError("groups must give one group per frame")
        for k, a in enumerate(self.frames):
            if is_isolated_atom(a):
                raise DataError(f"{name}: frame {k} is an isolated-atom (E0) frame; filter it out before training")
        self.labels: list[list[dict | None]] = []
        for task in self.tasks:
            col = []
            for k, (a, g) in enumerate(zip(self.frames, self.groups)):
                if g != task.group:
                    col.append(None)
                    continue
                try:
                    lab = frame_labels(a, k, task.energy_key, task.forces_key, task.stress_key, required=task.required)
                except DataError as exc:
                    raise DataError(f"{name} (head {task.head!r}): {exc}") from None
                has = any(v is not None for v in lab.values())
                col.append(lab if has else None)
            self.labels.append(col)
        unlabelled = [k for k in range(len(self.frames)) if all(col[k] is None for col in self.labels)]
        if unlabelled:
            raise DataError(
                f"{name}: frames {unlabelled[:5]}{'...' if len(unlabelled) > 5 else ''} carry no label "
                f"for any task ({[(t.head, t.energy_key, t.forces_key) for t in self.tasks]})"
            )

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def heads(self) -> list[str]:
        return [t.head for t in self.tasks]

    def elements(self) -> list[int]:
        return sorted({int(z) for a in self.frames for z in np.unique(a.numbers)})

    def batch(
        self, indices: Sequence[int], cutoff: float, dtype: torch.dtype, device: torch.device | str
    ) -> tuple[AtomicGraph, dict[str, Targets]]:
        """The graph of ``indices`` and each task's targets (heads without labels there are left out)."""
        frames = [self.frames[i] for i in indices]
        graph = build_graph(frames, cutoff, dtype=dtype, device=device)
        n_atoms = [len(a) for a in frames]
        empty: dict = {}
        targets = {}
        for task, col in zip(self.tasks, self.labels):
            labs = [col[i] or empty for i in indices]
            t = make_targets(labs, n_atoms, dtype, device)
            if not t.empty:
                targets[task.head] = t
        return graph, targets

    def label_array(self, task_index: int, key: str) -> list:
        """The ``key`` label of every frame for one task (``None`` where absent)."""
        return [None if lab is None else lab.get(key) for lab in self.labels[task_index]]
