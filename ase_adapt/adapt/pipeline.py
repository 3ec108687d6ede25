"""From atoms to an adaptation state: labels -> detectors -> decision -> radius -> TTT.

Two functions of (model, atoms, prior, statistics, settings), with no cache and no log:
:func:`assess` labels the structure with the prior, runs the shift detectors and decides
whether to adapt; :func:`adapt` then refines the graph radius and runs test-time training on
the model it is given (in place). :class:`~ase_adapt.AdaptiveCalculator` calls them on its
private model and adds what a calculator needs around them: the trigger, the per-system store,
the event log and the recovery from a TTT that raised.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from .._settings import check_types
from .. import _keys as K
from ..elements import check_elements
from ..errors import PriorError
from ..shift.detectors import DetectorSettings, ShiftReport, detect_shift
from ..shift.radius import RadiusSettings, refine_radius
from .events import EventKind
from .samples import label_samples, make_samples
from .ttt import TTTResult, TTTSettings, test_time_train

__all__ = ["AdaptMode", "AdaptSettings", "Assessment", "AdaptationState", "as_settings", "assess", "adapt",
           "check_prior"]


class AdaptMode(str, enum.Enum):
    """When to adapt a system."""

    SHIFTED = "shifted"  # radius refinement and TTT only when a detector fires
    ALWAYS = "always"    # adapt every new system
    NEVER = "never"      # detect and report only


@dataclass(frozen=True)
class AdaptSettings:
    """Everything :func:`assess` and :func:`adapt` need besides the model, atoms, prior and statistics."""

    detectors: DetectorSettings | None = field(default_factory=DetectorSettings)
    radius: RadiusSettings | None = None
    ttt: TTTSettings | None = field(default_factory=TTTSettings)
    when: AdaptMode = AdaptMode.SHIFTED
    prior_head: str | None = None
    unknown_elements: str = "error"

    def __post_init__(self) -> None:
        check_types(self)


@dataclass
class Assessment:
    """What :func:`assess` found: the shift report, the prior's labels of the structure, the decision."""

    report: ShiftReport
    numbers: np.ndarray                  # the atomic numbers the model sees (after element mapping)
    labels: list[dict[str, Any]] | None  # the prior's labels of the structure itself
    prior_error: str | None
    adapt: bool


@dataclass
class AdaptationState:
    """The outcome for one system: what the calculator caches, applies and logs."""

    report: ShiftReport
    radius: float | None = None          # a refined graph radius (None: the model's cutoff)
    ttt: TTTResult | None = None
    prior_error: str | None = None
    actions: list[str] = field(default_factory=list)

    @property
    def kind(self) -> EventKind:
        if self.prior_error is not None:
            return EventKind.PRIOR_FAILED
        if self.ttt is not None and self.ttt.rolled_back:
            return EventKind.ROLLED_BACK
        if self.ttt is not None or self.radius is not None:
            return EventKind.ADAPTED
        return EventKind.NOT_ADAPTED

    @property
    def action(self) -> str:
        return ", ".join(self.actions) or "none"


def as_settings(value: Any, cls: type, name: str):
    """``True`` -> ``cls()``, ``False``/``None`` -> None, an instance of ``cls`` as is; anything else is refused."""
    if value is True:
        return cls()
    if value is False or value is None:
        return None
    if isinstance(value, cls):
        return value
    raise TypeError(f"{name} must be a {cls.__name__}, True or False; got {value!r}")


def check_prior(prior: Any) -> None:
    """A prior is None, a spec string (made into a calculator by the caller) or an ASE calculator."""
    if prior is None or isinstance(prior, str):
        return
    if not (callable(getattr(prior, "get_potential_energy", None)) and callable(getattr(prior, "get_forces", None))):
        raise TypeError(f"prior must be a prior spec such as 'gfn-ff' or an ASE calculator, got {prior!r}")


def assess(model, atoms: Atoms, prior: Any, stats: dict[str, Any], s: AdaptSettings) -> Assessment:
    """Labels (the prior on the structure), detectors and the decision whether to adapt."""
    mapping = check_elements(atoms.numbers, model.elements, s.unknown_elements)
    labels, prior_error = None, None
    if prior is not None and (s.ttt or (s.detectors and s.detectors.force_norm)):
        try:  # the structure itself; rattled/MD samples only if TTT runs
            labels = label_samples([atoms], prior)
        except PriorError as exc:
            prior_error = str(exc)
    if s.detectors:
        report = detect_shift(atoms, stats, prior_forces=labels[0][K.LABEL_FORCES] if labels else None,
                              prior_head=s.prior_head, cutoff=model.cutoff, settings=s.detectors)
    else:
        report = ShiftReport(n_atoms=len(atoms))
    report.unknown_elements = mapping.report
    decide = s.when is AdaptMode.ALWAYS or (s.when is AdaptMode.SHIFTED and report.shifted)
    return Assessment(report, mapping.numbers, labels, prior_error, decide)


def adapt(model, atoms: Atoms, found: Assessment, prior: Any, stats: dict[str, Any],
          s: AdaptSettings, structures: Sequence[Atoms] | None = None) -> AdaptationState:
    """Radius refinement and TTT (on ``model``, in place) as ``found`` decided.

    ``structures``: the transductive mode (the seed paper's protocol where the structures to
    predict are known in advance): TTT learns from ``atoms`` and these structures, labelled by the
    prior only, instead of rattled copies and prior-driven MD. Their own labels are never read.
    A prior that fails while sampling ends in a state with ``prior_error`` (no TTT); any other
    exception from TTT propagates, with ``model``'s weights restored by :func:`test_time_train`.
    """
    state = AdaptationState(found.report, prior_error=found.prior_error)
    if found.adapt and s.radius:
        rr = refine_radius(atoms, stats, s.radius, training_cutoff=model.cutoff)
        state.radius = rr.radius if rr.radius < model.cutoff else None
        found.report.radius, found.report.radius_detail = rr.radius, rr.to_dict()
        state.actions.append(f"radius {rr.radius:.2f} Å")
    if found.adapt and s.ttt and state.prior_error is None and found.labels is not None:
        try:
            t_samples = time.perf_counter()
            if structures is None:
                samples, labels = make_samples(atoms, s.ttt.sample_settings(), prior, labels=found.labels)
            else:
                samples = [atoms, *structures]
                labels = list(found.labels) + label_samples(structures, prior)
            t_samples = time.perf_counter() - t_samples
            model_samples = [Atoms(numbers=found.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
                             for a in samples]
            result = test_time_train(model, atoms, prior, s.ttt, head=s.prior_head, cutoff=state.radius,
                                     samples=model_samples, labels=labels)
        except PriorError as exc:
            state.prior_error = str(exc)
        else:
            result.prior_seconds += t_samples  # sampling MD and labelling happened here
            result.seconds += t_samples
            state.ttt = result
            state.actions.append(f"TTT rolled back: {result.stop_reason}" if result.rolled_back
                                 else f"TTT {result.steps} steps")
    if state.prior_error is not None:
        state.actions.append("TTT skipped: prior failed")
    return state
