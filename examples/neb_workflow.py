"""NEB: an Au adatom hops between two hollow sites of Al(100) (EMT), the workflow's textbook case.
The same call takes an ase-adapt calculator factory: ``lambda: MLFFCalculator(model)``.

Run: python examples/neb_workflow.py   (a few seconds; writes into a temp dir)
CLI:  ase-adapt neb start.xyz end.xyz --images 5 --out neb1
"""

import tempfile
from pathlib import Path

from ase.build import add_adsorbate, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from ase_adapt.workflows import NEBSettings, run_neb

slab = fcc100("Al", size=(2, 2, 3))
add_adsorbate(slab, "Au", 1.7, "hollow")
slab.center(axis=2, vacuum=4.0)
slab.set_constraint(FixAtoms(mask=[atom.tag > 1 for atom in slab]))
final = slab.copy()
final[-1].x += slab.get_cell()[0, 0] / 2

with tempfile.TemporaryDirectory() as tmp:
    summary = run_neb(slab, final, EMT, NEBSettings(n_images=3, progress=False), Path(tmp) / "neb")
    print(f"converged={summary['converged']} in {summary['steps']} steps; barrier "
          f"{summary['barrier_forward_eV']:.3f} eV forward, {summary['barrier_backward_eV']:.3f} eV backward")
    print("image energies (eV, relative):", [round(e - summary["energies_eV"][0], 3) for e in summary["energies_eV"]])
    assert summary["converged"] and summary["barrier_forward_eV"] > 0
