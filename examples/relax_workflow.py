"""Relaxation: the default model relaxes a rattled ethanol; EMT relaxes a strained copper cell
(positions and cell through FrechetCellFilter), the same workflow with any ASE calculator.

Run: python examples/relax_workflow.py   (a few seconds; writes into a temp dir)
CLI:  ase-adapt relax ethanol.xyz --fmax 0.02 --out relax1
"""

import tempfile
from pathlib import Path

import torch
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from ase_adapt import MLFFCalculator
from ase_adapt.workflows import RelaxSettings, run_relax

torch.set_num_threads(1)

with tempfile.TemporaryDirectory() as tmp:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=0)
    mol = run_relax(atoms, MLFFCalculator("default"), RelaxSettings(optimizer="bfgs", fmax=0.02, progress=False),
                    Path(tmp) / "ethanol")
    print(f"ethanol: converged={mol['converged']} in {mol['steps']} steps, "
          f"E {mol['energy_initial_eV']:.3f} -> {mol['energy_final_eV']:.3f} eV")

    cell = bulk("Cu", "fcc", a=3.75, cubic=True)  # 4 % too large for EMT
    cu = run_relax(cell, EMT(), RelaxSettings(optimizer="bfgs", fmax=1e-3, progress=False), Path(tmp) / "cu")
    print(f"Cu cell: converged={cu['converged']} in {cu['steps']} steps, volume {cu['volume_change']:+.1%}")
    assert mol["converged"] and cu["converged"] and cu["volume_change"] < -0.05
