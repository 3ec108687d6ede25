"""Radius refinement (RR): choose the graph radius whose connectivity looks most like training.

Candidates are ``n_candidates`` radii evenly spaced from ``r_min`` up to the training cutoff,
which is always one of them; the chosen radius minimises the spectral distance of the system's
radius graph to the average training spectrum (ties go to the larger radius). Since the
training cutoff is a candidate, RR never does worse than no RR on that criterion. The model's
radial envelope follows the graph radius, so forces stay smooth at the refined cutoff.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from .._settings import check_types
from .spectrum import SpectrumMethod, laplacian_spectrum, spectral_distance

__all__ = ["RadiusSettings", "RadiusResult", "refine_radius"]


@dataclass(frozen=True)
class RadiusSettings:
    n_candidates: int = 10
    r_min: float | None = None      # Å; default r_min_fraction * training cutoff
    r_min_fraction: float = 0.6
    spectrum_method: SpectrumMethod = SpectrumMethod.AUTO  # a string ("auto", "dense", ...) is converted
    dense_max: int = 2000

    def __post_init__(self) -> None:
        check_types(self)
        if self.n_candidates < 1:
            raise ValueError("n_candidates must be >= 1")
        if not 0 < self.r_min_fraction <= 1:
            raise ValueError("r_min_fraction must be in (0, 1]")


@dataclass
class RadiusResult:
    radius: float
    training_cutoff: float
    candidates: list[float]
    distances: list[float]

    @property
    def improvement(self) -> float:
        """Spectral distance at the training cutoff minus at the chosen radius (>= 0)."""
        return self.distances[-1] - min(self.distances)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def refine_radius(
    atoms: Atoms,
    stats: Mapping[str, Any],
    settings: RadiusSettings | None = None,
    *,
    training_cutoff: float | None = None,
) -> RadiusResult:
    """The candidate radius with the smallest spectral distance to the training average."""
    s = settings or RadiusSettings()
    r_train = float(training_cutoff or stats.get("cutoff") or 0.0)
    reference = stats.get("spectrum_mean")
    if r_train <= 0 or reference is None:
        raise ValueError("radius refinement needs training statistics with 'cutoff' and 'spectrum_mean' "
                         "(compute them with `ase-adapt stats`)")
    r_min = s.r_min if s.r_min is not None else s.r_min_fraction * r_train
    if not 0 < r_min <= r_train:
        raise ValueError(f"r_min must be in (0, {r_train}], got {r_min}")
    candidates = [float(r) for r in np.linspace(r_min, r_train, s.n_candidates)] if s.n_candidates > 1 else [r_train]
    candidates[-1] = r_train  # exactly the training cutoff, whatever linspace rounds to
    reference = np.asarray(reference, dtype=np.float64)
    distances = [
        spectral_distance(laplacian_spectrum(atoms, r, method=s.spectrum_method, dense_max=s.dense_max), reference)
        for r in candidates
    ]
    best = min(range(len(candidates)), key=lambda k: (distances[k], -candidates[k]))
    return RadiusResult(candidates[best], r_train, candidates, distances)
