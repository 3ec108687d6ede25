"""ase-adapt: distribution-shift-aware machine-learning force fields for ASE."""

from ._compat import allow_old_e3nn

allow_old_e3nn()  # before e3nn is imported: e3nn 0.4.x (mace-torch's pin) on torch >= 2.6

from .adaptive import AdaptiveCalculator  # noqa: E402
from .calculator import MLFFCalculator
from .checkpoint import load_model, save_model
from .errors import CalculationFailed, CheckpointError, DataError, InvalidStructureError, PriorError, UnknownElementError
from .graph import AtomicGraph, build_graph
from .models import MLFF, ModelConfig, build_model

__version__ = "0.1.0"

__all__ = [
    "MLFF", "ModelConfig", "build_model", "load_model", "save_model",
    "AtomicGraph", "build_graph", "MLFFCalculator", "AdaptiveCalculator",
    "CalculationFailed", "CheckpointError", "DataError", "InvalidStructureError", "PriorError", "UnknownElementError",
    "__version__",
]
