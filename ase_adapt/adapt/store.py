"""Where a calculator keeps its adaptations: the adapted weights in place, the base snapshot,
and an LRU cache of per-system adaptations (weights and the adaptation state: radius, shift
report, TTT record)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Adaptation", "AdaptationStore"]


@dataclass
class Adaptation:
    weights: list[torch.Tensor]
    state: Any  # pipeline.AdaptationState (not imported: the store knows nothing of the pipeline)


class AdaptationStore:
    """The adaptable parameters of one (private) model, their base values and a per-system cache."""

    def __init__(self, params: list[torch.nn.Parameter], size: int = 16) -> None:
        if size < 1:
            raise ValueError(f"cache_size must be >= 1, got {size}")
        self.params, self.size = params, int(size)
        self.base = [p.detach().clone() for p in params]
        self._cache: OrderedDict[str, Adaptation] = OrderedDict()

    def load(self, values: list[torch.Tensor]) -> None:
        """Write ``values`` into the parameters (tensors already equal are left alone)."""
        with torch.no_grad():
            for p, v in zip(self.params, values):
                if not torch.equal(p, v):
                    p.copy_(v)

    def load_base(self) -> None:
        self.load(self.base)

    def get(self, fingerprint: str) -> Adaptation | None:
        found = self._cache.get(fingerprint)
        if found is not None:
            self._cache.move_to_end(fingerprint)
        return found

    def put(self, fingerprint: str, state: Any) -> None:
        """Cache the parameters' current values and ``state`` as the adaptation of ``fingerprint``."""
        self._cache[fingerprint] = Adaptation([p.detach().clone() for p in self.params], state)
        self._cache.move_to_end(fingerprint)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def clear(self) -> None:
        self._cache.clear()
