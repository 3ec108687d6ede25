"""Reusable physics contracts for ASE calculators and ase-adapt models.

Calculator contracts take a *factory* (a callable returning a fresh ASE calculator), so every
backend (the built-in MLFF, SevenNet, MACE...) runs the same suite. Each ``check_*`` raises
:class:`AssertionError` with an informative message. Use them one by one, all at once with
:func:`run_all_contracts`, or as pytest tests by subclassing :class:`CalculatorContract`
(imported lazily, so pytest is only needed by whoever uses it).
"""

from __future__ import annotations

from typing import Any

from ._core import (
    CalculatorFactory,
    FiniteDifferences,
    Prediction,
    Tolerances,
    assert_close,
    evaluate,
    far_apart,
    finite_differences,
    random_rotation,
    sheared_rattled_supercell,
    tolerances,
    transformed,
)
from .calculator_contracts import (
    check_determinism,
    check_energy_decomposition,
    check_far_apart_additivity,
    check_finite_difference_forces,
    check_finite_difference_stress,
    check_isolated_atom,
    check_periodic_image_invariance,
    check_permutation_equivariance,
    check_reflection_equivariance,
    check_rotation_equivariance,
    check_smooth_cutoff,
    check_translation_invariance,
)
from .model_contracts import (
    check_batch_consistency,
    check_isolated_atoms_e0,
    check_model_determinism,
    check_multihead_consistency,
    check_save_load_roundtrip,
    model_calculator_factory,
    scaled_heads,
)
from .adaptation_contracts import check_adaptive_md, check_ttt_adapts_only_early_blocks
from .data import random_cluster, toy_frames, toy_prior
from .suite import default_molecules, default_periodic, run_all_contracts

__all__ = [
    "CalculatorFactory", "Prediction", "Tolerances", "tolerances",
    "FiniteDifferences", "finite_differences", "evaluate", "assert_close",
    "random_rotation", "transformed", "sheared_rattled_supercell", "far_apart",
    "check_rotation_equivariance", "check_reflection_equivariance", "check_translation_invariance",
    "check_permutation_equivariance", "check_finite_difference_forces", "check_finite_difference_stress",
    "check_energy_decomposition", "check_isolated_atom", "check_far_apart_additivity",
    "check_smooth_cutoff", "check_periodic_image_invariance", "check_determinism",
    "check_isolated_atoms_e0", "check_multihead_consistency", "check_batch_consistency",
    "check_save_load_roundtrip", "check_model_determinism", "model_calculator_factory", "scaled_heads",
    "check_ttt_adapts_only_early_blocks", "check_adaptive_md",
    "random_cluster", "toy_frames", "toy_prior",
    "default_molecules", "default_periodic", "run_all_contracts", "CalculatorContract",
]


def __getattr__(name: str) -> Any:
    if name == "CalculatorContract":
        from .contract_class import CalculatorContract

        return CalculatorContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
