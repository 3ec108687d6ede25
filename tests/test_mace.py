"""The MACE adapter (ase_adapt.models.mace) on small MACE models built and saved here (no downloads).

mace-torch pins e3nn 0.4.4 and cannot share the main test environment with sevenn (e3nn >= 0.5),
so the main suite skips this file; ``.ci/mace_tests.sh`` (run by ``.ci/run``) runs it in a venv
with mace-torch and fails if anything is skipped. Reference numbers come from MACE's own
``MACECalculator`` on the saved model files, in float64. One CPU thread, well under a minute.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import ase_adapt  # noqa: E402  (before e3nn/mace: makes e3nn 0.4.4 importable on torch >= 2.6)

mace = pytest.importorskip("mace")  # only because .ci/mace_tests.sh runs this file for real

from e3nn import o3  # noqa: E402
from mace import modules  # noqa: E402
from mace.calculators import MACECalculator  # noqa: E402

from ase_adapt import MLFFCalculator, UnknownElementError, build_graph  # noqa: E402
from ase_adapt import testing as T  # noqa: E402
from ase_adapt.models.blocks import EnergyHead  # noqa: E402
from ase_adapt.models.mace import MaceHead, MaceModel  # noqa: E402
from ase_adapt.models.mace_io import load_mace  # noqa: E402
from ase_adapt.priors import make_prior  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning")
R_MAX = 4.5
MULTI_HEADS = ["pt_head", "Default"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _build(cls, elements, heads=None, pair=False, seed=0):
    """A tiny MACE (2 layers, 8x0e+8x1o, l_max 2, correlation 2) with random weights, float64."""
    nh = len(heads or ["Default"])
    rng = np.random.default_rng(seed)
    kw = dict(r_max=R_MAX, num_bessel=6, num_polynomial_cutoff=5, max_ell=2, num_interactions=2,
              interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
              interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
              num_elements=len(elements), hidden_irreps=o3.Irreps("8x0e+8x1o"), MLP_irreps=o3.Irreps("8x0e"),
              gate=torch.nn.functional.silu, atomic_energies=rng.normal(-5.0, 2.0, (nh, len(elements))),
              avg_num_neighbors=6.0, atomic_numbers=list(elements), correlation=2, radial_MLP=[16, 16],
              heads=heads, pair_repulsion=pair)
    if cls is modules.ScaleShiftMACE:
        kw.update(atomic_inter_scale=[1.5 + k for k in range(nh)], atomic_inter_shift=[0.1 * (k + 1) for k in range(nh)])
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(seed)
        return cls(**kw)
    finally:
        torch.set_default_dtype(default)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Saved MACE model files: one readout head (H C O), several heads (H C O Cu, ZBL), plain MACE."""
    root = tmp_path_factory.mktemp("mace")
    models = {"single": _build(modules.ScaleShiftMACE, (1, 6, 8)),
              "multi": _build(modules.ScaleShiftMACE, (1, 6, 8, 29), heads=MULTI_HEADS, pair=True, seed=1),
              "plain": _build(modules.MACE, (1, 6, 8), pair=True, seed=2)}
    out = {}
    for name, m in models.items():
        out[name] = str(root / f"{name}.model")
        torch.save(m, out[name])
    return out


@pytest.fixture(scope="module")
def single(files) -> MaceModel:
    return ase_adapt.load_model(f"mace:{files['single']}")


@pytest.fixture(scope="module")
def multi(files) -> MaceModel:
    return ase_adapt.load_model(f"mace:{files['multi']}")  # the default head: "Default"


def _mace_calc(path: str, head: str | None = None) -> MACECalculator:
    return MACECalculator(model_paths=path, device="cpu", default_dtype="float64", **({"head": head} if head else {}))


def _ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=3)
    return atoms


def _sheared(atoms: Atoms, seed: int, rattle: float = 0.08) -> Atoms:
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.03 * np.array([[0, 1, 0], [0, 0, 0.5], [0, 0, 0]])),
                   scale_atoms=True)  # triclinic: off-diagonal stress too
    atoms.rattle(rattle, seed=seed)
    return atoms


