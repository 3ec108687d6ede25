"""The model's named heads: public names users type, identifier keys the weights are saved under.

Head names follow conventions that carry punctuation (``"prior:gfn-ff"``, ``"prior:gfn1-xtb"``),
and such names make awkward state-dict keys: ``heads.prior:gfn-ff.mlp.layer0.weight`` breaks
tools that split, glob or attribute-access module paths. :class:`HeadDict` therefore stores
each head under a plain identifier (:func:`head_key`: ``prior_gfn_ff``) while every lookup,
iteration and ``in`` test uses the public name. Two names that map to one key are refused.

Checkpoints of format version 1 (and training states of that time) saved heads under their public
names; a ``load_state_dict`` pre-hook translates such keys, so every loading path accepts them.
"""

from __future__ import annotations

import re
from typing import Iterator, Mapping

import torch
from torch import nn

__all__ = ["HeadDict", "head_key", "E0Table"]

_NOT_IDENTIFIER = re.compile(r"[^0-9A-Za-z_]")


def head_key(name: str) -> str:
    """The state-dict key of head ``name``: every character outside [0-9A-Za-z_] becomes ``_``."""
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"invalid head name {name!r}: a non-empty string without '.'")
    return _NOT_IDENTIFIER.sub("_", name)


class HeadDict(nn.ModuleDict):
    """A :class:`torch.nn.ModuleDict` addressed by public head names, stored under :func:`head_key`."""

    def __init__(self, heads: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        self._names: dict[str, str] = {}  # public name -> module key, in insertion order
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)
        for name, module in (heads or {}).items():
            self[name] = module

    def key_of(self, name: str) -> str:
        """The state-dict key under which head ``name`` is stored."""
        return self._names[name]

    def __setitem__(self, name: str, module: nn.Module) -> None:
        key = head_key(name)
        holder = next((n for n, k in self._names.items() if k == key and n != name), None)
        if holder is not None:
            raise ValueError(f"head name {name!r} clashes with head {holder!r} (both are saved as {key!r})")
        self._names[name] = key
        self.add_module(key, module)

    def __getitem__(self, name: str) -> nn.Module:
        if name not in self._names:
            raise KeyError(name)
        return self._modules[self._names[name]]

    def __delitem__(self, name: str) -> None:
        del self._modules[self._names.pop(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def keys(self):
        return self._names.keys()

    def items(self):
        return [(n, self._modules[k]) for n, k in self._names.items()]

    def values(self):
        return [self._modules[k] for k in self._names.values()]

    def pop(self, name: str) -> nn.Module:
        module = self[name]
        del self[name]
        return module

    def update(self, heads: Mapping[str, nn.Module]) -> None:  # type: ignore[override]
        for name, module in heads.items():
            self[name] = module

    def clear(self) -> None:
        self._names.clear()
        self._modules.clear()

    def legacy_keys(self, prefix: str, state_keys) -> dict[str, str]:
        """{old key: new key} for state-dict keys that name a head by its public name (format 1)."""
        renames = {}
        for old in state_keys:
            if not old.startswith(prefix):
                continue
            name, _, rest = old[len(prefix):].partition(".")
            if name in self._names and self._names[name] != name:
                renames[old] = f"{prefix}{self._names[name]}.{rest}"
        return renames


def _rename_legacy_keys(heads: HeadDict, state_dict, prefix, *_args) -> None:
    """load_state_dict pre-hook: weights saved under public head names load into their keys."""
    for old, new in heads.legacy_keys(prefix, list(state_dict)).items():
        if new not in state_dict:
            state_dict[new] = state_dict.pop(old)


class E0Table:
    """A head's per-species reference energies (E0): float64, outside the state dict.

    The checkpoint's JSON header holds them, so a float32 model never rounds them. Every head type
    (built-in, SevenNet, MACE) mixes this in and calls ``_init_e0(num_species)`` in ``__init__``.
    """

    def _init_e0(self, num_species: int) -> None:
        self.e0 = [0.0] * int(num_species)
        self._e0_cache: dict[torch.device, torch.Tensor] = {}

    def set_e0(self, e0: list[float]) -> None:
        if len(e0) != len(self.e0):
            raise ValueError(f"expected {len(self.e0)} E0 values, got {len(e0)}")
        self.e0 = [float(x) for x in e0]
        self._e0_cache.clear()

    def e0_table(self, device: torch.device) -> torch.Tensor:
        if device not in self._e0_cache:
            self._e0_cache[device] = torch.tensor(self.e0, dtype=torch.float64, device=device)
        return self._e0_cache[device]
