"""Test-time adaptation rooms: the topology trigger, the adaptation store, samples (prior-driven
MD, labelled by the prior) and the label-free guard. The TTT steps live in :mod:`ase_adapt.ttt`;
:class:`ase_adapt.AdaptiveCalculator` and ``ase-adapt evaluate`` use them. Nothing here imports
:mod:`ase_adapt.train`."""

from .events import EventKind, EventLog
from .guard import GuardSettings, GuardVerdict, check_adaptation
from .samples import SampleSettings, label_samples, make_samples
from .store import Adaptation, AdaptationStore
from .trigger import TopologyTrigger, TriggerSettings, system_fingerprint

__all__ = ["Adaptation", "AdaptationStore", "EventKind", "EventLog", "GuardSettings", "GuardVerdict", "SampleSettings", "TopologyTrigger",
           "TriggerSettings", "check_adaptation", "label_samples", "make_samples", "system_fingerprint"]
