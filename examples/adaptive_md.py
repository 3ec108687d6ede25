"""Adaptive MD: a TTT-ready toy model notices an unfamiliar molecule, adapts once, and runs MD.

Run: python examples/adaptive_md.py   (well under a minute on a laptop CPU; writes into a temp dir)

The toy model is trained on random H/C/O clusters (EMT reference, smooth-LJ prior) and then meets
ethanol, a bonded molecule unlike its training data. Real use loads a trained checkpoint and a
real prior: ``AdaptiveCalculator("model.safetensors", prior="gfn-ff")``.
"""

import tempfile
from pathlib import Path

import numpy as np
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin

import ase_adapt
from ase_adapt import AdaptiveCalculator
from ase_adapt.testing import toy_frames, toy_prior
from ase_adapt.train import OptimSettings, TrainSettings, train_model
from ase_adapt.adapt.ttt import TTTSettings

with tempfile.TemporaryDirectory() as tmp:
    model = ase_adapt.build_model(ase_adapt.ModelConfig.from_yaml("model-tiny"), elements=["H", "C", "O"])
    train_model(model, toy_frames(40, seed=0),
                TrainSettings(mode="joint", optim=OptimSettings(epochs=10, progress=False)), Path(tmp) / "train")

    atoms = molecule("CH3CH2OH")
    calc = AdaptiveCalculator(model, prior=toy_prior(), prior_head="prior", radius_refinement=True,
                              ttt=TTTSettings(lr=1e-2, max_steps=100), event_log=Path(tmp) / "events.jsonl")
    atoms.calc = calc
    print(f"E = {atoms.get_potential_energy():.3f} eV")
    print(calc.shift_report.summary())
    r = calc.ttt_result
    print(f"TTT: {r.steps} steps, prior loss {r.loss_before:.3f} -> {r.loss_after:.3f} ({r.stop_reason}), "
          f"{r.seconds:.2f} s")

    dyn = Langevin(atoms, 0.1 * units.fs, temperature_K=300, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(0))
    dyn.run(10)
    print(f"after 10 MD steps: {len(calc.events)} check(s), actions: {[e['action'] for e in calc.events]}")
    print("event log lines:", len((Path(tmp) / "events.jsonl").read_text().splitlines()))
