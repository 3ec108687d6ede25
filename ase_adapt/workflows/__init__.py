"""Workflows built on the calculators: molecular dynamics (``run_md``, the ``ase-adapt md`` command,
with restart files and a stability monitor), relaxation (``run_relax``, ``ase-adapt relax``) and the MD helpers of the benchmarks (NVT with
stability and h(r), NVE energy conservation)."""

from .dynamics import Ensemble, MDSettings, run_md
from .md import MDResult, distance_histogram, hr_mae, nve_energies, reference_bonds, run_nvt
from .neb import NEBSettings, run_neb
from .relax import Optimizer, RelaxSettings, run_relax

__all__ = ["Ensemble", "MDSettings", "run_md", "Optimizer", "RelaxSettings", "run_relax", "NEBSettings", "run_neb", "MDResult", "run_nvt", "nve_energies", "reference_bonds",
           "distance_histogram", "hr_mae"]
