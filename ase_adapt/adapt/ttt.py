"""Test-time training (TTT): adapt the shared representation to one system using prior labels.

The steps follow the seed paper: prior-labelled snapshots of the new system (see
:mod:`ase_adapt.adapt.samples`), SGD with momentum on the prior head's loss in minibatches,
updating only the shared representation (by default all of it: the embedding and every shared
interaction block; ``adapted_blocks=k`` limits it to the embedding and the first k blocks) with
every head, and every block a head owns, frozen. The main head then predicts from the
adapted features (DESIGN.md §The science).

- **Objective without an energy zero.** A prior fitted per molecule (sGDML) need not share the
  model's energy zero, and fitting that constant by distorting the representation is what blew
  up the main head before. The loss fits one energy offset per system (``energy_offset``): only
  forces and energy differences between samples count.
- **Held-out selection.** A part of the samples (``holdout_fraction``) is never fitted: every
  ``eval_every`` steps its loss decides which weights are kept, and its plateau stops the run.
  No improvement on it means a roll-back to the starting weights.
- **Guard.** Before the adapted weights are used, :func:`ase_adapt.adapt.check_adaptation`
  compares the main head's held-out forces before and after with the prior's; a failed check
  rolls back, and the result says why.

Prior failures raise :class:`~ase_adapt.errors.PriorError` before any weight is touched; any
exception during the steps (OOM, KeyboardInterrupt) restores the starting weights before it
propagates.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms

from .._settings import check_types
from .. import _keys as K
from .guard import GuardSettings, check_adaptation
from .samples import SampleSettings, make_samples
from ..errors import PriorError
from ..graph import build_graph
from ..labels import prior_head_name, prior_heads
from ..losses import LossWeights, make_targets, model_loss

__all__ = ["TTTSettings", "TTTResult", "prior_head_for", "ttt_loss_weights", "test_time_train"]


@dataclass(frozen=True)
class TTTSettings:
    """The TTT recipe: samples, optimiser, held-out selection and guard.

    SGD with momentum 0.9 and weight decay 1e-3 as in the paper; the learning rate, step budget
    and sample counts are chosen on the validation molecules (``benchmarks/validation_ttt.py``).
    Set ``md_temperature`` to the temperature the model will be run at.
    """

    max_steps: int = 300
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3
    adapted_blocks: int | None = None  # adapt the embedding and the first k shared blocks; None: every shared block
    batch_size: int = 16
    holdout_fraction: float = 0.25
    eval_every: int = 10          # steps between held-out evaluations
    patience: int = 6             # held-out evaluations without a relative improvement of min_improvement
    min_improvement: float = 1e-3
    energy_offset: bool = True    # fit one energy offset per system: no shared energy zero needed
    n_rattled: int = 4
    rattle_std: float = 0.03      # Å
    md_steps: int = 640           # prior-driven Langevin steps to sample from (0: rattled copies only)
    md_stride: int = 10
    md_temperature: float = 300.0 # K
    md_timestep: float = 0.5      # fs
    guard: GuardSettings | None = field(default_factory=GuardSettings)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.guard, dict):
            object.__setattr__(self, "guard", GuardSettings(**self.guard))
        check_types(self)
        if not (0.0 <= self.momentum < 1.0 and self.weight_decay >= 0 and self.min_improvement >= 0):
            raise ValueError("TTT needs 0 <= momentum < 1, weight_decay >= 0, min_improvement >= 0")
        if self.max_steps < 1 or not self.lr > 0 or (self.adapted_blocks or 0) < 0 or self.batch_size < 1:
            raise ValueError("TTT needs max_steps >= 1, lr > 0, adapted_blocks >= 0, batch_size >= 1")
        if not 0.0 <= self.holdout_fraction < 1.0 or self.eval_every < 1 or self.patience < 1:
            raise ValueError("TTT needs 0 <= holdout_fraction < 1, eval_every >= 1, patience >= 1")
        self.sample_settings()  # validates the sampling fields

    def adapted_parameters(self, model: torch.nn.Module) -> list[torch.Tensor]:
        """The parameters TTT moves: the embedding and the first ``adapted_blocks`` shared blocks (None: all)."""
        k = len(model.interactions) if self.adapted_blocks is None else self.adapted_blocks
        return model.parameters_before(k)

    def sample_settings(self) -> SampleSettings:
        return SampleSettings(self.n_rattled, self.rattle_std, self.md_steps, self.md_stride,
                              self.md_temperature, self.md_timestep, seed=self.seed)


@dataclass
class TTTResult:
    """What one adaptation did (also the event-log record). Losses are held-out prior losses."""

    head: str
    steps: int
    loss_before: float
    loss_after: float
    stop_reason: str
    rolled_back: bool
    n_samples: int
    n_holdout: int
    seconds: float
    prior_seconds: float
    guard: dict[str, Any] | None = None

    @property
    def improvement(self) -> float:
        return self.loss_before / self.loss_after if self.loss_after > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prior_head_for(model: torch.nn.Module, prior: Any, head: str | None = None) -> str:
    """The model head that learnt ``prior``'s labels: ``head`` if given, else ``prior:<kind>``.

    A prior whose kind has no head is refused: adapting a representation towards labels its
    head never learnt would move the main head's predictions in an unknown direction.
    """
    if head is not None:
        if head not in model.heads:
            raise KeyError(f"model has no head {head!r}; heads: {list(model.heads)}")
        return head
    kind = getattr(prior, "kind", None)
    wanted = prior_head_name(kind) if kind else None
    if wanted in model.heads:
        return wanted
    raise ValueError(
        f"the model has no head for the prior {kind or type(prior).__name__!r} (expected "
        f"{wanted or 'prior:<kind>'!r}; prior heads: {prior_heads(model)}). Use a prior the "
        "model was trained with, or name the head explicitly (ttt head=...) if you know it matches."
    )


def ttt_loss_weights(model: torch.nn.Module, settings: TTTSettings | None = None) -> LossWeights:
    """The training loss weights stored with the model's statistics, with TTT's energy-offset choice."""
    stats = getattr(model, "training_stats", None) or {}
    stored = stats.get("loss_weights")
    weights = LossWeights(**{k: v for k, v in stored.items() if k != "energy_offset"}) \
        if isinstance(stored, dict) else LossWeights()
    return replace(weights, energy_offset=(settings or TTTSettings()).energy_offset)


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(fitted, held-out) sample indices; the structure itself (index 0) is always fitted."""
    n_hold = int(round(fraction * n)) if n >= 4 else 0
    if n_hold == 0:
        return list(range(n)), []
    hold = sorted(1 + rng.permutation(n - 1)[:n_hold])
    return [k for k in range(n) if k not in set(hold)], [int(k) for k in hold]


