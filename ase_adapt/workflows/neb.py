"""``ase-adapt neb``: a minimum-energy path and its barrier between two structures.

Endpoints -> relaxed endpoints (optional) -> IDPP interpolation -> NEB with a climbing image
(:mod:`ase.mep`), optimised with FIRE to ``fmax``.

**One potential for every image.** Each image gets its own calculator from ``calculator()`` (a
factory; ASE's NEB wants one per image), and every image must see the same potential energy
surface: a barrier subtracts energies of different images. So adaptation happens once, before the
band: ``ase-adapt neb --prior`` adapts on the initial state and gives every image a plain
calculator on that one adapted model (:meth:`~ase_adapt.AdaptiveCalculator.adapted_model`),
frozen. An :class:`~ase_adapt.AdaptiveCalculator` per image would adapt each image on its own
(different weights, and with TTT's free energy offset different energy zeros), and one shared
adaptive calculator would re-check at nearly every force call as NEB walks along images of
different bond topology.

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


def _relax(atoms: Atoms, calc, fmax: float) -> tuple[Atoms, bool]:
    from ase.optimize import BFGS

    a = atoms.copy()
    a.calc = calc
    return a, bool(BFGS(a, logfile=None).run(fmax=fmax, steps=500))


def run_neb(initial: Atoms, final: Atoms, calculator: Callable[[], Any], settings: NEBSettings | None = None,
            out: str | Path = "neb-output") -> dict[str, Any]:
    """NEB from ``initial`` to ``final`` (same atoms, same order); ``calculator()`` makes one calculator.

    Returns the summary (also written to ``out/summary.json``).
    """
    from ase.mep import NEB
    from ase.optimize import FIRE
    from tqdm.auto import tqdm

    s = settings or NEBSettings()
    out = check_writable(out, directory=True)
    if len(initial) != len(final) or not np.array_equal(initial.numbers, final.numbers):
        raise ValueError("the NEB endpoints must hold the same atoms in the same order")
    t0 = time.perf_counter()
    endpoints_converged = None
    if s.relax_endpoints:
        (initial, ok_i), (final, ok_f) = _relax(initial, calculator(), s.endpoint_fmax), \
            _relax(final, calculator(), s.endpoint_fmax)
        endpoints_converged = ok_i and ok_f
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
        with tqdm(total=s.steps, unit="step", desc="NEB", disable=None if s.progress else True) as bar:
            for converged in opt.irun(fmax=s.fmax, steps=s.steps):
                log.write(f"{opt.nsteps:>6d} {float(np.linalg.norm(neb.get_forces(), axis=1).max()):>12.5f}\n")
                bar.update(opt.nsteps - bar.n)
    finally:
        log.close()
    energies = np.array([image.get_potential_energy() for image in images])
    top = int(np.argmax(energies))
    text = _extxyz(images)
    atomic_write(out / "neb.extxyz", lambda p: p.write_text(text))
    plot = _profile(out, energies)
    summary = {"settings": asdict(s), "converged": bool(converged), "steps": opt.nsteps,
               "endpoints_converged": endpoints_converged,
               "barrier_forward_eV": float(energies[top] - energies[0]),
               "barrier_backward_eV": float(energies[top] - energies[-1]),
               "reaction_energy_eV": float(energies[-1] - energies[0]),
               "energies_eV": energies.tolist(), "highest_image": top, "seconds": time.perf_counter() - t0,
               "outputs": [str(out / n) for n in ("initial_path.extxyz", "neb.extxyz", "neb.log")] + plot}
    write_json(out / "summary.json", summary)
    return summary


def _profile(out: Path, energies: np.ndarray) -> list[str]:
    """The energy profile as a PNG (skipped, with an empty list, where matplotlib is missing)."""
    try:  # a Figure of its own: no global backend switch inside a library call
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []
    fig = Figure(figsize=(4.5, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(range(len(energies)), energies - energies[0], "o-")
    ax.set_xlabel("image")
    ax.set_ylabel("E - E(initial) / eV")
    ax.set_title(f"barrier {energies.max() - energies[0]:.3f} eV")
    fig.tight_layout()
    atomic_write(out / "profile.png", lambda p: fig.savefig(p, format="png", dpi=120))
    return [str(out / "profile.png")]
