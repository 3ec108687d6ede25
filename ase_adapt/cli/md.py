"""``ase-adapt md``: molecular dynamics of one structure, with or without adaptation.

STRUCTURE is an extxyz (or .db) file; its last frame starts the run. With --prior the model runs
inside an AdaptiveCalculator (shift detection, and TTT against the prior when a detector fires);
without it, a plain MLFFCalculator. Outputs go to --out: trajectory.extxyz, md.log (with the
adaptation events interleaved), restart.json and summary.json. A killed run continues with
--resume (same settings; --steps may be raised). Settings may come from a YAML file (--config)
with the same keys as the long options (ensemble, steps, temperature, timestep, ...); options
given on the command line override it.

examples:
  ase-adapt md molecule.xyz --steps 2000 --temperature 500 --out md1
  ase-adapt md molecule.xyz --prior gfn-ff --ensemble bussi --out md2 --quiet
  ase-adapt md molecule.xyz --out md1 --steps 4000 --resume
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..workflows.dynamics import Ensemble, MDSettings
from ._common import add_quiet, add_workflow_args, settings_values, workflow_calculator

# option -> MDSettings field (the YAML keys are the option names without dashes, or the field names)
_OPTIONS = {"ensemble": "ensemble", "steps": "steps", "temperature": "temperature_K", "timestep": "timestep_fs",
            "friction": "friction_per_fs", "taut": "taut_fs", "seed": "seed", "traj_every": "traj_every",
            "log_every": "log_every", "checkpoint_every": "checkpoint_every", "minimize": "minimize_fmax"}


@dataclass(frozen=True)
class MDCommand:
    structure: str
    model: str = "default"
    prior: str | None = None
    out: str = "md-output"
    resume: bool = False
    unknown_elements: str = "error"
    md: MDSettings = field(default_factory=MDSettings)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("md", help="molecular dynamics (NVT Langevin/Bussi, NVE) with restart files",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = MDSettings()
    p.add_argument("structure", help="extxyz or .db file; its last frame starts the run")
    add_workflow_args(p, "md-output")
    p.add_argument("--ensemble", choices=[e.value for e in Ensemble], help=f"default {d.ensemble.value}")
    p.add_argument("--steps", type=int, help=f"total steps (default {d.steps})")
    p.add_argument("--temperature", type=float, help=f"K (default {d.temperature_K:g})")
    p.add_argument("--timestep", type=float, help=f"fs (default {d.timestep_fs:g})")
    p.add_argument("--friction", type=float, help=f"Langevin friction, 1/fs (default {d.friction_per_fs:g})")
    p.add_argument("--taut", type=float, help=f"Bussi time constant, fs (default {d.taut_fs:g})")
    p.add_argument("--seed", type=int, help=f"default {d.seed}")
    p.add_argument("--traj-every", type=int, help=f"steps between trajectory frames (default {d.traj_every})")
    p.add_argument("--log-every", type=int, help=f"steps between log lines (default {d.log_every})")
    p.add_argument("--checkpoint-every", type=int, help=f"steps between restart files (default {d.checkpoint_every})")
    p.add_argument("--minimize", type=float, metavar="FMAX", help="relax with BFGS to FMAX eV/Å before a fresh run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its restart file")
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> MDCommand:
    values = settings_values(args, MDSettings, _OPTIONS)
    return MDCommand(structure=args.structure, model=args.model, prior=args.prior, out=args.out, resume=args.resume,
                     unknown_elements=args.unknown_elements, md=MDSettings(**values))


def run(settings: MDCommand) -> dict:
    from ..train.data import read_frames
    from ..workflows.dynamics import run_md

    atoms = read_frames(settings.structure, -1)[0]
    calc = workflow_calculator(settings.model, settings.prior, settings.unknown_elements)
    summary = run_md(atoms, calc, settings.md, settings.out, resume=settings.resume)
    state = "completed" if summary["completed"] else f"stopped: {summary['stopped_because']}"
    print(f"MD {settings.md.ensemble.value}: {summary['steps_done']} steps, {state}, "
          f"{summary['ms_per_step']:.1f} ms/step; outputs in {settings.out}")
    return summary
