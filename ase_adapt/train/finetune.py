"""Fine-tuning an existing checkpoint on new reference data.

Strategies (DESIGN.md §Fine-tuning; presets ``finetune-<strategy>.yaml``):

- ``naive``: representation and main head all trainable;
- ``freeze``: ``readout`` trains the main head only; ``early`` freezes the embedding and the
  first interaction block and trains the rest;
- ``lora``: low-rank adapters on the representation's scalar and equivariant linear layers
  (irrep-preserving, B = 0 at start) plus the main head; merged into the weights at the end;
- ``multihead``: multihead replay. A ``replay`` head starts as a copy of the original main head
  (its own E0s) and keeps learning replay frames labelled with their original labels or with
  pseudolabels computed by the starting model, while the main head learns the new data;
- ``mft``: multi-task fine-tuning, main head on the new data plus the inherited prior head on
  the new data's prior labels, jointly (limits representation collapse, keeps TTT working);
- ``replay-lora``: multihead replay with LoRA adapters instead of full representation updates.

Before training, the main head's E0s are made consistent with the new reference level
(model-aware re-estimation by default), which matters more than the choice of strategy.
"""

from __future__ import annotations

import copy
import enum
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from ase import Atoms

from .. import _keys as K
from .._settings import load_settings, settings_to_dict
from ..checkpoint import save_model
from ..errors import DataError
from ..graph import build_graph
from .dataset import DATA, REPLAY, LabelledFrames, Task
from .e0 import E0Warning, apply_e0, average_e0, reestimate_e0
from .lora import inject_lora, lora_parameters, merge_lora
from .modes import LabelKeys, data_fingerprint, finalize, prior_task_keys, split_for_training
from .trainer import OptimSettings, Stage, Trainer, TrainResult

__all__ = ["Strategy", "FreezeMode", "ReplayLabels", "E0Update", "FinetuneSettings", "finetune_model",
           "pseudolabel"]

PSEUDO_ENERGY = "pseudo_energy"
PSEUDO_FORCES = "pseudo_forces"


class Strategy(str, enum.Enum):
    NAIVE = "naive"
    FREEZE = "freeze"
    LORA = "lora"
    MULTIHEAD = "multihead"
    MFT = "mft"
    REPLAY_LORA = "replay-lora"


class FreezeMode(str, enum.Enum):
    READOUT = "readout"  # train the main head only
    EARLY = "early"      # freeze embedding + first interaction block


class ReplayLabels(str, enum.Enum):
    ORIGINAL = "original"
    PSEUDO = "pseudo"


