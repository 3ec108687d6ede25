"""The headline experiment in miniature: the default model on molecules it never saw.

    python benchmarks/unseen_molecules.py              # full -> benchmarks/results/unseen_molecules.json
    python benchmarks/unseen_molecules.py --quick      # smoke run (a few frames and MD steps)

Protocol (DESIGN.md §Benchmark protocol). Reference level GFN2-xTB (standing in for DFT); data
from ``benchmarks/data.py`` (500 K GFN2-xTB Langevin MD). Model: the embedded default model
(``load_model("default")``), trained on aspirin, benzene and uracil only. For naphthalene and
toluene, every configuration is evaluated with ``ase_adapt.evaluate.evaluate_frames`` (adapt once
on the first evaluated frame, then predict every frame) on the same frames: frames[50:], since
the sGDML prior is fitted on frames[:50] (the MD17 protocol: 50 reference labels of the new
molecule; no other configuration sees any label). Configurations:

  base; +RR; +TTT with each prior (GFN-FF, GFN1-xTB when the model has its head, sGDML-50, LJ);
  +RR+TTT (GFN-FF); each prior alone; and the seed paper's transductive mode (``*_frames``: TTT
  on the evaluated frames, labelled by the prior only) for GFN-FF and sGDML-50. TTT uses the default settings (chosen on the validation
  molecules, ``validation_ttt.py``) with the sampling MD at the run temperature.

Then NVT 500 K stability (Fu et al.: time until the largest bond-length deviation from the
starting structure exceeds 0.5 Å, capped at ``--md-ps``) for the base model and TTT with GFN-FF
and sGDML-50, and h(r) MAE of each against a GFN2-xTB MD of the same length. TTT wall times
are recorded. Nothing here trains on test labels except the sGDML prior's 50 frames.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, write_json_atomic  # noqa: E402

TEST_MOLECULES = ("naphthalene", "toluene")
SGDML_FRAMES = 50


def ttt_settings(quick: bool, temperature: float):
    from ase_adapt.adapt.ttt import TTTSettings

    return TTTSettings(max_steps=10, md_steps=40, md_temperature=temperature) if quick \
        else TTTSettings(md_temperature=temperature)


def evaluate_configs(model, frames: list, quick: bool, temperature: float) -> dict:
    from ase_adapt.evaluate import EvaluateSettings, evaluate_frames

    n_sg = 8 if quick else SGDML_FRAMES
    ttt = ttt_settings(quick, temperature)
    test = frames[n_sg:]
    configs = {
        "base": (test, EvaluateSettings(unknown_elements="nearest")),
        "rr": (test, EvaluateSettings(rr=True)),
        "ttt_gfn-ff": (test, EvaluateSettings(prior="gfn-ff", ttt=True, ttt_settings=ttt)),
        "rr_ttt_gfn-ff": (test, EvaluateSettings(prior="gfn-ff", ttt=True, rr=True, ttt_settings=ttt)),
        "ttt_lj": (test, EvaluateSettings(prior="lj", ttt=True, ttt_settings=ttt)),
        "ttt_sgdml": (frames, EvaluateSettings(sgdml_prior_frames=n_sg, ttt=True, ttt_settings=ttt)),
        # the seed paper's transductive protocol: TTT on the evaluated frames, labelled by the prior only
        "ttt_gfn-ff_frames": (test, EvaluateSettings(prior="gfn-ff", ttt=True, ttt_settings=ttt, ttt_on_frames=True)),
        "ttt_sgdml_frames": (frames, EvaluateSettings(sgdml_prior_frames=n_sg, ttt=True, ttt_settings=ttt,
                                                      ttt_on_frames=True)),
    }
    if "prior:gfn1-xtb" in model.heads:
        configs["ttt_gfn1-xtb"] = (test, EvaluateSettings(prior="gfn1-xtb", ttt=True, ttt_settings=ttt))
    out = {}
    for name, (fr, settings) in configs.items():
        t0 = time.perf_counter()
        r = evaluate_frames(model, fr, settings)
        r["seconds"] = time.perf_counter() - t0
        out[name] = r
        ttt_s = f", TTT {r['ttt']['steps']} steps {r['ttt']['seconds']:.1f} s" if r.get("ttt") else ""
        print(f"    {name:<18} force MAE {r['force_mae_mev_per_A']:7.1f} meV/Å{ttt_s}", flush=True)
    return out


def md_runs(model, atoms, sgdml_path: Path, steps: int, seed: int, temperature: float, quick: bool) -> dict:
    import copy

    from ase_adapt import AdaptiveCalculator, MLFFCalculator
    from ase_adapt.priors import make_prior
    from ase_adapt.workflows.md import distance_histogram, hr_mae, run_nvt

    calcs = {
        "reference": make_prior("gfn2-xtb"),
        "base": MLFFCalculator(copy.deepcopy(model)),
        "ttt_gfn-ff": AdaptiveCalculator(model, "gfn-ff", adapt_when="always", ttt=ttt_settings(quick, temperature)),
        "ttt_sgdml": AdaptiveCalculator(model, f"sgdml:{sgdml_path}", adapt_when="always",
                                        ttt=ttt_settings(quick, temperature)),
    }
    runs = {name: run_nvt(atoms, calc, steps, temperature_K=temperature, seed=seed,
                          stop_when_unstable=name != "reference", desc=f"NVT {name} {temperature:g} K")
            for name, calc in calcs.items()}
    _, h_ref = distance_histogram(runs["reference"].positions)
    out = {}
    for name, r in runs.items():
        entry = r.summary()
        if name != "reference":
            entry["hr_mae"] = hr_mae(distance_histogram(r.positions)[1], h_ref)
        out[name] = entry
        print(f"    MD {name:<11} stable {r.stable_ps:6.2f} ps of {r.steps * r.timestep_fs / 1000:.2f} ps"
              + (f", h(r) MAE {entry['hr_mae']:.4f}" if "hr_mae" in entry else ""), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=BENCH_DIR / "data")
    p.add_argument("--model", default="default")
    p.add_argument("--molecules", nargs="+", default=list(TEST_MOLECULES))
    p.add_argument("--md-ps", type=float, default=10.0, help="NVT length per run in ps (default 10)")
    p.add_argument("--no-md", action="store_true")
    p.add_argument("--temperature", type=float, default=500.0, help="run temperature of TTT sampling (K)")
    p.add_argument("--md-temperatures", type=float, nargs="+", default=[500.0, 800.0],
                   help="NVT temperatures for the stability runs (K)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results/...)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from ase_adapt import load_model
    from ase_adapt.priors import fit_sgdml_prior
    from ase_adapt.train.data import read_frames

    model = load_model(args.model)
    steps = 40 if args.quick else int(round(args.md_ps * 1000 / 0.5))
    results: dict = {"benchmark": "unseen_molecules", "quick": args.quick, "model": args.model,
                     "machine": machine_info(), "md_steps": steps, "molecules": {}}
    rows = []
    for name in args.molecules:
        path = args.data / f"{name}.xyz"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run `python benchmarks/data.py` first")
        frames = read_frames(path)
        if args.quick:
            frames = frames[:14]
        print(f"{name}: {len(frames)} frames", flush=True)
        ev = evaluate_configs(model, frames, args.quick, args.temperature)
        entry = {"n_frames": len(frames), "evaluate": ev}
        if not args.no_md:
            with tempfile.TemporaryDirectory() as tmp:
                sg = fit_sgdml_prior(frames[: 8 if args.quick else SGDML_FRAMES],
                                     n_train=8 if args.quick else SGDML_FRAMES, out_path=Path(tmp) / "sgdml.npz")
                entry["md"] = {f"{t:g}K": md_runs(model, frames[0].copy(), sg, steps, args.seed, t, args.quick)
                               for t in args.md_temperatures}
        results["molecules"][name] = entry
        base = ev["base"]["force_mae_mev_per_A"]
        for cfg, r in ev.items():
            rows.append([name, cfg, r["force_mae_mev_per_A"], base / r["force_mae_mev_per_A"],
                         r["energy_mae_offset_corrected_mev_per_atom"], r.get("prior_force_mae_mev_per_A"),
                         (r.get("ttt") or {}).get("seconds")])
    name = "unseen_molecules_quick.json" if args.quick else "unseen_molecules.json"
    path = write_json_atomic(args.json or RESULTS_DIR / name, results)
    print_table(["molecule", "config", "F MAE meV/Å", "gain vs base", "E MAE* meV/atom", "prior F MAE", "TTT s"],
                rows, fmt=".3g")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
