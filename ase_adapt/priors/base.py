"""The :class:`Prior` calculator: one ASE calculator in front of every prior backend.

A prior wraps a backend ASE calculator (tblite, xtb-python, LJ, EMT, sGDML or any user
calculator) and adds what test-time training needs from it:

- every failure (an exception inside the backend, an unsupported element, non-finite positions
  or results) becomes :class:`~ase_adapt.errors.PriorError` naming the prior, the structure and
  the reason, so that TTT can skip adaptation instead of training on garbage;
- cheap checks (elements, periodicity, an sGDML model's molecule) run before any compute;
- OpenMP/BLAS threads are limited with ``threadpoolctl`` around each computation only (never
  through the environment), so a torch model in the same process cannot change the backend's
  thread count and with it its floating-point results;
- native output that ignores the backend's verbosity can be silenced at the file-descriptor
  level (:func:`silenced_stdout`), and backends that drop files into the working directory
  (xtb's GFN-FF writes ``gfnff_topo`` and ``gfnff_adjacency``) can be run inside a private
  temporary directory (:func:`scratch_cwd`).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import tempfile
import threading
from typing import Any, Callable, Collection, Iterator

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, Parameters, all_changes
from ase.data import chemical_symbols

from ..errors import PriorError
from ..labels import charge_and_spin

__all__ = ["Prior", "StressPrior", "describe", "native_flushers", "scratch_cwd", "silenced_stdout"]

Check = Callable[[Atoms], "str | None"]


def describe(atoms: Atoms) -> str:
    """``'C2H6O (9 atoms)'``: how error messages name a structure."""
    return f"{atoms.get_chemical_formula()} ({len(atoms)} atoms)"


class Prior(Calculator):
    """An ASE calculator wrapping a prior backend (energy and forces).

    ``kind`` names the model head the prior trains (:attr:`head_name` is ``prior:<kind>``);
    ``spec`` is the string :func:`~ase_adapt.priors.make_prior` was given. ``threads`` limits
    the OpenMP/BLAS threads during each computation (``None``: leave them alone).
    ``elements``: the atomic numbers the backend supports (``None``: any). ``checks`` return a
    reason string when a structure cannot be evaluated. ``reuse_setup=False`` resets the backend
    before every structure so that results never depend on what was computed before;
    ``True`` lets the backend reuse its setup (SCF guess, GFN-FF topology), which is faster in MD.
    ``quiet`` silences native writes to file descriptor 1 during each computation; ``scratch``
    runs each computation in a fresh temporary working directory, removed afterwards.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters: dict[str, Any] = {}

    def __init__(
        self,
        backend: Calculator,
        kind: str,
        spec: str | None = None,
        *,
        threads: int | None = None,
        elements: Collection[int] | None = None,
        checks: Collection[Check] = (),
        reuse_setup: bool = False,
        quiet: bool = False,
        scratch: bool = False,
        electronic: bool = False,
    ) -> None:
        super().__init__()
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
                raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
            try:
                import threadpoolctl  # noqa: F401  (used at compute time; fail here, not inside TTT)
            except ImportError as exc:
                raise ImportError("limiting a prior's threads needs threadpoolctl: pip install ase-adapt[priors] "
                                  "(or pass threads=None)") from exc
        self.backend = backend
        self.kind = str(kind)
        self.spec = str(spec if spec is not None else kind)
        self.threads = None if threads is None else int(threads)
        self.elements = None if elements is None else frozenset(int(z) for z in elements)
        self.checks = tuple(checks)
        self.reuse_setup = bool(reuse_setup)
        self.quiet = bool(quiet)
        self.scratch = bool(scratch)
        self.electronic = bool(electronic)  # takes charge and spin (atoms.info); others refuse a charged system
        self._controller: Any = None
        self._flushers: list[Callable[[], None]] | None = None
        # what identifies these labels (label_frames fingerprints calculator.parameters)
        self.parameters = Parameters(kind=self.kind, spec=self.spec, threads=self.threads,
                                     backend=type(backend).__name__,
                                     backend_parameters=dict(getattr(backend, "parameters", None) or {}))

    @property
    def head_name(self) -> str:
        """The model head trained on this prior's labels: ``prior:<kind>``."""
        return f"prior:{self.kind}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, spec={self.spec!r}, threads={self.threads})"

    # ----------------------------------------------------------------------------------- ASE API
    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and any(atoms.info.get(k) != self.atoms.info.get(k) for k in ("charge", "spin")):
            changes.append("info")  # a new charge or spin is a new system
        return changes

    def calculate(self, atoms: Atoms | None = None, properties: Any = ("energy",),
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.results = self._evaluate(self.atoms)

    def label(self, atoms: Atoms) -> dict[str, Any]:
        """``{'energy': float, 'forces': (n, 3)[, 'stress': Voigt (6,)]}`` as float64 copies.

        Stress is included for 3D-periodic structures when this prior implements it.
        Raises :class:`PriorError` when the prior fails.
        """
        work = atoms.copy()
        out: dict[str, Any] = {
            "energy": float(self.get_property("energy", work)),
            "forces": np.array(self.get_property("forces", work), dtype=np.float64),
        }
        if "stress" in self.implemented_properties and work.pbc.all():
            out["stress"] = np.array(self.get_property("stress", work), dtype=np.float64)
        return out

    # ------------------------------------------------------------------------------ evaluation
    def unusable_reason(self, atoms: Atoms) -> str | None:
        """Why this prior cannot evaluate ``atoms`` (``None``: it can); runs no backend code."""
        if not np.isfinite(atoms.positions).all():
            return "non-finite atomic positions"
        if atoms.pbc.any() and not np.isfinite(np.asarray(atoms.cell)).all():
            return "non-finite cell"
        try:
            charge, spin = charge_and_spin(atoms)
        except ValueError as exc:
            return str(exc)
        if not self.electronic and (charge != 0 or (spin or 1) != 1):
            return (f"{self.kind} has no electrons, so it cannot model a charged or open-shell system "
                    f"(atoms.info charge={charge}, spin={spin}); use gfn2-xtb, gfn1-xtb or gfn-ff")
        if self.elements is not None:
            bad = sorted(set(int(z) for z in atoms.numbers) - self.elements)
            if bad:
                names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in bad)
                return f"unsupported element(s) {names}"
        for check in self.checks:
            reason = check(atoms)
            if reason:
                return reason
        return None

    def _fail(self, atoms: Atoms, reason: str) -> PriorError:
        return PriorError(f"prior {self.spec!r} failed on {describe(atoms)}: {reason}")

    def _evaluate(self, atoms: Atoms) -> dict[str, Any]:
        reason = self.unusable_reason(atoms)
        if reason:
            raise self._fail(atoms, reason)
        with_stress = "stress" in self.implemented_properties and bool(atoms.pbc.all())
        try:
            with self._thread_limit(), self._silence(), (scratch_cwd() if self.scratch else contextlib.nullcontext()):
                if not self.reuse_setup:
                    self.backend.reset()
                work = self._with_charge_and_spin(atoms)
                work.calc = self.backend
                energy = float(work.get_potential_energy(apply_constraint=False))
                forces = np.array(work.get_forces(apply_constraint=False), dtype=np.float64)
                stress = (np.array(work.get_stress(voigt=True, apply_constraint=False), dtype=np.float64)
                          if with_stress else None)
        except PriorError:
            raise
        except Exception as exc:  # any backend failure; KeyboardInterrupt and friends pass
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
            raise self._fail(atoms, f"{type(exc).__name__} in the backend: {text}") from exc
        if not math.isfinite(energy):
            raise self._fail(atoms, f"non-finite energy {energy}")
        if forces.shape != (len(atoms), 3) or not np.isfinite(forces).all():
            raise self._fail(atoms, f"non-finite or malformed forces (shape {forces.shape})")
        results: dict[str, Any] = {"energy": energy, "free_energy": energy, "forces": forces}
        if stress is not None:
            if stress.shape != (6,) or not np.isfinite(stress).all():
                raise self._fail(atoms, "non-finite or malformed stress")
            results["stress"] = stress
        return results

    def _with_charge_and_spin(self, atoms: Atoms) -> Atoms:
        """A copy whose initial charges and moments carry ``atoms.info`` charge and spin (ASE's way:
        tblite and xtb-python read their sums); without those keys the user's own values stay.

        The copy carries no constraints: a prior returns the raw gradient of its energy. (An MD
        frame's ``FixCom`` once projected every label: ``adjust_forces`` subtracts ``m_i * lambda``,
        which is not zero even when the forces sum to zero, and no model could fit those forces.)"""
        work = atoms.copy()
        work.constraints = []
        if self.electronic and ("charge" in atoms.info or "spin" in atoms.info):
            charge, spin = charge_and_spin(atoms)
            if "charge" in atoms.info:  # otherwise the user's initial charges stay
                q = np.zeros(len(work))
                q[0] = charge
                work.set_initial_charges(q)
            if spin is not None:
                m = np.zeros(len(work))
                m[0] = spin - 1  # unpaired electrons
                work.set_initial_magnetic_moments(m)
        return work

    def _silence(self) -> contextlib.AbstractContextManager:
        if not self.quiet:
            return contextlib.nullcontext()
        if self._flushers is None:  # found once, after the backend's libraries are loaded
            self._flushers = native_flushers()
        return silenced_stdout(self._flushers)

    def _thread_limit(self) -> contextlib.AbstractContextManager:
        if self.threads is None:
            return contextlib.nullcontext()
        if self._controller is None:  # built after the backend's libraries are loaded
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
        return self._controller.limit(limits=self.threads)


