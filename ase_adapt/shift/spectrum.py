"""Normalized-Laplacian spectra of radius graphs: the connectivity-shift criterion.

A structure's radius graph at cutoff r_c has adjacency A (binary, symmetric) and degrees D. Its
normalized Laplacian ``L = I - D^-1/2 A D^-1/2`` has eigenvalues in [0, 2]; the number of exact
zeros is the number of connected components, and the rest describes how the atoms are wired
together independently of positions, orientation and atom order. The *spectral distance* between
two sorted spectra, zero-padded at the end to a common length, is ``sum_k (lam_ref_k - lam_k)^2``.

Conventions (kept identical everywhere, training statistics and run time alike):

- Periodic images are collapsed onto atom pairs: atoms i and j are adjacent when any image of j
  lies within the cutoff of i, however many images do. An atom's own periodic image (a cell
  shorter than the cutoff) is *not* an edge: the graph has no self loops.
- An isolated atom (degree 0) gets ``L_ii = 0`` (Chung's and networkx's convention), so that
  every connected component, isolated atoms included, contributes exactly one zero eigenvalue
  and a structure without edges has the all-zero spectrum, the same as zero padding.
  ``L_ii = 1`` would instead make an isolated atom look like a mid-spectrum mode.

Spectra of up to ``dense_max`` atoms are exact (``numpy.linalg.eigvalsh``). Larger graphs use the
kernel polynomial method (KPM): Chebyshev moments of the sparse L with Jackson damping, traces
estimated with Rademacher vectors (fixed seed) after projecting out the exactly known null space,
the smoothed eigenvalue density integrated in closed form to a CDF and inverted at
``(k + 0.5) / n``. This costs O(moments x vectors x edges) and returns a sorted spectrum of the
full length n, so run-time distances stay in the units of the training distances.
"""

from __future__ import annotations

import enum
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from ase import Atoms
from scipy.sparse.csgraph import connected_components

from ..graph import neighbour_list

__all__ = [
    "SpectrumMethod",
    "adjacency",
    "normalized_laplacian",
    "spectrum_from_adjacency",
    "laplacian_spectrum",
    "kpm_spectrum",
    "spectral_distance",
    "average_spectrum",
    "pad_spectra",
]


class SpectrumMethod(str, enum.Enum):
    AUTO = "auto"  # dense up to dense_max atoms, KPM above
    DENSE = "dense"
    KPM = "kpm"


# Rescaling margin: Chebyshev polynomials need the spectrum inside [-1, 1].
_MARGIN = 1e-6
_CHUNK = 32  # random vectors per block of sparse products


