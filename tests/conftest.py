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


def ttt_ready_model(out_dir, *, epochs: int, n_frames: int, seed: int) -> ase_adapt.MLFF:
    """A tiny TTT-ready model: joint training (main on EMT, prior on LJ) on toy H/C/O clusters."""
    from ase_adapt.testing import toy_frames
    from ase_adapt.train import OptimSettings, TrainSettings, train_model

    model = tiny_model(elements=("H", "C", "O"))
    s = TrainSettings(mode="joint", optim=OptimSettings(epochs=epochs, batch_size=8, progress=False))
    train_model(model, toy_frames(n_frames, seed=seed), s, out_dir)
    return model


@pytest.fixture(scope="session")
def ready(tmp_path_factory) -> ase_adapt.MLFF:
    """A tiny TTT-ready model with training statistics, shared by the calculator tests.

    Calculators adapt private copies, so tests that only build calculators on it never change
    it; a test that writes to it must deep-copy it first.
    """
    return ttt_ready_model(tmp_path_factory.mktemp("ready"), epochs=6, n_frames=24, seed=30)


def fast_ttt():
    """TTT settings for calculator mechanics: few steps, no sampling MD, no guard (tested apart)."""
    from ase_adapt.adapt.ttt import TTTSettings

    return TTTSettings(lr=1e-2, max_steps=30, md_steps=0, guard=None)


def load_script(path, name: str):
    """Import a benchmark script (not a package module) under ``name``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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
