"""Training a new model: main only, joint (main + prior), or pretrain -> freeze -> fine-tune.

Test-time training needs a main head that relies on features learnt from the prior
(DESIGN.md §The science). ``joint`` minimises L_main + λ·L_prior on one shared representation;
``pretrain-freeze-finetune`` fits representation + prior head on prior labels, freezes the
representation and then fits the main head. Both give TTT-ready models; ``main`` does not.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from ase import Atoms

from .. import _keys as K
from .._settings import load_settings, settings_to_dict
from ..errors import DataError
from ..graph import neighbour_list
from ..labels import is_prior_head, prior_label_keys
from .data import get_label, is_isolated_atom, split_frames
from .dataset import LabelledFrames, Task
from .e0 import apply_e0, average_e0, relative_e0
from .trainer import OptimSettings, Stage, Trainer, TrainResult

__all__ = ["TrainMode", "E0Source", "LabelKeys", "TrainSettings", "train_model", "fit_head_scale", "prior_task_keys",
           "fit_avg_num_neighbors", "split_for_training", "data_fingerprint", "finalize"]


class TrainMode(str, enum.Enum):
    MAIN = "main"
    JOINT = "joint"
    PRETRAIN_FREEZE_FINETUNE = "pretrain-freeze-finetune"


class E0Source(str, enum.Enum):
    AUTO = "auto"          # isolated-atom frames when they cover every element, else least squares
    ISOLATED = "isolated"  # isolated-atom frames (config_type=IsolatedAtom) only
    AVERAGE = "average"    # least squares over the training frames
    KEEP = "keep"          # leave the model's E0s as they are


@dataclass(frozen=True)
class LabelKeys:
    energy: str | None = K.REF_ENERGY
    forces: str | None = K.REF_FORCES
    stress: str | None = K.REF_STRESS


@dataclass(frozen=True)
class TrainSettings:
    """Everything ``ase-adapt train`` needs besides the model and the data."""

    mode: TrainMode = TrainMode.JOINT
    optim: OptimSettings = field(default_factory=OptimSettings)
    pretrain_epochs: int | None = None
    prior_weight: float = 1.0
    main_head: str = K.MAIN_HEAD
    prior_heads: tuple[str, ...] = (K.PRIOR_HEAD,)
    reference: LabelKeys = field(default_factory=LabelKeys)
    prior: LabelKeys = field(default_factory=lambda: LabelKeys(K.PRIOR_ENERGY, K.PRIOR_FORCES, K.PRIOR_STRESS))
    e0: E0Source = E0Source.AUTO
    fit_scale: bool = True
    fit_avg_num_neighbors: bool = True
    compute_stats: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", TrainMode(self.mode))
        object.__setattr__(self, "e0", E0Source(self.e0))
        if self.prior_weight < 0:
            raise ValueError(f"prior_weight must be >= 0, got {self.prior_weight}")
        object.__setattr__(self, "prior_heads", tuple(self.prior_heads))
        bad = [h for h in self.prior_heads if not is_prior_head(h)]
        if bad or (self.mode is not TrainMode.MAIN and not self.prior_heads):
            raise ValueError(f"prior heads are named 'prior' or 'prior:<kind>' and at least one is needed "
                             f"outside mode 'main' (got {list(self.prior_heads)})")

    def prior_keys(self, head: str) -> LabelKeys:
        """Label keys of a prior head: ``prior`` -> ``self.prior``; ``prior:<kind>`` -> ``prior_<kind>_*``."""
        return prior_task_keys(head, self.prior)

    @classmethod
    def from_yaml(cls, source: str | Path | None = None, **overrides) -> "TrainSettings":
        return load_settings(cls, source, **overrides)


def prior_task_keys(head: str, generic: LabelKeys) -> LabelKeys:
    """The label keys a prior head learns from (the convention of ``ase-adapt label --prefix``)."""
    return generic if head == K.PRIOR_HEAD else LabelKeys(*prior_label_keys(head))


# ------------------------------------------------------------------------------ preparation
def fit_avg_num_neighbors(model: torch.nn.Module, frames: Sequence[Atoms]) -> float:
    """Set the interaction normalisation to the mean neighbour count of ``frames`` at the model cutoff."""
    edges = sum(len(neighbour_list(a, model.cutoff)[0]) for a in frames)
    atoms = sum(len(a) for a in frames)
    value = max(edges / max(atoms, 1), 1.0)
    for block in model.interaction_blocks():
        block.avg_num_neighbors = value
    model.config["avg_num_neighbors"] = value
    return value


def fit_head_scale(model: torch.nn.Module, head: str, forces: Sequence[np.ndarray | None]) -> float:
    """Set ``head``'s energy scale to the RMS force component of its labels (eV/Å)."""
    blocks = [f for f in forces if f is not None]
    if not blocks:
        return float(model.heads[head].scale[0])
    rms = float(np.sqrt(np.mean(np.concatenate(blocks) ** 2)))
    if not math.isfinite(rms) or rms < 1e-6:
        rms = 1.0
    with torch.no_grad():
        model.heads[head].scale.fill_(rms)
    return rms