def adjacency(atoms: Atoms, cutoff: float) -> sp.csr_matrix:
    """Binary symmetric adjacency (CSR, int8) of the radius graph of ``atoms`` at ``cutoff``.

    Built from :func:`ase_adapt.graph.neighbour_list`; periodic images collapse onto atom pairs
    and self-image edges are dropped (no self loops).
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    n = len(atoms)
    if n == 0:
        return sp.csr_matrix((0, 0), dtype=np.int8)
    i, j, _, _ = neighbour_list(atoms, cutoff)
    keep = i != j
    return _binary_symmetric(i[keep], j[keep], n)


def _binary_symmetric(i: np.ndarray, j: np.ndarray, n: int) -> sp.csr_matrix:
    a = sp.coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n)).tocsr()
    a = (a + a.T).tocsr()  # full lists are symmetric already; this guards half lists
    a.data[:] = 1  # duplicates (several images of one neighbour) summed: back to binary
    a.setdiag(0)
    a.eliminate_zeros()
    a.sort_indices()
    return a.astype(np.int8)


def normalized_laplacian(adj: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
    """``L = I - D^-1/2 A D^-1/2`` (float64 CSR), with ``L_ii = 0`` for an isolated node."""
    a = sp.csr_matrix(adj, dtype=np.float64)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {a.shape}")
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    connected = deg > 0
    inv_sqrt[connected] = 1.0 / np.sqrt(deg[connected])
    dh = sp.diags(inv_sqrt)
    eye = sp.diags(connected.astype(np.float64))
    return (eye - dh @ a @ dh).tocsr()


def _null_space_basis(adj: sp.csr_matrix) -> tuple[int, sp.csr_matrix]:
    """(number of components c, [n, c] orthonormal basis of ker L as a sparse matrix).

    For a component C with edges the null vector is D^1/2 1_C; for an isolated atom (L_ii = 0)
    it is the unit vector e_i.
    """
    n = adj.shape[0]
    c, labels = connected_components(adj, directed=False)
    deg = np.asarray(adj.sum(axis=1), dtype=np.float64).ravel()
    w = np.where(deg > 0, np.sqrt(deg), 1.0)
    norms = np.sqrt(np.bincount(labels, weights=w * w, minlength=c))
    basis = sp.csr_matrix((w / norms[labels], (np.arange(n), labels)), shape=(n, c))
    return int(c), basis


def _chebyshev_moments(h: sp.csr_matrix, z: np.ndarray, num_moments: int) -> np.ndarray:
    """sum over the columns of z of z^T T_m(h) z, m < num_moments, by the doubling trick.

    mu_2k = 2<v_k, v_k> - mu_0 and mu_2k+1 = 2<v_k+1, v_k> - mu_1 with v_k = T_k(h) z: about
    num_moments / 2 sparse products instead of num_moments.
    """
    half = (num_moments + 1) // 2
    mu = np.zeros(2 * half + 1)
    v_prev, v = z, h @ z
    mu[0] = np.vdot(z, z)
    mu[1] = np.vdot(v, z)
    for k in range(1, half + 1):
        mu[2 * k] = 2.0 * np.vdot(v, v) - mu[0]
        if 2 * k + 1 < len(mu):
            v_next = 2.0 * (h @ v) - v_prev
            mu[2 * k + 1] = 2.0 * np.vdot(v_next, v) - mu[1]
            v_prev, v = v, v_next
    return mu[:num_moments]


def _jackson(m: int) -> np.ndarray:
    k = np.arange(m)
    a = np.pi / (m + 1)
    return ((m - k + 1) * np.cos(a * k) + np.sin(a * k) / np.tan(a)) / (m + 1)


def kpm_spectrum(
    adj: sp.spmatrix,
    *,
    num_moments: int = 512,
    num_vectors: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Estimated sorted normalized-Laplacian spectrum (length n) of a sparse adjacency by KPM.

    The c = #components zero eigenvalues are placed exactly; the other n - c are the quantiles
    ``Q((k + 0.5) / (n - c))`` of the Jackson-damped KPM density of L restricted to the
    complement of its null space. Deterministic for a given ``seed``.
    """
    if num_moments < 2 or num_vectors < 1:
        raise ValueError("need num_moments >= 2 and num_vectors >= 1")
    a = sp.csr_matrix(adj, dtype=np.float64)
    n = a.shape[0]
    if n == 0:
        return np.zeros(0)
    c, basis = _null_space_basis(a)
    m_rest = n - c
    if m_rest == 0:
        return np.zeros(n)
    lap = normalized_laplacian(a)
    scale = 1.0 + _MARGIN
    h = ((lap - sp.identity(n, format="csr")) / scale).tocsr()  # spectrum inside [-1, 1]

    rng = np.random.default_rng(seed)
    mu = np.zeros(num_moments)
    for start in range(0, num_vectors, _CHUNK):  # bounded memory for very large graphs
        z = rng.integers(0, 2, size=(n, min(_CHUNK, num_vectors - start))) * 2.0 - 1.0  # Rademacher
        z -= basis @ (basis.T @ z)  # project out ker L: the moments then cover the n - c others
        mu += _chebyshev_moments(h, z, num_moments)
    mu = mu[:num_moments] / mu[0]  # ratio estimator: the density integrates to exactly 1

    g = _jackson(num_moments) * mu
    # CDF(x = cos t) = g_0 (pi - t)/pi - (2/pi) sum_m g_m sin(m t)/m: the closed-form integral of
    # the KPM density (1/(pi sqrt(1-x^2))) (g_0 + 2 sum_m g_m T_m(x)) from -1 to x.
    theta = np.linspace(np.pi, 0.0, max(16 * num_moments, 4096))
    m = np.arange(1, num_moments)
    cdf = g[0] * (np.pi - theta) / np.pi - (2.0 / np.pi) * (np.sin(np.outer(theta, m)) @ (g[1:] / m))
    # stochastic moments can make the estimate wiggle: keep a proper, strictly increasing CDF
    cdf = np.maximum.accumulate(np.clip(cdf, 0.0, 1.0)) + 1e-12 * np.arange(len(theta))
    x = np.cos(theta)
    q = (np.arange(m_rest) + 0.5) / m_rest
    lam = np.clip(1.0 + scale * np.interp(q, cdf, x), 0.0, 2.0)
    return np.concatenate([np.zeros(c), np.sort(lam)])


