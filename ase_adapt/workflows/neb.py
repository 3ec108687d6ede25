"""``ase-adapt neb``: a minimum-energy path and its barrier between two structures.

Endpoints -> relaxed endpoints (optional) -> IDPP interpolation -> NEB with a climbing image
(:mod:`ase.mep`), optimised with FIRE to ``fmax``.

**One calculator per image.** Each image gets its own calculator from ``calculator()`` (a
factory), so with :class:`~ase_adapt.AdaptiveCalculator` every image keeps its own adaptive state.
Sharing one would not work: the images are different structures, often with different bond
topologies near the saddle, so a shared calculator's trigger would see a "new system" at nearly
every force call as NEB walks along the images, re-checking (and re-adapting) over and over, and
its cache would hold one image's adaptation while another is evaluated. Each image's own
calculator adapts once, when its structure first counts as new, like an MD run.

Outputs in ``out``: ``initial_path.extxyz`` (the interpolation), ``neb.extxyz`` (the final path),
``neb.log`` (step and fmax), ``profile.png`` (energy along the path) and ``summary.json``
(converged or not, forward and backward barriers, the energy of every image, the climbing image).
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ase import Atoms

from .._io import atomic_write, check_writable, write_json
from .._settings import check_types

__all__ = ["NEBSettings", "run_neb"]


@dataclass(frozen=True)
class NEBSettings:
    n_images: int = 5               # intermediate images (the endpoints come on top)
    climb: bool = True
    fmax: float = 0.05              # eV/Å
    steps: int = 500
    relax_endpoints: bool = True
    endpoint_fmax: float = 0.02
    spring: float = 0.1             # eV/Å²
    progress: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        if self.n_images < 1 or self.steps < 1 or not (self.fmax > 0 and self.endpoint_fmax > 0 and self.spring > 0):
            raise ValueError("NEB needs n_images >= 1, steps >= 1 and fmax, endpoint_fmax, spring > 0")


def _extxyz(images: list[Atoms]) -> str:
    from ase.io import write

    buf = io.StringIO()
    write(buf, images, format="extxyz")
    return buf.getvalue()


def _relax(atoms: Atoms, calc, fmax: float) -> Atoms:
    from ase.optimize import BFGS

    a = atoms.copy()
    a.calc = calc
    BFGS(a, logfile=None).run(fmax=fmax, steps=500)
    return a


def run_neb(initial: Atoms, final: Atoms, calculator: Callable[[], Any], settings: NEBSettings | None = None,
            out: str | Path = "neb-output") -> dict[str, Any]:
    """NEB from ``initial`` to ``final`` (same atoms, same order); ``calculator()`` makes one calculator.

    Returns the summary (also written to ``out/summary.json``).
    """
    from ase.mep import NEB
    from ase.optimize import FIRE

    s = settings or NEBSettings()
    out = check_writable(out, directory=True)
    if len(initial) != len(final) or not np.array_equal(initial.numbers, final.numbers):
        raise ValueError("the NEB endpoints must hold the same atoms in the same order")
    t0 = time.perf_counter()
    if s.relax_endpoints:
        initial, final = _relax(initial, calculator(), s.endpoint_fmax), _relax(final, calculator(), s.endpoint_fmax)
    images = [initial.copy()] + [initial.copy() for _ in range(s.n_images)] + [final.copy()]
    for image in images:
        image.calc = calculator()
    neb = NEB(images, climb=s.climb, k=s.spring, method="improvedtangent")
    neb.interpolate(method="idpp")
    text = _extxyz(images)
    atomic_write(out / "initial_path.extxyz", lambda p: p.write_text(text))
    log = open(out / "neb.log", "w")
    opt = FIRE(neb, logfile=None)
    converged = False
    try:
        for converged in opt.irun(fmax=s.fmax, steps=s.steps):
            log.write(f"{opt.nsteps:>6d} {float(np.linalg.norm(neb.get_forces(), axis=1).max()):>12.5f}\n")
    finally:
        log.close()
    energies = np.array([image.get_potential_energy() for image in images])
    top = int(np.argmax(energies))
    text = _extxyz(images)
    atomic_write(out / "neb.extxyz", lambda p: p.write_text(text))
    plot = _profile(out, energies)
    summary = {"settings": asdict(s), "converged": bool(converged), "steps": opt.nsteps,
               "barrier_forward_eV": float(energies[top] - energies[0]),
               "barrier_backward_eV": float(energies[top] - energies[-1]),
               "reaction_energy_eV": float(energies[-1] - energies[0]),
               "energies_eV": energies.tolist(), "highest_image": top, "seconds": time.perf_counter() - t0,
               "outputs": [str(out / n) for n in ("initial_path.extxyz", "neb.extxyz", "neb.log")] + plot}
    write_json(out / "summary.json", summary)
    return summary


def _profile(out: Path, energies: np.ndarray) -> list[str]:
    """The energy profile as a PNG (skipped, with an empty list, where matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(range(len(energies)), energies - energies[0], "o-")
    ax.set_xlabel("image")
    ax.set_ylabel("E - E(initial) / eV")
    ax.set_title(f"barrier {energies.max() - energies[0]:.3f} eV")
    fig.tight_layout()
    atomic_write(out / "profile.png", lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return [str(out / "profile.png")]