def _diamond() -> Atoms:
    return _sheared(bulk("C", "diamond", a=3.57, cubic=True), 4)


def _cu() -> Atoms:
    return _sheared(bulk("Cu", "fcc", a=3.61, cubic=True), 5, rattle=0.2)


def _compare(atoms: Atoms, ours, theirs) -> dict[str, float]:
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = ours, theirs
    e_ref = b.get_potential_energy()
    diffs = {"energy": abs(a.get_potential_energy() - e_ref),
             "forces": float(np.abs(a.get_forces() - b.get_forces()).max())}
    assert diffs["energy"] <= 1e-10 * max(1.0, abs(e_ref)), diffs
    assert diffs["forces"] <= 1e-10, diffs
    assert np.abs(b.get_forces()).max() > 0.02  # the comparison is not trivial
    if atoms.pbc.all():
        diffs["stress"] = float(np.abs(a.get_stress() - b.get_stress()).max())
        assert diffs["stress"] <= 1e-10, diffs
        assert np.abs(b.get_stress()).max() > 1e-3
    return diffs


# ---------------------------------------------------------------------------- equal to MACE
@pytest.mark.parametrize("make", [_ethanol, _diamond])
def test_single_head_matches_mace_calculator(single, files, make):
    _compare(make(), MLFFCalculator(single), _mace_calc(files["single"]))


def test_plain_mace_with_pair_repulsion_matches(files):
    model = load_mace(files["plain"])
    assert model.config["mace_class"] == "MACE" and model.heads["main"].pair_repulsion is not None
    ref = _mace_calc(files["plain"])
    for atoms in (_ethanol(), _diamond()):
        _compare(atoms, MLFFCalculator(model), ref)


@pytest.mark.parametrize("head", MULTI_HEADS)
def test_every_head_of_a_multi_head_model_matches(files, head):
    model = ase_adapt.load_model(f"mace:{files['multi']}@{head}")
    assert model.config["mace_head"] == head and model.config["mace_heads"] == MULTI_HEADS
    ref = _mace_calc(files["multi"], head)
    for atoms in (_ethanol(), _cu()):
        _compare(atoms, MLFFCalculator(model), ref)


def test_heads_differ_and_default_is_named_default(multi, files):
    assert multi.config["mace_head"] == "Default"
    other = load_mace(files["multi"], head="pt_head")
    a, b = _cu(), _cu()
    a.calc, b.calc = MLFFCalculator(multi), MLFFCalculator(other)
    assert abs(a.get_potential_energy() - b.get_potential_energy()) > 1e-2  # a real choice of readout column


def test_float32_cast_agrees(single):
    m32 = load_mace(single.config["source"][len("mace:"):], dtype="float32")
    assert m32.dtype == torch.float32 and single.dtype == torch.float64
    a, b = _diamond(), _diamond()
    a.calc, b.calc = MLFFCalculator(m32), MLFFCalculator(single)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-4)
    assert np.abs(a.get_forces() - b.get_forces()).max() < 1e-4
    assert m32.heads["main"].e0 == pytest.approx(single.heads["main"].e0, abs=1e-5)


# ---------------------------------------------------------------------------- errors
def test_unknown_head_lists_the_heads(files):
    with pytest.raises(ValueError, match=r"unknown MACE head 'hse'.*\['pt_head', 'Default'\]"):
        ase_adapt.load_model(f"mace:{files['multi']}@hse")
    with pytest.raises(ValueError, match=r"unknown MACE head 'pbe'.*\['Default'\]"):
        load_mace(files["single"], head="pbe")
    assert load_mace(files["multi"], head="PT_HEAD").config["mace_head"] == "pt_head"  # case-insensitive


def test_several_heads_without_default_must_be_chosen(tmp_path):
    path = tmp_path / "two.model"
    torch.save(_build(modules.ScaleShiftMACE, (1, 8), heads=["pbe", "r2scan"]), path)
    with pytest.raises(ValueError, match=r"none is called 'Default'.*\['pbe', 'r2scan'\]"):
        load_mace(path)
    assert load_mace(f"{path}@r2scan").config["mace_head"] == "r2scan"


