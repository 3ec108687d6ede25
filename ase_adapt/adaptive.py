"""``AdaptiveCalculator``: detect distribution shift on structure changes, adapt, then predict.

Thin orchestration (DESIGN.md §Architecture): it asks :mod:`ase_adapt.shift` whether the
system is shifted, :mod:`ase_adapt.shift.radius` for a radius, :mod:`ase_adapt.ttt` to adapt,
and the model to predict. The science lives in those rooms.

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
import enum
import time
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from . import _keys as K
from .calculator import MLFFCalculator, is_out_of_memory
from .elements import UnknownPolicy, check_elements
from .errors import CalculationFailed, PriorError
from .models.mlff import MLFF
from .shift.detectors import DetectorSettings, ShiftReport, detect_shift
from .shift.radius import RadiusSettings, refine_radius
from .adapt.events import EventKind, EventLog
from .adapt.samples import label_samples, make_samples
from .adapt.store import AdaptationStore
from .adapt.trigger import TopologyTrigger, TriggerSettings, system_fingerprint
from .ttt import TTTResult, TTTSettings, prior_head_for, test_time_train

__all__ = ["AdaptMode", "TriggerSettings", "AdaptiveCalculator"]  # TriggerSettings: re-exported from adapt.trigger


class AdaptMode(str, enum.Enum):
    SHIFTED = "shifted"  # radius refinement and TTT only when a detector fires
    ALWAYS = "always"    # adapt every new system
    NEVER = "never"      # detect and report only


class AdaptiveCalculator(MLFFCalculator):
    """A drop-in ASE calculator that adapts a TTT-ready model to shifted systems before answering.

    Parameters
    ----------
    model: an MLFF, checkpoint path or built-in name, with training statistics.
    prior: a prior spec (``"gfn2-xtb"``, ``"gfn-ff"``, ``"sgdml:PATH"``, ``"lj"``, ``"emt"``) or
        an ASE calculator; needed by the force-norm detector and by TTT.
    detectors: :class:`DetectorSettings`, or False to skip detection (then ``adapt`` decides).
    radius_refinement: :class:`RadiusSettings`, True for defaults, or False.
    ttt: :class:`TTTSettings`, True for defaults, or False.
    adapt: ``"shifted"`` (default), ``"always"`` or ``"never"``.
    prior_head: the head matching ``prior`` (default ``prior:<kind>``; a mismatch is refused).
    event_log: optional JSONL file; one line per check with what was detected and done.

    ``self.model`` is the calculator's private copy of ``model`` (cast to ``device``/``dtype``),
    which holds the adapted weights; the model passed in is never modified, and later changes to
    it are not seen. Use :meth:`adapted_model` to export the adapted weights as a new model.
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
        adapt: AdaptMode | str = AdaptMode.SHIFTED,
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
        super().__init__(model, head=head, device=device, dtype=dtype, unknown_elements=unknown_elements,
                         min_distance=min_distance, **kwargs)
        if isinstance(prior, str):
            from .priors import make_prior

            prior = make_prior(prior)
        self.prior = prior
        self.detectors = DetectorSettings() if detectors is True else (detectors or None)
        self.rr = RadiusSettings() if radius_refinement is True else (radius_refinement or None)
        self.ttt = TTTSettings() if ttt is True else (ttt or None)
        self.adapt = AdaptMode(adapt)
        self._trigger = TopologyTrigger(trigger)
        self.stats = dict(self.model.training_stats or {})
        if (self.detectors or self.rr) and "spectrum_mean" not in self.stats:
            raise ValueError("the model has no training statistics, which shift detection and radius refinement "
                             "need; compute them with `ase-adapt stats --model M --data TRAIN.xyz --out M2`")
        if self.ttt is not None and self.adapt is not AdaptMode.NEVER:
            if prior is None:
                raise ValueError("test-time training needs a prior (prior='gfn-ff', 'sgdml:PATH', ...) or ttt=False")
            self.prior_head = prior_head_for(self.model, prior, prior_head)
        else:
            self.prior_head = prior_head
        self._log = EventLog(event_log)
        self.events = self._log.events  # one record per check (adapt.events)
        self.shift_report: ShiftReport | None = None
        self.ttt_result: TTTResult | None = None
        self.radius: float | None = None
        self._store = AdaptationStore(self.model.parameters_before(self.ttt.blocks if self.ttt else 1), cache_size)

    def fingerprint(self, atoms: Atoms) -> str:
        """Numbers + covalent bond graph + pbc: what identifies 'the same system' for the cache."""
        return system_fingerprint(atoms, self._trigger.bonds(atoms))

    # ------------------------------------------------------------------ adaptation
    def adapted_model(self) -> MLFF:
        """A new, independent model (deep copy) with the weights currently adapted (and training_stats).

        The explicit export of an adaptation: the calculator keeps adapting its own copy, and
        changes to the returned model never reach the calculator. The refined graph radius is
        not part of the weights; it is ``self.radius`` (None: the model's cutoff).
        """
        model = copy.deepcopy(self.model)
        for p in model.parameters():
            p.grad = None
        return model

    def reset_adaptation(self) -> None:
        """Back to the base weights and radius; forget every cached adaptation."""
        self._store.load_base()
        self._store.clear()
        self.radius = None
        self._trigger.reset()
        self.results = {}

    def check(self, atoms: Atoms, fresh: bool = False) -> ShiftReport:
        """Run detection (and adaptation, per ``adapt``) for ``atoms`` now; return the report.

        A system seen before reuses its cached adaptation unless ``fresh``.
        """
        t0 = time.perf_counter()
        fresh = fresh or self._trigger.fresh
        fp = system_fingerprint(atoms, self._trigger.checked(atoms))
        event: dict[str, Any] = {"call": self._trigger.calls, "fingerprint": fp,
                                 "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)}
        cached = None if fresh else self._store.get(fp)
        if cached is not None:
            self.radius, self.shift_report, self.ttt_result = cached.radius, cached.report, cached.ttt
            self._store.load(cached.weights)
            event.update(action="reused cached adaptation", shifted=self.shift_report.shifted,
                         seconds=time.perf_counter() - t0)
            self._log.append(event, EventKind.REUSED)
            return self.shift_report
        self._store.load_base()
        self.radius, self.ttt_result = None, None
        mapping = check_elements(atoms.numbers, self.model.elements, self.unknown_elements)
        prior_error = oom = None
        labels = None
        if self.prior is not None and (self.ttt or (self.detectors and self.detectors.force_norm)):
            try:  # the structure itself; rattled/MD samples only if TTT runs
                labels = label_samples([atoms], self.prior)
            except PriorError as exc:
                prior_error = str(exc)
        prior_forces = labels[0][K.REF_FORCES] if labels else None
        if self.detectors:
            report = detect_shift(atoms, self.stats, prior_forces=prior_forces, prior_head=self.prior_head,
                                  cutoff=self.model.cutoff, settings=self.detectors)
        else:
            report = ShiftReport(n_atoms=len(atoms))
        report.unknown_elements = mapping.report
        do_adapt = self.adapt is AdaptMode.ALWAYS or (self.adapt is AdaptMode.SHIFTED and report.shifted)
        actions = []
        if do_adapt and self.rr:
            rr = refine_radius(atoms, self.stats, self.rr, training_cutoff=self.model.cutoff)
            self.radius = rr.radius if rr.radius < self.model.cutoff else None
            report.radius, report.radius_detail = rr.radius, rr.to_dict()
            actions.append(f"radius {rr.radius:.2f} Å")
        if do_adapt and self.ttt and prior_error is None and labels is not None:
            try:
                t_samples = time.perf_counter()
                samples, labels = make_samples(atoms, self.ttt.sample_settings(), self.prior, labels=labels)
                t_samples = time.perf_counter() - t_samples
                model_samples = [Atoms(numbers=mapping.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
                                 for a in samples]
                self.ttt_result = test_time_train(self.model, atoms, self.prior, self.ttt, head=self.prior_head,
                                                  cutoff=self.radius, samples=model_samples, labels=labels)
                self.ttt_result.prior_seconds += t_samples  # sampling MD and labelling happened here
                self.ttt_result.seconds += t_samples
                actions.append(f"TTT rolled back: {self.ttt_result.stop_reason}" if self.ttt_result.rolled_back
                               else f"TTT {self.ttt_result.steps} steps")
            except PriorError as exc:
                prior_error = str(exc)
            except BaseException as exc:  # OOM, KeyboardInterrupt, a backend error: restored, logged, re-raised
                oom = self._ttt_failed(exc, event, report, t0)
                if oom is None:
                    raise
        if oom is not None:  # raised outside the handler, so the failed TTT's tensors can be freed
            raise CalculationFailed(oom)
        if prior_error is not None:
            actions.append("TTT skipped: prior failed")
            event["prior_error"] = prior_error
        self.shift_report = report
        self._store.put(fp, self.radius, report, self.ttt_result)
        event.update(action=", ".join(actions) or "none", shifted=report.shifted, reasons=report.reasons,
                     report=report.to_dict(), ttt=self.ttt_result.to_dict() if self.ttt_result else None,
                     seconds=time.perf_counter() - t0)
        if prior_error is not None:
            kind = EventKind.PRIOR_FAILED
        elif self.ttt_result is not None and self.ttt_result.rolled_back:
            kind = EventKind.ROLLED_BACK
        elif self.ttt_result is not None or self.radius is not None:
            kind = EventKind.ADAPTED
        else:
            kind = EventKind.NOT_ADAPTED
        self._log.append(event, kind)
        return report

    def _ttt_failed(self, exc: BaseException, event: dict[str, Any], report: ShiftReport, t0: float) -> str | None:
        """After a TTT that raised: base weights and radius back, an event saying why.

        Returns the :class:`CalculationFailed` message if it was an out-of-memory error. The
        failure is not cached; the next call on the same structure answers unadapted, and a later
        check of the system (a new topology, ``every_n_steps``, ``check(fresh=True)``) tries again.
        """
        self._store.load_base()  # test_time_train restored its start; this also covers sampling/labelling
        self.radius, self.ttt_result, self.shift_report, self.results = None, None, report, {}
        why = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
        event.update(action=f"TTT failed: {why}; base weights restored", shifted=report.shifted,
                     reasons=report.reasons, report=report.to_dict(), ttt=None, seconds=time.perf_counter() - t0)
        self._log.append(event, EventKind.TTT_FAILED)
        if not is_out_of_memory(exc):
            return None
        return (f"out of memory during test-time training of a system of {event['n_atoms']} atoms "
                f"({event['formula']}); the base weights were restored ({why})")

    # ------------------------------------------------------------------ ASE
    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        Calculator.calculate(self, atoms, properties, system_changes)
        if "stress" in properties and not self.atoms.pbc.all():
            raise PropertyNotImplementedError("stress is only defined for cells periodic in all three directions")
        self._trigger.calls += 1
        if self._trigger.needs_check(self.atoms):
            self.check(self.atoms)
        token = self.model.weights_token()
        self.results = self.evaluate(self.make_graph(self.atoms, cutoff=self.radius))
        self._token = token
