"""Normalized-Laplacian spectra: known graphs, invariances, padding, KPM against the exact result."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from ase import Atoms
from ase.build import bulk, molecule

from ase_adapt.shift.spectrum import (
    adjacency,
    average_spectrum,
    kpm_spectrum,
    laplacian_spectrum,
    normalized_laplacian,
    pad_spectra,
    spectral_distance,
    spectrum_from_adjacency,
)


def chain(n: int, spacing: float = 1.0) -> Atoms:
    return Atoms(f"H{n}", positions=[[k * spacing, 0.0, 0.0] for k in range(n)])


def ring(n: int, bond: float = 1.0) -> Atoms:
    radius = bond / (2 * np.sin(np.pi / n))
    phi = 2 * np.pi * np.arange(n) / n
    return Atoms(f"H{n}", positions=np.c_[radius * np.cos(phi), radius * np.sin(phi), np.zeros(n)])


def test_two_atom_molecule_has_spectrum_zero_and_two() -> None:
    spec = laplacian_spectrum(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), cutoff=1.0)
    np.testing.assert_allclose(spec, [0.0, 2.0], atol=1e-12)
    assert spec[0] == 0.0


def test_path_graph_matches_analytical_eigenvalues() -> None:
    n = 7  # spacing 1, cutoff 1.5: nearest neighbours only
    expected = 1 - np.cos(np.pi * np.arange(n) / (n - 1))
    np.testing.assert_allclose(laplacian_spectrum(chain(n), 1.5), np.sort(expected), atol=1e-12)


def test_ring_matches_analytical_eigenvalues() -> None:
    n = 8
    expected = 1 - np.cos(2 * np.pi * np.arange(n) / n)
    np.testing.assert_allclose(laplacian_spectrum(ring(n), 1.2), np.sort(expected), atol=1e-12)


def test_complete_graph_and_isolated_atoms() -> None:
    tetra = Atoms("H4", positions=[[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    np.testing.assert_allclose(laplacian_spectrum(tetra, 3.0), [0, 4 / 3, 4 / 3, 4 / 3], atol=1e-12)
    # every component, isolated atoms included (L_ii = 0), contributes one exact zero
    gas = Atoms("H2He", positions=[[0, 0, 0], [0, 0, 0.74], [10, 0, 0]])
    np.testing.assert_allclose(laplacian_spectrum(gas, 1.0), [0.0, 0.0, 2.0], atol=1e-12)
    assert np.all(laplacian_spectrum(Atoms("H3", positions=np.eye(3) * 5), 1.0) == 0.0)
    lap = normalized_laplacian(sp.csr_matrix((2, 2)))
    assert lap.toarray().tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_adjacency_is_binary_symmetric_without_self_loops_in_a_small_cell() -> None:
    si = bulk("Si", "diamond", 5.43)  # 2 atoms, cell vectors 3.84 Å < cutoff: many images
    adj = adjacency(si, 5.0)
    assert adj.shape == (2, 2) and adj.diagonal().sum() == 0
    assert (adj != adj.T).nnz == 0 and set(adj.data.tolist()) == {1}
    np.testing.assert_allclose(laplacian_spectrum(si, 5.0), [0.0, 2.0], atol=1e-12)


def test_periodic_cell_spectrum_is_valid() -> None:
    si = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)
    si.rattle(0.05, seed=1)
    spec = laplacian_spectrum(si, 5.0)
    assert spec.shape == (64,) and spec[0] == 0.0 and spec[1] > 1e-6  # one component
    assert np.all(np.diff(spec) >= 0) and spec[-1] <= 2.0
    # a whole-lattice-vector shift of one atom changes nothing
    moved = si.copy()
    moved.positions[3] += si.cell[0] - 2 * si.cell[2]
    np.testing.assert_allclose(laplacian_spectrum(moved, 5.0), spec, atol=1e-10)


def test_invariance_to_permutation_rotation_and_translation() -> None:
    atoms = molecule("CH3CH2OH")
    ref = laplacian_spectrum(atoms, 2.0)
    other = atoms[np.random.default_rng(0).permutation(len(atoms))]
    other.rotate(73, (1, 2, 3), center="COP")
    other.translate([3.0, -1.0, 7.5])
    np.testing.assert_allclose(laplacian_spectrum(other, 2.0), ref, atol=1e-10)


def test_spectral_distance_zero_to_itself_symmetric_and_padded() -> None:
    a = laplacian_spectrum(chain(4), 1.5)
    b = laplacian_spectrum(ring(6), 1.2)
    assert spectral_distance(a, a) == 0.0
    assert spectral_distance(a, b) == pytest.approx(spectral_distance(b, a))
    padded = np.r_[a, 0.0, 0.0]
    assert spectral_distance(a, padded) == 0.0  # trailing zeros are padding
    assert spectral_distance(a, b) == pytest.approx(np.sum((np.r_[a, 0, 0] - b) ** 2))
    assert spectral_distance([], []) == 0.0
    assert spectral_distance([], [1.0, 2.0]) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        spectral_distance(np.zeros((2, 2)), a)
    with pytest.raises(ValueError):
        spectral_distance([np.nan], a)


def test_average_spectrum_pads_to_the_longest() -> None:
    avg = average_spectrum([[0.0, 2.0], [0.0, 1.0, 1.5, 1.5]])
    np.testing.assert_allclose(avg, [0.0, 1.5, 0.75, 0.75])
    assert pad_spectra([[1.0]], length=3).tolist() == [[1.0, 0.0, 0.0]]
    with pytest.raises(ValueError):
        average_spectrum([])


def test_kpm_is_exact_on_components_and_deterministic() -> None:
    two = Atoms("H4", positions=[[0, 0, 0], [0, 0, 0.74], [9, 0, 0], [9, 0, 0.74]])
    kpm = laplacian_spectrum(two, 1.0, method="kpm", num_moments=64, num_vectors=4)
    assert kpm[:2].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(kpm[2:], [2.0, 2.0], atol=0.02)
    adj = adjacency(bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2), 4.0)
    np.testing.assert_array_equal(kpm_spectrum(adj, seed=3), kpm_spectrum(adj, seed=3))


def test_auto_switches_to_kpm_above_dense_max() -> None:
    atoms = ring(30)
    exact = laplacian_spectrum(atoms, 1.2, dense_max=100)
    kpm = laplacian_spectrum(atoms, 1.2, dense_max=10)
    np.testing.assert_array_equal(kpm, spectrum_from_adjacency(adjacency(atoms, 1.2), method="kpm"))
    assert not np.array_equal(exact, kpm) and spectral_distance(exact, kpm) < 0.05


def test_kpm_estimate_is_close_to_dense_relative_to_training_distances() -> None:
    """216-atom Si frames over an equation-of-state range (a0 5.2-5.7 Å, 3rd shell crossing the
    4.6 Å cutoff), rattled 0.1 Å: the KPM error (default settings) is a small fraction of the
    frames' spectral distances to their average spectrum."""
    frames = []
    for k, a0 in enumerate(np.linspace(5.2, 5.7, 6)):
        si = bulk("Si", "diamond", a0, cubic=True) * (3, 3, 3)
        si.rattle(0.1, seed=k)
        frames.append(si)
    dense = [laplacian_spectrum(f, 4.6, method="dense") for f in frames]
    mean = average_spectrum(dense)
    training = np.array([spectral_distance(s, mean) for s in dense])
    errors = np.array([spectral_distance(laplacian_spectrum(f, 4.6, method="kpm"), s) for f, s in zip(frames, dense)])
    assert errors.max() < 0.2 * training.mean(), (errors, training)
    assert errors.mean() < 0.1 * training.mean(), (errors, training)
