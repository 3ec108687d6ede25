"""Atoms -> AtomicGraph: the radius graph every model in ase-adapt consumes.

Neighbour lists come from vesin (cell lists, O(N), periodic cells of any shape, cells smaller than
twice the cutoff, mixed boundary conditions). The cutoff is an argument of graph construction, not
of the model: radius refinement builds graphs at a smaller radius at run time.

Edge convention: ``edge_index[0]`` is the centre atom ``i`` (the receiver of the message),
``edge_index[1]`` the neighbour ``j`` (the sender), and the edge vector is
``r_ij = x_j - x_i + shifts_ij @ cell``.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch
import vesin
from ase import Atoms

from .errors import InvalidStructureError


@dataclass(frozen=True)
class AtomicGraph:
    """A batch of one or more structures as a radius graph (all tensors on one device)."""

    positions: torch.Tensor  # [N, 3] float, Å
    numbers: torch.Tensor  # [N] int64 atomic numbers
    cell: torch.Tensor  # [B, 3, 3] float, rows are lattice vectors
    pbc: torch.Tensor  # [B, 3] bool
    edge_index: torch.Tensor  # [2, E] int64, (centre i, neighbour j)
    shifts: torch.Tensor  # [E, 3] float, integer lattice translations of j
    batch: torch.Tensor  # [N] int64 structure index of each atom
    n_atoms: torch.Tensor  # [B] int64
    cutoff: float  # Å, the radius the edges were built with

    @property
    def num_graphs(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def periodic_3d(self) -> bool:
        """True when every structure is periodic in all three directions (stress defined)."""
        return bool(self.pbc.all())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "AtomicGraph":
        """Move to ``device``; floating tensors are also cast to ``dtype`` when given."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                cast = dtype if (dtype is not None and v.is_floating_point()) else None
                v = v.to(device=device, dtype=cast)
            out[f.name] = v
        return replace(self, **out)

    def edge_vectors(self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None) -> torch.Tensor:
        """r_ij = x_j - x_i + shift @ cell, for (possibly strained) ``positions`` and ``cell``."""
        pos = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        i, j = self.edge_index
        offsets = torch.einsum("ek,ekl->el", self.shifts, cell[self.batch[i]])
        return pos[j] - pos[i] + offsets


def check_structure(atoms: Atoms, index: int = 0) -> None:
    """Refuse non-finite positions or cell and a degenerate periodic cell (InvalidStructureError)."""
    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        raise InvalidStructureError(f"structure {index}: positions contain NaN or inf")
    if not np.all(np.isfinite(atoms.cell.array)):
        raise InvalidStructureError(f"structure {index}: cell contains NaN or inf")
    pbc = atoms.pbc
    if pbc.any():
        lengths = atoms.cell.lengths()
        if np.any(lengths[pbc] < 1e-8) or (pbc.all() and abs(atoms.cell.volume) < 1e-8):
            raise InvalidStructureError(
                f"structure {index}: periodic along {pbc.tolist()} but the cell is degenerate "
                f"(lengths {lengths.round(4).tolist()})"
            )


def neighbour_list(atoms: Atoms, cutoff: float, full: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour list of one structure: (i, j, integer shifts, distances).

    ``full``: both directions of every pair; otherwise each pair once, in either order.
    """
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=full)
    cell = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    i, j, s, d = nl.compute(atoms.positions, cell, atoms.pbc, "ijSd")
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64), d


def build_graph(
    atoms: Atoms | Sequence[Atoms],
    cutoff: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    numbers: Sequence[np.ndarray] | None = None,
    min_distance: float | None = None,
) -> AtomicGraph:
    """Build a batched radius graph of one structure or a list of them.

    ``numbers`` overrides the atomic numbers per structure (the unknown-element policy maps
    elements without touching the user's Atoms). With ``min_distance``, two atoms (or periodic
    images) closer than it raise :class:`InvalidStructureError` naming them.
    """
    frames = [atoms] if isinstance(atoms, Atoms) else list(atoms)
    if not frames:
        raise InvalidStructureError("cannot build a graph of zero structures")
    if not (math.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive, finite number of Å, got {cutoff}")
    pos, nums, cells, pbcs, edges, shifts, batch = [], [], [], [], [], [], []
    offset = 0
    for k, a in enumerate(frames):
        if len(a) == 0:
            raise InvalidStructureError(f"structure {k} has no atoms")
        check_structure(a, k)
        i, j, s, d = neighbour_list(a, cutoff)
        if min_distance is not None and len(d) and d.min() < min_distance:
            m = int(np.argmin(d))
            raise InvalidStructureError(
                f"structure {k}: atoms {i[m]} and {j[m]} are {d[m]:.3g} Å apart, "
                f"below min_distance={min_distance} Å"
            )
        # Edges only see differences: moving each structure's centroid to the origin (in float64)
        # keeps float32 exact to ~1e-6 Å however far from the origin the user's coordinates lie.
        pos.append(a.positions - a.positions.mean(axis=0))
        nums.append(a.numbers if numbers is None else np.asarray(numbers[k]))
        cells.append(a.cell.array)
        pbcs.append(a.pbc)
        edges.append(np.stack([i, j]) + offset)
        shifts.append(s)
        batch.append(np.full(len(a), k, dtype=np.int64))
        offset += len(a)
    t = lambda x, dt: torch.as_tensor(np.ascontiguousarray(x), dtype=dt, device=device)  # noqa: E731
    return AtomicGraph(
        positions=t(np.concatenate(pos), dtype),
        numbers=t(np.concatenate(nums), torch.int64),
        cell=t(np.stack(cells), dtype),
        pbc=t(np.stack(pbcs), torch.bool),
        edge_index=t(np.concatenate(edges, axis=1), torch.int64),
        shifts=t(np.concatenate(shifts), dtype),
        batch=t(np.concatenate(batch), torch.int64),
        n_atoms=t(np.array([len(a) for a in frames]), torch.int64),
        cutoff=float(cutoff),
    )
