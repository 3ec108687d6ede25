"""``run_md`` / ``ase-adapt md``: the ensembles complete, a killed run resumes with an identical
continuation, the stability monitor stops a run and says why, and the CLI writes only --out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import molecule
from ase.io import read

from ase_adapt import MLFFCalculator
from ase_adapt.cli.main import main
from ase_adapt.train.data import write_frames
from ase_adapt.workflows import MDSettings, run_md

FAST = dict(steps=40, traj_every=5, log_every=5, checkpoint_every=10, progress=False)


@pytest.fixture
def gentle(make_model):
    """An untrained tiny float64 model: smooth and weak, so that methanol stays a molecule."""
    return make_model(dtype="float64")


@pytest.mark.parametrize("ensemble", ["nvt", "bussi", "nve"])
def test_each_ensemble_completes_with_its_outputs(gentle, tmp_path, ensemble):
    summary = run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(ensemble=ensemble, **FAST), tmp_path)
    assert summary["completed"] and summary["steps_done"] == 40 and summary["stopped_because"] is None
    frames = read(tmp_path / "trajectory.extxyz", ":")
    assert len(frames) == 9 and np.isfinite(frames[-1].positions).all()  # steps 0, 5, ..., 40
    rows = [line for line in (tmp_path / "md.log").read_text().splitlines() if not line.startswith("#")]
    assert len(rows) == 9 and [int(r.split()[0]) for r in rows] == list(range(0, 41, 5))
    assert json.loads((tmp_path / "summary.json").read_text())["steps_done"] == 40


def test_a_killed_run_resumes_with_an_identical_continuation(gentle, tmp_path, monkeypatch):
    atoms = molecule("CH3CH2OH")
    s = MDSettings(ensemble="nvt", **FAST)
    run_md(atoms, MLFFCalculator(gentle), s, tmp_path / "whole")

    import ase_adapt.workflows.dynamics as dynamics

    original = dynamics._Run.record

    def killed_at_step_23(self):
        original(self)
        if self.step == 23:
            raise KeyboardInterrupt  # written: trajectory to 20, log to 20, restart at 20 (and more after)

    monkeypatch.setattr(dynamics._Run, "record", killed_at_step_23)
    with pytest.raises(KeyboardInterrupt):
        run_md(atoms, MLFFCalculator(gentle), s, tmp_path / "split")
    monkeypatch.setattr(dynamics._Run, "record", original)
    with pytest.raises(FileExistsError, match="resume"):
        run_md(atoms, MLFFCalculator(gentle), s, tmp_path / "split")
    summary = run_md(atoms, MLFFCalculator(gentle), s, tmp_path / "split", resume=True)
    assert summary["resumed_from_step"] == 20 and summary["steps_done"] == 40
    for name in ("trajectory.extxyz", "md.log"):
        assert (tmp_path / "split" / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_resume_refuses_other_settings(gentle, tmp_path):
    run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(**FAST), tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(temperature_K=900.0, **FAST), tmp_path,
               resume=True)


def test_the_monitor_stops_an_unstable_run_and_says_why(gentle, tmp_path):
    s = MDSettings(ensemble="nve", temperature_K=3000.0, bond_deviation_limit=0.05, **FAST)
    summary = run_md(molecule("CH3OH"), MLFFCalculator(gentle), s, tmp_path)
    assert not summary["completed"] and "deviated" in summary["stopped_because"]
    assert summary["steps_done"] < 40 and summary["max_bond_deviation_A"] > 0.05


def test_md_cli_with_a_yaml_config_and_resume(gentle, tmp_path, capsys):
    ckpt = gentle.save(tmp_path / "m.safetensors")
    structure = write_frames(tmp_path / "start.xyz", [molecule("CH3OH")])
    config = tmp_path / "md.yaml"
    config.write_text("ensemble: bussi\nsteps: 20\ntemperature: 400\ntraj-every: 5\ncheckpoint_every: 10\n")
    out = tmp_path / "out"
    base = ["md", str(structure), "--model", str(ckpt), "--config", str(config), "--out", str(out), "--quiet"]
    assert main(base) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["ensemble"] == "bussi" and summary["settings"]["temperature_K"] == 400.0
    assert main(base + ["--steps", "30", "--resume"]) == 0  # run longer
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 30
    assert sorted(p.name for p in out.iterdir()) == ["md.log", "restart.json", "summary.json", "trajectory.extxyz"]
    assert "MD bussi: 30 steps, completed" in capsys.readouterr().out
    assert main(["md", str(structure), "--model", str(ckpt), "--steps", "0", "--out", str(tmp_path / "x")]) == 2
