"""ASE calculators backed by an ase-adapt model.

:class:`MLFFCalculator` is the plain one: atoms -> graph -> model -> results. It follows the ASE
contract (class-level ``implemented_properties``, cache invalidated by any change of the system or
of the model's weights, results returned as float64 copies) and refuses to return numbers it
cannot trust: unknown elements are rejected (or mapped, by explicit policy) before any compute,
and NaN/inf, overlapping atoms or an out-of-memory error raise :class:`CalculationFailed`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from . import _keys as K
from .elements import SpeciesMapping, UnknownPolicy, check_elements
from .errors import CalculationFailed, InvalidStructureError
from .graph import AtomicGraph, build_graph
from .models.mlff import MLFF

INFO_KEYS = ("charge", "spin")  # atoms.info entries that change the physical system


class MLFFCalculator(Calculator):
    """Energy, per-atom energies, forces and (3D-periodic cells) stress from one model head.

    Parameters
    ----------
    model: an :class:`~ase_adapt.models.MLFF`, or a checkpoint path / built-in name.
    head: the head to evaluate (``"main"`` for reference-level predictions).
    device, dtype: where and in which precision to run (default: the model's own).
    unknown_elements: ``"error"`` (default) raises before any compute; ``"nearest"`` maps each
        unknown element to the closest known one, warns, and records it in ``species_mapping``.
    min_distance: atoms closer than this (Å) raise :class:`CalculationFailed`.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters: dict[str, Any] = {}

    def __init__(
        self,
        model: MLFF | str | Path,
        head: str = K.MAIN_HEAD,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        unknown_elements: UnknownPolicy = "error",
        min_distance: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(model, MLFF):
            from .checkpoint import load_model

            model = load_model(model)
        if isinstance(dtype, str):
            dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self.model = model.to(device=device, dtype=dtype).eval()
        if head not in self.model.heads:
            raise KeyError(f"model has no head {head!r}; heads: {self.model.head_names}")
        if unknown_elements not in ("error", "nearest"):
            raise ValueError(f"unknown_elements must be 'error' or 'nearest', got {unknown_elements!r}")
        self.head = head
        self.unknown_elements = unknown_elements
        self.min_distance = float(min_distance)
        self.species_mapping: SpeciesMapping | None = None
        self._token: tuple | None = None

    # ------------------------------------------------------------------ ASE cache contract
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and any(atoms.info.get(k) != self.atoms.info.get(k) for k in INFO_KEYS):
            changes.append("info")
        return changes

    def get_property(self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True):
        # A weight update (TTT, an optimiser step, load_state_dict) invalidates cached results.
        if self.results and self._token != self.model.weights_token():
            self.results = {}
        return super().get_property(name, atoms, allow_calculation)

    # ------------------------------------------------------------------ compute
    def make_graph(self, atoms: Atoms, cutoff: float | None = None) -> AtomicGraph:
        """Check elements and geometry, then build the graph (at ``cutoff``, default the model's)."""
        self.species_mapping = check_elements(atoms.numbers, self.model.elements, self.unknown_elements)
        if self.species_mapping.mapped:
            warnings.warn(f"unknown elements mapped to nearest known: {self.species_mapping.report}", stacklevel=3)
        try:
            graph = build_graph(
                atoms, cutoff or self.model.cutoff, dtype=self.model.dtype,
                device=self.model.device, numbers=[self.species_mapping.numbers],
                min_distance=self.min_distance,
            )
        except InvalidStructureError as exc:
            raise CalculationFailed(str(exc)) from None
        return graph

    def evaluate(self, graph: AtomicGraph, head: str | None = None) -> dict[str, np.ndarray | float]:
        """Run the model on a single-structure graph and return ASE-style float64 results."""
        try:
            out = self.model(graph, head or self.head)
        except torch.cuda.OutOfMemoryError:
            raise CalculationFailed(
                f"out of GPU memory for a system of {graph.num_nodes} atoms and {graph.num_edges} edges"
            ) from None
        results: dict[str, np.ndarray | float] = {}
        energy = float(out[K.ENERGY].detach()[0])
        results["energy"] = results["free_energy"] = energy
        results["energies"] = out[K.NODE_ENERGY].detach().cpu().numpy().astype(np.float64)
        results["forces"] = out[K.FORCES].detach().cpu().numpy().astype(np.float64)
        if K.STRESS in out:
            results["stress"] = full_3x3_to_voigt_6_stress(out[K.STRESS].detach().cpu().numpy()[0].astype(np.float64))
        for key, value in results.items():
            if not np.all(np.isfinite(value)):
                raise CalculationFailed(f"model returned non-finite {key} for a system of {graph.num_nodes} atoms")
        return results

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not self.atoms.pbc.all():
            raise PropertyNotImplementedError("stress is only defined for cells periodic in all three directions")
        token = self.model.weights_token()
        self.results = self.evaluate(self.make_graph(self.atoms))
        self._token = token
