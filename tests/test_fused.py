"""The fast paths compute the same function as the plain ones.

- The fused edge tensor product (ase_adapt/models/fused.py) against e3nn's TensorProduct
  (``reference_kernels()``): energies, forces, stress and the gradient of a force loss with
  respect to the weights (the double backward training takes), in float64.
- ``HeadChoice`` (one force pass for several heads) against each head evaluated on its own.
- ``prior_pass="shared"`` in the trainer: each prior head's loss is its own loss on the
  structures drawn for it, and training with it lowers every head's error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

import ase_adapt
from ase_adapt import testing as T
from ase_adapt.graph import build_graph
from ase_adapt.losses import LossWeights, head_loss, make_targets
from ase_adapt.models.base import HeadChoice
from ase_adapt.models.fused import FusedEdgeTP, fused_enabled, reference_kernels

ELEMENTS = ("H", "C", "N", "O", "Si")
HEADS = ("main", "prior:a", "prior:b", "prior:c")


def _model(l_max: int, dtype: str = "float64", scaled: bool = True, **kw) -> ase_adapt.MLFF:
    model = ase_adapt.build_model(elements=ELEMENTS, channels=6, num_layers=3, l_max=l_max, radial_hidden=8,
                                  head_hidden=8, cutoff=4.0, dtype=dtype, seed=l_max, heads=HEADS, **kw)
    return T.scaled_heads(model, {h: 10.0 + 3 * k for k, h in enumerate(HEADS)}) if scaled else model


def _structures() -> list:
    mols = []
    for k, name in enumerate(("CH3CH2OH", "C6H6", "H2O")):
        a = molecule(name)
        a.rattle(0.05, seed=k)
        mols.append(a)
    si = T.sheared_rattled_supercell(bulk("Si", "diamond", a=5.43), (2, 1, 1), seed=1)
    return mols, si


def _force_loss_grads(model, graph) -> list[torch.Tensor]:
    out = model(graph, "main", create_graph=True)
    loss = out["forces"].square().sum() + out["energy"].square().sum() * 1e-6
    return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)


@pytest.mark.parametrize("l_max", [0, 1, 2, 3])
def test_fused_tensor_product_equals_e3nn(l_max: int) -> None:
    model = _model(l_max)
    assert all(b.fused_tp is not None and b.fused_self_connection is not None for b in model.interaction_blocks())
    mols, si = _structures()
    for structures in (mols, [si]):
        graph = build_graph(structures, model.cutoff, dtype=torch.float64)
        assert fused_enabled()
        fast = model(graph, list(HEADS))
        fast_grads = _force_loss_grads(model, graph)
        with reference_kernels():
            assert not fused_enabled()
            ref = model(graph, list(HEADS))
            ref_grads = _force_loss_grads(model, graph)
        for h in HEADS:
            for key in ("energy", "forces") + (("stress",) if structures[0].pbc.all() else ()):
                # e3nn builds its Wigner 3j buffers in the default dtype (float32) and casts them, so
                # the reference carries ~1e-8 relative rounding; the fused kernel's are float64.
                torch.testing.assert_close(fast[h][key], ref[h][key], atol=1e-8, rtol=1e-7)
            assert float(fast[h]["forces"].abs().max()) > 1e-2  # a non-trivial comparison
        for g_fast, g_ref in zip(fast_grads, ref_grads):
            if g_ref is None:
                assert g_fast is None
            else:
                torch.testing.assert_close(g_fast, g_ref, atol=1e-7, rtol=1e-6)
    assert fused_enabled()


def test_fused_buffers_are_derived_not_saved(tmp_path) -> None:
    model = _model(2)
    assert not any("fused" in k for k in model.state_dict())
    model.save(tmp_path / "m.safetensors")
    back = ase_adapt.load_model(tmp_path / "m.safetensors")
    graph = build_graph(_structures()[0], model.cutoff, dtype=torch.float64)
    torch.testing.assert_close(back(graph)["forces"], model(graph)["forces"], atol=1e-12, rtol=0)
    assert back.interactions[0].fused_tp.cg.dtype == torch.float64


def test_fused_refuses_what_it_cannot_evaluate() -> None:
    from e3nn import o3

    from ase_adapt.models.fused import FusedSelfConnection

    species = o3.FullyConnectedTensorProduct("2x0e+2x1o", "3x0e", "4x0e+2x1o")
    assert FusedSelfConnection.supports(species)
    not_scalar = o3.FullyConnectedTensorProduct("2x0e+2x1o", "1x1o", "2x0e+2x1o")
    assert not FusedSelfConnection.supports(not_scalar)
    with pytest.raises(ValueError, match="cannot evaluate"):
        FusedSelfConnection(not_scalar)

    tp = o3.FullyConnectedTensorProduct("2x0e+2x1o", "1x0e+1x1o", "2x0e+2x1o", shared_weights=False,
                                        internal_weights=False)
    assert not FusedEdgeTP.supports(tp)
    with pytest.raises(ValueError, match="cannot evaluate"):
        FusedEdgeTP(tp)


def test_head_choice_gives_each_structure_its_own_heads_forces() -> None:
    model = _model(1)
    mols, _ = _structures()
    graph = build_graph(mols, model.cutoff, dtype=torch.float64)
    choice = torch.tensor([2, 0, 1])
    mixed = model(graph, HeadChoice("mix", HEADS[1:], choice))
    each = model(graph, list(HEADS[1:]))
    for b in range(3):
        head = HEADS[1:][int(choice[b])]
        rows = graph.batch == b
        torch.testing.assert_close(mixed["forces"][rows], each[head]["forces"][rows], atol=1e-10, rtol=0)
        torch.testing.assert_close(mixed["energy"][b], each[head]["energy"][b], atol=1e-10, rtol=0)
        torch.testing.assert_close(mixed["node_energy"][rows], each[head]["node_energy"][rows], atol=1e-10, rtol=0)
    both = model(graph, ["main", HeadChoice("mix", HEADS[1:], choice)])
    assert set(both) == {"main", "mix"}
    with pytest.raises(KeyError, match="no head 'nope'"):
        model(graph, HeadChoice("mix", ("prior:a", "nope"), choice))


def _frames(n: int, seed: int = 0) -> list:
    """Rattled molecules labelled by EMT-free analytic targets: each head its own smooth target."""
    from ase.calculators.lj import LennardJones

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = molecule(("CH3CH2OH", "H2O", "CH4")[k % 3])
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        for j, h in enumerate(HEADS):
            lj = LennardJones(sigma=0.7 + 0.05 * j, epsilon=0.1, rc=2.5, smooth=True)
            b = a.copy()
            b.calc = lj
            e, f = b.get_potential_energy(), b.get_forces()
            key = "" if h == "main" else f"prior_{h.split(':')[1]}_"
            a.info[f"{key}energy"], a.arrays[f"{key}forces"] = e, f
        out.append(a)
    return out


def _dataset(frames):
    from ase_adapt.labels import prior_label_keys
    from ase_adapt.train.dataset import LabelledFrames, Task

    w = LossWeights(1.0, 10.0)
    tasks = [Task("main", weights=w)] + [Task(h, *prior_label_keys(h)[:2], None, weights=w) for h in HEADS[1:]]
    return LabelledFrames(frames, tasks)


def test_shared_prior_pass_losses_are_each_heads_own_loss_on_its_structures(tmp_path) -> None:
    from ase_adapt.train.trainer import OptimSettings, Stage, Trainer

    model = _model(1)
    ds = _dataset(_frames(6))
    stage = Stage("joint", HEADS, lambda m: list(m.parameters()), 1)
    tr = Trainer(model, ds, None, [stage], OptimSettings(batch_size=6, prior_pass="shared", progress=False), tmp_path)
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    total, parts = tr._loss(ds, list(range(6)), HEADS, train=True, gen=gen)
    graph, targets = ds.batch(list(range(6)), model.cutoff, model.dtype, model.device)
    gen.set_state(state)
    choice = Trainer._shared_prior_pass(graph, targets, list(HEADS), gen)
    assert choice.heads == HEADS[1:] and choice.choice.shape == (6,)
    each = model(graph, list(HEADS), create_graph=False)
    expected = head_loss(each["main"], targets["main"], graph.n_atoms, ds.tasks[0].weights)[0]
    for k, h in enumerate(HEADS[1:]):
        mine = choice.choice == k
        exp_h, p = head_loss(each[h], targets[h].restricted(mine, graph.batch), graph.n_atoms, ds.tasks[k + 1].weights)
        expected = expected + exp_h
        if bool(mine.any()):
            assert parts[h]["n_energy"] == int(mine.sum())
        else:
            assert "n_energy" not in parts[h]
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-9)


def test_training_with_a_shared_prior_pass_lowers_every_heads_error(tmp_path) -> None:
    from ase_adapt.train.trainer import OptimSettings, Stage, Trainer

    torch.set_num_threads(1)
    model = _model(1, dtype="float32", scaled=False)
    frames = _frames(24)
    ds = _dataset(frames)
    val = _dataset(_frames(6, seed=1))
    stage = Stage("joint", HEADS, lambda m: list(m.parameters()), 10)
    before = Trainer(model, ds, val, [stage], OptimSettings(progress=False), tmp_path / "x")._evaluate(val, HEADS)
    optim = OptimSettings(epochs=10, batch_size=6, lr=1e-2, prior_pass="shared", progress=False, patience=None)
    result = Trainer(model, ds, val, [stage], optim, tmp_path / "run").run()
    after = result.history[-1]
    ratios = [after[f"val_{h}_forces_rmse_mev"] / before[f"{h}_forces_rmse_mev"] for h in HEADS]
    assert max(ratios) < 0.9 and float(np.median(ratios)) < 0.5, ratios  # measured: 0.25, 0.30, 0.40, 0.77


def test_the_shared_pass_pools_prior_heads_only():
    """A main head with another name, or a replay head, keeps its own force pass."""
    from ase_adapt.train.trainer import Trainer

    model = _model(1)
    graph = build_graph(_structures()[0], model.cutoff, dtype=torch.float64)
    labelled = {h: make_targets([{"forces": np.zeros((len(a), 3))} for a in _structures()[0]],
                                [len(a) for a in _structures()[0]], torch.float64)
                for h in ("dft", "replay", "prior:a", "prior:b")}
    choice = Trainer._shared_prior_pass(graph, labelled, ["dft", "replay", "prior:a", "prior:b"], None)
    assert choice.heads == ("prior:a", "prior:b")
    assert Trainer._shared_prior_pass(graph, labelled, ["dft", "prior:a"], None) is None
