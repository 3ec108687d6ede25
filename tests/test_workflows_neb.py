"""``run_neb`` / ``ase-adapt neb``: a small system yields a barrier, the starting path is a monotone
interpolation, and every image has its own calculator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import read

from ase_adapt.workflows import NEBSettings, run_neb


def _hop():
    """An Au adatom hopping between two hollow sites of a small Al(100) slab (ASE's NEB example)."""
    slab = fcc100("Al", size=(2, 2, 3))
    add_adsorbate(slab, "Au", 1.7, "hollow")
    slab.center(axis=2, vacuum=4.0)
    slab.set_constraint(FixAtoms(mask=[atom.tag > 1 for atom in slab]))
    final = slab.copy()
    final[-1].x += slab.get_cell()[0, 0] / 2
    return slab, final


def test_a_hop_has_a_barrier_and_a_monotone_start(tmp_path):
    initial, final = _hop()
    made = []

    def calculator():
        made.append(EMT())
        return made[-1]

    s = NEBSettings(n_images=3, fmax=0.05, steps=200, progress=False)
    summary = run_neb(initial, final, calculator, s, tmp_path)
    assert summary["converged"] and 0.05 < summary["barrier_forward_eV"] < 1.0
    assert summary["barrier_backward_eV"] == pytest.approx(summary["barrier_forward_eV"], abs=0.02)  # symmetric hop
    assert 0 < summary["highest_image"] < 4 and len(summary["energies_eV"]) == 5
    assert len({id(c) for c in made}) == len(made) == 5 + 2  # 5 images + 2 endpoint relaxations
    start = read(tmp_path / "initial_path.extxyz", ":")
    x = np.array([a[-1].x for a in start])
    assert np.all(np.diff(x) > 0)  # the adatom moves forward at every image of the interpolation
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == summary["steps"]
    assert (tmp_path / "neb.extxyz").is_file() and (tmp_path / "profile.png").is_file()


def test_endpoints_must_match(tmp_path):
    initial, final = _hop()
    with pytest.raises(ValueError, match="same atoms"):
        run_neb(initial, final[:-1], EMT, NEBSettings(progress=False), tmp_path)


def test_neb_cli_with_an_ase_adapt_model(make_model, tmp_path, capsys):
    from ase.build import molecule

    from ase_adapt.cli.main import main
    from ase_adapt.train.data import write_frames

    ckpt = make_model(dtype="float64").save(tmp_path / "m.safetensors")
    a = molecule("CH3OH")
    b = a.copy()
    b.positions[5] += [0.3, 0.3, 0.0]  # the hydroxyl H moved
    start, end = write_frames(tmp_path / "a.xyz", [a]), write_frames(tmp_path / "b.xyz", [b])
    out = tmp_path / "out"
    assert main(["neb", str(start), str(end), "--model", str(ckpt), "--images", "3", "--steps", "20",
                 "--no-relax-endpoints", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["energies_eV"]) == 5 and np.isfinite(summary["barrier_forward_eV"])
    assert "NEB" in capsys.readouterr().out
    assert main(["neb", str(start), str(end), "--model", str(ckpt), "--images", "0", "--out", str(out)]) == 2


def test_neb_cli_reads_a_yaml_config(make_model, tmp_path):
    from ase.build import molecule

    from ase_adapt.cli.main import main
    from ase_adapt.train.data import write_frames

    ckpt = make_model(dtype="float64").save(tmp_path / "m.safetensors")
    a = molecule("CH3OH")
    b = a.copy()
    b.positions[5] += [0.3, 0.3, 0.0]
    start, end = write_frames(tmp_path / "a.xyz", [a]), write_frames(tmp_path / "b.xyz", [b])
    config = tmp_path / "neb.yaml"
    config.write_text("images: 2\nsteps: 5\nrelax_endpoints: false\nclimb: false\n")
    out = tmp_path / "out"
    assert main(["neb", str(start), str(end), "--model", str(ckpt), "--config", str(config), "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["n_images"] == 2 and summary["settings"]["climb"] is False
    assert len(summary["energies_eV"]) == 4


def test_neb_cli_has_the_unknown_elements_policy_of_every_predicting_command(make_model, tmp_path, capsys):
    from ase.build import molecule

    from ase_adapt.cli.main import main
    from ase_adapt.train.data import write_frames

    ckpt = make_model(dtype="float64", elements=("H", "C", "O")).save(tmp_path / "m.safetensors")
    a = molecule("CH3SH")  # S: not among the model's elements
    b = a.copy()
    b.positions[-1] += [0.3, 0.3, 0.0]
    start, end = write_frames(tmp_path / "a.xyz", [a]), write_frames(tmp_path / "b.xyz", [b])
    base = ["neb", str(start), str(end), "--model", str(ckpt), "--images", "1", "--steps", "3",
            "--no-relax-endpoints", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "refused")]) == 2
    assert "element(s) S not in the model's training elements" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="mapped to nearest known"):
        assert main(base + ["--out", str(tmp_path / "mapped"), "--unknown-elements", "nearest"]) == 0
