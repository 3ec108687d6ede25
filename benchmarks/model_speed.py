"""Time per energy+forces call of the default ase-adapt MLFF, against SevenNet-0, on CPU.

    python benchmarks/model_speed.py            # full run -> benchmarks/results/model_speed.json
    python benchmarks/model_speed.py --quick    # smoke run -> benchmarks/results/model_speed_quick.json

Model: ``ase_adapt.build_model(elements=["H", "C", "N", "O", "Si"])`` with every other
hyperparameter at its default, float32, CPU, wrapped in ``ase_adapt.MLFFCalculator`` (untrained
weights: speed does not depend on their values). Reference: ``SevenNetCalculator("7net-0",
device="cpu")`` when ``sevenn`` imports (float32, no TP accelerator).

Structures (all built here, deterministic):
  molecule_20  C7H12O, 20 atoms, no PBC: ase ``molecule("C6H6")``, plus ``molecule("H2O")`` with
               its centre of mass 3.4 Å above the ring centre and ``molecule("CH4")`` with its
               centre of mass 5.6 Å from the ring centre in the ring plane (closest
               intermolecular distance 2.94 Å, so all three share one radius graph).
  si_64        Si diamond, a = 5.43 Å, cubic cell x (2, 2, 2), 3D periodic.
  si_1000      the same x (5, 5, 5).
  si_10648     the same x (11, 11, 11): the ~10k-atom linear-scaling and memory check.

Protocol per (model, structure), each in a fresh worker process: build the calculator and the
structure, record the RSS, then ``warmup`` untimed calls and timed calls until ``min_repeats``
calls are done and ``max_repeats`` or the time budget is reached. Before every call the positions
are set to the reference positions plus N(0, 0.001 Å) noise (untimed), so the ASE cache can never
answer. A call is ``atoms.get_potential_energy(); atoms.get_forces()`` (one model evaluation;
stress is computed as well for periodic cells by both calculators, as they do under ASE). The
headline is the median. Peak RSS is the worker's ``ru_maxrss`` (imports and model included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR, WorkerError, current_rss_gb, fit_loglog, machine_info, peak_rss_gb, print_table,
    run_worker, time_calls, timestamp, torch_info, write_json_atomic,
)

NAME = "model_speed"
ELEMENTS = ["H", "C", "N", "O", "Si"]
RATTLE_STD = 1e-3  # Å
SEED = 0

# structure -> (atoms, periodic)
STRUCTURES: dict[str, tuple[int, bool]] = {
    "molecule_20": (20, False),
    "si_64": (64, True),
    "si_1000": (1000, True),
    "si_10648": (10648, True),
}
LARGE = "si_10648"

# Timing plans: warm-up calls, min/max timed calls, time budget (s) for the timed calls.
FULL_PLAN = {
    "molecule_20": dict(warmup=3, min_repeats=10, max_repeats=50, budget_s=10.0),
    "si_64": dict(warmup=3, min_repeats=10, max_repeats=50, budget_s=10.0),
    "si_1000": dict(warmup=2, min_repeats=5, max_repeats=20, budget_s=30.0),
    "si_10648": dict(warmup=1, min_repeats=3, max_repeats=5, budget_s=60.0),
}
QUICK_PLAN = {n: dict(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.0) for n in STRUCTURES}
QUICK_DEFAULT = ["molecule_20", "si_64"]  # --quick runs these unless --structures says otherwise
SEVENNET_DEFAULT = ["molecule_20", "si_64", "si_1000"]  # 10k SevenNet only with --sevennet-10k


# ---------------------------------------------------------------------------------------- worker
def build_structure(name: str):
    """The benchmark structures (see the module docstring)."""
    from ase.build import bulk, molecule

    if name == "molecule_20":
        benzene, water, methane = molecule("C6H6"), molecule("H2O"), molecule("CH4")
        water.translate([0.0, 0.0, 3.4] - water.get_center_of_mass())
        methane.translate([5.6, 0.0, 0.0] - methane.get_center_of_mass())
        atoms = benzene + water + methane
        atoms.center(vacuum=6.0)  # a cell for tools that want one; pbc stays False
        atoms.pbc = False
        return atoms
    reps = {"si_64": 2, "si_1000": 5, "si_10648": 11}[name]
    return bulk("Si", "diamond", a=5.43, cubic=True) * (reps, reps, reps)


def make_calculator(backend: str, info: dict[str, Any]):
    import torch

    if backend == "ase_adapt":
        import ase_adapt

        model = ase_adapt.build_model(elements=ELEMENTS)
        calc = ase_adapt.MLFFCalculator(model, dtype=torch.float32, device="cpu")
        info["model_config"] = dict(model.config)
        info["num_parameters"] = sum(p.numel() for p in model.parameters())
        info["ase_adapt_version"] = getattr(ase_adapt, "__version__", None)
        info["cutoff"] = model.cutoff
        return calc
    if backend == "sevennet":
        import sevenn
        from sevenn.calculator import SevenNetCalculator

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            calc = SevenNetCalculator("7net-0", device="cpu")
        info["warnings"] = sorted({str(w.message).strip()[:200] for w in caught})
        info["sevenn_version"] = getattr(sevenn, "__version__", None)
        info["num_parameters"] = sum(p.numel() for p in calc.model.parameters())
        info["cutoff"] = float(calc.cutoff)
        info["dtype"] = str(next(calc.model.parameters()).dtype).replace("torch.", "")
        return calc
    raise ValueError(f"unknown backend {backend!r}")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns a JSON-able record."""
    import numpy as np
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    info: dict[str, Any] = {"backend": spec["backend"], "structure": spec["structure"], **torch_info(),
                            "load_average_before": list(os.getloadavg())}
    t0 = time.perf_counter()
    calc = make_calculator(spec["backend"], info)
    info["setup_seconds"] = time.perf_counter() - t0
    atoms = build_structure(spec["structure"])
    atoms.calc = calc
    ref = atoms.get_positions()
    rng = np.random.default_rng(SEED)
    info["atoms"] = len(atoms)
    info["formula"] = atoms.get_chemical_formula()

    n_calls = [0]
    inner = calc.calculate

    def counting_calculate(*args, **kwargs):
        n_calls[0] += 1
        return inner(*args, **kwargs)

    calc.calculate = counting_calculate

    def prepare(_k: int) -> None:
        atoms.set_positions(ref + rng.normal(0.0, RATTLE_STD, ref.shape))

    energies = []

    def call() -> None:
        energies.append(atoms.get_potential_energy())
        atoms.get_forces()

    info["rss_before_gb"] = current_rss_gb()
    info["peak_rss_before_gb"] = peak_rss_gb()
    stats = time_calls(call, prepare, **spec["plan"])
    info["peak_rss_gb"] = peak_rss_gb()
    info["calculations_per_call"] = n_calls[0] / (len(stats["times"]) + len(stats["warmup_seconds"]))
    info["energy_per_atom_ev"] = float(energies[-1]) / len(atoms)
    info["finite"] = bool(np.isfinite(energies).all() and np.isfinite(atoms.get_forces()).all())

    if spec["backend"] == "ase_adapt":  # where the time goes: graph (vesin + checks) vs model
        graph = calc.make_graph(atoms)
        info["edges"] = graph.num_edges
        g = time_calls(lambda: calc.make_graph(atoms), prepare, warmup=1,
                       min_repeats=3, max_repeats=10, budget_s=min(2.0, stats["median"] * 3))
        info["graph_seconds_median"] = g["median"]
    info["timing"] = stats
    info["load_average_after"] = list(os.getloadavg())
    return info


