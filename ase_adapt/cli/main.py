"""Entry point of the ``ase-adapt`` console script."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import demo, e0, evaluate, finetune, info, label, stats, train

COMMANDS = {"demo": demo, "info": info, "e0": e0, "label": label, "train": train, "finetune": finetune,
            "stats": stats, "evaluate": evaluate}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="ase-adapt",
        description="Distribution-shift-aware machine-learning force fields for ASE.",
    )
    parser.add_argument("--version", action="version", version=f"ase-adapt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, build the subcommand's settings and run it. Returns the exit code."""
    args = build_parser().parse_args(argv)
    module = COMMANDS[args.command]
    try:
        module.run(module.settings_from_args(args))
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as exc:
        print(f"ase-adapt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