def _dense_spectrum(adj: sp.spmatrix) -> np.ndarray:
    n = adj.shape[0]
    if n == 0:
        return np.zeros(0)
    lam = np.clip(np.linalg.eigvalsh(normalized_laplacian(adj).toarray()), 0.0, 2.0)
    c, _ = connected_components(adj, directed=False)
    lam[:c] = 0.0  # exactly c zeros in theory; rounding leaves ~1e-16
    return lam


def spectrum_from_adjacency(
    adj: sp.spmatrix | np.ndarray,
    *,
    method: SpectrumMethod | str = SpectrumMethod.AUTO,
    dense_max: int = 2000,
    seed: int = 0,
    num_moments: int = 512,
    num_vectors: int = 64,
) -> np.ndarray:
    """Sorted (ascending) normalized-Laplacian eigenvalues of a graph, exact or KPM-estimated."""
    method = SpectrumMethod(method)
    a = sp.csr_matrix(adj)
    if method is SpectrumMethod.DENSE or (method is SpectrumMethod.AUTO and a.shape[0] <= dense_max):
        return _dense_spectrum(a)
    return kpm_spectrum(a, num_moments=num_moments, num_vectors=num_vectors, seed=seed)


def laplacian_spectrum(
    atoms: Atoms,
    cutoff: float,
    *,
    method: SpectrumMethod | str = "auto",
    dense_max: int = 2000,
    seed: int = 0,
    num_moments: int = 512,
    num_vectors: int = 64,
) -> np.ndarray:
    """Sorted normalized-Laplacian spectrum (length ``len(atoms)``) of the radius graph.

    ``method="auto"``: exact up to ``dense_max`` atoms, the KPM estimate above (seconds for
    10,000 atoms); see :func:`kpm_spectrum` for ``num_moments``, ``num_vectors`` and ``seed``.
    """
    return spectrum_from_adjacency(
        adjacency(atoms, cutoff), method=method, dense_max=dense_max, seed=seed,
        num_moments=num_moments, num_vectors=num_vectors,
    )


def _as_spectrum(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D spectrum, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def pad_spectra(spectra: Sequence[Sequence[float] | np.ndarray], length: int | None = None) -> np.ndarray:
    """Stack spectra into a [S, length] array, zero-padded at the end (length: the longest)."""
    arrs = [_as_spectrum(s, f"spectrum {k}") for k, s in enumerate(spectra)]
    longest = max((len(s) for s in arrs), default=0)
    length = longest if length is None else int(length)
    if length < longest:
        raise ValueError(f"cannot pad a spectrum of length {longest} to {length}")
    out = np.zeros((len(arrs), length))
    for k, s in enumerate(arrs):
        out[k, : len(s)] = s
    return out


def spectral_distance(spectrum: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray) -> float:
    """``sum_k (reference_k - spectrum_k)^2`` after zero-padding both at the end to a common length.

    Both are taken as given (sorted spectra from :func:`laplacian_spectrum`, or an
    :func:`average_spectrum`); they are not re-sorted, since sorting would move the padding.
    Symmetric in its arguments; two empty spectra are at distance 0.
    """
    padded = pad_spectra([_as_spectrum(spectrum, "spectrum"), _as_spectrum(reference, "reference")])
    return float(np.sum((padded[1] - padded[0]) ** 2))


def average_spectrum(spectra: Sequence[Sequence[float] | np.ndarray]) -> np.ndarray:
    """Mean of the spectra, each zero-padded at the end to the longest one."""
    if len(spectra) == 0:
        raise ValueError("cannot average zero spectra")
    return pad_spectra(spectra).mean(axis=0)
