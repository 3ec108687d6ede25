"""The TTT-ready MLFF: an equivariant representation g_R shared by named energy heads.

``forward(graph, head)`` returns per-atom and total energies, forces (-dE/dr by autograd) and, for
3D-periodic cells, the stress (dE/d(strain) / V). Several heads can be evaluated from one
representation pass. ``parameters_before(k)`` hands test-time training the representation
parameters that come before interaction block ``k``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from e3nn import o3
from torch import nn

from ..graph import AtomicGraph
from .base import HeadedModel
from .blocks import EnergyHead, InteractionBlock, RadialEmbedding, SpeciesEmbedding


class MLFF(HeadedModel):
    """Representation (embedding + interaction blocks) plus named energy heads.

    Blocks are passed in already built (explicit composition); compatibility of their irreps is
    asserted here. Use :func:`ase_adapt.build_model` to build one from hyperparameters.
    """

    def __init__(
        self,
        *,
        elements: Sequence[int],
        cutoff: float,
        embedding: SpeciesEmbedding,
        radial: RadialEmbedding,
        spherical_harmonics: o3.SphericalHarmonics,
        interactions: Sequence[InteractionBlock],
        heads: Mapping[str, EnergyHead],
        config: Mapping | None = None,
    ) -> None:
        super().__init__(elements=elements, cutoff=cutoff, config=config)

        if embedding.irreps_in.dim != len(self.elements):
            raise ValueError("embedding input size must equal the number of elements")
        if not interactions:
            raise ValueError("the model needs at least one interaction block")
        irreps = embedding.irreps_out
        for k, block in enumerate(interactions):
            if block.irreps_in != irreps:
                raise ValueError(f"interaction {k} expects {block.irreps_in}, receives {irreps}")
            if block.irreps_sh != spherical_harmonics.irreps_out:
                raise ValueError(f"interaction {k} expects sh {block.irreps_sh}")
            irreps = block.irreps_out
        self.irreps_features = irreps
        self.embedding = embedding
        self.radial = radial
        self.spherical_harmonics = spherical_harmonics
        self.interactions = nn.ModuleList(interactions)
        for name, head in heads.items():
            self.add_head(name, head)

    def check_head(self, name: str, head: EnergyHead) -> None:
        """A head reads the final shared features: its input irreps must be theirs.

        Its weights are saved under ``heads.<head_key(name)>`` (``heads.prior_gfn_ff``), see
        :mod:`ase_adapt.models.heads`; ``config["heads"]`` always lists every head.
        """
        if head.irreps_in != self.irreps_features:
            raise ValueError(f"head {name!r} expects {head.irreps_in}, features are {self.irreps_features}")

    @property
    def dtype(self) -> torch.dtype:
        return self.radial.freqs.dtype

    @property
    def device(self) -> torch.device:
        return self.radial.freqs.device

    def _node_attrs(self, species: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(species, len(self.elements)).to(self.dtype)

    def _features(self, node_attrs: torch.Tensor, edge_sh, edge_radial, edge_index) -> torch.Tensor:
        h = self.embedding(node_attrs)
        for block in self.interactions:
            h = block(h, node_attrs, edge_sh, edge_radial, edge_index)
        return h

    def representation(self, graph: AtomicGraph, positions: torch.Tensor | None = None,
                       cell: torch.Tensor | None = None) -> torch.Tensor:
        """Final shared per-atom features g_R(graph) (optionally at displaced positions / strained cell)."""
        h, _ = self._shared(graph, self.species(graph.numbers), positions, cell)
        return h[: graph.num_nodes]

    def _shared(self, graph: AtomicGraph, species: torch.Tensor, positions: torch.Tensor | None,
                cell: torch.Tensor | None) -> tuple[torch.Tensor, tuple]:
        """(shared features of the graph's atoms followed by one isolated atom per species, edge context).

        One virtual edgeless node per species is appended to the batch, so the isolated-atom
        reference costs a few extra rows instead of a second pass through every block; the
        edge context lets deep heads run their own blocks on the same graph.
        """
        vectors = graph.edge_vectors(positions, cell)
        edge_sh = self.spherical_harmonics(vectors)
        edge_radial = self.radial(vectors.norm(dim=-1), graph.cutoff)
        n_species = len(self.elements)
        virtual = torch.arange(n_species, device=graph.numbers.device)
        attrs = self._node_attrs(torch.cat([species, virtual]))
        h = self._features(attrs, edge_sh, edge_radial, graph.edge_index)
        return h, (attrs, edge_sh, edge_radial, graph.edge_index)

    def _head_energy(self, head: EnergyHead, h: torch.Tensor, context: tuple, species: torch.Tensor,
                     n: int) -> torch.Tensor:
        """[n] per-atom interaction energy of ``head``: its own blocks (if deep), then the readout
        of each atom minus that of its isolated-atom features (the appended virtual nodes)."""
        g = head.features(h, *context)
        return head.interaction_energy(g[:n], g[n:], species)
