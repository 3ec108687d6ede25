"""Priors: one factory for every cheap reference, PriorError on failure, and an sGDML prior fitted
to a few labels of a new molecule. Runs in a few seconds; writes only into a temporary directory.

    python examples/priors.py
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
from ase.build import bulk, molecule

from ase_adapt.errors import PriorError
from ase_adapt.priors import fit_sgdml_prior, make_prior


def rattled(name: str, n: int, amplitude: float = 0.05, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule(name)
        atoms.positions += rng.normal(0.0, amplitude, atoms.positions.shape)
        frames.append(atoms)
    return frames


def main() -> None:
    ethanol = rattled("CH3CH2OH", 1)[0]
    have_xtb = all(importlib.util.find_spec(m) for m in ("tblite", "xtb", "threadpoolctl"))
    specs = ["lj", "emt"] + (["gfn-ff", "gfn2-xtb"] if have_xtb else [])

    # 1. every prior is an ASE calculator with a kind that names the model head it trains
    print(f"{'spec':<10} {'head':<16} {'E / eV':>12} {'max |F| / eV/Å':>15}")
    for spec in specs:
        prior = make_prior(spec)
        labels = prior.label(ethanol)  # float64 copies: {'energy', 'forces'}
        print(f"{spec:<10} {prior.head_name:<16} {labels['energy']:12.4f} {np.abs(labels['forces']).max():15.4f}")

    # 2. periodic cells: tblite's GFN2-xTB gives stress too
    if have_xtb:
        stress = make_prior("gfn2-xtb").label(bulk("C", "diamond", a=3.57))["stress"]
        print(f"GFN2-xTB diamond stress (eV/Å³, Voigt): {np.round(stress, 4)}")

    # 3. failures become PriorError (TTT skips adaptation on it), named and explained
    failing = [("emt", bulk("Si", "diamond", a=5.43))]
    if have_xtb:
        failing.append(("gfn-ff", bulk("Cu", "fcc", a=3.6)))
    for spec, atoms in failing:
        try:
            make_prior(spec).label(atoms)
        except PriorError as exc:
            print(f"PriorError: {exc}")

    # 4. sGDML: fit to the first 10 labelled frames of one molecule (the benchmark fits 50),
    #    save without pickle, load through the same factory
    if importlib.util.find_spec("sgdml"):
        teacher = make_prior("gfn-ff" if have_xtb else "emt")
        frames = rattled("CH3CH2OH", 14, seed=1)
        for atoms in frames:
            labels = teacher.label(atoms)
            atoms.info["energy"], atoms.arrays["forces"] = labels["energy"], labels["forces"]
        with tempfile.TemporaryDirectory() as tmp:
            path = fit_sgdml_prior(frames, 10, out_path=Path(tmp) / "ethanol-sgdml.npz")
            sgdml = make_prior(f"sgdml:{path}")
            test = frames[10:]  # frames the model did not see
            mae = np.mean([np.abs(sgdml.label(a)["forces"] - a.arrays["forces"]).mean() for a in test])
            print(f"sGDML prior ({sgdml.head_name}) fitted to 10 {teacher.kind} labels: "
                  f"force MAE on {len(test)} unseen frames {1000 * mae:.1f} meV/Å")
            try:
                sgdml.label(molecule("CH4"))
            except PriorError as exc:
                print(f"PriorError: {exc}")


if __name__ == "__main__":
    main()
