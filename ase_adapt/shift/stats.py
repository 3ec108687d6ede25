"""Training statistics: what the shift detectors and test-time training compare against.

:func:`compute_training_stats` measures, on a model's training frames and at the model's cutoff:

- ``elements``: the atomic numbers present (criterion 1, unseen elements);
- ``force_norm_reference``: the distribution over frames of the mean per-atom force norm of the
  reference labels (diagnostics);
- ``prior_force_norm_by_head``: ``{head: distribution}``, the same for each prior head's labels
  (criterion 2 compares the prior's forces at run time with it; ``"prior"`` also stands for the
  generic ``prior_forces`` labels when the model has no head of that name);
- ``spectrum_mean`` and ``spectral_distance``: the average normalized-Laplacian spectrum and the
  distribution of the frames' spectral distances to it (criterion 3 and radius refinement);
- ``prior_loss_by_head``: ``{head: loss}``, each prior head's loss on its prior labels under the
  one loss definition of :mod:`ase_adapt.losses`; ``main_loss`` the main head's; ``loss_weights``
  the weights both were computed with (TTT's objective reuses them).

Statistics written before version 2 (``force_norm_ref``, ``force_norm_prior`` +
``force_norm_priors``, ``prior_loss``, ``prior_loss_weights``) are renamed on reading by
:func:`upgrade_stats`.

The result is a plain dict stored as ``model.training_stats``. Its only array value is the
top-level ``spectrum_mean`` (saved as a checkpoint tensor); everything else is JSON.
:class:`TrainingStats` is a typed, read-only view of it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms

from .. import _keys as K
from ..errors import CheckpointError, DataError, UnknownElementError
from ..labels import frame_labels, get_label, has_label, is_isolated_atom, prior_label_keys
from ..labels import prior_heads as model_prior_heads
from ..losses import LossWeights, head_loss, make_targets
from .spectrum import SpectrumMethod, average_spectrum, laplacian_spectrum, spectral_distance
from .._io import bar_disabled

__all__ = [
    "STATS_VERSION", "QUANTILES", "MissingStatisticsError", "TrainingStats",
    "distribution", "mean_force_norm",
    "compute_training_stats", "attach_training_stats", "stats_to_json", "upgrade_stats",
]

STATS_VERSION = 2
QUANTILES = (5, 25, 50, 75, 95)
_HINT = "run `ase-adapt stats --model CKPT --data TRAIN.xyz --out CKPT` to compute them"


class MissingStatisticsError(CheckpointError):
    """A model (checkpoint) lacks the training statistics, or the part of them that is asked for."""


# --- small pieces ---------------------------------------------------------------------------------

def distribution(values: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """``{"mean", "std", "q05", "q25", "q50", "q75", "q95", "n"}`` of ``values`` (plain floats).

    ``std`` is the sample standard deviation (ddof=1), 0.0 for a single value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("distribution of zero values")
    out: dict[str, float | int] = {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
    }
    for q, x in zip(QUANTILES, np.percentile(v, QUANTILES)):
        out[f"q{q:02d}"] = float(x)
    out["n"] = int(v.size)
    return out


def mean_force_norm(forces: np.ndarray) -> float:
    """Mean over atoms of |F_i| (eV/Å): one structure's force-norm score."""
    return float(np.linalg.norm(np.asarray(forces, dtype=np.float64), axis=1).mean())


def _stress_key(energy_key: str) -> str:
    return energy_key[: -len("energy")] + "stress"


# --- computing ------------------------------------------------------------------------------------

def _label_set(frames: list[Atoms], index: list[int], energy_key: str | None, forces_key: str | None,
               stress: bool, required: bool = True) -> list[dict[str, Any]]:
    stress_key = _stress_key(energy_key) if (stress and energy_key) else None
    return [frame_labels(a, i, energy_key, forces_key, stress_key, required=required) for a, i in zip(frames, index)]


