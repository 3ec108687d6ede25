"""``ase-adapt info``: describe a checkpoint (architecture, heads, E0s, training statistics)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ase.data import chemical_symbols


@dataclass(frozen=True)
class InfoSettings:
    model: str
    json: str | None = None  # write the summary as JSON to this path ("-": standard output)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model checkpoint",
                       description="Print a checkpoint's architecture, heads, E0s and training statistics.")
    p.add_argument("--model", required=True, help="checkpoint path (.safetensors or .pt) or built-in model name")
    p.add_argument("--json", metavar="OUT", default=None,
                   help="write the summary as JSON to OUT ('-': print it instead of the text)")


def settings_from_args(args: argparse.Namespace) -> InfoSettings:
    return InfoSettings(model=args.model, json=args.json)


def describe(model) -> dict:
    """A JSON-able summary of ``model``."""
    stats = model.training_stats or {}
    return {
        "config": model.config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "heads": {
            name: {chemical_symbols[z]: e for z, e in zip(model.elements, h.e0)}
            for name, h in model.heads.items()
        },
        "training_stats": sorted(stats),
    }


def run(settings: InfoSettings) -> dict:
    from ..checkpoint import load_model

    summary = describe(load_model(settings.model))
    if settings.json == "-":
        print(json.dumps(summary, indent=2))
        return summary
    if settings.json:
        from .._io import write_json

        write_json(settings.json, summary)
    cfg = summary["config"]
    elements = [chemical_symbols[z] for z in cfg.get("elements", [])]
    print(f"elements   {' '.join(elements) if len(elements) <= 20 else f'{len(elements)} elements'}")
    # every model has a cutoff; the architecture keys depend on its kind (built-in, sevennet, mace)
    arch = [f"{key} {cfg[key]}" for key in ("kind", "channels", "l_max", "num_layers", "num_blocks", "dtype")
            if key in cfg]
    print(f"cutoff     {cfg.get('cutoff')} Å   " + "   ".join(arch) + f"   parameters {summary['parameters']}")
    for name, e0 in summary["heads"].items():
        print(f"head {name:<14} E0 " + "  ".join(f"{s}={v:.4f}" for s, v in e0.items()))
    print(f"statistics {', '.join(summary['training_stats']) or 'none'}")
    if settings.json:
        print(f"wrote {settings.json}")
    return summary
