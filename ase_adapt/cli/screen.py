"""``ase-adapt screen``: random structure search for holes in a model's repulsive wall.

Random crystals (PyXtal) of each composition are relaxed, then rattled and relaxed again
--cycles times; a structure is flagged when its atoms overlap, its volume collapsed, or its
energy fell far below its composition's median (docs/workflows.md lists the four criteria).
Compositions come from --compositions (NaCl Na2Cl ...) or are built from --elements (10 by
default). --structures FILE screens your own periodic structures instead of random crystals.

Every structure is one task with its own result file in OUT/tasks/: a killed run keeps what it
finished, and running the same command again skips those. --dask local runs the tasks on a
Dask LocalCluster of --workers processes; --dask tcp://HOST:8786 on a running Dask
scheduler (see docs/workflows.md for SLURM/PBS and Kubernetes). Serial and Dask runs give
identical results.

Outputs in --out: screen.csv and screen.json (one row per structure with its flags, and the
flagged fraction per composition), screen.png (heat map) and flagged.extxyz.

examples:
  ase-adapt screen --model my.safetensors --elements Na Cl --out rss
  ase-adapt screen --model my.safetensors --compositions NaCl Na2Cl NaCl3 --per-composition 20 --dask local
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..workflows.screen import CellFilter, ScreenSettings
from ..workflows.relax import Optimizer
from ._common import add_dask_args, add_quiet, add_workflow_args, settings_values

_OPTIONS = {"compositions": "compositions", "elements": "elements", "n_compositions": "n_compositions",
            "per_composition": "structures", "cycles": "cycles", "rattle": "rattle_std", "optimizer": "optimizer",
            "cell_filter": "cell_filter", "fmax": "fmax", "steps": "steps", "max_atoms": "max_atoms",
            "volume_factor": "volume_factor", "seed": "seed"}


@dataclass(frozen=True)
class ScreenCommand:
    model: str = "default"
    prior: str | None = None
    out: str = "screen-output"
    structures: str | None = None
    scheduler: str | None = None
    workers: int = 2
    unknown_elements: str = "error"
    screen: ScreenSettings = field(default_factory=ScreenSettings)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("screen", help="random structure search for holes in the potential energy surface",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ScreenSettings()
    add_workflow_args(p, "screen-output")
    p.add_argument("--compositions", nargs="+", metavar="FORMULA", help="stoichiometries of 2-3 elements, e.g. NaCl Na2Cl")
    p.add_argument("--elements", nargs="+", metavar="SYMBOL", help="build --n-compositions stoichiometries of these")
    p.add_argument("--n-compositions", type=int, help=f"with --elements (default {d.n_compositions})")
    p.add_argument("--per-composition", type=int, help=f"random crystals per composition (default {d.structures})")
    p.add_argument("--structures", metavar="FILE", help="screen the periodic structures in FILE instead of random crystals")
    p.add_argument("--cycles", type=int, help=f"rattle-relax cycles after the first relaxation (default {d.cycles})")
    p.add_argument("--rattle", type=float, help=f"rattle amplitude, Å (default {d.rattle_std:g})")
    p.add_argument("--optimizer", choices=[o.value for o in Optimizer], help=f"default {d.optimizer.value}")
    p.add_argument("--cell-filter", choices=[c.value for c in CellFilter], help=f"default {d.cell_filter.value}")
    p.add_argument("--fmax", type=float, help=f"eV/Å (default {d.fmax:g})")
    p.add_argument("--steps", type=int, help=f"maximum steps per relaxation (default {d.steps})")
    p.add_argument("--max-atoms", type=int, help=f"atoms per random cell at most (default {d.max_atoms})")
    p.add_argument("--volume-factor", type=float, help=f"PyXtal volume factor (default {d.volume_factor:g})")
    p.add_argument("--seed", type=int, help=f"default {d.seed}")
    add_dask_args(p, "the tasks")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> ScreenCommand:
    values = settings_values(args, ScreenSettings, _OPTIONS)
    if not (args.structures or values.get("compositions") or values.get("elements")):
        raise ValueError("give --compositions, --elements or --structures")
    if args.structures and (values.get("compositions") or values.get("elements")):
        raise ValueError("--structures screens the structures in its file; --compositions and --elements make random "
                         "crystals instead: give one or the other")
    return ScreenCommand(model=args.model or "default", prior=args.prior, out=args.out, structures=args.structures,
                         scheduler=args.scheduler, workers=args.workers, unknown_elements=args.unknown_elements or "error",
                         screen=ScreenSettings(**values))


def run(settings: ScreenCommand) -> dict:
    from ..train.data import read_frames
    from ..workflows.screen import run_screen
    from ..workflows.screen_report import table

    starts = read_frames(settings.structures) if settings.structures else None
    summary = run_screen(settings.model, settings.screen, settings.out, prior=settings.prior,
                         unknown_elements=settings.unknown_elements, scheduler=settings.scheduler,
                         n_workers=settings.workers, starts=starts)
    print(table(summary))
    print(f"{summary['n_structures']} structures ({summary['computed']} computed, {summary['reused']} from an earlier "
          f"run): {summary['flagged_fraction']:.1%} flagged, {summary['failed_fraction']:.1%} failed; "
          f"outputs in {settings.out}")
    return summary
