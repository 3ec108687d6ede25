"""Training room: datasets, losses, fine-tuning strategies, LoRA and E0 tools."""

from .e0 import (
    E0Warning, apply_e0, average_e0, e0_from_json, e0_to_json, head_e0, isolated_atom_e0, reestimate_e0,
)
from .lora import LoRALinear, LoRAScalarLinear, inject_lora, lora_parameters, merge_lora

__all__ = [
    "E0Warning", "apply_e0", "average_e0", "e0_from_json", "e0_to_json", "head_e0",
    "isolated_atom_e0", "reestimate_e0",
    "LoRALinear", "LoRAScalarLinear", "inject_lora", "lora_parameters", "merge_lora",
]
