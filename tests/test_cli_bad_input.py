"""The CLI and bad input: one line on stderr and a non-zero exit, before any expensive work, and
never a silent wrong result (bad-input review; each test fails on the code before the fix)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_adapt.cli.main import main
from ase_adapt.train.data import write_frames


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"ase-adapt {command}: error:"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def checkpoint(make_model, tmp_path: Path) -> Path:
    return make_model().save(tmp_path / "model.safetensors")


@pytest.fixture
def unlabelled_for_prior(tmp_path: Path) -> Path:
    """Frames with reference labels only: no prior labels."""
    frames = []
    for k in range(4):
        a = molecule("CH3OH")
        a.positions += np.random.default_rng(k).normal(0, 0.03, a.positions.shape)
        b = a.copy()
        b.calc = EMT()
        a.calc = SinglePointCalculator(a, energy=b.get_potential_energy(), forces=b.get_forces())
        frames.append(a)
    return write_frames(tmp_path / "frames.xyz", frames)


@pytest.mark.parametrize("args, what", [
    (["--md-steps", "-5"], "--md-steps"),
    (["--parity-frames", "0"], "--parity-frames"),
    (["--temperature", "-300"], "--temperature"),
])
def test_demo_refuses_bad_numbers(args, what, capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "out"), *args]) == 2
    assert what in _one_line_error(capsys, "demo")


def test_demo_refuses_an_empty_molecule_file(tmp_path, capsys):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert main(["demo", "--molecule", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "holds no frames" in _one_line_error(capsys, "demo")


def _below_a_file(tmp_path: Path, name: str) -> Path:
    """An output path no one can write, root included: its parent is a regular file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    return blocker / name


@pytest.mark.parametrize("command, extra, name", [
    ("stats", ["--data", "DATA", "--json"], "stats.json"),
    ("stats", ["--data", "DATA", "--out"], "model.safetensors"),
    ("info", ["--json"], "info.json"),
    ("evaluate", ["--data", "DATA", "--json"], "result.json"),
    ("train", ["--data", "DATA", "--arch", "model-tiny", "--out"], "run"),
])
def test_unwritable_outputs_fail_before_any_work(command, extra, name, checkpoint, unlabelled_for_prior,
                                                 tmp_path, capsys, monkeypatch):
    import ase_adapt.cli.main as cli

    monkeypatch.setattr(cli.COMMANDS[command], "run", lambda settings: pytest.fail("the work started"))
    args = [command] + (["--model", str(checkpoint)] if command != "train" else [])
    args += [str(unlabelled_for_prior) if x == "DATA" else x for x in extra]
    args.append(str(_below_a_file(tmp_path, name)))
    assert main(args) == 2
    assert "cannot write" in _one_line_error(capsys, command)


def test_ctrl_c_ends_in_one_line(monkeypatch, capsys, unlabelled_for_prior, tmp_path):
    import ase_adapt.cli.main as cli

    def interrupted(settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.COMMANDS["label"], "run", interrupted)
    code = main(["label", str(unlabelled_for_prior), "--prior", "lj", "--out", str(tmp_path / "out.xyz")])
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err


def test_stats_out_refuses_frames_without_prior_labels(checkpoint, unlabelled_for_prior, capsys):
    before = checkpoint.read_bytes()
    assert main(["stats", "--model", str(checkpoint), "--data", str(unlabelled_for_prior),
                 "--out", str(checkpoint), "--quiet"]) == 2
    assert "would lose their prior losses" in _one_line_error(capsys, "stats")
    assert checkpoint.read_bytes() == before  # the TTT reference point was not wiped


def test_evaluate_says_why_it_did_not_adapt(make_model, tmp_path, capsys):
    """GFN-FF cannot run on a periodic cell: the result says so, instead of a bare ttt=null."""
    model = make_model(heads=("main", "prior:gfn-ff"))
    ckpt = model.save(tmp_path / "m.safetensors")
    cell = molecule("H2O", vacuum=3.0)
    cell.pbc = True
    frames = []
    for k in range(3):
        a = cell.copy()
        a.positions += np.random.default_rng(k).normal(0, 0.02, a.positions.shape)
        a.calc = SinglePointCalculator(a, energy=-1.0 * k, forces=np.zeros((3, 3)))
        frames.append(a)
    data = write_frames(tmp_path / "cell.xyz", frames)
    out = tmp_path / "result.json"
    assert main(["evaluate", "--model", str(ckpt), "--data", str(data), "--prior", "gfn-ff", "--ttt",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ttt"] is None
    assert result["adaptation"]["kind"] == "prior_failed" and "periodic" in result["adaptation"]["prior_error"]
    captured = capsys.readouterr()
    assert "adaptation: prior_failed" in captured.out and "the prior failed" in captured.err


def test_json_dash_is_standard_output_only_for_info(checkpoint, unlabelled_for_prior, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["stats", "--model", str(checkpoint), "--data", str(unlabelled_for_prior), "--json", "-"]) == 2
    assert "standard output" in _one_line_error(capsys, "stats") and not (tmp_path / "-").exists()


def test_a_missing_optional_backend_is_one_line(tmp_path, capsys, monkeypatch):
    """--dask local without dask.distributed installed: one line naming the extra, exit 2."""
    import builtins

    real_import = builtins.__import__

    def no_distributed(name, *args, **kwargs):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("No module named 'distributed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_distributed)
    code = main(["screen", "--model", "default", "--compositions", "CO2", "--per-composition", "1", "--steps", "1",
                 "--cycles", "0", "--max-atoms", "3", "--dask", "local", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "ase-adapt[dask]" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_scheduler_has_one_meaning_and_dask_its_own_name(capsys):
    """--scheduler was a learning-rate schedule in prepare and a Dask address in screen and evaluate."""
    from ase_adapt.cli.main import main

    for command in (["screen", "--elements", "Cu"], ["evaluate", "--data", "x.xyz"]):
        with pytest.raises(SystemExit) as stop:  # argparse's usage error, like any other bad option
            main([*command, "--scheduler", "local"])
        assert stop.value.code == 2 and "--scheduler is now --dask" in capsys.readouterr().err


def test_screen_refuses_compositions_beside_its_own_structures(tmp_path, capsys):
    """--compositions KBr --structures nacl.extxyz dropped KBr without a word."""
    from ase.build import bulk

    from ase_adapt.cli.main import main
    from ase_adapt.train.data import write_frames

    cells = write_frames(tmp_path / "nacl.extxyz", [bulk("NaCl", "rocksalt", a=5.6)])
    assert main(["screen", "--compositions", "KBr", "--structures", str(cells), "--out", str(tmp_path / "o")]) == 2
    assert "give one or the other" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_cuda_device_without_cuda_fails_before_any_work(tmp_path, capsys):
    """prepare --device cuda labelled everything first, then died with an AssertionError traceback."""
    from ase_adapt.cli.main import main
    from ase_adapt.train import OptimSettings

    missing = r"no CUDA device|CUDA device\(s\) present"  # cuda:99 is missing with or without CUDA
    with pytest.raises(ValueError, match=missing):
        OptimSettings(device="cuda:99")
    assert main(["prepare", "sevennet:7net-0", str(tmp_path / "x.xyz"), "--prior", "emt", "--out",
                 str(tmp_path / "m.pt"), "--device", "cuda:99"]) == 2
    assert re.search(missing, capsys.readouterr().err)
