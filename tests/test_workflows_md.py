"""MD workflow: seeded NVT, stability by bond deviation, failures end a run instead of crashing."""

from __future__ import annotations

import numpy as np
from ase.build import molecule
from ase.calculators.calculator import CalculationFailed, Calculator
from ase.calculators.emt import EMT

from ase_adapt.workflows import distance_histogram, hr_mae, reference_bonds, run_nvt


def test_nvt_is_seeded_and_reports_stability(tmp_path):
    atoms = molecule("H2O")
    a = run_nvt(atoms, EMT(), 40, stride=10, temperature_K=300, progress=False, trajectory=tmp_path / "t.xyz")
    b = run_nvt(atoms, EMT(), 40, stride=10, temperature_K=300, progress=False)
    assert a.steps == 40 and a.positions.shape == (5, 3, 3) and np.array_equal(a.positions, b.positions)
    assert a.failure is None and a.stable_steps == 40 and a.summary()["stable_ps"] == 0.02
    assert (tmp_path / "t.xyz").read_text().count("Properties") == 5


class _Explodes(Calculator):
    implemented_properties = ["energy", "forces"]

    def __init__(self):
        super().__init__()
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls > 12:
            raise CalculationFailed("NaN forces")
        self.results = {"energy": 0.0, "forces": np.full((len(self.atoms), 3), 5.0) * [1, -1, 0][: 3]}


def test_a_failing_calculator_ends_the_run_as_unstable():
    r = run_nvt(molecule("H2O"), _Explodes(), 100, stride=5, progress=False)
    assert r.failure is not None and r.steps < 100


def test_bonds_and_hr():
    atoms = molecule("CH4")
    bonds, lengths = reference_bonds(atoms)
    assert len(bonds) == 4 and np.allclose(lengths, lengths[0])
    r, h = distance_histogram(np.array([atoms.positions] * 3), r_max=3.0, bins=30)
    assert np.isclose(h.sum() * (r[1] - r[0]), 1.0) and hr_mae(h, h) == 0.0