# ---------------------------------------------------------------------------------------- driver
def sevennet_available() -> tuple[bool, str | None]:
    """Cheap availability check that does not import torch into the driver; a real import
    failure shows up as a failed SevenNet worker and is recorded as the skip reason."""
    import importlib.util

    if importlib.util.find_spec("sevenn") is None:
        return False, "sevenn is not installed"
    return True, None


def machine_busy(machine: dict[str, Any]) -> bool:
    """True when other processes already keep about a core busy (1-minute load average)."""
    load = (machine.get("load_average") or [0.0])[0]
    return load >= 0.75


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small structures, few repeats (writes model_speed_quick.json)")
    p.add_argument("--output", type=Path, default=None, help="result JSON path")
    p.add_argument("--structures", nargs="+", choices=list(STRUCTURES), default=None,
                   help="restrict to these structures")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-sevennet", action="store_true", help="do not time SevenNet-0")
    p.add_argument("--sevennet-10k", action="store_true",
                   help=f"also time SevenNet-0 on {LARGE} (slow, several GB)")
    p.add_argument("--worker-timeout", type=float, default=3600.0, help="seconds per measurement")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _median(runs: dict, backend: str, name: str) -> float | None:
    rec = runs.get(backend, {}).get(name)
    return rec["timing"]["median"] if rec and "timing" in rec else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    plan = QUICK_PLAN if args.quick else FULL_PLAN
    default = QUICK_DEFAULT if args.quick else list(FULL_PLAN)
    names = [n for n in STRUCTURES if n in (args.structures or default)]
    output = args.output or RESULTS_DIR / (f"{NAME}_quick.json" if args.quick else f"{NAME}.json")
    seven_ok, seven_reason = (False, "disabled by --no-sevennet") if args.no_sevennet else sevennet_available()
    seven_names = [n for n in names if n in SEVENNET_DEFAULT or (n == LARGE and args.sevennet_10k)]

    jobs = [("ase_adapt", n) for n in names] + ([("sevennet", n) for n in seven_names] if seven_ok else [])
    machine = machine_info()
    busy = machine_busy(machine)
    if busy:
        print(f"[{NAME}] warning: load average {machine['load_average'][0]:.2f} on "
              f"{machine['cpus_available']} CPUs before start: timings will be perturbed "
              "(torch with as many threads as cores slows down sharply when cores are shared)",
              file=sys.stderr)
    started = time.perf_counter()
    runs: dict[str, dict[str, Any]] = {"ase_adapt": {}, "sevennet": {}}
    errors: dict[str, str] = {}
    script = Path(__file__).resolve()
    for backend, name in jobs:
        print(f"[{NAME}] {backend:9s} {name:12s} ...", end=" ", flush=True)
        spec = {"backend": backend, "structure": name, "plan": plan[name], "threads": args.threads}
        try:
            rec = run_worker(script, spec, timeout_s=args.worker_timeout)
        except WorkerError as exc:
            errors[f"{backend}/{name}"] = str(exc)
            print(f"FAILED: {exc}", flush=True)
            if backend == "sevennet" and not runs["sevennet"]:
                seven_reason = f"SevenNet worker failed: {exc}"
            continue
        runs[backend][name] = rec
        print(f"{rec['timing']['median']:.4g} s/call (n={rec['timing']['n']}, "
              f"peak RSS {rec['peak_rss_gb']:.2f} GB)", flush=True)

    ours = runs["ase_adapt"]
    atoms = {n: STRUCTURES[n][0] for n in names}
    seconds = {n: _median(runs, "ase_adapt", n) for n in names if n in ours}
    seven = {n: _median(runs, "sevennet", n) for n in runs["sevennet"]}
    speedup = {n: seven[n] / seconds[n] for n in seven if seconds.get(n)}
    periodic = [n for n in seconds if STRUCTURES[n][1]]
    large = [n for n in periodic if STRUCTURES[n][0] >= 1000]
    first = next(iter(ours.values()), {})
    ref_rec = ours.get(LARGE)
    result = {
        "benchmark": NAME,
        "schema_version": 1,
        "mode": "quick" if args.quick else "full",
        "created": timestamp(),
        "wall_seconds": time.perf_counter() - started,
        "units": {"seconds_per_call": "s (median)", "seconds_per_atom": "s/atom", "rss": "GB (1e9 bytes)"},
        "atoms": atoms,
        "seconds_per_call": seconds,
        "seconds_per_atom": {n: t / atoms[n] for n, t in seconds.items()},
        "sevennet_seconds_per_call": seven,
        "speedup_vs_sevennet": speedup,
        "peak_rss_gb": {n: r["peak_rss_gb"] for n, r in ours.items()},
        "peak_rss_gb_10k": ref_rec["peak_rss_gb"] if ref_rec else None,
        "rss_increase_gb_10k": (ref_rec["peak_rss_gb"] - ref_rec["peak_rss_before_gb"]) if ref_rec else None,
        "scaling_exponent": fit_loglog([atoms[n] for n in periodic], [seconds[n] for n in periodic]),
        "scaling_exponent_fit": periodic,
        "scaling_exponent_large": fit_loglog([atoms[n] for n in large], [seconds[n] for n in large]),
        "scaling_exponent_large_fit": large,
        "sevennet_scaling_exponent": fit_loglog(
            [atoms[n] for n in seven if STRUCTURES[n][1]], [seven[n] for n in seven if STRUCTURES[n][1]]),
        "edges": {n: r.get("edges") for n, r in ours.items()},
        "graph_seconds_per_call": {n: r.get("graph_seconds_median") for n, r in ours.items()},
        "model": {
            "builder": f"ase_adapt.build_model(elements={ELEMENTS}) defaults",
            "calculator": "ase_adapt.MLFFCalculator(dtype=float32, device='cpu')",
            "hyperparameters": first.get("model_config"),
            "num_parameters": first.get("num_parameters"),
            "ase_adapt_version": first.get("ase_adapt_version"),
        },
        "sevennet": {
            "model": "7net-0",
            "available": bool(runs["sevennet"]),
            "skipped_reason": None if runs["sevennet"] else seven_reason,
            "sevenn_version": next(iter(runs["sevennet"].values()), {}).get("sevenn_version"),
            "num_parameters": next(iter(runs["sevennet"].values()), {}).get("num_parameters"),
            "warnings": next(iter(runs["sevennet"].values()), {}).get("warnings"),
        },
        "torch_version": first.get("torch_version"),
        "threads": first.get("threads"),
        "interop_threads": first.get("interop_threads"),
        "device": "cpu",
        "dtype": "float32",
        "machine": machine,
        "load_average_end": list(os.getloadavg()),
        "machine_busy_at_start": busy,
        "protocol": {
            "call": "atoms.get_potential_energy(); atoms.get_forces()  (stress also computed for PBC)",
            "rattle_std_angstrom": RATTLE_STD,
            "statistic": "median of timed calls after warm-up; each measurement in a fresh process",
            "plans": {n: plan[n] for n in names},
            "structures": {
                "molecule_20": "C6H6 + H2O (COM 3.4 A above ring) + CH4 (COM 5.6 A in-plane), no PBC",
                "si_64": "Si diamond a=5.43 cubic x2x2x2, PBC",
                "si_1000": "Si diamond a=5.43 cubic x5x5x5, PBC",
                "si_10648": "Si diamond a=5.43 cubic x11x11x11, PBC",
            },
        },
        "errors": errors,
        "runs": runs,
    }
    path = write_json_atomic(output, result)

    rows = []
    for n in names:
        r = ours.get(n, {})
        t = seconds.get(n)
        rows.append([n, atoms[n], t, t / atoms[n] * 1e6 if t else None, seven.get(n), speedup.get(n),
                     r.get("peak_rss_gb")])
    print()
    print_table(["structure", "atoms", "ours s/call", "ours us/atom", "7net-0 s/call", "speedup",
                 "peak RSS GB"], rows)
    expo = result["scaling_exponent"]
    print(f"\nscaling exponent (periodic {', '.join(periodic)}): {'-' if expo is None else format(expo, '.3f')}"
          f"; torch {result['torch_version']}, {result['threads']} threads; load avg "
          f"{', '.join(f'{x:.2f}' for x in result['load_average_end'])}")
    if errors:
        print(f"errors: {errors}")
    print(f"wrote {path}")
    return 1 if errors and not seconds else 0


if __name__ == "__main__":
    sys.exit(main())
