"""Molecular dynamics helpers: seeded Langevin NVT with progress, stability and h(r).

Used by the demo and the unseen-molecule benchmark. Stability follows Fu et al.: a run is
stable until the largest deviation of a reference bond length (bonds of the starting structure)
from its reference value exceeds 0.5 Å. A :class:`~ase_adapt.errors.CalculationFailed` (NaN,
overlapping atoms) ends the run as unstable instead of crashing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import CalculationFailed

from .._io import bar_disabled
from ..adapt.topology import covalent_bonds

__all__ = ["MDResult", "reference_bonds", "run_nvt", "nve_energies", "distance_histogram", "hr_mae"]


@dataclass
class MDResult:
    positions: np.ndarray                      # [frames, atoms, 3], every `stride` steps
    steps: int                                 # steps completed
    timestep_fs: float
    stable_steps: int                          # steps until the bond deviation passed the limit
    max_bond_deviation: float                  # Å, over the completed run
    seconds: float
    failure: str | None = None                 # why the run stopped early, if it did
    temperatures: list[float] = field(default_factory=list)

    @property
    def stable_ps(self) -> float:
        return self.stable_steps * self.timestep_fs / 1000.0

    def summary(self) -> dict:
        return {"steps": self.steps, "timestep_fs": self.timestep_fs, "stable_ps": self.stable_ps,
                "stable_steps": self.stable_steps, "max_bond_deviation_A": self.max_bond_deviation,
                "seconds": self.seconds, "seconds_per_step": self.seconds / max(self.steps, 1),
                "failure": self.failure, "mean_temperature_K": float(np.mean(self.temperatures)) if self.temperatures else None}


def reference_bonds(atoms: Atoms, factor: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Covalent bonds (i, j pairs, :func:`~ase_adapt.adapt.topology.covalent_bonds`) of ``atoms`` and their lengths."""
    bonds = covalent_bonds(atoms, factor)
    lengths = atoms.get_distances(bonds[:, 0], bonds[:, 1], mic=bool(atoms.pbc.any())) if len(bonds) else np.zeros(0)
    return bonds, np.asarray(lengths, dtype=np.float64)


def run_nvt(
    atoms: Atoms,
    calc,
    steps: int,
    *,
    temperature_K: float = 500.0,
    timestep_fs: float = 0.5,
    friction_per_fs: float = 0.01,
    stride: int = 10,
    seed: int = 0,
    deviation_limit: float = 0.5,
    stop_when_unstable: bool = True,
    progress: bool = True,
    desc: str = "NVT",
    trajectory: str | Path | None = None,
) -> MDResult:
    """Langevin NVT from ``atoms`` (copied) with ``calc``; positions kept every ``stride`` steps."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta
    from tqdm.auto import tqdm

    a = atoms.copy()
    a.calc = calc
    rng = np.random.default_rng(seed)
    thermalize_momenta(a, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(a, timestep_fs * units.fs, temperature_K=temperature_K, friction=friction_per_fs / units.fs,
                   fixcm=False, rng=rng)
    bonds, ref = reference_bonds(atoms)
    frames, temps = [a.positions.copy()], []
    stable, worst, failure, done = None, 0.0, None, 0
    t0 = time.perf_counter()
    with tqdm(total=steps, desc=desc, unit="step", disable=bar_disabled(progress), leave=False) as bar:
        while done < steps:
            n = min(stride, steps - done)
            try:
                dyn.run(n)
            except CalculationFailed as exc:
                failure = f"calculation failed at step ~{done + n}: {exc}"
                break
            done += n
            bar.update(n)
            pos = a.positions.copy()
            if not np.isfinite(pos).all():
                failure = f"non-finite positions at step {done}"
                break
            frames.append(pos)
            temps.append(float(a.get_temperature()))
            if len(bonds):
                dev = float(np.abs(np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=1) - ref).max())
                worst = max(worst, dev)
                if stable is None and dev > deviation_limit:
                    stable = done
                    if stop_when_unstable:
                        failure = f"bond deviation {dev:.2f} Å > {deviation_limit} Å at step {done}"
                        break
    seconds = time.perf_counter() - t0
    if stable is None:
        stable = done if failure is None else done
    positions = np.array(frames)
    if trajectory is not None:
        from .._io import atomic_write
        from ..train.data import frames_to_extxyz

        images = [Atoms(numbers=atoms.numbers, positions=p) for p in positions]
        text = frames_to_extxyz(images)
        atomic_write(trajectory, lambda p: Path(p).write_text(text))
    return MDResult(positions, done, timestep_fs, stable, worst, seconds, failure, temps)


def distance_histogram(positions: np.ndarray, r_max: float = 6.0, bins: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """h(r): the normalised histogram of all interatomic distances over a trajectory."""
    n = positions.shape[1]
    i, j = np.triu_indices(n, k=1)
    d = np.linalg.norm(positions[:, i] - positions[:, j], axis=-1).ravel()
    hist, edges = np.histogram(d, bins=bins, range=(0.0, r_max), density=True)
    return 0.5 * (edges[1:] + edges[:-1]), hist


def hr_mae(h: np.ndarray, h_ref: np.ndarray) -> float:
    """Mean absolute difference of two h(r) on the same bins."""
    return float(np.mean(np.abs(np.asarray(h) - np.asarray(h_ref))))


def nve_energies(atoms: Atoms, calc, steps: int, *, timestep_fs: float = 0.5, temperature_K: float = 300.0,
                 seed: int = 0, relax_fmax: float | None = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(total energy, temperature) at every step of an NVE run (VelocityVerlet), for energy conservation.

    ``atoms`` is changed in place: relaxed with BFGS to ``relax_fmax`` (None: not relaxed), given
    Maxwell-Boltzmann velocities at ``temperature_K`` without net momentum or rotation, then run.
    The arrays have ``steps + 1`` entries (the start included).
    """
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    from ase.optimize import BFGS

    atoms.calc = calc
    if relax_fmax is not None:
        BFGS(atoms, logfile=None).run(fmax=relax_fmax, steps=200)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    energies, temperatures = [atoms.get_total_energy()], [atoms.get_temperature()]

    def record() -> None:
        energies.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())

    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dyn.attach(record, interval=1)
    dyn.run(steps)
    return np.array(energies), np.array(temperatures)
