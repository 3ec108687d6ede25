"""Model hyperparameters (a frozen dataclass) and :func:`build_model`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from e3nn import o3

from .. import _keys as K
from .._dtypes import as_dtype, dtype_name
from .._settings import load_yaml_mapping
from ..elements import as_atomic_numbers
from .blocks import EnergyHead, InteractionBlock, RadialEmbedding, SpeciesEmbedding
from .mlff import MLFF


# Å. Message-passing MLFFs use 4-7 Å; a larger radius makes neighbour lists and memory explode
# (1e6 Å hung before this limit) without any physics gained.
MAX_CUTOFF = 20.0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the MLFF. Everything needed to rebuild it from a checkpoint."""

    elements: tuple[int, ...] = (1, 6, 7, 8)
    cutoff: float = 5.0
    channels: int = 32
    l_max: int = 1
    num_layers: int = 3
    head_layers: int = 0          # of num_layers, the last head_layers blocks are owned by each head
    num_bessel: int = 8
    envelope_p: int = 6
    radial_hidden: int = 32
    head_hidden: int = 16
    avg_num_neighbors: float = 12.0
    heads: tuple[str, ...] = (K.MAIN_HEAD, K.PRIOR_HEAD)
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", tuple(as_atomic_numbers(self.elements)))
        object.__setattr__(self, "heads", tuple(self.heads))
        if not self.elements:
            raise ValueError("a model needs at least one element")
        as_dtype(self.dtype)  # validates
        for name in ("channels", "num_layers", "num_bessel", "radial_hidden", "head_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.head_layers < self.num_layers:
            raise ValueError(f"head_layers must be in [0, num_layers) = [0, {self.num_layers}), got {self.head_layers}"
                             " (at least one interaction block is shared)")
        if not 0 < self.cutoff <= MAX_CUTOFF:  # also refuses NaN
            raise ValueError(f"cutoff must be in (0, {MAX_CUTOFF}] Å, got {self.cutoff}")
        if self.l_max < 0 or not self.avg_num_neighbors > 0:
            raise ValueError("l_max must be >= 0 and avg_num_neighbors > 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["elements"] = list(self.elements)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        if isinstance(d.get("dtype"), torch.dtype):
            d = {**d, "dtype": dtype_name(d["dtype"])}
        return cls(**d)

    @classmethod
    def from_yaml(cls, path_or_preset: str | Path) -> "ModelConfig":
        """Load from a YAML file, or a shipped preset name (e.g. ``"model-default"``)."""
        return cls.from_dict(load_yaml_mapping(path_or_preset))

    @property
    def torch_dtype(self) -> torch.dtype:
        return as_dtype(self.dtype)

    @property
    def shared_layers(self) -> int:
        return self.num_layers - self.head_layers

    def hidden_irreps(self) -> o3.Irreps:
        return o3.Irreps([(self.channels, (l, (-1) ** l)) for l in range(self.l_max + 1)])

    def layer_irreps(self, layer: int) -> o3.Irreps:
        """Output irreps of interaction layer ``layer`` along one path (the last one gives scalars)."""
        return o3.Irreps(f"{self.channels}x0e") if layer == self.num_layers - 1 else self.hidden_irreps()

    def interaction(self, layer: int) -> InteractionBlock:
        """A freshly initialised interaction block for position ``layer`` (uses the global RNG)."""
        irreps_in = o3.Irreps(f"{self.channels}x0e") if layer == 0 else self.layer_irreps(layer - 1)
        return InteractionBlock(irreps_in, o3.Irreps.spherical_harmonics(self.l_max), self.layer_irreps(layer),
                                len(self.elements), self.num_bessel, self.radial_hidden, self.avg_num_neighbors)

    def head(self, hidden: int | None = None) -> EnergyHead:
        """A freshly initialised head: its own blocks (``head_layers``) and readout (uses the global RNG)."""
        blocks = [self.interaction(k) for k in range(self.shared_layers, self.num_layers)]
        return EnergyHead(self.layer_irreps(self.shared_layers - 1), len(self.elements),
                          hidden or self.head_hidden, blocks)


def build_model(config: ModelConfig | None = None, **overrides: Any) -> MLFF:
    """Build an untrained MLFF with the default hyperparameters, or ``config`` with ``overrides``.

    Example: ``build_model(elements=["H", "C", "O"], cutoff=4.5, channels=16, dtype="float64")``.
    Initialisation is seeded by ``config.seed`` and leaves the global RNG untouched.
    """
    config = dataclasses.replace(config or ModelConfig(), **overrides)
    irreps_sh = o3.Irreps.spherical_harmonics(config.l_max)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        embedding = SpeciesEmbedding(len(config.elements), config.channels)
        interactions = [config.interaction(k) for k in range(config.shared_layers)]
        heads = {h: config.head() for h in config.heads}
        model = MLFF(
            elements=config.elements,
            cutoff=config.cutoff,
            embedding=embedding,
            radial=RadialEmbedding(config.cutoff, config.num_bessel, config.envelope_p),
            spherical_harmonics=o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component"),
            interactions=interactions,
            heads=heads,
            config=config.to_dict(),
        )
    return model.to(config.torch_dtype)


def new_head(model: MLFF, name: str, hidden: int | None = None) -> EnergyHead:
    """Create and attach a fresh head (same architecture, dtype and device as the model's) named ``name``."""
    config = ModelConfig.from_dict({**model.config, "heads": (name,)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(model.config.get("seed", 0)) + len(model.heads) + 1)
        head = config.head(hidden or int(model.config.get("head_hidden", 16)))
    head = head.to(device=model.device, dtype=model.dtype)
    model.add_head(name, head)
    return head