def _fit_e0(model, head: str, frames: Sequence[Atoms], isolated: dict[int, Atoms], energy_key: str | None,
            source: E0Source, reference: LabelKeys | None = None, reference_head: str | None = None) -> None:
    """Set ``head``'s E0s from isolated-atom frames, or by least squares over the training frames.

    A prior head without isolated-atom labels (sGDML) is anchored to the reference level: its E0s
    are ``reference_head``'s plus a least-squares fit of the label differences on frames that
    carry both (:func:`~ase_adapt.train.e0.relative_e0`), not an arbitrary minimum-norm offset.
    A rank-deficient fit warns (:class:`~ase_adapt.train.e0.E0Warning`).
    """
    if source is E0Source.KEEP or energy_key is None:
        return
    current = dict(zip(model.elements, model.heads[head].e0))
    present = sorted({int(z) for a in frames for z in np.unique(a.numbers)} & set(model.elements))
    iso = {}
    for z, a in isolated.items():
        value = get_label(a, energy_key, required=False)
        if value is not None:
            iso[z] = value
    if source is E0Source.ISOLATED or (source is E0Source.AUTO and all(z in iso for z in present)):
        missing = [z for z in present if z not in iso]
        if missing:
            raise DataError(f"head {head!r}: no isolated-atom frame with {energy_key!r} for elements {missing}")
        current.update({z: iso[z] for z in iso if z in current})
        apply_e0(model, current, head)
        return
    labelled = [a for a in frames if get_label(a, energy_key, required=False) is not None]
    ref_key = reference.energy if reference is not None and reference_head is not None else None
    both = [a for a in labelled if ref_key and get_label(a, ref_key, required=False) is not None]
    if both:
        ref_e0 = dict(zip(model.elements, model.heads[reference_head].e0))
        current.update(relative_e0(both, energy_key, ref_key, ref_e0))
    elif labelled:
        current.update(average_e0(labelled, energy_key=energy_key))
    else:
        return
    apply_e0(model, current, head)


def split_for_training(frames: Sequence[Atoms], val_frames: Sequence[Atoms] | None, val_fraction: float,
                       seed: int) -> tuple[list[Atoms], list[Atoms], dict[int, Atoms]]:
    """(train, validation, isolated atoms by Z): isolated-atom frames are E0 references, not data."""
    isolated = {int(a.numbers[0]): a for a in list(frames) + list(val_frames or []) if is_isolated_atom(a)}
    data = [a for a in frames if not is_isolated_atom(a)]
    if not data:
        raise DataError("no training frames (only isolated-atom frames, or none at all)")
    if val_frames is not None:
        return data, [a for a in val_frames if not is_isolated_atom(a)], isolated
    tr, va = split_frames(len(data), val_fraction, seed)
    return [data[i] for i in tr], [data[i] for i in va], isolated


