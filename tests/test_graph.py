"""Atoms -> AtomicGraph: neighbour lists against ASE, batching, cutoff, input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc111, molecule
from ase.neighborlist import neighbor_list

from ase_adapt import InvalidStructureError, build_graph


def _molecule() -> Atoms:
    return molecule("CH3CH2OH")


def _small_triclinic() -> Atoms:
    """A triclinic cell much smaller than twice the cutoff, atoms partly outside the cell."""
    rng = np.random.default_rng(1)
    cell = np.array([[2.6, 0.0, 0.0], [0.9, 2.4, 0.0], [-0.6, 0.7, 2.9]])
    frac = rng.uniform(-0.3, 1.3, size=(3, 3))
    return Atoms("CHO", positions=frac @ cell, cell=cell, pbc=True)


def _slab() -> Atoms:
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=4.0)
    slab.rattle(0.05, seed=3)
    assert slab.pbc.tolist() == [True, True, False]
    return slab


def _slab_zero_normal() -> Atoms:
    """Periodic in x and y only, with a zero third cell vector (allowed: z is not periodic)."""
    rng = np.random.default_rng(2)
    return Atoms("H5", positions=rng.uniform(0, 3, (5, 3)),
                 cell=[[3.0, 0, 0], [0.5, 3.2, 0], [0, 0, 0]], pbc=[True, True, False])


def _wire() -> Atoms:
    rng = np.random.default_rng(4)
    return Atoms("NH3", positions=rng.uniform(0, 4, (4, 3)), cell=[2.1, 6.0, 6.0], pbc=[True, False, False])


CASES = {
    "molecule": (_molecule, 3.0),
    "triclinic-small-cell": (_small_triclinic, 4.0),
    "slab": (_slab, 4.5),
    "slab-zero-normal": (_slab_zero_normal, 3.5),
    "wire": (_wire, 3.0),
}


def _edge_keys(i, j, s) -> list[tuple[int, ...]]:
    """(i, j, s0, s1, s2) of every edge, in edge order."""
    s = np.asarray(s).round().astype(np.int64).reshape(-1, 3)
    return list(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), *s.T.tolist()))


def _edge_table(i, j, s) -> list[tuple[int, ...]]:
    return sorted(_edge_keys(i, j, s))


@pytest.mark.parametrize("case", sorted(CASES))
def test_neighbour_list_matches_ase(case):
    make, cutoff = CASES[case]
    atoms = make()
    graph = build_graph(atoms, cutoff, dtype=torch.float64)
    i_ref, j_ref, s_ref, d_ref = neighbor_list("ijSD", atoms, cutoff)
    assert len(i_ref) > 0
    ours = _edge_table(graph.edge_index[0], graph.edge_index[1], graph.shifts.numpy())
    assert ours == _edge_table(i_ref, j_ref, s_ref)

    # edge vectors equal ASE's D, matched edge by edge through the (i, j, shift) key
    ref = dict(zip(_edge_keys(i_ref, j_ref, s_ref), d_ref))
    assert len(ref) == len(i_ref)
    got = graph.edge_vectors().numpy()
    keys = _edge_keys(graph.edge_index[0], graph.edge_index[1], graph.shifts.numpy())
    np.testing.assert_allclose(got, np.array([ref[key] for key in keys]), atol=1e-10)
    assert np.all(np.linalg.norm(got, axis=1) < cutoff)


def test_graph_fields_of_one_structure():
    atoms = _slab()
    graph = build_graph(atoms, 4.5, dtype=torch.float64)
    assert graph.num_graphs == 1 and graph.num_nodes == len(atoms)
    assert graph.cutoff == 4.5
    assert graph.positions.dtype == torch.float64 and graph.shifts.dtype == torch.float64
    assert graph.edge_index.dtype == torch.int64 and graph.numbers.dtype == torch.int64
    np.testing.assert_array_equal(graph.numbers.numpy(), atoms.numbers)
    # positions are centred (edges see differences only; float32 stays exact far from the origin)
    np.testing.assert_allclose(graph.positions.numpy(), atoms.positions - atoms.positions.mean(axis=0), atol=1e-12)
    np.testing.assert_array_equal(graph.cell.numpy()[0], atoms.cell.array)
    np.testing.assert_array_equal(graph.pbc.numpy()[0], atoms.pbc)
    assert not graph.periodic_3d
    assert build_graph(_small_triclinic(), 3.0).periodic_3d
    assert build_graph(_molecule(), 3.0).positions.dtype == torch.float32  # default dtype


def test_batching_offsets_indices():
    frames = [_molecule(), _small_triclinic(), _slab()]
    cutoff = 3.5
    batch = build_graph(frames, cutoff, dtype=torch.float64)
    singles = [build_graph(a, cutoff, dtype=torch.float64) for a in frames]

    assert batch.num_graphs == 3
    assert batch.n_atoms.tolist() == [len(a) for a in frames]
    assert batch.num_nodes == sum(len(a) for a in frames)
    assert batch.num_edges == sum(g.num_edges for g in singles)
    np.testing.assert_array_equal(batch.batch.numpy(), np.repeat([0, 1, 2], [len(a) for a in frames]))
    np.testing.assert_array_equal(batch.cell.numpy(), np.stack([a.cell.array for a in frames]))
    np.testing.assert_array_equal(batch.pbc.numpy(), np.stack([a.pbc for a in frames]))

    offset, e0 = 0, 0
    for k, (g, a) in enumerate(zip(singles, frames)):
        e = slice(e0, e0 + g.num_edges)
        np.testing.assert_array_equal(batch.edge_index[:, e].numpy(), g.edge_index.numpy() + offset)
        np.testing.assert_array_equal(batch.shifts[e].numpy(), g.shifts.numpy())
        assert batch.batch[batch.edge_index[:, e]].unique().tolist() == [k]  # edges stay in their frame
        np.testing.assert_allclose(batch.edge_vectors()[e].numpy(), g.edge_vectors().numpy(), atol=1e-12)
        offset += len(a)
        e0 += g.num_edges


def test_numbers_override_does_not_touch_atoms():
    atoms = _molecule()
    before = atoms.numbers.copy()
    mapped = np.where(atoms.numbers == 8, 7, atoms.numbers)
    graph = build_graph(atoms, 3.0, numbers=[mapped])
    np.testing.assert_array_equal(graph.numbers.numpy(), mapped)
    np.testing.assert_array_equal(atoms.numbers, before)


@pytest.mark.parametrize("case", ["molecule", "triclinic-small-cell", "slab"])
def test_smaller_cutoff_gives_subset_of_edges(case):
    make, cutoff = CASES[case]
    atoms = make()
    big = build_graph(atoms, cutoff, dtype=torch.float64)
    small = build_graph(atoms, 0.6 * cutoff, dtype=torch.float64)
    assert small.cutoff == pytest.approx(0.6 * cutoff)
    table = lambda g: set(_edge_table(g.edge_index[0], g.edge_index[1], g.shifts.numpy()))  # noqa: E731
    assert 0 < small.num_edges < big.num_edges
    assert table(small) < table(big)
    # exactly the edges of the big graph that are shorter than the small cutoff
    lengths = big.edge_vectors().norm(dim=-1).numpy()
    keep = lengths < 0.6 * cutoff
    expected = set(_edge_table(big.edge_index[0][keep], big.edge_index[1][keep], big.shifts.numpy()[keep]))
    assert table(small) == expected


def test_far_apart_atoms_have_no_edges():
    atoms = Atoms("HH", positions=[[0, 0, 0], [0, 0, 10.0]])
    assert build_graph(atoms, 5.0).num_edges == 0


def _with_nan(atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.positions[1, 2] = np.nan
    return atoms


def _with_inf(atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.positions[0, 0] = np.inf
    return atoms


def _zero_cell(atoms: Atoms) -> Atoms:
    return Atoms(atoms.symbols, positions=atoms.positions, cell=np.zeros((3, 3)), pbc=True)


def _flat_cell(atoms: Atoms) -> Atoms:
    """Periodic in 3D, non-zero lengths but coplanar lattice vectors (zero volume)."""
    return Atoms(atoms.symbols, positions=atoms.positions,
                 cell=[[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]], pbc=True)


def _zero_periodic_vector(atoms: Atoms) -> Atoms:
    return Atoms(atoms.symbols, positions=atoms.positions,
                 cell=[[3.0, 0, 0], [0, 0, 0], [0, 0, 8.0]], pbc=[True, True, False])


@pytest.mark.parametrize("spoil", [_with_nan, _with_inf, _zero_cell, _flat_cell, _zero_periodic_vector])
@pytest.mark.parametrize("index", [0, 2])
def test_invalid_structure_is_named(spoil, index):
    frames = [_molecule(), _molecule(), _molecule()]
    frames[index] = spoil(frames[index])
    with pytest.raises(InvalidStructureError, match=f"structure {index}"):
        build_graph(frames, 3.0)
    if index == 0:
        with pytest.raises(InvalidStructureError, match="structure 0"):
            build_graph(frames[0], 3.0)


def test_empty_atoms_are_named():
    with pytest.raises(InvalidStructureError, match="structure 1"):
        build_graph([_molecule(), Atoms()], 3.0)
    with pytest.raises(InvalidStructureError, match="structure 0"):
        build_graph(Atoms(), 3.0)


def test_zero_structures_and_bad_cutoff():
    with pytest.raises(InvalidStructureError):
        build_graph([], 3.0)
    with pytest.raises(ValueError):
        build_graph(_molecule(), 0.0)
    with pytest.raises(ValueError):
        build_graph(_molecule(), -1.0)


def test_min_distance_guard_names_structure_and_atoms():
    from ase import Atoms

    ok = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    close = Atoms("H3", positions=[[0, 0, 0], [0, 0, 2.0], [0, 0, 2.05]])
    build_graph([ok, ok], 4.0, min_distance=0.5)  # no error
    with pytest.raises(InvalidStructureError, match=r"structure 1: atoms [12] and [12] are 0.05 Å apart"):
        build_graph([ok, close], 4.0, min_distance=0.5)
