"""Use a foundation model: SevenNet-0 (shipped inside the sevenn wheel) through ase-adapt.

Run: pip install "ase-adapt[sevenn]"; python examples/sevennet_model.py   (about 20 s on one CPU core,
offline, writes nothing)

1. ``load_model("sevennet:7net-0")`` wraps SevenNet-0; its ``main`` head gives SevenNet's own energy,
   forces and stress.
2. A prior head (``prior:emt``) is attached and the training statistics the shift detectors need are
   computed on a few copper frames. The head here is untrained, so the adaptation below only shows
   the mechanics; `ase-adapt prepare` trains prior heads on prior-labelled structures (see
   examples/prepare_sevennet.py).
3. ``AdaptiveCalculator`` checks the system, refines the graph radius, adapts the representation
   to the EMT prior (TTT) and runs a few MD steps.
"""

import warnings

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet

import ase_adapt
from ase_adapt import AdaptiveCalculator, MLFFCalculator
from ase_adapt.adapt.ttt import TTTSettings
from ase_adapt.shift.stats import attach_training_stats, compute_training_stats

torch.set_num_threads(1)

# 1. SevenNet-0 as an ase-adapt model, checked against SevenNet's own calculator
model = ase_adapt.load_model("sevennet:7net-0")
print(f"SevenNet-0: {len(model.elements)} elements, cutoff {model.cutoff} Å, heads {model.head_names}")
print("representation:", [name for name, _ in model.representation_blocks()])

si = bulk("Si", "diamond", a=5.43, cubic=True)
si.rattle(0.05, seed=1)
ours = si.copy()
ours.calc = MLFFCalculator(model)
try:
    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = si.copy()
        theirs.calc = SevenNetCalculator("7net-0", device="cpu")
    print(f"vs SevenNetCalculator: |dE| = {abs(ours.get_potential_energy() - theirs.get_potential_energy()):.1e} eV, "
          f"max |dF| = {np.abs(ours.get_forces() - theirs.get_forces()).max():.1e} eV/Å, "
          f"max |dσ| = {np.abs(ours.get_stress() - theirs.get_stress()).max():.1e} eV/Å³")
except ImportError:
    pass

# 2. a prior head and training statistics (prior labels from EMT on rattled copper)
model.new_head("prior:emt")
frames = []
for seed in range(4):
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    cu.rattle(0.05, seed=seed)
    labelled = cu.copy()
    labelled.calc = EMT()
    cu.info["prior_emt_energy"] = labelled.get_potential_energy()
    cu.arrays["prior_emt_forces"] = labelled.get_forces()
    frames.append(cu)
attach_training_stats(model, compute_training_stats(model, frames, energy_key=None, forces_key=None,
                                                    progress=False))

# 3. adaptive MD on a strained, hot copper cell
atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 1, 1))
atoms.rattle(0.1, seed=7)
atoms.calc = AdaptiveCalculator(model, prior="emt", radius_refinement=True,
                                ttt=TTTSettings(max_steps=10, lr=1e-4, md_steps=0, n_rattled=4, guard=None))
dyn = VelocityVerlet(atoms, 1.0 * units.fs)
dyn.run(5)
calc = atoms.calc
report = calc.shift_report
print(f"shifted: {report.shifted} ({'; '.join(report.reasons) or 'no detector fired'}), radius {calc.radius:.2f} Å")
if calc.ttt_result is not None:
    r = calc.ttt_result
    print(f"TTT: {r.steps} steps, held-out prior loss {r.loss_before:.3g} -> {r.loss_after:.3g} ({r.stop_reason})")
print(f"after 5 MD steps: E = {atoms.get_potential_energy():.4f} eV, "
      f"max |F| = {np.abs(atoms.get_forces()).max():.3f} eV/Å")
