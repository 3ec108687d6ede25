"""Workflows built on the calculators: molecular dynamics (``run_md``, ``ase-adapt md``, with restart
files and a stability monitor), relaxation (``run_relax``), NEB (``run_neb``), RSS hole screening
(``run_screen``), many tasks serially or on Dask (``run_tasks``, ``evaluate_files``), and the MD
helpers of the benchmarks (NVT with stability and h(r), NVE energy conservation)."""

from .batch import evaluate_files
from .dynamics import Ensemble, MDSettings, run_md
from .md import MDResult, distance_histogram, hr_mae, nve_energies, reference_bonds, run_nvt
from .neb import NEBSettings, run_neb
from .relax import Optimizer, RelaxSettings, run_relax
from .screen import ScreenSettings, run_screen
from .screen_report import HoleCriteria, flag_records
from .tasks import ModelSource, Task, run_tasks

__all__ = ["Ensemble", "MDSettings", "run_md", "Optimizer", "RelaxSettings", "run_relax", "NEBSettings", "run_neb",
           "ScreenSettings", "run_screen", "HoleCriteria", "flag_records", "Task", "ModelSource", "run_tasks",
           "evaluate_files", "MDResult", "run_nvt", "nve_energies", "reference_bonds", "distance_histogram", "hr_mae"]
