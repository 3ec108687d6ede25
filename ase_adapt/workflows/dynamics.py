"""``ase-adapt md``: molecular dynamics with a trajectory, a log, a summary, a stability monitor and
restart files, from Python (:func:`run_md`) and the CLI.

Ensembles: Langevin NVT (``nvt``), Bussi NVT (``bussi``, ASE's stochastic velocity rescaling)
and NVE velocity Verlet (``nve``). Outputs in ``out``:

- ``trajectory.extxyz``: a frame (positions, momenta, energy, forces) every ``traj_every`` steps;
- ``md.log``: step, time, E_pot, E_kin, E_tot, T every ``log_every`` steps, with the calculator's
  adaptation events (shift verdicts, TTT, rollbacks) interleaved as ``# event`` lines;
- ``restart.json``: everything a killed run needs to continue, written atomically every
  ``checkpoint_every`` steps and when the run ends: step, positions, momenta, the integrator's
  random state, the lengths of the trajectory and log at that moment, the settings and what
  computes the forces (:func:`~ase_adapt.workflows.provenance.calculator_identity`: model
  weights by content, head, prior, adaptation settings). ``resume=True`` truncates the files of
  a *killed* run to those lengths and continues, so the continuation is identical to an
  uninterrupted run for any deterministic calculator (an :class:`~ase_adapt.AdaptiveCalculator`
  re-checks the resumed structure: its adaptation is not part of the restart). A resume with
  other settings or another calculator is refused, naming what differs. A run that ended is
  never rewritten: one that stopped (an instability) cannot be resumed, and one that completed
  is only extended, when more ``steps`` are asked for;
- ``summary.json``: settings, steps done, why the run stopped, the stability verdict, the mean
  temperature (flagged when it stays far above the target) and timings, adaptation included.

``minimize_fmax`` relaxes the structure with BFGS before a fresh run: a structure far from the
model's minimum heats up as it falls into it (with the default model of 2026-12-04, ethanol from
ASE's geometry passed 1,500 K at a 300 K target). The stability monitor stops a run cleanly and
says why: a covalent bond of the starting molecule that deviates more than
``bond_deviation_limit`` (non-periodic systems), any force above
``max_force``, a temperature above ``max_temperature_factor`` x the target and above 3,000 K,
or a :class:`~ase_adapt.errors.CalculationFailed` (NaN, overlapping atoms).
"""

from __future__ import annotations

import enum
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import CalculationFailed

from .._io import check_writable, write_json
from .._settings import check_types
from .md import reference_bonds
from .provenance import calculator_identity, differences

__all__ = ["Ensemble", "MDSettings", "run_md", "read_restart"]

TRAJECTORY, LOG, RESTART, SUMMARY = "trajectory.extxyz", "md.log", "restart.json", "summary.json"
# K: the instantaneous temperature of a small molecule swings far above its target (a 9-atom
# molecule started off its minimum passed 1,500 K at a 300 K target); a blow-up goes far beyond.
MIN_TEMPERATURE_LIMIT = 3000.0
# A thermostatted run whose mean temperature over its second half exceeds this factor x the target
# has not equilibrated (the model's minimum is far from the start, or the dynamics heat up).
HOT_FACTOR = 1.5


class Ensemble(str, enum.Enum):
    NVT = "nvt"      # Langevin
    BUSSI = "bussi"  # stochastic velocity rescaling
    NVE = "nve"      # velocity Verlet


