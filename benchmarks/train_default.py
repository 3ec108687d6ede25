"""Train the embedded default model: the exact, seeded recipe behind ``load_model("default")``.

    python benchmarks/data.py                                    # the data (GFN2-xTB MD; ~10 min on 2 cores)
    python benchmarks/train_default.py --labels                  # add GFN1-xTB prior labels (tblite, ~1 min)
    python benchmarks/train_default.py --arch deep --epochs 40   # train -> benchmarks/default_model/deep/
    python benchmarks/train_default.py --arch deep --stats       # training statistics (CPU), then
    python benchmarks/train_default.py --arch deep --install     # ... copy it into the package

The model: H, C, N, O with five heads, ``main`` (GFN2-xTB, standing in for DFT), ``prior:gfn-ff``,
``prior:gfn1-xtb``, ``prior:sgdml`` (labels from per-molecule sGDML-50 models, as in the seed
paper) and ``prior:lj``, trained jointly on aspirin, benzene and uracil only. The validation
frames are the last ``--val-frames`` of each training trajectory (a contiguous, time-separated
block, not a random split of correlated MD frames). Test and validation molecules are never seen.

``--arch`` picks one of :data:`ARCHITECTURES` (``deep``: each head owns the interaction blocks
after the first, the seed paper's split; ``shared``: every block shared, heads are readouts).
``--device cuda`` trains on a GPU; ``--minutes M`` times a few steps first and sets the number
of epochs so that the run fits in M minutes (the number chosen is recorded in summary.json, so
``--epochs N`` reproduces it anywhere). Resumable: rerunning the same command continues a
killed run (the trainer's state.pt); a CPU run can continue a GPU one.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, write_json_atomic  # noqa: E402

TRAIN_MOLECULES = ("aspirin", "benzene", "uracil")
ELEMENTS = ("H", "C", "N", "O")
PRIOR_HEADS = ("prior:gfn-ff", "prior:gfn1-xtb", "prior:sgdml", "prior:lj")
PACKAGE_MODEL = REPO_ROOT / "ase_adapt" / "data" / "default.safetensors"
GFN1_PREFIX = "prior_gfn1-xtb"

# Architectures compared for the default model (chosen on the validation molecules; see
# docs/default_model.md). All: H/C/N/O, cutoff 5 A, 8 Bessel functions.
ARCHITECTURES = {
    "deep": dict(channels=64, l_max=2, num_layers=3, head_layers=2, radial_hidden=64, head_hidden=32),
    "deep32": dict(channels=32, l_max=2, num_layers=3, head_layers=2, radial_hidden=64, head_hidden=32),
    "shared": dict(channels=64, l_max=2, num_layers=3, head_layers=0, radial_hidden=64, head_hidden=32),
    "small": dict(channels=32, l_max=1, num_layers=3, head_layers=0, radial_hidden=32, head_hidden=16),  # shipped size
    "mid": dict(channels=64, l_max=1, num_layers=3, head_layers=0, radial_hidden=64, head_hidden=32),
    "tiny": dict(channels=8, l_max=1, num_layers=2, head_layers=1, radial_hidden=16, head_hidden=8),  # smoke runs
}


# ------------------------------------------------------------------------------------- data
def add_lj_labels(frames: list) -> None:
    """LJ prior labels (``prior_lj_*``), computed here: LJ is cheap and deterministic."""
    from ase_adapt.priors import make_prior

    lj = make_prior("lj")
    for a in frames:
        lab = lj.label(a)
        a.info["prior_lj_energy"] = lab["energy"]
        if len(a) > 1 or "config_type" not in a.info:
            a.arrays["prior_lj_forces"] = lab["forces"]


def _gfn1_cache(data: Path, name: str) -> Path:
    return data / f"{name}.{GFN1_PREFIX}.npz"


def make_gfn1_labels(data: Path, names: list[str], progress: bool = True) -> None:
    """GFN1-xTB labels of every frame, cached as ``<name>.prior_gfn1-xtb.npz`` beside the data.

    Stored apart from the extxyz files so that a GPU machine without tblite can train on them.
    """
    from tqdm.auto import tqdm

    from ase_adapt._io import atomic_write
    from ase_adapt.priors import make_prior
    from ase_adapt.train.data import read_frames

    prior = make_prior("gfn1-xtb")
    for name in names:
        out = _gfn1_cache(data, name)
        if out.is_file():
            continue
        frames = read_frames(data / f"{name}.xyz")
        e = np.empty(len(frames))
        f = []
        for k, a in enumerate(tqdm(frames, desc=f"GFN1-xTB {name}", disable=not progress)):
            lab = prior.label(a)
            e[k], _ = lab["energy"], f.append(lab["forces"])
        pos = np.concatenate([a.positions for a in frames])
        atomic_write(out, lambda p: np.savez(p.open("wb"), energy=e, forces=np.concatenate(f), positions=pos))
        print(f"wrote {out}")


def attach_gfn1_labels(frames: list, data: Path, name: str) -> None:
    """Attach the cached GFN1-xTB labels; refuse a cache made from other frames."""
    path = _gfn1_cache(data, name)
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python benchmarks/train_default.py --labels` first")
    with np.load(path, allow_pickle=False) as z:
        e, f, pos = z["energy"], z["forces"], z["positions"]
    if len(e) != len(frames) or not np.allclose(pos, np.concatenate([a.positions for a in frames]), atol=1e-8):
        raise SystemExit(f"{path} was made from other frames of {name}; delete it and run --labels again")
    start = 0
    for a, energy in zip(frames, e):
        a.info[f"{GFN1_PREFIX}_energy"] = float(energy)
        a.arrays[f"{GFN1_PREFIX}_forces"] = f[start:start + len(a)]
        start += len(a)


def load_frames(data: Path, val_frames: int, extra: tuple = ()) -> tuple[list, list]:
    """(training frames incl. isolated atoms, validation frames): the last ``val_frames`` per molecule validate.

    ``extra``: folders of more trajectories of the training molecules (``data.py --seed S --out DIR``),
    every frame of which trains; the validation block stays the main data's.
    """
    from ase_adapt.train.data import read_frames

    train, val = [], []
    for folder in extra:
        for name in TRAIN_MOLECULES:
            path = Path(folder) / f"{name}.xyz"
            if not path.is_file():
                raise SystemExit(f"{path} is missing: make it with benchmarks/data.py --seed S --out {folder}")
            frames = read_frames(path)
            attach_gfn1_labels(frames, Path(folder), name)
            train.extend(frames)
    for name in TRAIN_MOLECULES:
        path = data / f"{name}.xyz"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run `python benchmarks/data.py` first")
        frames = read_frames(path)
        attach_gfn1_labels(frames, data, name)
        if not 0 < val_frames < len(frames):
            raise SystemExit(f"--val-frames must be in (0, {len(frames)})")
        train.extend(frames[:-val_frames])
        val.extend(frames[-val_frames:])
    isolated = [a for a in read_frames(data / "isolated_atoms.xyz") if a.get_chemical_symbols()[0] in ELEMENTS]
    iso_gfn1 = data / f"isolated_atoms.{GFN1_PREFIX}.json"
    if not iso_gfn1.is_file():
        raise SystemExit(f"{iso_gfn1} is missing: run `python benchmarks/train_default.py --labels` first")
    energies = json.loads(iso_gfn1.read_text())
    for a in isolated:
        a.info[f"{GFN1_PREFIX}_energy"] = energies[a.get_chemical_symbols()[0]]
    train.extend(isolated)
    add_lj_labels(train)
    add_lj_labels(val)
    return train, val


def make_isolated_gfn1(data: Path) -> None:
    from ase import Atoms

    from ase_adapt._io import write_json
    from ase_adapt.priors import make_prior

    path = data / f"isolated_atoms.{GFN1_PREFIX}.json"
    if not path.is_file():
        prior = make_prior("gfn1-xtb")  # tblite's default spin, as the GFN2 isolated atoms
        write_json(path, {s: prior.label(Atoms(s))["energy"] for s in ELEMENTS})


# ------------------------------------------------------------------------------------- training
def build(arch: str):
    import ase_adapt

    config = ase_adapt.ModelConfig.from_yaml("model-default")
    return ase_adapt.build_model(config, elements=list(ELEMENTS), heads=("main", *PRIOR_HEADS),
                                 **ARCHITECTURES[arch])


def initial_model(args):
    """A fresh model of ``--arch``, or the weights of ``--init`` (a checkpoint of that architecture)."""
    model = build(args.arch)
    if args.init is None:
        return model
    import ase_adapt

    start = ase_adapt.load_model(args.init)
    if start.head_names != model.head_names or start.config.get("channels") != model.config.get("channels"):
        raise SystemExit(f"--init {args.init}: heads {start.head_names} / config differ from --arch {args.arch}")
    return start


def settings(args, epochs: int):
    from ase_adapt.train import OptimSettings, TrainSettings

    return TrainSettings(
        mode="joint", prior_heads=PRIOR_HEADS,
        optim=OptimSettings(epochs=epochs, batch_size=args.batch_size, lr=args.lr, ema_decay=0.99,
                            scheduler="cosine", min_lr=args.lr / 100, patience=None, seed=args.seed,
                            energy_weight=1.0, forces_weight=args.forces_weight, device=args.device,
                            progress=not args.quiet, prior_pass=args.prior_pass),
        compute_stats=False,  # computed on the CPU afterwards (--stats): a GPU lease is too short
    )


def epochs_for_budget(args, train: list, val: list) -> int:
    """Time a few optimisation steps of a throwaway model and fit the run into ``args.minutes``."""
    import torch

    from ase_adapt.train.dataset import LabelledFrames, Task
    from ase_adapt.losses import head_loss

    s = settings(args, 1)
    w = s.optim.loss_weights()
    tasks = [Task("main", weights=w)] + [
        Task(h, k.energy, k.forces, None, weights=w) for h in PRIOR_HEADS for k in [s.prior_keys(h)]]
    data = [a for a in train if len(a) > 1]
    ds = LabelledFrames(data[: 13 * args.batch_size], tasks)
    model = build(args.arch).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for b in range(13):
        t0 = time.perf_counter()
        graph, targets = ds.batch(range(b * args.batch_size, (b + 1) * args.batch_size), model.cutoff,
                                  model.dtype, model.device)
        pred = model(graph, ds.heads, create_graph=True)
        loss = sum(head_loss(pred[h], targets[h], graph.n_atoms, w)[0] for h in ds.heads)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step = float(np.median(times[3:]))
    epoch_s = step * (math.ceil(len(data) / args.batch_size) + 0.4 * math.ceil(len(val) / args.batch_size))
    epochs = max(1, int(args.minutes * 60 / (epoch_s * 1.1)))
    print(f"budget: {step * 1e3:.0f} ms/step, ~{epoch_s:.0f} s/epoch -> {epochs} epochs in {args.minutes} min", flush=True)
    return epochs


def train(args) -> dict:
    from ase_adapt.train import train_model

    out = args.out / args.arch
    train_frames, val_frames = load_frames(args.data, args.val_frames, tuple(args.extra_data))
    state = out / "state.pt"
    epochs = args.epochs
    if state.exists() and (out / "epochs.json").is_file():
        epochs = json.loads((out / "epochs.json").read_text())["epochs"]  # resume with the same schedule
    elif epochs is None:
        epochs = epochs_for_budget(args, train_frames, val_frames) if args.minutes else 40
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "epochs.json", {"epochs": epochs})
    t0 = time.perf_counter()
    result = train_model(initial_model(args), train_frames, settings(args, epochs), out, val_frames=val_frames,
                         resume=state.exists())
    last = result.history[-1]
    summary = {"arch": args.arch, "architecture": ARCHITECTURES[args.arch], "epochs": epochs,
               "epochs_run": len(result.history), "n_train": len(train_frames), "n_val": len(val_frames),
               "seconds": time.perf_counter() - t0, "device": args.device, "best": str(result.best_path),
               "command": "python benchmarks/train_default.py " + " ".join(sys.argv[1:]),
               **{k: v for k, v in last.items() if k.startswith("val_")}}
    write_json_atomic(out / "summary.json", summary)
    return summary


def stats(args) -> None:
    """Training statistics (force norms, spectra, prior losses) into ``best.safetensors``, on the CPU."""
    import ase_adapt
    from ase_adapt.shift.stats import compute_training_stats
    from ase_adapt.losses import LossWeights

    path = args.out / args.arch / "best.safetensors"
    model = ase_adapt.load_model(path)
    train_frames, _ = load_frames(args.data, args.val_frames, tuple(args.extra_data))
    frames = [a for a in train_frames if len(a) > 1][:: args.stats_every]
    model.training_stats = {**(model.training_stats or {}), **compute_training_stats(
        model, frames, prior_heads=list(PRIOR_HEADS), batch_size=32, progress=not args.quiet,
        loss_weights=LossWeights(1.0, args.forces_weight))}
    model.training_stats["molecules"] = list(TRAIN_MOLECULES)
    model.save(path)
    print(f"statistics written into {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO_ROOT / "benchmarks" / "data")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "default_model")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="deep")
    p.add_argument("--epochs", type=int, help="default: fit --minutes, else 40")
    p.add_argument("--minutes", type=float, help="choose the number of epochs to fit this wall time")
    p.add_argument("--init", type=Path, help="start from this checkpoint's weights (same --arch); "
                   "ignored when resuming")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--forces-weight", type=float, default=30.0)
    p.add_argument("--val-frames", type=int, default=200, help="last frames of each training molecule held out")
    p.add_argument("--extra-data", type=Path, action="append", default=[], metavar="DIR",
                   help="more trajectories of the training molecules (all frames train; repeatable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prior-pass", choices=["each", "shared"], default="shared",
                   help="prior heads' forces: one pass each, or one shared pass (each structure trains one prior head)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: measured fastest on 2 cores, benchmarks/train_speed.py)")
    p.add_argument("--labels", action="store_true", help="compute the GFN1-xTB prior labels (tblite) and stop")
    p.add_argument("--stats", action="store_true", help="compute training statistics into best.safetensors")
    p.add_argument("--stats-every", type=int, default=3, help="statistics on every k-th training frame")
    p.add_argument("--install", action="store_true", help="copy best.safetensors into ase_adapt/data/")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.labels:
        make_isolated_gfn1(args.data)
        for folder in [args.data, *args.extra_data]:
            make_gfn1_labels(folder, list(TRAIN_MOLECULES), progress=not args.quiet)
        return 0
    if args.stats:
        stats(args)
        return 0
    if args.install:
        best = args.out / args.arch / "best.safetensors"
        import ase_adapt

        if "spectrum_mean" not in (ase_adapt.load_model(best).training_stats or {}):
            raise SystemExit(f"{best} has no training statistics: run with --stats first")
        PACKAGE_MODEL.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, PACKAGE_MODEL)
        print(f"installed {PACKAGE_MODEL}")
        return 0
    print(json.dumps(train(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
