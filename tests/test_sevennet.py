"""The SevenNet adapter (ase_adapt.models.sevennet): SevenNet-0 from the sevenn wheel, offline.

Reference numbers come from sevenn's own ``SevenNetCalculator`` on the same structures. The whole
file runs on one CPU thread (about a minute at most on a loaded machine).
"""

from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import sevenn  # noqa: E402,F401  (the test extra installs it: a missing sevenn is a failure)

import ase_adapt  # noqa: E402
from ase_adapt import MLFFCalculator  # noqa: E402
from ase_adapt import UnknownElementError, build_graph  # noqa: E402
from ase_adapt import testing as T  # noqa: E402
from ase_adapt.models.blocks import EnergyHead  # noqa: E402
from ase_adapt.models.sevennet import SevenNetHead, SevenNetModel  # noqa: E402
from ase_adapt.priors import make_prior  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model() -> SevenNetModel:
    return ase_adapt.load_model("sevennet:7net-0")


def _sevenn_calc(name: str = "7net-0", **kw):
    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SevenNetCalculator(name, device="cpu", **kw)


@pytest.fixture(scope="module")
def reference():
    return _sevenn_calc()


def _si8() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


def _nacl8() -> Atoms:
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.03 * np.array([[0, 1, 0], [0, 0, 0.5], [0, 0, 0]])),
                   scale_atoms=True)  # triclinic: off-diagonal stress too
    atoms.rattle(0.05, seed=2)
    return atoms


def _compare(atoms: Atoms, ours, theirs, stress: bool) -> dict[str, float]:
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = ours, theirs
    e_ref = b.get_potential_energy()
    diffs = {"energy": abs(a.get_potential_energy() - e_ref),
             "energies": float(np.abs(a.get_potential_energies() - b.get_potential_energies()).max()),
             "forces": float(np.abs(a.get_forces() - b.get_forces()).max())}
    assert diffs["energy"] <= 1e-6 * abs(e_ref) + 1e-6, diffs
    assert diffs["energies"] <= 1e-5, diffs
    assert diffs["forces"] <= 5e-5, diffs
    assert np.abs(b.get_forces()).max() > 0.1  # the comparison is not trivial
    if stress:
        diffs["stress"] = float(np.abs(a.get_stress() - b.get_stress()).max())
        assert diffs["stress"] <= 1e-6, diffs
        assert np.abs(b.get_stress()).max() > 1e-3
    return diffs


# ---------------------------------------------------------------------------- equal to SevenNet
@pytest.mark.parametrize("make", [_si8, _nacl8])
def test_periodic_cell_matches_sevennet_calculator(model, reference, make):
    _compare(make(), MLFFCalculator(model), reference, stress=True)


def test_molecule_matches_sevennet_calculator(model, reference):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    _compare(atoms, MLFFCalculator(model), reference, stress=False)


def test_deep_main_head_matches_too(reference):
    """With a representation of 3 blocks the main head owns blocks 3 and 4: same predictions."""
    from ase_adapt.models.sevennet_io import load_sevennet

    deep = load_sevennet("7net-0", shared_blocks=3)
    assert len(deep.interactions) == 3 and len(deep.heads["main"].blocks) == 2
    assert len(deep.interaction_blocks()) == 5
    _compare(_si8(), MLFFCalculator(deep), reference, stress=True)
    head = deep.new_head("prior:emt", copy_main=True)
    assert isinstance(head, SevenNetHead) and head.e0 == deep.heads["main"].e0
    with pytest.raises(ValueError, match="not all scalars"):
        deep.new_head("prior:lj")


def test_multi_fidelity_modal_matches_sevennet_calculator():
    atoms = _nacl8()
    mf = ase_adapt.load_model("sevennet:7net-mf-0@r2scan")  # modal names match case-insensitively
    assert mf.config["modal"] == "R2SCAN" and mf.config["modals"] == ["R2SCAN", "PBE"]
    _compare(atoms, MLFFCalculator(mf), _sevenn_calc("7net-mf-0", modal="R2SCAN"), stress=True)


def test_multi_fidelity_batches_like_single_structures():
    """A batched graph (training, prepare, TTT) gives each structure its own result, as alone."""
    from ase_adapt.graph import build_graph

    mf = ase_adapt.load_model("sevennet:7net-mf-0@PBE")
    cells = [_nacl8(), bulk("Si", "diamond", a=5.43)]
    batched = mf(build_graph(cells, mf.cutoff), "main")
    alone = [mf(build_graph(a, mf.cutoff), "main") for a in cells]
    np.testing.assert_allclose(batched["energy"].numpy(), [r["energy"].item() for r in alone], rtol=1e-6)
    np.testing.assert_allclose(batched["forces"].numpy(), np.concatenate([r["forces"].numpy() for r in alone]),
                               atol=1e-5)


def test_float64_agrees_with_float32(model):
    m64 = ase_adapt.load_model("sevennet:7net-0", dtype="float64")
    assert m64.dtype == torch.float64
    a, b = _si8(), _si8()
    a.calc, b.calc = MLFFCalculator(m64), MLFFCalculator(model)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-4)
    assert np.abs(a.get_forces() - b.get_forces()).max() < 1e-4


# ---------------------------------------------------------------------------- the interface
def test_elements_and_representation_order(model):
    assert len(model.elements) == 89 and model.cutoff == 5.0
    zs = torch.tensor([14, 1, 8, 29])
    assert model.species(zs).tolist() == [model.elements.index(z) for z in zs.tolist()]
    with pytest.raises(UnknownElementError):
        model.species(torch.tensor([100]))
    names = [n for n, _ in model.representation_blocks()]
    assert names == ["embedding"] + [f"interactions.{k}" for k in range(5)]
    before = [id(p) for p in model.parameters_before(1)]
    embedding = [id(p) for p in model.embedding.parameters()]
    assert before[:len(embedding)] == embedding  # Bessel frequencies and species embedding first
    assert set(before) == set(embedding) | {id(p) for p in model.interactions[0].parameters()}
    assert len(model.representation_parameters()) > len(before)


