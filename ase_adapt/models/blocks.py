"""Equivariant building blocks of the ase-adapt MLFF (NequIP/MACE-style, built on e3nn).

Every module exposes ``irreps_in`` / ``irreps_out`` so that :class:`~ase_adapt.models.MLFF` can
assert compatibility when it is assembled.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from .fused import FusedEdgeTP, FusedSelfConnection, fused_enabled
from .heads import E0Table


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``size`` bins given by ``index`` (deterministic on CPU)."""
    out = src.new_zeros((size,) + src.shape[1:])
    return out.index_add_(0, index, src)


def polynomial_envelope(x: torch.Tensor, p: int) -> torch.Tensor:
    """Smooth cutoff u(x), x = r/r_c: u(0)=1 and u, u', u'' vanish at x=1 (DimeNet, p=6)."""
    env = (
        1.0
        - (p + 1) * (p + 2) / 2 * x**p
        + p * (p + 2) * x ** (p + 1)
        - p * (p + 1) / 2 * x ** (p + 2)
    )
    return torch.where(x < 1.0, env, torch.zeros_like(x))


class RadialEmbedding(nn.Module):
    """Bessel basis sqrt(2/r_c) sin(n pi r / r_c) / r times a polynomial envelope.

    The basis is fixed by the training cutoff. The envelope is applied at the radius the graph
    was built with (``graph_cutoff`` <= training cutoff), so a graph built at a refined radius
    still gives forces that go smoothly to zero at its own cutoff.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, envelope_p: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_basis = int(num_basis)
        self.envelope_p = int(envelope_p)
        freqs = math.pi * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) / cutoff
        self.register_buffer("freqs", freqs)
        self.irreps_out = o3.Irreps(f"{num_basis}x0e")

    def forward(self, r: torch.Tensor, graph_cutoff: float) -> torch.Tensor:
        rc = min(float(graph_cutoff), self.cutoff)
        r = r.unsqueeze(-1)
        basis = math.sqrt(2.0 / self.cutoff) * torch.sin(self.freqs * r) / r
        return basis * polynomial_envelope(r / rc, self.envelope_p)


class SpeciesEmbedding(nn.Module):
    """One-hot species -> ``channels`` scalar features."""

    def __init__(self, num_species: int, channels: int) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(f"{num_species}x0e")
        self.irreps_out = o3.Irreps(f"{channels}x0e")
        self.linear = o3.Linear(self.irreps_in, self.irreps_out)

    def forward(self, node_attrs: torch.Tensor) -> torch.Tensor:
        return self.linear(node_attrs)


def _gate_for(irreps_out: o3.Irreps) -> Gate:
    """A gate whose output is ``irreps_out``: SiLU on scalars, sigmoid-gated l > 0 features."""
    scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
    act = {1: torch.nn.functional.silu, -1: torch.tanh}
    return Gate(
        scalars, [act[ir.p] for _, ir in scalars],
        gates, [torch.sigmoid] * len(gates),
        gated,
    )


class InteractionBlock(nn.Module):
    """One message-passing layer.

    m_i = sum_j TP(W h_j, Y(r_ij); R(|r_ij|)) / avg_num_neighbors   (edge-wise, radial weights)
    h_i' = Gate(Linear(m_i) + SelfConnection(h_i, species_i)) [+ h_i when irreps match]
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        irreps_out: o3.Irreps | str,
        num_species: int,
        num_basis: int,
        radial_hidden: int = 32,
        avg_num_neighbors: float = 12.0,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.irreps_out = o3.Irreps(irreps_out)
        self.avg_num_neighbors = float(avg_num_neighbors)
        wanted = {ir for _, ir in self.irreps_out}

        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir in ir_in * ir_sh:
                    if ir in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir))
        irreps_mid = o3.Irreps(mid)
        irreps_mid, perm, _ = irreps_mid.sort()
        instructions = [(i, j, perm[k], mode, w) for i, j, k, mode, w in instructions]

        self.linear_up = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = o3.TensorProduct(
            self.irreps_in, self.irreps_sh, irreps_mid, instructions,
            shared_weights=False, internal_weights=False,
        )
        self.radial = FullyConnectedNet(
            [num_basis, radial_hidden, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu
        )
        self.gate = _gate_for(self.irreps_out)
        self.linear_down = o3.Linear(irreps_mid.simplify(), self.gate.irreps_in)
        self.self_connection = o3.FullyConnectedTensorProduct(
            self.irreps_in, o3.Irreps(f"{num_species}x0e"), self.gate.irreps_in
        )
        self.residual = self.irreps_in == self.irreps_out
        # The same tensor product in channel layout, without slicing edge tensors (models/fused.py).
        self.fused_tp = FusedEdgeTP(self.tp) if FusedEdgeTP.supports(self.tp) else None
        sc = self.self_connection
        self.fused_self_connection = FusedSelfConnection(sc) if FusedSelfConnection.supports(sc) else None

    def forward(
        self,
        h: torch.Tensor,
        node_attrs: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> torch.Tensor:
        centre, neighbour = edge_index
        fused = fused_enabled()
        if self.fused_tp is not None and fused:
            messages = self.fused_tp.messages(self.linear_up(h), edge_sh, self.radial(edge_radial), neighbour)
            agg = self.fused_tp.from_channels(scatter_sum(messages, centre, h.shape[0]) / self.avg_num_neighbors)
        else:
            messages = self.tp(self.linear_up(h)[neighbour], edge_sh, self.radial(edge_radial))
            agg = scatter_sum(messages, centre, h.shape[0]) / self.avg_num_neighbors
        if fused and self.fused_self_connection is not None:
            own = self.fused_self_connection(self.self_connection, h, node_attrs)
        else:
            own = self.self_connection(h, node_attrs)
        out = self.gate(self.linear_down(agg) + own)
        return out + h if self.residual else out


class EnergyHead(E0Table, nn.Module):
    """A head: its own interaction blocks (optional), then a readout to per-atom energies.

    E_i = E0[s_i] + scale[s_i] * (MLP(g_i) - MLP(g_iso[s_i])),   g = blocks(h)

    ``h`` are the shared representation's features. A *deep* head owns the interaction blocks
    after the shared ones (the seed paper's split: only the embedding and the first block are
    shared and adapted at test time; each task owns the rest), so a prior head can follow its
    prior on a new molecule and the main head keeps its own late features. Without blocks the
    head is a readout on the shared features. ``g_iso`` are the features of an isolated atom, so
    an atom without neighbours returns exactly its E0 (never learnt, never subtracted twice).
    E0s are float64 reference energies kept outside the state dict (they live in the
    checkpoint's JSON config) so that a float32 model does not round them.
    """

    def __init__(self, irreps_in: o3.Irreps | str, num_species: int, hidden: int = 16,
                 blocks: "Sequence[InteractionBlock]" = ()) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        irreps = self.irreps_in
        for k, block in enumerate(blocks):
            if block.irreps_in != irreps:
                raise ValueError(f"head block {k} expects {block.irreps_in}, receives {irreps}")
            irreps = block.irreps_out
        if irreps.lmax != 0:
            raise ValueError(f"an energy readout reads scalars only, got irreps {irreps}")
        self.blocks = nn.ModuleList(blocks)
        self.irreps_out = o3.Irreps("0e")
        self.mlp = FullyConnectedNet([irreps.dim, hidden, 1], torch.nn.functional.silu)
        self.register_buffer("scale", torch.ones(num_species, dtype=torch.get_default_dtype()))
        self._init_e0(num_species)

    def features(self, h: torch.Tensor, node_attrs: torch.Tensor, edge_sh: torch.Tensor,
                 edge_radial: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The head's own message passing on the shared features (identity without blocks)."""
        for block in self.blocks:
            h = block(h, node_attrs, edge_sh, edge_radial, edge_index)
        return h

    def interaction_energy(self, h: torch.Tensor, h_iso: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energy without E0 (model dtype) from the head's final features: zero when isolated."""
        raw = self.mlp(h).squeeze(-1) - self.mlp(h_iso).squeeze(-1)[species]
        return self.scale[species] * raw
