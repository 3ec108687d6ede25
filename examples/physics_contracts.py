"""Run the whole physics-contract suite on a (tiny, untrained) float64 model.

Run: python examples/physics_contracts.py   (about half a minute on a laptop CPU)
"""

from ase_adapt import build_model
from ase_adapt.testing import model_calculator_factory, run_all_contracts, scaled_heads

model = build_model(elements=["H", "C", "N", "O", "Si"], channels=8, num_layers=2, dtype="float64")
scaled_heads(model, {"main": 20.0})  # an untrained model has tiny forces; make them O(1)
ran = run_all_contracts(model_calculator_factory(model), dtype="float64", cutoff=model.cutoff)
print(len(ran), "contracts hold, e.g.:", ", ".join(ran[:4]), "...")
