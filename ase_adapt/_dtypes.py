"""The floating-point precisions a model can run in: one map from names to torch dtypes."""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "as_dtype", "dtype_name"]

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