class _Batches:
    """Graphs and targets of sample subsets, built on demand (vesin is cheap next to a TTT step)."""

    def __init__(self, model, samples, labels, cutoff: float) -> None:
        self.model, self.samples, self.labels, self.cutoff = model, samples, labels, cutoff

    def __call__(self, idx: Sequence[int]):
        frames = [self.samples[i] for i in idx]
        graph = build_graph(frames, self.cutoff, dtype=self.model.dtype, device=self.model.device)
        targets = make_targets([self.labels[i] for i in idx], [len(a) for a in frames],
                               self.model.dtype, self.model.device)
        return graph, targets


def test_time_train(
    model: torch.nn.Module,
    atoms: Atoms,
    prior: Any,
    settings: TTTSettings | None = None,
    *,
    head: str | None = None,
    cutoff: float | None = None,
    labels: Sequence[dict[str, Any]] | None = None,
    samples: Sequence[Atoms] | None = None,
) -> TTTResult:
    """Adapt ``model`` in place to ``atoms`` with ``prior``; return what happened.

    ``cutoff`` is the graph radius to adapt at (the refined radius, when radius refinement
    chose one). ``samples`` and ``labels`` may be given together to reuse samples already made
    and labelled (see :func:`ase_adapt.adapt.make_samples`). Any exception or KeyboardInterrupt
    raised during the steps restores the exact starting weights before it propagates.
    """
    s = settings or TTTSettings()
    t0 = time.perf_counter()
    head = prior_head_for(model, prior, head)
    if (samples is None) != (labels is None):
        raise ValueError("give samples and labels together, or neither")
    if samples is None:
        samples, labels = make_samples(atoms, s.sample_settings(), prior)
    samples, labels = list(samples), list(labels)
    _check_inputs(model, samples, labels)
    t_prior = time.perf_counter() - t0
    weights = ttt_loss_weights(model, s)
    rng = np.random.default_rng(s.seed)
    fit_idx, hold_idx = _split(len(samples), s.holdout_fraction, rng)
    batches = _Batches(model, samples, labels, cutoff or model.cutoff)
    hold_graph, hold_targets = batches(hold_idx or fit_idx)

    params = s.adapted_parameters(model)
    start = [p.detach().clone() for p in params]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    chosen = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)

    def held_out() -> float:
        return float(model_loss(model, hold_graph, hold_targets, head, weights)[0])

    main_before = model(hold_graph, K.MAIN_HEAD)[K.FORCES].detach() if s.guard is not None else None
    verdict = None
    try:
        before = held_out()
        if not math.isfinite(before):
            raise PriorError(f"the prior loss is not finite before TTT ({before}); not adapting")
        steps, reason, best_loss, best_params = _descend(model, params, batches, fit_idx, held_out, before,
                                                         head, weights, s, rng)
        # A non-finite loss means the steps diverged: nothing of this TTT is kept (reliability item 12).
        diverged = reason == "non-finite loss"
        rolled_back = best_params is None or diverged
        _load(params, start if rolled_back else best_params)
        if diverged:
            reason = f"rolled back: non-finite loss after {steps} steps (the starting weights are kept)"
            best_loss = before
        elif rolled_back:
            reason = f"rolled back ({reason}; the held-out prior loss never fell)" if steps else reason
            best_loss = before
        if s.guard is not None and not rolled_back:
            main_after = model(hold_graph, K.MAIN_HEAD)[K.FORCES].detach()
            verdict = check_adaptation(
                s.guard, prior_loss_before=before, prior_loss_after=best_loss,
                main_before=main_before.cpu().numpy(), main_after=main_after.cpu().numpy(),
                prior_forces=hold_targets.forces.detach().cpu().numpy())
            if not verdict.accepted:
                _load(params, start)
                rolled_back, reason = True, "rolled back by the guard: " + "; ".join(verdict.reasons)
    except BaseException:  # OOM, KeyboardInterrupt, a backend error: never leave half-trained weights
        _load(params, start)
        raise
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return TTTResult(head, steps, before, best_loss, reason, rolled_back, len(samples), len(hold_idx),
                     time.perf_counter() - t0, t_prior, verdict.to_dict() if verdict is not None else None)


