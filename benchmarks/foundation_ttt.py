"""SevenNet-0, made TTT-ready with a GFN-FF prior head, on organic molecules outside its training data.

    python benchmarks/foundation_ttt.py            # full run -> benchmarks/results/foundation_ttt.json
    python benchmarks/foundation_ttt.py --quick    # smoke run -> benchmarks/results/foundation_ttt_quick.json

Protocol (issue 16; roles from shared/molecules.md):
  model       SevenNet-0 (11Jul2024, shipped in the sevenn wheel), float32, CPU, one thread.
  prepare     ase_adapt.train.prepare_model with a GFN-FF prior head (readout MLP on the frozen
              representation, so the main head stays SevenNet-0 bit for bit), on PREP_FRAMES frames
              of each training molecule (aspirin, benzene, uracil: 500 K MD, their cached GFN-FF
              labels); detector statistics from the same frames. Cached in benchmarks/data/foundation/.
  molecules   the eight validation molecules (pyridine, furan, acetone, styrene, indole, methyl
              acetate, fluorobenzene, trimethyl phosphate); their first EVAL_FRAMES frames of
              benchmarks/data/<mol>.xyz, GFN2-xTB reference labels. No test molecule is used.
  configs     base (no adaptation), rr (radius refinement), ttt (GFN-FF prior, prior-MD samples at
              500 K, the frames' temperature) and ttt+rr, each through ase_adapt.evaluate_frames:
              adapt once on the first frame, then predict every frame with those weights.
  metric      main-head force MAE against GFN2-xTB (meV/Å); the prior's own MAE; the detectors'
              verdicts; TTT steps, time and the guard's decision.
  speed       ms per Langevin step (20 steps after 5 warm-up, 300 K, aspirin: a training molecule):
              sevenn's SevenNetCalculator, the adapter in MLFFCalculator, and AdaptiveCalculator on
              the prepared model. If its detectors call the frame shifted, the one adaptation (a
              short TTT) happens in the warm-up; the timed steps pay what every later step pays.
SevenNet-0 was trained on PBE materials data, so its errors against GFN2-xTB on molecules mix a
level-of-theory difference with distribution shift; the prior (GFN-FF) differs from GFN2 too.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, timestamp, torch_info, write_json_atomic  # noqa: E402

NAME = "foundation_ttt"
TRAINING = ("aspirin", "benzene", "uracil")
VALIDATION = ("pyridine", "furan", "acetone", "styrene", "indole", "methyl_acetate", "fluorobenzene",
              "trimethyl_phosphate")
CONFIGS = {"base": dict(), "rr": dict(rr=True), "ttt": dict(ttt=True), "ttt+rr": dict(ttt=True, rr=True)}


def prepared_model(n_frames: int, epochs: int, out: Path):
    from ase_adapt import load_model
    from ase_adapt.priors import make_prior
    from ase_adapt.train import PrepareSettings, prepare_model
    from ase_adapt.train.data import read_frames
    from ase_adapt.train.optim import OptimSettings

    if not out.exists():
        frames = [a for m in TRAINING for a in read_frames(BENCH_DIR / "data" / f"{m}.xyz")[:n_frames]]
        s = PrepareSettings(optim=replace(PrepareSettings().optim, epochs=epochs, batch_size=4, progress=False))
        t0 = time.perf_counter()
        result = prepare_model("sevennet:7net-0", frames, [make_prior("gfn-ff")], s, out)
        print(f"prepared in {time.perf_counter() - t0:.0f} s: {result.summary()}", flush=True)
    return load_model(str(out))


def evaluate(model, mol: str, n_frames: int, ttt_settings, configs=tuple(CONFIGS)) -> dict[str, Any]:
    from ase_adapt.evaluate import EvaluateSettings, evaluate_frames
    from ase_adapt.train.data import read_frames

    frames = read_frames(BENCH_DIR / "data" / f"{mol}.xyz")[:n_frames]
    out = {}
    for name in configs:
        flags = CONFIGS[name]
        s = EvaluateSettings(prior="gfn-ff", ttt_settings=ttt_settings, unknown_elements="error", **flags)
        t0 = time.perf_counter()
        r = evaluate_frames(model, frames, s)
        out[name] = {"force_mae_mev_per_A": r["force_mae_mev_per_A"],
                     "prior_force_mae_mev_per_A": r.get("prior_force_mae_mev_per_A"),
                     "shifted": r["shifted"], "reasons": r["shift"].get("reasons", []),
                     "adaptation": r["adaptation"]["kind"], "radius": r["radius"],
                     "ttt": {k: r["ttt"][k] for k in ("steps", "loss_before", "loss_after", "stop_reason",
                                                       "rolled_back", "seconds", "prior_seconds")} if r["ttt"] else None,
                     "seconds": time.perf_counter() - t0}
        print(f"  {mol:<20} {name:<7} force MAE {r['force_mae_mev_per_A']:7.1f} meV/Å "
              f"({out[name]['adaptation']}, {out[name]['seconds']:.0f} s)", flush=True)
    return out


def _cached_json(path: Path, make):
    """A molecule's results, kept so that a killed run resumes with the next molecule."""
    import json

    if path.exists():
        return json.loads(path.read_text())
    result = make()
    write_json_atomic(path, result)
    return result


def _ms_per_step(atoms, calc, steps: int) -> float:
    from ase import units
    from ase.md.langevin import Langevin

    a = atoms.copy()
    a.calc = calc
    dyn = Langevin(a, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, rng=__import__("numpy").random.default_rng(0))
    dyn.run(5)
    t0 = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - t0) / steps * 1e3


