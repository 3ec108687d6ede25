"""``ase-adapt finetune``: fine-tune an existing checkpoint on new reference data.

Strategies: naive, freeze (``--freeze readout|early``), lora (``--lora-rank``), multihead
(replay head + ``--replay`` frames, pseudolabelled by the starting model unless
``--replay-labels original``), mft (main + inherited prior head; DATA needs prior labels),
replay-lora. Each has a preset ``finetune-<strategy>`` with its defaults (e.g. multihead:
lr 1e-4, EMA 0.9999); ``--config`` takes a preset or YAML file instead, and command-line
options override it. Before training, the main head's E0s are re-estimated against the new
reference energies (``--e0 reestimate``, the default), which matters more than the strategy.

OUT receives ``best.safetensors`` (LoRA merged, with training statistics), ``last.safetensors``,
``state.pt`` and ``metrics.csv``/``metrics.json``; ``--resume`` continues a killed run.

examples:
  ase-adapt finetune --model base.safetensors --data new.xyz --out ft --strategy naive
  ase-adapt finetune --model base.safetensors --data new.xyz --out ft --strategy multihead --replay old.xyz
  ase-adapt finetune --model base.safetensors --data new.xyz --out ft --strategy lora --lora-rank 8
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..train.finetune import E0Update, FinetuneSettings, FreezeMode, ReplayLabels, Strategy
from ._common import add_optim_args, add_quiet, summarize, training_overrides


@dataclass(frozen=True)
class FinetuneCommand:
    model: str
    data: str
    out: str
    val: str | None = None
    replay: str | None = None
    finetuning: FinetuneSettings = field(default_factory=FinetuneSettings)
    resume: bool = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a checkpoint on new data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="starting checkpoint (path or built-in name)")
    p.add_argument("--data", required=True, help="new frames with reference labels (extxyz or ASE .db)")
    p.add_argument("--out", required=True, help="output directory (checkpoints, state, metrics)")
    p.add_argument("--val", help="validation frames (default: a seeded split of --data)")
    p.add_argument("--replay", help="replay frames from the original distribution (multihead, replay-lora)")
    p.add_argument("--strategy", choices=[s.value for s in Strategy],
                   help="fine-tuning strategy (default: naive; selects the preset finetune-<strategy>)")
    p.add_argument("--config", help="settings YAML file or preset (default: finetune-<strategy>)")
    p.add_argument("--freeze", choices=[m.value for m in FreezeMode], help="what freeze keeps fixed")
    p.add_argument("--lora-rank", type=int, help="LoRA rank")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha (default: the rank)")
    p.add_argument("--replay-labels", choices=[m.value for m in ReplayLabels], help="replay labels")
    p.add_argument("--replay-weight", type=float, help="loss weight of the replay head")
    p.add_argument("--prior-weight", type=float, help="loss weight of the prior head (mft)")
    p.add_argument("--prior-head", action="append", dest="prior_heads", metavar="HEAD",
                   help="prior head(s) trained alongside by mft (default: prior); repeat for several")
    p.add_argument("--e0", choices=[m.value for m in E0Update], help="how the main head's E0s follow the data")
    p.add_argument("--no-stats", action="store_true", help="do not compute training statistics at the end")
    add_optim_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> FinetuneCommand:
    overrides = training_overrides(args, ("strategy", "freeze", "lora_rank", "lora_alpha", "replay_labels",
                                          "replay_weight", "prior_weight", "e0", "prior_heads"))
    source = args.config or f"finetune-{args.strategy or 'naive'}"
    finetuning = FinetuneSettings.from_yaml(source, **overrides)
    return FinetuneCommand(model=args.model, data=args.data, out=args.out, val=args.val, replay=args.replay,
                           finetuning=finetuning, resume=args.resume)


def run(settings: FinetuneCommand) -> dict:
    from ..checkpoint import load_model
    from ..train.data import read_frames
    from ..train.finetune import finetune_model

    model = load_model(settings.model, device=settings.finetuning.optim.device)
    frames = read_frames(settings.data)
    val = read_frames(settings.val) if settings.val else None
    replay = read_frames(settings.replay) if settings.replay else None
    result = finetune_model(model, frames, settings.finetuning, settings.out, replay_frames=replay,
                            val_frames=val, resume=settings.resume)
    print(f"ase-adapt finetune ({settings.finetuning.strategy.value}): {summarize(result.history)}")
    print(f"best model: {result.best_path}")
    return {"best": str(result.best_path), "last": str(result.last_path), "epochs": len(result.history)}
