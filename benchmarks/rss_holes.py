"""RSS holes after fine-tuning: naive vs multihead replay, against the model before fine-tuning.

    python benchmarks/rss_holes.py            # full run -> benchmarks/results/rss_holes.json (~30 min, 2 cores)
    python benchmarks/rss_holes.py --quick    # smoke run -> benchmarks/results/rss_holes_quick.json

The seed (fine-tuning strategies paper, Fig. 11) fine-tunes a materials foundation model on a
narrow NaCl set and screens it with random structure search: replay keeps the holes near the
foundation's level, naive fine-tuning adds holes. The issue asks for SevenNet-0 once its adapter
can be fine-tuned; until then, "a small model pretrained on a broader set". That stand-in:

  foundation  an ase-adapt model (FOUNDATION below) trained on a broad Cu/Ag/Au set labelled with
              EMT: PyXtal random crystals of 12 compositions, snapshots along their EMT
              relaxations, and those relaxed cells compressed (volume x 0.55-0.95) and rattled,
              so the repulsive wall is in the data.
  narrow set  one phase at another level of theory: L1_0 CuAu (4-atom cell), ±2 % strain,
              0.08 Å rattles, labelled with periodic GFN1-xTB (tblite), energies, forces, stress.
  fine-tune   naive (everything trains) and multihead replay (pseudolabels of the foundation on
              the broad Cu/Au frames), same optimiser, for 60 and for 300 epochs (the seed finds
              holes grow with fine-tuning intensity without replay); E0s re-estimated (default).
  errors      main-head force MAE on held-out narrow frames (GFN1-xTB) and on held-out broad
              frames against EMT: the old level, which the fine-tuned main head is meant to
              leave, so that column shows how far each model moved, not an error to minimise.
  screen      ase_adapt.workflows.run_screen on the fine-tuning elements: CuAu, Cu3Au, CuAu3,
              Cu2Au, CuAu2, STRUCTURES random crystals each, relax -> (rattle -> relax) x 3, the
              four flags of the protocol. Every model screens the same crystals (same seed).
  timing      the foundation's screen serially and on a 2-worker Dask LocalCluster.

Cached under benchmarks/data/rss/ (data, models, screens): a re-run reuses what is there, and a
killed screen resumes from its task files. Timing needs a quiet machine; the JSON records the load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, timestamp, torch_info, write_json_atomic  # noqa: E402

NAME = "rss_holes"
BROAD = ("Cu", "Ag", "Au")
SCREEN = ("CuAu", "Cu3Au", "CuAu3", "Cu2Au", "CuAu2")
FOUNDATION = dict(channels=32, num_layers=2, l_max=1, radial_hidden=16, head_hidden=16, cutoff=5.0)


def _label(atoms, calc):
    from ase.calculators.singlepoint import SinglePointCalculator

    a = atoms.copy()
    a.calc = calc
    e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
    a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
    return a


def broad_set(n_crystals: int, seed: int = 0) -> list:
    """EMT-labelled Cu/Ag/Au frames: relaxation snapshots, then compressed and rattled minima."""
    import numpy as np
    from ase.calculators.emt import EMT
    from ase.filters import UnitCellFilter
    from ase.optimize import FIRE

    from ase_adapt.workflows.screen import ScreenSettings, default_compositions, random_crystal

    comps = default_compositions(BROAD, 12)
    s = ScreenSettings(compositions=tuple(comps), max_atoms=8, seed=1000 + seed)
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_crystals):
        atoms, _ = random_crystal(comps[k % len(comps)], k, s)
        atoms.calc = EMT()
        opt = FIRE(UnitCellFilter(atoms), logfile=None)
        for step, _ in enumerate(opt.irun(fmax=0.05, steps=150)):
            if step % 15 == 0:
                frames.append(_label(atoms, EMT()))
        for _ in range(4):
            b = atoms.copy()
            b.set_cell(b.cell * rng.uniform(0.55, 0.95) ** (1 / 3), scale_atoms=True)
            b.positions += rng.normal(0, 0.1, b.positions.shape)
            frames.append(_label(b, EMT()))
    return frames


def narrow_set(n: int, seed: int = 1) -> list:
    """GFN1-xTB-labelled L1_0 CuAu: the one phase the fine-tuning data covers."""
    import numpy as np
    from ase.build import bulk
    from tblite.ase import TBLite

    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.85, cubic=True)
    base.symbols[[2, 3]] = "Au"  # layers along z: L1_0
    frames = []
    for _ in range(n):
        a = base.copy()
        a.set_cell(a.cell @ (np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))), scale_atoms=True)
        a.positions += rng.normal(0, 0.08, a.positions.shape)
        frames.append(_label(a, TBLite(method="GFN1-xTB", verbosity=0)))
    return frames


def _cached(path: Path, make):
    from ase_adapt.train.data import read_frames, write_frames

    if not path.exists():
        t0 = time.perf_counter()
        frames = make()
        write_frames(path, frames)
        print(f"{path.name}: {len(frames)} frames in {time.perf_counter() - t0:.0f} s", flush=True)
    return read_frames(path)


def pretrain(frames, out: Path, epochs: int):
    import ase_adapt
    from ase_adapt.train import OptimSettings, TrainSettings, train_model

    ckpt = out / "best.safetensors"
    if not ckpt.exists():
        model = ase_adapt.build_model(elements=BROAD, **FOUNDATION)
        s = TrainSettings(mode="main", optim=OptimSettings(epochs=epochs, batch_size=16, lr=3e-3, scheduler="cosine",
                                                           stress_weight=10.0, progress=False))
        train_model(model, frames, s, out)
    return ckpt


def finetune(foundation: Path, narrow, replay, strategy: str, out: Path, epochs: int) -> Path:
    from ase_adapt import load_model
    from ase_adapt.train.finetune import FinetuneSettings, finetune_model
    from ase_adapt.train.optim import OptimSettings

    ckpt = out / "best.safetensors"
    if not ckpt.exists():
        s = FinetuneSettings(strategy=strategy, optim=OptimSettings(lr=1e-3, epochs=epochs, batch_size=8,
                                                                    stress_weight=10.0, progress=False))
        finetune_model(load_model(foundation), narrow, s, out, replay_frames=replay if strategy == "multihead" else None)
    return ckpt


def force_mae(ckpt: Path, frames) -> float:
    import numpy as np

    from ase_adapt import MLFFCalculator
    from ase_adapt.labels import get_label

    calc = MLFFCalculator(str(ckpt))
    err = [np.abs(calc.get_forces(a.copy()) - get_label(a, "forces")).mean() for a in frames]
    return float(np.mean(err)) * 1e3


def screen(ckpt: Path, out: Path, structures: int, scheduler: str | None) -> dict[str, Any]:
    from ase_adapt.workflows import ScreenSettings, run_screen

    s = ScreenSettings(compositions=SCREEN, structures=structures, cycles=3, max_atoms=8, progress=False)
    t0 = time.perf_counter()
    summary = run_screen(str(ckpt), s, out, scheduler=scheduler, n_workers=2)
    summary["wall_seconds"] = time.perf_counter() - t0
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--no-timing", action="store_true", help="skip the serial screen (the speed-up)")
    args = ap.parse_args()
    q = args.quick
    sizes = dict(crystals=6, narrow=12, pre_epochs=3, ft_epochs=(3,), structures=2, broad_holdout=8) if q else \
        dict(crystals=60, narrow=80, pre_epochs=60, ft_epochs=(60, 300), structures=10, broad_holdout=40)
    root = BENCH_DIR / "data" / ("rss_quick" if q else "rss")
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    broad = _cached(root / "broad.extxyz", lambda: broad_set(sizes["crystals"]))
    narrow = _cached(root / "narrow.extxyz", lambda: narrow_set(sizes["narrow"]))
    n_val = max(2, len(narrow) // 5)
    narrow_train, narrow_val = narrow[:-n_val], narrow[-n_val:]
    broad_train, broad_val = broad[:-sizes["broad_holdout"]], broad[-sizes["broad_holdout"]:]
    replay = [a for a in broad_train if set(a.get_chemical_symbols()) <= {"Cu", "Au"}]
    models = {"foundation": pretrain(broad_train, root / f"foundation_{sizes['pre_epochs']}ep", sizes["pre_epochs"])}
    for epochs in sizes["ft_epochs"]:
        for strategy in ("naive", "multihead"):
            models[f"{strategy}_{epochs}ep"] = finetune(models["foundation"], narrow_train, replay, strategy,
                                                        root / f"{strategy}_{epochs}ep", epochs)
    rows, results = [], {}
    for name, ckpt in models.items():
        summary = screen(ckpt, root / f"screen_{name}", sizes["structures"], "local")
        results[name] = {
            "narrow_val_force_mae_mev_per_A": force_mae(ckpt, narrow_val),
            "old_level_force_mae_mev_per_A": force_mae(ckpt, broad_val),
            "flagged_fraction": summary["flagged_fraction"], "failed_fraction": summary["failed_fraction"],
            "by_composition": {c: v["flagged_fraction"] for c, v in summary["compositions"].items()},
            "by_criterion": {k: sum(v[f"{k}_fraction"] * v["n"] for v in summary["compositions"].values())
                             / summary["n_structures"] for k in ("overlap", "volume", "energy", "combined")},
            "screen_seconds_dask2": summary["wall_seconds"], "computed": summary["computed"]}
        r = results[name]
        rows.append([name, r["narrow_val_force_mae_mev_per_A"], r["old_level_force_mae_mev_per_A"], r["flagged_fraction"],
                     *r["by_criterion"].values(), r["failed_fraction"]])
    timing = None
    if not args.no_timing:
        serial_dir = root / "screen_foundation_serial"
        shutil.rmtree(serial_dir, ignore_errors=True)
        dask_dir = root / "screen_foundation_dask_timing"
        shutil.rmtree(dask_dir, ignore_errors=True)
        serial = screen(models["foundation"], serial_dir, sizes["structures"], None)
        dask = screen(models["foundation"], dask_dir, sizes["structures"], "local")
        timing = {"serial_seconds": serial["wall_seconds"], "dask_2_workers_seconds": dask["wall_seconds"],
                  "speedup": serial["wall_seconds"] / dask["wall_seconds"],
                  "identical": _rows(serial) == _rows(dask), "load_average": os.getloadavg()}
    print_table(["model", "narrow F MAE", "EMT F MAE", "flagged", "overlap", "volume", "energy", "combined",
                 "failed"], rows)
    if timing:
        print(f"screen of {len(SCREEN) * sizes['structures']} structures: serial {timing['serial_seconds']:.0f} s, "
              f"Dask 2 workers {timing['dask_2_workers_seconds']:.0f} s, speed-up {timing['speedup']:.2f}x, "
              f"identical rows: {timing['identical']}")
    write_json_atomic(RESULTS_DIR / f"{NAME}{'_quick' if q else ''}.json", {
        "benchmark": NAME, "schema_version": 1, "mode": "quick" if q else "full", "created": timestamp(),
        "machine": machine_info(), "torch": torch_info(), "threads": 1,
        "protocol": __doc__.split("can be fine-tuned;", 1)[1].strip(),
        "sizes": sizes, "foundation": FOUNDATION, "screen_compositions": SCREEN, "results": results,
        "timing": timing, "n_broad_train": len(broad_train), "n_broad_holdout": len(broad_val), "n_narrow_train": len(narrow_train), "n_replay": len(replay),
        "wall_seconds": time.perf_counter() - t_start})
    return 0


def _rows(summary):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in summary["structures"]]


if __name__ == "__main__":
    sys.exit(main())
