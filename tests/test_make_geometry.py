"""benchmarks/make_geometry.py on water (3 atoms): SMILES -> RDKit -> GFN2-xTB minimum, in seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("tblite")

from conftest import load_script  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_geometry.py"




geom = load_script(SCRIPT, "bench_make_geometry_under_test")


def test_cli_makes_water(tmp_path):
    from ase.io import read
    from rdkit import __version__ as rdkit_version

    r = subprocess.run([sys.executable, str(SCRIPT), "--smiles", "O", "--name", "water", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    path = tmp_path / "water.xyz"
    lines = path.read_text().splitlines()
    assert lines[0] == "3" and len(lines) == 5
    comment = lines[1]
    assert comment.startswith("Properties=species:S:1:pos:R:3 molecule=water made_by=\"GFN2-xTB (tblite) minimum: "
                              "ase BFGS to fmax 0.01 eV/A (")
    assert (f"steps), 1 thread, started from RDKit {rdkit_version} ETKDG (randomSeed 0) + MMFF94 from SMILES O\" "
            "gfn2_xtb_energy_eV=") in comment and comment.endswith('pbc="F F F"')
    atoms = read(str(path))
    assert atoms.get_chemical_symbols() == ["O", "H", "H"] and atoms.info["molecule"] == "water"
    assert -200 < atoms.info["gfn2_xtb_energy_eV"] < -100
    assert 0.9 < atoms.get_distance(0, 1) < 1.0 and 0.9 < atoms.get_distance(0, 2) < 1.0
    assert not list(tmp_path.glob(".*"))  # no temp file left
    # an existing file is kept unless --force
    with pytest.raises(geom.GeometryError, match="exists; pass --force"):
        geom.make_geometry("O", "water", tmp_path)


def test_rearrangement_and_bad_input_fail_clearly():
    mol, atoms, _ = geom.embed("O")
    geom.check_bonds(mol, atoms, "water")  # the MMFF geometry has the RDKit bonds
    atoms.positions[1] = atoms.positions[0] + 2.5 * (atoms.positions[1] - atoms.positions[0])  # break O-H
    with pytest.raises(geom.GeometryError, match=r"water: bond graph differs .*missing O0-H1"):
        geom.check_bonds(mol, atoms, "water")
    with pytest.raises(geom.GeometryError, match="cannot parse"):
        geom.embed("C1CC")
    with pytest.raises(geom.GeometryError, match="neutral closed-shell"):
        geom.embed("[NH4+]")
    assert np.isfinite(atoms.positions).all()
