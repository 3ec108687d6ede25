"""Datasets: reading/writing with labels intact, clear errors, splits, and resumable labelling."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

from ase_adapt.cli.main import main
from ase_adapt.errors import DataError
from ase_adapt.train.data import (
    DataWarning, check_labels, get_label, isolated_atom_frames, read_frames, split_frames, training_frames,
    write_frames,
)
from ase_adapt.train.label import label_frames, partial_path

NAMES = ("CH4", "H2O", "NH3", "HCN", "CO", "C2H2", "CH3OH")
KEYS = ("energy", "forces", "stress", "prior_energy", "prior_forces", "prior_stress")


def _with_reference(atoms: Atoms) -> Atoms:
    """``atoms`` with EMT reference labels in a single-point calculator (as extxyz readers make)."""
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def molecules(n: int = 5, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = molecule(NAMES[k % len(NAMES)])
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(_with_reference(atoms))
    return frames


def periodic_frame() -> Atoms:
    atoms = molecule("CH4")
    atoms.cell = [4.0, 4.5, 5.0]
    atoms.pbc = True
    atoms.rattle(0.05, seed=3)
    atoms = _with_reference(atoms)
    atoms.info["prior_energy"] = -1.25
    atoms.arrays["prior_forces"] = 2.0 * atoms.calc.results["forces"]
    atoms.info["prior_stress"] = np.array([0.1, 0.2, 0.3, 0.01, 0.02, 0.03])
    atoms.info["config_type"] = "box"
    return atoms


def isolated(symbol: str, energy: float) -> Atoms:
    atoms = Atoms(symbol, positions=[[0, 0, 0]])
    atoms.info.update(config_type="IsolatedAtom", energy=energy)
    atoms.arrays["forces"] = np.zeros((1, 3))
    return atoms


# --- reading and writing ------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".xyz", ".extxyz", ".db"])
def test_round_trip_keeps_reference_and_prior_labels(tmp_path: Path, suffix: str) -> None:
    frames = [periodic_frame(), isolated("H", -13.6)]
    path = write_frames(tmp_path / f"data{suffix}", frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp or lock file left
    back = read_frames(path)
    assert len(back) == 2
    for key in KEYS:  # extxyz stores positions/forces with 8 decimals
        np.testing.assert_allclose(get_label(back[0], key), get_label(frames[0], key), atol=1e-7, rtol=0)
    assert back[0].info["config_type"] == "box"
    assert back[0].pbc.all() and np.allclose(back[0].cell, frames[0].cell)
    assert isolated_atom_frames(back)[1].info["config_type"] == "IsolatedAtom"
    assert get_label(back[1], "energy") == -13.6
    assert len(read_frames(path, index="-1")) == 1 and len(read_frames(path, index=0)) == 1


def test_explicit_label_wins_over_single_point_result(tmp_path: Path) -> None:
    atoms = molecules(1)[0]
    atoms.info["energy"] = 7.0  # what get_label reads; ASE's writer alone would refuse this frame
    back = read_frames(write_frames(tmp_path / "x.xyz", atoms))[0]
    assert get_label(back, "energy") == get_label(atoms, "energy") == 7.0


def test_unreadable_files_name_the_file_and_frame(tmp_path: Path) -> None:
    good = tmp_path / "good.xyz"
    write_frames(good, molecules(3))
    text = good.read_text()
    cut = tmp_path / "cut.xyz"
    cut.write_text(text[: len(text) * 2 // 3 - 50])  # inside frame 1 or 2
    with pytest.raises(DataError, match=r"cut\.xyz: frame [12] cannot be read"):
        read_frames(cut)
    (tmp_path / "junk.xyz").write_text("this is\nnot a dataset\n")
    with pytest.raises(DataError, match=r"junk\.xyz: frame 0"):
        read_frames(tmp_path / "junk.xyz")
    (tmp_path / "bin.xyz").write_bytes(b"\x00\xff\xfe\x01")
    with pytest.raises(DataError, match=r"bin\.xyz"):
        read_frames(tmp_path / "bin.xyz")
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(DataError, match=r"empty\.xyz: the file holds no frames"):
        read_frames(tmp_path / "empty.xyz")
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.db: the file holds no frames"):
        read_frames(tmp_path / "empty.db")
    assert (tmp_path / "empty.db").stat().st_size == 0
    (tmp_path / "bad.db").write_text("not a database " * 20)
    with pytest.raises(DataError, match=r"bad\.db"):
        read_frames(tmp_path / "bad.db")
    with pytest.raises(DataError, match=r"missing\.db: no such dataset file"):
        read_frames(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # ase.db.connect would have created it
    with pytest.raises(DataError, match=r"accepted: \.xyz"):
        read_frames(tmp_path / "data.traj")
    with pytest.raises(DataError, match="no frame 7"):
        read_frames(good, index=7)
    cut.write_text(text[:-1])  # last newline lost: still parses, but say so
    with pytest.warns(DataWarning, match="truncated"):
        read_frames(cut)


def test_missing_label_names_key_and_frame() -> None:
    """Checklist 20."""
    frames = molecules(4)
    del frames[2].calc.results["forces"]
    frames[3].calc = None
    with pytest.raises(DataError, match=r"data\.xyz: frame 2 has no label 'forces' \(2 of 4 frames lack it"):
        check_labels(frames, ["energy", "forces"], path="data.xyz")
    with pytest.raises(DataError, match=r"frame 3 has no label 'energy' \(1 of 4"):
        check_labels(frames, ["energy"])
    check_labels(frames[:2], ["energy", "forces"])
    frames[0].calc.results["energy"] = np.nan
    with pytest.raises(DataError, match=r"frame 0: label 'energy' is not finite"):
        check_labels(frames[:2], ["energy"])


# --- selection ----------------------------------------------------------------------------------

def test_split_is_deterministic_and_disjoint() -> None:
    train, val = split_frames(20, 0.25, seed=1)
    assert (train, val) == split_frames(list(range(20)), 0.25, seed=1)
    assert len(val) == 5 and not set(train) & set(val) and sorted(train + val) == list(range(20))
    assert split_frames(20, 0.25, seed=2) != (train, val)
    assert split_frames(2, 0.01)[1] != [] and len(split_frames(2, 0.01)[0]) == 1
    assert split_frames(10, 0.0) == (list(range(10)), [])
    assert split_frames(1, 0.5) == ([0], [])
    for bad in (1.0, -0.1, 2):
        with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
            split_frames(10, bad)


def test_isolated_atom_frames_are_recognised() -> None:
    frames = [isolated("H", -13.6), *molecules(2), isolated("O", -2041.0)]
    assert sorted(isolated_atom_frames(frames)) == [1, 8]
    assert training_frames(frames) == frames[1:3]
    with pytest.warns(DataWarning, match="Z=1"):
        assert isolated_atom_frames([*frames, isolated("H", -13.7)])[1].info["energy"] == -13.7


# --- labelling ----------------------------------------------------------------------------------

class CountingLJ(LennardJones):
    """LJ that counts its calculations and fails on chosen ones (a prior that can break)."""

    def __init__(self, fail_on_call: int | None = None, fail_if=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls = 0
        self.fail_on_call, self.fail_if = fail_on_call, fail_if

    def calculate(self, atoms=None, properties=None, system_changes=None) -> None:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("SCF did not converge")
        super().calculate(atoms, properties or ["energy"], system_changes or [])
        if self.fail_if is not None and self.fail_if(atoms):
            self.results["energy"] = np.nan


def test_labels_equal_direct_calls_and_keep_reference_labels(tmp_path: Path) -> None:
    frames = [*molecules(3), periodic_frame()]
    out = label_frames(frames, EMT(), tmp_path / "out.xyz", prefix="emt", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.xyz"]
    back = read_frames(out)
    for src, got in zip(frames, back):
        atoms = src.copy()
        atoms.calc = EMT()
        assert get_label(got, "emt_energy") == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(get_label(got, "emt_forces"), atoms.get_forces(), atol=1e-7)
        np.testing.assert_allclose(get_label(got, "forces"), get_label(src, "forces"), atol=1e-7)
        assert get_label(got, "energy") == get_label(src, "energy")
    assert get_label(back[0], "emt_stress", required=False) is None  # molecules have no stress
    np.testing.assert_allclose(get_label(back[3], "emt_stress"), _emt_stress(frames[3]), atol=1e-10)
    assert get_label(back[3], "prior_energy") == -1.25  # existing prior labels are kept
    assert not any(k.startswith("ase_adapt") for k in back[3].info)


def test_labels_ignore_the_frames_constraints(tmp_path: Path) -> None:
    """A frame with FixAtoms/FixCom is labelled with the calculator's raw forces, not projected ones."""
    from ase.constraints import FixAtoms

    frame = periodic_frame()
    frame.set_constraint(FixAtoms(indices=[0]))
    back = read_frames(label_frames([frame], EMT(), tmp_path / "out.xyz", prefix="emt", progress=False))[0]
    atoms = frame.copy()
    atoms.set_constraint()
    atoms.calc = EMT()
    np.testing.assert_allclose(get_label(back, "emt_forces"), atoms.get_forces(), atol=1e-7)
    assert np.abs(get_label(back, "emt_forces")[0]).max() > 1e-4


