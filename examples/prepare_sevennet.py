"""Make SevenNet-0 TTT-ready with ``ase-adapt prepare``, then run it inside AdaptiveCalculator.

Run: pip install "ase-adapt[sevenn]"; python examples/prepare_sevennet.py   (about 20 s on one CPU
core, offline; the checkpoint goes to a temporary folder)

1. ``prepare_model`` (the function behind ``ase-adapt prepare``) attaches a ``prior:emt`` head to
   SevenNet-0, labels a dozen rattled copper cells with EMT and trains the head on them with the
   representation frozen, so the main head stays exactly SevenNet-0. It also computes the training
   statistics the shift detectors need, and writes one checkpoint.
2. ``load_model`` rebuilds the prepared model from the SevenNet-0 weights in the sevenn wheel (no
   network) and ``AdaptiveCalculator(model, prior="emt")`` adapts it to a new, hotter cell by
   test-time training against EMT before a few MD steps.
"""

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

import ase_adapt
from ase_adapt import AdaptiveCalculator
from ase_adapt.adapt.ttt import TTTSettings
from ase_adapt.priors import make_prior
from ase_adapt.train.prepare import PREPARE_OPTIM, PrepareSettings, prepare_model

torch.set_num_threads(1)

cells = []
for k in range(12):
    atoms = bulk("Cu", "fcc", a=3.61 + 0.03 * (k % 3 - 1), cubic=True)
    atoms.rattle(0.08, seed=k)
    cells.append(atoms)

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "7net-0-emt.safetensors"
    # the same as: ase-adapt prepare sevennet:7net-0 cells.xyz --prior emt --epochs 6 --out PATH
    settings = PrepareSettings(optim=dataclasses.replace(PREPARE_OPTIM, epochs=6, progress=False))
    result = prepare_model("sevennet:7net-0", cells, [make_prior("emt")], settings, out=path)
    print("prepare:", result.summary())

    model = ase_adapt.load_model(path)  # offline: SevenNet-0 from the sevenn wheel + the saved weights
    print(f"loaded {model.config['source']} (sevenn {model.config['sevenn_version']}), heads {model.head_names}")

calc = AdaptiveCalculator(model, prior="emt", adapt_when="always",
                          ttt=TTTSettings(lr=1e-4, max_steps=5, md_steps=0, n_rattled=4, guard=None))
atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
atoms.rattle(0.15, seed=99)
atoms.calc = calc
VelocityVerlet(atoms, 1.0 * units.fs).run(5)
r = calc.ttt_result
print(f"TTT on head {r.head}: {r.steps} steps, prior loss {r.loss_before:.4g} -> {r.loss_after:.4g}"
      f"{' (rolled back)' if r.rolled_back else ''}")
print(f"after 5 MD steps: E = {atoms.get_potential_energy():.4f} eV, "
      f"max |F| = {np.abs(atoms.get_forces()).max():.3f} eV/Å")