class StressPrior(Prior):
    """A :class:`Prior` whose backend also gives stress (for 3D-periodic cells)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]


# ------------------------------------------------------------------ process-wide side effects
# fd 1 and the working directory belong to the whole process: callers are serialised.
_PROCESS_LOCK = threading.RLock()


@contextlib.contextmanager
def scratch_cwd() -> Iterator[str]:
    """Run the block in a fresh temporary working directory, then go back and delete it.

    The old directory is kept open, so going back works even if its path is gone or unreadable.
    The working directory is process-wide: other threads see the change while this is active.
    """
    with _PROCESS_LOCK, tempfile.TemporaryDirectory(prefix="ase-adapt-prior-") as tmp:
        saved = os.open(".", os.O_RDONLY)
        try:
            os.chdir(tmp)
            yield tmp
        finally:
            os.fchdir(saved)
            os.close(saved)


def native_flushers() -> list[Callable[[], None]]:
    """Functions that flush C stdio and every loaded libgfortran's unit buffers.

    gfortran buffers unit 6 when stdout is not a terminal, so without this flush the silenced
    text would reach the restored stdout later. Located through /proc/self/maps (Linux).
    """
    flushers: list[Callable[[], None]] = []
    try:
        libc = ctypes.CDLL(None)
        flushers.append(lambda: libc.fflush(None))
    except (OSError, AttributeError):
        pass
    paths: set[str] = set()
    with contextlib.suppress(OSError):
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.rstrip("\n").partition("/")[2]
                if "libgfortran" in path:
                    paths.add("/" + path)
    for path in sorted(paths):
        try:
            flush = ctypes.CDLL(path)._gfortran_flush_i4
        except (OSError, AttributeError):
            continue
        flush.argtypes = [ctypes.c_void_p]
        flushers.append(lambda f=flush: f(None))  # NULL: flush every unit
    return flushers


def _flush_all(flushers: list[Callable[[], None]]) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for flush in flushers:
        flush()


@contextlib.contextmanager
def silenced_stdout(flushers: list[Callable[[], None]] | None = None) -> Iterator[None]:
    """Send everything written to file descriptor 1 (C, Fortran and Python) to /dev/null.

    Python's and native buffers are flushed before and after (``flushers``: the result of
    :func:`native_flushers`, found afresh when ``None``), and fd 1 is restored on exit.
    fd 1 is process-wide: other threads' output is silenced too while this is active, so
    callers are serialised by a lock.
    """
    with _PROCESS_LOCK:
        flushers = native_flushers() if flushers is None else flushers
        _flush_all(flushers)
        saved = os.dup(1)
        sink = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(sink, 1)
            try:
                yield
            finally:
                _flush_all(flushers)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(sink)
