"""Contracts on an :class:`~ase_adapt.models.MLFF` itself: E0s, heads, batching, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from .. import _keys as K
from ..graph import build_graph
from ..models.mlff import MLFF
from ._core import CalculatorFactory, Tolerances, assert_close, tolerances


def model_calculator_factory(model: MLFF, **kwargs) -> CalculatorFactory:
    """A factory of fresh :class:`~ase_adapt.MLFFCalculator` objects sharing ``model``."""
    from ..calculator import MLFFCalculator

    return lambda: MLFFCalculator(model, **kwargs)


def _run(model: MLFF, structures: Atoms | Sequence[Atoms], head: str | Sequence[str] = K.MAIN_HEAD) -> dict:
    graph = build_graph(structures, model.cutoff, dtype=model.dtype, device=model.device)
    return model(graph, head)


def _numpy(result: dict) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in result.items()}


def check_isolated_atoms_e0(model: MLFF, heads: Sequence[str] | None = None) -> None:
    """Every element, alone or as one of several atoms further apart than the cutoff, returns
    exactly its head's E0 with exactly zero force."""
    heads = list(heads or model.head_names)
    spread = [Atoms(numbers=[z], positions=[[0.1, -0.2, 0.3]]) for z in model.elements]
    together = Atoms(numbers=list(model.elements),
                     positions=[[2.0 * model.cutoff * k, 0.0, 0.0] for k in range(len(model.elements))])
    for head in heads:
        e0 = np.array(model.heads[head].e0, dtype=np.float64)
        for where, structures in (("alone", spread), ("far apart in one structure", [together])):
            out = _numpy(_run(model, structures, head))
            node_e = out[K.NODE_ENERGY]
            if not np.array_equal(node_e, e0):
                raise AssertionError(f"head {head!r}, isolated atoms {where}: node energies {node_e.tolist()} "
                                     f"!= E0 {e0.tolist()} (max diff {np.abs(node_e - e0).max():.3e})")
            if np.any(out[K.FORCES] != 0.0):
                raise AssertionError(f"head {head!r}, isolated atoms {where}: forces are not exactly zero")


def check_multihead_consistency(
    model: MLFF, structures: Atoms | Sequence[Atoms], heads: Sequence[str] | None = None,
    *, require_distinct: bool = True, tol: Tolerances | None = None,
) -> None:
    """``model(graph, heads)`` equals evaluating each head alone (bit for bit); heads differ."""
    heads = list(heads or model.head_names)
    together = {h: _numpy(r) for h, r in _run(model, structures, heads).items()}
    for h in heads:
        alone = _numpy(_run(model, structures, h))
        for key, value in alone.items():
            if not np.array_equal(together[h][key], value):
                diff = np.abs(together[h][key] - value).max()
                raise AssertionError(f"head {h!r}: {key} evaluated with heads {heads} differs from the head "
                                     f"alone (max |diff| {diff:.3e})")
    if require_distinct:
        tol = tol or tolerances(model.dtype)
        for a, b in zip(heads, heads[1:]):
            if np.allclose(together[a][K.FORCES], together[b][K.FORCES], atol=10 * tol.forces, rtol=0):
                raise AssertionError(f"heads {a!r} and {b!r} give the same forces: they are not independent")


def check_batch_consistency(
    model: MLFF, structures: Sequence[Atoms], tol: Tolerances | None = None, head: str = K.MAIN_HEAD
) -> None:
    """One batched graph of ``structures`` gives the energies, forces and stress of one-by-one runs."""
    tol = tol or tolerances(model.dtype)
    batched = _numpy(_run(model, list(structures), head))
    n = np.cumsum([0] + [len(a) for a in structures])
    with_stress = K.STRESS in batched
    for k, atoms in enumerate(structures):
        single = _numpy(_run(model, atoms, head))
        what = f"batch vs single, structure {k} ({atoms.get_chemical_formula()})"
        assert_close(batched[K.ENERGY][k], single[K.ENERGY][0], tol.energy, tol.rtol, f"{what}: energy")
        assert_close(batched[K.NODE_ENERGY][n[k]:n[k + 1]], single[K.NODE_ENERGY], tol.energy, tol.rtol,
                     f"{what}: per-atom energies")
        assert_close(batched[K.FORCES][n[k]:n[k + 1]], single[K.FORCES], tol.forces, tol.rtol, f"{what}: forces")
        if with_stress:
            assert_close(batched[K.STRESS][k], single[K.STRESS][0], tol.stress, tol.rtol, f"{what}: stress")


def check_save_load_roundtrip(
    model: MLFF,
    structures: Sequence[Atoms],
    directory: str | Path,
    suffixes: Sequence[str] = (".safetensors", ".pt"),
    atol: float | None = None,
) -> None:
    """``model.save`` -> :func:`ase_adapt.load_model` keeps heads, E0s, dtype and predictions
    (E and F within ``atol``, default 1e-8 in float64 and the dtype's tolerances in float32)."""
    from ..checkpoint import load_model

    tol = tolerances(model.dtype)
    atol_e = atol if atol is not None else max(tol.energy, 1e-10)
    atol_f = atol if atol is not None else max(tol.forces, 1e-10)
    for suffix in suffixes:
        path = Path(directory) / f"contract_model{suffix}"
        model.save(path)
        loaded = load_model(path, device=model.device)
        what = f"save/load round trip ({suffix})"
        if loaded.head_names != model.head_names:
            raise AssertionError(f"{what}: heads {loaded.head_names} != {model.head_names}")
        if loaded.dtype != model.dtype:
            raise AssertionError(f"{what}: dtype {loaded.dtype} != {model.dtype}")
        for h in model.head_names:
            if loaded.heads[h].e0 != model.heads[h].e0:
                raise AssertionError(f"{what}: head {h!r} E0s {loaded.heads[h].e0} != {model.heads[h].e0}")
        for h in model.head_names:
            for atoms in structures:
                ref, new = _numpy(_run(model, atoms, h)), _numpy(_run(loaded, atoms, h))
                label = f"{what}, head {h!r}, {atoms.get_chemical_formula()}"
                assert_close(new[K.ENERGY], ref[K.ENERGY], atol_e, 0.0, f"{label}: energy")
                assert_close(new[K.FORCES], ref[K.FORCES], atol_f, 0.0, f"{label}: forces")


def check_model_determinism(model: MLFF, structures: Sequence[Atoms], repeats: int = 3) -> None:
    """Repeated evaluation of one batched graph is bit-identical (CPU)."""
    runs = [_numpy(_run(model, list(structures), model.head_names)[model.head_names[0]]) for _ in range(repeats)]
    for k, run in enumerate(runs[1:], start=1):
        for key, value in run.items():
            if not np.array_equal(value, runs[0][key]):
                raise AssertionError(f"model determinism: {key} of run {k} differs from run 0 "
                                     f"(max |diff| {np.abs(value - runs[0][key]).max():.3e})")


def scaled_heads(model: MLFF, scales: dict[str, float | Sequence[float]]) -> MLFF:
    """Set head scales in place (untrained models give tiny forces; contracts want O(1) ones)."""
    with torch.no_grad():
        for name, value in scales.items():
            scale = model.heads[name].scale
            scale.copy_(torch.as_tensor(value, dtype=scale.dtype).expand_as(scale))
    return model
