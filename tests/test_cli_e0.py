"""``ase-adapt e0``: each method end to end through ``main([...])``, outputs, and bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.data import chemical_symbols
from ase.io import write

import ase_adapt
from ase_adapt.cli.e0 import E0Method, E0Settings, make_calculator
from ase_adapt.cli.main import main
from ase_adapt.train import isolated_atom_e0

E0 = {"H": -13.6, "C": -1029.8, "O": -2042.6}
SHIFT = {"H": 0.37, "C": -1.25, "N": 0.8, "O": 2.5}


def _clusters(n: int = 12, seed: int = 0, symbols: str = "HCO") -> list[Atoms]:
    """Small random clusters (2-5 atoms, at least 0.9 Å apart)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(2, 6))
        pos: list[np.ndarray] = []
        while len(pos) < k:
            p = rng.uniform(0.0, 2.5, size=3)
            if all(np.linalg.norm(p - q) > 0.9 for q in pos):
                pos.append(p)
        out.append(Atoms(list(rng.choice(list(symbols), size=k)), positions=pos))
    return out


def _synthetic(path: Path, key: str = "energy", n: int = 12) -> Path:
    """Frames with E = Σ n_Z E0_Z in ``info[key]``, written as extxyz."""
    frames = _clusters(n)
    for a in frames:
        a.info[key] = sum(E0[s] for s in a.get_chemical_symbols())
    write(path, frames, format="extxyz")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _head_e0(path: Path, head: str = "main") -> dict[str, float]:
    model = ase_adapt.load_model(path)
    return {chemical_symbols[z]: e for z, e in zip(model.elements, model.heads[head].e0)}


@pytest.fixture
def checkpoint(make_model, tmp_path: Path) -> Path:
    """A tiny float64 model (H, C, N, O) with non-trivial main-head E0s, saved."""
    model = make_model(dtype="float64")
    model.heads["main"].set_e0([-13.6, -1029.8, -1485.3, -2042.6])
    return model.save(tmp_path / "pre.safetensors")


def _shifted_frames(path: Path, checkpoint: Path, key: str = "energy") -> Path:
    """Frames labelled with the model's own prediction plus planted per-element offsets."""
    model = ase_adapt.load_model(checkpoint)
    frames = _clusters(10, seed=1, symbols="HCNO")
    for a in frames:
        a.calc = ase_adapt.MLFFCalculator(model)
        e = a.get_potential_energy() + sum(SHIFT[s] for s in a.get_chemical_symbols())
        a.calc = None
        a.info[key] = e
    write(path, frames, format="extxyz")
    return path


# ------------------------------------------------------------------------------------ the methods
def test_isolated_emt_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "e0.json"
    assert main(["e0", "--method", "isolated", "--calculator", "emt", "--elements", "H", "C", "N", "O",
                 "--json", str(out)]) == 0
    expected = isolated_atom_e0(["H", "C", "N", "O"], EMT())
    data = json.loads(out.read_text())
    assert list(data) == ["H", "C", "N", "O"]  # ordered by Z
    assert data == pytest.approx({"H": expected[1], "C": expected[6], "N": expected[7], "O": expected[8]}, abs=1e-12)
    text = capsys.readouterr().out
    assert "element" in text and f"{expected[8]:.6f}" in text and str(out) in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e0.json"]