def _descend(model, params, batches: _Batches, fit_idx: list[int], held_out, before: float, head: str,
             weights: LossWeights, s: TTTSettings, rng: np.random.Generator):
    """SGD in minibatches with held-out selection and a plateau stop.

    Returns (steps, stop reason, best held-out loss, the parameters at it or None if it never
    fell below ``before``).
    """
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    steps, reason = 0, "max steps"
    best_loss, best_params, plateau_ref, stale = before, None, before, 0
    fixed = batches(fit_idx) if len(fit_idx) <= s.batch_size else None
    try:
        while steps < s.max_steps:
            graph, targets = fixed or batches(rng.choice(fit_idx, s.batch_size, replace=False).tolist())
            loss = model_loss(model, graph, targets, head, weights, create_graph=True)[0]
            if not torch.isfinite(loss):
                reason = "non-finite loss"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if steps % s.eval_every and steps < s.max_steps:
                continue
            current = held_out()
            if not math.isfinite(current):
                reason = "non-finite loss"
                break
            if current < best_loss:
                best_loss, best_params = current, [p.detach().clone() for p in params]
            if current < plateau_ref * (1.0 - s.min_improvement):
                plateau_ref, stale = current, 0
            else:
                stale += 1
                if stale >= s.patience:
                    reason = "held-out plateau"
                    break
    finally:
        opt.zero_grad(set_to_none=True)
    return steps, reason, best_loss, best_params


def _check_inputs(model, samples: list[Atoms], labels: list[dict[str, Any]]) -> None:
    """Before any step: one finite label per sample, of the right shape, and finite weights."""
    if not samples or len(samples) != len(labels):
        raise ValueError(f"TTT needs one label per sample, got {len(samples)} samples and {len(labels)} labels")
    for k, (a, lab) in enumerate(zip(samples, labels)):
        forces, energy = np.asarray(lab.get(K.LABEL_FORCES)), lab.get(K.LABEL_ENERGY)
        if forces.shape != (len(a), 3) or not np.isfinite(forces).all() \
                or (energy is not None and not math.isfinite(float(energy))):  # forces-only labels are fine
            raise PriorError(f"TTT sample {k}: the prior's labels are missing, malformed or not finite; not adapting")
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ValueError("the model holds non-finite weights; TTT would only spread them")


def _load(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


test_time_train.__test__ = False  # not a pytest test, despite the name
