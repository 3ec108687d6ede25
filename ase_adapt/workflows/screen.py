"""``ase-adapt screen``: random structure search (RSS) for holes in a model's potential energy surface.

The protocol of the fine-tuning strategies paper (App. A.5, shared/DESIGN.md): for each 2-3-element
stoichiometry, random crystals from PyXtal (a random space group, ``volume_factor`` times the
covalent volume, at most ``max_atoms`` atoms per cell); each is relaxed (positions and cell), then
``cycles`` times rattled (Gaussian, ``rattle_std`` Å) and relaxed again. The cell moves with
:class:`ase.filters.UnitCellFilter` by default: ASE's Fréchet filter reaches the same minima, but
its matrix logarithm costs 20-80 ms per step on a 2-core machine, more than a model call on a
12-atom cell, and a screen takes ~10^5 steps. A model whose short-range repulsion has a hole lets structures implode into
dense, low-energy states; the flags of :mod:`ase_adapt.workflows.screen_report` find them.

Every structure is one task of :func:`ase_adapt.workflows.tasks.run_tasks`: seeded by (seed,
composition, index), written to ``out/tasks/`` when done, skipped by a re-run, and run serially
or on Dask with identical results. A relaxation that stops because the calculator failed or
the cell collapsed (under ``min_volume_per_atom``) keeps its last structure and says why.
"""

from __future__ import annotations

import enum
import math
import re
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms

from .._settings import check_types
from .relax import Optimizer, _optimizer
from .tasks import ModelSource, Task, fingerprint, load_source, run_tasks

__all__ = ["ScreenSettings", "parse_composition", "default_compositions", "random_crystal", "screen_task",
           "run_screen"]

_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*)")


class CellFilter(str, enum.Enum):
    UNIT = "unit"          # ase.filters.UnitCellFilter
    FRECHET = "frechet"    # ase.filters.FrechetCellFilter (its matrix logarithm: 20-80 ms per step here)


@dataclass(frozen=True)
class ScreenSettings:
    compositions: tuple[str, ...] = ()  # e.g. ("NaCl", "Na2Cl", "NaCl3"); or give elements
    elements: tuple[str, ...] = ()      # with no compositions: default_compositions(elements, n_compositions)
    n_compositions: int = 10
    structures: int = 50                # random crystals per composition
    cycles: int = 3                     # rattle -> relax cycles after the first relaxation
    rattle_std: float = 0.1             # Å
    optimizer: Optimizer = Optimizer.FIRE
    cell_filter: CellFilter = CellFilter.UNIT
    fmax: float = 0.05                  # eV/Å (and stress x volume)
    steps: int = 300                    # per relaxation
    max_atoms: int = 12                 # per cell
    volume_factor: float = 1.1          # PyXtal's volume factor
    min_volume_per_atom: float = 0.5    # Å^3: below it the cell has collapsed and relaxation stops
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.compositions, (list, str)):
            object.__setattr__(self, "compositions", tuple([self.compositions] if isinstance(self.compositions, str)
                                                           else self.compositions))
        if isinstance(self.elements, (list, str)):
            object.__setattr__(self, "elements", tuple([self.elements] if isinstance(self.elements, str)
                                                       else self.elements))
        check_types(self)
        if self.structures < 1 or self.cycles < 0 or self.steps < 1 or self.max_atoms < 2 or self.n_compositions < 1:
            raise ValueError("need structures >= 1, cycles >= 0, steps >= 1, max_atoms >= 2, n_compositions >= 1")
        if not (self.rattle_std >= 0 and self.fmax > 0 and self.volume_factor > 0 and self.min_volume_per_atom > 0):
            raise ValueError("need rattle_std >= 0, fmax > 0, volume_factor > 0, min_volume_per_atom > 0")
        if self.compositions or self.elements:
            self.composition_list()  # validates them

    def composition_list(self) -> list[str]:
        """The compositions given, or ``n_compositions`` built from the elements."""
        if not self.compositions and not self.elements:
            raise ValueError("give compositions (e.g. NaCl Na2Cl) or elements to build them from")
        comps = list(self.compositions) or default_compositions(self.elements, self.n_compositions)
        for c in comps:
            parse_composition(c)
        return comps


def parse_composition(formula: str) -> dict[str, int]:
    """``"Na2Cl"`` -> ``{"Na": 2, "Cl": 1}``; 2 or 3 distinct elements (the protocol's range)."""
    from ase.data import atomic_numbers

    parts = _FORMULA.findall(formula)
    if not formula or "".join(e + n for e, n in parts) != formula:
        raise ValueError(f"composition {formula!r}: write it as element symbols with counts, e.g. Na2Cl")
    counts: dict[str, int] = {}
    for element, n in parts:
        if element not in atomic_numbers:
            raise ValueError(f"composition {formula!r}: unknown element {element!r}")
        counts[element] = counts.get(element, 0) + int(n or 1)
    if not 2 <= len(counts) <= 3 or min(counts.values()) < 1:
        raise ValueError(f"composition {formula!r}: RSS screening takes 2 or 3 distinct elements")
    return counts