@dataclass(frozen=True)
class MDSettings:
    ensemble: Ensemble = Ensemble.NVT
    steps: int = 1000
    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01   # Langevin
    taut_fs: float = 100.0          # Bussi
    seed: int = 0
    traj_every: int = 10
    log_every: int = 10
    checkpoint_every: int = 100
    bond_deviation_limit: float = 0.5  # Å, molecules (non-periodic) only
    max_force: float = 50.0            # eV/Å
    max_temperature_factor: float = 10.0
    minimize_fmax: float | None = None  # eV/Å: relax with BFGS first (a fresh run only)
    progress: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("steps", "traj_every", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("timestep_fs", "friction_per_fs", "taut_fs", "bond_deviation_limit", "max_force",
                     "max_temperature_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.minimize_fmax is not None and not self.minimize_fmax > 0:
            raise ValueError(f"minimize_fmax must be > 0 or None, got {self.minimize_fmax}")
        if not self.temperature_K >= 0:
            raise ValueError(f"temperature_K must be >= 0, got {self.temperature_K}")


def _integrator(atoms: Atoms, s: MDSettings, rng: np.random.Generator):
    dt = s.timestep_fs * units.fs
    if s.ensemble is Ensemble.NVT:
        from ase.md.langevin import Langevin

        return Langevin(atoms, dt, temperature_K=s.temperature_K, friction=s.friction_per_fs / units.fs,
                        fixcm=False, rng=rng)
    if s.ensemble is Ensemble.BUSSI:
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, temperature_K=s.temperature_K, taut=s.taut_fs * units.fs, rng=rng)
    from ase.md.verlet import VelocityVerlet

    return VelocityVerlet(atoms, dt)


class _Run:
    """One run's state, files and monitor (a class so that the loop reads in a few lines)."""

    def __init__(self, atoms: Atoms, calc: Any, s: MDSettings, out: Path, command: dict | None = None) -> None:
        self.s, self.out, self.calc, self.command = s, out, calc, dict(command or {})
        self.identity = calculator_identity(calc)
        self.atoms = atoms.copy()
        self.atoms.calc = calc
        self.rng = np.random.default_rng(s.seed)
        self.step, self.failure = 0, None
        self.events_seen = len(getattr(calc, "events", None) or [])  # events of earlier runs are not this run's
        self.adaptation_seconds = 0.0
        self.bonds, self.lengths = reference_bonds(atoms) if not atoms.pbc.any() else (np.zeros((0, 2), int), None)
        self.max_dev = 0.0

    # ------------------------------------------------------------------ restart
    def restore(self, r: dict[str, Any]) -> None:
        """Continue from restart record ``r``; refuse one of other settings, calculator or structure."""
        path = self.out / RESTART
        differ = differences(r["settings"], _plain(self.s, resume_ok=True))
        if r.get("calculator") is not None:  # restart files before 2026-12-08 did not record it
            differ += differences(r["calculator"], self.identity, "calculator.")
        else:
            import warnings

            warnings.warn(f"{self.out / RESTART} does not record which model and prior computed its forces (an "
                          "older restart file): the resume cannot check that they are the same", stacklevel=3)
        if differ:
            raise ValueError(f"{path} was written by a run with other settings: " + "; ".join(differ)
                             + ". Resume with the run's own settings (options left out are taken from it), "
                             "or start a new run in a new --out")
        if r["numbers"] != self.atoms.numbers.tolist():
            raise ValueError(f"{path} belongs to another structure")
        self.atoms.positions = np.array(r["positions"])
        self.atoms.set_momenta(np.array(r["momenta"]))
        self.atoms.cell = np.array(r["cell"])
        self.rng.bit_generator.state = r["rng"]
        self.step, self.max_dev = r["step"], r["max_bond_deviation"]
        self.bonds, self.lengths = np.array(r["bonds"], dtype=int).reshape(-1, 2), np.array(r["bond_lengths"])
        for name, size in r["file_sizes"].items():
            path = self.out / name
            if not path.is_file() or path.stat().st_size < size:
                raise ValueError(f"{path} is shorter than at the restart point (was it edited or lost?); "
                                 "start a new run in a new --out")
            if r.get("ended") is None:  # a killed run: what it wrote after the restart point is written again
                with open(path, "r+b") as fh:
                    fh.truncate(size)
            elif path.stat().st_size != size:
                raise ValueError(f"{path} changed after its run ended; it is left as it is. Start a new run in a new --out")

    def checkpoint(self, ended: dict[str, Any] | None = None) -> None:
        sizes = {name: (self.out / name).stat().st_size for name in (TRAJECTORY, LOG)}
        for name in sizes:  # the lines the restart points at are on disk before the restart is
            with open(self.out / name, "rb+") as fh:
                os.fsync(fh.fileno())
        write_json(self.out / RESTART, {
            "settings": _plain(self.s, resume_ok=True), "target_steps": self.s.steps, "calculator": self.identity,
            "command": self.command,
            "step": self.step, "numbers": self.atoms.numbers.tolist(),
            "positions": self.atoms.positions.tolist(), "momenta": self.atoms.get_momenta().tolist(),
            "cell": self.atoms.cell.array.tolist(), "rng": self.rng.bit_generator.state,
            "max_bond_deviation": self.max_dev, "bonds": self.bonds.tolist(),
            "bond_lengths": [] if self.lengths is None else self.lengths.tolist(), "file_sizes": sizes,
            "ended": ended})

    # ------------------------------------------------------------------ output and monitor
    def record(self) -> None:
        a, s = self.atoms, self.s
        if self.step % s.traj_every == 0:
            from ase.io import write

            with open(self.out / TRAJECTORY, "a") as fh:
                write(fh, a, format="extxyz")
        if self.step % s.log_every == 0:
            epot, ekin = a.get_potential_energy(), a.get_kinetic_energy()
            lines = self._new_events()
            lines.append(f"{self.step:>10d} {self.step * s.timestep_fs / 1000:>10.4f} {epot:>16.6f} {ekin:>12.6f} "
                         f"{epot + ekin:>16.6f} {a.get_temperature():>9.2f}")
            with open(self.out / LOG, "a") as fh:
                fh.write("\n".join(lines) + "\n")

    def _new_events(self) -> list[str]:
        events = getattr(self.calc, "events", None) or []
        new = events[self.events_seen:]
        self.events_seen = len(events)
        self.adaptation_seconds += sum(float(e.get("seconds") or 0.0) for e in new)
        return [f"# event at step {self.step}: {describe_event(e)}" for e in new]

    def unstable(self) -> str | None:
        a, s = self.atoms, self.s
        if len(self.bonds):
            d = np.linalg.norm(a.positions[self.bonds[:, 1]] - a.positions[self.bonds[:, 0]], axis=1)
            dev = np.abs(d - self.lengths)
            self.max_dev = max(self.max_dev, float(dev.max()))
            if dev.max() > s.bond_deviation_limit:
                i, j = self.bonds[int(dev.argmax())]
                return f"bond {i}-{j} deviated {dev.max():.2f} Å > {s.bond_deviation_limit} Å"
        fmax = float(np.linalg.norm(a.get_forces(), axis=1).max())
        if fmax > s.max_force:
            return f"a force of {fmax:.1f} eV/Å > max_force {s.max_force}"
        limit = max(s.max_temperature_factor * s.temperature_K, MIN_TEMPERATURE_LIMIT)
        if a.get_temperature() > limit:
            return f"temperature {a.get_temperature():.0f} K > {limit:.0f} K"
        return None


def describe_event(e: dict[str, Any]) -> str:
    """One log line of an adaptation event: what happened, how long it took, and why if it failed."""
    text = f"{e.get('kind')} ({e.get('action')})"
    if e.get("seconds") is not None:
        text += f", {float(e['seconds']):.1f} s"
    if e.get("prior_error"):
        text += f"; prior failed: {e['prior_error']}"
    ttt = e.get("ttt") or {}
    if ttt.get("rolled_back") and ttt.get("stop_reason"):
        reason = str(ttt["stop_reason"])
        text += f"; {reason}" if reason.startswith("rolled back") else f"; rolled back: {reason}"
    return text


def logged_temperatures(log: Path) -> list[float]:
    """The T column of every step line of ``md.log`` (resumed runs included)."""
    out = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if parts and not line.startswith("#") and len(parts) >= 6:
            out.append(float(parts[5]))
    return out


def mean_temperature(temperatures: list[float], target: float, ensemble: "Ensemble") -> dict[str, Any]:
    """Mean temperature over the second half of the logged steps, flagged when far above a thermostat's target."""
    half = temperatures[len(temperatures) // 2:]
    mean = float(np.mean(half)) if half else None
    hot = (mean is not None and ensemble is not Ensemble.NVE and target > 0 and len(temperatures) >= 4
           and mean > HOT_FACTOR * target)
    return {"mean_temperature_K_second_half": mean, "too_hot": bool(hot),
            "temperature_warning": (f"the mean temperature over the second half of the run, {mean:.0f} K, is "
                                    f"{mean / target:.1f}x the target {target:g} K: the run did not equilibrate "
                                    "(a start far from the model's minimum, or dynamics that heat up); relax first "
                                    "(--minimize), shorten the timestep or check the model on this system")
            if hot else None}


def _summary_of_ended(record: dict[str, Any], s: MDSettings, out: Path) -> dict[str, Any]:
    """The summary of a run that ended: ``summary.json`` as written, or, when the run was killed between
    its final restart record and its summary, one rebuilt from the record (and written)."""
    if (out / SUMMARY).is_file():
        return json.loads((out / SUMMARY).read_text())
    ended = record["ended"]
    summary = {"settings": {**record["settings"], "steps": record.get("target_steps")},
               "calculator": record.get("calculator"), "steps_done": record["step"],
               "completed": bool(ended.get("completed")), "stopped_because": ended.get("stopped_because"),
               "max_bond_deviation_A": record.get("max_bond_deviation"),
               **mean_temperature(logged_temperatures(out / LOG), s.temperature_K, s.ensemble),
               "rebuilt_from": RESTART, "outputs": {name: str(out / name) for name in (TRAJECTORY, LOG, RESTART)}}
    write_json(out / SUMMARY, summary)
    return summary


def read_restart(out: str | Path) -> dict[str, Any]:
    """The restart record of the run in ``out``; a missing or unreadable file is a clear ValueError."""
    path = Path(out) / RESTART
    if not path.is_file():
        raise ValueError(f"nothing to resume in {out}: it holds no {RESTART} (no run was started there); "
                         "leave out --resume to start a run")
    try:
        record = json.loads(path.read_text())
        for key in ("settings", "step", "numbers", "positions", "momenta", "rng", "file_sizes"):
            record[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable restart file ({type(exc).__name__}: {exc}); the run cannot "
                         "be resumed from it. Its trajectory and log are kept; start a new run in a new --out") from None
    return record


def _plain(s: MDSettings, resume_ok: bool = False) -> dict[str, Any]:
    d = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(s).items()}
    if resume_ok:  # may differ between a run and its resumption
        d.pop("progress")
        d.pop("steps")
    return d


def run_md(atoms: Atoms, calc: Any, settings: MDSettings | None = None, out: str | Path = "md-output",
           *, resume: bool = False, command: dict | None = None) -> dict[str, Any]:
    """Run MD from ``atoms`` (copied) with ``calc``; write the outputs into ``out``; return the summary.

    ``resume=True`` continues the run in ``out`` (``steps`` may be raised to run longer); the
    settings and the calculator must be the run's own. Without it an existing restart is refused
    rather than overwritten. ``command`` (plain data, e.g. the CLI's model and prior specs) is
    kept in the restart file for whoever resumes.
    """
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from tqdm.auto import tqdm

    s = settings or MDSettings()
    out = check_writable(out, directory=True)
    if (out / RESTART).exists() and not resume:
        raise FileExistsError(f"{out} holds a run ({RESTART}); pass resume=True (--resume) or choose a new --out")
    record = read_restart(out) if resume else None
    run = _Run(atoms, calc, s, out, command)
    if record is not None:
        ended = record.get("ended")
        if ended is not None and not ended.get("completed", False):
            _summary_of_ended(record, s, out)  # a run killed before its summary was written gets one
            raise ValueError(f"the run in {out} stopped at step {record['step']} ({ended.get('stopped_because')}); "
                             "its record is kept as it is. Resuming would continue past that; start a new run "
                             "in a new --out")
        run.restore(record)
        if ended is not None and s.steps <= run.step:
            print(f"nothing to do: the run in {out} completed {run.step} steps; ask for more with a larger --steps")
            return _summary_of_ended(record, s, out)
        if ended is not None:  # extending a completed run: a kill from here on returns to its end
            run.checkpoint()
    else:
        for name in (TRAJECTORY, LOG, SUMMARY):
            (out / name).unlink(missing_ok=True)
        (out / LOG).write_text("#       step    time/ps       E_pot/eV     E_kin/eV       E_total/eV       T/K\n")
        if s.minimize_fmax is not None:  # a structure far from the model's minimum heats up as it falls
            from ase.optimize import BFGS

            BFGS(run.atoms, logfile=None).run(fmax=s.minimize_fmax, steps=500)
            run.bonds, run.lengths = reference_bonds(run.atoms) if not atoms.pbc.any() else (run.bonds, None)
        thermalize_momenta(run.atoms, temperature_K=s.temperature_K, rng=run.rng)
        Stationary(run.atoms)
        run.record()
        run.checkpoint()
    dyn = _integrator(run.atoms, s, run.rng)
    start, t0 = run.step, time.perf_counter()
    with tqdm(total=s.steps, initial=start, unit="step", desc=f"MD {s.ensemble.value}",
              disable=None if s.progress else True) as bar:
        while run.step < s.steps and run.failure is None:
            try:
                dyn.run(1)
            except CalculationFailed as exc:
                run.failure = f"calculation failed at step {run.step + 1}: {exc}"
                break
            run.step += 1
            bar.update(1)
            run.failure = run.unstable()
            run.record()
            if run.step % s.checkpoint_every == 0 and run.step < s.steps and run.failure is None:
                run.checkpoint()
    seconds = time.perf_counter() - t0
    late = run._new_events()  # events after the last log line: logged and counted too
    if late:
        with open(out / LOG, "a") as fh:
            fh.write("\n".join(late) + "\n")
    heat = mean_temperature(logged_temperatures(out / LOG), s.temperature_K, s.ensemble)
    if heat["too_hot"]:
        with open(out / LOG, "a") as fh:
            fh.write(f"# warning: {heat['temperature_warning']}\n")
    run.checkpoint(ended={"completed": run.failure is None, "stopped_because": run.failure})
    summary = {"settings": _plain(s), "calculator": run.identity, "steps_done": run.step,
               "completed": run.failure is None, "stopped_because": run.failure, "max_bond_deviation_A": run.max_dev,
               **heat, "seconds_this_call": seconds, "adaptation_seconds_this_call": run.adaptation_seconds,
               "ms_per_step": 1e3 * seconds / max(run.step - start, 1),
               "resumed_from_step": start if resume else None,
               "outputs": {name: str(out / name) for name in (TRAJECTORY, LOG, RESTART)}}
    write_json(out / SUMMARY, summary)
    return summary
