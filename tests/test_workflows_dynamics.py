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


# ---------------------------------------------------------------- nothing lost, nothing silently mixed
def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_stopped_run_is_never_resumed_or_rewritten(gentle, tmp_path):
    s = MDSettings(ensemble="nve", temperature_K=3000.0, bond_deviation_limit=0.05, **FAST)
    summary = run_md(molecule("CH3OH"), MLFFCalculator(gentle), s, tmp_path)
    assert not summary["completed"] and summary["steps_done"] < 10  # stopped before the first checkpoint
    before = _snapshot(tmp_path)
    restart = json.loads((tmp_path / "restart.json").read_text())
    assert restart["step"] == summary["steps_done"] and restart["ended"]["completed"] is False
    for steps in (5, 100):
        with pytest.raises(ValueError, match="stopped at step .* record is kept"):
            run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(**{**vars(s), "steps": steps}), tmp_path,
                   resume=True)
    assert _snapshot(tmp_path) == before


def test_a_completed_run_is_extended_never_cut(gentle, tmp_path, capsys):
    s = MDSettings(**FAST)
    run_md(molecule("CH3OH"), MLFFCalculator(gentle), s, tmp_path)
    before = _snapshot(tmp_path)
    summary = run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(**{**vars(s), "steps": 20}), tmp_path,
                     resume=True)
    assert summary["steps_done"] == 40 and _snapshot(tmp_path) == before
    assert "nothing to do" in capsys.readouterr().out
    longer = run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(**{**vars(s), "steps": 50}), tmp_path,
                    resume=True)
    assert longer["steps_done"] == 50 and longer["resumed_from_step"] == 40
    for name in ("trajectory.extxyz", "md.log"):
        assert (tmp_path / name).read_bytes().startswith(before[name])  # appended to, never cut


def test_resume_refuses_another_model_or_an_added_prior_and_names_it(gentle, make_model, tmp_path):
    from ase_adapt import AdaptiveCalculator

    s = MDSettings(**FAST)
    atoms = molecule("CH3OH")
    run_md(atoms, MLFFCalculator(gentle), MDSettings(**{**vars(s), "steps": 20}), tmp_path)
    other = make_model(dtype="float64", seed=7)
    with pytest.raises(ValueError, match="calculator.model"):
        run_md(atoms, MLFFCalculator(other), s, tmp_path, resume=True)
    adaptive = AdaptiveCalculator(gentle, "lj", detectors=False, ttt=False, adapt_when="never")
    with pytest.raises(ValueError, match="calculator.calculator: .*MLFFCalculator.* in the run"):
        run_md(atoms, adaptive, s, tmp_path, resume=True)
    with pytest.raises(ValueError, match="temperature_K: 300.0 in the run, 900.0 now"):
        run_md(atoms, MLFFCalculator(gentle), MDSettings(**{**vars(s), "temperature_K": 900.0}), tmp_path,
               resume=True)
    assert run_md(atoms, MLFFCalculator(gentle), s, tmp_path, resume=True)["steps_done"] == 40


def test_resume_errors_name_the_folder_or_the_file(gentle, tmp_path):
    with pytest.raises(ValueError, match="nothing to resume in .*empty.* no restart.json"):
        run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(**FAST), tmp_path / "empty", resume=True)
    run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(**{**FAST, "steps": 20}), tmp_path / "run")
    path = tmp_path / "run" / "restart.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(ValueError, match=r"restart.json is not a readable restart file"):
        run_md(molecule("CH3OH"), MLFFCalculator(gentle), MDSettings(**FAST), tmp_path / "run", resume=True)


