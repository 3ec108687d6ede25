"""The CLI and the examples run as documented, and write only where they are told to."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ase_adapt import build_model
from ase_adapt.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(script: str, tmp_path: Path) -> None:
    proc = _run([sys.executable, str(ROOT / "examples" / script)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.iterdir()) == [], "examples must not litter the working directory"


def _read_only_directory(tmp_path: Path) -> Path:
    """A working directory no one can write to, root included: procfs refuses every new file
    (a chmod 555 folder, the fallback off Linux, stops everyone but root)."""
    if Path("/proc/self").is_dir():
        return Path("/proc")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def test_the_read_only_directory_is_read_only_for_us(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        (_read_only_directory(tmp_path) / "probe.txt").write_text("x")


def test_demo_writes_only_its_outputs_from_a_read_only_directory(tmp_path: Path) -> None:
    ro = _read_only_directory(tmp_path)
    out = tmp_path / "out"
    proc = _run([sys.executable, "-m", "ase_adapt.cli.main", "demo", "--md-steps", "200", "--parity-frames", "2",
                 "--ttt-steps", "5", "--out", str(out), "--quiet"], cwd=ro)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "hr.png", "md_adaptive.xyz", "md_base.xyz", "md_reference.xyz", "parity.png", "sgdml_prior.npz", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["molecule"] == "C10H8" and summary["atoms"] == 18
    assert set(summary["shift"]["detectors"]) == {"elements", "force_norm", "connectivity"}
    assert set(summary["force_mae_mev_per_A"]) == {"base", "adaptive", "prior"}
    assert set(summary["md"]) == {"reference", "base", "adaptive"}
    assert "shift report" in proc.stdout and "force MAE" in proc.stdout


def test_info_describes_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = build_model(channels=4, num_layers=1, elements=["H", "O"])
    model.heads["main"].set_e0([-13.6, -2041.8])
    path = model.save(tmp_path / "m.safetensors")
    assert main(["info", "--model", str(path), "--json", "-"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["heads"]["main"] == {"H": -13.6, "O": -2041.8}
    assert summary["config"]["channels"] == 4
    out = tmp_path / "sub" / "info.json"  # --json takes a path, as in every other command
    assert main(["info", "--model", str(path), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == summary and "head main" in capsys.readouterr().out


def test_info_describes_a_foreign_model(capsys: pytest.CaptureFixture) -> None:
    """Every spec load_model accepts works in info (it printed a KeyError 'channels' traceback)."""
    pytest.importorskip("sevenn")  # installed by the test extra: this runs in CI
    assert main(["info", "--model", "sevennet:7net-0"]) == 0
    out = capsys.readouterr().out
    assert "kind sevennet" in out and "89 elements" in out and "head main" in out


def test_cli_reports_bad_input_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "--model", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint file" in err and err.count("\n") == 1 and "Traceback" not in err
    # (it used to pass --md-steps 1, which failed on the sGDML prior's step count, never reaching the molecule)
    assert main(["demo", "--molecule", "not-a-molecule", "--prior", "gfn-ff", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ase-adapt demo: error:") and "not-a-molecule" in err and err.count("\n") == 1


def test_every_subcommand_has_complete_help() -> None:
    from ase_adapt.cli.main import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0


def _help_examples():
    """(command, argv) of every ``ase-adapt ...`` example in every subcommand's --help."""
    import shlex

    from ase_adapt.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for name, p in sub.choices.items():
        text = (p.description or "").replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("ase-adapt "):
                out.append((name, shlex.split(line, comments=True)[1:]))
    return parser, sub, out


def test_every_help_example_parses_and_gives_files_where_files_are_asked():
    """screen --help passed a number to --structures, which takes a file."""
    parser, sub, examples = _help_examples()
    assert len(examples) >= 25 and {name for name, _ in examples} >= {"md", "relax", "neb", "screen", "evaluate"}
    for name, argv in examples:
        args = parser.parse_args(argv)  # unknown options, wrong types and missing arguments fail here
        for action in sub.choices[name]._actions:
            value = getattr(args, action.dest, None)
            if action.metavar in ("FILE", "YAML", "XYZ", "PATH") and isinstance(value, str):
                with pytest.raises(ValueError):
                    float(value)  # a file, not a number
