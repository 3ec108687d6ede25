"""Training statistics: compute them for a model, save and reload them, read them back.

The model here is tiny and untrained, and the labels come from EMT (reference) and
Lennard-Jones (prior), so the numbers show the machinery, not chemistry.

Run: python examples/training_stats.py   (a few seconds; writes only into a temp dir)
"""

import tempfile
from pathlib import Path

import numpy as np
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

import ase_adapt
from ase_adapt.shift import TrainingStats, attach_training_stats, compute_training_stats, laplacian_spectrum
from ase_adapt.shift.spectrum import spectral_distance

# A few rattled small molecules with reference (EMT) and prior (LJ) labels.
frames = []
for k, name in enumerate(["CH4", "H2O", "NH3", "C2H4", "CH3OH", "HCN", "CH3CH2OH"]):
    atoms = molecule(name)
    atoms.rattle(0.05, seed=k)
    atoms.calc = EMT()
    atoms.info["energy"], atoms.arrays["forces"] = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = LennardJones(sigma=1.0, epsilon=0.1, rc=4.0)
    atoms.info["prior_energy"], atoms.arrays["prior_forces"] = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = None
    frames.append(atoms)

model = ase_adapt.build_model(elements=["H", "C", "N", "O"], channels=8, num_layers=2, cutoff=4.0, dtype="float64")
stats = compute_training_stats(model, frames, progress=False)
attach_training_stats(model, stats)

with tempfile.TemporaryDirectory() as tmp:
    loaded = ase_adapt.load_model(model.save(Path(tmp) / "model.safetensors"))
view = TrainingStats.from_model(loaded)
assert np.array_equal(view.spectrum_mean, stats["spectrum_mean"])

print(f"elements {view.elements}, {view.n_frames} frames at cutoff {view.cutoff} Å")
prior_norm = view.prior_force_norm("prior")
print(f"prior |F| per structure: {prior_norm['mean']:.3f} ± {prior_norm['std']:.3f} eV/Å")
print(f"spectral distance to the average spectrum: {view.spectral_distance_mean:.3f} ± "
      f"{view.spectral_distance_std:.3f}  (spectrum length {len(view.spectrum_mean)})")
print(f"training prior loss (TTT's reference point): {view.prior_loss('prior'):.4g}")

# How a new structure compares (the connectivity criterion, k = 1).
new = molecule("C6H6")
d = spectral_distance(laplacian_spectrum(new, view.cutoff), view.spectrum_mean)
z = (d - view.spectral_distance_mean) / view.spectral_distance_std
print(f"benzene: spectral distance {d:.3f}, z = {z:.1f} -> {'shifted' if z > 1 else 'in distribution'}")
