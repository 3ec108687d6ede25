"""Training room: datasets, losses, fine-tuning strategies, LoRA and E0 tools."""

from .e0 import (
    E0Warning, apply_e0, average_e0, e0_from_json, e0_to_json, head_e0, isolated_atom_e0, reestimate_e0,
)
from .lora import LoRALinear, LoRAScalarLinear, inject_lora, lora_parameters, merge_lora
from .data import (
    DataWarning, check_labels, isolated_atom_frames, read_frames, split_frames, training_frames, write_frames,
)
from .label import OnError, label_frames
from ..losses import LossKind, LossWeights
from .trainer import OptimSettings, Scheduler, TrainResult
from .modes import E0Source, LabelKeys, TrainMode, TrainSettings, train_model
from .finetune import E0Update, FinetuneSettings, FreezeMode, ReplayLabels, Strategy, finetune_model, pseudolabel
from .prepare import PrepareResult, PrepareSettings, prepare_model

__all__ = [
    "E0Warning", "apply_e0", "average_e0", "e0_from_json", "e0_to_json", "head_e0",
    "isolated_atom_e0", "reestimate_e0",
    "LoRALinear", "LoRAScalarLinear", "inject_lora", "lora_parameters", "merge_lora",
    "DataWarning", "check_labels", "isolated_atom_frames", "read_frames", "split_frames", "training_frames",
    "write_frames", "OnError", "label_frames",
    "LossKind", "LossWeights", "OptimSettings", "Scheduler", "TrainResult",
    "E0Source", "LabelKeys", "TrainMode", "TrainSettings", "train_model",
    "E0Update", "FinetuneSettings", "FreezeMode", "ReplayLabels", "Strategy", "finetune_model", "pseudolabel",
    "PrepareResult", "PrepareSettings", "prepare_model",
]