def _pooled_losses(model, frames: list[Atoms], labels: dict[str, list[dict[str, Any]]], weights: LossWeights,
                   batch_size: int, progress: bool) -> dict[str, float]:
    """Each head's loss over all frames, as if they formed a single batch.

    Per batch and term, the weight-1 term of :func:`~ase_adapt.losses.head_loss` (MSE or
    Huber) is pooled by its labelled count; the pooled terms are then weighted. This equals
    ``model_loss`` on one batch of every frame, with memory bounded by ``batch_size``.
    """
    from tqdm import tqdm

    from ..graph import build_graph

    terms = {"energy": ("n_energy", dataclasses.replace(weights, energy=1.0, forces=0.0, stress=0.0)),
             "forces": ("n_forces", dataclasses.replace(weights, energy=0.0, forces=1.0, stress=0.0)),
             "stress": ("n_stress", dataclasses.replace(weights, energy=0.0, forces=0.0, stress=1.0))}
    sums = {h: {t: 0.0 for t in terms} for h in labels}
    counts = {h: {t: 0 for t in terms} for h in labels}
    heads = list(labels)
    starts = range(0, len(frames), batch_size)
    for s in tqdm(starts, desc="training losses", unit="batch", disable=bar_disabled(progress), leave=False):
        batch = frames[s:s + batch_size]
        graph = build_graph(batch, model.cutoff, dtype=model.dtype, device=model.device)
        n_atoms = [len(a) for a in batch]
        targets = {h: make_targets(labels[h][s:s + batch_size], n_atoms, model.dtype, model.device) for h in heads}
        need_forces = any(t.forces is not None for t in targets.values())
        need_stress = graph.periodic_3d and any(t.stress is not None for t in targets.values())
        preds = model(graph, heads, compute_forces=need_forces, compute_stress=need_stress)
        for h in heads:
            for term, (count_key, unit) in terms.items():
                if getattr(weights, term) == 0.0:
                    continue
                value, parts = head_loss(preds[h], targets[h], graph.n_atoms, unit)
                if count_key in parts:
                    sums[h][term] += float(value) * parts[count_key]
                    counts[h][term] += parts[count_key]
    return {h: float(sum(getattr(weights, t) * sums[h][t] / counts[h][t] for t in terms if counts[h][t]))
            for h in heads}


def _training_frames(model, frames: Iterable[Atoms]) -> tuple[list[Atoms], list[int], int, list[int]]:
    """(frames that are not isolated atoms, their indices, how many were skipped, their elements)."""
    all_frames = list(frames)
    index = [i for i, a in enumerate(all_frames) if not is_isolated_atom(a)]
    data = [all_frames[i] for i in index]
    n_isolated = len(all_frames) - len(data)
    if not data:
        raise DataError(f"no training frames to compute statistics from ({n_isolated} isolated-atom frames skipped)")
    elements = sorted({int(z) for a in data for z in a.numbers})
    unknown = sorted(set(elements) - set(model.elements))
    if unknown:
        first = next(i for i, a in zip(index, data) if set(a.numbers) & set(unknown))
        raise UnknownElementError(f"frame {first}: elements {unknown} are not among the model's {list(model.elements)}")
    return data, index, n_isolated, elements


def _prior_label_sets(model, data: list[Atoms], index: list[int], prior_heads: Sequence[str] | None,
                      prior_energy_key: str, prior_forces_key: str, stress: bool, notes: list[str]):
    """({head: labels of every frame}, {head: [energy key, forces key]}) for the prior heads."""
    explicit = prior_heads is not None
    heads = list(prior_heads) if explicit else model_prior_heads(model)
    label_keys: dict[str, list[str]] = {}
    labels: dict[str, list[dict[str, Any]]] = {}
    for h in heads:
        if h not in model.heads:
            raise ValueError(f"model has no head {h!r}; heads: {list(model.heads)}")
        ek, fk = (prior_energy_key, prior_forces_key) if h == K.PRIOR_HEAD else prior_label_keys(h)[:2]
        if not explicit and not any(has_label(a, ek) or has_label(a, fk) for a in data):
            notes.append(f"head {h!r}: no frame has labels {ek!r}/{fk!r}; its prior loss is not computed")
            continue
        labels[h] = _label_set(data, index, ek, fk, stress)
        label_keys[h] = [ek, fk]
    return labels, label_keys


