"""Optimisation settings, learning-rate schedules and the weight EMA, shared by training and fine-tuning."""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from .._dtypes import as_device
from .._settings import check_types
from ..losses import LossKind, LossWeights

__all__ = ["Scheduler", "PriorPass", "OptimSettings", "make_optimizer", "EMA"]


class Scheduler(str, enum.Enum):
    PLATEAU = "plateau"
    COSINE = "cosine"
    NONE = "none"


class PriorPass(str, enum.Enum):
    """How a training step gets the forces of several prior heads.

    ``each``: every head its own force pass over the whole batch (K heads: K backward passes
    through the representation, and K in the loss's double backward). ``shared``: one pass for
    all prior heads, each structure of the batch training one prior head drawn among those that
    label it (:class:`~ase_adapt.models.base.HeadChoice`); the main head keeps its own pass.
    Every head's loss stays the mean over its own structures, so its expected value is the same;
    a step costs two force passes whatever the number of prior heads.
    """

    EACH = "each"
    SHARED = "shared"


@dataclass(frozen=True)
class OptimSettings:
    """Optimisation knobs shared by training and fine-tuning."""

    epochs: int = 100
    batch_size: int = 8
    lr: float = 5e-3
    weight_decay: float = 0.0
    ema_decay: float | None = 0.99
    grad_clip: float | None = 10.0
    scheduler: Scheduler = Scheduler.PLATEAU
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    min_lr: float = 1e-6
    patience: int | None = 30
    val_fraction: float = 0.1
    seed: int = 0
    loss: LossKind = LossKind.MSE
    huber_delta: float = 0.01
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0
    device: str = "cpu"
    progress: bool = True
    prior_pass: PriorPass = PriorPass.EACH

    def __post_init__(self) -> None:
        check_types(self)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        as_device(self.device)  # a CUDA device on a machine without one fails now, not after labelling

    def loss_weights(self) -> LossWeights:
        return LossWeights(self.energy_weight, self.forces_weight, self.stress_weight, self.loss, self.huber_delta)


def make_optimizer(params: list[nn.Parameter], o: OptimSettings, lr: float, epochs: int):
    """(AdamW, its learning-rate scheduler or None) for one stage of ``epochs``."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=o.weight_decay)
    sched = None
    if o.scheduler is Scheduler.PLATEAU:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=o.plateau_factor, patience=o.plateau_patience, min_lr=o.min_lr
        )
    elif o.scheduler is Scheduler.COSINE:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=o.min_lr)
    return opt, sched


class EMA:
    """Exponential moving average of a parameter list (warm-up: decay min(d, (1+n)/(10+n)))."""

    def __init__(self, params: list[nn.Parameter], decay: float | None) -> None:
        self.params, self.decay, self.updates = params, decay, 0
        self.shadow = [p.detach().clone() for p in params] if decay else []

    @torch.no_grad()
    def update(self) -> None:
        if not self.decay:
            return
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the parameters."""
        if not self.decay:
            yield
            return
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def state(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load(self, state: dict) -> None:
        self.updates = int(state["updates"])
        if self.decay:
            for s, v in zip(self.shadow, state["shadow"]):
                s.copy_(v)