def _emt_stress(atoms: Atoms) -> np.ndarray:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_stress(voigt=False)


def test_resume_after_failure_recomputes_nothing(tmp_path: Path) -> None:
    data = write_frames(tmp_path / "in" / "data.xyz", molecules(7))
    reference = label_frames(data, CountingLJ(), tmp_path / "ref" / "out.xyz", progress=False)

    out = tmp_path / "run" / "out.xyz"
    flaky = CountingLJ(fail_on_call=5)  # frame 4 fails the first time
    with pytest.raises(DataError, match=r"data\.xyz: frame 4: CountingLJ failed \(RuntimeError: SCF did not converge\)"):
        label_frames(data, flaky, out, flush_every=3, progress=False)
    assert not out.exists() and partial_path(out).exists()
    # a kill while appending leaves a cut-off frame behind: it is dropped, not misread
    with open(partial_path(out), "ab") as fh:
        fh.write(b"5\nLattice=")
    flaky.calls = 0
    label_frames(data, flaky, out, flush_every=3, progress=False)
    assert flaky.calls == 3  # frames 4, 5, 6 only
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.xyz"]
    assert out.read_text() == reference.read_text()


def test_resume_refuses_a_different_input(tmp_path: Path) -> None:
    out = tmp_path / "out.xyz"
    with pytest.raises(DataError):
        label_frames(molecules(4), CountingLJ(fail_on_call=3), out, progress=False)
    with pytest.raises(DataError, match=r"different input.*made for 4 frames.*--no-resume"):
        label_frames(molecules(5), CountingLJ(), out, progress=False)
    with pytest.raises(DataError, match="different input"):
        label_frames(molecules(4, seed=1), CountingLJ(), out, progress=False)
    with pytest.raises(DataError, match="different input"):  # other settings are another input too
        label_frames(molecules(4), CountingLJ(), out, prefix="lj", progress=False)
    calc = CountingLJ()
    label_frames(molecules(5), calc, out, resume=False, progress=False)
    assert calc.calls == 5 and len(read_frames(out)) == 5


