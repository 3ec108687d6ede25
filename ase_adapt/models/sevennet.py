"""SevenNet (``sevenn``) models presented through the built-in model interface.

``ase_adapt.load_model("sevennet:7net-0")`` (see :mod:`ase_adapt.models.sevennet_io`) wraps the
modules of SevenNet's ``AtomGraphSequential`` in a :class:`SevenNetModel`:

- **Representation** (what TTT adapts, ordered by depth): ``embedding`` = the edge embedding (Bessel
  basis with its trainable frequencies, cutoff function, spherical harmonics) and the species
  embedding ``onehot_to_feature_x``; then ``interactions.k`` = SevenNet's interaction block k
  (self-connection intro, self-interaction 1, convolution, self-interaction 2, self-connection
  outro, equivariant gate). By default all blocks are shared (``shared_blocks`` = all, 5 for
  SevenNet-0), so the representation ends at the last gate: 128 scalar (``128x0e``) features per
  atom. ``parameters_before(1)``, the TTT default, is the embedding plus block 0.
- **Main head** (:class:`SevenNetHead`): the blocks after ``shared_blocks`` (none by default), the
  readout (``reduce_input_to_hidden``, ``reduce_hidden_to_energy``) and the species-wise (or
  modal-wise) scale and shift. Its E0s are SevenNet's own isolated-atom energies, computed once at
  load: ``E_i = E0[s_i] + (readout(h_i) - readout(h_iso[s_i]))`` equals SevenNet's
  ``scale * readout(h_i) + shift`` to float rounding (~1e-6 eV in float32).
- **Prior heads**: :meth:`SevenNetModel.new_head` attaches an :class:`~ase_adapt.models.blocks.EnergyHead`
  (an MLP reading the scalar features, the default), or a copy of the main head (its own blocks and
  readout, for a representation that ends before the last block).

**Graph radius.** The graph cutoff is a run-time parameter (radius refinement builds graphs at a
smaller radius). The Bessel basis keeps SevenNet's trained cutoff (5 Å). Its cutoff function
(XPLOR switching from 4.5 to 5 Å for SevenNet-0 and -MF-0, a p=6 polynomial for l3i5) is applied at
the graph's radius ``r_g``: it is evaluated at ``r * r_c / r_g``, so every edge contribution still
goes smoothly to zero at the radius the graph was built with, exactly as the built-in model applies
its envelope. At the trained radius the adapter is SevenNet itself. Simply dropping the edges beyond
a smaller radius with the trained envelope would make the energy jump whenever a neighbour crosses
it (the envelope is 1 up to 4.5 Å): docs/foundation_models.md gives the measured size. A radius
larger than the trained cutoff is refused.

**Forces and stress** come from autograd of the energy with respect to positions and a symmetric
strain (:mod:`ase_adapt.models.foreign`), not from SevenNet's ``force_output`` module: one
convention for every backend. Species one-hots are built here in the model's dtype (SevenNet's
own one-hot module always makes float32), so the adapter also runs in float64.
"""

from __future__ import annotations

import re

import torch
from e3nn import o3
from torch import nn

from .foreign import ForeignModel
from .heads import E0Table

__all__ = ["SevenNetHead", "SevenNetModel"]

BLOCK_PARTS = ("self_connection_intro", "self_interaction_1", "convolution", "self_interaction_2",
               "self_connection_outro", "equivariant_gate")
EMBEDDING_PARTS = ("edge_embedding", "onehot_to_feature_x")
SKIPPED = ("onehot_idx_to_onehot", "one_hot_modality", "reduce_total_enegy", "reduce_total_energy", "force_output")
RESCALE = "rescale_atomic_energy"


def _keys():
    import sevenn._keys as KEY  # lazy: the module imports without sevenn

    return KEY


def _block_irreps_out(block: nn.ModuleDict) -> o3.Irreps:
    return o3.Irreps(block["equivariant_gate"].gate.irreps_out)


def _run(modules, data: dict) -> dict:
    for module in modules.values() if isinstance(modules, nn.ModuleDict) else modules:
        data = module(data)
    return data


