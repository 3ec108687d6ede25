"""The TTT-ready equivariant MLFF: representation, named heads, builder."""

from .blocks import EnergyHead, InteractionBlock, RadialEmbedding, SpeciesEmbedding
from .build import ModelConfig, build_model, new_head
from .mlff import MLFF

__all__ = [
    "MLFF", "ModelConfig", "build_model", "new_head",
    "EnergyHead", "InteractionBlock", "RadialEmbedding", "SpeciesEmbedding",
]
