"""Cost of a joint training step and of an energy+forces call, previous vs current implementation.

    python benchmarks/train_speed.py            # -> benchmarks/results/train_speed.json
    python benchmarks/train_speed.py --quick    # smoke run -> benchmarks/results/train_speed_quick.json

What is timed (CPU, float32, in one process, so every ratio compares like with like):
  step     one full joint training step of the default recipe: five heads (``main``,
           ``prior:gfn-ff``, ``prior:gfn1-xtb``, ``prior:sgdml``, ``prior:lj``), energy + force
           loss (force weight 30), backward, gradient clipping, AdamW, EMA, through
           ``Trainer._loss`` itself (graph building included). Frames: the bundled aspirin,
           benzene and uracil geometries, rattled (0.1 Å), with random labels (speed does not
           depend on their values). Reported as structures per second (median step).
  call     ms per energy+forces call of the shipped model (``load_model("default")``) in
           ``MLFFCalculator`` on the 20-atom ``molecule_20`` of benchmarks/model_speed.py.
  sharing  the call and one TTT-like step (prior head, 8 frames of 21 atoms, SGD on the
           representation) at 1 and 2 threads, alone and beside another CPU-bound process: how
           the thread count degrades when the cores are shared.
Implementations:
  previous e3nn's TensorProduct (``reference_kernels()``) and one force pass per head
           (``prior_pass="each"``): the code before the fused kernel.
  fused    the fused edge tensor product (``ase_adapt/models/fused.py``), one pass per head.
  current  fused kernel and one shared force pass for the prior heads (``prior_pass="shared"``).
Architectures: ``shipped`` (the embedded model's: 32 channels, l_max 1) and ``candidate``
(benchmarks/train_default.py ``shared``: 64 channels, l_max 2). FLOPs of one step come from
``torch.utils.flop_counter`` (matrix products only) and are set against a 2048x2048 float32
matmul on the same threads, so the distance to this CPU's limit is stated. The profile's top ops
(self CPU time) are recorded for the candidate before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS_DIR, machine_info, print_table, timestamp, torch_info, write_json_atomic  # noqa: E402

NAME = "train_speed"
HEADS = ("main", "prior:gfn-ff", "prior:gfn1-xtb", "prior:sgdml", "prior:lj")
ARCHS = {
    "shipped": dict(channels=32, l_max=1, num_layers=3, head_layers=0, radial_hidden=32, head_hidden=16),
    "candidate": dict(channels=64, l_max=2, num_layers=3, head_layers=0, radial_hidden=64, head_hidden=32),
}
PATHS = ("previous", "fused", "current")


def frames(n: int, seed: int = 0) -> list:
    from ase.io import read

    from ase_adapt.labels import prior_label_keys

    rng = np.random.default_rng(seed)
    base = [read(BENCH_DIR / "molecules" / f"{m}.xyz") for m in ("aspirin", "benzene", "uracil")]
    out = []
    for k in range(n):
        a = base[k % 3].copy()
        a.positions += rng.normal(0.0, 0.1, a.positions.shape)
        a.info["energy"], a.arrays["forces"] = float(rng.normal()), rng.normal(size=(len(a), 3))
        for h in HEADS[1:]:
            energy_key, forces_key, _ = prior_label_keys(h)
            a.info[energy_key], a.arrays[forces_key] = float(rng.normal()), rng.normal(size=(len(a), 3))
        out.append(a)
    return out


@contextlib.contextmanager
def implementation(path: str):
    from ase_adapt.models.fused import reference_kernels

    with (reference_kernels() if path == "previous" else contextlib.nullcontext()):
        yield


def trainer(arch: str, path: str, batch: int, data: list, tmp: Path):
    import torch

    import ase_adapt
    from ase_adapt.labels import prior_label_keys
    from ase_adapt.losses import LossWeights
    from ase_adapt.train.trainer import OptimSettings, Stage, Trainer
    from ase_adapt.train.dataset import LabelledFrames, Task

    model = ase_adapt.build_model(elements=["H", "C", "N", "O"], heads=HEADS, **ARCHS[arch])
    w = LossWeights(1.0, 30.0)
    tasks = [Task("main", weights=w)] + [Task(h, *prior_label_keys(h)[:2], None, weights=w) for h in HEADS[1:]]
    ds = LabelledFrames(data, tasks)
    optim = OptimSettings(batch_size=batch, lr=1e-4, prior_pass="each" if path != "current" else "shared",
                          progress=False)
    stage = Stage("joint", HEADS, lambda m: list(m.parameters()), 1)
    tr = Trainer(model, ds, None, [stage], optim, tmp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    from ase_adapt.train.optim import EMA

    ema = EMA(list(model.parameters()), 0.99)
    gen = torch.Generator().manual_seed(0)
    params = list(model.parameters())

    def step(b: int) -> None:
        idx = [(b * batch + i) % len(ds) for i in range(batch)]
        loss, _ = tr._loss(ds, idx, HEADS, train=True, gen=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        ema.update()
    return step


def time_steps(step, warmup: int, repeats: int) -> list[float]:
    for b in range(warmup):
        step(b)
    times = []
    for b in range(repeats):
        t0 = time.perf_counter()
        step(warmup + b)
        times.append(time.perf_counter() - t0)
    return times


def step_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(0)
    return float(fc.get_total_flops())


def matmul_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9


def top_ops(step, n: int = 6) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(0)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total}
            for e in events[:n]]


def call_ms(path: str, threads: int, repeats: int) -> float:
    import torch
    from ase.build import molecule

    import ase_adapt

    torch.set_num_threads(threads)
    ring, water, methane = molecule("C6H6"), molecule("H2O"), molecule("CH4")
    water.translate(np.array([0, 0, 3.4]) - water.get_center_of_mass())
    methane.translate(np.array([5.6, 0, 0]) - methane.get_center_of_mass())
    atoms = ring + water + methane
    atoms.calc = ase_adapt.MLFFCalculator(ase_adapt.load_model("default"))
    p0, rng = atoms.positions.copy(), np.random.default_rng(0)
    times = []
    with implementation(path):
        for k in range(repeats + 20):
            atoms.positions = p0 + rng.normal(0.0, 1e-3, p0.shape)
            t0 = time.perf_counter()
            atoms.get_potential_energy()
            atoms.get_forces()
            if k >= 20:
                times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def ttt_step_ms(threads: int, repeats: int) -> float:
    """One TTT-like step of the shipped model: prior-head energy+force loss on 8 frames of a 20-atom
    molecule, backward into the representation, SGD (what AdaptiveCalculator repeats 50-250 times)."""
    import torch
    from ase.build import molecule

    import ase_adapt
    from ase_adapt.graph import build_graph

    torch.set_num_threads(threads)
    model = ase_adapt.load_model("default")
    params = model.representation_parameters()
    opt = torch.optim.SGD(params, lr=1e-5, momentum=0.9)
    rng = np.random.default_rng(0)
    base = molecule("C6H6") + molecule("CH3CH2OH")
    base.positions[12:] += [4.0, 0.0, 0.0]
    frames = []
    for _ in range(8):
        a = base.copy()
        a.positions += rng.normal(0.0, 0.05, a.positions.shape)
        frames.append(a)
    graph = build_graph(frames, model.cutoff)
    ref = torch.randn(graph.num_nodes, 3)
    times = []
    for k in range(repeats + 3):
        t0 = time.perf_counter()
        out = model(graph, "prior:gfn-ff", create_graph=True)
        loss = (out["forces"] - ref).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= 3:
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


@contextlib.contextmanager
def busy_core(busy: bool):
    """Another CPU-bound process on the machine (a spinning Python), as on a shared laptop or node."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0.0)
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    args = p.parse_args(argv)
    threads_list = (1, 2)
    batches = (16,) if args.quick else (16, 32)
    warmup, repeats = (1, 2) if args.quick else (2, 5)
    data = frames(64)
    rows, results = [], {"steps": [], "calls": [], "flops": {}, "profile": {}, "matmul_gflops": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in threads_list:
            results["matmul_gflops"][threads] = matmul_gflops(threads)
        for arch in args.archs:
            for path in PATHS:
                for threads in threads_list:
                    torch.set_num_threads(threads)
                    for batch in batches:
                        if path == "fused" and (threads, batch) != (2, 16):
                            continue  # the ablation row only
                        with implementation(path):
                            step = trainer(arch, path, batch, data, Path(tmp) / f"{arch}{path}{threads}{batch}")
                            t = time_steps(step, warmup, repeats)
                            if threads == 1 and batch == 16:
                                results["flops"][f"{arch}/{path}"] = step_flops(step)
                                if arch == "candidate" and path in ("previous", "current"):
                                    results["profile"][path] = top_ops(step)
                        med = float(np.median(t))
                        rec = {"arch": arch, "path": path, "threads": threads, "batch": batch, "step_s": med,
                               "step_s_min": min(t), "structures_per_s": batch / med}
                        results["steps"].append(rec)
                        print(f"{arch} {path} threads={threads} batch={batch}: {med * 1e3:.0f} ms/step, "
                              f"{batch / med:.1f} structures/s", flush=True)
        for path in ("previous", "current"):
            for threads in threads_list:
                ms = call_ms(path, threads, 50 if args.quick else 300)
                results["calls"].append({"path": path, "threads": threads, "ms": ms})
                print(f"call {path} threads={threads}: {ms:.2f} ms", flush=True)
        results["contention"] = []
        for busy in (False, True):
            with busy_core(busy):
                for threads in threads_list:
                    rec = {"other_job": busy, "threads": threads,
                           "call_ms": call_ms("current", threads, 30 if args.quick else 150),
                           "ttt_step_ms": ttt_step_ms(threads, 3 if args.quick else 10)}
                    results["contention"].append(rec)
                    print(f"other job={busy} threads={threads}: call {rec['call_ms']:.2f} ms, "
                          f"TTT step {rec['ttt_step_ms']:.1f} ms", flush=True)
    steps = {(r["arch"], r["path"], r["threads"], r["batch"]): r for r in results["steps"]}
    summary = []
    for arch in args.archs:
        base = steps[(arch, "previous", 1, 16)]["structures_per_s"]
        for (a, path, threads, batch), r in sorted(steps.items()):
            if a != arch:
                continue
            flops = results["flops"].get(f"{arch}/{path}")
            gfs = flops / 1e9 / r["step_s"] * (batch / 16) if flops and r["threads"] == 1 and batch == 16 else None
            speedup = r["structures_per_s"] / base
            same = steps.get((arch, "previous", threads, batch))
            summary.append({"arch": arch, "path": path, "threads": threads, "batch": batch,
                            "ms_per_step": r["step_s"] * 1e3, "structures_per_s": r["structures_per_s"],
                            "vs_previous_1thread_b16": speedup,
                            "vs_previous_same_threads_batch": r["structures_per_s"] / same["structures_per_s"] if same else None,
                            "achieved_gflops": gfs})
            rows.append([arch, path, threads, batch, r["step_s"] * 1e3, r["structures_per_s"], speedup,
                         summary[-1]["vs_previous_same_threads_batch"], gfs])
    print_table(["arch", "path", "threads", "batch", "ms/step", "structures/s", "x prev(1t,b16)", "x prev(same)",
                 "GFLOP/s"], rows, fmt=".3g")
    calls = {(c["path"], c["threads"]): c["ms"] for c in results["calls"]}
    print_table(["call (shipped model, 20 atoms)", "threads", "ms"],
                [[k[0], k[1], v] for k, v in calls.items()], fmt=".3g")
    print_table(["another CPU-bound job", "threads", "call ms", "TTT step ms"],
                [[c["other_job"], c["threads"], c["call_ms"], c["ttt_step_ms"]] for c in results["contention"]],
                fmt=".3g")
    print("matmul 2048^2 float32 GFLOP/s:", {k: round(v) for k, v in results["matmul_gflops"].items()})
    for arch in args.archs:
        for path in PATHS:
            f = results["flops"].get(f"{arch}/{path}")
            if f:
                print(f"{arch}/{path}: {f / 1e9:.2f} GFLOP (matrix products) per batch-16 step")
    out = RESULTS_DIR / (f"{NAME}_quick.json" if args.quick else f"{NAME}.json")
    write_json_atomic(out, {"benchmark": NAME, "timestamp": timestamp(), "machine": machine_info(),
                            "torch": torch_info(), "quick": args.quick, "summary": summary, **results})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
