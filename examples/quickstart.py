"""Quickstart: build a model, save and reload it, and use it as an ASE calculator.

Run: python examples/quickstart.py   (a few seconds on a laptop CPU; writes into a temp dir)
"""

import tempfile
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk, molecule
from ase.md.verlet import VelocityVerlet

import ase_adapt

# An untrained model with a main and a prior head (the training tools fill in the weights).
model = ase_adapt.build_model(elements=["H", "C", "N", "O", "Si"], channels=16, num_layers=2)
model.heads["main"].set_e0([-13.6, -1029.8, -1484.9, -2041.8, -3245.0])

with tempfile.TemporaryDirectory() as tmp:
    path = model.save(Path(tmp) / "model.safetensors")
    model = ase_adapt.load_model(path)
print("heads:", model.head_names, " parameters:", sum(p.numel() for p in model.parameters()))

# A molecule: energy, per-atom energies, forces.
atoms = molecule("CH3CH2OH")
atoms.calc = ase_adapt.MLFFCalculator(model)
e = atoms.get_potential_energy()
assert np.isclose(e, atoms.get_potential_energies().sum())
print(f"ethanol  E = {e:.4f} eV   max|F| = {np.abs(atoms.get_forces()).max():.4f} eV/Å")

# A periodic crystal: stress too.
si = bulk("Si", "diamond", 5.43) * (2, 2, 2)
si.rattle(0.05, seed=0)
si.calc = ase_adapt.MLFFCalculator(model)
print(f"Si16     E = {si.get_potential_energy():.4f} eV   stress = {np.round(si.get_stress(), 5)}")

# Both heads from one representation pass.
graph = ase_adapt.build_graph(atoms, cutoff=model.cutoff)
out = model(graph, head=["main", "prior"])
print("main vs prior energy:", float(out["main"]["energy"][0]), float(out["prior"]["energy"][0]))

# A few steps of NVE molecular dynamics.
dyn = VelocityVerlet(atoms, 0.5 * units.fs)
dyn.run(10)
print(f"after 10 MD steps: E_pot = {atoms.get_potential_energy():.4f} eV")