def data_fingerprint(frames: Sequence[Atoms]) -> str:
    """A short hash of the frames' numbers and positions (guards resuming on other data)."""
    h = hashlib.sha256()
    for a in frames:
        h.update(np.ascontiguousarray(a.numbers).tobytes())
        h.update(np.ascontiguousarray(a.positions, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def finalize(result: TrainResult, frames: Sequence[Atoms], compute_stats: bool, info: dict,
             reference: LabelKeys, prior: LabelKeys, weights) -> TrainResult:
    """Attach training statistics and provenance to the best model and rewrite its checkpoint.

    The statistics describe ``frames`` (the training split) under the loss ``weights``, which
    test-time training reuses for its objective.
    """
    from ..checkpoint import save_model

    model = result.model
    stats = dict(getattr(model, "training_stats", None) or {})
    if compute_stats:
        from ..shift.stats import compute_training_stats

        stats.update(compute_training_stats(
            model, frames, energy_key=reference.energy, forces_key=reference.forces,
            prior_energy_key=prior.energy, prior_forces_key=prior.forces, loss_weights=weights, progress=False,
        ))
    stats["training"] = info
    model.training_stats = stats
    save_model(model, result.best_path)
    return result


# ------------------------------------------------------------------------------ entry point
def train_model(
    model: torch.nn.Module,
    frames: Sequence[Atoms],
    settings: TrainSettings | None = None,
    out_dir: str | Path = "training",
    *,
    val_frames: Sequence[Atoms] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict], None]] = (),
) -> TrainResult:
    """Train ``model`` (in place) on ``frames`` and return the best model and its paths.

    Validation frames are ``val_frames`` or a seeded split of ``frames``. ``out_dir`` receives
    ``best.safetensors`` (with training statistics), ``last.safetensors``, ``state.pt`` and the
    metrics; ``resume=True`` continues a killed run from its last completed epoch.
    """
    s = settings or TrainSettings()
    o = s.optim
    train, val, isolated = split_for_training(frames, val_frames, o.val_fraction, o.seed)
    w = o.loss_weights()
    main = Task(s.main_head, s.reference.energy, s.reference.forces, s.reference.stress, w,
                required=s.mode is TrainMode.MAIN)
    priors = [Task(h, k.energy, k.forces, k.stress, w, weight=s.prior_weight)
              for h in s.prior_heads for k in [s.prior_keys(h)]]
    tasks = [main] if s.mode is TrainMode.MAIN else [main, *priors]
    for t in tasks:
        if t.head not in model.heads:
            raise ValueError(f"model has no head {t.head!r} (heads: {list(model.heads)}); build it with that head")
    train_set = LabelledFrames(train, tasks, name="training set")
    val_set = LabelledFrames(val, tasks, name="validation set") if val else None

    if s.fit_avg_num_neighbors:
        fit_avg_num_neighbors(model, train)
    for k, t in enumerate(tasks):  # the main task comes first: prior heads fit relative to its E0s
        anchor = (s.reference, main.head) if t is not main else (None, None)
        _fit_e0(model, t.head, train, isolated, t.energy_key, s.e0, *anchor)
        if s.fit_scale:
            fit_head_scale(model, t.head, train_set.label_array(k, K.LABEL_FORCES))

    head_params = lambda name: (lambda m: list(m.heads[name].parameters()))  # noqa: E731
    if s.mode is TrainMode.PRETRAIN_FREEZE_FINETUNE:
        stages = [
            Stage("pretrain-prior", list(s.prior_heads),
                  lambda m: m.representation_parameters() + [p for h in s.prior_heads for p in m.heads[h].parameters()],
                  s.pretrain_epochs or o.epochs),
            Stage("finetune-main", [s.main_head], head_params(s.main_head), o.epochs),
        ]
    else:
        heads = [t.head for t in tasks]
        stages = [Stage(s.mode.value, heads,
                        lambda m: m.representation_parameters() + [p for h in heads for p in m.heads[h].parameters()],
                        o.epochs)]
    record = {"command": "train", "settings": settings_to_dict(s), "data": data_fingerprint(train),
              "val": data_fingerprint(val)}
    result = Trainer(model, train_set, val_set, stages, o, out_dir, record=record, callbacks=callbacks).run(resume)
    info = {"mode": s.mode.value, "epochs_run": len(result.history), "n_train": len(train), "n_val": len(val),
            "stopped_early": result.stopped_early}
    return finalize(result, train, s.compute_stats, info, s.reference, s.prior, w)
