"""MACE (``mace-torch``) models presented through the built-in model interface.

``ase_adapt.load_model("mace:PATH")`` (see :mod:`ase_adapt.models.mace_io`) wraps the modules of a
``mace.modules.MACE`` or ``ScaleShiftMACE`` in a :class:`MaceModel`:

- **Representation** (what TTT adapts, ordered by depth): ``embedding`` = MACE's node embedding
  (linear on the element one-hots), radial embedding (Bessel basis, polynomial envelope, optional
  distance transform) and spherical harmonics; then ``interactions.k`` = MACE layer k, its
  interaction block followed by its product-basis block (:class:`MaceLayer`). All layers are
  shared; ``parameters_before(1)``, the TTT default, is the node embedding plus layer 0.
- **Main head** (:class:`MaceHead`): MACE's readouts of every layer (readout k reads layer k's
  features, as MACE does), the optional ZBL pair repulsion and the scale/shift, for one MACE head
  (``heads`` of a multi-head model: each readout has one output column per head; the adapter
  selects the column of the chosen head for every atom, as MACE does per node). Its E0s are MACE's
  own isolated-atom energies (MACE's ``atomic_energies`` of that head plus the readouts and shift of
  an edgeless atom), computed once at load, so ``E_i = E0[s_i] + (atomic(h_i) - atomic(h_iso[s_i]))``
  equals MACE's ``E0 + scale * sum_k readout_k(h_i^k) + shift`` to float rounding.
- **Features of added heads**: the scalar (``0e``) channels of every layer, concatenated
  (``irreps_features``, e.g. ``16x0e`` for two layers of ``8x0e+8x1o``). These are what MACE's own
  readouts use (a linear readout of ``0e`` output sees only the scalars), so a prior head reads
  the same information as the main head, including layer 0 that TTT adapts directly.
- **Prior heads**: :meth:`MaceModel.new_head` attaches an :class:`~ase_adapt.models.blocks.EnergyHead`
  (an MLP on those scalars, the default) or a copy of the main head (``copy_main=True``).

**Graph radius.** The graph cutoff is a run-time parameter (radius refinement builds graphs at a
smaller radius ``r_g``). The Bessel basis keeps MACE's trained ``r_max``; the polynomial envelope is
evaluated at ``r * r_max / r_g``, so every edge still goes smoothly to zero at the radius the graph
was built with (the SevenNet adapter does the same with its cutoff function). At ``r_g = r_max`` the
adapter is MACE itself. Keeping the trained envelope instead would make the energy jump whenever a
neighbour crosses ``r_g``; docs/foundation_models.md gives the measured size. The ZBL pair
repulsion (``pair_repulsion=True`` models) keeps its own covalent-radius envelope. A radius larger
than ``r_max`` is refused.

**Forces and stress** come from autograd through the adapter's own edge vectors
(:mod:`ase_adapt.models.foreign`). MACE's edge convention is translated: its ``edge_index`` is
(sender j, receiver i) and its edge vector ``x_i - x_j + shift``, i.e. the graph's ``-r_ij``.
"""

from __future__ import annotations


import torch
from e3nn import o3
from torch import nn

from .foreign import ForeignModel
from .heads import E0Table

__all__ = ["MaceHead", "MaceLayer", "MaceModel", "SUPPORTED_CLASSES"]

SUPPORTED_CLASSES = ("MACE", "ScaleShiftMACE")


class MaceLayer(nn.Module):
    """One MACE layer: interaction block (messages) then product-basis block (body order)."""

    def __init__(self, interaction: nn.Module, product: nn.Module, first: bool) -> None:
        super().__init__()
        self.interaction = interaction
        self.product = product
        self.first = bool(first)
        self.irreps_out = o3.Irreps(str(product.linear.irreps_out))

    def forward(self, h: torch.Tensor, node_attrs: torch.Tensor, edge_attrs: torch.Tensor,
                edge_feats: torch.Tensor, edge_index: torch.Tensor, cutoff: torch.Tensor | None) -> torch.Tensor:
        h, sc = self.interaction(node_attrs=node_attrs, node_feats=h, edge_attrs=edge_attrs, edge_feats=edge_feats,
                                 edge_index=edge_index, cutoff=cutoff, first_layer=self.first)
        return self.product(node_feats=h, sc=sc, node_attrs=node_attrs)


