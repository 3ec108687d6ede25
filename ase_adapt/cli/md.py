"""``ase-adapt md``: molecular dynamics of one structure, with or without adaptation.

STRUCTURE is an extxyz (or .db) file; its last frame starts the run. With --prior the model runs
inside an AdaptiveCalculator (shift detection, and TTT against the prior when a detector fires);
without it, a plain MLFFCalculator. Outputs go to --out: trajectory.extxyz, md.log (with the
adaptation events interleaved), restart.json and summary.json. A killed run continues with
--resume: the settings, model and prior you leave out are the run's own, and one you give that
differs from the run's is refused, naming it; --steps may be raised to run longer. A run that
stopped (an instability) is never resumed or rewritten. Settings may come from a YAML file
(--config) with the same keys as the long options (ensemble, steps, temperature, timestep, ...);
options given on the command line override it.

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
    model: str | None = None             # None: "default", or the resumed run's
    prior: str | None = None             # None: no prior, or the resumed run's
    out: str = "md-output"
    resume: bool = False
    unknown_elements: str | None = None  # None: "error", or the resumed run's
    md: MDSettings = field(default_factory=MDSettings)
    md_given: tuple[str, ...] = ()       # the MDSettings fields the user set (flags or --config)


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
                     unknown_elements=args.unknown_elements, md=MDSettings(**values),
                     md_given=tuple(sorted(k for k in values if k != "progress")))


def resumed(settings: MDCommand) -> MDCommand:
    """``settings`` completed from the run in ``--out``: what the user left out is the run's own."""
    from dataclasses import replace

    from ..workflows.dynamics import read_restart

    record = read_restart(settings.out)
    command = record.get("command") or {}
    if "target_steps" not in record and "steps" not in settings.md_given:
        raise ValueError(f"{settings.out}: an older restart file that does not record the run's length; give --steps")
    run_settings = {**record["settings"], "steps": record.get("target_steps", settings.md.steps)}
    given = {k: getattr(settings.md, k) for k in (*settings.md_given, "progress")}
    md = MDSettings(**{**run_settings, **given})
    return replace(settings, md=md,
                   model=settings.model if settings.model is not None else command.get("model"),
                   prior=settings.prior if settings.prior is not None else command.get("prior"),
                   unknown_elements=(settings.unknown_elements if settings.unknown_elements is not None
                                     else command.get("unknown_elements")))


def run(settings: MDCommand) -> dict:
    from ..train.data import read_frames
    from ..workflows.dynamics import run_md

    atoms = read_frames(settings.structure, -1)[0]
    if settings.resume:
        settings = resumed(settings)
    model, unknown = settings.model or "default", settings.unknown_elements or "error"
    calc = workflow_calculator(model, settings.prior, unknown)
    command = {"model": model, "prior": settings.prior, "unknown_elements": unknown}
    summary = run_md(atoms, calc, settings.md, settings.out, resume=settings.resume, command=command)
    state = "completed" if summary.get("completed") else f"stopped: {summary.get('stopped_because')}"
    speed = f", {summary['ms_per_step']:.1f} ms/step" if "ms_per_step" in summary else ""
    print(f"MD {settings.md.ensemble.value}: {summary['steps_done']} steps, {state}{speed}; outputs in {settings.out}")
    if summary.get("temperature_warning"):
        print(f"warning: {summary['temperature_warning']}")
    return summary
