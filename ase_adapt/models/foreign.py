"""Shared base of adapters that present a foreign MLFF (SevenNet, MACE) through the built-in interface.

:class:`ForeignModel` is a :class:`~ase_adapt.models.base.HeadedModel` (heads, species, parameter
groups, forward with autograd forces and stress: the conventions every model shares) whose
subclasses wrap a foreign model's modules and can name what they are built from: ``head_spec``
records each head's kind so that ``load_model`` rebuilds a saved (prepared) adapter from its base
model offline before loading the weights strictly.
"""

from __future__ import annotations

from .base import HeadedModel

__all__ = ["ForeignModel"]


class ForeignModel(HeadedModel):
    """Base of foreign-model adapters; see :class:`~ase_adapt.models.base.HeadedModel`.

    ``save`` writes an ase-adapt checkpoint that also records the base model's identity;
    ``ase_adapt.load_model(path)`` rebuilds the adapter from that base model (``config["source"]``,
    which must be available offline) and loads every weight strictly.
    """

    def head_spec(self, name: str) -> dict:
        """What kind of head ``name`` is (JSON), enough to rebuild it before its weights load."""
        raise NotImplementedError