def default_compositions(elements: Sequence[str], n: int = 10) -> list[str]:
    """``n`` stoichiometries of the elements: all pairs at 1:1, 1:2, 2:1, 1:3, 3:1, 2:3, 3:2, then triples."""
    from itertools import combinations

    els = list(dict.fromkeys(elements))
    if len(els) < 2:
        raise ValueError(f"RSS compositions need at least 2 elements, got {els}")
    ratios2 = [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 3), (3, 2)]
    ratios3 = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2)]
    pool = [dict(zip(pair, r)) for r in ratios2 for pair in combinations(els, 2)]
    pool += [dict(zip(tri, r)) for r in ratios3 for tri in combinations(els, 3)]
    return ["".join(f"{e}{c if c > 1 else ''}" for e, c in comp.items()) for comp in pool][:n]


def _rng(seed: int, composition: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(composition.encode()), index])


def random_crystal(composition: str, index: int, s: ScreenSettings, tries: int = 40) -> tuple[Atoms, int]:
    """(structure, space group): a seeded PyXtal random crystal of ``composition`` (2-12 atoms by default)."""
    try:
        from pyxtal import pyxtal
    except ImportError:
        raise ImportError('RSS screening needs PyXtal: pip install "ase-adapt[screen]"') from None
    counts = parse_composition(composition)
    unit = sum(counts.values())
    if unit > s.max_atoms:
        raise ValueError(f"composition {composition} has {unit} atoms per formula unit, more than max_atoms={s.max_atoms}")
    rng = _rng(s.seed, composition, index)
    for _ in range(tries):
        z = int(rng.integers(1, s.max_atoms // unit + 1))
        group = int(rng.integers(1, 231))
        crystal = pyxtal()
        try:
            crystal.from_random(3, group, list(counts), [c * z for c in counts.values()], factor=s.volume_factor,
                                random_state=rng)
        except Exception:  # this group cannot hold the composition: PyXtal raises several error types
            continue
        if crystal.valid:
            atoms = crystal.to_ase()
            atoms.wrap()
            return atoms, group
    raise RuntimeError(f"PyXtal built no valid crystal of {composition} in {tries} tries (index {index})")


def _relax(atoms: Atoms, s: ScreenSettings) -> tuple[int, bool, str | None]:
    """Relax positions and cell in place: (steps, converged, why it stopped early or None)."""
    from ase.filters import FrechetCellFilter, UnitCellFilter

    target = (UnitCellFilter if s.cell_filter is CellFilter.UNIT else FrechetCellFilter)(atoms)
    opt = _optimizer(target, s.optimizer)
    converged = False
    for converged in opt.irun(fmax=s.fmax, steps=s.steps):
        if not np.isfinite(atoms.cell.array).all() or atoms.get_volume() / len(atoms) < s.min_volume_per_atom:
            return opt.nsteps, False, f"cell collapsed (volume {atoms.get_volume() / len(atoms):.3g} Å^3/atom)"
    return opt.nsteps, bool(converged), None


def screen_task(payload: dict[str, Any]) -> dict[str, Any]:
    """Relax -> (rattle -> relax) x cycles for one random crystal: its record (plain data)."""
    s = ScreenSettings(**payload["settings"])
    composition, index = payload["composition"], payload["index"]
    t0 = time.perf_counter()
    if payload.get("start"):
        st = payload["start"]
        atoms, group = Atoms(numbers=st["numbers"], positions=st["positions"], cell=st["cell"], pbc=True), None
    else:
        try:
            atoms, group = random_crystal(composition, index, s)
        except RuntimeError as exc:  # PyXtal found no crystal: a row that says so, not a stopped screen
            return {"composition": composition, "index": index, "space_group": None, "n_atoms": 0,
                    "energy_per_atom": None, "volume_per_atom": None, "min_distance_ratio": None, "converged": False,
                    "steps": 0, "error": str(exc), "seconds": time.perf_counter() - t0, "events": [],
                    "structure": None}
    atoms.calc = _calculator(payload)
    rng = _rng(s.seed + 1, composition, index)
    steps, converged, error = 0, False, None
    try:
        for cycle in range(s.cycles + 1):
            if cycle:
                atoms.positions = atoms.positions + rng.normal(0.0, s.rattle_std, atoms.positions.shape)
            n, converged, error = _relax(atoms, s)
            steps += n
            if error:
                break
        energy = float(atoms.get_potential_energy())
    except Exception as exc:  # the calculator failed: keep the structure it failed on, say why
        error, energy = f"{type(exc).__name__}: {exc}", None
    finite = bool(np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all())
    n_atoms = len(atoms)
    return {
        "composition": composition, "index": index, "space_group": group, "n_atoms": n_atoms,
        "energy_per_atom": energy / n_atoms if energy is not None and math.isfinite(energy) else None,
        "volume_per_atom": float(atoms.get_volume() / n_atoms) if finite else None,
        "min_distance_ratio": _closest_ratio(atoms) if finite else None,
        "converged": converged, "steps": steps, "error": error, "seconds": time.perf_counter() - t0,
        "events": [f"{e.get('kind')}: {e.get('action')}" for e in getattr(atoms.calc, "events", None) or []],
        "structure": {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
                      "cell": atoms.cell.array.tolist()} if finite else None,
    }


def _calculator(payload: dict[str, Any]):
    factory = payload.get("calculator")
    if factory is not None:
        return factory()
    from .. import AdaptiveCalculator, MLFFCalculator

    model = load_source(ModelSource(**payload["model"]))
    if payload.get("prior"):
        return AdaptiveCalculator(model, payload["prior"], unknown_elements=payload["unknown_elements"])
    return MLFFCalculator(model, unknown_elements=payload["unknown_elements"])


def _closest_ratio(atoms: Atoms) -> float | None:
    """The closest pair's distance over its covalent sum, searched in widening shells: a structure
    whose atoms (and images) are all far apart gets its true ratio, not a blank."""
    from ..adapt.topology import min_distance_ratio

    for up_to in (1.5, 4.0, 12.0):
        ratio = min_distance_ratio(atoms, up_to=up_to)
        if ratio is not None:
            return ratio
    return None  # nothing within 12 covalent sums: a single atom in a vast cell


def run_screen(model: Any, settings: ScreenSettings, out: str | Path = "screen-output", *, prior: str | None = None,
               unknown_elements: str = "error", scheduler: str | None = None, n_workers: int = 2,
               calculator: Callable[[], Any] | None = None, starts: Sequence[Atoms] | None = None) -> dict[str, Any]:
    """Screen ``settings``' compositions with ``model`` (a checkpoint path, built-in name or MLFF).

    ``starts``: screen these 3D-periodic structures (grouped by reduced formula) instead of
    random crystals; ``settings.compositions`` and ``elements`` must then be empty (refused otherwise:
    they used to be dropped without a word) and ``structures`` is unused.

    ``calculator``, instead of a model: a picklable zero-argument factory of any ASE calculator
    (e.g. ``ase.calculators.emt.EMT``), called once per structure. ``scheduler``: None (serial),
    ``"local"`` (a LocalCluster of ``n_workers``) or a Dask scheduler address. Returns the summary
    that is also written to ``out/screen.json``.
    """
    from .screen_report import write_report

    s = settings
    if starts is not None and (s.compositions or s.elements):
        raise ValueError("starts screens the structures given; compositions and elements make random crystals "
                         "instead: give one or the other")
    jobs = _jobs(s, starts)
    comps = list(dict.fromkeys(c for c, _, _ in jobs))
    # a task's result depends on its composition and index, not on how many others there are: a screen
    # grown by structures or compositions reuses the tasks it already has
    per_task = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(s).items()
                if k not in ("progress", "compositions", "elements", "n_compositions", "structures")}
    base: dict[str, Any] = {"settings": per_task,
                            "unknown_elements": unknown_elements, "prior": prior}
    if calculator is not None:
        base["calculator"] = calculator
        identity = f"{getattr(calculator, '__module__', '')}.{getattr(calculator, '__qualname__', calculator)}"
    else:
        source = ModelSource.of(model, ship=scheduler not in (None, "local"))
        base["model"] = asdict(source)
        identity = source.identity()
        _check_elements(load_source(source), comps, unknown_elements)
    tasks = [Task(f"{c}-{i:04d}", {**base, "composition": c, "index": i, "start": start}) for c, i, start in jobs]
    run = run_tasks(screen_task, tasks, Path(out) / "tasks", scheduler=scheduler, n_workers=n_workers,
                    progress=s.progress, desc="screen")
    return write_report(list(run.results.values()), s, Path(out), {
        "model": identity, "prior": prior, "executor": run.executor, "computed": len(run.computed),
        "reused": len(run.reused), "task_fingerprint": fingerprint(base)})


def _jobs(s: ScreenSettings, starts: Sequence[Atoms] | None) -> list[tuple[str, int, dict | None]]:
    """(composition, index, start structure or None) of every task."""
    if starts is None:
        comps = s.composition_list()
        for c in comps:
            if sum(parse_composition(c).values()) > s.max_atoms:
                raise ValueError(f"composition {c} has more atoms per formula unit than max_atoms={s.max_atoms}")
        return [(c, i, None) for c in comps for i in range(s.structures)]
    from ase.formula import Formula

    jobs, seen = [], {}
    for k, a in enumerate(starts):
        if not a.pbc.all() or abs(a.get_volume()) < 1e-6:
            raise ValueError(f"start structure {k} ({a.get_chemical_formula()}) is not a 3D-periodic cell")
        comp = str(Formula(a.get_chemical_formula()).reduce()[0])
        seen[comp] = seen.get(comp, -1) + 1
        jobs.append((comp, seen[comp], {"numbers": a.numbers.tolist(), "positions": a.positions.tolist(),
                                        "cell": a.cell.array.tolist()}))
    if not jobs:
        raise ValueError("no start structures given")
    return jobs


def _check_elements(model: Any, compositions: list[str], unknown_elements: str) -> None:
    from ase.data import atomic_numbers

    from ..elements import check_elements

    numbers = np.array(sorted({atomic_numbers[e] for c in compositions for e in parse_composition(c)}))
    check_elements(numbers, model.elements, unknown_elements)  # refuses before any work
