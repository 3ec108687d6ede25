"""E0 tools: isolated atoms, least-squares averaging and model-aware re-estimation, CLI and API.

Run: python examples/e0_tools.py   (a few seconds; everything is written into a temp dir)

The setting: a model carries EMT-level E0s (EMT's isolated atoms). New reference data come from
another level, here EMT plus planted per-element offsets, so the true new E0s are known.
Averaging folds the interaction energy into the E0s; re-estimation fits only the per-element
offsets between the model's predictions and the new data.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.data import atomic_numbers
from ase.io import write

import ase_adapt
from ase_adapt.cli.main import main
from ase_adapt.train import apply_e0, average_e0, head_e0, isolated_atom_e0, reestimate_e0

OFFSETS = {"H": 0.8, "C": -2.1, "N": 1.3, "O": -0.6}  # the "new level" minus EMT, per atom (eV)
NAMES = ["CH4", "NH3", "H2O", "C2H6", "CH3OH", "HCN", "CH3NO2", "CH3CH2OH", "HCOOH", "N2H4", "CH3CN", "H2CO"]


def labelled_frames(rng: np.random.Generator, per_molecule: int = 3) -> list:
    """Rattled small molecules with EMT energies and forces in atoms.info / atoms.arrays."""
    frames = []
    for name in NAMES:
        for _ in range(per_molecule):
            atoms = molecule(name)
            atoms.positions += rng.normal(0.0, 0.05, size=atoms.positions.shape)
            atoms.calc = EMT()
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = None
            atoms.info["emt_energy"] = energy
            atoms.info["energy"] = energy + sum(OFFSETS[s] for s in atoms.get_chemical_symbols())
            atoms.arrays["forces"] = forces
            frames.append(atoms)
    return frames


rng = np.random.default_rng(0)
frames = labelled_frames(rng)
emt_e0 = isolated_atom_e0(["H", "C", "N", "O"], EMT())
true_new = {z: emt_e0[z] + OFFSETS[s] for z, s in zip((1, 6, 7, 8), "HCNO")}

# A stand-in for "a model trained at the EMT level": a tiny untrained model whose E0s are EMT's
# isolated atoms (the training tools fill in weights; here only the E0 bookkeeping matters).
model = ase_adapt.build_model(elements=["H", "C", "N", "O"], channels=8, num_layers=1, dtype="float64")
apply_e0(model, emt_e0, head="main")

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    data = tmp / "new_level.xyz"
    write(data, frames, format="extxyz")
    pre = model.save(tmp / "pre.safetensors")

    print("1. isolated atoms with EMT (CLI):")
    assert main(["e0", "--method", "isolated", "--calculator", "emt", "--elements", "H", "C", "N", "O"]) == 0

    print("\n2. least-squares averaging of the new-level energies (CLI, JSON out):")
    assert main(["e0", "--method", "average", "--data", str(data), "--json", str(tmp / "avg.json")]) == 0
    averaged = json.loads((tmp / "avg.json").read_text())

    print("\n3. re-estimation with the pretrained model, written into a copy (CLI):")
    tuned = tmp / "tuned.safetensors"
    assert main(["e0", "--method", "reestimate", "--model", str(pre), "--data", str(data),
                 "--head", "main", "--out", str(tuned)]) == 0
    reestimated = head_e0(ase_adapt.load_model(tuned), "main")
    assert head_e0(ase_adapt.load_model(pre), "main") == head_e0(model, "main")  # input untouched

    # the same through the Python API (the extxyz round trip rounds positions slightly)
    api = reestimate_e0(model, frames)
    assert all(abs(api[z] - reestimated[z]) < 1e-4 for z in api)
    api = average_e0(frames)
    assert all(abs(api[atomic_numbers[s]] - v) < 1e-4 for s, v in averaged.items())

print("\nE0s (eV): the true new level, and the two fits")
print(f"{'element':<8} {'true':>12} {'averaged':>12} {'re-estimated':>13}")
for z, s in zip((1, 6, 7, 8), "HCNO"):
    print(f"{s:<8} {true_new[z]:12.3f} {averaged[s]:12.3f} {reestimated[z]:13.3f}")
print("The stand-in model is untrained: its interaction energies are arbitrary, and so are its")
print("re-estimated E0s. benchmarks/e0_reestimation.py compares the two fits with a trained model.")
