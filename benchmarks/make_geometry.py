"""Starting geometries for the benchmarks: SMILES -> RDKit ETKDG + MMFF94 -> GFN2-xTB minimum.

    python benchmarks/make_geometry.py --smiles c1ccncc1 --name pyridine   # -> benchmarks/molecules/pyridine.xyz
    python benchmarks/make_geometry.py --validation                        # the eight validation molecules
    python benchmarks/make_geometry.py --smiles O --name water --out /tmp/geoms

Recipe (the one of the bundled geometries in benchmarks/molecules/; it reproduces them):
  1. RDKit: molecule from SMILES with explicit hydrogens, ETKDG embedding (randomSeed SEED, default 0),
     MMFF94 optimisation.
  2. Centre of mass moved to the origin, then a GFN2-xTB (tblite, 1 thread) minimum:
     ase BFGS to fmax 0.01 eV/A (``ase_adapt.priors.make_prior("gfn2-xtb")`` as the calculator).
  3. Check: the bond graph of the minimum (1.25 x sum of covalent radii, as benchmarks/data.py
     counts changed bonds) is the one of the RDKit molecule; a rearrangement is an error.
  4. Written atomically as extxyz <out>/<name>.xyz; its comment line says what made it (SMILES, seed,
     RDKit version, optimiser steps) and the GFN2-xTB energy.
Only neutral closed-shell molecules (the reference calculator runs with charge 0, default spin).
An existing file is not overwritten unless --force is given. RDKit is an optional dependency
(``pip install rdkit``); tblite is needed for the GFN2-xTB minimum.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR  # noqa: E402

MOLECULE_DIR = BENCH_DIR / "molecules"
# The validation molecules of the role table (shared/molecules.md): choosing things, never training.
VALIDATION = {
    "pyridine": "c1ccncc1",
    "furan": "c1ccoc1",
    "acetone": "CC(C)=O",
    "styrene": "C=Cc1ccccc1",
    "indole": "c1ccc2[nH]ccc2c1",
    "methyl_acetate": "CC(=O)OC",
    "fluorobenzene": "Fc1ccccc1",
    "trimethyl_phosphate": "COP(=O)(OC)OC",
}
BOND_FACTOR = 1.25  # x sum of covalent radii: a bond (as bonds_changed in benchmarks/_data_md.py)
FMAX = 0.01  # eV/A
MAX_STEPS = 2000


class GeometryError(RuntimeError):
    """The geometry could not be made as asked (bad SMILES, embedding, MMFF, no minimum, rearrangement)."""


def _rdkit() -> tuple[Any, Any, str]:
    try:
        import rdkit
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as exc:
        raise SystemExit(f"make_geometry.py needs RDKit to build geometries from SMILES: pip install rdkit "
                         f"({type(exc).__name__}: {exc})") from None
    return Chem, AllChem, rdkit.__version__


def embed(smiles: str, seed: int = 0) -> tuple[Any, Any, str]:
    """RDKit molecule (explicit H), its ETKDG + MMFF94 geometry as ase Atoms, and the RDKit version."""
    from ase import Atoms

    Chem, AllChem, version = _rdkit()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise GeometryError(f"RDKit cannot parse the SMILES {smiles!r}")
    if Chem.GetFormalCharge(mol) != 0 or any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        raise GeometryError(f"{smiles!r}: only neutral closed-shell molecules (GFN2-xTB runs with charge 0)")
    mol = Chem.AddHs(mol)
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise GeometryError(f"{smiles!r}: RDKit ETKDG embedding failed (randomSeed {seed})")
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        raise GeometryError(f"{smiles!r}: MMFF94 has no parameters for this molecule")
    if AllChem.MMFFOptimizeMolecule(mol, maxIters=MAX_STEPS) != 0:
        raise GeometryError(f"{smiles!r}: MMFF94 optimisation did not converge in {MAX_STEPS} iterations")
    atoms = Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())
    return mol, atoms, version


def rdkit_bonds(mol: Any) -> set[tuple[int, int]]:
    return {tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in mol.GetBonds()}


def distance_bonds(atoms: Any, factor: float = BOND_FACTOR) -> set[tuple[int, int]]:
    from ase_adapt.adapt.topology import covalent_bonds

    return {(int(i), int(j)) for i, j in covalent_bonds(atoms, factor)}


def check_bonds(mol: Any, atoms: Any, what: str) -> None:
    """Raise GeometryError if the distance bond graph of ``atoms`` is not the RDKit graph of ``mol``."""
    want, have = rdkit_bonds(mol), distance_bonds(atoms)
    if want != have:
        sym = atoms.get_chemical_symbols()
        fmt = lambda bonds: ", ".join(f"{sym[i]}{i}-{sym[j]}{j} ({atoms.get_distance(i, j):.2f} A)"  # noqa: E731
                                      for i, j in sorted(bonds)) or "none"
        raise GeometryError(f"{what}: bond graph differs from the RDKit molecule (rearranged?): "
                            f"missing {fmt(want - have)}; extra {fmt(have - want)}")


def relax(atoms: Any, fmax: float = FMAX, max_steps: int = MAX_STEPS) -> tuple[int, float]:
    """GFN2-xTB minimum in place (ase BFGS); return (steps, energy in eV)."""
    from ase.optimize import BFGS

    from ase_adapt.priors import make_prior

    atoms.calc = make_prior("gfn2-xtb")  # tblite, 1 thread
    opt = BFGS(atoms, logfile=None)
    converged = opt.run(fmax=fmax, steps=max_steps)
    steps = opt.get_number_of_steps()
    energy = float(atoms.get_potential_energy())
    fmax_now = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    atoms.calc = None
    if not converged and fmax_now >= fmax:
        raise GeometryError(f"GFN2-xTB minimum not reached in {max_steps} BFGS steps (fmax {fmax_now:.3g} eV/A)")
    return steps, energy


def make_geometry(smiles: str, name: str, out: str | Path = MOLECULE_DIR, *, seed: int = 0, fmax: float = FMAX,
                  force: bool = False) -> Path:
    """Build ``<out>/<name>.xyz`` from ``smiles`` (see the module docstring); return its path."""
    from ase.io import write

    from ase_adapt._io import atomic_write

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise GeometryError(f"name {name!r}: letters, digits, '_' and '-' only (it becomes the file name)")
    path = Path(out) / f"{name}.xyz"
    if path.exists() and not force:
        raise GeometryError(f"{path} exists; pass --force (force=True) to overwrite it")
    mol, atoms, version = embed(smiles, seed)
    check_bonds(mol, atoms, f"{name}: the MMFF94 geometry")
    atoms.positions -= atoms.get_center_of_mass()
    steps, energy = relax(atoms, fmax)
    check_bonds(mol, atoms, f"{name}: the GFN2-xTB minimum")
    atoms.info.clear()
    atoms.info.update(
        molecule=name,
        made_by=(f"GFN2-xTB (tblite) minimum: ase BFGS to fmax {fmax:g} eV/A ({steps} steps), 1 thread, started from "
                 f"RDKit {version} ETKDG (randomSeed {seed}) + MMFF94 from SMILES {smiles}"),
        gfn2_xtb_energy_eV=round(energy, 6))
    atomic_write(path, lambda tmp: write(str(tmp), atoms, format="extxyz"))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--smiles", help="the molecule (with --name)")
    p.add_argument("--name", help="file name stem: <out>/<name>.xyz, and the molecule name in benchmarks/data.py")
    p.add_argument("--validation", action="store_true",
                   help=f"make the validation molecules ({', '.join(VALIDATION)})")
    p.add_argument("--out", type=Path, default=MOLECULE_DIR, help="output folder (default benchmarks/molecules)")
    p.add_argument("--seed", type=int, default=0, help="RDKit ETKDG randomSeed (default 0)")
    p.add_argument("--fmax", type=float, default=FMAX, help="GFN2-xTB minimum: max force in eV/A (default 0.01)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    args = p.parse_args(argv)
    jobs: list[tuple[str, str]] = []
    if args.smiles or args.name:
        if not (args.smiles and args.name):
            p.error("--smiles and --name go together")
        jobs.append((args.name, args.smiles))
    if args.validation:
        jobs += list(VALIDATION.items())
    if not jobs:
        p.error("give --smiles SMILES --name NAME, or --validation")
    failed = []
    for name, smiles in jobs:
        try:
            path = make_geometry(smiles, name, args.out, seed=args.seed, fmax=args.fmax, force=args.force)
        except GeometryError as exc:
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        from ase.io import read

        atoms = read(str(path))
        print(f"{name}: {atoms.get_chemical_formula()} ({len(atoms)} atoms), "
              f"GFN2-xTB {atoms.info['gfn2_xtb_energy_eV']:.6f} eV -> {path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
