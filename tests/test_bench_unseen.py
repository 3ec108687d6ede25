"""Smoke run of the unseen-molecule benchmark (the full run is benchmarks/unseen_molecules.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_unseen_molecules_quick(tmp_path):
    data = tmp_path / "data"
    gen = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "data.py"), "--quick", "--molecules", "toluene",
                          "--test-frames", "16", "--out", str(data), "--no-progress"],
                         capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stderr[-2000:]
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "unseen_molecules.py"), "--quick", "--data",
                          str(data), "--molecules", "toluene", "--threads", "1", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    entry = result["molecules"]["toluene"]
    ev = entry["evaluate"]
    assert {"base", "rr", "ttt_gfn-ff", "rr_ttt_gfn-ff", "ttt_lj", "ttt_sgdml"} <= set(ev)
    assert all(r["force_mae_mev_per_A"] > 0 for r in ev.values())
    assert ev["ttt_sgdml"]["n_frames"] == ev["base"]["n_frames"]  # the same evaluated frames
    assert ev["ttt_gfn-ff"]["ttt"]["steps"] > 0 and ev["rr"]["radius"] is not None
    assert set(entry["md"]) == {"500K", "800K"}
    assert set(entry["md"]["500K"]) == {"reference", "base", "ttt_gfn-ff", "ttt_sgdml"}
