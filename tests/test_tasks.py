"""Many tasks, serially or on Dask (``ase_adapt.workflows.tasks``): one result file per task, finished
work is never recomputed, other settings are refused, and the Dask path (a LocalCluster of 2
workers) gives the same results as the serial one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ase_adapt.cli.main import main
from ase_adapt.workflows.screen import ScreenSettings, run_screen
from ase_adapt.workflows.tasks import ModelSource, Task, run_tasks



def square(payload):
    return {"value": payload["x"] ** 2}


def test_finished_tasks_are_reused_and_other_settings_refused(tmp_path):
    tasks = [Task(f"t{k}", {"x": k}) for k in range(4)]
    first = run_tasks(square, tasks[:2], tmp_path, progress=False)
    assert first.computed == ["t0", "t1"] and first.reused == []
    again = run_tasks(square, tasks, tmp_path, progress=False)
    assert again.reused == ["t0", "t1"] and again.computed == ["t2", "t3"]
    assert [r["value"] for r in again.results.values()] == [0, 1, 4, 9]
    with pytest.raises(ValueError, match="other settings"):
        run_tasks(square, [Task("t0", {"x": 5})], tmp_path, progress=False)
    (tmp_path / "t3.json").write_text("{broken")
    with pytest.raises(ValueError, match="unreadable task result"):
        run_tasks(square, tasks, tmp_path, progress=False)
    for bad in ("", "a/b", ".hidden", "a b"):
        with pytest.raises(ValueError, match="invalid task id"):
            Task(bad, {})


def _records(summary):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in summary["structures"]]


def test_dask_and_serial_screens_are_identical(make_model, tmp_path):
    model = make_model(dtype="float64")
    ckpt = model.save(tmp_path / "m.safetensors")
    s = ScreenSettings(compositions=("CO2", "CH4"), structures=2, cycles=1, steps=8, max_atoms=6, progress=False)
    serial = run_screen(str(ckpt), s, tmp_path / "serial")
    dask = run_screen(model, s, tmp_path / "dask", scheduler="local", n_workers=2)  # the model travels as bytes
    assert serial["executor"] == "serial" and dask["executor"] == "dask:local"
    assert dask["computed"] == 4 and _records(serial) == _records(dask)
    assert ModelSource.of(model).data is not None and ModelSource.of(str(ckpt)).spec == str(ckpt)


def test_a_killed_screen_resumes_without_recomputing(make_model, tmp_path):
    ckpt = make_model(dtype="float64").save(tmp_path / "m.safetensors")
    out = tmp_path / "out"
    args = ["screen", "--model", str(ckpt), "--compositions", "CO2", "--per-composition", "6", "--cycles", "2",
            "--steps", "40", "--max-atoms", "6", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ase_adapt.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "tasks").glob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")}
    assert 2 <= len(done) < 6, f"the run was not killed midway ({len(done)} tasks done)"
    assert not (out / "screen.json").exists()
    assert main(args) == 0
    summary = json.loads((out / "screen.json").read_text())
    assert summary["reused"] == len(done) and summary["computed"] == 6 - len(done)
    assert {n: (out / "tasks" / n).stat().st_mtime_ns for n in done} == done  # not rewritten


def fails_on_two(payload):
    if payload["x"] == 2:
        raise ValueError("bad input two")
    return {"value": payload["x"]}


def test_a_failing_task_is_named_and_the_finished_ones_are_kept(tmp_path):
    tasks = [Task(f"t{k}", {"x": k}) for k in range(4)]
    with pytest.raises(RuntimeError, match="task t2 failed.*bad input two"):
        run_tasks(fails_on_two, tasks, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["t0.json", "t1.json"]


def test_a_model_file_is_known_by_its_content(make_model, tmp_path):
    """A checkpoint retrained in place is a new model: its old results are refused, not reused."""
    path = tmp_path / "m.safetensors"
    make_model(dtype="float64", seed=1).save(path)
    s = ScreenSettings(compositions=("CO2",), structures=1, cycles=0, steps=2, max_atoms=3, progress=False)
    first = run_screen(str(path), s, tmp_path / "out")
    assert run_screen(str(path), s, tmp_path / "out")["reused"] == 1  # the same file: reused
    make_model(dtype="float64", seed=2).save(path)  # retrained in place
    with pytest.raises(ValueError, match="other settings"):
        run_screen(str(path), s, tmp_path / "out")
    fresh = run_screen(str(path), s, tmp_path / "fresh")  # and a fresh run really uses the new weights
    assert fresh["structures"][0]["energy_per_atom"] != first["structures"][0]["energy_per_atom"]


def test_factories_need_a_stable_name():
    import functools

    from ase.calculators.emt import EMT

    from ase_adapt.workflows.tasks import fingerprint

    here = fingerprint({"c": functools.partial(EMT, asap_cutoff=True)})
    code = ("import functools; from ase.calculators.emt import EMT; from ase_adapt.workflows.tasks import fingerprint; "
            "print(fingerprint({'c': functools.partial(EMT, asap_cutoff=True)}))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert here == there and here != fingerprint({"c": EMT})  # stable across processes, and not any EMT

    def local():
        return EMT()

    for bad in (lambda: EMT(), local):
        with pytest.raises(ValueError, match="module-level"):
            fingerprint({"c": bad})
