"""Contracts on adaptation, for any model with a prior head (built-in or a foreign adapter).

- :func:`check_ttt_adapts_only_early_blocks`: TTT lowers the prior head's loss and changes only
  the representation parameters before the chosen block (by default the embedding and block 0);
- :func:`check_adaptive_md`: an :class:`~ase_adapt.AdaptiveCalculator` with training statistics
  computed on prior-labelled frames runs MD with TTT on a private copy of the model.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
from ase import Atoms

__all__ = ["check_ttt_adapts_only_early_blocks", "check_adaptive_md"]


def check_ttt_adapts_only_early_blocks(model, atoms: Atoms, prior: Any, head: str, steps: int = 3,
                                       lr: float = 1e-4, adapted_blocks: int = 1) -> None:
    """A few TTT steps on a copy of ``model``: the held-out-free prior loss falls, and only
    ``parameters_before(adapted_blocks)`` change (block ``adapted_blocks - 1`` among them)."""
    import torch

    from ..adapt.ttt import TTTSettings, test_time_train

    m = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    settings = TTTSettings(max_steps=steps, lr=lr, md_steps=0, n_rattled=4, holdout_fraction=0.0, eval_every=1,
                           batch_size=4, guard=None, adapted_blocks=adapted_blocks)
    result = test_time_train(m, atoms, prior, settings, head=head)
    if not (result.head == head and result.steps == steps and not result.rolled_back):
        raise AssertionError(f"TTT did not run its {steps} steps on {head}: {result.to_dict()}")
    if not result.loss_after < result.loss_before:
        raise AssertionError(f"TTT did not lower the prior loss: {result.loss_before} -> {result.loss_after}")
    allowed_ids = {id(p) for p in m.parameters_before(adapted_blocks)}
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    allowed = {n for n, p in m.named_parameters() if id(p) in allowed_ids}
    if not changed or not changed <= allowed:
        raise AssertionError(f"TTT changed parameters outside the adapted ones: {sorted(changed - allowed)[:5]}")
    last = f"interactions.{adapted_blocks - 1}."
    if adapted_blocks and not any(n.startswith(last) for n in changed):
        raise AssertionError(f"TTT left the last adapted block ({last}) unchanged")


def check_adaptive_md(model, atoms: Atoms, prior: Any, frames: Sequence[Atoms], head: str, steps: int = 3) -> None:
    """Statistics from ``frames`` labelled by ``prior`` (for ``head``), then ``steps`` velocity-Verlet
    steps of ``atoms`` under an AdaptiveCalculator that always adapts: it checks, runs TTT, returns
    finite energies (and stress for 3D cells), and leaves ``model`` untouched."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ..adapt.ttt import TTTSettings
    from ..adaptive import AdaptiveCalculator
    from ..labels import prior_label_keys
    from ..shift.stats import attach_training_stats, compute_training_stats

    m = copy.deepcopy(model)
    energy_key, forces_key, _ = prior_label_keys(head)
    labelled = []
    for a in frames:
        b, p = a.copy(), a.copy()
        p.calc = prior
        b.info[energy_key], b.arrays[forces_key] = p.get_potential_energy(), p.get_forces()
        labelled.append(b)
    attach_training_stats(m, compute_training_stats(m, labelled, energy_key=None, forces_key=None, progress=False))
    weights = {n: t.detach().clone() for n, t in m.state_dict().items()}
    calc = AdaptiveCalculator(m, prior, prior_head=head, adapt_when="always",
                              ttt=TTTSettings(max_steps=2, lr=1e-4, md_steps=0, n_rattled=3, guard=None))
    a = atoms.copy()
    a.calc = calc
    VelocityVerlet(a, 1.0 * units.fs).run(steps)
    if not (calc.events and calc.events[0].get("report") is not None):
        raise AssertionError("the adaptive calculator logged no check")
    if calc.ttt_result is None or calc.ttt_result.steps < 1:
        raise AssertionError("the adaptive calculator ran no TTT")
    if not np.isfinite(a.get_potential_energy()) or (a.pbc.all() and not np.isfinite(a.get_stress()).all()):
        raise AssertionError("non-finite energy or stress during adaptive MD")
    import torch

    if any(not torch.equal(t, weights[n]) for n, t in m.state_dict().items()):
        raise AssertionError("the calculator changed the model it was given (it must adapt a private copy)")
