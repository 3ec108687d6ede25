"""E0 tools: isolated atoms, least-squares averaging, model-aware re-estimation, apply/save."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import ase_adapt
from ase_adapt.errors import DataError
from ase_adapt.train import (
    E0Warning, apply_e0, average_e0, e0_from_json, e0_to_json, head_e0, isolated_atom_e0, reestimate_e0,
)

E0 = {1: -13.6, 6: -1029.8, 8: -2042.6}  # H, C, O
SHIFT = {1: 0.37, 6: -1.25, 8: 2.5}


def _random_molecule(rng: np.random.Generator, symbols: str = "HCO", n_min: int = 2, n_max: int = 6) -> Atoms:
    """A small random cluster, atoms at least 0.9 Å apart."""
    n = int(rng.integers(n_min, n_max + 1))
    pos: list[np.ndarray] = []
    while len(pos) < n:
        p = rng.uniform(0.0, 3.0, size=3)
        if all(np.linalg.norm(p - q) > 0.9 for q in pos):
            pos.append(p)
    return Atoms(list(rng.choice(list(symbols), size=n)), positions=pos)


def _frames(n: int = 20, seed: int = 0, **kw) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [_random_molecule(rng, **kw) for _ in range(n)]


def _label(frames: list[Atoms], e0: dict[int, float]) -> None:
    for a in frames:
        a.info["energy"] = float(sum(e0[z] for z in a.numbers))


@pytest.fixture(scope="module")
def hco_model() -> ase_adapt.MLFF:
    model = ase_adapt.build_model(channels=4, num_layers=1, dtype="float64", elements=["H", "C", "O"])
    with torch.no_grad():  # interaction energies well above the 1e-6 tolerance
        model.heads["main"].scale.fill_(20.0)
    apply_e0(model, E0)
    return model


# ------------------------------------------------------------------------------ averaging
def test_average_recovers_offsets_exactly():
    frames = _frames()
    _label(frames, E0)
    fit = average_e0(frames)
    assert list(fit) == [1, 6, 8]
    for z in E0:
        assert fit[z] == pytest.approx(E0[z], abs=1e-8)


def test_average_reads_single_point_calculator_and_custom_key():
    frames = _frames(12, seed=1)
    _label(frames, E0)
    for a in frames[::2]:  # half the frames carry the energy in a SinglePointCalculator
        a.calc = SinglePointCalculator(a, energy=a.info.pop("energy"))
    fit = average_e0(frames)
    assert all(fit[z] == pytest.approx(E0[z], abs=1e-8) for z in E0)
    for a in frames:
        a.info["dft_energy"] = 2 * float(sum(E0[z] for z in a.numbers))
    fit2 = average_e0(frames, energy_key="dft_energy")
    assert all(fit2[z] == pytest.approx(2 * E0[z], abs=1e-8) for z in E0)


def test_average_rank_deficient_gives_minimum_norm_and_warns():
    frames = [Atoms("CH4", positions=np.random.default_rng(k).uniform(0, 3, (5, 3))) for k in range(4)]
    energies = [-1080.0, -1080.5, -1079.5, -1080.2]
    for a, e in zip(frames, energies):
        a.info["energy"] = e
    with pytest.warns(E0Warning, match="minimum-norm"):
        fit = average_e0(frames)
    v = np.array([4.0, 1.0])  # counts of (H, C)
    expected = v * np.mean(energies) / (v @ v)
    assert [fit[1], fit[6]] == pytest.approx(expected.tolist(), abs=1e-10)


def test_average_errors_name_the_problem():
    frames = _frames(5, seed=2)
    _label(frames, E0)
    del frames[3].info["energy"]
    with pytest.raises(DataError, match="frame 3.*'energy'"):
        average_e0(frames)
    frames[3].info["energy"] = float("nan")
    with pytest.raises(ValueError, match="frame 3.*not finite"):
        average_e0(frames)
    with pytest.raises(ValueError, match="no frames"):
        average_e0([])
    _label(frames, E0)
    with pytest.raises(ValueError, match=r"\['N'\]"):
        average_e0(frames, elements=["H", "C", "N", "O"])
    with pytest.raises(ValueError, match="not among the elements"):
        average_e0(frames, elements=["H", "C"])


# --------------------------------------------------------------------------- re-estimation
def test_reestimate_recovers_planted_shift(hco_model):
    frames = _frames(20, seed=3)
    counts = np.array([[np.sum(a.numbers == z) for z in (1, 6, 8)] for a in frames])
    assert np.linalg.matrix_rank(counts) == 3
    predicted = hco_model(ase_adapt.build_graph(frames, hco_model.cutoff, dtype=hco_model.dtype),
                          compute_forces=False)["energy"].detach().numpy()
    for a, e in zip(frames, predicted):
        a.info["energy"] = float(e) + float(sum(SHIFT[z] for z in a.numbers))
    before = head_e0(hco_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", E0Warning)
        new = reestimate_e0(hco_model, frames, batch_size=7, progress=False)
    assert head_e0(hco_model) == before  # the model is not modified
    for z in E0:
        assert new[z] == pytest.approx(E0[z] + SHIFT[z], abs=1e-6)
    # once applied, the head reproduces the reference energies (nothing left to re-estimate)
    model = copy.deepcopy(hco_model)
    apply_e0(model, new)
    again = reestimate_e0(model, frames, progress=False)
    assert all(again[z] == pytest.approx(new[z], abs=1e-6) for z in E0)


def test_reestimate_absent_element_keeps_pretrained_e0(hco_model):
    frames = _frames(10, seed=4, symbols="HC")
    for a in frames:
        a.info["energy"] = float(sum(E0[z] + SHIFT[z] for z in a.numbers))
    with pytest.warns(E0Warning, match=r"\['O'\].*ΔE0 = 0"):
        new = reestimate_e0(hco_model, frames, progress=False)
    assert new[8] == E0[8]
    assert set(new) == {1, 6, 8}


def test_reestimate_rejects_unknown_elements_and_missing_labels(hco_model):
    frames = _frames(3, seed=5)
    with pytest.raises(DataError, match="frame 0"):
        reestimate_e0(hco_model, frames, progress=False)
    with pytest.raises(ase_adapt.UnknownElementError, match="N"):
        reestimate_e0(hco_model, [Atoms("NH3", positions=np.eye(4, 3) * 1.5)], progress=False)
    with pytest.raises(KeyError, match="no head"):
        reestimate_e0(hco_model, frames, head="nope")


# ---------------------------------------------------------------------------- isolated atoms
def test_isolated_atom_e0_with_emt():
    e0 = isolated_atom_e0(["Cu", 13, "H"], EMT())
    assert list(e0) == [1, 13, 29]
    for z, sym in [(1, "H"), (13, "Al"), (29, "Cu")]:
        ref = Atoms(sym)
        ref.calc = EMT()
        assert e0[z] == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    boxed = isolated_atom_e0(["Cu"], EMT(), box=10.0, spin_polarized_hint={"Cu": 1.0})
    assert boxed[29] == pytest.approx(e0[29], abs=1e-12)


def test_isolated_atom_e0_names_failing_element():
    with pytest.raises(RuntimeError, match="Fe"):
        isolated_atom_e0(["Cu", "Fe"], EMT())


# ------------------------------------------------------------------------------ apply / JSON
def test_apply_e0_round_trip_through_checkpoint(tmp_path, hco_model):
    model = ase_adapt.build_model(channels=4, num_layers=1, dtype="float64", elements=["H", "C", "O"])
    e0 = {"H": -13.612345678901234, "C": -1029.8765432109876, "O": -2042.6000000000001, "N": 1.0}
    apply_e0(model, e0, head="prior")  # extra elements (N) are ignored
    assert head_e0(model, "prior") == {1: e0["H"], 6: e0["C"], 8: e0["O"]}
    loaded = ase_adapt.load_model(model.save(tmp_path / "m.safetensors"))
    assert head_e0(loaded, "prior") == head_e0(model, "prior")
    # an isolated atom returns exactly its E0
    out = loaded(ase_adapt.build_graph(Atoms("C"), loaded.cutoff, dtype=loaded.dtype), "prior",
                 compute_forces=False)
    assert float(out["energy"][0].detach()) == e0["C"]
    with pytest.raises(ValueError, match=r"\['O'\]"):
        apply_e0(model, {"H": 0.0, "C": 0.0})
    with pytest.raises(ValueError, match="not finite"):
        apply_e0(model, {"H": 0.0, "C": float("inf"), "O": 0.0})
    with pytest.raises(KeyError, match="no head"):
        apply_e0(model, e0, head="nope")


def test_json_round_trip(tmp_path):
    e0 = {8: -2042.6000000000001, 1: -13.612345678901234, "C": -1029.8765432109876}
    path = e0_to_json(e0, tmp_path / "sub" / "e0.json")
    assert list(json.loads(path.read_text())) == ["H", "C", "O"]
    assert e0_from_json(path) == {1: e0[1], 6: e0["C"], 8: e0[8]}
    assert [p.name for p in path.parent.iterdir()] == ["e0.json"]  # no temp file left
    bad = tmp_path / "bad.json"
    bad.write_text('{"Xx": 1.0}')
    with pytest.raises(ValueError, match="Xx"):
        e0_from_json(bad)
    bad.write_text('{"H": "a lot"}')
    with pytest.raises(ValueError, match="finite number"):
        e0_from_json(bad)