class E0Update(str, enum.Enum):
    REESTIMATE = "reestimate"
    AVERAGE = "average"
    KEEP = "keep"


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything ``ase-adapt finetune`` needs besides the model and the data."""

    strategy: Strategy = Strategy.NAIVE
    optim: OptimSettings = field(default_factory=lambda: OptimSettings(lr=1e-3, epochs=50))
    freeze: FreezeMode = FreezeMode.EARLY
    lora_rank: int = 4
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = ("embedding", "interactions")
    replay_head: str = "replay"
    replay_labels: ReplayLabels = ReplayLabels.PSEUDO
    replay_weight: float = 1.0
    prior_weight: float = 1.0
    main_head: str = K.MAIN_HEAD
    prior_heads: tuple[str, ...] = (K.PRIOR_HEAD,)
    reference: LabelKeys = field(default_factory=LabelKeys)
    prior: LabelKeys = field(default_factory=lambda: LabelKeys(K.PRIOR_ENERGY, K.PRIOR_FORCES, K.PRIOR_STRESS))
    replay: LabelKeys = field(default_factory=LabelKeys)
    e0: E0Update = E0Update.REESTIMATE
    compute_stats: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "prior_heads", tuple(self.prior_heads))
        for name, cls in (("strategy", Strategy), ("freeze", FreezeMode), ("replay_labels", ReplayLabels),
                          ("e0", E0Update)):
            object.__setattr__(self, name, cls(getattr(self, name)))
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")

    @classmethod
    def from_yaml(cls, source: str | Path | None = None, **overrides) -> "FinetuneSettings":
        return load_settings(cls, source, **overrides)

    @property
    def uses_replay(self) -> bool:
        return self.strategy in (Strategy.MULTIHEAD, Strategy.REPLAY_LORA)

    @property
    def uses_lora(self) -> bool:
        return self.strategy in (Strategy.LORA, Strategy.REPLAY_LORA)


def pseudolabel(model: torch.nn.Module, frames: Sequence[Atoms], head: str = K.MAIN_HEAD,
                batch_size: int = 16) -> list[Atoms]:
    """Copies of ``frames`` labelled by ``head`` (``pseudo_energy``/``pseudo_forces``)."""
    out = []
    for start in range(0, len(frames), batch_size):
        chunk = [a.copy() for a in frames[start:start + batch_size]]
        graph = build_graph(chunk, model.cutoff, dtype=model.dtype, device=model.device)
        pred = model(graph, head, compute_forces=True, compute_stress=False)
        forces = pred[K.FORCES].detach().cpu().double().numpy()
        offset = 0
        for a, e in zip(chunk, pred[K.ENERGY].tolist()):
            a.calc = None
            a.info[PSEUDO_ENERGY] = float(e)
            a.arrays[PSEUDO_FORCES] = forces[offset:offset + len(a)].copy()
            offset += len(a)
        out.extend(chunk)
    return out


def _update_e0(model, head: str, frames: Sequence[Atoms], energy_key: str | None, how: E0Update) -> None:
    if how is E0Update.KEEP or energy_key is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", E0Warning)  # elements absent from the new data keep their E0
        if how is E0Update.REESTIMATE:
            e0 = reestimate_e0(model, frames, head, energy_key, progress=False)
        else:
            e0 = dict(zip(model.elements, model.heads[head].e0))
            e0.update(average_e0(frames, energy_key=energy_key))
    apply_e0(model, e0, head)


def _save_merged(model: torch.nn.Module, path: Path) -> Path:
    merged = copy.deepcopy(model)
    merge_lora(merged)
    return save_model(merged, path)


def finetune_model(
    model: torch.nn.Module,
    frames: Sequence[Atoms],
    settings: FinetuneSettings | None = None,
    out_dir: str | Path = "finetuning",
    *,
    replay_frames: Sequence[Atoms] | None = None,
    val_frames: Sequence[Atoms] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict], None]] = (),
) -> TrainResult:
    """Fine-tune ``model`` (in place) on ``frames`` with ``settings.strategy``.

    ``replay_frames`` are required by the replay strategies: frames from the original training
    distribution (with original labels under ``settings.replay`` keys, or unlabelled when
    ``replay_labels="pseudo"``). Returns the best model (LoRA merged) and its checkpoint paths.
    """
    s = settings or FinetuneSettings()
    o = s.optim
    main_h = s.main_head
    if main_h not in model.heads:
        raise ValueError(f"model has no head {main_h!r}; heads: {list(model.heads)}")
    train, val, _ = split_for_training(frames, val_frames, o.val_fraction, o.seed)
    w = o.loss_weights()
    tasks = [Task(main_h, s.reference.energy, s.reference.forces, s.reference.stress, w)]
    groups = [DATA] * len(train)
    replay_train: list[Atoms] = []
    if s.uses_replay:
        if not replay_frames:
            raise DataError(f"strategy {s.strategy.value!r} needs replay frames (--replay FILE)")
        if s.replay_head in model.heads:
            raise ValueError(f"model already has a head {s.replay_head!r}; choose another replay_head")
        replay_train = list(replay_frames)
        if s.replay_labels is ReplayLabels.PSEUDO:
            replay_train = pseudolabel(model, replay_train, main_h)
            rkeys = LabelKeys(PSEUDO_ENERGY, PSEUDO_FORCES, None)
        else:
            rkeys = s.replay
        model.add_head(s.replay_head, copy.deepcopy(model.heads[main_h]))  # keeps the original E0s
        tasks.append(Task(s.replay_head, rkeys.energy, rkeys.forces, rkeys.stress, w,
                          weight=s.replay_weight, group=REPLAY))
    if s.strategy is Strategy.MFT:
        for h in s.prior_heads:
            if h not in model.heads:
                raise ValueError(f"strategy 'mft' needs the model's prior head {h!r}; heads: {list(model.heads)}")
            k = prior_task_keys(h, s.prior)
            tasks.append(Task(h, k.energy, k.forces, k.stress, w, weight=s.prior_weight))
    _update_e0(model, main_h, train, s.reference.energy, s.e0)

    heads = [t.head for t in tasks]
    head_params = lambda m: [p for h in heads for p in m.heads[h].parameters()]  # noqa: E731
    if s.uses_lora:
        inject_lora(model, s.lora_rank, s.lora_alpha, s.lora_targets, seed=o.seed)
        params = lambda m: lora_parameters(m) + head_params(m)  # noqa: E731
    elif s.strategy is Strategy.FREEZE and s.freeze is FreezeMode.READOUT:
        params = lambda m: list(m.heads[main_h].parameters())  # noqa: E731
    elif s.strategy is Strategy.FREEZE:
        def params(m):
            frozen = {id(p) for p in m.parameters_before(1)}
            return [p for p in m.representation_parameters() if id(p) not in frozen] + list(m.heads[main_h].parameters())
    else:
        params = lambda m: m.representation_parameters() + head_params(m)  # noqa: E731

    train_set = LabelledFrames(train + replay_train, tasks, groups + [REPLAY] * len(replay_train), name="training set")
    val_set = LabelledFrames(val, tasks[:1] + [t for t in tasks[1:] if t.group == DATA], name="validation set") if val else None
    record = {"command": "finetune", "settings": settings_to_dict(s), "data": data_fingerprint(train),
              "replay": data_fingerprint(replay_train), "val": data_fingerprint(val)}
    stages = [Stage(s.strategy.value, heads, params, o.epochs)]
    save = _save_merged if s.uses_lora else save_model
    result = Trainer(model, train_set, val_set, stages, o, out_dir, record=record, save=save,
                     callbacks=callbacks).run(resume)
    if s.uses_lora:
        merge_lora(result.model)
    info = {"finetune": s.strategy.value, "epochs_run": len(result.history), "n_train": len(train),
            "n_replay": len(replay_train), "n_val": len(val), "stopped_early": result.stopped_early}
    return finalize(result, train, s.compute_stats, info, s.reference, s.prior, w)
