"""The training loop shared by every mode and fine-tuning strategy.

A run is a list of :class:`Stage` s (``pretrain-freeze-finetune`` has two, everything else one).
Each stage trains a chosen set of parameters on a chosen set of tasks with AdamW, an EMA of the
weights, gradient clipping, a plateau or cosine schedule and early stopping on the validation
loss. After every epoch it writes, atomically, into ``out_dir``:

- ``last.safetensors``: the current (EMA) model; ``best.safetensors``: the best so far;
- ``state.pt``: everything needed to resume after a kill (weights, optimizer, scheduler, EMA,
  stage, epoch, best state, shuffling RNG), read back with ``weights_only=True``;
- ``metrics.csv`` and ``metrics.json``: one row per epoch.

Frozen parameters are never handed to the optimizer, so they stay bit-identical.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .._io import atomic_write, bar_disabled, check_writable, write_json
from ..checkpoint import save_model
from ..errors import CheckpointError
from ..labels import is_prior_head
from ..losses import head_loss
from .dataset import LabelledFrames
from ..models.base import HeadChoice
from .optim import EMA, OptimSettings, PriorPass, Scheduler, make_optimizer  # noqa: F401  (re-exported)

__all__ = ["Scheduler", "OptimSettings", "Stage", "TrainResult", "Trainer"]

STATE_FILE = "state.pt"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.safetensors"


@dataclass
class Stage:
    """``epochs`` of training ``parameters(model)`` on ``heads`` (a subset of the dataset's tasks)."""

    name: str
    heads: Sequence[str]
    parameters: Callable[[nn.Module], list[nn.Parameter]]
    epochs: int
    lr: float | None = None


@dataclass
class TrainResult:
    model: nn.Module
    best_path: Path
    last_path: Path
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


# Where and how visibly a run computes does not change what it computes: a resume may differ in these.
_RUN_ONLY = ("progress", "device")


def _comparable(record: dict | None) -> dict | None:
    """``record`` without the settings a resumed run may change (progress bars, the device)."""
    if not isinstance(record, dict):
        return record
    out = copy.deepcopy(record)
    for part in (out.get("settings") or {}, (out.get("settings") or {}).get("optim") or {}):
        for key in _RUN_ONLY:
            part.pop(key, None)
    return out


def _rows_to_csv(rows: list[dict]) -> str:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class Trainer:
    """Runs ``stages`` on ``train`` (validated on ``val``) and writes into ``out_dir``.

    ``save`` writes a model checkpoint (default :func:`ase_adapt.save_model`; LoRA fine-tuning
    passes one that saves a merged copy). ``callbacks`` are called with each epoch's metrics
    row after its state is on disk.
    """

    def __init__(
        self,
        model: nn.Module,
        train: LabelledFrames,
        val: LabelledFrames | None,
        stages: Sequence[Stage],
        optim: OptimSettings,
        out_dir: str | Path,
        *,
        record: dict | None = None,
        save: Callable[[nn.Module, Path], Path] = save_model,
        callbacks: Sequence[Callable[[dict], None]] = (),
    ) -> None:
        self.model = model.to(optim.device)
        self.train_set, self.val_set = train, val
        self.stages, self.optim = list(stages), optim
        self.out_dir = Path(out_dir)
        self.record = record or {}
        self.save, self.callbacks = save, list(callbacks)
        self.tasks = {t.head: t for t in train.tasks}
        for st in self.stages:
            missing = [h for h in st.heads if h not in self.tasks]
            if missing:
                raise ValueError(f"stage {st.name!r} trains heads {missing} that have no task")
        self.history: list[dict] = []

    # ----------------------------------------------------------------------- batches
    def _loss(self, data: LabelledFrames, idx: Sequence[int], heads: Sequence[str], train: bool,
              gen: torch.Generator | None = None):
        graph, targets = data.batch(idx, self.model.cutoff, self.model.dtype, self.model.device)
        active = [h for h in heads if h in targets]
        if not active:
            return None, {}
        need_forces = any(targets[h].forces is not None for h in active)
        need_stress = graph.periodic_3d and any(targets[h].stress is not None for h in active)
        specs, shared = list(active), None
        if train and self.optim.prior_pass is PriorPass.SHARED:
            shared = self._shared_prior_pass(graph, targets, active, gen)
            if shared is not None:
                specs = [h for h in active if h not in shared.heads] + [shared]
        pred = self.model(graph, specs, compute_forces=need_forces, compute_stress=need_stress, create_graph=train)
        total, parts = None, {}
        for h in active:
            task = self.tasks[h]
            if shared is not None and h in shared.heads:
                mine = shared.choice == shared.heads.index(h)
                loss, p = head_loss(pred[shared.name], targets[h].restricted(mine, graph.batch), graph.n_atoms,
                                    task.weights)
            else:
                loss, p = head_loss(pred[h], targets[h], graph.n_atoms, task.weights)
            total = task.weight * loss if total is None else total + task.weight * loss
            parts[h] = p
        return total, parts

    @staticmethod
    def _shared_prior_pass(graph, targets: dict, active: list[str], gen: torch.Generator | None) -> HeadChoice | None:
        """One force pass for the prior heads (``prior``, ``prior:<kind>``): each structure trains one of
        those that label it, drawn uniformly (``OptimSettings.prior_pass="shared"``). Every other head
        (the main head, whatever its name, a replay head) keeps its own pass."""
        heads = tuple(h for h in active if is_prior_head(h))
        if len(heads) < 2:
            return None
        labelled = torch.stack([targets[h].labelled_structures(graph.batch, graph.num_graphs) for h in heads], dim=1)
        draw = torch.rand(labelled.shape, generator=gen).to(labelled.device)
        choice = torch.where(labelled, draw + 1.0, torch.zeros_like(draw)).argmax(dim=1)
        return HeadChoice("priors (shared pass)", heads, choice)

    def _evaluate(self, data: LabelledFrames, heads: Sequence[str]) -> dict:
        """Frame-weighted loss and per-head RMSEs over ``data``."""
        bs = self.optim.batch_size
        tot, n, sums = 0.0, 0, {}
        for start in range(0, len(data), bs):
            idx = list(range(start, min(start + bs, len(data))))
            loss, parts = self._loss(data, idx, heads, train=False)
            if loss is None:
                continue
            tot += float(loss) * len(idx)
            n += len(idx)
            for h, p in parts.items():
                for term in ("energy", "forces", "stress"):
                    if f"n_{term}" in p:
                        s = sums.setdefault((h, term), [0.0, 0])
                        s[0] += p[f"{term}_mse"] * p[f"n_{term}"]
                        s[1] += p[f"n_{term}"]
        out = {"loss": tot / max(n, 1)}
        scale = {"energy": 1e3, "forces": 1e3, "stress": 1e3}  # eV -> meV
        for (h, term), (s, c) in sums.items():
            out[f"{h}_{term}_rmse_mev"] = math.sqrt(s / c) * scale[term]
        return out

    # ----------------------------------------------------------------------- state
    def _state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    def _write_state(self, stage_i: int, epoch: int, opt, sched, ema: EMA, best: dict, gen: torch.Generator) -> None:
        state = {
            "stage": stage_i,
            "epoch": epoch,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "e0": {n: list(h.e0) for n, h in self.model.heads.items()},
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else {},
            "ema": ema.state(),
            "best": best,
            "generator": gen.get_state(),
            "history": self.history,
            "record": self.record,
        }
        atomic_write(self._state_path(), lambda p: torch.save(state, p))

    def _read_state(self) -> dict | None:
        path = self._state_path()
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: unreadable training state ({type(exc).__name__}: {exc})") from None
        old, new = _comparable(state.get("record")), _comparable(self.record)
        if old != new:
            differ = sorted(k for k in set(old or {}) | set(new) if (old or {}).get(k) != new.get(k))
            raise CheckpointError(
                f"{path}: was written by a run with different {', '.join(differ) or 'settings'}; use the same "
                "settings and data, a new output directory, or delete it to start over"
            )
        return state

    def _write_metrics(self) -> None:
        write_json(self.out_dir / "metrics.json", self.history)
        text = _rows_to_csv(self.history)
        atomic_write(self.out_dir / "metrics.csv", lambda p: p.write_text(text))

    # ----------------------------------------------------------------------- run
    def run(self, resume: bool = False) -> TrainResult:
        """Train; with ``resume`` continue from ``out_dir/state.pt`` when it exists."""
        from tqdm.auto import tqdm

        check_writable(self.out_dir, directory=True)  # a read-only place fails now, not after an epoch
        state = self._read_state() if resume else None
        if state is None and self._state_path().exists():
            raise FileExistsError(
                f"{self.out_dir} holds a previous run ({STATE_FILE}); pass resume=True (--resume) to continue it, "
                "or choose a new output directory"
            )
        if state is not None:
            self.model.load_state_dict(state["model"])
            for n, e0 in state["e0"].items():
                self.model.heads[n].set_e0(e0)
            self.history = list(state["history"])
        flags = {id(p): p.requires_grad for p in self.model.parameters()}
        stopped_early = False
        try:
            first = state["stage"] if state else 0
            for si in range(first, len(self.stages)):
                stopped_early = self._run_stage(si, state if state and si == first else None, tqdm)
        finally:
            for p in self.model.parameters():
                p.requires_grad_(flags.get(id(p), True))
        best_path, last_path = self.out_dir / BEST_FILE, self.out_dir / LAST_FILE
        return TrainResult(self.model, best_path, last_path, self.history, stopped_early)

    def _train_epoch(self, st: Stage, epoch: int, params: list[nn.Parameter], opt, ema: EMA,
                     gen: torch.Generator) -> float:
        """One pass over the training set in shuffled minibatches; the frame-weighted mean loss."""
        o, n = self.optim, len(self.train_set)
        self.model.train()
        order = torch.randperm(n, generator=gen).tolist()
        run_loss, run_n = 0.0, 0
        for b in range(0, n, o.batch_size):
            idx = order[b:b + o.batch_size]
            loss, _ = self._loss(self.train_set, idx, list(st.heads), train=True, gen=gen)
            if loss is None:
                continue
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"stage {st.name!r}, epoch {epoch}: non-finite training loss; lower the learning "
                    f"rate (now {opt.param_groups[0]['lr']:.3g}) or check the labels. Resume restarts "
                    "from the last completed epoch."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
            opt.step()
            ema.update()
            run_loss += float(loss.detach()) * len(idx)
            run_n += len(idx)
        return run_loss / max(run_n, 1)

    def _run_stage(self, si: int, state: dict | None, tqdm) -> bool:
        st, o = self.stages[si], self.optim
        params = list(st.parameters(self.model))
        if not params:
            raise ValueError(f"stage {st.name!r} has no trainable parameters")
        trainable = {id(p) for p in params}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        opt, sched = make_optimizer(params, o, st.lr or o.lr, st.epochs)
        ema = EMA(params, o.ema_decay)
        gen = torch.Generator().manual_seed(o.seed + 1000 * si)
        best = {"loss": math.inf, "epoch": -1, "state": None, "bad": 0}
        start = 0
        if state is not None and state["epoch"] >= 0:  # epoch -1: the stage had not started yet
            opt.load_state_dict(state["optimizer"])
            if sched is not None:
                sched.load_state_dict(state["scheduler"])
            ema.load(state["ema"])
            gen.set_state(state["generator"])
            best = state["best"]
            start = state["epoch"] + 1
        heads = list(st.heads)
        stopped = False
        bar = tqdm(range(start, st.epochs), desc=st.name, unit="epoch", disable=bar_disabled(o.progress),
                   initial=start, total=st.epochs)
        for epoch in bar:
            t0 = time.perf_counter()
            train_loss = self._train_epoch(st, epoch, params, opt, ema, gen)
            self.model.eval()
            with ema.applied():
                val = self._evaluate(self.val_set, heads) if self.val_set is not None and len(self.val_set) else None
                metric = val["loss"] if val else train_loss
                improved = metric < best["loss"]
                if improved:
                    best.update(loss=metric, epoch=epoch, bad=0,
                                state={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
                    self.save(self.model, self.out_dir / BEST_FILE)
                else:
                    best["bad"] += 1
                self.save(self.model, self.out_dir / LAST_FILE)
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(metric)
            elif sched is not None:
                sched.step()
            row = {"stage": st.name, "epoch": epoch, "lr": opt.param_groups[0]["lr"],
                   "train_loss": train_loss}
            if val:
                row.update({f"val_{k}": v for k, v in val.items()})
            row["time_s"] = time.perf_counter() - t0
            self.history.append(row)
            stop = o.patience is not None and best["bad"] >= o.patience
            done = stop or epoch == st.epochs - 1
            if done:
                self.model.load_state_dict(best["state"])  # the next stage starts from the best weights
            # a finished stage is recorded as "next stage, not started" (epoch -1)
            self._write_state(si + 1 if done else si, -1 if done else epoch, opt, sched, ema, best, gen)
            self._write_metrics()
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{metric:.4g}")
            for cb in self.callbacks:
                cb(row)
            if stop:
                stopped = True
                break
        bar.close()
        return stopped
