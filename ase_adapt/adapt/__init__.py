"""Test-time adaptation: the pipeline from atoms to an adaptation state (labels -> detectors ->
decision -> radius -> TTT), the TTT steps, the samples they fit (prior-driven MD, labelled by the
prior), the label-free guard, and the calculator's topology trigger, adaptation store and event
log. :class:`ase_adapt.AdaptiveCalculator` and ``ase-adapt evaluate`` use them. Nothing here
imports :mod:`ase_adapt.train`."""

from .events import EventKind, EventLog
from .guard import GuardSettings, GuardVerdict, check_adaptation
from .pipeline import AdaptationState, AdaptMode, AdaptSettings, Assessment, adapt, assess
from .samples import SampleSettings, label_samples, make_samples
from .store import Adaptation, AdaptationStore
from .trigger import TopologyTrigger, TriggerSettings, system_fingerprint
from .ttt import TTTResult, TTTSettings, prior_head_for, test_time_train

__all__ = ["AdaptMode", "AdaptSettings", "Adaptation", "AdaptationState", "AdaptationStore", "Assessment",
           "EventKind", "EventLog", "GuardSettings", "GuardVerdict", "SampleSettings", "TTTResult", "TTTSettings",
           "TopologyTrigger", "TriggerSettings", "adapt", "assess", "check_adaptation", "label_samples",
           "make_samples", "prior_head_for", "system_fingerprint", "test_time_train"]