def speed(model, steps: int) -> dict[str, float]:
    from sevenn.calculator import SevenNetCalculator

    from ase_adapt import AdaptiveCalculator, MLFFCalculator
    from ase_adapt.adapt.ttt import TTTSettings
    from ase_adapt.train.data import read_frames

    mol = read_frames(BENCH_DIR / "data" / "aspirin.xyz")[0]  # a training frame
    # if the detectors still call it shifted, the one adaptation happens in the warm-up steps; a short
    # TTT keeps that cheap, and the timed steps measure what every later step pays (the trigger)
    adaptive = AdaptiveCalculator(model, "gfn-ff", ttt=TTTSettings(max_steps=5, md_steps=0, batch_size=4))
    out = {"sevennet_calculator_ms": _ms_per_step(mol, SevenNetCalculator("7net-0", device="cpu"), steps),
           "adapter_ms": _ms_per_step(mol, MLFFCalculator(model), steps),
           "adaptive_no_shift_ms": _ms_per_step(mol, adaptive, steps),
           "adaptive_events": [e["kind"] for e in adaptive.events]}
    out["adaptive_over_adapter"] = out["adaptive_no_shift_ms"] / out["adapter_ms"]
    out["adapter_over_sevennet"] = out["adapter_ms"] / out["sevennet_calculator_ms"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one molecule, few frames and steps")
    ap.add_argument("--molecules", nargs="+", choices=VALIDATION, help="a subset of the validation molecules")
    ap.add_argument("--adapted-blocks", default="1", help="SevenNet-0 blocks TTT adapts: a number or 'all' "
                    "(default 1; other values write results_<...>_blocks<K>.json)")
    ap.add_argument("--speed-only", action="store_true", help="re-time the MD steps only (on a quiet machine) and "
                    "update the existing result file")
    ap.add_argument("--verdicts-only", action="store_true", help="re-run only the base configuration (the "
                    "detectors' verdicts) and update the existing result file")
    args = ap.parse_args()
    args.adapted_blocks = None if args.adapted_blocks == "all" else int(args.adapted_blocks)
    suffix = "" if args.adapted_blocks == 1 else f"_blocks{args.adapted_blocks or 'all'}"
    import torch

    from ase_adapt.adapt.ttt import TTTSettings

    torch.set_num_threads(1)
    q = args.quick
    sizes = dict(prep_frames=4, prep_epochs=2, eval_frames=4, ttt_steps=3, md_steps=20, speed_steps=5) if q else \
        dict(prep_frames=40, prep_epochs=10, eval_frames=50, ttt_steps=60, md_steps=160, speed_steps=20)
    molecules = args.molecules or (VALIDATION[:1] if q else VALIDATION)
    # the first of SevenNet-0's five blocks, as measured here (TTTSettings' default adapts every shared block)
    ttt = TTTSettings(max_steps=sizes["ttt_steps"], md_steps=sizes["md_steps"], md_stride=10, md_temperature=500.0,
                      batch_size=8, adapted_blocks=args.adapted_blocks)
    t_start = time.perf_counter()
    model = prepared_model(sizes["prep_frames"], sizes["prep_epochs"],
                           BENCH_DIR / "data" / "foundation" / f"7net0_gfnff_{'quick' if q else 'full'}.safetensors")
    path = RESULTS_DIR / f"{NAME}{'_quick' if q else ''}{suffix}.json"
    if args.speed_only:
        import json

        record = json.loads(path.read_text())
        record["speed"], record["speed_machine"] = speed(model, sizes["speed_steps"]), machine_info()
        write_json_atomic(path, record)
        print(record["speed"])
        return 0
    if args.verdicts_only:
        import json

        record = json.loads(path.read_text())
        for m in molecules:
            base = evaluate(model, m, sizes["eval_frames"], ttt, configs=("base",))["base"]
            record["results"][m]["base"] = base
        record["verdicts_machine"] = machine_info()
        write_json_atomic(path, record)
        return 0
    results = {m: _cached_json(BENCH_DIR / "data" / "foundation" / f"{'quick' if q else 'full'}_{m}{suffix}.json",
                               lambda m=m: evaluate(model, m, sizes["eval_frames"], ttt)) for m in molecules}
    timing = speed(model, sizes["speed_steps"])
    rows = [[m, *(r[c]["force_mae_mev_per_A"] for c in CONFIGS), r["base"]["prior_force_mae_mev_per_A"],
             "yes" if r["base"]["shifted"] else "no", (r["ttt"]["ttt"] or {}).get("stop_reason")]
            for m, r in results.items()]
    print_table(["molecule", *CONFIGS, "prior", "shifted", "TTT stop"], rows, fmt=".1f")
    print(f"ms per MD step: SevenNetCalculator {timing['sevennet_calculator_ms']:.1f}, adapter "
          f"{timing['adapter_ms']:.1f}, AdaptiveCalculator (no shift) {timing['adaptive_no_shift_ms']:.1f} "
          f"({timing['adaptive_over_adapter']:.3f}x the adapter)")
    write_json_atomic(path, {
        "benchmark": NAME, "schema_version": 1, "mode": "quick" if q else "full", "created": timestamp(),
        "machine": machine_info(), "torch": torch_info(), "threads": 1,
        "protocol": __doc__.split("Protocol", 1)[1].strip(), "sizes": sizes, "ttt_settings": repr(ttt),
        "results": results, "speed": timing, "wall_seconds": time.perf_counter() - t_start})
    return 0


if __name__ == "__main__":
    sys.exit(main())
