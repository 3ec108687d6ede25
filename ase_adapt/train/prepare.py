"""Making a foreign foundation model TTT-ready: prior heads, optional MFT-style joint training, statistics.

:func:`prepare_model` (``ase-adapt prepare``) takes a foreign model (``"sevennet:7net-0"``), a
handful of structures and one or more priors, and returns the model with

- one prior head per prior (``prior:<kind>``), trained on the structures labelled by that prior
  (energies per atom and forces, forces weighted; the head's E0s are the prior's isolated-atom
  energies where the prior computes them, else a least-squares fit anchored to the main head's
  energies, :func:`~ase_adapt.train.e0.relative_e0`);
- by default only the prior heads train, on the frozen representation, so the main head is
  bit-for-bit the original model. With ``train_representation`` a second stage also trains the
  representation (lower learning rate) on the prior losses plus a **pseudolabel replay** loss of
  the main head: the unmodified model's energies and forces on the same structures. This is the
  MFT-style joint objective L_replay(main) + λ·Σ L_prior; the main head's own weights stay frozen,
  so every change of its predictions comes from the shared representation and is penalised;
- the training statistics the shift detectors and TTT read (:func:`compute_training_stats` on the
  structures, with the prior labels), plus a provenance record under ``training_stats["training"]``.

Training uses the built-in :class:`~ase_adapt.train.trainer.Trainer` (AdamW, a seeded validation
split, the best epoch by validation loss kept) in a temporary folder; the result is one checkpoint,
written atomically, that ``ase_adapt.load_model`` rebuilds offline from the base model.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms

from .. import _keys as K
from .._io import check_writable
from .._settings import load_settings, load_yaml_mapping, settings_to_dict
from ..errors import DataError
from ..graph import build_graph
from ..labels import prior_label_keys
from .data import get_label, read_frames
from .dataset import LabelledFrames, Task
from .e0 import E0Warning, apply_e0, isolated_atom_e0, relative_e0
from .finetune import PSEUDO_ENERGY, PSEUDO_FORCES, pseudolabel
from .label import label_frames
from .modes import data_fingerprint, fit_head_scale, split_for_training
from .trainer import OptimSettings, Stage, Trainer

__all__ = ["PrepareSettings", "PrepareResult", "prepare_model"]

HEAD_TYPES = ("mlp", "copy-main")
# few structures, few steps: no EMA (it would lag behind), no early stopping, a larger validation share
PREPARE_OPTIM = OptimSettings(epochs=20, batch_size=2, lr=1e-2, ema_decay=None, patience=None, val_fraction=0.2)


@dataclass(frozen=True)
class PrepareSettings:
    """How ``prepare`` trains (the model, structures and priors are arguments)."""

    optim: OptimSettings = field(default_factory=lambda: PREPARE_OPTIM)
    train_representation: bool = False
    representation_lr: float = 1e-4   # the joint stage's learning rate (heads and representation)
    joint_epochs: int | None = None   # default: optim.epochs
    replay_weight: float = 1.0        # weight of the main head's pseudolabel loss in the joint stage
    prior_weight: float = 1.0         # λ of each prior head's loss
    head: str = "mlp"                 # a new prior head: "mlp" (readout MLP) or "copy-main"
    head_hidden: int = 16
    compute_stats: bool = True

    def __post_init__(self) -> None:
        if self.head not in HEAD_TYPES:
            raise ValueError(f"head must be one of {list(HEAD_TYPES)}, got {self.head!r}")
        if not self.representation_lr > 0 or self.replay_weight < 0 or self.prior_weight < 0:
            raise ValueError("representation_lr must be > 0, replay_weight and prior_weight >= 0")
        if self.joint_epochs is not None and self.joint_epochs < 1:
            raise ValueError(f"joint_epochs must be >= 1, got {self.joint_epochs}")
        if self.head_hidden < 1:
            raise ValueError(f"head_hidden must be >= 1, got {self.head_hidden}")

    @classmethod
    def from_yaml(cls, source: str | Path | None = None, **overrides) -> "PrepareSettings":
        """Settings from a YAML file, then ``overrides``; ``optim`` keys merge into prepare's defaults."""
        data = load_yaml_mapping(source) if source is not None else {}
        optim = {**settings_to_dict(PREPARE_OPTIM), **(data.pop("optim", None) or {}),
                 **overrides.pop("optim", {})}
        return load_settings(cls, None, **{**data, **overrides, "optim": optim})


