"""The label-free guard: is an adaptation safe to use? Decided without any reference label.

After TTT, before an adapted prediction is returned, three signals are checked on the held-out
prior samples (structures the TTT steps never fitted):

1. the prior head's held-out loss fell (``max_prior_loss_ratio``);
2. the main head's forces came clearly closer to the prior's: the RMS distance between adapted
   main-head forces and prior forces may not exceed ``max_prior_distance_ratio`` (0.9) times the
   unadapted distance. An adaptation that does not carry the prior's information into the main
   head is not worth its risk (on the validation molecules every TTT that raised the force
   error, all against LJ, left this ratio above 0.91), and one that moves the main head away
   from the prior is damage;
3. the main head's forces did not jump: the RMS change may not exceed ``max_move_ratio`` times
   the unadapted main-prior distance (a representation distorted to fit the prior moves the
   main head far from both, as in the 8.5x blow-up that motivated this guard).

A failed check rolls the adaptation back; the verdict says which signal failed and by how much.
The thresholds are chosen on the validation molecules (``benchmarks/validation_ttt.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._settings import check_types

__all__ = ["GuardSettings", "GuardVerdict", "check_adaptation", "rms"]


@dataclass(frozen=True)
class GuardSettings:
    max_prior_loss_ratio: float = 0.98     # held-out prior loss after / before must be at most this
    max_prior_distance_ratio: float = 0.9  # RMS|F_main' - F_prior| / RMS|F_main - F_prior|
    max_move_ratio: float = 1.5            # RMS|F_main' - F_main| / RMS|F_main - F_prior|

    def __post_init__(self) -> None:
        check_types(self)
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"guard threshold {name} must be > 0, got {value}")


@dataclass
class GuardVerdict:
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    prior_loss_ratio: float = math.nan
    prior_distance_ratio: float = math.nan
    move_ratio: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if np.size(x) else 0.0


def check_adaptation(settings: GuardSettings, *, prior_loss_before: float, prior_loss_after: float,
                     main_before: np.ndarray, main_after: np.ndarray, prior_forces: np.ndarray) -> GuardVerdict:
    """Verdict on one adaptation from held-out prior losses and main-head forces [N, 3] (eV/Å)."""
    s = settings
    base_distance = max(rms(main_before - prior_forces), 1e-6)
    v = GuardVerdict(
        accepted=True,
        prior_loss_ratio=prior_loss_after / prior_loss_before if prior_loss_before > 0 else math.inf,
        prior_distance_ratio=rms(main_after - prior_forces) / base_distance,
        move_ratio=rms(main_after - main_before) / base_distance,
    )
    if not v.prior_loss_ratio <= s.max_prior_loss_ratio:
        v.reasons.append(f"held-out prior loss ratio {v.prior_loss_ratio:.3g} > {s.max_prior_loss_ratio:g}")
    if not v.prior_distance_ratio <= s.max_prior_distance_ratio:
        v.reasons.append(f"main-head forces did not come closer to the prior: distance ratio "
                         f"{v.prior_distance_ratio:.3g} > {s.max_prior_distance_ratio:g}")
    if not v.move_ratio <= s.max_move_ratio:
        v.reasons.append(f"main-head forces jumped: change {v.move_ratio:.3g}x the main-prior distance "
                         f"> {s.max_move_ratio:g}")
    v.accepted = not v.reasons
    return v
