"""``ase-adapt relax``: relax the positions (and, for 3D-periodic cells, the cell) of one structure.

STRUCTURE is an extxyz (or .db) file; its last frame is relaxed. With --prior the model runs inside
an AdaptiveCalculator. Outputs go to --out: relax.extxyz, relax.log, final.extxyz and
summary.json. Settings may come from a YAML file (--config) with the same keys as the options.

examples:
  ase-adapt relax molecule.xyz --fmax 0.02 --out relax1
  ase-adapt relax crystal.xyz --optimizer lbfgs --cell fixed --out relax2
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..workflows.relax import CellMode, Optimizer, RelaxSettings
from ._common import add_quiet, add_workflow_args, settings_values, workflow_calculator

_OPTIONS = ("optimizer", "fmax", "steps", "cell", "traj_every")


@dataclass(frozen=True)
class RelaxCommand:
    structure: str
    model: str = "default"
    prior: str | None = None
    out: str = "relax-output"
    unknown_elements: str = "error"
    relax: RelaxSettings = field(default_factory=RelaxSettings)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("relax", help="geometry optimisation (positions, and the cell of 3D-periodic systems)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = RelaxSettings()
    p.add_argument("structure", help="extxyz or .db file; its last frame is relaxed")
    add_workflow_args(p, "relax-output")
    p.add_argument("--optimizer", choices=[o.value for o in Optimizer], help=f"default {d.optimizer.value}")
    p.add_argument("--fmax", type=float, help=f"eV/Å (default {d.fmax:g})")
    p.add_argument("--steps", type=int, help=f"maximum steps (default {d.steps})")
    p.add_argument("--cell", choices=[c.value for c in CellMode],
                   help="auto: relax the cell of 3D-periodic systems too (default); fixed: positions only")
    p.add_argument("--traj-every", type=int, help=f"steps between trajectory frames (default {d.traj_every})")
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> RelaxCommand:
    values = settings_values(args, RelaxSettings, {k: k for k in _OPTIONS})
    return RelaxCommand(structure=args.structure, model=args.model or "default", prior=args.prior, out=args.out,
                        unknown_elements=args.unknown_elements or "error", relax=RelaxSettings(**values))


def run(settings: RelaxCommand) -> dict:
    from ..train.data import read_frames
    from ..workflows.relax import run_relax

    atoms = read_frames(settings.structure, -1)[0]
    calc = workflow_calculator(settings.model, settings.prior, settings.unknown_elements)
    summary = run_relax(atoms, calc, settings.relax, settings.out)
    state = "converged" if summary["converged"] else "NOT converged"
    print(f"relax {settings.relax.optimizer.value}: {state} in {summary['steps']} steps, fmax "
          f"{summary['fmax_final']:.4f} eV/Å, E {summary['energy_initial_eV']:.4f} -> {summary['energy_final_eV']:.4f} eV"
          + (f", volume {summary['volume_change']:+.2%}" if summary["volume_change"] is not None else "")
          + f"; outputs in {settings.out}")
    if summary.get("cell_note"):
        print(f"note: {summary['cell_note']}")
    return summary