@dataclass
class PrepareResult:
    model: torch.nn.Module
    report: dict[str, Any]
    history: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        """One line: each prior head's force RMSE before -> after, and how far the main head moved."""
        r = self.report
        heads = ", ".join(f"{h} force RMSE {v['before_mev']:.1f} -> {v['after_mev']:.1f} meV/Å"
                          for h, v in r["prior_force_rmse"].items())
        main = r["main_change"]
        return (f"{heads} ({r['rmse_on']}); main head max change {main['max_force_mev']:.3g} meV/Å, "
                f"{main['max_energy_mev_per_atom']:.3g} meV/atom")


# ------------------------------------------------------------------------------ pieces
def _priors(priors: Sequence[Any]) -> list:
    # prior objects, not specs: the priors room imports train (sGDML fitting), so train never imports priors
    out = list(priors)
    if not out:
        raise ValueError("prepare needs at least one prior (e.g. make_prior('emt'), 'gfn1-xtb', 'gfn-ff')")
    bad = [p for p in out if not hasattr(p, "head_name")]
    if bad:
        raise TypeError(f"prepare takes prior calculators (ase_adapt.priors.make_prior(spec)), got {bad[0]!r}")
    names = [p.head_name for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two priors of one kind: {names}")
    return out


def _has_labels(frames: Sequence[Atoms], keys: tuple[str, str, str]) -> bool:
    return all(get_label(a, keys[0], required=False) is not None and get_label(a, keys[1], required=False)
               is not None for a in frames)


def _labelled(frames: list[Atoms], prior, labels_dir: Path | None, progress: bool) -> list[Atoms]:
    """``frames`` with the prior's labels ``prior_<kind>_energy/_forces`` (label_frames, resumable).

    With ``labels_dir`` the labelled frames are kept there as ``prior_<kind>.extxyz`` and reused
    when that file holds the same structures; frames that already carry the labels are kept as they are.
    """
    keys = prior_label_keys(prior.head_name)
    if _has_labels(frames, keys):
        return frames
    prefix = keys[0][: -len("_energy")]
    with tempfile.TemporaryDirectory(prefix="ase-adapt-prepare-") as tmp:
        path = (labels_dir or Path(tmp)) / f"{prefix}.extxyz"
        if path.is_file():
            cached = read_frames(path)
            if data_fingerprint(cached) == data_fingerprint(frames) and _has_labels(cached, keys):
                return cached
        try:
            label_frames(frames, prior, path, prefix=prefix, stress=False, progress=progress)
        except DataError as exc:  # label_frames' advice names its .partial file: true only with labels_dir
            reason = str(exc).split("; finished frames are kept")[0]
            keep = (f"the frames labelled so far are kept in {labels_dir}, and rerunning the same command resumes "
                    "after them" if labels_dir is not None else
                    "nothing was kept; with --labels DIR (labels_dir=) a rerun resumes after the frames already labelled")
            raise DataError(f"{reason}. Remove or fix that structure; {keep}") from exc.__cause__
        return read_frames(path)


def _prior_e0(model, head: str, prior, frames: Sequence[Atoms]) -> dict[str, Any]:
    """Set ``head``'s E0s for the elements of ``frames``; other elements keep theirs. Returns how."""
    present = sorted({int(z) for a in frames for z in a.numbers})
    try:
        e0, how = isolated_atom_e0(present, prior), "isolated atoms of the prior"
    except RuntimeError as exc:  # a prior that cannot compute a lone atom (GFN-FF on some elements...)
        main_e0 = dict(zip(model.elements, model.heads[K.MAIN_HEAD].e0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", E0Warning)  # one stoichiometry: minimum norm is fine here
            e0 = relative_e0(frames, prior_label_keys(head)[0], PSEUDO_ENERGY, main_e0)
        how = f"least-squares fit against the main head ({str(exc).splitlines()[0]})"
    current = dict(zip(model.elements, model.heads[head].e0))
    current.update(e0)
    apply_e0(model, current, head)
    return {"source": how, "elements": present}


def _attach_head(model, name: str, s: PrepareSettings) -> bool:
    """Attach a new prior head (or reuse an existing one); True if it is new."""
    if name in model.heads:
        return False
    model.new_head(name, copy_main=s.head == "copy-main", hidden=s.head_hidden)
    return True


@torch.no_grad()
def _predict(model, frames: Sequence[Atoms], head: str, batch_size: int = 16) -> tuple[np.ndarray, list[np.ndarray]]:
    """(energies, forces per frame) of ``head`` on ``frames``."""
    energies, forces = [], []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        graph = build_graph(chunk, model.cutoff, dtype=model.dtype, device=model.device)
        with torch.enable_grad():
            pred = model(graph, head, compute_forces=True, compute_stress=False)
        f = pred[K.FORCES].double().cpu().numpy()
        energies.extend(pred[K.ENERGY].double().cpu().tolist())
        offsets = np.cumsum([0] + [len(a) for a in chunk])
        forces.extend(f[offsets[i]:offsets[i + 1]] for i in range(len(chunk)))
    return np.array(energies), forces


def _force_rmse(model, frames: Sequence[Atoms], head: str, forces_key: str) -> float:
    """Force RMSE (eV/Å) of ``head`` against the labels ``forces_key``."""
    _, pred = _predict(model, frames, head)
    err = np.concatenate([p - get_label(a, forces_key, i) for i, (a, p) in enumerate(zip(frames, pred))])
    return float(np.sqrt(np.mean(err ** 2)))


def _main_change(model, frames: Sequence[Atoms]) -> dict[str, float]:
    """How far the main head moved from the original model's predictions (its pseudolabels)."""
    energies, forces = _predict(model, frames, K.MAIN_HEAD)
    de = [abs(e - a.info[PSEUDO_ENERGY]) / len(a) for e, a in zip(energies, frames)]
    df = [np.abs(f - a.arrays[PSEUDO_FORCES]).max() for f, a in zip(forces, frames)]
    return {"max_force_mev": 1e3 * float(max(df)), "max_energy_mev_per_atom": 1e3 * float(max(de))}


def _stages(s: PrepareSettings, heads: list[str]) -> list[Stage]:
    stages = [Stage("prior-heads", heads, lambda m: [p for h in heads for p in m.heads[h].parameters()],
                    s.optim.epochs)]
    if s.train_representation:
        stages.append(Stage("joint-replay", [K.MAIN_HEAD, *heads],
                            lambda m: m.representation_parameters()
                            + [p for h in heads for p in m.heads[h].parameters()],
                            s.joint_epochs or s.optim.epochs, lr=s.representation_lr))
    return stages


def _statistics(model, frames: list[Atoms], heads: list[str], weights, info: dict) -> dict:
    from ..shift.stats import compute_training_stats

    stats = compute_training_stats(model, frames, energy_key=None, forces_key=None, prior_heads=heads,
                                   loss_weights=weights, progress=False)
    stats["training"] = info
    return stats


# ------------------------------------------------------------------------------ entry point
def prepare_model(
    model: torch.nn.Module | str,
    structures: Sequence[Atoms] | str | Path | Sequence[str | Path],
    priors: Sequence[Any],
    settings: PrepareSettings | None = None,
    out: str | Path | None = None,
    *,
    labels_dir: str | Path | None = None,
) -> PrepareResult:
    """Make ``model`` (a foreign adapter, or a spec such as ``"sevennet:7net-0"``) TTT-ready; see the module doc.

    ``structures``: frames, or extxyz/.db file(s). ``priors``: prior calculators,
    ``ase_adapt.priors.make_prior("emt")``, ``make_prior("gfn1-xtb")``... (one head ``prior:<kind>`` each). ``out``: write the checkpoint there (atomically).
    ``labels_dir``: keep (and reuse) the prior-labelled structures there. The model is changed in place.
    """
    s = settings or PrepareSettings()
    o = s.optim
    if out is not None:
        check_writable(out)
    prior_calcs = _priors(priors)  # a bad prior name fails before the model loads
    model = _foreign(model)
    frames = _structures(structures)
    heads = [p.head_name for p in prior_calcs]
    labels_path = Path(labels_dir) if labels_dir is not None else None
    if labels_path is not None:
        check_writable(labels_path, directory=True)
    for prior in prior_calcs:
        frames = _labelled(frames, prior, labels_path, o.progress)
        forces_key = prior_label_keys(prior.head_name)[1]
        if all(np.abs(get_label(a, forces_key, k)).max() == 0.0 for k, a in enumerate(frames)):
            raise DataError(f"prior {prior.spec!r} gives zero forces on every structure (isolated atoms, or nothing "
                            "within its range?): its head would learn nothing. Give structures where it acts")
    frames = pseudolabel(model, frames, K.MAIN_HEAD)  # the unmodified model: replay targets and the yardstick
    train, val, _ = split_for_training(frames, None, o.val_fraction, o.seed)
    yardstick = val or train
    w = o.loss_weights()
    report: dict[str, Any] = {"rmse_on": "validation frames" if val else "training frames", "prior_force_rmse": {},
                              "e0": {}, "new_heads": []}
    for prior, head in zip(prior_calcs, heads):
        if _attach_head(model, head, s):
            report["new_heads"].append(head)
            report["e0"][head] = _prior_e0(model, head, prior, train)
            if s.head == "mlp":  # the built-in convention: the RMS force component of its labels
                fit_head_scale(model, head, [get_label(a, prior_label_keys(head)[1]) for a in train])
        report["prior_force_rmse"][head] = {"before_mev": 1e3 * _force_rmse(model, yardstick, head,
                                                                             prior_label_keys(head)[1])}
    history = _train(model, train, val, heads, s, w)
    model.eval()
    for head in heads:
        report["prior_force_rmse"][head]["after_mev"] = 1e3 * _force_rmse(model, yardstick, head,
                                                                          prior_label_keys(head)[1])
    report["main_change"] = _main_change(model, frames)
    info = {"prepare": {"priors": [p.spec for p in prior_calcs], "heads": heads,
                        "train_representation": s.train_representation, "n_train": len(train), "n_val": len(val),
                        "epochs_run": len(history), "data": data_fingerprint(frames)}, **report}
    if s.compute_stats:
        model.training_stats = _statistics(model, frames, heads, w, info)
    if out is not None:
        model.save(out)
    return PrepareResult(model, report, history)


def _foreign(model):
    if isinstance(model, (str, Path)):
        from ..checkpoint import load_model

        model = load_model(model)
    if not callable(getattr(model, "new_head", None)) or not callable(getattr(model, "head_spec", None)):
        raise ValueError(f"prepare works on foreign models (e.g. 'sevennet:7net-0'), not on a "
                         f"{type(model).__name__}; train a built-in model with `ase-adapt train`")
    if K.MAIN_HEAD not in model.heads:
        raise ValueError(f"the model has no {K.MAIN_HEAD!r} head; heads: {list(model.heads)}")
    return model


def _structures(structures) -> list[Atoms]:
    if isinstance(structures, Atoms):
        structures = [structures]
    if isinstance(structures, (str, Path)):
        structures = [structures]
    frames: list[Atoms] = []
    for item in structures:
        frames.extend(read_frames(item) if isinstance(item, (str, Path)) else [item])
    if not frames:
        raise DataError("prepare: no structures")
    return frames


def _train(model, train: list[Atoms], val: list[Atoms], heads: list[str], s: PrepareSettings, w) -> list[dict]:
    """Run the stages with the built-in Trainer in a scratch folder; returns its history."""
    keys = [prior_label_keys(h) for h in heads]
    tasks = [Task(h, k[0], k[1], None, w, weight=s.prior_weight) for h, k in zip(heads, keys)]
    tasks.append(Task(K.MAIN_HEAD, PSEUDO_ENERGY, PSEUDO_FORCES, None, w, weight=s.replay_weight))
    train_set = LabelledFrames(train, tasks, name="prepare structures")
    val_set = LabelledFrames(val, tasks, name="prepare validation structures") if val else None
    with tempfile.TemporaryDirectory(prefix="ase-adapt-prepare-") as tmp:
        result = Trainer(model, train_set, val_set, _stages(s, heads), s.optim, tmp).run()
    return result.history
