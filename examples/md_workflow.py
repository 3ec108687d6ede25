"""The MD workflow: the embedded default model runs NVT on ethanol, is "killed", and resumes.

Run: python examples/md_workflow.py   (about half a minute on 2 CPU cores; writes into a temp dir)

The same from the command line:  ase-adapt md ethanol.xyz --steps 200 --minimize 0.05 --out md1
                                 ase-adapt md ethanol.xyz --steps 400 --out md1 --resume
"""

import json
import tempfile
from pathlib import Path

import torch
from ase.build import molecule

from ase_adapt import MLFFCalculator
from ase_adapt.workflows import MDSettings, run_md

torch.set_num_threads(1)  # a 9-atom molecule gains nothing from more threads

with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "md"
    atoms = molecule("CH3CH2OH")
    calc = MLFFCalculator("default")
    settings = MDSettings(ensemble="nvt", steps=200, temperature_K=300.0, timestep_fs=0.5, minimize_fmax=0.05,
                          traj_every=20, log_every=20, checkpoint_every=50, progress=False)
    first = run_md(atoms, calc, settings, out)  # 200 steps, then pretend the job was killed
    print(f"first call: {first['steps_done']} steps, completed={first['completed']}")

    longer = MDSettings(**{**settings.__dict__, "steps": 400})  # the same run, continued to 400 steps
    second = run_md(atoms, calc, longer, out, resume=True)
    print(f"resumed from step {second['resumed_from_step']}: {second['steps_done']} steps, "
          f"{second['ms_per_step']:.1f} ms/step, largest bond deviation {second['max_bond_deviation_A']:.3f} Å")

    log = [line for line in (out / "md.log").read_text().splitlines() if not line.startswith("#")]
    print(f"md.log: {len(log)} rows, last: {log[-1].split()[:2]} (step, ps)")
    assert second["completed"] and second["steps_done"] == 400 and len(log) == 21
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 400
    print("files:", sorted(p.name for p in out.iterdir()))
