"""``ase-adapt prepare``: make a foreign foundation model (SevenNet) TTT-ready.

MODEL is a foreign model spec (``sevennet:7net-0``, ``sevennet:7net-mf-0@PBE``, a SevenNet
checkpoint ``sevennet:PATH``) or a checkpoint written by an earlier ``prepare`` (to add a prior).
STRUCTURES are extxyz or .db files. For each ``--prior`` a head ``prior:<kind>`` is attached and
trained on the structures labelled by that prior; by default the representation stays frozen, so
the main head is exactly the original model. ``--train-representation`` adds a joint stage that
also trains the representation, with pseudolabel replay of the main head (the unmodified model's
energies and forces on the same structures). The training statistics the detectors need are
computed on the structures. OUT is one checkpoint (written atomically) that ``load_model`` and
the workflow commands read offline. Settings may come from a YAML file (``--config``) with the
fields of ``PrepareSettings`` (optim, train_representation, representation_lr, joint_epochs,
replay_weight, prior_weight, head, head_hidden, compute_stats); options given here override it.

examples:
  ase-adapt prepare sevennet:7net-0 cu-cells.xyz --prior emt --out 7net-0-emt.safetensors
  ase-adapt prepare sevennet:7net-0 molecules.xyz --prior gfn-ff --prior lj --train-representation \\
      --epochs 30 --labels labels/ --out 7net-0-ttt.safetensors
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..train.prepare import HEAD_TYPES, PrepareSettings
from ._common import PRIOR_HELP, add_optim_args, add_quiet, prior_calculator, training_overrides


@dataclass(frozen=True)
class PrepareCommand:
    model: str
    structures: tuple[str, ...]
    priors: tuple[str, ...]
    out: str
    labels: str | None = None  # folder that keeps (and reuses) the prior-labelled structures
    prepare: PrepareSettings = field(default_factory=PrepareSettings)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="make a foreign model (SevenNet) TTT-ready: prior heads, statistics",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="foreign model spec (sevennet:7net-0) or a prepared checkpoint")
    p.add_argument("structures", nargs="+", help="structures to prepare on (extxyz or .db files)")
    p.add_argument("--prior", action="append", dest="priors", metavar="SPEC", required=True,
                   help=PRIOR_HELP + "; repeat for several prior heads")
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--labels", metavar="DIR", help="keep the prior-labelled structures here and reuse them")
    p.add_argument("--train-representation", action="store_true", default=None,
                   help="also train the representation, with pseudolabel replay of the main head")
    p.add_argument("--representation-lr", type=float, help="learning rate of that joint stage")
    p.add_argument("--joint-epochs", type=int, help="epochs of the joint stage (default: --epochs)")
    p.add_argument("--replay-weight", type=float, help="weight of the main head's replay loss")
    p.add_argument("--head", choices=list(HEAD_TYPES), help="new prior heads: a readout MLP (mlp, default) "
                   "or a copy of the main head (copy-main)")
    p.add_argument("--no-stats", action="store_true", help="do not compute training statistics")
    p.add_argument("--config", metavar="YAML", help="prepare settings from a YAML file")
    add_optim_args(p)
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> PrepareCommand:
    overrides = training_overrides(args, ("train_representation", "representation_lr", "joint_epochs",
                                          "replay_weight", "head"))
    settings = PrepareSettings.from_yaml(args.config, **overrides)
    for spec in args.priors:
        prior_calculator(spec)  # an unknown or unavailable prior: one line, before any work
    return PrepareCommand(model=args.model, structures=tuple(args.structures), priors=tuple(args.priors),
                          out=args.out, labels=args.labels, prepare=settings)


def run(settings: PrepareCommand) -> dict:
    from ..train.prepare import prepare_model

    priors = [prior_calculator(spec) for spec in settings.priors]
    result = prepare_model(settings.model, list(settings.structures), priors, settings.prepare, settings.out,
                           labels_dir=settings.labels)
    print(f"ase-adapt prepare: {result.summary()}; written to {settings.out}")
    return result.report
