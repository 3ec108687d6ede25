"""Options shared by the training subcommands (``train``, ``finetune``)."""

from __future__ import annotations

import argparse
from typing import Any

# long option -> OptimSettings field (None: same name with '-' -> '_')
_OPTIM_OPTIONS: list[tuple[str, type, str]] = [
    ("--epochs", int, "maximum epochs (per stage)"),
    ("--batch-size", int, "frames per optimiser step"),
    ("--lr", float, "AdamW learning rate"),
    ("--weight-decay", float, "AdamW weight decay"),
    ("--ema-decay", float, "EMA decay of the weights (0 disables the EMA)"),
    ("--grad-clip", float, "gradient-norm clip (0 disables clipping)"),
    ("--scheduler", str, "learning-rate schedule: plateau, cosine or none"),
    ("--patience", int, "early stopping: epochs without validation improvement (0 disables)"),
    ("--val-fraction", float, "fraction of the frames held out for validation (without --val)"),
    ("--seed", int, "seed of the split and the shuffling"),
    ("--loss", str, "loss shape: mse or huber"),
    ("--energy-weight", float, "weight of the per-atom energy term"),
    ("--forces-weight", float, "weight of the force term"),
    ("--stress-weight", float, "weight of the stress term"),
    ("--device", str, "torch device, e.g. cpu or cuda"),
]
_ZERO_MEANS_NONE = {"ema_decay", "grad_clip", "patience"}


def add_optim_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimisation (override the --config settings)")
    choices = {"--scheduler": ["plateau", "cosine", "none"], "--loss": ["mse", "huber"]}
    for flag, tp, help_ in _OPTIM_OPTIONS:
        group.add_argument(flag, type=tp, default=None, help=help_, choices=choices.get(flag))


def optim_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The optimisation options given on the command line, as an ``optim`` override dict."""
    out: dict[str, Any] = {}
    for flag, _, _ in _OPTIM_OPTIONS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not None:
            out[name] = None if (name in _ZERO_MEANS_NONE and value == 0) else value
    if getattr(args, "progress", None) is False:
        out["progress"] = False
    return out


def training_overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The training-settings options given on the command line (``names``, plus ``--no-stats`` and the
    optimisation options), as overrides of the ``--config`` file or preset."""
    overrides: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.no_stats:
        overrides["compute_stats"] = False
    optim = optim_overrides(args)
    if optim:
        overrides["optim"] = optim
    return overrides


def summarize(history: list[dict]) -> str:
    """The last epoch's validation (or training) figures, one line."""
    if not history:
        return "no epochs run"
    last = history[-1]
    keys = [k for k in last if k.startswith("val_") and k.endswith("_mev")]
    parts = [f"{k[4:-4].replace('_', ' ')} {last[k]:.1f}" for k in keys]
    return f"{len(history)} epochs; last epoch: " + (", ".join(parts) + " (meV, meV/Å)" if parts else
                                                    f"train loss {last['train_loss']:.4g}")


PRIOR_HELP = ("prior calculator: gfn2-xtb, gfn1-xtb, gfn-ff, lj, emt or sgdml:PATH "
              "(see docs/priors.md)")


def prior_calculator(spec: str):
    """The prior named by ``spec`` (:func:`ase_adapt.priors.make_prior`), errors as ValueError."""
    from ..priors import make_prior

    try:
        return make_prior(spec)
    except ImportError as exc:  # an optional backend is missing: a user-fixable error
        raise ValueError(f"prior {spec!r}: {exc}") from None


QUIET_HELP = "no progress bars (the same in every command; results, warnings and errors are still printed)"


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``, with one meaning in every command: ``progress=False`` (None: not given)."""
    parser.add_argument("--quiet", dest="progress", action="store_false", default=None, help=QUIET_HELP)


# ------------------------------------------------------------------ the workflow commands (md, relax, neb)
def add_workflow_args(parser: argparse.ArgumentParser, default_out: str, unknown_elements: bool = True) -> None:
    """--model, --prior, --out, --config (and --unknown-elements), the same in every workflow command."""
    parser.add_argument("--model", help="checkpoint or built-in name (default: default; on --resume: the run's)")
    parser.add_argument("--prior", metavar="SPEC", help="adapt with this prior (AdaptiveCalculator); " + PRIOR_HELP)
    parser.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    parser.add_argument("--config", metavar="YAML", help="settings from a YAML file with the options' names as "
                        "keys; options given on the command line override it")
    if unknown_elements:
        parser.add_argument("--unknown-elements", choices=["error", "nearest"],
                            help="elements the model never saw: refuse (default) or map to the nearest known one")


def config_values(path: str | None, cls: type, aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings of ``cls`` in a YAML file (keys: option names, dashes or underscores, or field names)."""
    if not path:
        return {}
    from dataclasses import fields

    from .._settings import load_yaml_mapping

    aliases, valid, values = aliases or {}, {f.name for f in fields(cls)}, {}
    for key, value in load_yaml_mapping(path).items():
        key = str(key).replace("-", "_")
        name = aliases.get(key, key)
        if name not in valid:
            raise ValueError(f"{path}: unknown setting {key!r}; valid: {sorted(set(aliases) | valid)}")
        values[name] = value
    return values


def settings_values(args: argparse.Namespace, cls: type, options: dict[str, str]) -> dict[str, Any]:
    """The settings of ``cls``: the ``--config`` file's, then the options given (``options``: option
    dest -> field name, the YAML keys being either), and ``--quiet`` as ``progress=False``."""
    values = config_values(args.config, cls, {o: f for o, f in options.items() if o != f})
    for option, name in options.items():
        given = getattr(args, option)
        if given is not None:
            values[name] = given
    if getattr(args, "progress", None) is False:
        values["progress"] = False
    return values


class _Renamed(argparse.Action):
    """An option that moved: refuse it, naming the new one."""

    def __init__(self, option_strings, dest, new: str, why: str, **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.new, self.why = new, why

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.new} ({self.why})")


def add_dask_args(parser: argparse.ArgumentParser, what: str) -> None:
    """--dask ADDRESS and --workers: one name for the Dask scheduler in every command that has one
    (``--scheduler`` is the learning-rate schedule of train, finetune and prepare)."""
    parser.add_argument("--dask", dest="scheduler", metavar="ADDRESS",
                        help=f"run {what} on Dask: 'local' (a LocalCluster of --workers processes) or a scheduler "
                             "address such as tcp://HOST:8786")
    parser.add_argument("--scheduler", dest="_renamed_scheduler", action=_Renamed, new="--dask",
                        why="--scheduler is the learning-rate schedule in train, finetune and prepare")


def workflow_calculator(model: Any, prior: str | None, unknown_elements: str = "error"):
    """An AdaptiveCalculator with ``prior``, else a plain MLFFCalculator, on ``model``."""
    from .. import AdaptiveCalculator, MLFFCalculator

    if prior:
        return AdaptiveCalculator(model, prior, unknown_elements=unknown_elements)
    return MLFFCalculator(model, unknown_elements=unknown_elements)
