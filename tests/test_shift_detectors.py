"""Shift detectors fire on planted shifts and stay quiet in distribution; radius refinement."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from ase_adapt.shift import DetectorSettings, RadiusSettings, detect_shift, refine_radius
from ase_adapt.shift.spectrum import average_spectrum, laplacian_spectrum, spectral_distance
from ase_adapt.shift.stats import distribution, mean_force_norm

CUTOFF = 2.0


def _rattled(name: str, n: int, std: float = 0.02, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = molecule(name)
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(0, std, a.positions.shape)
        out.append(a)
    return out


@pytest.fixture(scope="module")
def training():
    """Statistics of rattled ethanol frames, prior forces of known size."""
    frames = _rattled("CH3CH2OH", 20, std=0.08)
    rng = np.random.default_rng(2)
    prior_forces = [rng.normal(0, 1.0, (len(a), 3)) for a in frames]
    spectra = [laplacian_spectrum(a, CUTOFF) for a in frames]
    mean = average_spectrum(spectra)
    stats = {
        "elements": [1, 6, 8], "cutoff": CUTOFF,
        "prior_force_norm_by_head": {"prior": distribution([mean_force_norm(f) for f in prior_forces])},
        "spectrum_mean": mean,
        "spectral_distance": distribution([spectral_distance(s, mean) for s in spectra]),
    }
    return frames, prior_forces, stats


def _typical(training):
    """The training frame closest to the mean spectral distance (an unremarkable member)."""
    frames, forces, stats = training
    d = [spectral_distance(laplacian_spectrum(a, CUTOFF), stats["spectrum_mean"]) for a in frames]
    k = int(np.argmin(np.abs(np.array(d) - stats["spectral_distance"]["mean"])))
    return frames[k], forces[k], stats


def test_quiet_in_distribution(training):
    atoms, forces, stats = _typical(training)
    f = forces / mean_force_norm(forces) * stats["prior_force_norm_by_head"]["prior"]["mean"]  # a typical force norm
    report = detect_shift(atoms, stats, prior_forces=f)
    assert not report.shifted, report.summary()
    assert set(report.detectors) == {"elements", "force_norm", "connectivity"}


def test_element_shift_fires(training):
    atoms, forces, stats = _typical(training)
    atoms = atoms.copy()
    atoms[0].symbol = "N"
    report = detect_shift(atoms, stats, prior_forces=forces)
    assert report.detectors["elements"].shifted and "N" in report.detectors["elements"].detail


def test_force_norm_shift_fires_both_ways(training):
    atoms, forces, stats = _typical(training)
    mean = stats["prior_force_norm_by_head"]["prior"]["mean"]
    for factor in (10.0, 0.01):
        f = forces / mean_force_norm(forces) * mean * factor
        report = detect_shift(atoms, stats, prior_forces=f)
        assert report.detectors["force_norm"].shifted and report.reasons == ["force_norm"]
    missing = detect_shift(atoms, stats)
    assert missing.detectors["force_norm"].score is None and not missing.shifted


def test_connectivity_shift_fires_on_a_compressed_molecule(training):
    atoms, forces, stats = _typical(training)
    squeezed = atoms.copy()
    squeezed.positions *= 0.6  # every atom within the cutoff of every other
    report = detect_shift(squeezed, stats, settings=DetectorSettings(force_norm=False))
    assert report.detectors["connectivity"].shifted and report.detectors["connectivity"].score > 1


def test_zero_spread_statistics_use_the_floor(training):
    atoms, _, stats = _typical(training)
    flat = {**stats, "spectral_distance": {"mean": 0.0, "std": 1e-32}}
    d = spectral_distance(laplacian_spectrum(atoms, CUTOFF), stats["spectrum_mean"])
    z = detect_shift(atoms, flat, settings=DetectorSettings(force_norm=False)).detectors["connectivity"].score
    assert z == pytest.approx(d / 0.01) and np.isfinite(z)


def test_radius_refinement_returns_the_training_cutoff_for_training_like_graphs(training):
    frames, _, _ = training
    ethanol = frames
    spectra = [laplacian_spectrum(a, CUTOFF) for a in ethanol]
    stats = {"cutoff": CUTOFF, "spectrum_mean": average_spectrum(spectra)}
    rr = refine_radius(ethanol[0], stats)
    assert rr.radius == CUTOFF and rr.candidates[-1] == CUTOFF and len(rr.candidates) == 10
    # a larger molecule: RR picks a radius whose graph is closer, never a farther one
    big = molecule("C6H6")
    rr = refine_radius(big, stats, RadiusSettings(n_candidates=6, r_min=1.2))
    assert min(rr.distances) == rr.distances[rr.candidates.index(rr.radius)] <= rr.distances[-1]
    with pytest.raises(ValueError, match="ase-adapt stats"):
        refine_radius(big, {})
