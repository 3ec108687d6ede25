"""Wall time of one test-time adaptation, alone and beside another CPU-bound job.

    python benchmarks/ttt_time.py                       # -> benchmarks/results/ttt_time.json
    python benchmarks/ttt_time.py --model M --molecules styrene --priors gfn-ff

Role (``../shared/molecules.md``): validation molecules (their 500 K frames give the sGDML-50
prior's labels; nothing is chosen here). For each (molecule, prior): a fresh
``AdaptiveCalculator(model, prior, adapt_when="always")`` with the default TTT settings checks the
first frame; the time of that check (shift detection, the prior-driven sampling MD, labelling,
TTT steps, guard) is recorded, in a fresh process, first alone and then with a spinning Python
process on the machine (a shared laptop or node). The sGDML fit (50 frames) is timed apart: it is
made once per molecule, before any MD. Default threads (the calculator's: one for small systems).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, timestamp, write_json_atomic  # noqa: E402

MOLECULES = ("styrene", "indole")
PRIORS = ("gfn-ff", "sgdml", "gfn1-xtb")


def worker(spec: dict) -> dict:
    import tempfile

    import ase_adapt
    from ase_adapt.priors import fit_sgdml_prior
    from ase_adapt.train.data import read_frames

    frames = read_frames(Path(spec["data"]) / f"{spec['molecule']}.xyz")
    prior, fit_s = spec["prior"], None
    with tempfile.TemporaryDirectory() as tmp:
        if prior == "sgdml":
            t0 = time.perf_counter()
            path = fit_sgdml_prior(frames[:50], n_train=50, out_path=Path(tmp) / "sgdml.npz")
            fit_s = time.perf_counter() - t0
            prior = f"sgdml:{path}"
        calc = ase_adapt.AdaptiveCalculator(spec["model"], prior, adapt_when="always")
        t0 = time.perf_counter()
        calc.check(frames[50].copy())
        seconds = time.perf_counter() - t0
        ttt = calc.ttt_result
    return {"seconds": seconds, "sgdml_fit_seconds": fit_s, "n_atoms": len(frames[0]),
            "steps": ttt.steps if ttt else None, "rolled_back": ttt.rolled_back if ttt else None,
            "prior_seconds": ttt.prior_seconds if ttt else None, "action": calc.events[-1]["action"]}


def run(spec: dict, busy: bool) -> dict:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                             text=True, check=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--data", default=str(BENCH_DIR / "data"))
    p.add_argument("--molecules", nargs="+", default=list(MOLECULES))
    p.add_argument("--priors", nargs="+", default=list(PRIORS), choices=PRIORS)
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "ttt_time.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    rows, records = [], []
    for mol in args.molecules:
        for prior in args.priors:
            spec = {"model": args.model, "data": args.data, "molecule": mol, "prior": prior}
            alone, shared = run(spec, False), run(spec, True)
            records.append({**spec, "alone": alone, "beside_a_cpu_job": shared})
            ratio = shared["seconds"] / alone["seconds"]
            rows.append([mol, alone["n_atoms"], prior, alone["seconds"], shared["seconds"], ratio, alone["steps"],
                         alone["sgdml_fit_seconds"]])
            print(f"{mol} {prior}: {alone['seconds']:.1f} s alone, {shared['seconds']:.1f} s beside a CPU job "
                  f"({ratio:.2f}x)", flush=True)
    print_table(["molecule", "atoms", "prior", "TTT s alone", "s beside a CPU job", "ratio", "steps", "sGDML fit s"],
                rows, fmt=".3g")
    write_json_atomic(args.json, {"benchmark": "ttt_time", "timestamp": timestamp(), "machine": machine_info(),
                                  "model": args.model, "records": records})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
