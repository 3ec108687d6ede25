"""Accuracy of models on fresh, independent 500 K trajectories of the training molecules.

    python benchmarks/data.py --molecules aspirin benzene uracil --seed 7 --frames 300 \\
        --out benchmarks/data/fresh500                 # new MD seeds: not the training trajectories
    python benchmarks/fresh_accuracy.py --models default benchmarks/default_model/clean/small/best.safetensors

Role (``../shared/molecules.md``): training molecules, but frames of new trajectories (other MD
seeds than the training data's), so the figure is the model's in-distribution error, not a fit of
frames it saw or a time-separated tail of them. Main head against GFN2-xTB: force MAE and RMSE
(meV/Å) and energy MAE after removing the mean offset (meV/atom), per molecule and the median
over the three. Writes ``benchmarks/results/fresh_accuracy.json`` and a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, timestamp, write_json_atomic  # noqa: E402

MOLECULES = ("aspirin", "benzene", "uracil")


def score(model_spec: str, frames: list) -> dict:
    import ase_adapt
    from ase_adapt.graph import build_graph
    from ase_adapt.labels import get_label

    model = ase_adapt.load_model(model_spec)
    f_pred, f_ref, e_pred, e_ref = [], [], [], []
    for start in range(0, len(frames), 32):
        chunk = frames[start:start + 32]
        out = model(build_graph(chunk, model.cutoff, dtype=model.dtype), "main")
        f_pred.append(out["forces"].double().numpy())
        e_pred.extend(out["energy"].tolist())
        f_ref.extend(get_label(a, "forces", k) for k, a in enumerate(chunk))
        e_ref.extend(get_label(a, "energy", k) for k, a in enumerate(chunk))
    err = np.concatenate(f_pred) - np.concatenate(f_ref)
    de = np.array(e_pred) - np.array(e_ref)
    n = len(frames[0])
    return {"force_mae_meV_per_A": float(np.abs(err).mean() * 1e3),
            "force_rmse_meV_per_A": float(np.sqrt((err ** 2).mean()) * 1e3),
            "energy_mae_offset_removed_meV_per_atom": float(np.abs(de - de.mean()).mean() * 1e3 / n),
            "n_frames": len(frames)}


def main(argv: list[str] | None = None) -> int:
    import torch

    from ase_adapt.train.data import read_frames

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["default"])
    p.add_argument("--data", type=Path, default=BENCH_DIR / "data" / "fresh500")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "fresh_accuracy.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    frames = {}
    for m in MOLECULES:
        path = args.data / f"{m}.xyz"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: make the fresh trajectories first (see this script's docstring)")
        frames[m] = read_frames(path)
    manifest = args.data / "manifest.json"
    results, rows = {}, []
    for spec in args.models:
        per = {m: score(spec, frames[m]) for m in MOLECULES}
        med = float(np.median([r["force_mae_meV_per_A"] for r in per.values()]))
        med_rmse = float(np.median([r["force_rmse_meV_per_A"] for r in per.values()]))
        results[spec] = {"molecules": per, "median_force_mae_meV_per_A": med, "median_force_rmse_meV_per_A": med_rmse}
        for m, r in per.items():
            rows.append([spec, m, r["force_mae_meV_per_A"], r["force_rmse_meV_per_A"],
                         r["energy_mae_offset_removed_meV_per_atom"]])
        rows.append([spec, "median", med, med_rmse, None])
    print_table(["model", "molecule", "F MAE meV/Å", "F RMSE meV/Å", "E MAE meV/atom"], rows, fmt=".1f")
    write_json_atomic(args.json, {"benchmark": "fresh_accuracy", "timestamp": timestamp(), "machine": machine_info(),
                                  "data": str(args.data), "manifest": str(manifest) if manifest.is_file() else None,
                                  "results": results})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
