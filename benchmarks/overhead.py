"""Cost of adaptivity: per-step overhead, detector and radius-refinement cost, TTT wall time.

    python benchmarks/overhead.py            # full run -> benchmarks/results/overhead.json
    python benchmarks/overhead.py --quick    # smoke run -> benchmarks/results/overhead_quick.json

Measured (issue acceptance targets in brackets):
  step_overhead_ratio   median per-step time of AdaptiveCalculator / bare MLFFCalculator over an
                        in-distribution NVE run (no shift, so no TTT): what every MD step pays for
                        the topology trigger and cache bookkeeping [<= 1.05];
  detector_seconds      all three detectors at a structure change, by atom count (20, 200, 2000,
                        10000; periodic random H/C/O packings at liquid density; the prior's own
                        cost is excluded, its forces are given), KPM spectra above 2000 atoms;
  rr_seconds            radius refinement (10 candidate radii) by atom count;
  ttt_seconds_20_atoms  a full TTT run (4 rattled copies, 200 steps max, default SGD settings,
                        early stop disabled so all 200 steps run) on a 20-atom molecule with the
                        default architecture [<= 60 s on this 2-core CPU].
The model is the default architecture (untrained weights: costs do not depend on their values)
with training statistics computed on toy H/C/O clusters. torch runs with 2 threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, print_table, time_calls, write_json_atomic  # noqa: E402


def _packing(n: int, seed: int = 0):
    """n random H/C/O atoms in a periodic cube at ~0.1 atoms/Å³, no pair closer than ~0.9 Å."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    side = (n / 0.1) ** (1 / 3)
    grid = int(np.ceil(n ** (1 / 3)))
    pts = (np.stack(np.meshgrid(*[np.arange(grid)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n] + 0.5) / grid
    pos = pts * side + rng.normal(0, 0.1, (n, 3))
    return Atoms(rng.choice(list("HCO"), n), positions=pos, cell=[side] * 3, pbc=True)


def _model_with_stats():
    import ase_adapt
    from ase_adapt.shift.stats import compute_training_stats
    from ase_adapt.testing import toy_frames

    model = ase_adapt.build_model(ase_adapt.ModelConfig.from_yaml("model-default"), elements=["H", "C", "O"])
    model.training_stats = compute_training_stats(model, toy_frames(30, seed=0), progress=False)
    return model


def _twenty_atoms():
    from ase.build import molecule

    a = molecule("C6H6")  # 12 atoms ...
    b = molecule("CH3CH2OH")  # ... + 9 = 21; drop one H to get 20
    b.translate([0, 0, 4.5])
    atoms = a + b
    del atoms[-1]
    return atoms


def step_overhead(model, steps: int) -> dict:
    import copy

    from ase import units
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import thermalize_momenta

    from ase_adapt import AdaptiveCalculator, MLFFCalculator
    from ase_adapt.testing import toy_prior

    out = {}
    for name in ("bare", "adaptive", "bare", "adaptive"):  # interleaved, best of two
        atoms = _twenty_atoms()
        thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
        if name == "bare":
            calc = MLFFCalculator(copy.deepcopy(model))
        else:  # in distribution by construction: detection on, nothing fires, no TTT
            calc = AdaptiveCalculator(copy.deepcopy(model), toy_prior(), prior_head="prior", adapt_when="never")
        atoms.calc = calc
        dyn = VelocityVerlet(atoms, 0.25 * units.fs)
        dyn.run(5)  # warm-up, including the adaptive calculator's first check
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            dyn.run(1)
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        out[name] = min(out.get(name, np.inf), med)
        if name == "adaptive":
            out["adaptive_checks"] = len(calc.events)
    out["ratio"] = out["adaptive"] / out["bare"]
    return out


def detector_costs(model, sizes: list[int]) -> tuple[dict, dict]:
    from ase_adapt.shift import detect_shift, refine_radius

    det, rr = {}, {}
    for n in sizes:
        atoms = _packing(n)
        forces = np.random.default_rng(1).normal(0, 1, (n, 3))
        t = time_calls(lambda: detect_shift(atoms, model.training_stats, prior_forces=forces,
                                            cutoff=model.cutoff), warmup=0, min_repeats=1, max_repeats=3,
                       budget_s=20)
        det[str(n)] = t["median"]
        if n <= 2000:  # RR runs ten spectra: the 10k cell is covered by the detector figure x ~10
            t = time_calls(lambda: refine_radius(atoms, model.training_stats), warmup=0, min_repeats=1,
                           max_repeats=2, budget_s=30)
            rr[str(n)] = t["median"]
        print(f"  {n:>6} atoms: detectors {det[str(n)]:.3f} s" + (f", RR {rr[str(n)]:.3f} s" if str(n) in rr else ""),
              flush=True)
    return det, rr


def ttt_time(model, max_steps: int) -> dict:
    import copy

    from ase_adapt.testing import toy_prior
    from ase_adapt.adapt.ttt import TTTSettings, test_time_train

    m = copy.deepcopy(model)
    r = test_time_train(m, _twenty_atoms(), toy_prior(), TTTSettings(max_steps=max_steps, patience=10**6),
                        head="prior")
    return r.to_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, few steps")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sizes = [20, 200] if args.quick else [20, 200, 2000, 10000]
    model = _model_with_stats()
    print("per-step overhead (20-atom NVE, in distribution) ...", flush=True)
    step = step_overhead(model, 20 if args.quick else 200)
    print("detector and RR cost at a structure change ...", flush=True)
    det, rr = detector_costs(model, sizes)
    print("TTT on a 20-atom molecule ...", flush=True)
    ttt = ttt_time(model, 10 if args.quick else 200)
    result = {
        "benchmark": "overhead", "quick": args.quick, "threads": args.threads, "torch": torch.__version__,
        "machine": machine_info(),
        "step_overhead_ratio": step["ratio"],
        "step_seconds": {"bare": step["bare"], "adaptive": step["adaptive"]},
        "detector_seconds": det,
        "rr_seconds": rr,
        "ttt_seconds_20_atoms": ttt["seconds"],
        "ttt": ttt,
        "targets": {"step_overhead_ratio": 1.05, "ttt_seconds_20_atoms": 60.0},
    }
    name = "overhead_quick.json" if args.quick else "overhead.json"
    path = write_json_atomic(RESULTS_DIR / name, result)
    print_table(["quantity", "value"], [
        ["step time bare (s)", step["bare"]], ["step time adaptive (s)", step["adaptive"]],
        ["step overhead ratio", step["ratio"]],
        *[[f"detectors, {n} atoms (s)", v] for n, v in det.items()],
        *[[f"RR, {n} atoms (s)", v] for n, v in rr.items()],
        ["TTT 20 atoms (s)", ttt["seconds"]], ["TTT steps", ttt["steps"]],
    ])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
