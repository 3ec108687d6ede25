"""How the TTT learning rate moves the prior loss: the label-free evidence behind TTTSettings' lr.

    python benchmarks/ttt_settings.py           # full -> benchmarks/results/ttt_settings.json
    python benchmarks/ttt_settings.py --quick   # smoke run

For each unseen molecule (naphthalene, toluene) and each prior the default model has a head for
(GFN-FF, and sGDML fitted on the first 50 frames as in the MD17 protocol), TTT is run from the
first evaluated frame (frames[50], as in ``unseen_molecules.py``) with SGD (momentum 0.9, weight
decay 1e-3) at several learning rates, up to ``--max-steps`` steps, stopping at the training-level
prior loss. Recorded: steps taken, why it stopped, the prior loss on the TTT samples before and
after, and the prior loss on **held-out** snapshots of a prior-driven 500 K MD from the same
frame (different seed, never used by TTT): does what TTT learnt carry to nearby structures?

Only prior labels are used. No reference label of a test molecule enters this benchmark except
the 50 frames the sGDML prior is fitted on, which the protocol allows. The reference-level force
error after TTT is measured in ``unseen_molecules.py``, not here, so that the lr is never chosen
on it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, write_json_atomic  # noqa: E402

TEST_MOLECULES = ("naphthalene", "toluene")
LRS = (1e-4, 1e-3, 3e-3, 1e-2)
SGDML_FRAMES = 50


def held_out_loss(model, atoms, prior, head: str):
    """A function model -> prior loss on 20 snapshots of a 400-step prior-driven 500 K MD (seed 123)."""
    from ase_adapt.graph import build_graph
    from ase_adapt.train.losses import make_targets, model_loss
    from ase_adapt.ttt import TTTSettings, _stats_target, label_samples, make_samples

    held = make_samples(atoms, TTTSettings(n_rattled=0, md_steps=400, md_stride=20, md_temperature=500.0,
                                           seed=123), prior)[1:]
    labels = label_samples(held, prior)
    _, weights = _stats_target(model, head)
    graph = build_graph(held, model.cutoff, dtype=model.dtype, device=model.device)
    targets = make_targets(labels, [len(a) for a in held], model.dtype, model.device)
    return lambda m: float(model_loss(m, graph, targets, head, weights)[0].detach())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=BENCH_DIR / "data")
    p.add_argument("--model", default="default")
    p.add_argument("--molecules", nargs="+", default=list(TEST_MOLECULES))
    p.add_argument("--lrs", nargs="+", type=float, default=list(LRS))
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results/...)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from ase_adapt import load_model
    from ase_adapt.priors import fit_sgdml_prior, make_prior
    from ase_adapt.train.data import read_frames
    from ase_adapt.ttt import TTTSettings, test_time_train

    model = load_model(args.model)
    n_sg = 8 if args.quick else SGDML_FRAMES
    max_steps = 5 if args.quick else args.max_steps
    lrs = args.lrs[:2] if args.quick else args.lrs
    results: dict = {"benchmark": "ttt_settings", "quick": args.quick, "model": args.model,
                     "machine": machine_info(), "max_steps": max_steps, "runs": []}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.molecules:
            path = args.data / f"{name}.xyz"
            if not path.is_file():
                raise SystemExit(f"{path} is missing: run `python benchmarks/data.py` first")
            frames = read_frames(path)
            atoms = frames[n_sg].copy()
            sg = fit_sgdml_prior(frames[:n_sg], n_train=n_sg, out_path=Path(tmp) / f"{name}_sgdml.npz")
            for spec in ("gfn-ff", f"sgdml:{sg}"):
                prior = make_prior(spec)
                head = f"prior:{prior.kind}"
                held = held_out_loss(model, atoms, prior, head)
                held_before = held(model)
                for lr in lrs:
                    m = copy.deepcopy(model)
                    t0 = time.perf_counter()
                    r = test_time_train(m, atoms, prior, TTTSettings(lr=lr, max_steps=max_steps))
                    run = {"molecule": name, "prior": prior.kind, "lr": lr, **r.to_dict(),
                           "held_out_before": held_before, "held_out_after": held(m),
                           "wall_seconds": time.perf_counter() - t0}
                    results["runs"].append(run)
                    rows.append([name, prior.kind, lr, r.steps, r.stop_reason[:22], r.loss_before, r.loss_after,
                                 r.target, held_before, run["held_out_after"], r.seconds])
                    print(f"  {name} {prior.kind} lr {lr:g}: {r.steps} steps, prior loss {r.loss_before:.3g} -> "
                          f"{r.loss_after:.3g} (held out {held_before:.3g} -> {run['held_out_after']:.3g})",
                          flush=True)
    out = write_json_atomic(args.json or RESULTS_DIR / ("ttt_settings_quick.json" if args.quick
                                                        else "ttt_settings.json"), results)
    print_table(["molecule", "prior", "lr", "steps", "stop", "loss before", "loss after", "target",
                 "held-out before", "held-out after", "TTT s"], rows, fmt=".3g")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