def test_skip_leaves_failing_frames_out_with_a_warning(tmp_path: Path) -> None:
    frames = molecules(6)  # frames 2 (NH3) and 3 (HCN) hold nitrogen
    calc = CountingLJ(fail_if=lambda a: 7 in a.numbers)
    with pytest.warns(DataWarning, match=r"2 of 6 frames skipped .*\[2, 3\].*frame 2"):
        out = label_frames(frames, calc, tmp_path / "out.xyz", on_error="skip", progress=False)
    back = read_frames(out)
    assert [a.get_chemical_formula() for a in back] == [frames[i].get_chemical_formula() for i in (0, 1, 4, 5)]
    with pytest.raises(DataError, match="frame 2: CountingLJ failed .*FloatingPointError: non-finite energy"):
        label_frames(frames, calc, tmp_path / "out2.xyz", progress=False)
    with pytest.raises(ValueError, match="on_error must be one of"):
        label_frames(frames, calc, tmp_path / "out3.xyz", on_error="ignore")


# --- command line -------------------------------------------------------------------------------

def test_cli_label_writes_only_the_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_frames(tmp_path / "in" / "data.xyz", molecules(3))
    out = tmp_path / "out" / "labelled.xyz"
    assert main(["label", str(data), "--prior", "lj", "--out", str(out), "--prefix", "lj", "--quiet"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["labelled.xyz"]
    assert sorted(p.name for p in data.parent.iterdir()) == ["data.xyz"]
    assert len(read_frames(out)) == 3 and get_label(read_frames(out)[0], "lj_forces").shape == (5, 3)

    config = tmp_path / "in" / "label.yaml"
    config.write_text("data: data.xyz\nprior: emt\nout: ../out/emt.db\non-error: skip\nprogress: false\n")
    assert main(["label", "--config", str(config)]) == 0
    check_labels(read_frames(tmp_path / "out" / "emt.db"), ["energy", "forces", "prior_energy", "prior_forces"])

    capsys.readouterr()
    assert main(["label", str(data), "--prior", "dft", "--out", str(out)]) == 2
    assert "unknown prior 'dft'; accepted: lj" in capsys.readouterr().err
    assert main(["label", str(data), "--prior", "lj"]) == 2
    assert "out not given" in capsys.readouterr().err
    config.write_text("data: data.xyz\nprior: lj\nout: x.xyz\nprefx: lj\n")
    assert main(["label", "--config", str(config)]) == 2
    assert "unknown label settings ['prefx']" in capsys.readouterr().err


def test_progress_bars_are_drawn_only_on_a_terminal(tmp_path, capsys):
    """demo and prepare filled redirected output with bar updates; the docs say bars need a terminal."""
    label_frames(molecules(3), EMT(), tmp_path / "out.xyz", prefix="emt", progress=True)
    captured = capsys.readouterr()
    assert "frame/s" not in captured.err and "%|" not in captured.err
