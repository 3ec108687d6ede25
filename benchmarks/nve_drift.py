"""NVE energy conservation of the embedded default model (reliability checklist item 5).

    python benchmarks/nve_drift.py            # 10,000 steps per run (~8 min on 2 cores)
    python benchmarks/nve_drift.py --quick    # 500 steps (smoke run)

VelocityVerlet at 0.5 fs, TTT off, from the BFGS-relaxed structure with 300 K Maxwell-Boltzmann
velocities (no net momentum or rotation). For each run: the drift, |<E>_last 1000 - <E>_first 1000|
per atom (means over windows, so that Verlet's bounded oscillation does not count as drift), the
checklist's literal |E_end - E_0| per atom, and the largest excursion max|E - E_0| per atom.
Target (float64): drift and |E_end - E_0| < 1e-4 eV/atom. float32 is shown for comparison.
Writes benchmarks/results/nve_drift.json and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, print_table, write_json_atomic  # noqa: E402

RUNS = (("CH3OH", "float64"), ("CH3CH2OH", "float64"), ("C6H6", "float64"), ("CH3CH2OH", "float32"))
TARGET = 1e-4  # eV/atom


def run(formula: str, dtype: str, steps: int, window: int) -> dict:
    from ase.build import molecule

    from ase_adapt import MLFFCalculator
    from ase_adapt.workflows import nve_energies

    atoms = molecule(formula)
    t0 = time.perf_counter()
    energies, temps = nve_energies(atoms, MLFFCalculator("default", dtype=dtype), steps)
    seconds = time.perf_counter() - t0  # includes the short relaxation
    e, n = np.array(energies), len(atoms)
    return {"molecule": formula, "dtype": dtype, "atoms": n, "steps": steps, "timestep_fs": 0.5,
            "drift_eV_per_atom": float(abs(e[-window:].mean() - e[:window].mean()) / n),
            "end_minus_start_eV_per_atom": float(abs(e[-1] - e[0]) / n),
            "max_excursion_eV_per_atom": float(np.abs(e - e[0]).max() / n),
            "mean_temperature_K": float(np.mean(temps)), "ms_per_step": 1e3 * seconds / steps,
            "finite": bool(np.isfinite(e).all())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="500 steps per run")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    steps = 500 if args.quick else 10_000
    window = 50 if args.quick else 1000
    rows = []
    for formula, dtype in RUNS:
        print(f"{formula} {dtype}: {steps} NVE steps ...", flush=True)
        rows.append(run(formula, dtype, steps, window))
    result = {"benchmark": "nve_drift", "quick": args.quick, "threads": args.threads, "machine": machine_info(),
              "target_eV_per_atom": TARGET, "window_steps": window, "runs": rows,
              "float64_meets_target": all(r["drift_eV_per_atom"] < TARGET and r["end_minus_start_eV_per_atom"] < TARGET
                                          for r in rows if r["dtype"] == "float64")}
    path = write_json_atomic(RESULTS_DIR / ("nve_drift_quick.json" if args.quick else "nve_drift.json"), result)
    print_table(["molecule", "dtype", "drift", "|E_end-E_0|", "max excursion", "<T> (K)", "ms/step"],
                [[r["molecule"], r["dtype"], r["drift_eV_per_atom"], r["end_minus_start_eV_per_atom"],
                  r["max_excursion_eV_per_atom"], r["mean_temperature_K"], r["ms_per_step"]] for r in rows])
    print(f"eV/atom; target < {TARGET} in float64: {'met' if result['float64_meets_target'] else 'NOT met'}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