class MaceHead(E0Table, nn.Module):
    """One head of a MACE model: per-layer readouts, optional ZBL pair term, scale/shift, E0s.

    ``head_index`` selects the readout column (and the scale, shift and atomic energies) of the
    chosen MACE head. ``atomic_energy(layers, pair)`` is MACE's per-atom interaction energy.
    """

    def __init__(self, readouts: nn.ModuleList, scale_shift: nn.Module | None, pair: nn.Module | None,
                 head_index: int, num_species: int) -> None:
        super().__init__()
        self.readouts = readouts
        self.scale_shift = scale_shift
        self.pair_repulsion = pair
        self.head_index = int(head_index)
        self.num_species = int(num_species)
        self._init_e0(self.num_species)

    def pair_energy(self, lengths: torch.Tensor, node_attrs: torch.Tensor, edge_index: torch.Tensor,
                    atomic_numbers: torch.Tensor) -> torch.Tensor | None:
        """[N] ZBL energy per node (MACE's edge convention), or None without pair repulsion."""
        if self.pair_repulsion is None:
            return None
        return self.pair_repulsion(lengths, node_attrs, edge_index, atomic_numbers)

    def atomic_energy(self, layers: list[torch.Tensor], pair: torch.Tensor | None) -> torch.Tensor:
        """[N] MACE's per-atom energy without its atomic reference energy (readouts, pair, scale/shift)."""
        n = layers[0].shape[0]
        heads = torch.full((n,), self.head_index, dtype=torch.int64, device=layers[0].device)
        rows = torch.arange(n, device=layers[0].device)
        terms = [] if pair is None else [pair]
        for k, readout in enumerate(self.readouts):
            feats = layers[-1] if len(self.readouts) == 1 else layers[k]
            terms.append(readout(feats, heads)[rows, heads])
        total = torch.sum(torch.stack(terms, dim=0), dim=0)
        if self.scale_shift is not None:
            total = self.scale_shift(total, heads)
        return total