class SevenNetHead(E0Table, nn.Module):
    """A SevenNet-style head: its own interaction blocks (optional), the readout and scale/shift.

    ``interaction_energy(h, h_iso, species)`` is ``atomic(h_i) - atomic(h_iso[s_i])`` where
    ``atomic`` is SevenNet's per-atom energy (readout, then ``scale * . + shift``): the shift
    cancels, an isolated atom gives zero, and the E0s (float64, outside the state dict) add the
    absolute energy back.
    """

    def __init__(self, blocks: list[nn.ModuleDict], readout: nn.ModuleDict, rescale: nn.Module,
                 irreps_in: o3.Irreps, num_species: int, modal: int | None, num_modalities: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.readout = readout
        self.rescale = rescale
        self.irreps_in = o3.Irreps(irreps_in)
        self.num_species = int(num_species)
        self.modal = modal
        self.num_modalities = int(num_modalities)
        self._init_e0(self.num_species)

    @property
    def scale(self) -> torch.Tensor:
        """SevenNet's per-species energy scale (a frozen parameter)."""
        return self.rescale.scale

    def features(self, h: torch.Tensor, context: dict) -> torch.Tensor:
        """The head's own blocks on the shared features (identity without blocks)."""
        if not len(self.blocks):
            return h
        data = dict(context)
        data[_keys().NODE_FEATURE] = h
        for block in self.blocks:
            data = _run(block, data)
        return data[_keys().NODE_FEATURE]

    def atomic_energy(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """SevenNet's per-atom energy (readout, scale and shift) of features ``h`` of ``species``."""
        KEY = _keys()
        batch = torch.zeros_like(species)  # per-atom energies: one modal row serves every atom
        data = {KEY.NODE_FEATURE: h, KEY.ATOM_TYPE: species, KEY.BATCH: batch}
        data.update(modal_inputs(self.modal, self.num_modalities, batch))
        data = _run(self.readout, data)
        data = self.rescale(data)
        return data[KEY.ATOMIC_ENERGY].squeeze(-1)

    def interaction_energy(self, h: torch.Tensor, h_iso: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        everyone = torch.arange(h_iso.shape[0], device=h_iso.device)
        return self.atomic_energy(h, species) - self.atomic_energy(h_iso, everyone)[species]


def modal_inputs(modal: int | None, num_modalities: int, batch: torch.Tensor) -> dict:
    """SevenNet's modality inputs: the one modal index, repeated for every structure of ``batch``
    (sevenn indexes the per-structure rows by each atom's batch index)."""
    if modal is None:
        return {}
    KEY = _keys()
    n_graphs = int(batch.max()) + 1 if batch.numel() else 1
    index = torch.full((n_graphs,), modal, dtype=torch.int64, device=batch.device)
    return {KEY.MODAL_TYPE: index, KEY.MODAL_ATTR: nn.functional.one_hot(index, num_modalities)}


class SevenNetModel(ForeignModel):
    """A SevenNet model as representation (embedding + shared blocks) plus named heads.

    Build it with :func:`ase_adapt.models.sevennet_io.load_sevennet` (or
    ``ase_adapt.load_model("sevennet:...")``). ``modal`` is the index of the chosen fidelity of a
    multi-fidelity model (``config["modal"]`` holds its name).
    """

    native_head = SevenNetHead
    native_head_type = "sevennet"

    def __init__(self, sequential: nn.Module, *, shared_blocks: int | None = None, modal: str | None = None,
                 config: dict | None = None) -> None:
        type_map = dict(sequential.type_map)
        elements = [z for z, _ in sorted(type_map.items(), key=lambda zi: zi[1])]
        super().__init__(elements=elements, cutoff=float(sequential.cutoff), config=config)
        embedding, blocks, readout, rescale = _split_modules(sequential)
        n_blocks = len(blocks)
        shared = n_blocks if shared_blocks is None else int(shared_blocks)
        if not 1 <= shared <= n_blocks:
            raise ValueError(f"shared_blocks must be in [1, {n_blocks}] for this model, got {shared_blocks}")
        modal_map = dict(sequential.modal_map or {})
        self.num_modalities = len(modal_map)
        self.modal = None if modal is None else int(modal_map[modal])
        self.embedding = embedding
        self.interactions = nn.ModuleList(blocks[:shared])
        self.irreps_features = _block_irreps_out(blocks[shared - 1])
        main = SevenNetHead(blocks[shared:], readout, rescale, self.irreps_features, len(self.elements),
                            self.modal, self.num_modalities)
        self.config.update(elements=list(self.elements), cutoff=self.cutoff, shared_blocks=shared,
                           num_blocks=n_blocks, modal=modal, modals=sorted(modal_map, key=modal_map.get))
        self.add_head("main", main)
        self.eval()
        main.set_e0(self.isolated_energies(main))

    # ------------------------------------------------------------------ heads
    # ------------------------------------------------------------------ compute
    def _context(self, vectors: torch.Tensor, edge_index: torch.Tensor, types: torch.Tensor,
                 batch: torch.Tensor, graph_cutoff: float) -> dict:
        """SevenNet's input dict: edge embedding at the graph radius, one-hots in the model dtype."""
        KEY = _keys()
        if graph_cutoff > self.cutoff * (1 + 1e-9):
            raise ValueError(f"graph radius {graph_cutoff} Å exceeds the SevenNet cutoff {self.cutoff} Å")
        edge = self.embedding["edge_embedding"]
        r = torch.linalg.norm(vectors, dim=-1)
        r_env = r if graph_cutoff >= self.cutoff * (1 - 1e-9) else r * (self.cutoff / graph_cutoff)
        onehot = nn.functional.one_hot(types, len(self.elements)).to(vectors.dtype)
        data = {
            KEY.EDGE_VEC: vectors, KEY.EDGE_LENGTH: r, KEY.EDGE_IDX: edge_index,
            KEY.EDGE_EMBEDDING: edge.basis_function(r) * edge.cutoff_function(r_env).unsqueeze(-1),
            KEY.EDGE_ATTR: edge.spherical(vectors),
            KEY.NODE_FEATURE: onehot, KEY.NODE_ATTR: onehot, KEY.ATOM_TYPE: types, KEY.BATCH: batch,
        }
        data.update(modal_inputs(self.modal, self.num_modalities, batch))
        return data

    def _shared(self, graph, species, positions, cell):
        """Shared features of the graph's atoms, then one virtual edgeless atom per species present."""
        vectors = graph.edge_vectors(positions, cell)
        present = torch.unique(species)
        types = torch.cat([species, present])
        batch = torch.cat([graph.batch, graph.batch.new_zeros(present.shape[0])])
        data = self._context(vectors, graph.edge_index, types, batch, graph.cutoff)
        data = self.embedding["onehot_to_feature_x"](data)
        for block in self.interactions:
            data = _run(block, data)
        return data[_keys().NODE_FEATURE], (data, present)

    def _head_energy(self, head, h, context, species, n):
        data, present = context
        g = head.features(h, data) if isinstance(head, SevenNetHead) else h
        g_iso = g.new_zeros((len(self.elements), g.shape[1])).index_copy(0, present, g[n:])
        return head.interaction_energy(g[:n], g_iso, species)

    @torch.no_grad()
    def isolated_energies(self, head: SevenNetHead) -> list[float]:
        """SevenNet's energy of each element as an isolated atom (eV), through ``head``."""
        types = torch.arange(len(self.elements), device=self.device)
        vectors = torch.zeros((0, 3), dtype=self.dtype, device=self.device)
        edges = torch.zeros((2, 0), dtype=torch.int64, device=self.device)
        data = self._context(vectors, edges, types, torch.zeros_like(types), self.cutoff)
        data = self.embedding["onehot_to_feature_x"](data)
        for block in self.interactions:
            data = _run(block, data)
        g = head.features(data[_keys().NODE_FEATURE], data)
        return head.atomic_energy(g, types).to(torch.float64).tolist()


def _split_modules(sequential: nn.Module) -> tuple[nn.ModuleDict, list[nn.ModuleDict], nn.ModuleDict, nn.Module]:
    """SevenNet's modules as (embedding, interaction blocks, readout, rescale); unknown ones refused."""
    embedding, blocks, readout, rescale = nn.ModuleDict(), {}, nn.ModuleDict(), None
    for name, module in sequential._modules.items():
        m = re.fullmatch(r"(\d+)_(\w+)", name)
        if m and m.group(2) in BLOCK_PARTS:
            blocks.setdefault(int(m.group(1)), nn.ModuleDict())[m.group(2)] = module
        elif name in EMBEDDING_PARTS and not blocks:
            embedding[name] = module
        elif name == RESCALE:
            rescale = module
        elif name in SKIPPED:
            if any(True for _ in module.parameters()):
                raise NotImplementedError(f"SevenNet module {name!r} has weights the adapter would ignore")
        elif blocks and rescale is None:
            readout[name] = module  # reduce_input_to_hidden, reduce_hidden_to_energy, readout_FCN...
        else:
            raise NotImplementedError(f"SevenNet module {name!r} ({type(module).__name__}) is not supported "
                                      "by the ase-adapt adapter")
    if set(embedding) != set(EMBEDDING_PARTS) or not blocks or rescale is None or not len(readout):
        raise NotImplementedError(f"unexpected SevenNet model layout: {list(sequential._modules)}")
    ordered = [blocks[k] for k in sorted(blocks)]
    if sorted(blocks) != list(range(len(blocks))) or any(set(b) != set(BLOCK_PARTS) for b in ordered):
        raise NotImplementedError(f"unexpected SevenNet interaction blocks: {list(sequential._modules)}")
    return embedding, ordered, readout, rescale
