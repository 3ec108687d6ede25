"""Label a small dataset with a cheap prior: EMT "reference" labels, Lennard-Jones prior labels.

Run: python examples/label_prior.py   (a second or two; writes only into a temp dir)

The reference labels stand in for DFT (or GFN2-xTB) here; the prior is what test-time training
later fits against. ``label_frames`` keeps the reference labels and adds ``prior_energy`` /
``prior_forces``; if it is interrupted, calling it again resumes where it stopped.
"""

import tempfile
from pathlib import Path

import numpy as np
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

from ase_adapt.train import check_labels, label_frames, read_frames, split_frames, write_frames
from ase_adapt.train.data import get_label

rng = np.random.default_rng(0)
frames = []
for k in range(12):
    atoms = molecule(["CH4", "H2O", "NH3", "CH3OH"][k % 4])
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = EMT()  # the "reference" level of this toy
    atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    frames.append(atoms)

with tempfile.TemporaryDirectory() as tmp:
    data = write_frames(Path(tmp) / "reference.xyz", frames)
    out = label_frames(data, LennardJones(sigma=1.0, epsilon=0.01), Path(tmp) / "labelled.xyz",
                       prefix="prior", progress=False)
    labelled = read_frames(out)
    check_labels(labelled, ["energy", "forces", "prior_energy", "prior_forces"], path=out)
    print(f"{out.name}: {len(labelled)} frames, files in the directory: {sorted(p.name for p in Path(tmp).iterdir())}")

train, val = split_frames(len(labelled), val_fraction=0.25, seed=0)
print(f"split: {len(train)} training frames, validation frames {val}")
ref = np.concatenate([np.linalg.norm(get_label(a, "forces"), axis=1) for a in labelled])
prior = np.concatenate([np.linalg.norm(get_label(a, "prior_forces"), axis=1) for a in labelled])
print(f"mean |F|: reference {ref.mean():.3f} eV/Å, prior {prior.mean():.3f} eV/Å, "
      f"correlation of per-atom norms {np.corrcoef(ref, prior)[0, 1]:+.2f}")
for a in labelled[:4]:
    print(f"  {a.get_chemical_formula():6s} E_ref = {get_label(a, 'energy'):8.3f} eV   "
          f"E_prior = {get_label(a, 'prior_energy'):10.3f} eV")
