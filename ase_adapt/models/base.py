"""The one machinery every ase-adapt model shares: named heads, species, depth-ordered parameter
groups, the cache key, and energies -> forces and stress.

:class:`HeadedModel` is the base of the built-in :class:`~ase_adapt.models.MLFF` and of the adapters
that present a foreign MLFF (:class:`~ase_adapt.models.foreign.ForeignModel`: SevenNet, MACE). The
calculators, TTT, the shift statistics and the physics contracts use only this surface:
``elements``, ``cutoff``, ``config``, named ``heads`` (:class:`~ase_adapt.models.heads.HeadDict`),
``dtype``/``device``, ``species()``, ``representation_blocks()`` ordered by depth,
``parameters_before(k)``, ``weights_token()`` and ``forward(graph, head, ...)``.

It owns the conventions that must not differ between models:

- energies per head are ``E_i = E0[s_i] + (interaction energy of atom i)``, where an atom that is
  the centre of no edge contributes exactly its E0 (float64, outside the state dict);
- forces are ``-dE/dr`` and the stress ``dE/d(strain) / V`` by autograd through the model's own
  edge vectors (``graph.edge_vectors`` of strained positions and cell).

A subclass builds ``self.embedding`` and ``self.interactions`` (a ModuleList, one entry per
message-passing block, in depth order), attaches heads with :meth:`add_head`, and implements
``dtype``, ``device``, :meth:`_shared` (the representation pass, with virtual edgeless atoms
appended for the isolated-atom reference) and :meth:`_head_energy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import torch
from torch import nn

from .. import _keys as K
from ..errors import UnknownElementError
from ..graph import AtomicGraph
from .blocks import scatter_sum
from .heads import HeadDict, head_key

__all__ = ["HeadedModel", "HeadChoice"]


@dataclass(frozen=True, eq=False)
class HeadChoice:
    """Several heads in one force pass: structure ``b`` of the batch gets head ``heads[choice[b]]``.

    Structures of a batch do not interact, so the gradient of the summed energy gives each
    structure exactly the forces of its own head: K readout heads cost one backward pass through
    the shared representation instead of K (a deep head's own blocks still run on every structure).
    Joint training uses it to train every prior head on a share of each batch
    (``OptimSettings.prior_pass="shared"``). The result is keyed by ``name``.
    """

    name: str
    heads: tuple[str, ...]
    choice: torch.Tensor  # [B] int64 indices into ``heads``


HeadSpec = Union[str, HeadChoice]


class HeadedModel(nn.Module):
    """Named heads on a representation: species, parameter groups, cache key, energy -> forces/stress."""

    training_stats: dict | None = None

    def __init__(self, *, elements: Sequence[int], cutoff: float, config: dict | None = None) -> None:
        super().__init__()
        self.elements = tuple(int(z) for z in elements)
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"duplicate elements in {self.elements}")
        self.cutoff = float(cutoff)
        self.config = dict(config or {})
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[list(self.elements)] = torch.arange(len(self.elements))
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        self._token_tensors: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self.heads = HeadDict()

    # ------------------------------------------------------------------ structure
    def check_head(self, name: str, head: nn.Module) -> None:
        """Raise if ``head`` cannot read this model's features (subclasses refine)."""

    def add_head(self, name: str, head: nn.Module) -> None:
        """Attach a head (``"prior:emt"``, a replay head...) reading the representation's features."""
        head_key(name)  # validates the name
        self.check_head(name, head)
        self.heads[name] = head
        self.config["heads"] = self.head_names
        self.structure_changed()

    def structure_changed(self) -> None:
        """Forget cached parameter lists; call after replacing submodules in place."""
        self._token_tensors = None

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), .cuda() may replace tensors
        self.structure_changed()
        return super()._apply(fn, *args, **kwargs)

    @property
    def head_names(self) -> list[str]:
        return list(self.heads.keys())

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.embedding.parameters() if p.is_floating_point()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.embedding.parameters()).device

    def representation_blocks(self) -> list[tuple[str, nn.Module]]:
        """Shared representation modules ordered by depth: embedding, interactions.0, interactions.1..."""
        return [("embedding", self.embedding)] + [(f"interactions.{k}", b) for k, b in enumerate(self.interactions)]

    def interaction_blocks(self) -> list[nn.Module]:
        """Every message-passing block: the shared ones, then each head's own."""
        return list(self.interactions) + [b for h in self.heads.values() for b in getattr(h, "blocks", ())]

    def parameters_before(self, block: int) -> list[nn.Parameter]:
        """Representation parameters before interaction block ``block`` (0-based); see MLFF."""
        if not 0 <= block <= len(self.interactions):
            raise ValueError(f"block must be in [0, {len(self.interactions)}], got {block}")
        params = list(self.embedding.parameters())
        for b in self.interactions[:block]:
            params.extend(b.parameters())
        return params

    def representation_parameters(self) -> list[nn.Parameter]:
        return self.parameters_before(len(self.interactions))

    def named_parameter_groups(self) -> Iterator[tuple[str, list[nn.Parameter]]]:
        """(group, parameters) for the representation blocks and each head, in depth order."""
        for name, module in self.representation_blocks():
            yield name, list(module.parameters())
        for name, h in self.heads.items():
            yield f"heads.{self.heads.key_of(name)}", list(h.parameters())

    def weights_token(self) -> tuple:
        """Changes whenever any weight, buffer, E0, dtype or device changes (calculator cache key)."""
        if self._token_tensors is None:
            tensors = [*self.parameters(), *self.buffers()]
            self._token_tensors = (tensors, [t for t in tensors if t.is_floating_point()])
        tensors, floats = self._token_tensors
        with torch.no_grad():
            checksum = tuple(torch.stack(torch._foreach_norm(floats)).tolist()) if floats else ()
        return (
            tuple((id(t), t._version) for t in tensors),
            checksum,
            tuple((n, tuple(h.e0)) for n, h in self.heads.items()),
            self.dtype,
            self.device,
        )

    def save(self, path):
        """Save weights, config, heads, E0s and training statistics atomically (:mod:`ase_adapt.checkpoint`)."""
        from .serialize import save_model

        return save_model(self, path)

    # ------------------------------------------------------------------ compute
    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers -> species indices; raises on elements the model does not know."""
        if numbers.numel() and (numbers.min() < 0 or numbers.max() > 118):
            raise UnknownElementError(f"invalid atomic numbers in {numbers.unique().tolist()}")
        species = self.z_to_index[numbers]
        if numbers.numel() and bool((species < 0).any()):
            bad = numbers[species < 0].unique().tolist()
            known = list(self.elements) if len(self.elements) <= 20 else f"{len(self.elements)} elements"
            raise UnknownElementError(f"elements {bad} are not among the model's elements {known}")
        return species

    def interacting_atoms(self, graph: AtomicGraph) -> torch.Tensor:
        """[N] bool: atoms that are the centre of at least one edge (the others return their E0)."""
        flags = torch.zeros(graph.num_nodes, dtype=torch.bool, device=graph.positions.device)
        flags[graph.edge_index[0]] = True
        return flags

    def _shared(self, graph: AtomicGraph, species: torch.Tensor, positions: torch.Tensor,
                cell: torch.Tensor) -> tuple[torch.Tensor, object]:
        """(features of the graph's atoms followed by virtual isolated atoms, context for the heads)."""
        raise NotImplementedError

    def _head_energy(self, head: nn.Module, h: torch.Tensor, context: object, species: torch.Tensor,
                     n: int) -> torch.Tensor:
        """[n] per-atom interaction energy (model dtype, no E0) of ``head``; zero for an isolated atom."""
        raise NotImplementedError

    def forward(self, graph: AtomicGraph, head: HeadSpec | Sequence[HeadSpec] = K.MAIN_HEAD, *,
                compute_forces: bool = True, compute_stress: bool | None = None, create_graph: bool = False) -> dict:
        """Evaluate one head (returns a result dict) or several (returns {head: result dict}).

        Result keys: ``energy`` [B] and ``node_energy`` [N] (float64, E0 included), ``forces``
        [N, 3] and, for 3D-periodic graphs, ``stress`` [B, 3, 3] (eV/Å³, ASE sign convention).
        ``compute_stress=None`` means "when every structure is 3D-periodic". Several heads share
        one representation pass; a :class:`HeadChoice` shares one force pass too. Outputs are
        detached unless ``create_graph=True``, which a loss on energies or forces that will be
        differentiated (training, TTT) must pass. An atom without neighbours returns exactly its
        E0 (its readout difference is masked, not computed: matmul rounding depends on the batch size).
        """
        specs = [head] if isinstance(head, (str, HeadChoice)) else list(head)
        for spec in specs:
            for n in (spec.heads if isinstance(spec, HeadChoice) else (spec,)):
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
            pos, cell, inputs = _strained(graph, compute_forces, compute_stress)
            species = self.species(graph.numbers)
            h, context = self._shared(graph, species, pos, cell)
            interacting = self.interacting_atoms(graph)
            results = {}
            for k, spec in enumerate(specs):
                node_int, node_e0 = self._spec_energy(spec, h, context, species, graph)
                node_int = torch.where(interacting, node_int, torch.zeros_like(node_int))
                results[spec if isinstance(spec, str) else spec.name] = _energy_results(
                    graph, node_int, node_e0, inputs, compute_forces, compute_stress, create_graph,
                    retain=create_graph or k < len(specs) - 1)
        if isinstance(head, (str, HeadChoice)):
            return results[head if isinstance(head, str) else head.name]
        return results

    def _spec_energy(self, spec: HeadSpec, h: torch.Tensor, context: object, species: torch.Tensor,
                     graph: AtomicGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """([N] interaction energy, [N] float64 E0) of one head, or of each structure's chosen head."""
        n = graph.num_nodes
        if isinstance(spec, str):
            hd = self.heads[spec]
            return self._head_energy(hd, h, context, species, n), hd.e0_table(h.device)[species]
        per_node = spec.choice.to(h.device)[graph.batch]
        energies = torch.stack([self._head_energy(self.heads[name], h, context, species, n) for name in spec.heads])
        e0 = torch.stack([self.heads[name].e0_table(h.device) for name in spec.heads])
        pick = per_node.unsqueeze(0)
        return energies.gather(0, pick).squeeze(0), e0[per_node, species]


def _strained(graph: AtomicGraph, forces: bool, stress: bool):
    """(positions, cell, autograd inputs): positions require grad, a symmetric strain deforms both."""
    pos, cell, inputs = graph.positions, graph.cell, []
    if forces:
        pos = pos.detach().requires_grad_(True)
        inputs.append(pos)
    if stress:
        strain = torch.zeros_like(cell, requires_grad=True)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        pos = pos + torch.einsum("ni,nij->nj", pos, sym[graph.batch])
        cell = cell + torch.bmm(cell, sym)
        inputs.append(strain)
    return pos, cell, inputs


def _energy_results(graph: AtomicGraph, node_int: torch.Tensor, node_e0: torch.Tensor, inputs: list,
                    forces: bool, stress: bool, create_graph: bool, retain: bool) -> dict:
    """Result dict of one head: float64 energies with E0, forces and stress by autograd."""
    e_int = scatter_sum(node_int, graph.batch, graph.num_graphs)
    node_e = node_int.to(torch.float64) + node_e0
    out = {K.NODE_ENERGY: node_e, K.ENERGY: scatter_sum(node_e, graph.batch, graph.num_graphs)}
    if inputs:
        grads = torch.autograd.grad(e_int.sum(), inputs, create_graph=create_graph, retain_graph=retain,
                                    allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        if forces:
            out[K.FORCES] = -grads[0]
        if stress:
            volume = torch.linalg.det(graph.cell).abs()
            out[K.STRESS] = grads[-1] / volume[:, None, None]
    if not create_graph:
        out = {key: v.detach() for key, v in out.items()}
    return out
