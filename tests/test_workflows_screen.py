"""RSS hole screening (``run_screen`` / ``ase-adapt screen``): the four flag criteria, a sane set
that flags nothing, a planted overlap that is flagged, and the outputs."""

from __future__ import annotations

import dataclasses

import csv
import json

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress

from ase_adapt.cli.main import main
from ase_adapt.workflows.screen import ScreenSettings, default_compositions, parse_composition, random_crystal, run_screen
from ase_adapt.workflows.screen_report import flag_records


FAST = dict(structures=4, cycles=1, steps=60, max_atoms=8, progress=False)


def _record(comp, index, e, v, d):
    return {"composition": comp, "index": index, "energy_per_atom": e, "volume_per_atom": v,
            "min_distance_ratio": d, "converged": True, "error": None}


def test_each_criterion_flags_its_signature_and_nothing_else():
    rng = np.random.default_rng(0)
    sane = [_record("AB", k, -3.0 + 0.05 * rng.normal(), 20.0 + rng.normal(), 0.9) for k in range(20)]
    planted = [_record("AB", 20, -3.0, 20.0, 0.4),          # overlap only
               _record("AB", 21, -2.9, 5.0, 0.9),           # volume < 30 % (energy above the median)
               _record("AB", 22, -9.0, 19.0, 0.9),          # 6 eV/atom below: past the 5 eV floor
               _record("AB", 23, -3.5, 9.0, 0.9),           # volume < 50 % and energy below the median
               _record("AB", 24, -6.0, 20.0, 0.9)]          # 3 eV/atom below: many MADs, but inside the floor
    rows, stats = flag_records(sane + planted)
    flags = {r["index"]: {k for k in ("overlap", "volume", "energy", "combined") if r[k]} for r in rows}
    assert all(not flags[k] for k in range(20))
    assert flags[20] == {"overlap"} and flags[21] == {"volume"} and flags[22] == {"energy"}
    assert flags[23] == {"combined"} and flags[24] == set()
    assert stats["AB"]["flagged_fraction"] == pytest.approx(4 / 25)


def test_compositions_are_parsed_and_built_from_elements():
    assert parse_composition("Na2Cl") == {"Na": 2, "Cl": 1}
    for bad in ("NaCl-", "Na", "NaXx", "na2cl", "NaClKBr"):
        with pytest.raises(ValueError):
            parse_composition(bad)
    comps = default_compositions(["Na", "Cl", "K"], 10)
    assert len(comps) == 10 and comps[0] == "NaCl" and all(2 <= len(parse_composition(c)) <= 3 for c in comps)
    with pytest.raises(ValueError, match="compositions"):
        ScreenSettings().composition_list()


def test_random_crystals_are_seeded():
    s = ScreenSettings(compositions=("CuAu",), **FAST)
    a, ga = random_crystal("CuAu", 3, s)
    b, gb = random_crystal("CuAu", 3, s)
    c, _ = random_crystal("CuAu", 4, s)
    assert ga == gb and np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
    assert not (len(c) == len(a) and np.allclose(c.cell.array, a.cell.array))  # another index, another crystal
    assert a.symbols.count("Cu") == a.symbols.count("Au") and len(a) <= 8


def test_a_sane_potential_flags_nothing(tmp_path):
    summary = run_screen(None, ScreenSettings(compositions=("CuAu", "Cu3Au"), **FAST), tmp_path, calculator=EMT)
    assert summary["n_structures"] == 8 and summary["flagged_fraction"] == 0.0 and summary["failed_fraction"] == 0.0
    rows = list(csv.DictReader(open(tmp_path / "screen.csv")))
    assert len(rows) == 8 and {r["composition"] for r in rows} == {"CuAu", "Cu3Au"}
    assert all(float(r["min_distance_ratio"]) > 0.7 for r in rows)
    assert (tmp_path / "flagged.extxyz").read_text() == "" and (tmp_path / "screen.png").stat().st_size > 0
    on_disk = json.loads((tmp_path / "screen.json").read_text())
    assert on_disk["compositions"]["CuAu"]["flagged_fraction"] == 0.0 and len(on_disk["structures"]) == 8


class HoleyEMT(Calculator):
    """EMT plus a deep short-range Gaussian well: a repulsive wall with a hole in it."""

    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        emt = a.copy()
        emt.calc = EMT()
        depth, width = 2000.0, 0.6  # EMT rises to ~500 eV at 0.5 Å: the well must be deeper
        i, j, d, vec = neighbor_list("ijdD", a, 3.0)
        g = np.exp(-(d / width) ** 2)
        energy = emt.get_potential_energy() - 0.5 * depth * g.sum()
        dedr_over_r = 2 * depth / width**2 * g                     # of -depth*g(r), divided by r
        forces = emt.get_forces().copy()
        np.add.at(forces, i, dedr_over_r[:, None] * vec)             # pulls i towards j
        virial = 0.5 * np.einsum("p,pa,pb->ab", dedr_over_r, vec, vec) / a.get_volume()
        stress = emt.get_stress(voigt=False) + virial
        self.results = {"energy": energy, "forces": forces, "stress": full_3x3_to_voigt_6_stress(stress)}


