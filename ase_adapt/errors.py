"""Exceptions raised by ase-adapt.

Every failure that a user can provoke with bad input maps to one of these, with a message that
names the offending structure, key or file.
"""

from __future__ import annotations

from ase.calculators.calculator import CalculationFailed as _AseCalculationFailed


class CalculationFailed(_AseCalculationFailed):
    """A calculation could not produce trustworthy results (NaN, overlapping atoms, OOM...).

    Subclasses ASE's own ``CalculationFailed`` so that code catching the ASE exception keeps
    working.
    """


class UnknownElementError(ValueError):
    """The structure holds an element the model was never trained on."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe or belongs to another model."""


class InvalidStructureError(ValueError):
    """A structure cannot be turned into a graph: non-finite positions, a degenerate cell..."""


class DataError(ValueError):
    """A dataset file or frame is unusable: unreadable, truncated, or missing a required label."""


class PriorError(RuntimeError):
    """A prior calculator failed on a structure (SCF not converged, unsupported element, NaN...).

    Test-time training catches it, skips adaptation with an event, and never uses the failed
    labels as targets.
    """