def compute_training_stats(
    model,
    frames: Iterable[Atoms],
    *,
    energy_key: str | None = K.REF_ENERGY,
    forces_key: str | None = K.REF_FORCES,
    prior_energy_key: str = K.PRIOR_ENERGY,
    prior_forces_key: str = K.PRIOR_FORCES,
    prior_heads: Sequence[str] | None = None,
    loss_weights: LossWeights = LossWeights(),
    batch_size: int = 16,
    progress: bool = True,
    spectrum_method: SpectrumMethod | str = SpectrumMethod.AUTO,
) -> dict[str, Any]:
    """Training statistics of ``model`` on ``frames`` (isolated-atom frames skipped); see the module doc.

    Reference labels (``energy_key``, ``forces_key``; ``None`` skips one) are used where present
    (prior-only frames of joint training have none). Prior labels: head ``"prior"`` reads ``prior_energy_key``/``prior_forces_key``, other
    prior heads :func:`prior_label_keys`. A head listed in ``prior_heads`` must have its labels
    in every frame; with the default (every prior head of the model) a head whose labels no frame
    carries is skipped with a note. Missing labels raise :class:`~ase_adapt.errors.DataError`.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data, index, n_isolated, elements = _training_frames(model, frames)
    notes: list[str] = []
    stress = loss_weights.stress > 0
    labels, label_keys = _prior_label_sets(model, data, index, prior_heads, prior_energy_key, prior_forces_key,
                                           stress, notes)

    main_loss_wanted = K.MAIN_HEAD in model.heads and bool(energy_key or forces_key)
    # reference labels may be missing on prior-only frames (joint training): those frames are left out
    ref = _label_set(data, index, energy_key, forces_key, stress, required=False) if (energy_key or forces_key) else None
    if main_loss_wanted:
        labels[K.MAIN_HEAD] = ref
        label_keys[K.MAIN_HEAD] = [energy_key, forces_key]

    ref_norms = [mean_force_norm(lab[K.LABEL_FORCES]) for lab in ref or [] if lab[K.LABEL_FORCES] is not None]
    force_norm_reference = distribution(ref_norms) if ref_norms else None
    prior_norms = {h: distribution([mean_force_norm(lab[K.LABEL_FORCES]) for lab in labels[h]])
                   for h in labels if h != K.MAIN_HEAD and labels[h][0][K.LABEL_FORCES] is not None}
    if K.PRIOR_HEAD not in prior_norms and any(has_label(a, prior_forces_key) for a in data):
        prior_norms[K.PRIOR_HEAD] = distribution(  # the generic prior labels, head or not
            [mean_force_norm(get_label(a, prior_forces_key, i)) for a, i in zip(data, index)])
    if not prior_norms:
        notes.append("no frame has prior forces: the force-norm detector has no training statistics")

    spectra = [laplacian_spectrum(a, model.cutoff, method=spectrum_method)
               for a in tqdm(data, desc="Laplacian spectra", unit="frame", disable=bar_disabled(progress), leave=False)]
    spectrum_mean = average_spectrum(spectra)
    distances = [spectral_distance(s, spectrum_mean) for s in spectra]

    losses = _pooled_losses(model, data, labels, loss_weights, batch_size, progress) if labels else {}
    return {
        "stats_version": STATS_VERSION,
        "elements": elements,
        "cutoff": float(model.cutoff),
        "n_frames": len(data),
        "n_isolated_skipped": n_isolated,
        "force_norm_reference": force_norm_reference,
        "prior_force_norm_by_head": prior_norms,
        "spectrum_mean": spectrum_mean,
        "spectral_distance": distribution(distances),
        "spectrum_method": SpectrumMethod(spectrum_method).value,
        "prior_loss_by_head": {h: v for h, v in losses.items() if h != K.MAIN_HEAD},
        "main_loss": losses.get(K.MAIN_HEAD),
        "loss_weights": _weights_dict(loss_weights),
        "label_keys": label_keys,
        "notes": notes,
    }


def _weights_dict(weights: LossWeights) -> dict[str, Any]:
    d = dataclasses.asdict(weights)
    d["kind"] = weights.kind.value
    return d


# --- reading --------------------------------------------------------------------------------------

_RENAMED_V1 = {"force_norm_ref": "force_norm_reference", "prior_loss": "prior_loss_by_head",
               "prior_loss_weights": "loss_weights"}


def upgrade_stats(stats: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Statistics of any earlier version in today's names (a copy; current ones are returned as is)."""
    if not stats or int(stats.get("stats_version", STATS_VERSION)) >= STATS_VERSION:
        return None if stats is None else dict(stats)
    out = {_RENAMED_V1.get(k, k): v for k, v in stats.items() if k not in ("force_norm_prior", "force_norm_priors")}
    by_head = dict(stats.get("force_norm_priors") or {})
    if stats.get("force_norm_prior") is not None:
        by_head.setdefault(K.PRIOR_HEAD, stats["force_norm_prior"])
    out["prior_force_norm_by_head"] = by_head
    out["stats_version"] = STATS_VERSION
    return out


_REQUIRED = ("elements", "cutoff", "n_frames", "spectrum_mean", "spectral_distance")


