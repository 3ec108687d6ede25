"""Weighted energy / force / stress losses for one head, with per-frame label masks.

One definition serves training, fine-tuning, the training-level prior loss stored in the
statistics and the test-time-training objective (with the weights the statistics record), so
that the prior losses of training and adaptation compare like with like.

- energy: per-atom energy error ``(E_pred - E_ref) / N`` (eV/atom), averaged over frames; with
  ``energy_offset`` the batch's mean error is removed first (one system, no shared energy zero);
- forces: per-component error (eV/Å), averaged over the atoms of labelled frames;
- stress: per-component error (eV/Å³), averaged over labelled 3D-periodic frames.

Frames that lack a label simply do not contribute to that term (prior-only frames in joint
training carry no main-level energy).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from . import _keys as K
from ._settings import check_types

__all__ = ["LossKind", "LossWeights", "Targets", "make_targets", "head_loss", "model_loss"]


class LossKind(str, enum.Enum):
    MSE = "mse"
    HUBER = "huber"


@dataclass(frozen=True)
class LossWeights:
    """Term weights and the loss shape. Defaults follow common MLFF practice (forces dominate)."""

    energy: float = 1.0
    forces: float = 10.0
    stress: float = 0.0
    kind: LossKind = LossKind.MSE
    huber_delta: float = 0.01
    # The batch is one system whose labels need not share the model's energy zero (a prior fitted
    # per molecule, such as sGDML): fit one energy offset to the batch, so that only energy
    # differences between its frames count. Test-time training uses this.
    energy_offset: bool = False

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("energy", "forces", "stress"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if self.huber_delta <= 0:
            raise ValueError(f"huber_delta must be > 0, got {self.huber_delta}")


@dataclass(frozen=True)
class Targets:
    """Labels of one batch for one head. A ``None`` term has no labelled frame in the batch."""

    energy: torch.Tensor | None = None          # [B] float64
    energy_mask: torch.Tensor | None = None     # [B] bool
    forces: torch.Tensor | None = None          # [N, 3]
    forces_mask: torch.Tensor | None = None     # [N] bool
    stress: torch.Tensor | None = None          # [B, 3, 3]
    stress_mask: torch.Tensor | None = None     # [B] bool

    @property
    def empty(self) -> bool:
        return self.energy is None and self.forces is None and self.stress is None

    def labelled_structures(self, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """[B] bool: structures with at least one label of this head."""
        out = torch.zeros(num_graphs, dtype=torch.bool, device=batch.device)
        for mask in (self.energy_mask, self.stress_mask):
            if mask is not None:
                out |= mask
        if self.forces_mask is not None:
            out[batch[self.forces_mask]] = True
        return out

    def restricted(self, structures: torch.Tensor, batch: torch.Tensor) -> "Targets":
        """The same labels, counted only on the structures where ``structures`` [B] is True."""
        def keep(mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
            return None if mask is None else mask & rows
        return Targets(self.energy, keep(self.energy_mask, structures), self.forces,
                       keep(self.forces_mask, structures[batch]), self.stress, keep(self.stress_mask, structures))


def make_targets(
    labels: Sequence[Mapping[str, object]],
    n_atoms: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
) -> Targets:
    """Stack per-frame label dicts (``energy`` float, ``forces`` [n,3], ``stress`` [3,3]; any may be None)."""
    out: dict[str, torch.Tensor] = {}
    e = [lab.get(K.LABEL_ENERGY) for lab in labels]
    if any(v is not None for v in e):
        out["energy"] = torch.tensor([0.0 if v is None else float(v) for v in e], dtype=torch.float64, device=device)
        out["energy_mask"] = torch.tensor([v is not None for v in e], device=device)
    f = [lab.get(K.LABEL_FORCES) for lab in labels]
    if any(v is not None for v in f):
        blocks = [np.zeros((n, 3)) if v is None else np.asarray(v, dtype=np.float64) for v, n in zip(f, n_atoms)]
        out["forces"] = torch.as_tensor(np.concatenate(blocks), dtype=dtype, device=device)
        out["forces_mask"] = torch.as_tensor(
            np.concatenate([np.full(n, v is not None) for v, n in zip(f, n_atoms)]), device=device
        )
    s = [lab.get(K.LABEL_STRESS) for lab in labels]
    if any(v is not None for v in s):
        out["stress"] = torch.as_tensor(
            np.stack([np.zeros((3, 3)) if v is None else np.asarray(v, dtype=np.float64) for v in s]),
            dtype=dtype, device=device,
        )
        out["stress_mask"] = torch.tensor([v is not None for v in s], device=device)
    return Targets(**out)


def _elementwise(err: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    if weights.kind is LossKind.HUBER:
        return torch.nn.functional.huber_loss(err, torch.zeros_like(err), reduction="none", delta=weights.huber_delta)
    return err.square()


def head_loss(
    pred: Mapping[str, torch.Tensor],
    targets: Targets,
    n_atoms: torch.Tensor,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted loss of one head's predictions, and its parts (floats, for logging).

    Parts: ``energy_mse``/``forces_mse``/``stress_mse`` (plain MSE whatever ``kind``, for
    metrics) and ``n_energy``/``n_forces``/``n_stress`` (labelled counts, for weighted averages).
    """
    device = pred[K.ENERGY].device
    total = torch.zeros((), dtype=torch.float64, device=device)
    parts: dict[str, float] = {}
    if targets.energy is not None:
        m = targets.energy_mask
        if bool(m.any()):
            err = ((pred[K.ENERGY] - targets.energy) / n_atoms.to(torch.float64))[m]
            if weights.energy_offset:  # the least-squares offset of one system: its mean error
                err = err - err.mean()
            total = total + weights.energy * _elementwise(err, weights).mean()
            parts["energy_mse"] = float(err.detach().square().mean())
            parts["n_energy"] = int(m.sum())
    if targets.forces is not None and K.FORCES in pred:
        m = targets.forces_mask
        if bool(m.any()):
            err = (pred[K.FORCES] - targets.forces)[m]
            total = total + weights.forces * _elementwise(err, weights).mean().to(torch.float64)
            parts["forces_mse"] = float(err.detach().square().mean())
            parts["n_forces"] = int(m.sum())
    if targets.stress is not None and K.STRESS in pred:
        m = targets.stress_mask
        if bool(m.any()):
            err = (pred[K.STRESS] - targets.stress)[m]
            total = total + weights.stress * _elementwise(err, weights).mean().to(torch.float64)
            parts["stress_mse"] = float(err.detach().square().mean())
            parts["n_stress"] = int(m.sum())
    parts["loss"] = float(total.detach())
    return total, parts


def model_loss(
    model: torch.nn.Module,
    graph,
    targets: Targets,
    head: str,
    weights: LossWeights,
    *,
    create_graph: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Evaluate ``head`` on ``graph`` and return :func:`head_loss` against ``targets``.

    ``create_graph=True`` keeps the loss differentiable with respect to the weights (training,
    TTT); otherwise the loss is a detached number (validation, statistics).
    """
    pred = model(
        graph, head,
        compute_forces=targets.forces is not None,
        compute_stress=targets.stress is not None and graph.periodic_3d,
        create_graph=create_graph,
    )
    return head_loss(pred, targets, graph.n_atoms, weights)