def test_isolated_lj_is_zero_and_elements_default_to_the_model(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "e0.json"
    assert main(["e0", "--method", "isolated", "--calculator", "lj", "--model", str(checkpoint), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == {"H": 0.0, "C": 0.0, "N": 0.0, "O": 0.0}


def test_average_recovers_planted_e0s_from_extxyz(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _synthetic(tmp_path / "frames.xyz", key="my_energy")
    out = tmp_path / "e0.json"
    assert main(["e0", "--method", "average", "--data", str(data), "--energy-key", "my_energy",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == pytest.approx(E0, abs=1e-6)
    assert "-2042.6" in capsys.readouterr().out


def test_average_reads_the_default_energy_label(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "frames.xyz")  # extxyz "energy" comes back as a single-point result
    out = tmp_path / "e0.json"
    assert main(["e0", "--method", "average", "--data", str(data), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == pytest.approx(E0, abs=1e-6)


def test_reestimate_write_to_sets_the_head_and_leaves_the_input_untouched(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _shifted_frames(tmp_path / "new.xyz", checkpoint)
    before = _sha(checkpoint)
    out_json, out_ckpt = tmp_path / "out" / "e0.json", tmp_path / "out" / "tuned.safetensors"
    assert main(["e0", "--method", "reestimate", "--model", str(checkpoint), "--data", str(data),
                 "--head", "main", "--json", str(out_json), "--out", str(out_ckpt)]) == 0
    pre = _head_e0(checkpoint)
    expected = {s: pre[s] + SHIFT[s] for s in pre}
    assert json.loads(out_json.read_text()) == pytest.approx(expected, abs=1e-6)
    assert _head_e0(out_ckpt) == pytest.approx(expected, abs=1e-6)
    assert _head_e0(out_ckpt, "prior") == _head_e0(checkpoint, "prior")  # other heads untouched
    assert _sha(checkpoint) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.xyz", "out", "pre.safetensors"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["e0.json", "tuned.safetensors"]
    assert "change / eV" in capsys.readouterr().out


def test_write_to_the_input_path_only_when_given_explicitly(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "e0.json"
    assert main(["e0", "--method", "isolated", "--calculator", "emt", "--model", str(checkpoint), "--json", str(out)]) == 0
    assert _head_e0(checkpoint)["H"] == -13.6  # --model alone writes nothing to it
    assert main(["e0", "--method", "isolated", "--calculator", "emt", "--model", str(checkpoint),
                 "--out", str(checkpoint)]) == 0
    assert _head_e0(checkpoint) == pytest.approx(json.loads(out.read_text()), abs=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e0.json", "pre.safetensors"]


def test_average_write_to_a_prior_head(checkpoint: Path, tmp_path: Path) -> None:
    frames = _clusters(16, seed=3, symbols="HCNO")
    for a in frames:
        a.info["prior_energy"] = sum(SHIFT[s] for s in a.get_chemical_symbols())
    data = tmp_path / "prior.xyz"
    write(data, frames, format="extxyz")
    out = tmp_path / "tuned.safetensors"
    assert main(["e0", "--method", "average", "--data", str(data), "--energy-key", "prior_energy",
                 "--model", str(checkpoint), "--head", "prior", "--out", str(out)]) == 0
    assert _head_e0(out, "prior") == pytest.approx(SHIFT, abs=1e-6)
    assert _head_e0(out, "main") == _head_e0(checkpoint, "main")


def test_settings_from_yaml_with_command_line_override(tmp_path: Path) -> None:
    data = _synthetic(tmp_path / "frames.xyz", key="e_ref")
    config = tmp_path / "e0.yaml"
    config.write_text(f"method: average\ndata: {data}\nenergy-key: wrong_key\n")
    out = tmp_path / "e0.json"
    assert main(["e0", "--config", str(config), "--energy-key", "e_ref", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == pytest.approx(E0, abs=1e-6)
    settings = E0Settings.from_yaml(config)
    assert settings.method is E0Method.AVERAGE and settings.energy_key == "wrong_key"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.head = "prior"  # type: ignore[misc]


def test_make_calculator_known_specs() -> None:
    for spec, kind in (("emt", "emt"), ("LJ", "lj")):  # ase_adapt.priors wraps the backends
        assert make_calculator(spec).kind == kind


# ------------------------------------------------------------------------------------ bad input
def _fails(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["e0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ase-adapt e0: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fails(["--calculator", "emt", "--elements", "H"], capsys, "no method")
    _fails(["--method", "isolated", "--elements", "H"], capsys, "--calculator")
    _fails(["--method", "isolated", "--calculator", "emt"], capsys, "--elements")
    _fails(["--method", "isolated", "--calculator", "dft-of-dreams", "--elements", "H"], capsys, "dft-of-dreams")
    _fails(["--method", "isolated", "--calculator", "emt", "--elements", "Xx"], capsys, "Xx")
    _fails(["--method", "average"], capsys, "--data")
    _fails(["--method", "reestimate", "--data", "x.xyz"], capsys, "--model")
    _fails(["--method", "isolated", "--calculator", "emt", "--elements", "H", "--out", "m.safetensors"],
           capsys, "--out needs --model")
    config = tmp_path / "bad.yaml"
    config.write_text("method: average\ndata: x.xyz\nenergy_kye: e\n")
    _fails(["--config", str(config)], capsys, "energy_kye")
    _fails(["--config", str(tmp_path / "missing.yaml")], capsys, "missing.yaml")
    assert list(tmp_path.iterdir()) == [config]


def test_bad_data_exit_2_naming_the_file_key_or_element(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "missing.xyz"
    _fails(["--method", "average", "--data", str(missing)], capsys, "missing.xyz")
    corrupt = tmp_path / "corrupt.xyz"
    corrupt.write_text("3\nenergy=1.0\nH 0 0 0\nH 0 0\n")
    _fails(["--method", "average", "--data", str(corrupt)], capsys, "corrupt.xyz")
    data = _synthetic(tmp_path / "frames.xyz")
    _fails(["--method", "average", "--data", str(data), "--energy-key", "dft_energy"], capsys, "dft_energy", "frame 0")
    _fails(["--method", "reestimate", "--model", str(checkpoint), "--data", str(data), "--head", "nope"],
           capsys, "nope")
    fluorine = tmp_path / "f.xyz"
    write(fluorine, [Atoms("HF", positions=[[0, 0, 0], [0.9, 0, 0]], info={"energy": -1.0})], format="extxyz")
    _fails(["--method", "reestimate", "--model", str(checkpoint), "--data", str(fluorine)], capsys, "F")
    _fails(["--method", "reestimate", "--model", str(tmp_path / "none.safetensors"), "--data", str(data)],
           capsys, "none.safetensors")


def test_nothing_is_written_when_the_e0s_do_not_cover_the_model(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = _synthetic(tmp_path / "frames.xyz")  # H, C, O only; the model also has N
    out_json, out_ckpt = tmp_path / "e0.json", tmp_path / "tuned.safetensors"
    _fails(["--method", "average", "--data", str(data), "--model", str(checkpoint),
            "--json", str(out_json), "--out", str(out_ckpt)], capsys, "['N']")
    assert not out_json.exists() and not out_ckpt.exists()


def test_bad_frame_files_are_named(tmp_path: Path) -> None:
    from ase_adapt.cli.e0 import load_frames
    from ase_adapt.errors import DataError

    assert len(load_frames(_synthetic(tmp_path / "frames.xyz", n=3))) == 3
    corrupt = tmp_path / "corrupt.xyz"
    corrupt.write_text("3\nenergy=1.0\nH 0 0 0\n")
    with pytest.raises(DataError, match="corrupt.xyz"):
        load_frames(corrupt)
    with pytest.raises(DataError, match="missing.xyz"):
        load_frames(tmp_path / "missing.xyz")
