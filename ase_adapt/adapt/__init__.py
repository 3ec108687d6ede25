"""Test-time adaptation rooms: samples (prior-driven MD, labelled by the prior) and the
label-free guard. The TTT steps live in :mod:`ase_adapt.ttt`; :class:`ase_adapt.AdaptiveCalculator`
and ``ase-adapt evaluate`` call both. Nothing here imports :mod:`ase_adapt.train`."""

from .guard import GuardSettings, GuardVerdict, check_adaptation
from .samples import SampleSettings, label_samples, make_samples

__all__ = ["GuardSettings", "GuardVerdict", "SampleSettings", "check_adaptation", "label_samples", "make_samples"]
