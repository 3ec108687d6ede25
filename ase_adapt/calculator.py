"""ASE calculators backed by an ase-adapt model.

:class:`MLFFCalculator` is the plain one: atoms -> graph -> model -> results. It follows the ASE
contract (class-level ``implemented_properties``, cache invalidated by any change of the system or
of the model's weights, results returned as float64 copies) and refuses to return numbers it
cannot trust: unknown elements are rejected (or mapped, by explicit policy) before any compute,
and NaN/inf, overlapping atoms or an out-of-memory error raise :class:`CalculationFailed`.

Who owns the weights: the plain calculator never changes the model it is given. When no dtype or
device cast is needed it evaluates the user's model itself (no ``.eval()``: an MLFF's forward does
not depend on the train/eval flag), so it follows later weight updates by the user, which the
``weights_token`` cache key detects. A cast, or a model holding mode-dependent layers (dropout,
batch norm) in training mode, makes it evaluate a private copy instead.
:class:`~ase_adapt.adaptive.AdaptiveCalculator` always evaluates (and adapts) a private copy.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from . import _keys as K
from ._dtypes import as_device, as_dtype
from ._threads import intra_op_threads, threads_for
from .elements import SpeciesMapping, UnknownPolicy, check_elements
from .errors import CalculationFailed, InvalidStructureError
from .graph import AtomicGraph, build_graph, check_structure
from .labels import charge_and_spin
from .models.mlff import MLFF

_ASE_KWARGS = {"restart", "ignore_bad_restart_file", "label", "atoms", "directory"}  # ase Calculator's own
INFO_KEYS = ("charge", "spin")  # atoms.info entries that change the physical system
_MODE_DEPENDENT = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA or CPU allocator failure (torch's OutOfMemoryError, or its RuntimeError messages)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _mode_matters(model: torch.nn.Module) -> bool:
    """True if evaluating ``model`` as it is would run layers in their training behaviour."""
    return any(m.training and isinstance(m, _MODE_DEPENDENT) for m in model.modules())


def _needs_cast(model: MLFF, device: torch.device | None, dtype: torch.dtype | None) -> bool:
    if dtype is not None and dtype != model.dtype:
        return True
    if device is None:
        return False
    current = model.device
    return device.type != current.type or (device.index is not None and device.index != current.index)


class MLFFCalculator(Calculator):
    """Energy, per-atom energies, forces and (3D-periodic cells) stress from one model head.

    Parameters
    ----------
    model: an :class:`~ase_adapt.models.MLFF` (or a foreign-model adapter such as SevenNet's), or a
        checkpoint path / model name (``"default"``, ``"sevennet:7net-0"``).
    head: the head to evaluate (``"main"`` for reference-level predictions).
    device, dtype: where and in which precision to run (default: the model's own).
    unknown_elements: ``"error"`` (default) raises before any compute; ``"nearest"`` maps each
        unknown element to the closest known one, warns, and records it in ``species_mapping``.
    min_distance: atoms closer than this (Å) raise :class:`CalculationFailed`.
    threads: torch intra-op threads for this calculator's compute. ``None`` (default): one thread
        for systems below 1000 atoms (faster there, and graceful when the cores are shared; see
        :mod:`ase_adapt._threads`), torch's own setting for larger ones.

    ``self.model`` is the module evaluated: the user's own model when no cast is needed (shared,
    never modified by the calculator), otherwise a private cast copy (see the module docstring).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters: dict[str, Any] = {}
    #: Always evaluate a private copy of the model, even when no cast is needed (AdaptiveCalculator).
    private_model: bool = False

    def __init__(
        self,
        model: MLFF | str | Path,
        head: str = K.MAIN_HEAD,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        unknown_elements: UnknownPolicy = "error",
        min_distance: float = 0.1,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        threads_for(1, threads)  # validates
        unexpected = sorted(set(kwargs) - _ASE_KWARGS)
        if unexpected:  # ASE's Calculator would store them as parameters, silently unused
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) {unexpected}")
        super().__init__(**kwargs)
        owned = not isinstance(model, torch.nn.Module)  # an MLFF or a foreign adapter (models/foreign.py)
        if owned:
            from .checkpoint import load_model

            model = load_model(model)
        if dtype is not None:
            dtype = as_dtype(dtype)
        self.model = self._take_model(model, as_device(device) if device is not None else None, dtype, owned)
        if head not in self.model.heads:
            raise KeyError(f"model has no head {head!r}; heads: {self.model.head_names}")
        if unknown_elements not in ("error", "nearest"):
            raise ValueError(f"unknown_elements must be 'error' or 'nearest', got {unknown_elements!r}")
        self.head = head
        self.unknown_elements = unknown_elements
        self.min_distance = float(min_distance)
        self.threads = threads
        self.species_mapping: SpeciesMapping | None = None
        self._token: tuple | None = None
        self._warned_electrons: set = set()

    def _take_model(self, model: MLFF, device: torch.device | None, dtype: torch.dtype | None,
                    owned: bool) -> MLFF:
        """The module to evaluate; the user's model object is never cast, re-moded or written to."""
        if not owned:
            if not (self.private_model or _needs_cast(model, device, dtype) or _mode_matters(model)):
                return model  # shared: later weight updates by the user are seen (weights_token)
            model = copy.deepcopy(model)
            for p in model.parameters():
                p.grad = None  # the user's gradients are not ours
        return model.to(device=device, dtype=dtype).eval()

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
            with intra_op_threads(graph.num_nodes, self.threads):
                out = self.model(graph, head or self.head)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            oom = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            oom = None
        if oom is not None:  # raised outside the handler, so the failed graph's tensors are freed
            raise CalculationFailed(
                f"out of memory for a system of {graph.num_nodes} atoms and {graph.num_edges} edges ({oom})"
            )
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

    def _warn_charge_blind(self, atoms: Atoms) -> None:
        """The model has no charge or spin input: say so (once per system) when the atoms carry one."""
        try:
            electrons = charge_and_spin(atoms)
        except ValueError as exc:  # the model does not use them; a prior that does will refuse
            if "malformed" not in self._warned_electrons:
                self._warned_electrons.add("malformed")
                warnings.warn(f"{exc}; the model ignores it", stacklevel=4)
            return
        charge, spin = electrons
        if (charge != 0 or (spin or 1) != 1) and electrons not in self._warned_electrons:
            self._warned_electrons.add(electrons)
            warnings.warn(f"the model takes no charge or spin: atoms.info charge={charge}, spin={spin} "
                          "reaches only an electronic prior (xTB, GFN-FF), not the model's prediction", stacklevel=4)

    def graph_cutoff(self, atoms: Atoms) -> float:
        """The graph radius for ``atoms`` (the model's cutoff); the adaptive calculator checks and adapts here."""
        return self.model.cutoff

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not self.atoms.pbc.all():
            raise PropertyNotImplementedError("stress is only defined for cells periodic in all three directions")
        try:  # NaN/inf or a degenerate cell: refused before the trigger, the prior or the model see it
            check_structure(self.atoms)
        except InvalidStructureError as exc:
            raise CalculationFailed(str(exc)) from None
        self._warn_charge_blind(self.atoms)
        cutoff = self.graph_cutoff(self.atoms)  # may change the weights (adaptation): token after it
        token = self.model.weights_token()
        self.results = self.evaluate(self.make_graph(self.atoms, cutoff=cutoff))
        self._token = token
