"""``AdaptiveCalculator``: detect distribution shift on structure changes, adapt, then predict.

Thin orchestration (DESIGN.md §Architecture): :mod:`ase_adapt.adapt.pipeline` goes from atoms to
an adaptation state (labels -> detectors -> decision -> radius -> TTT), the store keeps it per
system, the event log records it, and :class:`MLFFCalculator`'s path predicts with it
(``calculate`` = atoms -> :meth:`graph_cutoff`, which checks and adapts when needed -> prediction).

When is a system checked? On the first call, when the atomic numbers change, when the bond
topology (covalent bonds) has changed by more than ``topology_threshold`` since the last check,
and optionally every ``every_n_steps`` calls. Ordinary MD steps only cost a bond comparison.
Adapted weights are cached per system fingerprint (numbers + bond graph), so an MD run adapts
once and a return to a known system is free; a new system always starts from the base weights.

Who owns the weights: the calculator adapts a private deep copy of the model, made (and cast to
the requested device/dtype) at construction. TTT steps, cached adapted weights and the base
snapshot all live in that copy, so the user's model is never changed and two calculators on one
model never see each other's adaptation. ``adapted_model()`` is the explicit export of the
current adapted weights. A TTT that raises restores the base weights before the error leaves.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms

from . import _keys as K
from .adapt.events import EventKind, EventLog
from .adapt.pipeline import AdaptationState, AdaptMode, AdaptSettings, adapt, as_settings, assess, check_prior
from .adapt.store import AdaptationStore
from .adapt.trigger import TopologyTrigger, TriggerSettings, system_fingerprint
from .adapt.ttt import TTTResult, TTTSettings, prior_head_for
from ._threads import intra_op_threads
from .calculator import MLFFCalculator, is_out_of_memory
from .elements import UnknownPolicy
from .errors import CalculationFailed, InvalidStructureError
from .graph import check_structure
from .models.mlff import MLFF
from .shift.detectors import DetectorSettings, ShiftReport
from .shift.radius import RadiusSettings

__all__ = ["AdaptMode", "TriggerSettings", "AdaptiveCalculator"]  # both re-exported from ase_adapt.adapt


class AdaptiveCalculator(MLFFCalculator):
    """A drop-in ASE calculator that adapts a TTT-ready model to shifted systems before answering.

    Parameters
    ----------
    model: an MLFF, checkpoint path or built-in name, with training statistics.
    prior: a prior spec (``"gfn2-xtb"``, ``"gfn-ff"``, ``"sgdml:PATH"``, ``"lj"``, ``"emt"``) or
        an ASE calculator; needed by the force-norm detector and by TTT.
    detectors: :class:`DetectorSettings`, or False to skip detection (then ``adapt_when`` decides).
    radius_refinement: :class:`RadiusSettings`, True for defaults, or False.
    ttt: :class:`TTTSettings`, True for defaults, or False.
    adapt_when: ``"shifted"`` (default: when a detector fires), ``"always"`` or ``"never"``.
    prior_head: the head matching ``prior`` (default ``prior:<kind>``; a mismatch is refused).
    event_log: optional JSONL file; one line per check with what was detected and done.

    ``self.settings`` (:class:`~ase_adapt.adapt.pipeline.AdaptSettings`) holds the detector,
    radius and TTT settings as given. ``self.model`` is the calculator's private copy of
    ``model`` (cast to ``device``/``dtype``), which holds the adapted weights; the model passed in
    is never modified, and later changes to it are not seen. :meth:`adapted_model` exports the
    adapted weights as a new model; :attr:`radius` is the graph radius in use.
    """

    private_model = True  # adaptation writes weights: never into the user's model

    def __init__(
        self,
        model: MLFF | str | Path,
        prior: Any = None,
        *,
        head: str = K.MAIN_HEAD,
        detectors: DetectorSettings | bool = True,
        radius_refinement: RadiusSettings | bool = False,
        ttt: TTTSettings | bool = True,
        adapt_when: AdaptMode | str = AdaptMode.SHIFTED,
        trigger: TriggerSettings | None = None,
        prior_head: str | None = None,
        unknown_elements: UnknownPolicy = "error",
        event_log: str | Path | None = None,
        cache_size: int = 16,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        min_distance: float = 0.1,
        **kwargs: Any,
    ) -> None:
        check_prior(prior)  # before the model is loaded and copied
        detectors = as_settings(detectors, DetectorSettings, "detectors")
        radius_refinement = as_settings(radius_refinement, RadiusSettings, "radius_refinement")
        ttt_settings = as_settings(ttt, TTTSettings, "ttt")
        when = AdaptMode(adapt_when)
        super().__init__(model, head=head, device=device, dtype=dtype, unknown_elements=unknown_elements,
                         min_distance=min_distance, **kwargs)
        if isinstance(prior, str):
            from .priors import make_prior

            prior = make_prior(prior)
        self.prior = prior
        if ttt_settings is not None and when is not AdaptMode.NEVER:
            if prior is None:
                raise ValueError("test-time training needs a prior (prior='gfn-ff', 'sgdml:PATH', ...) or ttt=False")
            prior_head = prior_head_for(self.model, prior, prior_head)
        elif prior is not None:  # no TTT: the head only selects the force-norm detector's statistics
            try:
                prior_head = prior_head_for(self.model, prior, prior_head)
            except ValueError:  # no head learnt this prior: that detector reports "no statistics"
                prior_head = None
        self.settings = AdaptSettings(detectors=detectors, radius=radius_refinement, ttt=ttt_settings, when=when,
                                      prior_head=prior_head, unknown_elements=unknown_elements)
        self.stats = dict(self.model.training_stats or {})
        if (self.settings.detectors or self.settings.radius) and "spectrum_mean" not in self.stats:
            raise ValueError("the model has no training statistics, which shift detection and radius refinement "
                             "need; compute them with `ase-adapt stats --model M --data TRAIN.xyz --out M2`")
        self._trigger = TopologyTrigger(as_settings(trigger, TriggerSettings, "trigger"))
        self._log = EventLog(event_log)
        self.events = self._log.events  # one record per check (adapt.events)
        self.state: AdaptationState | None = None  # the adaptation in use (None: not checked yet)
        self._store = AdaptationStore(
            (ttt_settings or TTTSettings()).adapted_parameters(self.model), cache_size)

    # ------------------------------------------------------------------ what is in use
    @property
    def prior_head(self) -> str | None:
        return self.settings.prior_head

    @property
    def radius(self) -> float:
        """The graph radius in use (Å): the refined one, else the model's cutoff."""
        refined = self.state.radius if self.state is not None else None
        return self.model.cutoff if refined is None else refined

    @property
    def shift_report(self) -> ShiftReport | None:
        return self.state.report if self.state is not None else None

    @property
    def ttt_result(self) -> TTTResult | None:
        return self.state.ttt if self.state is not None else None

    def fingerprint(self, atoms: Atoms) -> str:
        """Numbers + covalent bond graph + pbc: what identifies 'the same system' for the cache."""
        return system_fingerprint(atoms, self._trigger.bonds(atoms))

    # ------------------------------------------------------------------ adaptation
    def adapted_model(self) -> MLFF:
        """A new, independent model (deep copy) with the weights currently adapted (and training_stats).

        The explicit export of an adaptation: the calculator keeps adapting its own copy, and
        changes to the returned model never reach the calculator. The refined graph radius is
        not part of the weights; it is :attr:`radius`.
        """
        model = copy.deepcopy(self.model)
        for p in model.parameters():
            p.grad = None
        return model

    def reset_adaptation(self) -> None:
        """Back to the base weights and radius; forget every cached adaptation."""
        self._store.load_base()
        self._store.clear()
        self.state = None
        self._trigger.reset()
        self.results = {}

    def check(self, atoms: Atoms, fresh: bool = False, structures: Sequence[Atoms] | None = None) -> ShiftReport:
        """Run detection (and adaptation, per ``adapt_when``) for ``atoms`` now; return the report.

        A system seen before reuses its cached adaptation unless ``fresh``. ``structures``
        (transductive TTT, implies ``fresh``): more structures of the same system, known in
        advance (a trajectory to re-score), that TTT learns from in place of prior-MD samples,
        labelled by the prior only; any labels they carry are never read.
        """
        try:
            check_structure(atoms)
            structures = _same_system(atoms, structures)
        except InvalidStructureError as exc:
            raise CalculationFailed(str(exc)) from None
        t0 = time.perf_counter()
        fresh = fresh or structures is not None or self._trigger.fresh
        fp = system_fingerprint(atoms, self._trigger.checked(atoms))
        event: dict[str, Any] = {"call": self._trigger.calls, "fingerprint": fp,
                                 "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)}
        cached = None if fresh else self._store.get(fp)
        if cached is not None:
            self.state = cached.state
            self._store.load(cached.weights)
            event.update(action="reused cached adaptation", shifted=self.state.report.shifted,
                         seconds=time.perf_counter() - t0)
            self._log.append(event, EventKind.REUSED)
            return self.state.report
        self._store.load_base()
        self.state = None
        with intra_op_threads(len(atoms), self.threads):  # the model's compute; priors limit their own
            found = assess(self.model, atoms, self.prior, self.stats, self.settings)
            try:
                state = adapt(self.model, atoms, found, self.prior, self.stats, self.settings, structures)
            except BaseException as exc:  # OOM, KeyboardInterrupt, a backend error: restored, logged, re-raised
                oom = self._ttt_failed(exc, event, found.report, t0)
                if oom is None:
                    raise
            else:
                oom = None
        if oom is not None:  # raised outside the handler, so the failed TTT's tensors can be freed
            raise CalculationFailed(oom)
        self.state = state
        self._store.put(fp, state)
        event.update(action=state.action, shifted=state.report.shifted, reasons=state.report.reasons,
                     report=state.report.to_dict(), ttt=state.ttt.to_dict() if state.ttt else None,
                     seconds=time.perf_counter() - t0)
        if state.prior_error is not None:
            event["prior_error"] = state.prior_error
        self._log.append(event, state.kind)
        return state.report

    def _ttt_failed(self, exc: BaseException, event: dict[str, Any], report: ShiftReport, t0: float) -> str | None:
        """After a TTT that raised: base weights and radius back, an event saying why.

        Returns the :class:`CalculationFailed` message if it was an out-of-memory error. The
        failure is not cached; the next call on the same structure answers unadapted, and a later
        check of the system (a new topology, ``every_n_steps``, ``check(fresh=True)``) tries again.
        """
        self._store.load_base()  # test_time_train restored its start; this also covers sampling/labelling
        self.state, self.results = AdaptationState(report), {}
        why = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
        event.update(action=f"TTT failed: {why}; base weights restored", shifted=report.shifted,
                     reasons=report.reasons, report=report.to_dict(), ttt=None, seconds=time.perf_counter() - t0)
        self._log.append(event, EventKind.TTT_FAILED)
        if not is_out_of_memory(exc):
            return None
        return (f"out of memory during test-time training of a system of {event['n_atoms']} atoms "
                f"({event['formula']}); the base weights were restored ({why})")

    # ------------------------------------------------------------------ ASE
    def graph_cutoff(self, atoms: Atoms) -> float:
        """Before each prediction: check (and adapt) when the trigger says so; the radius to use."""
        self._trigger.calls += 1
        if self._trigger.needs_check(atoms):
            self.check(atoms)
        return self.radius


def _same_system(atoms: Atoms, structures: Sequence[Atoms] | None) -> list[Atoms] | None:
    """``structures`` as a list, checked to hold ``atoms``' atoms in order and to be valid structures.

    No copies: TTT labels them through :func:`~ase_adapt.adapt.label_samples` (which keeps only
    positions, cell, pbc, charge and spin) and builds the model's samples from their positions.
    """
    if structures is None:
        return None
    structures = list(structures)
    for k, a in enumerate(structures):
        if not np.array_equal(a.numbers, atoms.numbers):
            raise ValueError(f"transductive TTT: structure {k} ({a.get_chemical_formula()}) does not hold the "
                             f"atoms of the checked structure ({atoms.get_chemical_formula()}) in the same order")
        check_structure(a)
    return structures