def test_bad_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ase_adapt.load_model(f"mace:{tmp_path / 'missing.model'}")
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a MACE model file"):
        load_mace(path)


def test_missing_mace_names_the_extra_and_the_e3nn_pin(monkeypatch, files):
    monkeypatch.setitem(sys.modules, "mace", None)  # makes `import mace` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "ase-adapt\[mace\]".*e3nn==0\.4\.4.*own environment'):
        ase_adapt.load_model(f"mace:{files['single']}")


# ---------------------------------------------------------------------------- the interface
def test_elements_and_representation_order(single, multi):
    assert single.elements == (1, 6, 8) and multi.elements == (1, 6, 8, 29) and single.cutoff == R_MAX
    with pytest.raises(UnknownElementError):
        single.species(torch.tensor([29]))
    names = [n for n, _ in single.representation_blocks()]
    assert names == ["embedding", "interactions.0", "interactions.1"]
    before = [id(p) for p in single.parameters_before(1)]
    embedding = [id(p) for p in single.embedding.parameters()]
    assert embedding and before[:len(embedding)] == embedding
    assert set(before) == set(embedding) | {id(p) for p in single.interactions[0].parameters()}
    assert len(single.representation_parameters()) > len(before)
    assert str(single.irreps_features) == "16x0e"  # 8 scalars of layer 0 + 8 of layer 1


def test_graph_radius_is_a_run_time_parameter(single, files):
    """At a refined radius the envelope follows the graph radius: smooth, no jump; the trained
    radius is MACE itself; a larger one is refused."""

    class Refined(MLFFCalculator):
        def make_graph(self, atoms, cutoff=None):
            return super().make_graph(atoms, 3.5)

    T.check_smooth_cutoff(lambda: Refined(single), ("C", "O"), 3.5, T.tolerances("float64"))
    a = _diamond()
    a.calc = Refined(single)
    e_refined = a.get_potential_energy()
    b = _diamond()
    b.calc = _mace_calc(files["single"])
    assert abs(e_refined - b.get_potential_energy()) > 1e-3  # the radius really changed the graph
    with pytest.raises(ValueError, match="exceeds the MACE cutoff"):
        single(build_graph(_diamond(), R_MAX + 0.5))


# ---------------------------------------------------------------------------- physics contracts
def test_physics_contracts(single):
    e0 = dict(zip(single.elements, single.heads["main"].e0))
    water = molecule("H2O")
    water.rattle(0.05, seed=6)
    co2 = molecule("CO2")
    co2.rattle(0.05, seed=7)
    cell = T.sheared_rattled_supercell(bulk("C", "diamond", a=3.57), repeat=(1, 1, 1), seed=8)
    names = T.run_all_contracts(T.model_calculator_factory(single), dtype="float64", molecules=[water, co2],
                                periodic=[cell], atomic_energies={"H": e0[1], "C": e0[6], "O": e0[8]},
                                cutoff=single.cutoff, fd_max_atoms=2, reflections=single.config["parity"])
    assert {"additivity", "smooth_cutoff", "isolated_atom[O]", "fd_stress[2:C2]", "reflection[0:H2O]"} <= set(names)


def test_model_contracts_with_prior_heads(multi):
    m = copy.deepcopy(multi)
    head = m.new_head("prior:emt", hidden=8)
    deep = m.new_head("prior:copy", copy_main=True)
    assert isinstance(head, EnergyHead) and isinstance(deep, MaceHead)
    assert m.head_names == ["main", "prior:emt", "prior:copy"]
    assert m.head_spec("prior:emt") == {"type": "mlp", "hidden": 8} and m.head_spec("prior:copy") == {"type": "mace"}
    T.scaled_heads(m, {"prior:emt": 50.0})  # an untrained head: O(0.1) eV/Å forces
    structures = [molecule("H2O"), _cu()]
    T.check_isolated_atoms_e0(m)
    T.check_multihead_consistency(m, structures)
    T.check_batch_consistency(m, structures)
    T.check_model_determinism(m, structures, repeats=2)
    g = build_graph(_cu(), m.cutoff)
    main, copied = m(g, ["main", "prior:copy"]).values()
    assert torch.equal(main["energy"], copied["energy"]) and torch.equal(main["forces"], copied["forces"])


