"""``ase-adapt train``: train a new TTT-ready model (main, joint or pretrain-freeze-finetune).

DATA holds frames with reference labels (``energy``, ``forces``) and, for the TTT-ready modes,
prior labels (``prior_energy``, ``prior_forces``; add them with ``ase-adapt label``). Frames
marked ``config_type=IsolatedAtom`` give the E0s. OUT receives ``best.safetensors`` (with the
training statistics), ``last.safetensors``, ``state.pt`` and ``metrics.csv``/``metrics.json``;
``--resume`` continues a killed run from its last completed epoch.

Training settings come from ``--config`` (a YAML file or a preset: train-joint, train-main,
train-pretrain-freeze-finetune); options given on the command line override it. The
architecture comes from ``--arch`` (a preset: model-default, model-tiny, or a YAML file).

examples:
  ase-adapt train --data train.xyz --out run1
  ase-adapt train --data train.xyz --out run1 --config train-pretrain-freeze-finetune --epochs 50
  ase-adapt train --data train.xyz --val val.xyz --arch model-tiny --mode main --out run2
  ase-adapt train --data train.xyz --out run1 --resume
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ase.data import chemical_symbols

from ..train.modes import TrainMode, TrainSettings
from ._common import add_optim_args, add_quiet, summarize, training_overrides


@dataclass(frozen=True)
class TrainCommand:
    data: str
    out: str
    val: str | None = None
    arch: str = "model-default"  # architecture preset or YAML file
    elements: tuple[str, ...] | None = None  # None: the elements of the data
    dtype: str | None = None
    training: TrainSettings = field(default_factory=TrainSettings)
    resume: bool = False


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a new (TTT-ready) model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training frames (extxyz or ASE .db)")
    p.add_argument("--out", required=True, help="output directory (checkpoints, state, metrics)")
    p.add_argument("--val", help="validation frames (default: a seeded split of --data)")
    p.add_argument("--arch", default="model-default",
                   help="architecture preset (model-default, model-tiny) or YAML file (default: model-default)")
    p.add_argument("--elements", nargs="+", metavar="EL",
                   help="elements the model covers (default: those in the data)")
    p.add_argument("--dtype", choices=["float32", "float64"], help="model dtype (default: the preset's)")
    p.add_argument("--config", help="training settings: YAML file or preset (default: train-joint)")
    p.add_argument("--mode", choices=[m.value for m in TrainMode], help="training mode (overrides --config)")
    p.add_argument("--prior-head", action="append", dest="prior_heads", metavar="HEAD",
                   help="a prior head to train, 'prior' (labels prior_energy/prior_forces) or 'prior:<kind>' "
                        "(labels prior_<kind>_energy/_forces); repeat for several (default: prior)")
    p.add_argument("--prior-weight", type=float, help="λ of joint training, L_main + λ·L_prior")
    p.add_argument("--pretrain-epochs", type=int, help="epochs of the prior pretraining stage")
    p.add_argument("--no-stats", action="store_true", help="do not compute training statistics at the end")
    add_optim_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> TrainCommand:
    overrides = training_overrides(args, ("mode", "prior_weight", "pretrain_epochs", "prior_heads"))
    training = TrainSettings.from_yaml(args.config or "train-joint", **overrides)
    return TrainCommand(
        data=args.data, out=args.out, val=args.val, arch=args.arch,
        elements=tuple(args.elements) if args.elements else None, dtype=args.dtype,
        training=training, resume=args.resume,
    )


def run(settings: TrainCommand) -> dict:
    from ..models.build import ModelConfig, build_model
    from ..train.data import read_frames
    from ..train.modes import train_model

    frames = read_frames(settings.data)
    val = read_frames(settings.val) if settings.val else None
    config = ModelConfig.from_yaml(settings.arch)
    present = sorted({int(z) for a in frames for z in a.numbers})
    elements = list(settings.elements) if settings.elements else [chemical_symbols[z] for z in present]
    heads = (settings.training.main_head,) if settings.training.mode is TrainMode.MAIN else \
        (settings.training.main_head, *settings.training.prior_heads)
    overrides = {"elements": elements, "heads": heads}
    if settings.dtype:
        overrides["dtype"] = settings.dtype
    model = build_model(config, **overrides)
    result = train_model(model, frames, settings.training, settings.out, val_frames=val, resume=settings.resume)
    print(f"ase-adapt train: {summarize(result.history)}")
    print(f"best model: {result.best_path}")
    return {"best": str(result.best_path), "last": str(result.last_path), "epochs": len(result.history)}
