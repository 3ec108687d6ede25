"""A candidate stronger default model: SevenNet-0 fine-tuned on the training molecules (issue 13's capacity lever).

    python benchmarks/foundation_default.py            # full run -> benchmarks/results/foundation_default.json
    python benchmarks/foundation_default.py --quick    # smoke run -> benchmarks/results/foundation_default_quick.json

The default model's representation is small (issue 13: the adapted main head stalls at the
capacity of 64 channels trained on three molecules). SevenNet-0 has a large pretrained one, costs
what the issue allows per call, and is 3.4 MB. Question: fine-tuned naively on the training
molecules' GFN2-xTB labels, how close does its main head get to the ≤ 40 meV/Å target on held-out
frames of those molecules?

Protocol: aspirin, benzene, uracil (role: training, shared/molecules.md), 500 K MD frames of
benchmarks/data.py. Training: every STRIDE-th frame of the first 800 of each molecule; held out:
the last 200 of each (time-separated, as in train_default.py), of which every 10th validates during
training and all are scored at the end. ase_adapt.train.finetune_model, strategy naive (every weight),
AdamW, cosine schedule, EMA, E0s re-estimated; float32, one CPU thread. The run resumes after a kill
(the trainer's state in benchmarks/default_model/foundation_run/).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, timestamp, torch_info, write_json_atomic  # noqa: E402

NAME = "foundation_default"
TRAINING = ("aspirin", "benzene", "uracil")


def split(stride: int, n_train_pool: int = 800):
    from ase_adapt.train.data import read_frames

    train, val, held = [], [], {}
    for m in TRAINING:
        frames = read_frames(BENCH_DIR / "data" / f"{m}.xyz")
        train += frames[:n_train_pool:stride]
        held[m] = frames[-200:]
        val += frames[-200::10]
    return train, val, held


def score(model, frames) -> dict[str, float]:
    import numpy as np

    from ase_adapt.graph import build_graph
    from ase_adapt.labels import get_label

    err = []
    for k in range(0, len(frames), 16):
        batch = frames[k:k + 16]
        out = model(build_graph(batch, model.cutoff, dtype=model.dtype), "main")
        ref = np.concatenate([get_label(a, "forces") for a in batch])
        err.append(out["forces"].double().numpy() - ref)
    e = np.concatenate(err)
    return {"force_mae_mev_per_A": float(np.abs(e).mean() * 1e3), "force_rmse_mev_per_A": float(np.sqrt((e**2).mean()) * 1e3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--stride", type=int, default=4, help="every STRIDE-th of the first 800 frames trains (default 4)")
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    import torch

    import ase_adapt
    from ase_adapt.train.finetune import FinetuneSettings, finetune_model
    from ase_adapt.train.optim import OptimSettings

    torch.set_num_threads(1)
    q = args.quick
    epochs, stride = (1, 100) if q else (args.epochs, args.stride)
    train, val, held = split(stride)
    if q:
        val, held = val[:4], {m: f[:4] for m, f in held.items()}
    out = BENCH_DIR / ("default_model_quick" if q else "default_model") / "foundation_run"
    t0 = time.perf_counter()
    base = ase_adapt.load_model("sevennet:7net-0")
    before = {m: score(base, f) for m, f in held.items()}
    model = ase_adapt.load_model("sevennet:7net-0")
    s = FinetuneSettings(strategy="naive", compute_stats=False,
                         optim=OptimSettings(epochs=epochs, batch_size=8, lr=args.lr, scheduler="cosine",
                                             ema_decay=0.99, patience=None, progress=False))
    resume = (out / "state.pt").exists()
    result = finetune_model(model, train, s, out, val_frames=val, resume=resume)
    best = ase_adapt.load_model(str(out / "best.safetensors"))
    after = {m: score(best, f) for m, f in held.items()}
    rows = [[m, before[m]["force_mae_mev_per_A"], after[m]["force_mae_mev_per_A"], after[m]["force_rmse_mev_per_A"]]
            for m in TRAINING]
    print_table(["molecule", "SevenNet-0 MAE", "fine-tuned MAE", "fine-tuned RMSE"], rows, fmt=".1f")
    write_json_atomic(RESULTS_DIR / f"{NAME}{'_quick' if q else ''}.json", {
        "benchmark": NAME, "schema_version": 1, "mode": "quick" if q else "full", "created": timestamp(),
        "machine": machine_info(), "torch": torch_info(), "threads": 1,
        "protocol": __doc__.split("Protocol:", 1)[1].strip(),
        "settings": {"epochs": epochs, "stride": stride, "lr": args.lr, "n_train": len(train), "n_val": len(val)},
        "held_out_before": before, "held_out_after": after, "history": result.history,
        "wall_seconds": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    sys.exit(main())
