"""``ase-adapt relax``: geometry optimisation of positions, and of the cell for 3D-periodic systems.

FIRE, BFGS or LBFGS (ASE's optimizers) to ``fmax`` (eV/Å) within ``steps``. A cell periodic in all
three directions is relaxed too (``cell="auto"``) through :class:`ase.filters.FrechetCellFilter`,
whose generalised forces include the stress times the volume, so ``fmax`` also bounds the
remaining stress. With an :class:`~ase_adapt.AdaptiveCalculator`, adaptation happens when the
structure has changed enough to count as a new system (its topology trigger), as in MD.

Outputs in ``out``: ``relax.extxyz`` (every ``traj_every`` steps, appended), ``relax.log`` (step,
energy, fmax and the calculator's adaptation events), ``final.extxyz`` and ``summary.json``
(converged or not, steps, energies, fmax, volume change), the last two written atomically.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .._io import atomic_write, check_writable, write_json
from .._settings import check_types

__all__ = ["Optimizer", "RelaxSettings", "run_relax"]


class Optimizer(str, enum.Enum):
    FIRE = "fire"
    BFGS = "bfgs"
    LBFGS = "lbfgs"


class CellMode(str, enum.Enum):
    AUTO = "auto"    # the cell too when periodic in all three directions
    FIXED = "fixed"  # positions only


@dataclass(frozen=True)
class RelaxSettings:
    optimizer: Optimizer = Optimizer.FIRE
    fmax: float = 0.05          # eV/Å (and the stress x volume, for the cell)
    steps: int = 500
    cell: CellMode = CellMode.AUTO
    traj_every: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        if not self.fmax > 0 or self.steps < 1 or self.traj_every < 1:
            raise ValueError(f"need fmax > 0, steps >= 1, traj_every >= 1; got {self.fmax}, {self.steps}, {self.traj_every}")


def _optimizer(target, name: Optimizer):
    from ase.optimize import BFGS, FIRE, LBFGS

    return {Optimizer.FIRE: FIRE, Optimizer.BFGS: BFGS, Optimizer.LBFGS: LBFGS}[name](target, logfile=None)


def _fmax(target) -> float:
    return float(np.linalg.norm(target.get_forces(), axis=1).max())


def run_relax(atoms: Atoms, calc: Any, settings: RelaxSettings | None = None,
              out: str | Path = "relax-output") -> dict[str, Any]:
    """Relax a copy of ``atoms`` with ``calc``; write the outputs into ``out``; return the summary."""
    from ase.filters import FrechetCellFilter
    from ase.io import write
    from tqdm.auto import tqdm

    s = settings or RelaxSettings()
    out = check_writable(out, directory=True)
    a = atoms.copy()
    a.calc = calc
    with_cell = s.cell is CellMode.AUTO and bool(a.pbc.all())
    cell_note = None
    if with_cell and not _has_periodic_neighbours(a, float(getattr(getattr(calc, "model", None), "cutoff", 6.0))):
        with_cell = False
        cell_note = ("the cell was not relaxed: no atom has a periodic image within the model's cutoff, so the "
                     "stress is zero and says nothing about the cell (a molecule in a box); relax it without "
                     "periodic boundaries, or in a cell small enough for its images to interact")
    target = FrechetCellFilter(a) if with_cell else a
    e0, v0 = a.get_potential_energy(), a.get_volume() if with_cell else None
    for name in ("relax.extxyz", "relax.log"):
        (out / name).unlink(missing_ok=True)
    log = open(out / "relax.log", "w")
    log.write("#  step         energy/eV     fmax/(eV/Å)\n")
    seen = 0
    opt = _optimizer(target, s.optimizer)
    t0, converged = time.perf_counter(), False
    try:
        with tqdm(total=s.steps, unit="step", desc=f"relax {s.optimizer.value}", disable=None if s.progress else True) as bar:
            for converged in opt.irun(fmax=s.fmax, steps=s.steps):  # yields at step 0, 1, ..., steps
                step = opt.nsteps
                events = getattr(calc, "events", None) or []
                log.writelines(f"# event at step {step}: {e.get('kind')} ({e.get('action')})\n" for e in events[seen:])
                seen = len(events)
                log.write(f"{step:>7d} {a.get_potential_energy():>17.6f} {_fmax(target):>15.5f}\n")
                if step % s.traj_every == 0 or converged:
                    write(out / "relax.extxyz", a, format="extxyz", append=True)
                bar.update(step - bar.n)
    finally:
        log.close()
    text_final = _extxyz(a)
    atomic_write(out / "final.extxyz", lambda p: p.write_text(text_final))
    summary = {"settings": {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(s).items()},
               "converged": bool(converged), "steps": opt.nsteps, "cell_relaxed": with_cell, "cell_note": cell_note,
               "energy_initial_eV": e0, "energy_final_eV": a.get_potential_energy(), "fmax_final": _fmax(target),
               "volume_change": (a.get_volume() / v0 - 1.0) if with_cell else None,
               "seconds": time.perf_counter() - t0,
               "outputs": {n: str(out / n) for n in ("relax.extxyz", "relax.log", "final.extxyz")}}
    write_json(out / "summary.json", summary)
    return summary


def _has_periodic_neighbours(atoms: Atoms, cutoff: float) -> bool:
    """Whether any atom sees a periodic image (of itself or another atom) within ``cutoff``."""
    from ..graph import neighbour_list

    _, _, shifts, _ = neighbour_list(atoms, cutoff)
    return bool(np.any(shifts != 0))


def _extxyz(atoms: Atoms) -> str:
    import io

    from ase.io import write

    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    return buf.getvalue()