class MaceModel(ForeignModel):
    """A MACE model as representation (embeddings + layers) plus named heads.

    Build it with :func:`ase_adapt.models.mace_io.load_mace` (or ``ase_adapt.load_model("mace:...")``).
    ``head`` is the name of the MACE head the ``main`` head reproduces (see
    :func:`~ase_adapt.models.mace_io.choose_head` for the default).
    """

    native_head = MaceHead
    native_head_type = "mace"

    def __init__(self, mace_model: nn.Module, *, head: str, config: dict | None = None) -> None:
        check_supported(mace_model)
        heads = list(getattr(mace_model, "heads", None) or ["Default"])
        if head not in heads:
            raise ValueError(f"unknown MACE head {head!r}; available heads: {heads}")
        elements = [int(z) for z in mace_model.atomic_numbers.tolist()]
        super().__init__(elements=elements, cutoff=float(mace_model.r_max), config=config)
        self.embedding = nn.ModuleDict({"node_embedding": mace_model.node_embedding,
                                        "radial_embedding": mace_model.radial_embedding,
                                        "spherical_harmonics": mace_model.spherical_harmonics})
        self.interactions = nn.ModuleList(
            MaceLayer(i, p, first=(k == 0)) for k, (i, p) in enumerate(zip(mace_model.interactions, mace_model.products)))
        self.register_buffer("atomic_numbers", mace_model.atomic_numbers.clone(), persistent=False)
        self.scalar_slices = [_scalar_slices(layer.irreps_out) for layer in self.interactions]
        width = sum(s.stop - s.start for slices in self.scalar_slices for s in slices)
        self.irreps_features = o3.Irreps(f"{width}x0e")
        head_index = heads.index(head)
        main = MaceHead(mace_model.readouts, getattr(mace_model, "scale_shift", None),
                        getattr(mace_model, "pair_repulsion_fn", None), head_index, len(elements))
        self.reference_energies = _atomic_energies(mace_model, head_index)
        self.config.update(elements=list(self.elements), cutoff=self.cutoff, mace_head=head, mace_heads=heads,
                           num_layers=len(self.interactions), mace_class=type(mace_model).__name__,
                           parity=not bool(getattr(mace_model, "use_so3", False)))
        self.add_head("main", main)
        self.eval()
        self.refresh_e0()

    # ------------------------------------------------------------------ heads
    # ------------------------------------------------------------------ compute
    def _edges(self, vectors: torch.Tensor, node_attrs: torch.Tensor, edge_index: torch.Tensor,
               graph_cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(spherical harmonics, radial features, cutoff or None, lengths) in MACE's convention.

        The envelope is evaluated at ``r * r_max / r_g`` below the trained radius (module docstring).
        """
        if graph_cutoff > self.cutoff * (1 + 1e-9):
            raise ValueError(f"graph radius {graph_cutoff} Å exceeds the MACE cutoff r_max = {self.cutoff} Å")
        radial = self.embedding["radial_embedding"]
        lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
        r_env = lengths if graph_cutoff >= self.cutoff * (1 - 1e-9) else lengths * (self.cutoff / graph_cutoff)
        cutoff = radial.cutoff_fn(r_env)
        x = lengths
        if hasattr(radial, "distance_transform"):
            x = radial.distance_transform(x, node_attrs, edge_index, self.atomic_numbers)
        feats = radial.bessel_fn(x)
        if getattr(radial, "apply_cutoff", True):
            feats, cutoff = feats * cutoff, None
        return self.embedding["spherical_harmonics"](vectors), feats, cutoff, lengths

    def _layers(self, types: torch.Tensor, vectors: torch.Tensor, edge_index: torch.Tensor,
                graph_cutoff: float) -> tuple[list[torch.Tensor], dict]:
        """Every layer's node features of nodes ``types``, and the inputs of the pair term."""
        node_attrs = nn.functional.one_hot(types, len(self.elements)).to(vectors.dtype)
        edge_attrs, edge_feats, cutoff, lengths = self._edges(vectors, node_attrs, edge_index, graph_cutoff)
        h = self.embedding["node_embedding"](node_attrs)
        layers = []
        for layer in self.interactions:
            h = layer(h, node_attrs, edge_attrs, edge_feats, edge_index, cutoff)
            layers.append(h)
        pair = {"lengths": lengths, "node_attrs": node_attrs, "edge_index": edge_index,
                "atomic_numbers": self.atomic_numbers}
        return layers, pair

    def scalars(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """The features of added heads: every layer's ``0e`` channels, concatenated."""
        return torch.cat([h[:, s] for h, slices in zip(layers, self.scalar_slices) for s in slices], dim=-1)

    def _shared(self, graph, species, positions, cell):
        """Scalar features of the graph's atoms, then one virtual edgeless atom per species present."""
        vectors = -graph.edge_vectors(positions, cell)  # MACE: x_receiver - x_sender
        present = torch.unique(species)
        types = torch.cat([species, present])
        layers, pair = self._layers(types, vectors, graph.edge_index.flip(0), graph.cutoff)
        return self.scalars(layers), (layers, pair, present)

    def _head_energy(self, head, h, context, species, n):
        layers, pair, present = context
        if isinstance(head, MaceHead):
            e = head.atomic_energy(layers, head.pair_energy(**pair))
            e_iso = e.new_zeros(len(self.elements)).index_copy(0, present, e[n:])
            return e[:n] - e_iso[species]
        g_iso = h.new_zeros((len(self.elements), h.shape[1])).index_copy(0, present, h[n:])
        return head.interaction_energy(h[:n], g_iso, species)

    @torch.no_grad()
    def isolated_energies(self, head: MaceHead) -> list[float]:
        """MACE's energy of each element as an isolated atom (eV) through ``head``: its atomic
        reference energy plus the readouts and shift of an edgeless atom."""
        types = torch.arange(len(self.elements), device=self.device)
        vectors = torch.zeros((0, 3), dtype=self.dtype, device=self.device)
        edges = torch.zeros((2, 0), dtype=torch.int64, device=self.device)
        layers, pair = self._layers(types, vectors, edges, self.cutoff)
        e = head.atomic_energy(layers, head.pair_energy(**pair)).to(torch.float64)
        return (e + torch.as_tensor(self.reference_energies, dtype=torch.float64, device=e.device)).tolist()

    def refresh_e0(self) -> None:
        """Recompute the main head's E0s (after a dtype change: isolated atoms stay exact)."""
        self.heads["main"].set_e0(self.isolated_energies(self.heads["main"]))


def _scalar_slices(irreps: o3.Irreps) -> list[slice]:
    """Column slices of the ``0e`` channels of features with ``irreps``."""
    slices = [s for (_, ir), s in zip(irreps, irreps.slices()) if ir == o3.Irrep("0e")]
    if not slices:
        raise NotImplementedError(f"MACE layer features {irreps} have no scalar channels")
    return slices


def _atomic_energies(mace_model: nn.Module, head_index: int) -> list[float]:
    """MACE's atomic reference energies (E0s) of head ``head_index``, float64."""
    table = torch.atleast_2d(mace_model.atomic_energies_fn.atomic_energies.detach().cpu().to(torch.float64))
    return table[head_index].tolist()


def check_supported(mace_model: nn.Module) -> None:
    """Refuse MACE variants whose extra inputs or outputs the adapter would silently ignore."""
    name = type(mace_model).__name__
    if name not in SUPPORTED_CLASSES:
        raise NotImplementedError(f"MACE model class {name!r} is not supported by the ase-adapt adapter "
                                  f"(supported: {', '.join(SUPPORTED_CLASSES)})")
    if hasattr(mace_model, "joint_embedding") or hasattr(mace_model, "embedding_readout"):
        raise NotImplementedError("MACE models with a joint embedding of extra inputs (charge, spin, ...) "
                                  "are not supported by the ase-adapt adapter")
    for product in mace_model.products:
        cueq = getattr(product, "cueq_config", None)
        if cueq is not None and getattr(cueq, "enabled", False):
            raise NotImplementedError("this MACE model uses cuEquivariance kernels: convert it back to e3nn first "
                                      "(mace.cli.convert_cueq_e3nn)")
