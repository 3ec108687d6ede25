"""CUDA paths (checklist 14): checkpoints cross devices, results are float64 numpy arrays, a
calculator, TTT and training run on the GPU and agree with the CPU. Skipped without a GPU; the
CPU paths are covered everywhere else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

import ase_adapt
from ase_adapt import AdaptiveCalculator, MLFFCalculator
from ase_adapt.testing import toy_frames, toy_prior
from ase_adapt.train import OptimSettings, TrainSettings, train_model
from ase_adapt.adapt.ttt import TTTSettings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _deep(dtype: str = "float64") -> ase_adapt.MLFF:
    from conftest import tiny_model  # noqa: PLC0415

    return tiny_model(dtype=dtype, num_layers=3, head_layers=2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_checkpoint_crosses_devices(tmp_path, dtype):
    atoms = molecule("CH3CH2OH")
    cpu = _deep(dtype)
    e_cpu = MLFFCalculator(cpu).get_potential_energy(atoms)
    f_cpu = MLFFCalculator(cpu).get_forces(atoms)
    cpu.save(tmp_path / "cpu.safetensors")
    gpu = ase_adapt.load_model(tmp_path / "cpu.safetensors", device="cuda")
    assert gpu.device.type == "cuda"
    calc = MLFFCalculator(gpu)
    e, f = calc.get_potential_energy(atoms), calc.get_forces(atoms)
    assert isinstance(f, np.ndarray) and f.dtype == np.float64
    tol = 1e-4 if dtype == "float32" else 1e-9
    assert abs(e - e_cpu) < tol * len(atoms) and np.abs(f - f_cpu).max() < tol * 10
    gpu.save(tmp_path / "gpu.safetensors")  # saved from CUDA, loaded on the CPU
    back = ase_adapt.load_model(tmp_path / "gpu.safetensors")
    assert back.device.type == "cpu"
    assert abs(MLFFCalculator(back).get_potential_energy(atoms) - e_cpu) < tol * len(atoms)


def test_calculator_casts_to_cuda_without_touching_the_model():
    model = _deep("float32")
    calc = MLFFCalculator(model, device="cuda", dtype="float64")
    atoms = molecule("CH3CH2OH")
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().dtype == np.float64
    assert model.device.type == "cpu" and model.dtype == torch.float32


def test_ttt_and_training_on_cuda(tmp_path):
    model = _deep("float64")
    s = TrainSettings(mode="joint", optim=OptimSettings(epochs=3, batch_size=8, device="cuda", progress=False))
    model = train_model(model, toy_frames(16, seed=3), s, tmp_path / "run").model
    assert model.device.type == "cuda"
    ttt = TTTSettings(lr=1e-2, max_steps=10, md_steps=0, guard=None)
    atoms = molecule("CH3CH2OH")
    results = {}
    for device in ("cpu", "cuda"):
        calc = AdaptiveCalculator(model, toy_prior(), prior_head="prior", ttt=ttt, adapt_when="always",
                                  detectors=False, device=device)
        results[device] = calc.get_forces(atoms.copy())
        assert calc.ttt_result is not None and calc.ttt_result.steps > 0
    assert np.abs(results["cpu"] - results["cuda"]).max() < 1e-6