def test_cli_resume_takes_what_is_left_out_from_the_run_and_refuses_what_differs(gentle, tmp_path, capsys):
    other = gentle.save(tmp_path / "other.safetensors")
    structure = write_frames(tmp_path / "start.xyz", [molecule("CH3OH")])
    out = str(tmp_path / "md1")
    assert main(["md", str(structure), "--temperature", "500", "--minimize", "0.5",  # the default model
                 "--steps", "20", "--checkpoint-every", "10", "--out", out, "--quiet"]) == 0
    # the docs' example: only --out, --steps and --resume are repeated
    assert main(["md", str(structure), "--out", out, "--steps", "30", "--resume", "--quiet"]) == 0
    summary = json.loads((tmp_path / "md1" / "summary.json").read_text())
    assert summary["steps_done"] == 30 and summary["settings"]["temperature_K"] == 500.0
    capsys.readouterr()
    assert main(["md", str(structure), "--out", out, "--steps", "40", "--resume", "--temperature", "300"]) == 2
    assert "temperature_K: 500.0 in the run, 300.0 now" in capsys.readouterr().err
    assert main(["md", str(structure), "--out", out, "--steps", "40", "--resume", "--model", str(other)]) == 2
    assert "calculator.model" in capsys.readouterr().err
    assert main(["md", str(structure), "--out", out, "--steps", "40", "--resume", "--prior", "lj"]) == 2
    assert "calculator.calculator" in capsys.readouterr().err
    assert json.loads((tmp_path / "md1" / "summary.json").read_text())["steps_done"] == 30
    assert main(["md", str(structure), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_a_run_that_stays_hot_is_flagged_and_events_say_time_and_reason():
    from ase_adapt.workflows.dynamics import Ensemble, describe_event, mean_temperature

    hot = mean_temperature([300.0, 900.0, 1100.0, 1200.0, 1150.0, 1180.0], 500.0, Ensemble.NVT)
    assert hot["too_hot"] and "1177 K, is 2.4x the target 500 K" in hot["temperature_warning"]
    assert not mean_temperature([300.0, 520.0, 480.0, 510.0], 500.0, Ensemble.NVT)["too_hot"]
    assert not mean_temperature([300.0, 900.0, 1100.0, 1200.0], 500.0, Ensemble.NVE)["too_hot"]
    line = describe_event({"kind": "prior_failed", "action": "answered unadapted", "seconds": 88.04,
                           "prior_error": "SCF did not converge"})
    assert line == "prior_failed (answered unadapted), 88.0 s; prior failed: SCF did not converge"
    rolled = describe_event({"kind": "ttt", "action": "rolled back", "seconds": 3.0,
                             "ttt": {"rolled_back": True, "stop_reason": "rolled back: non-finite loss after 7 steps"}})
    assert rolled.endswith("3.0 s; rolled back: non-finite loss after 7 steps")


def test_an_extension_killed_before_its_first_checkpoint_resumes(gentle, tmp_path, monkeypatch):
    """Review finding: extending a completed run wrote no restart point until the next
    checkpoint_every step, so a kill in between made the run unresumable."""
    import ase_adapt.workflows.dynamics as dynamics

    atoms = molecule("CH3OH")
    s = MDSettings(**{**FAST, "steps": 25, "checkpoint_every": 100})
    run_md(atoms, MLFFCalculator(gentle), s, tmp_path)
    original = dynamics._Run.record

    def killed_at_step_30(self):
        original(self)
        if self.step == 30:
            raise KeyboardInterrupt

    monkeypatch.setattr(dynamics._Run, "record", killed_at_step_30)
    longer = MDSettings(**{**vars(s), "steps": 40})
    with pytest.raises(KeyboardInterrupt):
        run_md(atoms, MLFFCalculator(gentle), longer, tmp_path, resume=True)
    monkeypatch.setattr(dynamics._Run, "record", original)
    summary = run_md(atoms, MLFFCalculator(gentle), longer, tmp_path, resume=True)
    assert summary["steps_done"] == 40 and summary["resumed_from_step"] == 25


def test_a_run_killed_before_its_summary_gets_one_from_its_restart(gentle, tmp_path, capsys):
    s = MDSettings(**{**FAST, "steps": 20})
    run_md(molecule("CH3OH"), MLFFCalculator(gentle), s, tmp_path)
    (tmp_path / "summary.json").unlink()
    summary = run_md(molecule("CH3OH"), MLFFCalculator(gentle), s, tmp_path, resume=True)
    assert summary["completed"] and summary["steps_done"] == 20 and summary["rebuilt_from"] == "restart.json"
    assert json.loads((tmp_path / "summary.json").read_text())["completed"]
