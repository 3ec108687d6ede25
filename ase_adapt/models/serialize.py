"""How a model becomes a checkpoint: (metadata, tensors) and the atomic write.

Lives with the model so that ``MLFF.save`` needs nothing above :mod:`ase_adapt.models`; reading,
validating and rebuilding a model from a file is :mod:`ase_adapt.checkpoint`'s job (the format is
described there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file

from .. import _keys as K
from .._dtypes import dtype_name
from .._io import atomic_write
if TYPE_CHECKING:  # a type only: serialize never imports the model at run time
    from .mlff import MLFF

__all__ = ["checkpoint_payload", "save_model"]


def _split_stats(stats: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Training statistics -> (JSON-able scalars, array tensors)."""
    scalars, arrays = {}, {}
    for key, value in (stats or {}).items():
        if isinstance(value, (np.ndarray, torch.Tensor)):
            arrays[K.STATS_PREFIX + key] = torch.as_tensor(np.asarray(value)).contiguous()
        else:
            scalars[key] = value
    return scalars, arrays


def checkpoint_payload(model: "MLFF") -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The (metadata, tensors) pair that describes ``model`` completely."""
    scalars, arrays = _split_stats(getattr(model, "training_stats", None))
    # a foreign adapter also records what kind of head each one is, to rebuild it before loading
    spec = getattr(model, "head_spec", None)
    heads = {n: {"e0": list(h.e0), **(spec(n) if spec else {})} for n, h in model.heads.items()}
    config = dict(model.config)
    config["heads"] = list(model.heads.keys())
    # the dtype the weights have now (a float32-built model may have been cast to float64)
    config["dtype"] = dtype_name(model.dtype)
    metadata = {
        K.META_FORMAT: K.FORMAT_NAME,
        K.META_VERSION: str(K.FORMAT_VERSION),
        K.META_CONFIG: json.dumps(config),
        K.META_HEADS: json.dumps(heads),
        K.META_STATS: json.dumps(scalars),
    }
    tensors = {K.STATE_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(arrays)
    return metadata, tensors


def save_model(model: "MLFF", path: str | Path) -> Path:
    """Save ``model`` (weights, config, E0s, training statistics) atomically to ``path``."""
    metadata, tensors = checkpoint_payload(model)
    path = Path(path)
    if path.suffix == ".pt":
        return atomic_write(path, lambda p: torch.save({"metadata": metadata, "tensors": tensors}, p))
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))
