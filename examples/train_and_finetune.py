"""Train a TTT-ready model jointly with a prior head, then fine-tune it two ways.

Run: python examples/train_and_finetune.py   (about half a minute on a laptop CPU; writes into a temp dir)

The toy data: random H/C/O clusters with EMT reference labels and smooth Lennard-Jones prior
labels (``ase_adapt.testing.toy_frames``). Real use reads extxyz files with ``read_frames``.
"""

import tempfile
from pathlib import Path

from ase.calculators.singlepoint import SinglePointCalculator

import ase_adapt
from ase_adapt.testing import toy_frames
from ase_adapt.train import FinetuneSettings, OptimSettings, TrainSettings, finetune_model, train_model

quick = OptimSettings(epochs=10, batch_size=8, lr=5e-3, progress=False)
frames = toy_frames(40, seed=0)

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    # 1. joint training: L_main + λ·L_prior on one representation
    model = ase_adapt.build_model(ase_adapt.ModelConfig.from_yaml("model-tiny"), elements=["H", "C", "O"])
    result = train_model(model, frames, TrainSettings(mode="joint", optim=quick), tmp / "train")
    first, last = result.history[0], result.history[-1]
    print(f"joint training: val loss {first['val_loss']:.3f} -> {last['val_loss']:.3f} "
          f"over {len(result.history)} epochs; best checkpoint {result.best_path.name}")
    stats = ase_adapt.load_model(result.best_path).training_stats
    print("training statistics:", ", ".join(sorted(stats)))

    # 2. new data at a "new level of theory": the same surface shifted by per-element offsets
    new = toy_frames(16, seed=1)
    for a in new:
        shift = {1: 0.3, 6: -1.2, 8: 0.8}
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy() + sum(shift[z] for z in a.numbers),
                                       forces=a.get_forces())
    for strategy in ("multihead", "lora"):
        base = ase_adapt.load_model(result.best_path)
        settings = FinetuneSettings.from_yaml(f"finetune-{strategy}", optim={"epochs": 5, "progress": False})
        ft = finetune_model(base, new, settings, tmp / strategy, replay_frames=frames[:16])
        print(f"{strategy:>9}: heads {base.head_names}, main-head E0(C) {base.heads['main'].e0[1]:.3f} eV, "
              f"val loss {ft.history[-1]['val_loss']:.3f}")
