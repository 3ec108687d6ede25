"""Smoke tests of benchmarks/data.py (benchmark data generation) on a few quick benzene frames.

GFN2-xTB (tblite), GFN-FF (xtb-python) and sGDML are real here: benzene is 12 atoms, a quick run
is 34 MD steps (about 0.1 s of xTB). The reference calculator is wrapped to count calls and to
simulate a kill, an SCF failure that a retry fixes, and one that it does not.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

pytest.importorskip("tblite")
pytest.importorskip("xtb")
pytest.importorskip("sgdml")

from ase_adapt.priors import PriorError, make_prior  # noqa: E402
from ase_adapt.train.data import get_label, is_isolated_atom, read_frames  # noqa: E402

from conftest import load_script  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "data.py"




bench = load_script(SCRIPT, "bench_data_under_test")
SETTINGS = bench.QUICK
KEYS = ("energy", "forces", "prior_gfn-ff_energy", "prior_gfn-ff_forces", "prior_sgdml_energy", "prior_sgdml_forces")


class Counting(Calculator):
    """GFN2-xTB that counts its calls and fails (``exc``) on the calls numbered in ``fail_on``."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, counter: dict, fail_on=(), exc: type[BaseException] = KeyboardInterrupt, **options):
        super().__init__()
        self.inner = make_prior("gfn2-xtb", threads=1, **options)
        self.counter, self.fail_on, self.exc = counter, set(fail_on), exc

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.counter["n"] += 1
        if self.counter["n"] in self.fail_on:
            raise self.exc(f"simulated failure on call {self.counter['n']}")
        labels = self.inner.label(self.atoms)
        self.results = {"energy": labels["energy"], "free_energy": labels["energy"], "forces": labels["forces"]}


def _run(out: Path, counter: dict | None = None, fail_on=(), exc=KeyboardInterrupt, settings=SETTINGS):
    counter = counter if counter is not None else {"n": 0}
    factory = lambda **kw: Counting(counter, fail_on, exc, **kw)  # noqa: E731
    return bench.generate(settings, ["benzene"], out, progress=False, make_reference=factory, mode="quick")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    counter = {"n": 0}
    manifest = _run(out, counter)
    return out, manifest, counter["n"]


def test_frames_carry_every_label(baseline):
    out, manifest, calls = baseline
    frames = read_frames(out / "benzene.xyz")
    n = SETTINGS.train_frames
    assert len(frames) == n == manifest["molecules"]["benzene"]["n_frames"]
    assert calls == SETTINGS.equil + SETTINGS.stride * n + 1  # one call per MD step, plus the start
    for i, atoms in enumerate(frames):
        assert atoms.get_chemical_formula() == "C6H6" and not atoms.pbc.any()
        for key in KEYS:
            value = get_label(atoms, key, i)  # raises on a missing, malformed or non-finite label
            assert np.shape(value) == ((len(atoms), 3) if key.endswith("forces") else ())
        assert "momenta" not in atoms.arrays
    steps = [a.info["md_step"] for a in frames]
    assert steps == [SETTINGS.equil + SETTINGS.stride * (k + 1) for k in range(n)]
    assert sum(a.info["sgdml_train"] for a in frames) == min(SETTINGS.sgdml_frames, n // 2)
    assert (out / "benzene_sgdml.npz").is_file()
    # the reference forces are not the GFN-FF ones and not projected (they need not sum to zero exactly)
    f0 = get_label(frames[0], "forces")
    assert not np.allclose(f0, get_label(frames[0], "prior_gfn-ff_forces"))

    atoms = read_frames(out / "isolated_atoms.xyz")
    assert [a.get_chemical_symbols()[0] for a in atoms] == ["H", "C", "N", "O"]
    assert all(is_isolated_atom(a) and np.isfinite(get_label(a, "energy")) for a in atoms)
    entry = manifest["molecules"]["benzene"]
    assert entry["label_keys"] == list(KEYS) and entry["file_bytes"] == (out / "benzene.xyz").stat().st_size
    assert entry["timings"]["reference_calls"] == calls and entry["retries"] == []
    assert not list(out.glob("*.ckpt.npz")) and not list(out.glob(".*"))  # no checkpoint or lock left


def test_deterministic_and_finished_work_is_skipped(baseline, tmp_path):
    out, _, _ = baseline
    _run(tmp_path)
    for name in ("benzene.xyz", "isolated_atoms.xyz"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    counter = {"n": 0}
    _run(tmp_path, counter)  # everything is done: nothing is recomputed
    assert counter["n"] == 0


def test_resume_after_interruption_recomputes_nothing(baseline, tmp_path):
    out, _, calls = baseline
    counter = {"n": 0}
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, counter, fail_on={25})  # killed mid-run, after a few checkpoints
    assert (tmp_path / "benzene.ckpt.npz").is_file() and not (tmp_path / "benzene.xyz").exists()
    first = counter["n"]
    counter = {"n": 0}
    manifest = _run(tmp_path, counter)
    # the resumed run only recomputes the forces of the saved state (one call)
    assert first - 1 + counter["n"] == calls + 1
    assert manifest["molecules"]["benzene"]["resumed"] == 1
    assert (tmp_path / "benzene.xyz").read_bytes() == (out / "benzene.xyz").read_bytes()
    assert not (tmp_path / "benzene.ckpt.npz").exists()


def test_failed_scf_is_retried_once(baseline, tmp_path):
    out, _, _ = baseline
    manifest = _run(tmp_path, fail_on={20}, exc=PriorError)
    retries = manifest["molecules"]["benzene"]["retries"]
    assert len(retries) == 1 and retries[0]["what"] == "reference"
    # the retry redoes the same step from the same state: the data does not change
    assert (tmp_path / "benzene.xyz").read_bytes() == (out / "benzene.xyz").read_bytes()


def test_failure_twice_stops_with_the_state_saved(baseline, tmp_path):
    out, _, _ = baseline
    with pytest.raises(bench.MDFailure, match=r"benzene: .*failed twice at MD step 19"):
        _run(tmp_path, fail_on={20, 21}, exc=PriorError)
    assert (tmp_path / "benzene.ckpt.npz").is_file()
    _run(tmp_path)  # the failure was transient: rerunning resumes and completes
    assert (tmp_path / "benzene.xyz").read_bytes() == (out / "benzene.xyz").read_bytes()


def test_other_settings_are_refused(baseline, tmp_path):
    out, _, _ = baseline
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, fail_on={25})
    other = dataclasses.replace(SETTINGS, stride=SETTINGS.stride + 1)
    with pytest.raises(SystemExit, match="different settings"):
        _run(tmp_path, settings=other)  # a checkpoint of another run
    _run(tmp_path)
    with pytest.raises(SystemExit, match=r"other settings \(stride: 2 -> 3\)"):
        _run(tmp_path, settings=other)  # a finished output of another run


def test_validation_molecules_are_bundled():
    mols = [bench.resolve_molecule(name) for name in bench.VALIDATION]
    assert [m.role for m in mols] == ["validation"] * 8
    assert {s for m in mols for s in m.atoms.get_chemical_symbols()} == {"H", "C", "N", "O", "F", "P"}
    assert bench.molecule_settings(mols[0], SETTINGS, {})["n_frames"] == SETTINGS.test_frames


def test_cli_quick_run(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--molecules", "benzene", "--frames", "4",
                        "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(read_frames(tmp_path / "benzene.xyz")) == 4 and (tmp_path / "manifest.json").is_file()
