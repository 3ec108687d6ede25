"""The structures test-time training learns from, and their prior labels.

The seed paper adapts on many snapshots of molecular dynamics driven by the prior at the run
temperature, each labelled by the prior; a handful of rattled copies is not enough. So a sample
set is: the structure itself, ``n_rattled`` rattled copies, and one snapshot every ``md_stride``
steps of ``md_steps`` Langevin steps driven by the prior. The MD's own prior evaluations are the
labels of its snapshots (no second call). A prior that cannot hold the molecule together (LJ,
EMT on a molecule) stops the MD at the first snapshot whose covalent bond graph differs from the
structure's: broken structures never become targets, and the result says how many snapshots
were kept. Prior failures raise :class:`~ase_adapt.errors.PriorError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from .._settings import check_types
from .. import _keys as K
from ..errors import PriorError
from .topology import bond_changes, covalent_bonds

__all__ = ["SampleSettings", "make_samples", "label_samples", "prior_md_samples"]


@dataclass(frozen=True)
class SampleSettings:
    n_rattled: int = 4            # rattled copies of the structure
    rattle_std: float = 0.03      # Å
    md_steps: int = 640           # prior-driven Langevin steps (0: none)
    md_stride: int = 10           # one snapshot every md_stride steps (64 snapshots by default)
    md_temperature: float = 300.0 # K: set it to the temperature the model will be run at
    md_timestep: float = 0.5      # fs
    md_friction: float = 0.02     # 1/fs
    bond_factor: float = 1.2      # bonds of the structure: d < bond_factor x (r_cov,i + r_cov,j)
    break_factor: float = 1.5     # a snapshot where one of them is longer than this, or a new bond formed, ends the MD
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)
        if not (self.md_friction >= 0 and 0 < self.bond_factor <= self.break_factor):
            raise ValueError("md_friction must be >= 0 and 0 < bond_factor <= break_factor")
        if self.n_rattled < 0 or self.md_steps < 0 or self.md_stride < 1:
            raise ValueError("n_rattled and md_steps must be >= 0, md_stride >= 1")
        if not (self.rattle_std >= 0 and self.md_temperature >= 0 and self.md_timestep > 0):
            raise ValueError("rattle_std and md_temperature must be >= 0, md_timestep > 0")


def _bare(atoms: Atoms) -> Atoms:
    """The system without calculator or constraints; its charge and spin go with it to the prior."""
    info = {k: atoms.info[k] for k in ("charge", "spin") if k in atoms.info}
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc, info=info)


def _checked(prior: Any, e: float, f: np.ndarray, what: str) -> dict[str, Any]:
    if not (math.isfinite(e) and np.isfinite(f).all()):
        raise PriorError(f"prior {type(prior).__name__} returned non-finite labels on {what}")
    return {K.LABEL_ENERGY: float(e), K.LABEL_FORCES: np.array(f, dtype=np.float64)}


def label_samples(samples: Sequence[Atoms], prior: Any) -> list[dict[str, Any]]:
    """Prior energy and forces of every sample (float64); any failure raises PriorError."""
    labels = []
    for k, a in enumerate(samples):
        b = _bare(a)
        b.calc = prior
        try:
            e, f = b.get_potential_energy(), b.get_forces()
        except PriorError:
            raise
        except Exception as exc:  # a plain ASE calculator used as a prior
            raise PriorError(f"prior {type(prior).__name__} failed on TTT sample {k} "
                             f"({a.get_chemical_formula()}): {type(exc).__name__}: {exc}") from exc
        finally:
            b.calc = None
        labels.append(_checked(prior, e, f, f"TTT sample {k}"))
    return labels


def prior_md_samples(atoms: Atoms, prior: Any, s: SampleSettings,
                     rng: np.random.Generator) -> tuple[list[Atoms], list[dict[str, Any]]]:
    """Snapshots of Langevin MD driven by ``prior`` and their labels, until the bonds change."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    md = _bare(atoms)
    md.set_constraint(FixCom())
    md.calc = prior
    thermalize_momenta(md, temperature_K=s.md_temperature, rng=rng)
    Stationary(md)
    if not md.pbc.any():
        ZeroRotation(md)
    dyn = Langevin(md, s.md_timestep * units.fs, temperature_K=s.md_temperature, friction=s.md_friction / units.fs,
                   fixcm=False, rng=rng)
    bonds = covalent_bonds(atoms, s.bond_factor)
    extent = np.ptp(atoms.positions, axis=0).max() if len(atoms) else 0.0
    samples, labels = [], []
    try:
        for k in range(s.md_steps // s.md_stride):
            try:
                dyn.run(s.md_stride)
                e, f = md.get_potential_energy(), md.get_forces(apply_constraint=False)  # FixCom: raw labels
            except PriorError:
                raise
            except Exception as exc:
                raise PriorError(f"prior {type(prior).__name__} failed in the TTT sampling MD at snapshot {k}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            snap = _bare(md)  # no constraint: the sample is a plain structure
            if _flew_apart(snap, extent) or bond_changes(snap, bonds, covalent_bonds(snap, s.bond_factor),
                                                         s.break_factor):
                break  # the prior does not hold this structure together: keep what came before
            samples.append(snap)
            labels.append(_checked(prior, e, f, f"TTT MD snapshot {k}"))
    finally:
        md.calc = None
    return samples, labels


def _flew_apart(atoms: Atoms, extent: float) -> bool:
    """Non-finite positions, or a molecule grown 10 Å beyond its size (checked before any
    neighbour list: an exploded structure can make one fail hard)."""
    pos = atoms.positions
    if not np.isfinite(pos).all():
        return True
    return not atoms.pbc.any() and float(np.ptp(pos, axis=0).max()) > extent + 10.0


def make_samples(atoms: Atoms, settings: SampleSettings, prior: Any = None,
                 labels: Sequence[dict[str, Any]] | None = None) -> tuple[list[Atoms], list[dict[str, Any]]]:
    """(samples, prior labels): the structure, rattled copies and prior-MD snapshots (seeded).

    ``labels`` may hold the structure's own label already computed (by the detectors).
    """
    s = settings
    rng = np.random.default_rng(s.seed)
    base = _bare(atoms)
    samples = [base.copy()]
    for _ in range(s.n_rattled):
        a = base.copy()
        a.positions = a.positions + rng.normal(0.0, s.rattle_std, size=a.positions.shape)
        samples.append(a)
    if prior is None:
        raise ValueError("TTT samples need a prior to label them")
    known = list(labels or [])[:1]
    out_labels = known + label_samples(samples[len(known):], prior)
    if s.md_steps > 0:
        md_samples, md_labels = prior_md_samples(atoms, prior, s, rng)
        samples += md_samples
        out_labels += md_labels
    return samples, out_labels
