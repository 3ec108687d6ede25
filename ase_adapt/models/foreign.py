"""Shared base of adapters that present a foreign MLFF (SevenNet, MACE) through the built-in interface.

:class:`ForeignModel` is a :class:`~ase_adapt.models.base.HeadedModel` (heads, species, parameter
groups, forward with autograd forces and stress: the conventions every model shares) whose
subclasses wrap a foreign model's modules and can name what they are built from: ``head_spec``
records each head's kind so that ``load_model`` rebuilds a saved (prepared) adapter from its base
model offline before loading the weights strictly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .base import HeadedModel
from .blocks import EnergyHead

__all__ = ["ForeignModel", "split_choice"]


def split_choice(spec: str, given: str | None, what: str) -> tuple[str, str | None]:
    """``"NAME@CHOICE"`` -> (NAME, CHOICE): the modal or head a foreign model spec names after ``@``.

    A spec that is an existing file is never split; a choice in the spec and a different one passed
    as ``given`` raise ValueError naming ``what`` ("modal", "MACE head").
    """
    import os

    if "@" in spec and not os.path.isfile(spec):
        spec, _, named = spec.rpartition("@")
        if given is not None and given != named:
            raise ValueError(f"two {what}s given: {named!r} in the name and {given!r} as an argument")
        given = named
    return spec, given


class ForeignModel(HeadedModel):
    """Base of foreign-model adapters; see :class:`~ase_adapt.models.base.HeadedModel`.

    ``save`` writes an ase-adapt checkpoint that also records the base model's identity;
    ``ase_adapt.load_model(path)`` rebuilds the adapter from that base model (``config["source"]``,
    which must be available offline) and loads every weight strictly.
    """

    native_head: type = nn.Module  # the adapter's own head type (a copy of its main head)
    native_head_type = "native"    # its name in the checkpoint header

    def check_head(self, name: str, head: nn.Module) -> None:
        """A readout MLP on the scalar features, or a head of the adapter's own type; one E0 per element."""
        if isinstance(head, EnergyHead):
            if len(head.blocks):
                raise ValueError(f"head {name!r}: an EnergyHead on a {type(self).__name__} cannot own built-in "
                                 "interaction blocks; use new_head(name, copy_main=True) for a copy of the main head")
        elif not isinstance(head, self.native_head):
            raise TypeError(f"head {name!r}: expected an EnergyHead or {self.native_head.__name__}, "
                            f"got {type(head).__name__}")
        if hasattr(head, "irreps_in") and head.irreps_in != self.irreps_features:
            raise ValueError(f"head {name!r} expects {head.irreps_in}, features are {self.irreps_features}")
        if len(head.e0) != len(self.elements):
            raise ValueError(f"head {name!r} has {len(head.e0)} E0s for {len(self.elements)} elements")

    def head_spec(self, name: str) -> dict:
        """``{"type": native_head_type}`` (a copy of the main head) or ``{"type": "mlp", "hidden": n}``."""
        head = self.heads[name]
        if isinstance(head, self.native_head):
            return {"type": self.native_head_type}
        return {"type": "mlp", "hidden": int(head.mlp.hs[1])}

    def new_head(self, name: str, *, copy_main: bool = False, hidden: int = 16, seed: int = 0) -> nn.Module:
        """Create and attach a head named ``name`` (same dtype and device as the model).

        Default: an untrained :class:`EnergyHead` MLP (``hidden`` neurons, seeded) on the scalar
        features, E0s zero. ``copy_main=True``: a copy of the main head (its own blocks, readouts,
        scale/shift and E0s), the start for a head that follows a prior whose energies resemble
        the model's.
        """
        if copy_main:
            head = copy.deepcopy(self.heads["main"])
        else:
            if self.irreps_features.lmax != 0:
                raise ValueError(f"the features ({self.irreps_features}) are not all scalars: use copy_main=True, "
                                 "or load the model so that its representation ends on scalars")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                head = EnergyHead(self.irreps_features, len(self.elements), hidden)
        head = head.to(device=self.device, dtype=self.dtype)
        self.add_head(name, head)
        return head
