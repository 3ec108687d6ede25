"""RSS hole screening: random Cu-Au crystals relaxed, rattled and relaxed again, then flagged.

EMT has a sound repulsive wall, so nothing should be flagged; the same call with a model path
(``run_screen("my.safetensors", ...)``) screens an MLFF. The second run reads the first run's
result files back instead of recomputing them (a killed screen resumes the same way).

Run: python examples/screen_workflow.py   (about 10 s; writes into a temp dir)
CLI:  ase-adapt screen --model my.safetensors --compositions CuAu Cu3Au --per-composition 4 --out rss
"""

import tempfile
from pathlib import Path

from ase.calculators.emt import EMT

from ase_adapt.workflows import ScreenSettings, run_screen
from ase_adapt.workflows.screen_report import table

settings = ScreenSettings(compositions=("CuAu", "Cu3Au"), structures=4, cycles=1, steps=100, max_atoms=8,
                          progress=False)
with tempfile.TemporaryDirectory() as tmp:
    summary = run_screen(None, settings, Path(tmp) / "rss", calculator=EMT)
    print(table(summary))
    again = run_screen(None, settings, Path(tmp) / "rss", calculator=EMT)
    print(f"second run: {again['reused']} structures read back, {again['computed']} computed")
    assert summary["flagged_fraction"] == 0.0 and again["reused"] == 8
