"""Workflows built on the calculators: molecular dynamics with stability and h(r) (more to come)."""

from .md import MDResult, distance_histogram, hr_mae, nve_energies, reference_bonds, run_nvt

__all__ = ["MDResult", "run_nvt", "nve_energies", "reference_bonds", "distance_histogram", "hr_mae"]
