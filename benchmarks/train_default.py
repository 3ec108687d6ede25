"""Train the embedded default model: the exact, seeded recipe behind ``load_model("default")``.

    python benchmarks/data.py                         # the data (GFN2-xTB MD; ~10 min on 2 cores)
    python benchmarks/train_default.py                # train -> benchmarks/default_model/
    python benchmarks/train_default.py --install      # ... and copy it into the package

The model: the ``model-default`` architecture for H, C, N, O with four heads, ``main``
(GFN2-xTB, standing in for DFT), ``prior:gfn-ff``, ``prior:sgdml`` (labels from per-molecule
sGDML-50 models, as in the seed paper) and ``prior:lj`` (labels computed here), trained on
aspirin, benzene and uracil only. The test
molecules (naphthalene, toluene) are never seen. ``--mode`` chooses joint training or
pretrain -> freeze -> fine-tune; ``--compare`` trains both on a subset and reports the
validation errors and a TTT check on the test molecules, to choose by measurement.
Resumable: rerunning the same command continues a killed run (the trainer's state.pt).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, RESULTS_DIR, print_table, write_json_atomic  # noqa: E402

TRAIN_MOLECULES = ("aspirin", "benzene", "uracil")
PRIOR_HEADS = ("prior:gfn-ff", "prior:sgdml", "prior:lj")
PACKAGE_MODEL = REPO_ROOT / "ase_adapt" / "data" / "default.safetensors"


def add_lj_labels(frames: list) -> None:
    """LJ prior labels (``prior_lj_*``), computed here: LJ is cheap and deterministic."""
    from ase_adapt.priors import make_prior

    lj = make_prior("lj")
    for a in frames:
        lab = lj.label(a)
        a.info["prior_lj_energy"] = lab["energy"]
        if len(a) > 1 or "config_type" not in a.info:
            a.arrays["prior_lj_forces"] = lab["forces"]


def load_training_frames(data: Path, every: int = 1) -> list:
    from ase_adapt.train.data import read_frames

    frames = []
    for name in TRAIN_MOLECULES:
        path = data / f"{name}.xyz"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run `python benchmarks/data.py` first")
        frames.extend(read_frames(path)[::every])
    frames.extend(read_frames(data / "isolated_atoms.xyz"))
    add_lj_labels(frames)
    return frames


def settings(mode: str, epochs: int, seed: int, progress: bool):
    from ase_adapt.train import OptimSettings, TrainSettings

    return TrainSettings(
        mode=mode, prior_heads=PRIOR_HEADS, pretrain_epochs=epochs,
        optim=OptimSettings(epochs=epochs, batch_size=16, lr=5e-3, ema_decay=0.99, scheduler="plateau",
                            plateau_patience=8, patience=25, val_fraction=0.1, seed=seed,
                            energy_weight=1.0, forces_weight=10.0, progress=progress),
    )


def build():
    import ase_adapt

    config = ase_adapt.ModelConfig.from_yaml("model-default")
    return ase_adapt.build_model(config, elements=["H", "C", "N", "O"], heads=("main", *PRIOR_HEADS))


def train(data: Path, out: Path, mode: str, epochs: int, every: int, seed: int, progress: bool) -> dict:
    from ase_adapt.train import train_model

    frames = load_training_frames(data, every)
    t0 = time.perf_counter()
    result = train_model(build(), frames, settings(mode, epochs, seed, progress), out, resume=(out / "state.pt").exists())
    model = result.model
    model.training_stats["molecules"] = list(TRAIN_MOLECULES)
    model.save(result.best_path)
    last = result.history[-1]
    return {"mode": mode, "epochs_run": len(result.history), "frames": len(frames), "seconds": time.perf_counter() - t0,
            "best": str(result.best_path), **{k: v for k, v in last.items() if k.startswith("val_")}}


def ttt_check(model_path: Path, data: Path, n_frames: int) -> dict:
    """Force MAE on the test molecules: base model vs TTT with the GFN-FF prior (a quick look)."""
    from ase_adapt import load_model
    from ase_adapt.evaluate import EvaluateSettings, evaluate_frames
    from ase_adapt.train.data import read_frames

    model = load_model(model_path)
    out = {}
    for name in ("naphthalene", "toluene"):
        frames = read_frames(data / f"{name}.xyz")[:n_frames]
        base = evaluate_frames(model, frames, EvaluateSettings())
        ttt = evaluate_frames(model, frames, EvaluateSettings(prior="gfn-ff", ttt=True))
        out[name] = {"base": base["force_mae_mev_per_A"], "ttt_gfn-ff": ttt["force_mae_mev_per_A"],
                     "ttt_steps": ttt["ttt"]["steps"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO_ROOT / "benchmarks" / "data")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "default_model")
    p.add_argument("--mode", choices=["joint", "pretrain-freeze-finetune"], default="joint")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--every", type=int, default=1, help="use every k-th frame of each molecule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", action="store_true", help="train both modes on a subset and compare")
    p.add_argument("--install", action="store_true", help="copy the best model into ase_adapt/data/")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.compare:
        rows, results = [], {}
        for mode in ("joint", "pretrain-freeze-finetune"):
            out = args.out.parent / f"{args.out.name}_compare_{mode}"
            r = train(args.data, out, mode, args.epochs, args.every, args.seed, not args.quiet)
            r["ttt_check"] = ttt_check(Path(r["best"]), args.data, 20)
            results[mode] = r
            rows.append([mode, r["val_main_forces_rmse_mev"], r["ttt_check"]["naphthalene"]["base"],
                         r["ttt_check"]["naphthalene"]["ttt_gfn-ff"], r["ttt_check"]["toluene"]["base"],
                         r["ttt_check"]["toluene"]["ttt_gfn-ff"]])
        write_json_atomic(RESULTS_DIR / "default_model_modes.json", {"every": args.every, "epochs": args.epochs,
                                                                     "results": results})
        print_table(["mode", "val F RMSE", "naph base", "naph TTT", "tol base", "tol TTT"], rows, fmt=".1f")
        return 0
    r = train(args.data, args.out, args.mode, args.epochs, args.every, args.seed, not args.quiet)
    command = "python benchmarks/train_default.py " + " ".join(argv if argv is not None else sys.argv[1:])
    r["command"] = command.strip()
    write_json_atomic(args.out / "summary.json", r)
    print(json.dumps(r, indent=2))
    if args.install:
        PACKAGE_MODEL.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r["best"], PACKAGE_MODEL)
        print(f"installed {PACKAGE_MODEL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
