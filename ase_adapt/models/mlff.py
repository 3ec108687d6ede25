"""The TTT-ready MLFF: an equivariant representation g_R shared by named energy heads.

``forward(graph, head)`` returns per-atom and total energies, forces (-dE/dr by autograd) and, for
3D-periodic cells, the stress (dE/d(strain) / V). Several heads can be evaluated from one
representation pass. ``parameters_before(k)`` hands test-time training the representation
parameters that come before interaction block ``k``.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import torch
from e3nn import o3
from torch import nn

from .. import _keys as K
from ..errors import UnknownElementError
from ..graph import AtomicGraph
from .blocks import EnergyHead, InteractionBlock, RadialEmbedding, SpeciesEmbedding, scatter_sum
from .heads import HeadDict, head_key


class MLFF(nn.Module):
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
        super().__init__()
        self.elements = tuple(int(z) for z in elements)
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"duplicate elements in {self.elements}")
        self.cutoff = float(cutoff)
        self.config = dict(config or {})
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[list(self.elements)] = torch.arange(len(self.elements))
        self.register_buffer("z_to_index", z_to_index, persistent=False)

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
        self._token_tensors: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self.heads = HeadDict()
        for name, head in heads.items():
            self.add_head(name, head)

    # ------------------------------------------------------------------ structure
    def add_head(self, name: str, head: EnergyHead) -> None:
        """Attach a head (e.g. ``"prior:gfn-ff"`` or a replay head) reading the final features.

        Its weights are saved under ``heads.<head_key(name)>`` (``heads.prior_gfn_ff``), see
        :mod:`ase_adapt.models.heads`; ``config["heads"]`` always lists every head.
        """
        head_key(name)  # validates the name
        if head.irreps_in != self.irreps_features:
            raise ValueError(f"head {name!r} expects {head.irreps_in}, features are {self.irreps_features}")
        self.heads[name] = head
        self.config["heads"] = self.head_names
        self.structure_changed()

    def structure_changed(self) -> None:
        """Forget cached parameter lists; call after replacing submodules in place (LoRA does)."""
        self._token_tensors = None

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), .cuda() may replace tensors
        self.structure_changed()
        return super()._apply(fn, *args, **kwargs)

    @property
    def head_names(self) -> list[str]:
        return list(self.heads.keys())

    @property
    def dtype(self) -> torch.dtype:
        return self.radial.freqs.dtype

    @property
    def device(self) -> torch.device:
        return self.radial.freqs.device

    def representation_blocks(self) -> list[tuple[str, nn.Module]]:
        """Shared representation modules ordered by depth: embedding, interactions.0, interactions.1...

        Blocks owned by deep heads are not part of the representation: they belong to the head.
        """
        return [("embedding", self.embedding)] + [
            (f"interactions.{k}", b) for k, b in enumerate(self.interactions)
        ]

    def interaction_blocks(self) -> list[InteractionBlock]:
        """Every interaction block: the shared ones, then each head's own."""
        return list(self.interactions) + [b for h in self.heads.values() for b in h.blocks]

    def parameters_before(self, block: int) -> list[nn.Parameter]:
        """Representation parameters before interaction block ``block`` (0-based).

        ``parameters_before(1)``, the TTT default, is the embedding plus the first interaction
        block, i.e. everything before the second interaction block.
        """
        if not 0 <= block <= len(self.interactions):
            raise ValueError(f"block must be in [0, {len(self.interactions)}], got {block}")
        params = list(self.embedding.parameters())
        for b in self.interactions[:block]:
            params.extend(b.parameters())
        return params

    def representation_parameters(self) -> list[nn.Parameter]:
        return self.parameters_before(len(self.interactions))

    def weights_token(self) -> tuple:
        """Changes whenever any weight, buffer, E0, dtype or device changes (cache key).

        Uses each tensor's in-place version counter, so optimiser steps and ``load_state_dict``
        are caught without the trainer having to notify anyone. Writes through ``.data`` (legacy
        EMA code) bypass the counter, so a cheap per-tensor checksum is part of the key too.
        """
        if self._token_tensors is None:  # walking e3nn's module tree costs ~0.2 ms: cache it
            tensors = [*self.parameters(), *self.buffers()]
            self._token_tensors = (tensors, [t for t in tensors if t.is_floating_point()])
        tensors, floats = self._token_tensors
        with torch.no_grad():  # one fused kernel: ~0.1 ms for the default model on CPU
            checksum = tuple(torch.stack(torch._foreach_norm(floats)).tolist()) if floats else ()
        return (
            tuple((id(t), t._version) for t in tensors),
            checksum,
            tuple((n, tuple(h.e0)) for n, h in self.heads.items()),
            self.dtype,
            self.device,
        )

    # ------------------------------------------------------------------ compute
    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers -> species indices; raises on elements the model does not know."""
        if numbers.numel() and (numbers.min() < 0 or numbers.max() > 118):
            raise UnknownElementError(f"invalid atomic numbers in {numbers.unique().tolist()}")
        species = self.z_to_index[numbers]
        if numbers.numel() and bool((species < 0).any()):
            bad = numbers[species < 0].unique().tolist()
            raise UnknownElementError(f"elements {bad} are not among the model's elements {list(self.elements)}")
        return species

    def _node_attrs(self, species: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(species, len(self.elements)).to(self.dtype)

    def _features(self, node_attrs: torch.Tensor, edge_sh, edge_radial, edge_index) -> torch.Tensor:
        h = self.embedding(node_attrs)
        for block in self.interactions:
            h = block(h, node_attrs, edge_sh, edge_radial, edge_index)
        return h

    def interacting_atoms(self, graph: AtomicGraph) -> torch.Tensor:
        """[N] bool: atoms that are the centre of at least one edge of the graph.

        Edges are built within ``graph.cutoff``; the radial envelope makes an edge's
        contribution vanish smoothly at the cutoff, so masking by edge membership is continuous.
        """
        flags = torch.zeros(graph.num_nodes, dtype=torch.bool, device=graph.positions.device)
        flags[graph.edge_index[0]] = True
        return flags

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

    def forward(
        self,
        graph: AtomicGraph,
        head: str | Sequence[str] = K.MAIN_HEAD,
        *,
        compute_forces: bool = True,
        compute_stress: bool | None = None,
        create_graph: bool = False,
    ) -> dict:
        """Evaluate one head (returns a result dict) or several (returns {head: result dict}).

        Result keys: ``energy`` [B] and ``node_energy`` [N] (float64, E0 included), ``forces``
        [N, 3] and, for 3D-periodic graphs, ``stress`` [B, 3, 3] (eV/Å³, ASE sign convention).
        ``compute_stress=None`` means "when every structure is 3D-periodic". Outputs are
        detached unless ``create_graph=True``, which a loss on energies or forces that will be
        differentiated (training, TTT) must pass.
        """
        names = [head] if isinstance(head, str) else list(head)
        for n in names:
            if n not in self.heads:
                raise KeyError(f"model has no head {n!r}; heads: {self.head_names}")
        if compute_stress is None:
            compute_stress = compute_forces and graph.periodic_3d
        if compute_stress and not graph.periodic_3d:
            raise ValueError("stress is defined only for structures periodic in all 3 directions")
        if graph.positions.dtype != self.dtype or graph.positions.device != self.device:
            graph = graph.to(self.device, self.dtype)

        grad_mode = torch.enable_grad() if (compute_forces or create_graph) else torch.no_grad()
        with grad_mode:
            pos = graph.positions
            cell = graph.cell
            inputs = []
            if compute_forces:
                pos = pos.detach().requires_grad_(True)
                inputs.append(pos)
            if compute_stress:
                strain = torch.zeros_like(cell, requires_grad=True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                pos = pos + torch.einsum("ni,nij->nj", pos, sym[graph.batch])
                cell = cell + torch.bmm(cell, sym)
                inputs.append(strain)
            species = self.species(graph.numbers)
            h_shared, context = self._shared(graph, species, pos, cell)
            n = graph.num_nodes
            # MLP(h) - MLP(h_iso) of an atom without neighbours is zero only up to rounding
            # (matmul kernels depend on the batch size), so it is masked: an isolated atom
            # returns exactly its E0.
            interacting = self.interacting_atoms(graph)
            results = {}
            for k, name in enumerate(names):
                hd = self.heads[name]
                g = hd.features(h_shared, *context)
                node_int = hd.interaction_energy(g[:n], g[n:], species)
                node_int = torch.where(interacting, node_int, torch.zeros_like(node_int))
                e_int = scatter_sum(node_int, graph.batch, graph.num_graphs)
                node_e = node_int.to(torch.float64) + hd.e0_table(node_int.device)[species]
                out = {
                    K.NODE_ENERGY: node_e,
                    K.ENERGY: scatter_sum(node_e, graph.batch, graph.num_graphs),
                }
                if inputs:
                    last = k == len(names) - 1
                    grads = torch.autograd.grad(
                        e_int.sum(), inputs, create_graph=create_graph,
                        retain_graph=create_graph or not last,
                    )
                    if compute_forces:
                        out[K.FORCES] = -grads[0]
                    if compute_stress:
                        volume = torch.linalg.det(graph.cell).abs()
                        out[K.STRESS] = grads[-1] / volume[:, None, None]
                if not create_graph:  # outputs stay differentiable only on request
                    out = {key: v.detach() for key, v in out.items()}
                results[name] = out
        return results[names[0]] if isinstance(head, str) else results

    def named_parameter_groups(self) -> Iterator[tuple[str, list[nn.Parameter]]]:
        """(group, parameters) for the representation blocks and each head, in depth order."""
        for name, module in self.representation_blocks():
            yield name, list(module.parameters())
        for name, h in self.heads.items():
            yield f"heads.{self.heads.key_of(name)}", list(h.parameters())

    training_stats: dict | None = None

    def save(self, path) -> "Path":  # noqa: F821
        """Save weights, config, E0s and training statistics atomically (see :mod:`ase_adapt.checkpoint`)."""
        from .serialize import save_model

        return save_model(self, path)
