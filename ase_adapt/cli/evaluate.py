"""``ase-adapt evaluate``: errors of a model, optionally adapted with a prior, on one molecule.

FRAMES is an extxyz (or .db) of one molecule with reference ``energy`` and ``forces``. The model
is adapted once, on the first evaluated frame, as in MD (``--rr``: radius refinement; ``--ttt``:
test-time training against the prior), then every frame is predicted with the adapted weights.
``--sgdml-prior-frames N`` fits an sGDML prior on the first N frames (their labels only) and
evaluates the rest. ``--ttt-on-frames`` is the seed paper's transductive protocol: TTT learns
from the evaluated frames themselves, labelled by the prior only (never by their reference labels),
instead of from prior-driven MD; use it where the structures to predict are known in advance.
Elements the model never saw are mapped to the nearest known element by
default (``--unknown-elements error`` refuses them), and the mapping is reported.

The JSON holds n_frames, force_mae_mev_per_A, energy_mae_mev_per_atom,
energy_mae_offset_corrected_mev_per_atom, prior_force_mae_mev_per_A (with a prior), shift (every
detector's score and verdict), radius (with --rr), ttt (steps, prior loss before/after, seconds),
unknown_elements and timings.

Several files (one molecule each) run as separate tasks, each adapting its own copy of the model;
they need --out FOLDER, where each file's result is kept in tasks/<name>.json (a re-run skips the
files done) and evaluate.json sums them up. --dask local runs them on a Dask LocalCluster of
--workers processes, --dask tcp://HOST:8786 on a running Dask scheduler.

examples:
  ase-adapt evaluate --model model.safetensors --data naphthalene.xyz --json base.json
  ase-adapt evaluate --model default --data mol1.xyz mol2.xyz mol3.xyz --prior gfn-ff --ttt --out eval --dask local
  ase-adapt evaluate --model model.safetensors --data naphthalene.xyz --prior gfn-ff --ttt --json ttt.json
  ase-adapt evaluate --model model.safetensors --data toluene.xyz --sgdml-prior-frames 50 --ttt --rr --json s.json
  ase-adapt evaluate --model default --data toluene.xyz --sgdml-prior-frames 50 --ttt --ttt-on-frames --json t.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace

from ..evaluate import EvaluateSettings
from ..adapt.ttt import TTTSettings
from ._common import PRIOR_HELP, add_dask_args, add_quiet


@dataclass(frozen=True)
class EvaluateCommand:
    model: str
    data: str
    json: str | None = None
    more_data: tuple[str, ...] = ()     # further files: a batch run into `out`
    out: str | None = None
    scheduler: str | None = None
    workers: int = 2
    progress: bool = True
    evaluation: EvaluateSettings = field(default_factory=EvaluateSettings)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="force/energy errors on one molecule, with or without adaptation",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="checkpoint path or built-in model name (default: default)")
    p.add_argument("--data", required=True, nargs="+", metavar="FILE",
                   help="frames of one molecule with reference energy and forces (several files: one task each)")
    p.add_argument("--prior", metavar="SPEC", help=PRIOR_HELP)
    p.add_argument("--ttt", action="store_true", help="adapt with test-time training against the prior")
    p.add_argument("--ttt-on-frames", action="store_true",
                   help="transductive TTT (the seed paper's protocol): learn from the evaluated frames, labelled by "
                        "the prior only, instead of prior-MD samples; their reference labels are never read")
    p.add_argument("--rr", action="store_true", help="adapt the graph radius (radius refinement)")
    p.add_argument("--sgdml-prior-frames", type=int, metavar="N",
                   help="fit an sGDML prior on the first N frames and evaluate the rest")
    p.add_argument("--prior-head", help="model head of the prior (default prior:<kind>)")
    p.add_argument("--unknown-elements", choices=["error", "nearest"], default="error",
                   help="elements the model never saw: refuse (default, as in every command) or map to the nearest "
                        "known one (reported in the results)")
    p.add_argument("--ttt-steps", type=int, help=f"maximum TTT steps (default {TTTSettings.max_steps})")
    p.add_argument("--ttt-lr", type=float, help=f"TTT learning rate (default {TTTSettings.lr:g})")
    p.add_argument("--ttt-blocks", type=int, metavar="K",
                   help="TTT adapts the embedding and the first K shared interaction blocks (default: all)")
    p.add_argument("--temperature", type=float, help="temperature (K) of the prior MD that samples TTT structures: "
                   f"that of the frames (default {TTTSettings.md_temperature:g})")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT (one data file)")
    p.add_argument("--out", metavar="FOLDER", help="results of several data files: FOLDER/tasks/*.json, FOLDER/evaluate.json")
    add_dask_args(p, "the files")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> EvaluateCommand:
    ttt = TTTSettings()
    if args.ttt_steps is not None:
        ttt = replace(ttt, max_steps=args.ttt_steps)
    if args.ttt_lr is not None:
        ttt = replace(ttt, lr=args.ttt_lr)
    if args.ttt_blocks is not None:
        ttt = replace(ttt, adapted_blocks=args.ttt_blocks)
    if args.temperature is not None:
        ttt = replace(ttt, md_temperature=args.temperature)
    ev = EvaluateSettings(prior=args.prior, ttt=args.ttt, rr=args.rr, sgdml_prior_frames=args.sgdml_prior_frames,
                          unknown_elements=args.unknown_elements, prior_head=args.prior_head, ttt_settings=ttt,
                          ttt_on_frames=args.ttt_on_frames)
    first, *more = args.data
    if (more or args.scheduler) and not args.out:
        raise ValueError("several data files (or --dask) need --out FOLDER for their results")
    if args.out and args.json:
        raise ValueError("--json writes one file's result; with --out the results go to FOLDER/evaluate.json")
    return EvaluateCommand(model=args.model, data=first, json=args.json, more_data=tuple(more), out=args.out,
                           scheduler=args.scheduler, workers=args.workers, progress=args.progress is not False,
                           evaluation=ev)


def _run_batch(settings: EvaluateCommand) -> dict:
    from ..workflows.batch import evaluate_files

    summary = evaluate_files(settings.model, [settings.data, *settings.more_data], settings.evaluation, settings.out,
                             scheduler=settings.scheduler, n_workers=settings.workers, progress=settings.progress)
    print(f"{'molecule':<24}{'frames':>7}{'force MAE':>11}{'prior':>9}  adaptation")
    for name, r in summary["molecules"].items():
        prior = r.get("prior_force_mae_mev_per_A")
        print(f"{name:<24}{r['n_frames']:>7}{r['force_mae_mev_per_A']:>11.1f}"
              f"{'' if prior is None else f'{prior:.1f}':>9}  {r['adaptation']}")
    print(f"force MAE in meV/Å; {summary['computed']} computed, {summary['reused']} from an earlier run; "
          f"results in {settings.out}")
    return summary


def run(settings: EvaluateCommand) -> dict:
    from .._io import write_json
    from ..checkpoint import load_model
    from ..evaluate import evaluate_frames
    from ..train.data import read_frames

    if settings.out:
        return _run_batch(settings)
    model = load_model(settings.model)
    result = evaluate_frames(model, read_frames(settings.data), settings.evaluation)
    result["model"], result["data"] = settings.model, settings.data
    if settings.json:
        write_json(settings.json, result)
    line = (f"{result['n_frames']} frames: force MAE {result['force_mae_mev_per_A']:.1f} meV/Å, "
            f"energy MAE {result['energy_mae_mev_per_atom']:.1f} meV/atom "
            f"({result['energy_mae_offset_corrected_mev_per_atom']:.1f} offset-corrected)")
    if "prior_force_mae_mev_per_A" in result:
        line += f"; prior force MAE {result['prior_force_mae_mev_per_A']:.1f} meV/Å"
    print(line)
    shifted = ", ".join(result["shift"].get("reasons", [])) if isinstance(result["shift"], dict) else ""
    print(f"shifted: {result['shifted']}" + (f" ({shifted})" if shifted else ""))
    if result["ttt"]:
        t = result["ttt"]
        print(f"TTT: {t['steps']} steps, prior loss {t['loss_before']:.4g} -> {t['loss_after']:.4g}, "
              f"{t['seconds']:.1f} s ({t['stop_reason']})")
    adaptation = result["adaptation"]
    print(f"adaptation: {adaptation['kind']} ({adaptation['action']})")
    if adaptation.get("prior_error"):
        print(f"warning: the prior failed, so the model was not adapted: {adaptation['prior_error']}",
              file=sys.stderr)
    if settings.json:
        print(f"wrote {settings.json}")
    return result
