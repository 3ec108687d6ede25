"""The floating-point precisions a model can run in: one map from names to torch dtypes."""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "as_dtype", "as_device", "dtype_name"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def as_dtype(value: str | torch.dtype, what: str = "dtype") -> torch.dtype:
    """``"float32"``/``"float64"`` or the torch dtype itself -> the torch dtype; anything else is refused.

    Half precisions (float16, bfloat16) are refused: forces by autograd and the small energy
    differences MD needs are not resolved in them.
    """
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    raise ValueError(f"{what} must be one of {sorted(DTYPES)}, got {value!r}")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).replace("torch.", "")


def as_device(value: str | torch.device) -> torch.device:
    """A torch device that this machine has; a CUDA device without CUDA is refused before any work."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {value!r} is not a torch device ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {value!r}: this torch build or machine has no CUDA device; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {value!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device