@dataclass(frozen=True, eq=False)
class TrainingStats:
    """Typed, read-only view of a ``model.training_stats`` dict (see :func:`compute_training_stats`)."""

    elements: tuple[int, ...]
    cutoff: float
    n_frames: int
    spectrum_mean: np.ndarray
    spectral_distance: Mapping[str, float]
    force_norm_reference: Mapping[str, float] | None = None
    prior_force_norm_by_head: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    prior_loss_by_head: Mapping[str, float] = field(default_factory=dict)
    loss_weights_dict: Mapping[str, Any] | None = None
    main_loss: float | None = None
    notes: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the dict it was read from

    @classmethod
    def from_dict(cls, stats: Mapping[str, Any] | None) -> "TrainingStats":
        """Validate and wrap a statistics dict; raises :class:`MissingStatisticsError` if absent."""
        if not stats:
            raise MissingStatisticsError(f"the model has no training statistics; {_HINT}")
        stats = upgrade_stats(stats)
        missing = [k for k in _REQUIRED if k not in stats]
        if missing:
            raise MissingStatisticsError(f"the model's training statistics lack {missing}; {_HINT}")
        spectrum = np.asarray(stats["spectrum_mean"], dtype=np.float64)
        if spectrum.ndim != 1:
            raise MissingStatisticsError(f"spectrum_mean has shape {spectrum.shape}, expected 1-D; {_HINT}")
        return cls(
            elements=tuple(int(z) for z in stats["elements"]),
            cutoff=float(stats["cutoff"]),
            n_frames=int(stats["n_frames"]),
            spectrum_mean=spectrum,
            spectral_distance=dict(stats["spectral_distance"]),
            force_norm_reference=stats.get("force_norm_reference"),
            prior_force_norm_by_head=dict(stats.get("prior_force_norm_by_head") or {}),
            prior_loss_by_head=dict(stats.get("prior_loss_by_head") or {}),
            loss_weights_dict=stats.get("loss_weights"),
            main_loss=stats.get("main_loss"),
            notes=tuple(stats.get("notes") or ()),
            raw={**stats, "spectrum_mean": spectrum},
        )

    @classmethod
    def from_model(cls, model) -> "TrainingStats":
        """The statistics of ``model`` (e.g. loaded from a checkpoint)."""
        return cls.from_dict(getattr(model, "training_stats", None))

    def to_dict(self) -> dict[str, Any]:
        """The statistics dict (what ``model.training_stats`` holds)."""
        return dict(self.raw)

    @property
    def spectral_distance_mean(self) -> float:
        return float(self.spectral_distance["mean"])

    @property
    def spectral_distance_std(self) -> float:
        return float(self.spectral_distance["std"])

    def prior_force_norm(self, head: str = K.PRIOR_HEAD) -> Mapping[str, float]:
        """Distribution of the mean per-atom force norm of the prior labels of ``head``."""
        if head not in self.prior_force_norm_by_head:
            raise MissingStatisticsError(
                f"no prior force norms for head {head!r} (available: {sorted(self.prior_force_norm_by_head)}); "
                "label the training frames with the prior (`ase-adapt label`) and " + _HINT)
        return self.prior_force_norm_by_head[head]

    def prior_loss(self, head: str = K.PRIOR_HEAD) -> float:
        """Training-level loss of prior head ``head`` (a reference point for TTT's held-out losses)."""
        if head not in self.prior_loss_by_head:
            raise MissingStatisticsError(f"no training prior loss for head {head!r} "
                                         f"(available: {sorted(self.prior_loss_by_head)}); {_HINT}")
        return float(self.prior_loss_by_head[head])

    def loss_weights(self) -> LossWeights:
        """The loss weights the prior and main losses were computed with (use the same ones in TTT)."""
        if not self.loss_weights_dict:
            raise MissingStatisticsError(f"the training statistics hold no loss weights; {_HINT}")
        return LossWeights(**self.loss_weights_dict)


def attach_training_stats(model, stats: Mapping[str, Any] | TrainingStats):
    """Validate ``stats`` and store them as ``model.training_stats`` (saved with the checkpoint)."""
    view = stats if isinstance(stats, TrainingStats) else TrainingStats.from_dict(stats)
    if abs(view.cutoff - float(model.cutoff)) > 1e-9:
        raise ValueError(f"statistics computed at cutoff {view.cutoff} Å, the model's is {model.cutoff} Å")
    model.training_stats = view.to_dict()
    return model


def stats_to_json(stats: Mapping[str, Any] | TrainingStats) -> dict[str, Any]:
    """A JSON-able copy (arrays as lists, non-finite floats as None)."""
    def conv(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return [conv(x) for x in v.tolist()]
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return float(v) if math.isfinite(v) else None
        if isinstance(v, np.integer):
            return int(v)
        return v

    raw = stats.to_dict() if isinstance(stats, TrainingStats) else stats
    return conv(dict(raw))
