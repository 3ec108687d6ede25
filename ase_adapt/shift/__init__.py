"""Distribution-shift room: normalized-Laplacian spectra and training statistics, on which the
shift detectors and radius refinement build (see docs/statistics.md)."""

from .spectrum import (
    SpectrumMethod,
    adjacency,
    average_spectrum,
    laplacian_spectrum,
    normalized_laplacian,
    spectral_distance,
)
from .stats import (
    MissingStatisticsError,
    TrainingStats,
    attach_training_stats,
    compute_training_stats,
    prior_label_keys,
)

__all__ = [
    "SpectrumMethod", "adjacency", "normalized_laplacian", "laplacian_spectrum",
    "spectral_distance", "average_spectrum",
    "MissingStatisticsError", "TrainingStats", "attach_training_stats", "compute_training_stats",
    "prior_label_keys",
]