def test_a_planted_overlap_is_flagged(tmp_path):
    """2 compositions x 4 random crystals, plus one CuAu cell with two atoms planted 0.8 Å apart,
    on a potential whose wall has a hole: the planted cell is flagged as an overlap. Random crystals
    that fell into the hole themselves are flagged too (that is what RSS is for), and every flagged
    structure really has atoms closer than half their covalent sum."""
    s = ScreenSettings(compositions=("CuAu", "Cu3Au"), **FAST)
    sane = [random_crystal(c, k, s)[0] for c in ("CuAu", "Cu3Au") for k in range(4)]
    planted = sane[0].copy()
    d = planted.get_distance(0, 1, mic=True, vector=True)
    planted.positions[1] = planted.positions[0] + 0.8 * d / np.linalg.norm(d)  # 0.8 Å: ratio 0.3
    own = dataclasses.replace(s, compositions=())  # the given structures, not random crystals
    summary = run_screen(None, own, tmp_path, calculator=HoleyEMT, starts=[*sane, planted])
    rows = {(r["composition"], r["index"]): r for r in summary["structures"]}
    assert rows[("AuCu", 4)]["overlap"] and rows[("AuCu", 4)]["min_distance_ratio"] < 0.5
    for r in rows.values():
        assert r["flagged"] == (r["min_distance_ratio"] < 0.5), r  # flagged exactly where atoms fell in
    assert 0 < summary["flagged_fraction"] < 1
    from ase.io import read

    written = read(tmp_path / "flagged.extxyz", index=":")
    assert len(written) == sum(r["flagged"] for r in rows.values())
    assert {(a.info["composition"], a.info["index"]) for a in written} == {k for k, r in rows.items() if r["flagged"]}


def test_screen_cli_with_a_model_and_a_yaml_config(make_model, tmp_path, capsys):
    ckpt = make_model(dtype="float64").save(tmp_path / "m.safetensors")
    (tmp_path / "rss.yaml").write_text("compositions: [CO2, CH4]\nper-composition: 2\ncycles: 1\nsteps: 5\n")
    assert main(["screen", "--model", str(ckpt), "--config", str(tmp_path / "rss.yaml"), "--max-atoms", "6",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "screen.json").read_text())
    assert summary["n_structures"] == 4 and summary["computed"] == 4 and set(summary["compositions"]) == {"CO2", "CH4"}
    assert "composition" in capsys.readouterr().out
    assert main(["screen", "--model", str(ckpt), "--elements", "Na", "Cl", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "Na" in capsys.readouterr().err  # the model does not know Na or Cl: refused before any work


def test_adaptation_events_are_in_the_rows(ready, tmp_path):
    import copy

    model = copy.deepcopy(ready)
    model.add_head("prior:lj", copy.deepcopy(model.heads["prior"]))  # the head that learnt LJ, under its prior's name
    model.training_stats = copy.deepcopy(ready.training_stats)
    by_head = model.training_stats.get("prior_force_norm_by_head", {})
    if "prior" in by_head:
        by_head["prior:lj"] = by_head["prior"]
    s = ScreenSettings(compositions=("CO2",), structures=1, cycles=1, steps=3, max_atoms=6, progress=False)
    summary = run_screen(model, s, tmp_path, prior="lj")
    events = summary["structures"][0]["events"]
    assert events and all(":" in e for e in events), events


def test_a_grown_screen_reuses_the_structures_it_has(tmp_path):
    small = ScreenSettings(compositions=("CuAu",), structures=2, cycles=0, steps=20, max_atoms=8, progress=False)
    first = run_screen(None, small, tmp_path, calculator=EMT)
    grown = ScreenSettings(compositions=("CuAu", "Cu3Au"), structures=3, cycles=0, steps=20, max_atoms=8,
                           progress=False)
    second = run_screen(None, grown, tmp_path, calculator=EMT)
    assert first["computed"] == 2 and second["reused"] == 2 and second["computed"] == 4
    same = [r for r in second["structures"] if r["composition"] == "CuAu" and r["index"] < 2]
    assert [r["energy_per_atom"] for r in same] == [r["energy_per_atom"] for r in first["structures"]]
    with pytest.raises(ValueError, match="other settings"):  # a setting that changes a task's result
        run_screen(None, ScreenSettings(compositions=("CuAu",), structures=2, cycles=0, steps=20, max_atoms=8,
                                        fmax=0.01, progress=False), tmp_path, calculator=EMT)


def test_a_structure_without_close_pairs_gets_its_true_ratio(tmp_path):
    """A cell whose atoms are all farther than 1.5 covalent sums apart got a blank min_distance_ratio."""
    from ase import Atoms
    from ase.data import covalent_radii

    from ase_adapt.workflows.screen import _closest_ratio

    sparse = Atoms("Cu2", positions=[[0, 0, 0], [4.0, 4.0, 4.0]], cell=[8.0, 8.0, 8.0], pbc=True)
    ratio = _closest_ratio(sparse)
    expected = np.sqrt(3 * 4.0 ** 2) / (2 * covalent_radii[29])
    assert ratio == pytest.approx(expected, rel=1e-6) and ratio > 1.5
