"""Shared fixtures: tiny in-process models (no network, a second to build)."""

from __future__ import annotations

import copy

import pytest
import torch

import ase_adapt

# Tiny models gain nothing from intra-op threads; on a 2-core machine the spinning OpenMP workers
# cost ~1.5x in CPU time. Results do not depend on it (checked by the determinism tests).
torch.set_num_threads(1)

ELEMENTS = ("H", "C", "N", "O")
TINY = dict(channels=8, num_layers=2, l_max=1, radial_hidden=8, head_hidden=8, cutoff=4.0)


def tiny_model(**overrides) -> ase_adapt.MLFF:
    """A tiny untrained model; ``overrides`` go to :func:`ase_adapt.build_model`."""
    return ase_adapt.build_model(**{**TINY, "elements": ELEMENTS, **overrides})


@pytest.fixture
def make_model():
    """:func:`tiny_model`, as a fixture (test modules do not import conftest)."""
    return tiny_model


@pytest.fixture(scope="session")
def _models() -> dict[str, ase_adapt.MLFF]:
    return {dt: tiny_model(dtype=dt) for dt in ("float32", "float64")}


@pytest.fixture
def model32(_models) -> ase_adapt.MLFF:
    """A fresh float32 tiny model (a copy: tests may change its weights)."""
    return copy.deepcopy(_models["float32"])


@pytest.fixture
def model64(_models) -> ase_adapt.MLFF:
    """A fresh float64 tiny model with non-trivial E0s and a raised head scale."""
    model = copy.deepcopy(_models["float64"])
    with torch.no_grad():
        for head in model.heads.values():
            head.scale.fill_(20.0)
    model.heads["main"].set_e0([-13.6, -1029.8, -1485.3, -2042.6])
    return model


class CallCounter:
    """Counts calls of ``model.forward`` (the model is evaluated only through it)."""

    def __init__(self, model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        original = model.forward

        def counted(*args, **kwargs):
            self.n += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(model, "forward", counted)


@pytest.fixture
def count_calls(monkeypatch):
    return lambda model: CallCounter(model, monkeypatch)
