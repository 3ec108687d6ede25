"""``ase-adapt neb``: the minimum-energy path and barrier between two structures.

INITIAL and FINAL are extxyz (or .db) files of the same atoms in the same order (their last
frames are used). The endpoints are relaxed, the path interpolated (IDPP) and optimised with a
climbing image. With --prior the model is adapted once, on the initial state, and every image
uses that adapted model frozen, so that all images share one potential (docs/workflows.md). Outputs go to --out: initial_path.extxyz, neb.extxyz, neb.log,
profile.png and summary.json with the forward and backward barriers.

examples:
  ase-adapt neb start.xyz end.xyz --images 7 --fmax 0.05 --out neb1
  ase-adapt neb start.xyz end.xyz --prior gfn-ff --no-climb --out neb2
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..workflows.neb import NEBSettings
from ._common import add_quiet, add_workflow_args, settings_values


@dataclass(frozen=True)
class NEBCommand:
    initial: str
    final: str
    model: str = "default"
    prior: str | None = None
    out: str = "neb-output"
    unknown_elements: str = "error"
    neb: NEBSettings = field(default_factory=NEBSettings)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("neb", help="nudged elastic band: minimum-energy path and barrier",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = NEBSettings()
    p.add_argument("initial", help="extxyz or .db file of the initial state")
    p.add_argument("final", help="extxyz or .db file of the final state (same atoms, same order)")
    add_workflow_args(p, "neb-output")
    p.add_argument("--images", type=int, help=f"intermediate images (default {d.n_images})")
    p.add_argument("--fmax", type=float, help=f"eV/Å (default {d.fmax:g})")
    p.add_argument("--steps", type=int, help=f"maximum optimiser steps (default {d.steps})")
    p.add_argument("--no-climb", action="store_true", help="no climbing image")
    p.add_argument("--no-relax-endpoints", action="store_true", help="use the endpoints as given")
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> NEBCommand:
    values = settings_values(args, NEBSettings, {"images": "n_images", "fmax": "fmax", "steps": "steps"})
    if args.no_climb:
        values["climb"] = False
    if args.no_relax_endpoints:
        values["relax_endpoints"] = False
    neb = NEBSettings(**values)
    return NEBCommand(initial=args.initial, final=args.final, model=args.model or "default", prior=args.prior,
                      out=args.out, unknown_elements=args.unknown_elements or "error", neb=neb)


def run(settings: NEBCommand) -> dict:
    from .. import AdaptiveCalculator, MLFFCalculator, load_model
    from ..train.data import read_frames
    from ..workflows.neb import run_neb

    initial, final = read_frames(settings.initial, -1)[0], read_frames(settings.final, -1)[0]
    model = load_model(settings.model)
    if settings.prior:  # adapt once, on the initial state; every image then sees that one potential
        adaptive = AdaptiveCalculator(model, settings.prior, unknown_elements=settings.unknown_elements)
        report = adaptive.check(initial)
        event = adaptive.events[-1]
        print(f"adaptation on the initial state: {event['kind']} ({event['action']}); shifted: {report.shifted}")
        model = adaptive.adapted_model()

    def calculator():  # one per image, all on the same (frozen) model
        return MLFFCalculator(model, unknown_elements=settings.unknown_elements)

    summary = run_neb(initial, final, calculator, settings.neb, settings.out)
    state = "converged" if summary["converged"] else "NOT converged"
    print(f"NEB {state} in {summary['steps']} steps: barrier {summary['barrier_forward_eV']:.3f} eV forward, "
          f"{summary['barrier_backward_eV']:.3f} eV backward; outputs in {settings.out}")
    return summary
