"""Priors: one factory, backends agree with themselves called directly, failures become PriorError,
thread hygiene, fd-level silence, and sGDML fit -> pickle-free save -> load -> predict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ase_adapt.errors import DataError, PriorError
from ase_adapt.priors import (
    PRIOR_SPECS, Prior, StressPrior, fit_sgdml_prior, load_sgdml_model, make_prior, sgdml_compat, silenced_stdout,
)
from ase_adapt.priors.classical import LJ_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def _need(spec: str) -> None:
    module = {"gfn2-xtb": "tblite", "gfn1-xtb": "tblite", "gfn-ff": "xtb", "sgdml": "sgdml"}.get(spec)
    if module:
        pytest.importorskip(module)
    if spec in ("gfn2-xtb", "gfn1-xtb", "gfn-ff"):
        pytest.importorskip("threadpoolctl")


def _direct(spec: str) -> Calculator:
    """The backend calculator as a user would make it without ase-adapt."""
    if spec == "lj":
        from ase.calculators.lj import LennardJones

        return LennardJones(**LJ_DEFAULTS)
    if spec == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if spec == "gfn-ff":
        from xtb.ase.calculator import XTB

        return XTB(method="GFN-FF")
    from tblite.ase import TBLite

    return TBLite(method={"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}[spec], verbosity=0)


def _rattled(name: str = "CH3CH2OH", n: int = 1, amplitude: float = 0.05, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule(name)
        atoms.positions += rng.normal(0.0, amplitude, atoms.positions.shape)
        frames.append(atoms)
    return frames


class Raising(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        raise RuntimeError("backend exploded\nsecond line")


class NaNEnergy(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": float("nan"), "forces": np.zeros((len(self.atoms), 3))}


# --- every spec ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["lj", "emt", "gfn2-xtb", "gfn1-xtb", "gfn-ff"])
def test_spec_agrees_with_its_backend_called_directly(spec: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _need(spec)
    monkeypatch.chdir(tmp_path)  # xtb called directly drops gfnff_topo / gfnff_adjacency into the cwd
    prior = make_prior(spec)
    atoms = _rattled("CH3CH2OH")[0]
    labels = prior.label(atoms)
    reference = atoms.copy()
    reference.calc = _direct(spec)
    assert isinstance(prior, Prior) and prior.kind == spec and prior.spec == spec
    assert prior.head_name == f"prior:{spec}"
    assert isinstance(labels["energy"], float) and np.isfinite(labels["energy"])
    assert labels["forces"].dtype == np.float64 and labels["forces"].shape == (9, 3)
    assert labels["energy"] == pytest.approx(reference.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(labels["forces"], reference.get_forces(), atol=1e-8)
    assert "stress" not in labels  # a molecule has none
    labels["forces"][:] = 0.0  # a copy: the cached result is untouched
    assert np.abs(prior.label(atoms)["forces"]).max() > 0
    assert ("stress" in type(prior).implemented_properties) is (spec != "gfn-ff")


def test_lj_forces_are_minus_the_energy_gradient() -> None:
    prior = make_prior("lj")
    atoms = _rattled("CH3CH2OH", amplitude=0.05, seed=3)[0]
    forces = prior.label(atoms)["forces"]
    h = 1e-5
    for i, k in [(0, 0), (2, 1), (5, 2), (8, 0)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd = -(prior.label(plus)["energy"] - prior.label(minus)["energy"]) / (2 * h)
        assert forces[i, k] == pytest.approx(fd, rel=1e-7, abs=1e-6)


@pytest.mark.parametrize("spec", ["lj", "gfn-ff"])
def test_labels_are_the_raw_gradient_whatever_constraints_the_atoms_carry(spec: str) -> None:
    """An MD frame carries FixCom; ASE's FixCom.adjust_forces subtracts m_i * lambda, which is not
    zero even for forces that sum to zero. Labels once came out projected (and unfittable)."""
    from ase.constraints import FixAtoms, FixCom

    prior = make_prior(spec)
    atoms = _rattled("CH3CH2OH", amplitude=0.05, seed=4)[0]
    raw = prior.label(atoms)["forces"]
    assert np.abs(raw.sum(axis=0)).max() < 1e-8  # an isolated molecule: no net force
    for constraint in (FixCom(), FixAtoms(indices=[0, 1])):
        held = atoms.copy()
        held.set_constraint(constraint)
        np.testing.assert_allclose(prior.label(held)["forces"], raw, atol=1e-10)
        held.calc = make_prior(spec)  # also as the ASE calculator that drives an MD
        np.testing.assert_allclose(held.get_forces(apply_constraint=False), raw, atol=1e-10)
    assert np.abs(raw[:2]).max() > 1e-3  # FixAtoms would have zeroed these


def test_lj_defaults_are_molecule_friendly_and_overridable() -> None:
    atoms = molecule("CH3CH2OH")
    energy = make_prior("lj").label(atoms)["energy"]
    assert -0.5 * len(atoms) < energy < 0.0  # bound, and far from ASE's eV-per-pair defaults
    stiff = make_prior("lj", epsilon=1.0, sigma=1.0)
    assert stiff.backend.parameters["epsilon"] == 1.0
    assert stiff.label(atoms)["energy"] == pytest.approx(10 * energy)


def test_factory_contract() -> None:
    with pytest.raises(ValueError, match=r"unknown prior 'dft'; accepted: lj, emt, gfn2-xtb.*sgdml:PATH.*Calculator"):
        make_prior("dft")
    with pytest.raises(ValueError, match="sgdml:PATH"):
        make_prior("sgdml")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['sigmaa'\].*'sigma'"):
        make_prior("lj", sigmaa=1.0)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        make_prior("lj", threads=0)
    with pytest.raises(TypeError):
        make_prior(3)
    assert set(PRIOR_SPECS) >= {"lj", "emt", "gfn2-xtb", "gfn1-xtb", "gfn-ff", "sgdml:PATH"}
    assert make_prior(" EMT ").kind == "emt"
    prior = make_prior("lj")
    assert make_prior(prior) is prior
    # class-level ASE contract (never extended per instance)
    assert Prior.implemented_properties == ["energy", "free_energy", "forces"]
    assert StressPrior.implemented_properties == ["energy", "free_energy", "forces", "stress"]
    # labels of different priors have different fingerprints in label_frames
    assert make_prior("lj").parameters != make_prior("emt").parameters


def test_wrapped_calculator_and_its_kind() -> None:
    from ase.calculators.lj import LennardJones

    prior = make_prior(LennardJones(sigma=1.0, epsilon=0.1, rc=3.0))
    assert isinstance(prior, StressPrior) and prior.kind == "lennardjones"
    assert prior.head_name == "prior:lennardjones" and prior.threads is None
    assert np.isfinite(prior.label(molecule("H2O"))["energy"])
    assert type(make_prior(Raising())) is Prior  # no stress: not implemented


def test_missing_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tblite.ase", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install ase-adapt\[priors\]"):
        make_prior("gfn2-xtb")


def test_import_has_no_side_effects() -> None:
    code = ("import os, sys; env = dict(os.environ); import ase_adapt.priors; "
            "print(sorted(m for m in ('tblite', 'xtb', 'sgdml', 'threadpoolctl') if m in sys.modules), "
            "env == dict(os.environ), os.listdir('.'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT / "docs")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("[] True")


# --- failures become PriorError -------------------------------------------------------------------

def test_emt_rejects_an_unsupported_element_before_compute() -> None:
    prior = make_prior("emt")
    with pytest.raises(PriorError, match=r"prior 'emt' failed on Si2 \(2 atoms\): unsupported element\(s\) Si"):
        prior.label(bulk("Si", "diamond", a=5.43))
    assert prior.backend.atoms is None  # the backend never ran


def test_nan_positions_backend_exception_and_nan_output() -> None:
    atoms = molecule("H2O")
    atoms.positions[1, 0] = np.nan
    with pytest.raises(PriorError, match=r"H2O \(3 atoms\): non-finite atomic positions"):
        make_prior("lj").label(atoms)
    with pytest.raises(PriorError, match=r"'calculator:Raising' failed on CH4 \(5 atoms\): RuntimeError in the "
                                         r"backend: backend exploded$") as info:
        make_prior(Raising()).label(molecule("CH4"))
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(PriorError, match="non-finite energy nan"):
        make_prior(NaNEnergy()).label(molecule("CH4"))
    with pytest.raises(PriorError):  # through the plain ASE interface too
        a = molecule("CH4")
        a.calc = make_prior(Raising())
        a.get_forces()


def test_xtb_failures_become_prior_errors() -> None:
    _need("gfn2-xtb")
    _need("gfn-ff")
    scf = r"'gfn2-xtb' failed on C2H6O \(9 atoms\): CalculationFailed .*SCF not converged"
    with pytest.raises(PriorError, match=scf):
        make_prior("gfn2-xtb", max_iterations=2).label(molecule("CH3CH2OH"))
    uranium = molecule("H2O")
    uranium.numbers[0] = 92
    for spec in ("gfn2-xtb", "gfn-ff"):
        with pytest.raises(PriorError, match=r"unsupported element\(s\) U"):
            make_prior(spec).label(uranium)
    with pytest.raises(PriorError, match="GFN-FF .* only non-periodic molecules"):
        make_prior("gfn-ff").label(bulk("C", "diamond", a=3.57))


def test_periodic_gfn2_gives_stress_and_molecules_do_not() -> None:
    _need("gfn2-xtb")
    prior = make_prior("gfn2-xtb")
    crystal = bulk("C", "diamond", a=3.57)
    labels = prior.label(crystal)
    direct = crystal.copy()
    direct.calc = _direct("gfn2-xtb")
    assert labels["stress"].shape == (6,) and np.isfinite(labels["stress"]).all()
    np.testing.assert_allclose(labels["stress"], direct.get_stress(), atol=1e-9)
    water = molecule("H2O")
    water.calc = prior
    with pytest.raises(PropertyNotImplementedError):
        water.get_stress()


# --- processes, threads and output ---------------------------------------------------------------

def test_gfnff_is_silent_at_the_fd_level_and_leaves_no_files(capfd: pytest.CaptureFixture, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _need("gfn-ff")
    monkeypatch.chdir(tmp_path)
    prior = make_prior("gfn-ff")
    with silenced_stdout():  # flushes what earlier, unsilenced xtb calls left in Fortran's buffer...
        pass
    capfd.readouterr()  # ...and drops it
    for atoms in _rattled("CH3OH", n=2):
        assert np.isfinite(prior.label(atoms)["energy"])
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == ""
    assert list(tmp_path.iterdir()) == []  # xtb's gfnff_topo / gfnff_adjacency went to a scratch dir
    with silenced_stdout():
        os.write(1, b"hidden\n")  # (capfd routes Python's print around fd 1, so only native writes here)
    assert capfd.readouterr().out == ""


def test_xtb_results_are_identical_on_repeats_with_torch_threads_in_between() -> None:
    _need("gfn2-xtb")
    _need("gfn-ff")
    before = torch.get_num_threads()
    atoms, other = _rattled("CH3CH2OH", n=2)
    try:
        for spec in ("gfn2-xtb", "gfn-ff"):
            prior = make_prior(spec)  # threads=1 by default
            assert prior.threads == 1
            results = []
            for torch_threads in (1, 2, 1, 2):
                torch.set_num_threads(torch_threads)
                x = torch.randn(200, 200, dtype=torch.float64)
                assert torch.isfinite((x @ x).sum())
                prior.label(other)  # history: another structure in between
                results.append(prior.label(atoms))
            for r in results[1:]:
                assert r["energy"] == results[0]["energy"]
                np.testing.assert_array_equal(r["forces"], results[0]["forces"])
    finally:
        torch.set_num_threads(before)


def test_cached_results_are_reused_for_identical_atoms() -> None:
    calls = []

    class Counting(NaNEnergy):
        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            Calculator.calculate(self, atoms, properties, system_changes)
            calls.append(1)
            self.results = {"energy": 1.0, "forces": np.zeros((len(self.atoms), 3))}

    atoms = molecule("H2O")
    atoms.calc = make_prior(Counting())
    atoms.get_potential_energy()
    atoms.get_forces()
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.1
    atoms.get_forces()
    assert len(calls) == 2


# --- sGDML ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sgdml_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Atoms]]:
    pytest.importorskip("sgdml")
    emt = make_prior("emt")
    frames = _rattled("CH3CH2OH", n=12, seed=1)
    for atoms in frames:
        labels = emt.label(atoms)
        atoms.info["energy"] = labels["energy"]
        atoms.arrays["forces"] = labels["forces"]
    path = fit_sgdml_prior(frames, 10, out_path=tmp_path_factory.mktemp("sgdml") / "ethanol.npz")
    return path, frames


def test_sgdml_fit_save_load_predict(sgdml_model: tuple[Path, list[Atoms]]) -> None:
    path, frames = sgdml_model
    assert sorted(p.name for p in path.parent.iterdir()) == ["ethanol.npz"]  # atomic: no temp left
    with np.load(path, allow_pickle=False) as npz:  # every array is pickle-free
        stored = {k: npz[k] for k in npz.files}
    assert str(stored["e_unit"]) == "eV" and str(stored["r_unit"]) == "Ang"
    assert stored["sig"] in stored["ase_adapt_sigma_grid"]  # cross-validated choice
    prior = make_prior(f"sgdml:{path}")
    assert prior.kind == "sgdml" and prior.head_name == "prior:sgdml" and type(prior) is Prior
    errors_e, errors_f = [], []
    for atoms in frames[:10]:  # the training frames
        labels = prior.label(atoms)
        errors_e.append(abs(labels["energy"] - atoms.info["energy"]))
        errors_f.append(np.abs(labels["forces"] - atoms.arrays["forces"]).mean())
    assert max(errors_e) < 0.03 and np.mean(errors_f) < 0.01
    assert not hasattr(np, "in1d") or np.lib.NumpyVersion(np.__version__) < "2.4.0"


def test_sgdml_prior_rejects_another_molecule(sgdml_model: tuple[Path, list[Atoms]]) -> None:
    prior = make_prior(f"sgdml:{sgdml_model[0]}")
    with pytest.raises(PriorError, match=r"failed on CH4 \(5 atoms\): the sGDML model was trained on C2H6O \(9 atoms"):
        prior.label(molecule("CH4"))
    shuffled = sgdml_model[1][0][[0, 2, 1, 3, 4, 5, 6, 7, 8]]  # same formula, other atom order
    with pytest.raises(PriorError, match="same atoms in the same order"):
        prior.label(shuffled)
    with pytest.raises(PriorError, match="isolated molecule"):
        periodic = sgdml_model[1][0].copy()
        periodic.cell, periodic.pbc = [10.0, 10.0, 10.0], True
        prior.label(periodic)


class _Touch:
    """Unpickling this creates ``path``: a stand-in for arbitrary code in a crafted file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_sgdml_model_needing_pickle_is_refused(sgdml_model: tuple[Path, list[Atoms]], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with np.load(sgdml_model[0], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    crafted = tmp_path / "crafted.npz"
    np.savez(crafted, **{**arrays, "R_desc": np.array([_Touch(marker)], dtype=object)})
    with pytest.raises(PriorError, match="'R_desc' needs pickle to load.*refusing"):
        make_prior(f"sgdml:{crafted}")
    assert not marker.exists()
    # sgdml's own CLI pickles error summaries: such extra entries are never read
    extra = tmp_path / "sgdml-cli-style.npz"
    np.savez(extra, **{**arrays, "f_err": np.array([_Touch(marker)], dtype=object)})
    assert np.isfinite(make_prior(f"sgdml:{extra}").label(sgdml_model[1][0])["energy"])
    assert not marker.exists()
    np.load(crafted, allow_pickle=True)["R_desc"]  # the crafted file really runs code when unpickled
    assert marker.exists()


def test_sgdml_load_errors(tmp_path: Path) -> None:
    pytest.importorskip("sgdml")
    with pytest.raises(FileNotFoundError):
        make_prior(f"sgdml:{tmp_path / 'missing.npz'}")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(PriorError, match="cannot read an sGDML model"):
        load_sgdml_model(junk)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(PriorError, match="not an sGDML model: missing"):
        load_sgdml_model(tmp_path / "other.npz")


def test_sgdml_fit_input_errors(sgdml_model: tuple[Path, list[Atoms]], tmp_path: Path) -> None:
    frames = sgdml_model[1]
    out = tmp_path / "m.npz"
    mixed = frames[:5] + [molecule("CH3OCH3")] + frames[5:8]  # same formula, another molecule order
    with pytest.raises(DataError, match="frame 5 .* same atoms in the same order"):
        fit_sgdml_prior(mixed, 8, out_path=out, sigma=20)
    with pytest.raises(DataError, match="needs at least 50 labelled frames, got 12"):
        fit_sgdml_prior(frames, out_path=out)
    with pytest.raises(DataError, match="has no label 'ref_energy'"):
        fit_sgdml_prior(frames, 5, out_path=out, energy_key="ref_energy", sigma=20)
    assert not out.exists()
    scrambled = [a.copy() for a in frames[:8]]
    for atoms, energy in zip(scrambled, [a.info["energy"] for a in frames[:8]][::-1]):
        atoms.info["energy"] = energy  # energies that do not match the forces
    with pytest.warns(RuntimeWarning, match=r"sgdml \(fitting the C2H6O prior\): .*(inconsistent|gradients)"):
        fit_sgdml_prior(scrambled, 8, out_path=out, sigma=20)


def test_sgdml_compat_provides_in1d_only_while_sgdml_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sgdml")
    from sgdml.train import GDMLTrain

    import ase_adapt.priors.sgdml as module

    calls = []
    original = module._in1d
    monkeypatch.setattr(module, "_in1d", lambda *a, **k: calls.append(1) or original(*a, **k))
    had = hasattr(np, "in1d")
    energies = np.linspace(0.0, 1.0, 40) ** 3
    if not had:  # numpy >= 2.4: sgdml's stratified sampling needs the shim
        np.random.seed(7)
        with pytest.raises(AttributeError, match="in1d"):
            GDMLTrain.draw_strat_sample(None, energies, 7)
    with sgdml_compat():
        a, b = np.array([[1, 2], [3, 4]]), np.array([2, 3])
        np.testing.assert_array_equal(np.in1d(a, b), [False, True, True, False])
        np.testing.assert_array_equal(np.in1d(a, b, invert=True), [True, False, False, True])
        for n in (7, 10, 13):  # a stratified subsample (the code path that calls in1d)
            np.random.seed(n)
            idx = GDMLTrain.draw_strat_sample(None, energies, n)
            assert len(set(idx.tolist())) == n
    assert hasattr(np, "in1d") == had
    assert bool(calls) is not had  # the shim ran exactly when numpy lacks in1d
