"""``ase-adapt demo``: the quick tour (until the trained default model ships).

Builds a model, evaluates a molecule and a periodic crystal, and runs a short Langevin NVT
trajectory, printing timings. The model is *untrained* here: the numbers show the machinery
(graphs, heads, forces, stress, MD integration), not chemistry.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DemoSettings:
    molecule: str = "CH3CH2OH"  # an ase.build.molecule name or a structure file
    crystal: str = "Si"  # an ase.build.bulk name
    model: str | None = None  # checkpoint path; default: a freshly built default model
    md_steps: int = 50
    temperature_K: float = 500.0
    seed: int = 0
    json: str | None = None  # where to write the JSON summary (nothing is written otherwise)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="quick tour: evaluate a molecule and a crystal, run short MD",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DemoSettings()
    p.add_argument("--molecule", default=d.molecule, help=f"ase.build.molecule name or file (default {d.molecule})")
    p.add_argument("--crystal", default=d.crystal, help=f"ase.build.bulk name (default {d.crystal})")
    p.add_argument("--model", default=None, help="checkpoint to use (default: build an untrained default model)")
    p.add_argument("--md-steps", type=int, default=d.md_steps, help=f"Langevin steps (default {d.md_steps})")
    p.add_argument("--temperature", type=float, default=d.temperature_K, help="MD temperature in K (default 500)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    p.add_argument("--json", default=None, help="write a JSON summary to this path")


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    return DemoSettings(molecule=args.molecule, crystal=args.crystal, model=args.model,
                        md_steps=args.md_steps, temperature_K=args.temperature, seed=args.seed, json=args.json)


def _read_molecule(spec: str):
    from ase.build import molecule
    from ase.io import read

    if Path(spec).is_file():
        return read(spec)
    try:
        return molecule(spec)
    except KeyError:
        raise ValueError(f"{spec!r} is neither a file nor an ase.build.molecule name") from None


def _timed_forces(atoms, repeats: int = 5) -> float:
    atoms.get_forces()
    times = []
    for k in range(repeats):
        atoms.positions[0, 0] += 1e-4 * (-1) ** k  # invalidate the cache
        t = time.perf_counter()
        atoms.get_forces()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run(settings: DemoSettings) -> dict:
    from ase import units
    from ase.build import bulk
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from tqdm import tqdm

    from .. import MLFFCalculator, build_model, load_model
    from .._io import write_json

    mol = _read_molecule(settings.molecule)
    crystal = bulk(settings.crystal) * (2, 2, 2)
    crystal.rattle(0.05, seed=settings.seed)
    elements = sorted(set(mol.numbers) | set(crystal.numbers))
    model = load_model(settings.model) if settings.model else build_model(elements=elements, seed=settings.seed)
    if not settings.model:
        print("note: untrained model -- this tour shows the machinery, not chemistry")
    summary: dict = {"settings": asdict(settings), "model": model.config}

    for name, atoms in (("molecule", mol), ("crystal", crystal)):
        atoms.calc = MLFFCalculator(model, unknown_elements="nearest")
        seconds = _timed_forces(atoms)
        entry = {
            "formula": atoms.get_chemical_formula(), "atoms": len(atoms),
            "energy_eV": float(atoms.get_potential_energy()),
            "max_force_eV_per_A": float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
            "seconds_per_call": seconds,
        }
        if atoms.pbc.all():
            entry["stress_eV_per_A3"] = atoms.get_stress().tolist()
        summary[name] = entry
        print(f"{name:<9} {entry['formula']:<12} {entry['atoms']:>5} atoms  E = {entry['energy_eV']:+.4f} eV  "
              f"max|F| = {entry['max_force_eV_per_A']:.4f} eV/Å  {1e3 * seconds:.1f} ms/call")

    rng = np.random.default_rng(settings.seed)
    MaxwellBoltzmannDistribution(mol, temperature_K=settings.temperature_K, rng=rng)
    dyn = Langevin(mol, 0.5 * units.fs, temperature_K=settings.temperature_K, friction=0.01 / units.fs,
                   fixcm=False, rng=rng)
    t0 = time.perf_counter()
    with tqdm(total=settings.md_steps, desc="Langevin NVT", unit="step") as bar:
        dyn.attach(lambda: bar.update(dyn.nsteps - bar.n), interval=1)
        dyn.run(settings.md_steps)
    md_seconds = time.perf_counter() - t0
    summary["md"] = {"steps": settings.md_steps, "seconds_per_step": md_seconds / max(settings.md_steps, 1),
                     "final_temperature_K": float(mol.get_temperature())}
    print(f"MD        {settings.md_steps} steps at {settings.temperature_K:.0f} K: "
          f"{1e3 * summary['md']['seconds_per_step']:.1f} ms/step")
    if settings.json:
        write_json(settings.json, summary)
        print(f"summary written to {settings.json}")
    return summary
