"""Distribution-shift detectors: elements, force norm, connectivity (DESIGN.md §Shift criteria).

A system is out of distribution (OOD) if any enabled detector fires:

1. **elements**: it holds an element absent from the training statistics;
2. **force norm**: the prior's mean per-atom force norm lies more than ``k_force`` standard
   deviations from the training distribution of that quantity (|z| > k). The prior's force
   norm is used at run time because prior and reference force norms are highly correlated and
   the reference is what we do not have;
3. **connectivity**: the spectral distance of the system's radius graph to the average training
   spectrum lies more than ``k_spectral`` standard deviations above the training distances' mean
   (z > k). Above ``dense_max`` atoms the spectrum is the KPM estimate (seconds for 10^4 atoms).

Every detector reports its score, threshold and verdict in a :class:`ShiftReport`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from .._settings import check_types
from .. import _keys as K
from .spectrum import SpectrumMethod, laplacian_spectrum, spectral_distance
from .stats import mean_force_norm

__all__ = ["DetectorSettings", "DetectorResult", "ShiftReport", "detect_shift"]


@dataclass(frozen=True)
class DetectorSettings:
    elements: bool = True
    force_norm: bool = True
    connectivity: bool = True
    k_force: float = 1.0
    k_spectral: float = 1.0
    spectrum_method: SpectrumMethod = SpectrumMethod.AUTO  # a string ("auto", "dense", ...) is converted
    dense_max: int = 2000
    # Floors on the training standard deviations: a training set whose graphs never change (a
    # rattled crystal) has sigma ~ 0, and any difference, KPM noise included, would be "infinitely"
    # shifted. The spectral floor is about the KPM estimate's error; the force floor 10 meV/Å.
    min_std_spectral: float = 0.01
    min_std_force: float = 0.01

    def __post_init__(self) -> None:
        check_types(self)
        if self.k_force <= 0 or self.k_spectral <= 0:
            raise ValueError("detector thresholds k_force and k_spectral must be > 0")
        if self.min_std_spectral < 0 or self.min_std_force < 0:
            raise ValueError("standard-deviation floors must be >= 0")


@dataclass
class DetectorResult:
    """One detector's verdict: ``score`` compared with ``threshold`` (None: could not run)."""

    name: str
    score: float | None
    threshold: float
    shifted: bool
    detail: str = ""


@dataclass
class ShiftReport:
    """Every detector's result, plus what was done about the system (radius, element mapping)."""

    detectors: dict[str, DetectorResult] = field(default_factory=dict)
    radius: float | None = None            # graph radius chosen by radius refinement (None: not run)
    radius_detail: dict[str, Any] | None = None
    unknown_elements: dict[str, str] = field(default_factory=dict)  # symbol -> mapped symbol
    n_atoms: int = 0
    seconds: float = 0.0

    @property
    def shifted(self) -> bool:
        return any(d.shifted for d in self.detectors.values())

    @property
    def reasons(self) -> list[str]:
        return [name for name, d in self.detectors.items() if d.shifted]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shifted"] = self.shifted
        out["reasons"] = self.reasons
        return out

    def summary(self) -> str:
        lines = [f"shift report ({self.n_atoms} atoms): {'SHIFTED (' + ', '.join(self.reasons) + ')' if self.shifted else 'in distribution'}"]
        for d in self.detectors.values():
            score = "n/a" if d.score is None else f"{d.score:.3g}"
            lines.append(f"  {d.name:<13} score {score:>9}  threshold {d.threshold:.3g}  "
                         f"{'shifted' if d.shifted else 'ok':<8} {d.detail}")
        if self.unknown_elements:
            lines.append("  unknown elements mapped: " + ", ".join(f"{k}->{v}" for k, v in self.unknown_elements.items()))
        if self.radius is not None:
            lines.append(f"  refined radius {self.radius:.3f} Å")
        return "\n".join(lines)


def _dist(stats: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    d = stats.get(key)
    if not isinstance(d, Mapping) or d.get("mean") is None or d.get("std") is None:
        return None
    return float(d["mean"]), float(d["std"])


def _z(value: float, mean: float, std: float, floor: float) -> float:
    std = max(std, floor)
    if std > 0:
        return (value - mean) / std
    return 0.0 if value == mean else float(np.sign(value - mean)) * np.inf


def detect_shift(
    atoms: Atoms,
    stats: Mapping[str, Any],
    *,
    prior_forces: np.ndarray | None = None,
    prior_head: str | None = None,
    cutoff: float | None = None,
    settings: DetectorSettings | None = None,
) -> ShiftReport:
    """Run the enabled detectors on ``atoms`` against the training statistics ``stats``.

    ``prior_forces`` are the prior's forces on ``atoms`` (the force-norm detector reports
    "n/a" without them), compared with the training force norms of ``prior_head``'s labels
    (default: the generic prior labels); ``cutoff`` defaults to the statistics' cutoff.
    """
    s = settings or DetectorSettings()
    t0 = time.perf_counter()
    report = ShiftReport(n_atoms=len(atoms))
    if s.elements:
        known = {int(z) for z in stats.get("elements", [])}
        unknown = sorted({int(z) for z in atoms.numbers} - known)
        report.detectors["elements"] = DetectorResult(
            "elements", float(len(unknown)), 0.0, bool(unknown),
            ("unseen: " + " ".join(chemical_symbols[z] for z in unknown)) if unknown else "",
        )
    if s.force_norm:
        per_head = stats.get("prior_force_norm_by_head") or {}
        dist = _dist(per_head, prior_head if prior_head in per_head else K.PRIOR_HEAD)
        if dist is None or prior_forces is None:
            why = "no prior force-norm statistics" if dist is None else "no prior forces"
            report.detectors["force_norm"] = DetectorResult("force_norm", None, s.k_force, False, why)
        else:
            value = mean_force_norm(prior_forces)
            z = _z(value, *dist, s.min_std_force)
            report.detectors["force_norm"] = DetectorResult(
                "force_norm", abs(z), s.k_force, bool(abs(z) > s.k_force),
                f"prior <|F|> {value:.3g} eV/Å vs training {dist[0]:.3g} ± {dist[1]:.3g}",
            )
    if s.connectivity:
        dist = _dist(stats, "spectral_distance")
        reference = stats.get("spectrum_mean")
        radius = float(cutoff or stats.get("cutoff") or 0.0)
        if dist is None or reference is None or radius <= 0:
            report.detectors["connectivity"] = DetectorResult("connectivity", None, s.k_spectral, False,
                                                              "no spectral statistics")
        else:
            spectrum = laplacian_spectrum(atoms, radius, method=s.spectrum_method, dense_max=s.dense_max)
            d = spectral_distance(spectrum, np.asarray(reference))
            z = _z(d, *dist, s.min_std_spectral)
            report.detectors["connectivity"] = DetectorResult(
                "connectivity", z, s.k_spectral, bool(z > s.k_spectral),
                f"spectral distance {d:.3g} vs training {dist[0]:.3g} ± {dist[1]:.3g} at {radius:.2f} Å",
            )
    report.seconds = time.perf_counter() - t0
    return report
