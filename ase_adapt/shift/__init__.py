"""Distribution-shift room: normalized-Laplacian spectra, training statistics, the shift
detectors and radius refinement (see docs/statistics.md and docs/adaptive.md)."""

from .spectrum import (
    SpectrumMethod,
    adjacency,
    average_spectrum,
    laplacian_spectrum,
    normalized_laplacian,
    spectral_distance,
)
from .detectors import DetectorResult, DetectorSettings, ShiftReport, detect_shift
from .radius import RadiusResult, RadiusSettings, refine_radius
from .stats import (
    MissingStatisticsError,
    TrainingStats,
    attach_training_stats,
    compute_training_stats,
)

__all__ = [
    "SpectrumMethod", "adjacency", "normalized_laplacian", "laplacian_spectrum",
    "spectral_distance", "average_spectrum",
    "MissingStatisticsError", "TrainingStats", "attach_training_stats", "compute_training_stats",
    "DetectorSettings", "DetectorResult", "ShiftReport", "detect_shift",
    "RadiusSettings", "RadiusResult", "refine_radius",
]
