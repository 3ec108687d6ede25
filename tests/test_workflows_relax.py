"""``run_relax`` / ``ase-adapt relax``: converges on a rattled molecule and on a strained periodic
cell (positions and cell), writes its outputs, and says when it did not converge."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from ase_adapt import MLFFCalculator
from ase_adapt.cli.main import main
from ase_adapt.train.data import read_frames, write_frames
from ase_adapt.workflows import RelaxSettings, run_relax


@pytest.mark.parametrize("optimizer", ["fire", "bfgs", "lbfgs"])
def test_a_rattled_molecule_converges(make_model, tmp_path, optimizer):
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=1)
    calc = MLFFCalculator(make_model(dtype="float64"))
    summary = run_relax(atoms, calc, RelaxSettings(optimizer=optimizer, fmax=0.01, steps=400, progress=False), tmp_path)
    assert summary["converged"] and summary["fmax_final"] < 0.01 and not summary["cell_relaxed"]
    assert summary["energy_final_eV"] < summary["energy_initial_eV"]
    final = read_frames(tmp_path / "final.extxyz")[0]
    final.calc = calc
    assert np.linalg.norm(final.get_forces(), axis=1).max() < 0.01  # the written structure is the minimum
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.extxyz", "relax.extxyz", "relax.log", "summary.json"]


def test_a_strained_cell_relaxes_back(tmp_path):
    reference = bulk("Cu", "fcc", a=3.6, cubic=True)
    reference.calc = EMT()
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    BFGS(FrechetCellFilter(reference), logfile=None).run(fmax=1e-4)  # EMT's own lattice constant
    strained = reference.copy()
    strained.set_cell(reference.cell * 1.04, scale_atoms=True)
    strained.rattle(0.02, seed=0)
    summary = run_relax(strained, EMT(), RelaxSettings(optimizer="bfgs", fmax=1e-3, steps=300, progress=False), tmp_path)
    assert summary["converged"] and summary["cell_relaxed"]
    assert summary["volume_change"] == pytest.approx(1 / 1.04**3 - 1, abs=2e-3)
    final = read_frames(tmp_path / "final.extxyz")[0]
    np.testing.assert_allclose(final.cell.lengths(), reference.cell.lengths(), atol=2e-3)


def test_not_converging_is_said(make_model, tmp_path):
    atoms = molecule("CH3OH")
    atoms.rattle(0.1, seed=2)
    summary = run_relax(atoms, MLFFCalculator(make_model(dtype="float64")),
                        RelaxSettings(fmax=1e-6, steps=3, progress=False), tmp_path)
    assert not summary["converged"] and summary["steps"] == 3


def test_relax_cli(make_model, tmp_path, capsys):
    ckpt = make_model(dtype="float64").save(tmp_path / "m.safetensors")
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=3)
    structure = write_frames(tmp_path / "start.xyz", [atoms])
    out = tmp_path / "out"
    assert main(["relax", str(structure), "--model", str(ckpt), "--optimizer", "bfgs", "--fmax", "0.02",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["converged"]
    assert "relax bfgs: converged" in capsys.readouterr().out
    assert main(["relax", str(structure), "--model", str(ckpt), "--fmax", "-1", "--out", str(out)]) == 2


def test_a_molecule_in_a_huge_box_keeps_its_cell_and_says_why(make_model, tmp_path):
    """It reported 'converged, volume +0.85 %' while the cell grew to 100000 x 101352 x 99507 Å."""
    atoms = molecule("CH3OH")
    atoms.cell = [1e5, 1e5, 1e5]
    atoms.pbc = True
    atoms.rattle(0.05, seed=1)
    summary = run_relax(atoms, MLFFCalculator(make_model(dtype="float64")), RelaxSettings(steps=20, progress=False),
                        tmp_path)
    assert summary["cell_relaxed"] is False and summary["volume_change"] is None
    assert "no atom has a periodic image" in summary["cell_note"]
    final = read_frames(tmp_path / "final.extxyz")[0]
    np.testing.assert_allclose(final.cell.array, atoms.cell.array)
    bulk_summary = run_relax(bulk("Cu", "fcc", a=3.7, cubic=True), EMT(), RelaxSettings(steps=5, progress=False),
                             tmp_path / "cu")
    assert bulk_summary["cell_relaxed"] is True and bulk_summary["cell_note"] is None
