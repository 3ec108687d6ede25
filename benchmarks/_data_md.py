"""Langevin MD at the reference level with checkpoints, and label statistics: helpers of
``benchmarks/data.py``.

One molecule's trajectory is a :class:`MDRun`. Its whole state (positions, momenta, MD step,
the random generator's state, the frames sampled so far and the counters) lives in one .npz
checkpoint, rewritten atomically every few frames and whenever the run stops early, so a kill
costs at most ``checkpoint_every`` frames and a rerun continues bit-identically: the reference
prior is reset before every call (``reuse_setup=False``), so forces depend only on positions.

A failed reference or GFN-FF call (PriorError: SCF not converged...) is retried once from the
state before the step, with a fresh calculator; a second failure saves the state and raises
:class:`MDFailure` naming the molecule and the step.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

FRAME_KEYS = ("positions", "energy", "forces", "ff_energy", "ff_forces", "md_step", "temperature_K")


class MDFailure(RuntimeError):
    """A reference or prior call failed twice at one MD step (the state before it is saved)."""


def log(message: str) -> None:
    """One timestamped line on stderr (where tqdm draws too)."""
    print(f"[data {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class MDState:
    """Everything a resumed run needs; ``meta`` is JSON-serialisable."""

    positions: np.ndarray
    momenta: np.ndarray
    frames: dict[str, list[Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        from ase_adapt._io import atomic_write

        arrays = {f"frame_{k}": np.asarray(v, dtype=np.float64) for k, v in self.frames.items()}
        text = np.array(json.dumps(self.meta))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: numpy appends no .npz suffix
                np.savez(fh, positions=self.positions, momenta=self.momenta, meta=text, **arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path) -> "MDState":
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            frames = {k: list(npz[f"frame_{k}"]) for k in FRAME_KEYS}
            return cls(npz["positions"].copy(), npz["momenta"].copy(), frames, meta)


class MDRun:
    """GFN2-xTB (or any reference prior) Langevin MD of one molecule, sampled every ``stride`` steps.

    ``make_reference(**options)`` and ``make_ff()`` build fresh priors (the retry passes
    ``max_iterations``). ``settings`` needs temperature_K, timestep_fs, friction_per_fs, equil,
    stride and checkpoint_every; ``n_frames`` frames are sampled after ``equil`` steps.
    """

    def __init__(self, name: str, atoms: Any, settings: Any, n_frames: int, seed: int, fingerprint: str,
                 checkpoint: Path, make_reference: Callable[..., Any], make_ff: Callable[[], Any],
                 retry_options: dict[str, Any] | None = None) -> None:
        self.name, self.s, self.n_frames, self.seed = name, settings, int(n_frames), int(seed)
        self.fingerprint, self.checkpoint = fingerprint, Path(checkpoint)
        self.make_reference, self.make_ff = make_reference, make_ff
        self.retry_options = dict(retry_options or {})
        self.numbers = np.array(atoms.numbers)
        self.start_positions = np.array(atoms.positions, dtype=np.float64)
        self.total_steps = int(settings.equil) + int(settings.stride) * self.n_frames

    # ------------------------------------------------------------------------------ state
    def initial_state(self) -> MDState:
        from ase import Atoms
        from ase.md import velocitydistribution as vd

        rng = np.random.Generator(np.random.PCG64(self.seed))
        atoms = Atoms(numbers=self.numbers, positions=self.start_positions)
        thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution  # ase < 3.29
        thermalize(atoms, temperature_K=self.s.temperature_K, rng=rng)
        vd.Stationary(atoms)
        vd.ZeroRotation(atoms)
        meta = {"fingerprint": self.fingerprint, "step": 0, "rng": rng.bit_generator.state, "complete": False,
                "reference_calls": 0, "reference_seconds": 0.0, "ff_calls": 0, "ff_seconds": 0.0,
                "md_seconds": 0.0, "retries": [], "resumed": 0}
        return MDState(atoms.positions.copy(), atoms.get_momenta().copy(), {k: [] for k in FRAME_KEYS}, meta)

    def load_or_start(self) -> MDState:
        if not self.checkpoint.exists():
            return self.initial_state()
        state = MDState.load(self.checkpoint)
        found = state.meta.get("fingerprint")
        if found != self.fingerprint:
            raise SystemExit(f"{self.checkpoint} is the checkpoint of a run with different settings "
                             f"(fingerprint {found}, this run {self.fingerprint}); refusing to mix them. "
                             f"Rerun with that run's settings, or delete the checkpoint to start over.")
        return state

    # ---------------------------------------------------------------------------------- run
    def run(self, progress: bool = True) -> MDState:
        """Continue (or start) the trajectory until every frame is sampled; return the final state."""
        from ase import Atoms, units
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        st = self.load_or_start()
        if st.meta["complete"]:
            return st
        if st.meta["step"] > 0:
            st.meta["resumed"] += 1
            log(f"{self.name}: resuming at MD step {st.meta['step']} of {self.total_steps} "
                f"({len(st.frames['energy'])} frames so far)")
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = st.meta["rng"]
        atoms = Atoms(numbers=self.numbers, positions=st.positions)
        atoms.set_constraint(FixCom())
        atoms.set_momenta(st.momenta, apply_constraint=False)
        atoms.calc = self.make_reference()
        ff = self.make_ff()
        dyn = Langevin(atoms, self.s.timestep_fs * units.fs, temperature_K=self.s.temperature_K,
                       friction=self.s.friction_per_fs / units.fs, fixcm=False, rng=rng)
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        bar = tqdm(total=self.total_steps, initial=st.meta["step"], desc=f"{self.name} MD", unit="step",
                   disable=not progress, mininterval=0.5 if tty else 60.0, file=sys.stderr)
        since_save = 0
        clock = {"mark": time.perf_counter()}

        def snapshot() -> tuple:
            return atoms.positions.copy(), atoms.get_momenta().copy(), rng.bit_generator.state, st.meta["step"]

        def restore(snap: tuple) -> None:
            atoms.set_positions(snap[0], apply_constraint=False)
            atoms.set_momenta(snap[1], apply_constraint=False)
            rng.bit_generator.state = snap[2]

        def save(snap: tuple) -> None:
            st.positions, st.momenta = snap[0], snap[1]
            st.meta.update(rng=snap[2], step=snap[3])
            keep = sum(1 for s in st.frames["md_step"] if s <= snap[3])  # frames up to the saved step
            keep = min([keep] + [len(v) for v in st.frames.values()])
            for values in st.frames.values():
                del values[keep:]
            now = time.perf_counter()
            st.meta["md_seconds"] += now - clock["mark"]
            clock["mark"] = now
            st.save(self.checkpoint)

        snap = snapshot()
        try:
            if st.meta["step"] < self.total_steps:  # the forces of the start (cached for the first step)
                self._timed_reference(st, atoms.get_forces)
            while st.meta["step"] < self.total_steps:
                snap = snapshot()
                step = st.meta["step"] + 1
                self._step(dyn, atoms, st, snap, restore, save, step)
                st.meta["step"] = step
                bar.update(1)
                if step > self.s.equil and (step - self.s.equil) % self.s.stride == 0:
                    self._sample(atoms, ff, st, snap, restore, save, step)
                    since_save += 1
                    bar.set_postfix(frames=len(st.frames["energy"]), T=f"{atoms.get_temperature():.0f}K",
                                    refresh=False)
                    if since_save >= self.s.checkpoint_every:
                        save(snapshot())
                        since_save = 0
            st.meta["complete"] = True
            save(snapshot())
        except MDFailure:
            raise  # the state before the failing step is saved already
        except BaseException:  # KeyboardInterrupt, SIGTERM...: keep the last whole step
            restore(snap)
            save(snap)
            log(f"{self.name}: stopped at MD step {snap[3]}; state saved to {self.checkpoint} (rerun to resume)")
            raise
        finally:
            bar.close()
        return st

    def _timed_reference(self, st: MDState, call: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        call()
        st.meta["reference_seconds"] += time.perf_counter() - t0
        st.meta["reference_calls"] += 1

    def _step(self, dyn: Any, atoms: Any, st: MDState, snap: tuple, restore: Callable, save: Callable, step: int) -> None:
        from ase_adapt.priors import PriorError

        try:
            self._timed_reference(st, dyn.step)
            return
        except PriorError as exc:
            first = str(exc)
        restore(snap)
        log(f"{self.name}: reference call failed at MD step {step} ({first}); retrying once from the "
            f"previous state with a fresh calculator {self.retry_options or ''}")
        atoms.calc = self.make_reference(**self.retry_options)
        try:
            self._timed_reference(st, dyn.step)
        except PriorError as exc:
            restore(snap)
            save(snap)
            raise MDFailure(f"{self.name}: the reference failed twice at MD step {step}: {exc}. The state before "
                            f"that step is saved in {self.checkpoint}; rerunning resumes there.") from exc
        st.meta["retries"].append({"step": step, "what": "reference", "error": first[:300]})
        log(f"{self.name}: retry at MD step {step} succeeded; the fresh calculator is kept for this run")

    def _sample(self, atoms: Any, ff: Any, st: MDState, snap: tuple, restore: Callable, save: Callable, step: int) -> None:
        from ase_adapt.priors import PriorError

        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64)  # raw, not COM-projected
        if not (math.isfinite(energy) and np.isfinite(forces).all()):  # the Prior checks this; be sure
            restore(snap)
            save(snap)
            raise MDFailure(f"{self.name}: non-finite reference labels at MD step {step}")
        t0 = time.perf_counter()
        try:
            labels = ff.label(atoms)
        except PriorError as exc:
            log(f"{self.name}: GFN-FF failed at MD step {step} ({exc}); retrying once with a fresh calculator")
            try:
                labels = self.make_ff().label(atoms)
            except PriorError as exc2:
                restore(snap)
                save(snap)
                raise MDFailure(f"{self.name}: GFN-FF failed twice on the frame of MD step {step}: {exc2}. The "
                                f"state before that step is saved in {self.checkpoint}.") from exc2
            st.meta["retries"].append({"step": step, "what": "gfn-ff", "error": str(exc)[:300]})
        st.meta["ff_seconds"] += time.perf_counter() - t0
        st.meta["ff_calls"] += 1
        row = {"positions": atoms.positions.copy(), "energy": energy, "forces": forces,
               "ff_energy": float(labels["energy"]), "ff_forces": np.asarray(labels["forces"], dtype=np.float64),
               "md_step": float(step), "temperature_K": float(atoms.get_temperature())}
        for key in FRAME_KEYS:
            st.frames[key].append(row[key])


# ------------------------------------------------------------------------- label statistics
def label_stats(frames: list, key_e: str, key_f: str, ref: bool = False) -> dict[str, float]:
    e = np.array([a.info[key_e] for a in frames])
    f = np.concatenate([a.arrays[key_f] for a in frames])
    out = {"energy_mean_eV": float(e.mean()), "energy_std_eV": float(e.std()),
           "force_rms_eV_per_A": float(np.sqrt((f ** 2).mean())), "force_max_abs_eV_per_A": float(np.abs(f).max())}
    if not ref:
        fr = np.concatenate([a.arrays["forces"] for a in frames])
        er = np.array([a.info["energy"] for a in frames])
        n = len(frames[0])
        out["force_mae_vs_reference_meV_per_A"] = float(1e3 * np.abs(f - fr).mean())
        d = (e - er) - (e - er).mean()
        out["energy_mae_offset_corrected_vs_reference_meV_per_atom"] = float(1e3 * np.abs(d).mean() / n)
    return out


def bonds_changed(start: Any, frames: list) -> int:
    """Frames whose covalent connectivity (1.25 x sum of covalent radii) differs from ``start``'s."""
    from ase_adapt.adapt.topology import covalent_bonds

    ref = covalent_bonds(start, BOND_FACTOR)
    return int(sum(not np.array_equal(covalent_bonds(a, BOND_FACTOR), ref) for a in frames))


BOND_FACTOR = 1.25  # x sum of covalent radii: a bond, in the data checks


@contextlib.contextmanager
def quiet_sgdml() -> Iterator[None]:
    """sgdml logs every fit at INFO level through its own stderr handlers: keep its warnings only."""
    import logging

    import sgdml.train  # noqa: F401  (creates sgdml's loggers, so that they can be quietened)

    names = {"sgdml", "sgdml.train", "sgdml.predict", "sgdml.solvers.analytic", "sgdml.solvers.iterative"}
    names |= {n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] == "sgdml"}
    loggers = [logging.getLogger(n) for n in sorted(names)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
