"""``ase-adapt demo``: the main job. The default model meets a molecule it has never seen.

The embedded default model was trained on aspirin, benzene and uracil (GFN2-xTB reference,
standing in for DFT). The demo takes an unseen molecule (naphthalene by default, any xyz by
option) and:

1. runs NVT Langevin MD at 500 K with the GFN2-xTB reference, and fits the prior: by default
   sGDML on 50 frames of the first quarter of that run (the seed paper's protocol: 50 reference
   labels of the new molecule), or any prior spec (``--prior gfn-ff``);
2. prints the shift report of the three detectors (elements, prior force norm, connectivity),
   adapts (TTT against the prior, with the guard), and runs the same MD with the bare model and
   with the adaptive calculator;
3. reports the force error of both models against GFN2-xTB on frames of the reference MD that
   the prior never saw (its last three quarters), the
   stability of each run (time until a bond deviates by more than 0.5 Å), the TTT cost and the
   timings;
4. writes the trajectories (extxyz), ``summary.json`` and two plots (h(r) with and without TTT
   against the reference MD; force parity) into ``--out``.

About a minute on 2 idle CPU cores with the defaults. Needs the priors extra (``pip install
ase-adapt[demo]``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._settings import check_types
from ._common import add_quiet

DEFAULT_MOLECULE = Path(__file__).resolve().parents[1] / "data" / "naphthalene.xyz"
# The seed paper's MD17 protocol: an sGDML prior fitted on 50 reference labels of the new molecule,
# here frames of the first quarter of the reference MD (the force errors use later frames only).
SGDML_50 = "sgdml-50"


@dataclass(frozen=True)
class DemoSettings:
    molecule: str | None = None  # xyz file; default: the bundled naphthalene
    model: str = "default"
    prior: str = SGDML_50  # or any prior spec (gfn-ff, gfn1-xtb, lj, sgdml:PATH...)
    reference: str = "gfn2-xtb"
    md_steps: int = 2000         # per run: 1 ps at 0.5 fs
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    parity_frames: int = 20      # reference-MD frames on which forces are compared
    ttt_steps: int = 300  # TTTSettings' default
    seed: int = 0
    out: str = "demo-output"
    plots: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("md_steps", "parity_frames", "ttt_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.temperature_K > 0 and self.timestep_fs > 0):
            raise ValueError(f"--temperature and the time step must be > 0, got {self.temperature_K}, {self.timestep_fs}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: the default model, an unseen molecule, MD with and without TTT",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DemoSettings()
    p.add_argument("--molecule", help="xyz file of a molecule (default: naphthalene, unseen in training)")
    p.add_argument("--model", default=d.model, help="checkpoint or built-in name (default: default)")
    p.add_argument("--prior", default=d.prior,
                   help=f"prior for detection and TTT: {SGDML_50} (default: sGDML fitted on 50 frames of the "
                        "reference MD) or any prior spec, e.g. gfn-ff")
    p.add_argument("--reference", default=d.reference, help=f"reference calculator (default {d.reference})")
    p.add_argument("--md-steps", type=int, default=d.md_steps, help=f"MD steps per run (default {d.md_steps})")
    p.add_argument("--temperature", type=float, default=d.temperature_K, help="MD temperature in K (default 500)")
    p.add_argument("--parity-frames", type=int, default=d.parity_frames, help="frames for the force comparison")
    p.add_argument("--ttt-steps", type=int, default=d.ttt_steps, help=f"maximum TTT steps (default {d.ttt_steps})")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    add_quiet(p)


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    return DemoSettings(molecule=args.molecule, model=args.model, prior=args.prior, reference=args.reference,
                        md_steps=args.md_steps, temperature_K=args.temperature, parity_frames=args.parity_frames,
                        ttt_steps=args.ttt_steps,
                        seed=args.seed, out=args.out, plots=not args.no_plots, progress=args.progress is not False)


def _forces_on(frames: list, calc) -> np.ndarray:
    out = []
    for a in frames:
        b = a.copy()
        b.calc = calc
        out.append(b.get_forces())
    return np.concatenate(out)


def _sgdml_50(atoms, positions: np.ndarray, reference, out: Path, n: int = 50):
    """An sGDML prior fitted on ``n`` frames of the first quarter of the reference MD."""
    from ase import Atoms

    from ..priors import fit_sgdml_prior, make_prior

    pool = positions[: max(len(positions) // 4, 2)]
    frames = []
    for k in np.unique(np.linspace(0, len(pool) - 1, min(n, len(pool))).astype(int)):
        a = Atoms(numbers=atoms.numbers, positions=pool[k])
        lab = reference.label(a)
        a.info["energy"], a.arrays["forces"] = lab["energy"], lab["forces"]
        frames.append(a)
    path = fit_sgdml_prior(frames, n_train=len(frames), out_path=out / "sgdml_prior.npz")
    print(f"prior: sGDML fitted on {len(frames)} frames of the first quarter of the reference MD ({path.name})")
    return make_prior(f"sgdml:{path}")


def _plots(out: Path, hr: dict, parity: dict) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; plots skipped (pip install ase-adapt[demo])")
        return []
    from .._io import atomic_write

    written = []

    def save(fig, ax, xlabel: str, ylabel: str, name: str) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        atomic_write(out / name, lambda p: fig.savefig(p, format="png", dpi=120))
        written.append(str(out / name))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    r = hr["r"]
    for name, style in (("reference", "k-"), ("base", "r--"), ("adaptive", "b-")):
        if name in hr:
            ax.plot(r, hr[name], style, label=name, lw=1.2)
    save(fig, ax, "r / Å", "h(r)", "hr.png")
    fig, ax = plt.subplots(figsize=(4, 4))
    ref = parity["reference"].ravel()
    for name, color in (("base", "r"), ("adaptive", "b")):
        ax.scatter(ref, parity[name].ravel(), s=3, c=color, alpha=0.5, label=name)
    lim = float(np.abs(ref).max()) * 1.1
    ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    save(fig, ax, "reference force / eV/Å", "model force / eV/Å", "parity.png")
    return written


def run(settings: DemoSettings) -> dict:
    from .. import AdaptiveCalculator, MLFFCalculator, load_model
    from .._io import write_json
    from ..priors import make_prior
    from ..adapt.ttt import TTTSettings
    from ..train.data import read_frames
    from ..workflows.md import distance_histogram, hr_mae, run_nvt

    s = settings
    if s.prior == SGDML_50 and s.md_steps < 200:  # 4 x 5 frames at the MD's stride of 10 steps
        raise ValueError(f"--prior {SGDML_50} fits the prior on the first quarter of the reference MD, which needs "
                         f"--md-steps >= 200 (got {s.md_steps}); or pass another prior, e.g. --prior gfn-ff")
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(s.molecule) if s.molecule else DEFAULT_MOLECULE
    atoms = read_frames(path, -1)[0]  # a missing, empty or corrupt file: one clear DataError
    model = load_model(s.model)
    reference = make_prior(s.reference)
    print(f"model {s.model!r}: trained on {', '.join(map(str, model.training_stats.get('molecules', []))) or 'its training set'}; "
          f"molecule {atoms.get_chemical_formula()} ({len(atoms)} atoms) from {path.name}")
    md = {"reference": run_nvt(atoms, reference, s.md_steps, temperature_K=s.temperature_K, timestep_fs=s.timestep_fs,
                               seed=s.seed, stop_when_unstable=False, progress=s.progress, desc="NVT reference",
                               trajectory=out / "md_reference.xyz")}
    prior = _sgdml_50(atoms, md["reference"].positions, reference, out) if s.prior == SGDML_50 else make_prior(s.prior)

    ttt_settings = TTTSettings(max_steps=s.ttt_steps, md_temperature=s.temperature_K)  # sample at the run temperature
    adaptive = AdaptiveCalculator(model, prior, unknown_elements="nearest", ttt=ttt_settings)
    t0 = time.perf_counter()
    report = adaptive.check(atoms)
    check_s = time.perf_counter() - t0
    print(report.summary())
    ttt = adaptive.ttt_result
    if ttt is not None:
        print(f"TTT ({ttt.head}): {ttt.steps} steps, prior loss {ttt.loss_before:.4g} -> {ttt.loss_after:.4g} "
              f"({ttt.stop_reason}), {ttt.seconds:.1f} s")
    base = MLFFCalculator(load_model(s.model), unknown_elements="nearest")

    runs = (("reference", reference), ("base", base), ("adaptive", adaptive))
    for name, calc in runs[1:]:  # the reference ran first (the sGDML prior learns from its first quarter)
        md[name] = run_nvt(atoms, calc, s.md_steps, temperature_K=s.temperature_K, timestep_fs=s.timestep_fs,
                           seed=s.seed, stop_when_unstable=True, progress=s.progress,
                           desc=f"NVT {name}", trajectory=out / f"md_{name}.xyz")
        r = md[name]
        state = "stable" if r.failure is None else f"unstable after {r.stable_ps:.3f} ps"
        print(f"MD {name:<9} {r.steps} steps, {state}, max bond deviation {r.max_bond_deviation:.2f} Å, "
              f"{1e3 * r.seconds / max(r.steps, 1):.1f} ms/step")

    parity, mae, change = _force_errors(s, atoms, md["reference"].positions, reference, base, adaptive, prior, ttt)

    r_axis, h_ref = distance_histogram(md["reference"].positions)
    hr = {"r": r_axis, "reference": h_ref}
    for name in ("base", "adaptive"):
        hr[name] = distance_histogram(md[name].positions)[1]
    hr_err = {name: hr_mae(hr[name], h_ref) for name in ("base", "adaptive")}
    plots = _plots(out, hr, parity) if s.plots else []
    summary = {
        "settings": asdict(s), "molecule": atoms.get_chemical_formula(), "atoms": len(atoms),
        "shift": report.to_dict(), "check_seconds": check_s, "ttt": ttt.to_dict() if ttt else None,
        "adaptation": {k: adaptive.events[-1].get(k) for k in ("kind", "action", "prior_error")},
        "force_mae_mev_per_A": mae, "force_mae_change": change, "hr_mae": hr_err,
        "md": {name: r.summary() for name, r in md.items()}, "plots": plots,
        "trajectories": [str(out / f"md_{name}.xyz") for name, _ in runs],
    }
    write_json(out / "summary.json", summary)
    print(f"h(r) MAE vs reference MD: base {hr_err['base']:.4f}, adaptive {hr_err['adaptive']:.4f}")
    print(f"wrote {out}/summary.json, trajectories" + (", hr.png, parity.png" if plots else ""))
    return summary


def _force_errors(s: DemoSettings, atoms, ref_pos: np.ndarray, reference, base, adaptive, prior, ttt):
    """Forces against the reference on frames of the reference trajectory (both models, same frames)."""
    from ase import Atoms

    pick = np.linspace(len(ref_pos) // 4, len(ref_pos) - 1, min(s.parity_frames, len(ref_pos))).astype(int)
    frames = [Atoms(numbers=atoms.numbers, positions=ref_pos[k]) for k in pick]
    parity = {"reference": _forces_on(frames, reference), "base": _forces_on(frames, base),
              "adaptive": _forces_on(frames, adaptive)}
    mae = {k: float(np.abs(parity[k] - parity["reference"]).mean()) * 1e3 for k in ("base", "adaptive")}
    mae["prior"] = float(np.abs(_forces_on(frames, prior) - parity["reference"]).mean()) * 1e3
    print(f"force MAE vs {s.reference} on {len(frames)} reference-MD frames: base {mae['base']:.0f}, "
          f"adaptive {mae['adaptive']:.0f}, prior {mae['prior']:.0f} meV/Å")
    change = mae["adaptive"] / mae["base"] - 1.0
    if ttt is not None and ttt.rolled_back:
        print(f"no adaptation used: {ttt.stop_reason} (the unadapted model answered)")
    elif abs(change) < 1e-9:
        print("no adaptation used: the system was not shifted, or TTT did not run")
    else:
        print(f"adaptation {'lowered' if change < 0 else 'raised'} the force error by {abs(change):.0%}"
              + ("" if change < 0 else f": TTT pulled the model towards the prior ({s.prior}), which disagrees "
                 f"with {s.reference} here (benchmarks/README.md, validation_ttt.py)"))
    return parity, mae, change
