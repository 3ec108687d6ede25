"""A pytest mixin: subclass it, provide ``make_calculator``, and a backend gets the whole suite.

Example::

    class TestMyBackend(CalculatorContract):
        dtype = "float64"
        cutoff = 5.0

        @pytest.fixture(scope="class")
        @classmethod
        def make_calculator(cls):
            model = my_backend.load(...)
            return lambda: MyCalculator(model)

Override ``molecules`` / ``periodic_structures`` / ``atomic_energies`` when the backend's elements
differ from the defaults (H, C, O molecules and a Si crystal).
"""

from __future__ import annotations

from typing import Mapping

import pytest
from ase import Atoms

from . import calculator_contracts as cc
from ._core import CalculatorFactory, FiniteDifferences, Tolerances, finite_differences, tolerances
from .suite import default_molecules, default_periodic


class CalculatorContract:
    """Physics contracts as pytest tests; a subclass named ``Test...`` collects them."""

    dtype: str = "float64"
    cutoff: float | None = None  # the smooth-cutoff test is skipped when None
    dimer: tuple[str, str] = ("C", "O")
    fd_max_atoms: int = 6  # finite differences on at most this many atoms per structure
    isolated_box: float | None = None  # also check an isolated atom in a periodic box this wide

    # ------------------------------------------------------------------ hooks
    @pytest.fixture(scope="class")
    @classmethod
    def make_calculator(cls) -> CalculatorFactory:
        raise NotImplementedError("a CalculatorContract subclass must provide the make_calculator fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def molecules(cls) -> list[Atoms]:
        return default_molecules()

    @pytest.fixture(scope="class")
    @classmethod
    def periodic_structures(cls) -> list[Atoms]:
        return default_periodic()

    @pytest.fixture(scope="class")
    @classmethod
    def atomic_energies(cls) -> Mapping[str, float] | None:
        """Symbol -> E0 that an isolated atom must return exactly (None skips the test)."""
        return None

    @property
    def tol(self) -> Tolerances:
        return tolerances(self.dtype)

    @property
    def fd(self) -> FiniteDifferences:
        return finite_differences(self.dtype)

    # ------------------------------------------------------------------ contracts
    def test_contract_rotation(self, make_calculator, molecules, periodic_structures):
        for a in molecules + periodic_structures:
            cc.check_rotation_equivariance(make_calculator, a, self.tol, seed=1)

    def test_contract_reflection(self, make_calculator, molecules, periodic_structures):
        for a in molecules + periodic_structures:
            cc.check_reflection_equivariance(make_calculator, a, self.tol, seed=2)

    def test_contract_translation(self, make_calculator, molecules, periodic_structures):
        for a in molecules + periodic_structures:
            cc.check_translation_invariance(make_calculator, a, self.tol)

    def test_contract_permutation(self, make_calculator, molecules, periodic_structures):
        for a in molecules + periodic_structures:
            cc.check_permutation_equivariance(make_calculator, a, self.tol)

    def test_contract_energy_decomposition(self, make_calculator, molecules, periodic_structures):
        for a in molecules + periodic_structures:
            cc.check_energy_decomposition(make_calculator, a, self.tol)

    def test_contract_determinism(self, make_calculator, molecules, periodic_structures):
        for a in molecules + periodic_structures:
            cc.check_determinism(make_calculator, a)

    def test_contract_periodic_images(self, make_calculator, periodic_structures):
        for a in periodic_structures:
            cc.check_periodic_image_invariance(make_calculator, a, self.tol)

    def test_contract_additivity(self, make_calculator, molecules):
        if len(molecules) < 2:
            pytest.skip("additivity needs two molecules")
        cc.check_far_apart_additivity(make_calculator, molecules[0], molecules[1], self.tol)

    def test_contract_smooth_cutoff(self, make_calculator):
        if self.cutoff is None:
            pytest.skip("no cutoff given")
        cc.check_smooth_cutoff(make_calculator, self.dimer, self.cutoff, self.tol)

    def test_contract_isolated_atom(self, make_calculator, atomic_energies):
        if not atomic_energies:
            pytest.skip("no atomic energies given")
        for symbol, e0 in atomic_energies.items():
            cc.check_isolated_atom(make_calculator, symbol, e0)
            if self.isolated_box:
                cc.check_isolated_atom(make_calculator, symbol, e0, box=self.isolated_box)

    def test_contract_finite_difference_forces(self, make_calculator, molecules, periodic_structures):
        for a in molecules + periodic_structures:
            cc.check_finite_difference_forces(make_calculator, a, atol=self.fd.force_atol, delta=self.fd.force_delta,
                                              indices=range(min(len(a), self.fd_max_atoms)))

    def test_contract_finite_difference_stress(self, make_calculator, periodic_structures):
        cells = [a for a in periodic_structures if a.pbc.all()]
        if not cells:
            pytest.skip("no fully periodic structure")
        for a in cells:
            cc.check_finite_difference_stress(make_calculator, a, atol=self.fd.stress_atol, delta=self.fd.stress_delta)
