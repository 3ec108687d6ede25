"""The evaluation contract: a model (optionally adapted) against reference labels of one molecule.

:func:`evaluate_frames` is what ``ase-adapt evaluate`` runs and what the unseen-molecule
benchmark calls for every configuration. Adaptation happens once, on the first evaluated frame,
as it would in MD (detectors, then radius refinement and/or TTT); every frame is then predicted
with the adapted weights and radius. With ``sgdml_prior_frames=N`` an sGDML prior is fitted on
the first N frames only (the MD17 protocol), and only the remaining frames are evaluated, so no
evaluated label ever reaches the prior.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from . import _keys as K
from .errors import DataError
from .labels import get_label
from .adapt.ttt import TTTSettings

__all__ = ["EvaluateSettings", "evaluate_frames"]


@dataclass(frozen=True)
class EvaluateSettings:
    prior: str | None = None            # prior spec (make_prior); None: no prior
    ttt: bool = False
    rr: bool = False
    sgdml_prior_frames: int | None = None
    unknown_elements: str = "error"     # as every command; "nearest" maps them (and the results say so)
    head: str = K.MAIN_HEAD
    prior_head: str | None = None       # default prior:<kind>
    ttt_settings: TTTSettings = field(default_factory=TTTSettings)
    ttt_on_frames: bool = False         # transductive TTT: learn from the evaluated frames, labelled by the prior only
    energy_key: str = K.REF_ENERGY
    forces_key: str = K.REF_FORCES
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.ttt and self.prior is None and self.sgdml_prior_frames is None:
            raise ValueError("--ttt needs a prior (--prior SPEC or --sgdml-prior-frames N)")
        if self.ttt_on_frames and not self.ttt:
            raise ValueError("--ttt-on-frames needs --ttt")
        if self.sgdml_prior_frames is not None and self.sgdml_prior_frames < 2:
            raise ValueError("--sgdml-prior-frames must be >= 2")
        if self.unknown_elements not in ("error", "nearest"):
            raise ValueError("unknown_elements must be 'error' or 'nearest'")


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


def _energy_errors(pred: np.ndarray, ref: np.ndarray, n_atoms: np.ndarray) -> dict[str, float]:
    diff = pred - ref
    offset = float(diff.mean())
    return {
        "energy_mae_mev_per_atom": float(np.mean(np.abs(diff) / n_atoms)) * 1e3,
        "energy_mae_offset_corrected_mev_per_atom": float(np.mean(np.abs(diff - offset) / n_atoms)) * 1e3,
        "energy_offset_ev": offset,
    }


def _same_molecule(frames: Sequence[Atoms]) -> None:
    first = frames[0].numbers
    for k, a in enumerate(frames):
        if not np.array_equal(a.numbers, first):
            raise DataError(f"frame {k} holds other atoms ({a.get_chemical_formula()}) than frame 0 "
                            f"({frames[0].get_chemical_formula()}); evaluate takes frames of one molecule")


def evaluate_frames(model, frames: Sequence[Atoms], settings: EvaluateSettings | None = None,
                    *, work_dir: str | Path | None = None) -> dict[str, Any]:
    """Errors of ``model`` (optionally adapted with a prior) on reference-labelled ``frames``."""
    from .adaptive import AdaptiveCalculator

    s = settings or EvaluateSettings()
    frames = list(frames)
    if not frames:
        raise DataError("no frames to evaluate")
    _same_molecule(frames)
    e_ref = np.array([get_label(a, s.energy_key, k) for k, a in enumerate(frames)])
    f_ref = [get_label(a, s.forces_key, k) for k, a in enumerate(frames)]
    out: dict[str, Any] = {"n_frames_total": len(frames), "settings": {
        "prior": s.prior, "ttt": s.ttt, "rr": s.rr, "sgdml_prior_frames": s.sgdml_prior_frames,
        "ttt_on_frames": s.ttt_on_frames, "unknown_elements": s.unknown_elements}}
    timings: dict[str, float] = {}
    prior = None
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        if s.sgdml_prior_frames is not None:
            from .priors import fit_sgdml_prior, make_prior

            n = s.sgdml_prior_frames
            if len(frames) <= n:
                raise DataError(f"--sgdml-prior-frames {n} leaves no frame to evaluate ({len(frames)} frames)")
            t0 = time.perf_counter()
            path = fit_sgdml_prior(frames[:n], n_train=n, out_path=Path(tmp) / "sgdml.npz",
                                   energy_key=s.energy_key, forces_key=s.forces_key)
            prior = make_prior(f"sgdml:{path}")
            timings["sgdml_fit_seconds"] = time.perf_counter() - t0
            frames, e_ref, f_ref = frames[n:], e_ref[n:], f_ref[n:]
        elif s.prior is not None:
            from .priors import make_prior

            prior = make_prior(s.prior)
        adapt = s.ttt or s.rr
        has_stats = bool(model.training_stats) and "spectrum_mean" in model.training_stats
        calc = AdaptiveCalculator(  # adapts a private copy: the caller's model is never touched
            model, prior, head=s.head, detectors=has_stats, radius_refinement=s.rr,
            ttt=s.ttt_settings if s.ttt else False, adapt_when="always" if adapt else "never",
            prior_head=s.prior_head, unknown_elements=s.unknown_elements,
        )
        t0 = time.perf_counter()
        # transductive mode: the other evaluated frames join TTT's samples, labelled by the prior
        # (only the prior labels them: their reference labels never reach TTT)
        report = calc.check(frames[0].copy(), structures=frames[1:] if s.ttt_on_frames else None)
        timings["check_seconds"] = time.perf_counter() - t0
        event = calc.events[-1]  # what was done and why: a skipped adaptation is never silent
        out["adaptation"] = {"kind": event["kind"], "action": event["action"], "prior_error": event.get("prior_error")}
        # every frame with the adapted weights and radius, as in MD after the one adaptation
        t0 = time.perf_counter()
        e_pred, f_pred = [], []
        for a in frames:
            res = calc.evaluate(calc.make_graph(a, cutoff=calc.radius))
            e_pred.append(res["energy"])
            f_pred.append(res["forces"])
        timings["predict_seconds"] = time.perf_counter() - t0
        n_atoms = np.array([len(a) for a in frames], dtype=np.float64)
        out["n_frames"] = len(frames)
        out["force_mae_mev_per_A"] = _mae(np.concatenate(f_pred), np.concatenate(f_ref)) * 1e3
        out.update(_energy_errors(np.array(e_pred), e_ref, n_atoms))
        if prior is not None:
            t0 = time.perf_counter()
            out.update(_prior_errors(prior, frames, e_ref, f_ref))
            timings["prior_seconds"] = time.perf_counter() - t0
    out["shift"] = report.to_dict()
    out["shifted"] = report.shifted
    out["radius"] = report.radius  # None unless radius refinement ran
    out["ttt"] = calc.ttt_result.to_dict() if calc.ttt_result is not None else None
    out["unknown_elements"] = {"policy": s.unknown_elements, "mapped": report.unknown_elements}
    out["timings"] = timings
    return out


def _prior_errors(prior, frames: list[Atoms], e_ref: np.ndarray, f_ref: list) -> dict[str, Any]:
    """The prior's own errors against the reference labels (a failing frame is counted, not fatal)."""
    e_pri, f_pri, failed = [], [], 0
    for a, e, f in zip(frames, e_ref, f_ref):
        try:
            lab = prior.label(a)
        except Exception:  # PriorError: count it, do not crash the evaluation
            failed += 1
            continue
        e_pri.append((lab[K.LABEL_ENERGY], e, len(a)))
        f_pri.append((lab[K.LABEL_FORCES], f))
    out: dict[str, Any] = {}
    if f_pri:
        out["prior_force_mae_mev_per_A"] = _mae(np.concatenate([p for p, _ in f_pri]),
                                                np.concatenate([r for _, r in f_pri])) * 1e3
        pe = _energy_errors(np.array([p for p, _, _ in e_pri]), np.array([r for _, r, _ in e_pri]),
                            np.array([n for _, _, n in e_pri], dtype=np.float64))
        out["prior_energy_mae_offset_corrected_mev_per_atom"] = pe["energy_mae_offset_corrected_mev_per_atom"]
    out["prior_failures"] = failed
    out["prior_kind"] = getattr(prior, "kind", type(prior).__name__)
    return out
