"""TTT on the validation molecules: where every TTT and guard choice is made.

    python benchmarks/data.py --molecules pyridine furan acetone styrene indole methyl_acetate \\
        fluorobenzene trimethyl_phosphate                       # the frames (once, ~2 min)
    python benchmarks/validation_ttt.py                         # -> benchmarks/results/validation_ttt.json
    python benchmarks/validation_ttt.py --model M --lr 1e-2 --tag lr1e-2 --workers 2

Role (``../shared/molecules.md``): validation. These molecules' reference labels choose TTT
settings and guard thresholds; they never train anything. For each molecule (500 K GFN2-xTB
frames from ``benchmarks/data.py``) the model is evaluated with ``ase_adapt.evaluate`` on
frames[50::every] (frames[:50] are the sGDML prior's 50 labels, the MD17 protocol): the base
model, and TTT against each prior (GFN-FF, GFN1-xTB, LJ, sGDML-50) at the run temperature
(500 K), with the guard. Reported per row: force MAE base / TTT / prior alone (meV/Å), the
held-out prior loss, steps, TTT wall time (sampling MD and labelling included), and the guard's
verdict. A prior the model has no head for is skipped with a note. Results are written after
every row; a rerun with the same ``--tag`` skips the rows already done.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, write_json_atomic  # noqa: E402

VALIDATION = ("pyridine", "furan", "acetone", "styrene", "indole", "methyl_acetate", "fluorobenzene",
              "trimethyl_phosphate")
PRIORS = ("gfn-ff", "sgdml", "gfn1-xtb", "lj")
SGDML_FRAMES = 50


def _ttt_settings(args):
    from ase_adapt.adapt import GuardSettings
    from ase_adapt.adapt.ttt import TTTSettings

    # --record-guard: the guard's signals are measured and reported but never act, so that its
    # thresholds can be chosen from what TTT would have done
    guard = GuardSettings(1e9, 1e9, 1e9) if args.record_guard else GuardSettings()
    return TTTSettings(lr=args.lr, max_steps=args.max_steps, md_temperature=args.temperature,
                       md_steps=args.md_steps, adapted_blocks=args.adapted_blocks, guard=guard)


def run_task(task: dict) -> dict:
    """One (molecule, prior) row, in a worker process."""
    import torch

    torch.set_num_threads(1)
    import ase_adapt
    from ase_adapt.evaluate import EvaluateSettings, evaluate_frames
    from ase_adapt.train.data import read_frames

    args = argparse.Namespace(**task["args"])
    model = ase_adapt.load_model(args.model)
    frames = read_frames(Path(args.data) / f"{task['molecule']}.xyz")
    test = frames[SGDML_FRAMES::args.every]
    prior = task["prior"]
    t0 = time.perf_counter()
    if prior is None:
        r = evaluate_frames(model, test, EvaluateSettings(unknown_elements="nearest"))
    else:
        head = "prior:sgdml" if prior == "sgdml" else f"prior:{prior}"
        if head not in model.heads:
            return {**task, "skipped": f"the model has no head {head!r}"}
        kw = dict(ttt=True, ttt_settings=_ttt_settings(args), ttt_on_frames=args.ttt_on_frames)
        if prior == "sgdml":
            r = evaluate_frames(model, frames[:SGDML_FRAMES] + test, EvaluateSettings(sgdml_prior_frames=SGDML_FRAMES, unknown_elements="nearest", **kw))
        else:
            r = evaluate_frames(model, test, EvaluateSettings(prior=prior, unknown_elements="nearest", **kw))
    r["seconds"] = time.perf_counter() - t0
    return {**task, "result": r}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--data", default=str(BENCH_DIR / "data"))
    p.add_argument("--molecules", nargs="+", default=list(VALIDATION))
    p.add_argument("--priors", nargs="+", default=list(PRIORS), choices=PRIORS)
    p.add_argument("--every", type=int, default=5, help="evaluate every k-th frame after the first 50")
    p.add_argument("--lr", type=float, default=None, help="default: TTTSettings' default")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--md-steps", type=int, default=None)
    p.add_argument("--adapted-blocks", type=int, default=None, help="interaction blocks TTT adapts")
    p.add_argument("--temperature", type=float, default=500.0)
    p.add_argument("--ttt-on-frames", action="store_true", help="transductive TTT on the evaluated frames")
    p.add_argument("--record-guard", action="store_true", help="measure the guard's signals, never roll back")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tag", default="default")
    p.add_argument("--json", type=Path)
    p.add_argument("--report", type=Path, metavar="FILE", help="print the table of a results file and stop")
    args = p.parse_args(argv)
    if args.report:
        return report(args.report)
    from ase_adapt.adapt.ttt import TTTSettings

    d = TTTSettings()
    args.lr = d.lr if args.lr is None else args.lr
    args.max_steps = d.max_steps if args.max_steps is None else args.max_steps
    args.md_steps = d.md_steps if args.md_steps is None else args.md_steps
    args.adapted_blocks = d.adapted_blocks if args.adapted_blocks is None else args.adapted_blocks
    out = args.json or RESULTS_DIR / f"validation_ttt_{args.tag}.json"
    import json

    done = json.loads(out.read_text())["rows"] if out.is_file() else []
    have = {(r["molecule"], r["prior"]) for r in done}
    spec = {k: v for k, v in vars(args).items() if k != "json"}
    tasks = [{"molecule": m, "prior": pr, "args": spec} for m in args.molecules for pr in [None, *args.priors]
             if (m, pr) not in have]
    rows = list(done)

    def save() -> None:
        write_json_atomic(out, {"benchmark": "validation_ttt", "role": "validation", "settings": spec,
                                "machine": machine_info(), "rows": rows})

    import multiprocessing as mp

    with mp.get_context("spawn").Pool(args.workers) as pool:
        for row in pool.imap_unordered(run_task, tasks):
            rows.append(row)
            save()
            r = row.get("result")
            label = f"{row['molecule']:<20} {row['prior'] or 'base':<9}"
            print(f"{label} " + (row.get("skipped") or f"force MAE {r['force_mae_mev_per_A']:.1f} meV/Å, "
                                 f"{r['seconds']:.0f} s"), flush=True)
    print_table(*table(rows), fmt=".3g")
    print(f"wrote {out}")
    return 0


def report(path: Path) -> int:
    """Print the table of a results file (``--report FILE``)."""
    import json

    print_table(*table(json.loads(path.read_text())["rows"]), fmt=".3g")
    return 0


def _guarded(res: dict, base: float) -> float:
    """The force MAE a user gets with the default guard: TTT's if it passes, else the base model's.

    From a ``--record-guard`` run (signals measured, never acted on) this shows what any guard
    threshold would do; from a normal run it is what happened.
    """
    from ase_adapt.adapt import GuardSettings

    t = res.get("ttt") or {}
    g = t.get("guard") or {}
    if t.get("rolled_back") or not g:
        return base if t.get("rolled_back") else res["force_mae_mev_per_A"]
    d = GuardSettings()
    ok = (g["prior_loss_ratio"] <= d.max_prior_loss_ratio and g["prior_distance_ratio"] <= d.max_prior_distance_ratio
          and g["move_ratio"] <= d.max_move_ratio)
    return res["force_mae_mev_per_A"] if ok else base


def table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """One line per (molecule, prior): base, TTT, guarded and prior-alone force MAE, and the guard's signals."""
    base = {r["molecule"]: r["result"]["force_mae_mev_per_A"] for r in rows if r["prior"] is None and "result" in r}
    out = []
    for r in sorted((r for r in rows if r["prior"] and "result" in r), key=lambda r: (r["molecule"], r["prior"])):
        res, t = r["result"], r["result"].get("ttt") or {}
        b = base.get(r["molecule"])
        g = t.get("guard") or {}
        guarded = _guarded(res, b) if b else None
        out.append([r["molecule"], r["prior"], b, res["force_mae_mev_per_A"], guarded,
                    res.get("prior_force_mae_mev_per_A"), (guarded / b) if b else None, t.get("steps"),
                    g.get("prior_loss_ratio"), g.get("prior_distance_ratio"), g.get("move_ratio"),
                    res["timings"].get("check_seconds")])
    return ["molecule", "prior", "base", "TTT", "guarded", "prior alone", "guarded/base", "steps", "loss r",
            "dist r", "move r", "TTT s"], out


if __name__ == "__main__":
    sys.exit(main())