def test_graph_radius_is_a_run_time_parameter(model):
    """At a refined radius the cutoff function follows the graph radius: smooth, no jump."""

    class Refined(MLFFCalculator):
        def make_graph(self, atoms, cutoff=None):
            return super().make_graph(atoms, 4.0)

    T.check_smooth_cutoff(lambda: Refined(model), ("Si", "Si"), 4.0, T.tolerances("float32"))
    g = build_graph(_si8(), 5.5)
    with pytest.raises(ValueError, match="exceeds the SevenNet cutoff"):
        model(g)


# ---------------------------------------------------------------------------- physics contracts
def test_physics_contracts(model):
    e0 = dict(zip(model.elements, model.heads["main"].e0))
    water = molecule("H2O")
    water.rattle(0.05, seed=4)
    nh3 = molecule("NH3")
    nh3.rattle(0.05, seed=5)
    si = T.sheared_rattled_supercell(bulk("Si", "diamond", a=5.43), repeat=(1, 1, 1), seed=6)
    factory = T.model_calculator_factory(model)
    names = T.run_all_contracts(factory, dtype="float32", molecules=[water, nh3], periodic=[si],
                                atomic_energies={"Si": e0[14], "O": e0[8]}, cutoff=model.cutoff,
                                fd_max_atoms=2, reflections=model.config["parity"])
    assert {"additivity", "smooth_cutoff", "isolated_atom[Si]", "fd_stress[2:Si2]"} <= set(names)


def test_sevennet_0_tells_mirror_images_apart(model, reference):
    """SevenNet-0 is SO(3)-equivariant only (is_parity false), and the adapter keeps that: the
    reflection contract fails by the same amount for SevenNet's own calculator."""
    nh3 = molecule("NH3")
    nh3.rattle(0.05, seed=5)
    assert model.config["parity"] is False
    messages = []
    for factory in (T.model_calculator_factory(model), lambda: reference):
        with pytest.raises(AssertionError, match="reflection equivariance: forces") as info:
            T.check_reflection_equivariance(factory, nh3, T.tolerances("float32"), seed=2)
        messages.append(float(str(info.value).split("max |difference| ")[1].split()[0]))
    assert messages[0] == pytest.approx(messages[1], rel=0.05) and messages[0] > 1e-3


def test_model_contracts_with_a_prior_head(model):
    m = copy.deepcopy(model)
    head = m.new_head("prior:emt", hidden=8)
    assert isinstance(head, EnergyHead) and m.head_names == ["main", "prior:emt"]
    T.scaled_heads(m, {"prior:emt": 50.0})  # an untrained head: O(0.1) eV/Å forces
    structures = [molecule("H2O"), _si8()]
    T.check_isolated_atoms_e0(m)
    T.check_multihead_consistency(m, structures)
    T.check_batch_consistency(m, structures)
    T.check_model_determinism(m, structures, repeats=2)


# ---------------------------------------------------------------------------- errors
def test_modal_errors_list_the_modals():
    with pytest.raises(ValueError, match=r"unknown modal 'HSE'.*\['R2SCAN', 'PBE'\]"):
        ase_adapt.load_model("sevennet:7net-mf-0@HSE")
    with pytest.raises(ValueError, match=r"multi-fidelity.*\['R2SCAN', 'PBE'\]"):
        ase_adapt.load_model("sevennet:7net-mf-0")
    with pytest.raises(ValueError, match="not a multi-fidelity"):
        ase_adapt.load_model("sevennet:7net-0@PBE")


def test_unknown_or_not_shipped_names_are_clear():
    with pytest.raises(ValueError, match=r"neither a SevenNet checkpoint.*available offline: 7net-0"):
        ase_adapt.load_model("sevennet:7net-42")
    with pytest.raises(FileNotFoundError, match=r"never downloads; available offline: 7net-0"):
        ase_adapt.load_model("sevennet:7net-omni")


def test_checkpoint_path_and_name_aliases(model):
    from ase_adapt.models.sevennet_io import pretrained_sevennet

    path = pretrained_sevennet("SevenNet-0")
    assert path == pretrained_sevennet("7net-0_11jul2024") and path.is_file()
    assert "sevenn" in str(path) and "pretrained_potentials" in str(path)
    calc = MLFFCalculator(f"sevennet:{path}")  # a model spec string loads through load_model
    assert isinstance(calc.model, SevenNetModel) and calc.model.heads["main"].e0 == model.heads["main"].e0


def test_missing_sevenn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sevenn", None)  # makes `import sevenn` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "ase-adapt\[sevenn\]"'):
        ase_adapt.load_model("sevennet:7net-0")


# ---------------------------------------------------------------------------- TTT and the calculator
def _cu() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=7)
    return atoms


def test_ttt_changes_only_the_early_representation(model):
    m = copy.deepcopy(model)
    m.new_head("prior:emt", hidden=8)  # untrained: TTT mechanics only
    T.check_ttt_adapts_only_early_blocks(m, _cu(), make_prior("emt"), head="prior:emt")


def test_adaptive_calculator_runs_md(model):
    m = copy.deepcopy(model)
    m.new_head("prior:emt", hidden=8)
    frames = []
    for seed in range(3):
        a = _cu()
        a.rattle(0.05, seed=10 + seed)
        frames.append(a)
    T.check_adaptive_md(m, _cu(), make_prior("emt"), frames, head="prior:emt")
