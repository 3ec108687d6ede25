"""What computes a run's forces, as plain data, so that a resumed run can be held to the same physics.

:func:`calculator_identity` describes a calculator: for ase-adapt calculators the model's weights
(by content), head, dtype and unknown-element policy, and for an :class:`AdaptiveCalculator` the
prior and every adaptation setting; for any other ASE calculator its class and parameters.
:func:`differences` names what differs between two descriptions, in words a user can act on.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from typing import Any, Mapping

__all__ = ["calculator_identity", "weights_digest", "differences"]


def weights_digest(model: Any) -> str:
    """A content hash of a model: its config, weights and E0s (a file retrained in place is a new model)."""
    import torch

    h = hashlib.sha256(json.dumps(getattr(model, "config", {}), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    for name, head in getattr(model, "heads", {}).items():
        h.update(f"{name}:{list(getattr(head, 'e0', []))}".encode())
    return h.hexdigest()[:16]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _prior_identity(prior: Any) -> Any:
    if prior is None:
        return None
    spec = getattr(prior, "spec", None)
    if spec is not None:
        return str(spec)
    return {"calculator": f"{type(prior).__module__}.{type(prior).__qualname__}",
            "parameters": _plain(dict(getattr(prior, "parameters", {}) or {}))}


def calculator_identity(calc: Any) -> dict[str, Any]:
    """Plain data naming what ``calc`` computes with (see the module docstring)."""
    from ..adaptive import AdaptiveCalculator
    from ..calculator import MLFFCalculator

    out: dict[str, Any] = {"calculator": f"{type(calc).__module__}.{type(calc).__qualname__}"}
    if isinstance(calc, MLFFCalculator):
        model = calc.model
        if isinstance(calc, AdaptiveCalculator):  # the base weights, even if this calculator adapted already
            current = [p.detach().clone() for p in calc._store.params]
            calc._store.load_base()
            try:
                digest = weights_digest(model)
            finally:
                calc._store.load(current)
        else:
            digest = weights_digest(model)
        out.update(model=digest, head=calc.head, dtype=str(model.dtype).replace("torch.", ""),
                   unknown_elements=calc.unknown_elements)
        if isinstance(calc, AdaptiveCalculator):
            out.update(prior=_prior_identity(calc.prior), adaptation=_plain(calc.settings))
    else:
        out["parameters"] = _plain(dict(getattr(calc, "parameters", {}) or {}))
    return json.loads(json.dumps(out, sort_keys=True))


def differences(recorded: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``["temperature_K: 500.0 in the run, 300.0 now", ...]`` for every key whose value differs."""
    out = []
    for key in sorted(set(recorded) | set(now), key=str):
        a, b = recorded.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(differences(a, b, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key}: {a!r} in the run, {b!r} now")
    return out
