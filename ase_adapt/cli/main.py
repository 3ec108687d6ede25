"""Entry point of the ``ase-adapt`` console script."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import demo, e0, evaluate, finetune, info, label, md, neb, prepare, relax, screen, stats, train

COMMANDS = {"demo": demo, "info": info, "e0": e0, "label": label, "train": train, "finetune": finetune,
            "stats": stats, "evaluate": evaluate, "md": md, "relax": relax, "neb": neb, "screen": screen,
            "prepare": prepare}


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


# Settings fields that name outputs: checked for writability before any work.
OUTPUT_FILES = ("json",)
OUTPUT_DIRS = {"train": ("out",), "finetune": ("out",), "demo": ("out",), "md": ("out",), "relax": ("out",), "neb": ("out",),
               "screen": ("out",), "evaluate": ("out",)}  # other commands' out is a file


def check_outputs(command: str, settings: object) -> None:
    """Every output path of ``settings`` can be written (a probe file), before the command runs."""
    from .._io import check_writable

    dirs = OUTPUT_DIRS.get(command, ())
    for name in ("out", *OUTPUT_FILES):
        value = getattr(settings, name, None)
        if value == "-" and not (command == "info" and name == "json"):
            raise ValueError(f"--{name} -: standard output is an output of `info --json` only; give a file path")
        if value and value != "-":
            check_writable(value, directory=name in dirs)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, (ValueError, OSError, RuntimeError, ImportError)) else f"{type(exc).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, build the subcommand's settings and run it. Returns the exit code.

    Bad input of any kind (a setting, a file that is missing, unreadable or of an unknown format,
    an unwritable output, a failed prior) ends with one line on stderr and exit code 2; Ctrl-C
    with one line and 130. Outputs are checked for writability before the work starts.
    """
    from ase.io.formats import UnknownFileTypeError

    args = build_parser().parse_args(argv)
    module = COMMANDS[args.command]
    try:
        settings = module.settings_from_args(args)
        check_outputs(args.command, settings)
        module.run(settings)
    except KeyboardInterrupt:
        print(f"ase-adapt {args.command}: interrupted; finished outputs are kept (a rerun resumes "
              "where the command supports it)", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, RuntimeError, ImportError, UnknownFileTypeError, StopIteration) as exc:
        print(f"ase-adapt {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
