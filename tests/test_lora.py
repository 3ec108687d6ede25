"""LoRA adapters: zero-init identity, parameter count, freezing, merging, equivariance, checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import molecule
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

import ase_adapt
from ase_adapt.graph import build_graph
from ase_adapt.train.lora import (
    LoRALinear, LoRAScalarLinear, inject_lora, lora_parameters, merge_lora,
)

RANK, ALPHA = 3, 6.0


@pytest.fixture(scope="module")
def _base() -> ase_adapt.MLFF:
    model = ase_adapt.build_model(
        elements=("H", "C", "N", "O"), channels=8, num_layers=2, l_max=1,
        radial_hidden=8, head_hidden=8, cutoff=4.0, dtype="float64",
    )
    with torch.no_grad():
        for head in model.heads.values():
            head.scale.fill_(10.0)
    model.heads["main"].set_e0([-13.6, -1029.8, -1485.3, -2042.6])
    return model


@pytest.fixture
def model(_base) -> ase_adapt.MLFF:
    return copy.deepcopy(_base)


@pytest.fixture(scope="module")
def atoms():
    a = molecule("CH3CONH2")
    a.rattle(0.05, seed=1)
    return a


def predict(model, atoms):
    out = model(build_graph(atoms, model.cutoff, dtype=torch.float64))
    return out["energy"].item(), out["forces"].numpy()


def perturb(model, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_injection_leaves_outputs_bit_identical(model, atoms):
    e0, f0 = predict(model, atoms)
    names = inject_lora(model, rank=RANK, alpha=ALPHA)
    assert "embedding.linear" in names and "interactions.1.linear_down" in names
    assert "interactions.0.radial.layer0" in names and "heads.main.mlp.layer1" in names
    e1, f1 = predict(model, atoms)
    assert e1 == e0
    np.testing.assert_array_equal(f1, f0)


def test_trainable_count_matches_irreps(model):
    expected, expected_names = 0, set()
    for name, m in model.named_modules():
        if isinstance(m, o3.Linear):
            expected_names.add(name)
            for mul_in, ir_in in m.irreps_in:
                for mul_out, ir_out in m.irreps_out:
                    if ir_in == ir_out:
                        expected += RANK * (mul_in + mul_out)
        elif isinstance(m, FullyConnectedNet):
            expected_names.update(f"{name}.layer{i}" for i in range(len(m.hs) - 1))
            expected += sum(RANK * (a + b) for a, b in zip(m.hs, m.hs[1:]))
    names = inject_lora(model, rank=RANK, alpha=ALPHA)
    assert set(names) == expected_names
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == expected
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(model)}


def test_target_patterns(model):
    names = inject_lora(model, targets=("interactions.0",), exclude=("*radial*",))
    assert names == ["interactions.0.linear_up", "interactions.0.linear_down"]
    with pytest.raises(ValueError, match="already has LoRA"):
        inject_lora(model)
    merge_lora(model)
    assert inject_lora(model, scalar=False) == [
        "embedding.linear", "interactions.0.linear_up", "interactions.0.linear_down",
        "interactions.1.linear_up", "interactions.1.linear_down",
    ]


def test_lora_linear_is_equivariant_and_keeps_bias():
    torch.manual_seed(0)
    base = o3.Linear("3x0e + 2x1o + 4x0e + 2x2e", "5x0e + 3x1o + 2x2e + 1x1e", biases=True)
    with torch.no_grad():
        base.bias.normal_()
    bias = base.bias.detach().clone()
    x = base.irreps_in.randn(6, -1)
    ref = base(x)
    lora = LoRALinear(base, rank=2)
    assert torch.equal(lora(x), ref)
    perturb(lora)
    assert not torch.allclose(lora(x), ref)
    rot = o3.rand_matrix()
    d_in, d_out = base.irreps_in.D_from_matrix(rot), base.irreps_out.D_from_matrix(rot)
    torch.testing.assert_close(lora(x @ d_in.T), lora(x) @ d_out.T, atol=1e-5, rtol=1e-5)
    out = lora(x)
    merged = lora.merge()
    assert type(merged) is o3.Linear and torch.equal(merged.bias, bias)
    torch.testing.assert_close(merged(x), out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("layer", [nn.Linear(5, 7), FullyConnectedNet([5, 7, 3], torch.tanh).layer0])
def test_scalar_lora_zero_init_and_merge(layer):
    layer = layer.double()
    x = torch.randn(4, 5, dtype=torch.float64)
    ref = layer(x)
    lora = LoRAScalarLinear(layer, rank=2, alpha=4.0)
    assert torch.equal(lora(x), ref)
    perturb(lora)
    out = lora(x)
    assert not torch.allclose(out, ref)
    merged = lora.merge()
    assert type(merged) is type(layer)
    torch.testing.assert_close(merged(x), out, atol=1e-12, rtol=1e-12)


def test_merge_preserves_outputs_and_equivariance(model, atoms):
    keys = list(model.state_dict())
    e_base, _ = predict(model, atoms)
    names = inject_lora(model, rank=RANK, alpha=ALPHA)
    perturb(model)
    e_lora, f_lora = predict(model, atoms)
    assert abs(e_lora - e_base) > 1e-6
    assert merge_lora(model, unfreeze=False) == names
    assert not any(isinstance(m, (LoRALinear, LoRAScalarLinear)) for m in model.modules())
    assert type(model.embedding.linear) is o3.Linear
    assert list(model.state_dict()) == keys
    assert not any(p.requires_grad for p in model.parameters())
    e_m, f_m = predict(model, atoms)
    np.testing.assert_allclose(e_m, e_lora, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(f_m, f_lora, rtol=1e-10, atol=1e-10)
    rot = random_rotation(3)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T
    e_r, f_r = predict(model, rotated)
    np.testing.assert_allclose(e_r, e_m, rtol=0, atol=1e-8)
    np.testing.assert_allclose(f_r, f_m @ rot.T, rtol=0, atol=1e-8)
    merge_lora(model, unfreeze=True)
    assert all(p.requires_grad for p in model.parameters())


def test_only_lora_parameters_train(model, atoms):
    inject_lora(model, rank=RANK, alpha=ALPHA)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    params = lora_parameters(model)
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-2)
    graph = build_graph(atoms, model.cutoff, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        out = model(graph, create_graph=True)
        loss = out["energy"].pow(2).sum() * 1e-6 + out["forces"].pow(2).sum()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert p.grad is None and torch.equal(p, frozen[n]), n
    assert any(not torch.equal(p, b) for p, b in zip(params, before))


def test_merged_model_checkpoint_round_trip(model, atoms, tmp_path):
    inject_lora(model, rank=RANK, alpha=ALPHA)
    perturb(model, seed=5)
    merge_lora(model)
    e, f = predict(model, atoms)
    path = model.save(tmp_path / "merged.safetensors")
    loaded = ase_adapt.load_model(path)
    assert loaded.heads["main"].e0 == model.heads["main"].e0
    e2, f2 = predict(loaded, atoms)
    assert e2 == e
    np.testing.assert_array_equal(f2, f)


def test_calculator_sees_updates_of_injected_adapters() -> None:
    """inject_lora replaces submodules; the calculator's weight cache key must follow."""
    from ase.build import molecule

    from ase_adapt import MLFFCalculator, build_model

    model = build_model(channels=8, num_layers=2, l_max=1, dtype="float64")
    with torch.no_grad():
        model.heads["main"].scale.fill_(20.0)
    atoms = molecule("CH3OH")
    atoms.calc = MLFFCalculator(model)
    e_before = atoms.get_potential_energy()
    inject_lora(model, rank=2)
    assert atoms.get_potential_energy() == e_before  # B = 0: same numbers
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(0.3)
    assert atoms.get_potential_energy() != e_before