def test_restore_rebuilds_heads_for_strict_loading(multi):
    """What a saved prepared adapter needs: rebuild from the config, then every weight loads strictly."""
    from ase_adapt.models.mace_io import restore_mace

    m = copy.deepcopy(multi)
    m.new_head("prior:emt", hidden=8, seed=3)
    m.new_head("prior:copy", copy_main=True)
    heads = {n: m.head_spec(n) for n in m.head_names}
    rebuilt = restore_mace(dict(m.config, dtype="float64"), heads)
    assert rebuilt.head_names == m.head_names and rebuilt.config["mace_head"] == "Default"
    rebuilt.load_state_dict(m.state_dict(), strict=True)
    g = build_graph(_cu(), m.cutoff)
    for name in m.head_names:
        assert torch.equal(rebuilt(g, name)["energy"], m(g, name)["energy"])
    with pytest.raises(ValueError, match="names no MACE base model"):
        restore_mace({"source": "sevennet:7net-0"}, {})


# ---------------------------------------------------------------------------- TTT and the calculator
def test_ttt_changes_only_the_early_representation(multi):
    m = copy.deepcopy(multi)
    m.new_head("prior:emt", hidden=8)  # untrained: TTT mechanics only
    T.check_ttt_adapts_only_early_blocks(m, _cu(), make_prior("emt"), head="prior:emt")


def test_adaptive_calculator_runs_md(multi):
    m = copy.deepcopy(multi)
    m.new_head("prior:emt", hidden=8)
    frames = []
    for seed in range(3):
        a = _cu()
        a.rattle(0.05, seed=10 + seed)
        frames.append(a)
    T.check_adaptive_md(m, _cu(), make_prior("emt"), frames, head="prior:emt")



def test_prepare_saves_a_checkpoint_that_loads_back(files, tmp_path):
    """prepare on a MACE model: main head unchanged, prior head trained, and the saved file reloads."""
    from ase_adapt.train import PrepareSettings, prepare_model
    from ase_adapt.train.optim import OptimSettings

    cells = []
    for seed in range(6):
        a = _cu()
        a.rattle(0.08, seed=20 + seed)
        cells.append(a)
    base = ase_adapt.load_model(f"mace:{files['multi']}")
    s = PrepareSettings(optim=OptimSettings(epochs=3, batch_size=2, lr=1e-2, ema_decay=None, patience=None,
                                            val_fraction=0.34, progress=False))
    result = prepare_model(f"mace:{files['multi']}", cells, [make_prior("emt")], s, tmp_path / "prepared.safetensors")
    rmse = result.report["prior_force_rmse"]["prior:emt"]
    assert rmse["after_mev"] < rmse["before_mev"]
    loaded = ase_adapt.load_model(str(tmp_path / "prepared.safetensors"))
    assert loaded.head_names == result.model.head_names and loaded.training_stats
    g = build_graph(_sheared(_cu(), seed=5), base.cutoff, dtype=torch.float64)
    assert torch.equal(loaded(g, "main")["forces"], base(g, "main")["forces"])  # the main head is the base model
    for name in loaded.head_names:
        assert torch.equal(loaded(g, name)["energy"], result.model(g, name)["energy"])


def test_a_model_given_by_a_relative_path_reloads_from_elsewhere(files, tmp_path, monkeypatch):
    import shutil

    (tmp_path / "sub").mkdir()
    shutil.copy(files["single"], tmp_path / "sub" / "x.model")
    monkeypatch.chdir(tmp_path / "sub")
    m = ase_adapt.load_model("mace:x.model")
    m.new_head("prior:emt", hidden=8)
    m.save(tmp_path / "prepared.safetensors")
    monkeypatch.chdir(tmp_path)  # the relative path no longer names the file
    loaded = ase_adapt.load_model(str(tmp_path / "prepared.safetensors"))
    assert loaded.head_names == m.head_names
