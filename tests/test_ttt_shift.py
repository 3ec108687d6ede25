"""TTT repairs a distribution shift: a tiny model trained jointly (main head on the reference,
prior head on a correlated cheaper level) meets denser, larger clusters than it was trained on;
TTT against the prior alone must lower the main head's force error against the reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT

from ase_adapt import MLFFCalculator
from ase_adapt.testing import random_cluster, toy_frames
from ase_adapt.train import OptimSettings, TrainSettings, train_model
from ase_adapt.adapt.ttt import TTTSettings, test_time_train


class _CheapLevel(Calculator):
    """The prior: the reference (EMT) at 80 % strength, a correlated but different level."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = EMT()
        self.results = {"energy": 0.8 * a.get_potential_energy(), "forces": 0.8 * a.get_forces()}


def _force_mae(model, frames) -> float:
    calc = MLFFCalculator(model)
    errors = []
    for a in frames:
        ref = a.copy()
        ref.calc = EMT()
        errors.append(np.abs(calc.get_forces(a.copy()) - ref.get_forces()).mean())
    return float(np.mean(errors))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import tiny_model  # noqa: PLC0415

    model = tiny_model(elements=("H", "C", "O"), num_layers=3)
    frames = toy_frames(64, seed=1, prior=_CheapLevel())  # 3-6 atoms in a 3 Å box
    s = TrainSettings(mode="joint", optim=OptimSettings(epochs=30, batch_size=8, lr=1e-2, progress=False))
    return train_model(model, frames, s, tmp_path_factory.mktemp("shift")).model


def test_ttt_lowers_the_main_head_error_on_a_shifted_system(trained):
    rng = np.random.default_rng(5)
    ratios = []
    for _ in range(3):
        target = random_cluster(rng, "HCO", n_min=8, n_max=8, box=3.2)  # larger and denser: shifted
        evals = []
        for _ in range(8):  # nearby structures with reference labels, never seen by TTT
            a = target.copy()
            a.positions += rng.normal(0.0, 0.05, a.positions.shape)
            evals.append(a)
        model = copy.deepcopy(trained)
        before = _force_mae(model, evals)
        r = test_time_train(model, target, _CheapLevel(), TTTSettings(
            lr=1e-2, max_steps=100, md_steps=0, n_rattled=16, rattle_std=0.05, guard=None), head="prior")
        assert r.steps > 0 and not r.rolled_back
        ratios.append(_force_mae(model, evals) / before)
    assert max(ratios) < 1.0, ratios          # never hurts here
    assert float(np.mean(ratios)) < 0.75, ratios  # and helps clearly
