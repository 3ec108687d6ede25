"""sGDML priors: fit a model to a few labelled frames of one molecule, save it without pickle,
and evaluate it as a :class:`~ase_adapt.priors.Prior`.

sgdml is unit-agnostic: a model predicts in the units it was trained on. ase-adapt always trains
on eV and eV/Å (ASE's units), and records ``e_unit='eV'``, ``r_unit='Ang'`` in the file.

Compatibility with sgdml 1.0.3 and numpy >= 2.4 (:func:`sgdml_compat`): sgdml calls
``numpy.in1d``, removed in numpy 2.4. While (and only while) ase-adapt runs sgdml code,
``numpy.in1d`` is provided as ``numpy.isin(...).ravel()`` (what ``in1d`` computed) and removed
again afterwards; it is never touched when numpy still has it. The dataset dict passed to sgdml
carries its metadata (``type``, ``name``, ``theory``, ``md5``...) as numpy string arrays, which
is what sgdml reads back from its own .npz files.

Model files are loaded with ``numpy.load(..., allow_pickle=False)`` and only the arrays
prediction needs are read, so a model written by sgdml's own CLI (whose error summaries are
pickled dicts) loads without unpickling anything, and a file whose needed arrays require
pickle is refused with :class:`~ase_adapt.errors.PriorError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ..errors import DataError, PriorError
from .base import Prior, describe

__all__ = ["SIGMA_GRID", "SGDMLCalculator", "fit_sgdml_prior", "load_sgdml_model", "sgdml_compat", "sgdml_prior"]

# sgdml's own default search grid for the kernel length scale (its CLI uses 10:10:100)
SIGMA_GRID: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_NEEDED = ("type", "z", "R_desc", "R_d_desc_alpha", "tril_perms_lin", "perms", "sig", "c", "std")
_OPTIONAL = ("alphas_E", "lattice", "use_E", "e_unit", "r_unit", "dataset_name", "dataset_theory", "code_version")
_LOCK = threading.RLock()  # sgdml keeps module-global state (one GDMLTrain at a time)


def _import_sgdml(name: str) -> Any:
    """Import an sgdml module without letting it replace the process-wide logger class.

    ``import sgdml`` calls ``logging.setLoggerClass`` with a class that gives every logger made
    afterwards (torch's, the user's) its own INFO-level stderr handler. sgdml's own loggers are
    set to WARNING, so fits stay quiet but its warnings still arrive.
    """
    import importlib

    cls = logging.getLoggerClass()
    try:
        module = importlib.import_module(name)
    finally:
        logging.setLoggerClass(cls)
    for logger_name, logger in list(logging.root.manager.loggerDict.items()):
        if logger_name.startswith("sgdml") and isinstance(logger, logging.Logger) and logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)  # its progress chatter; warnings still reach us
    return module


def _missing(exc: ImportError) -> ImportError:
    return ImportError(f"sGDML priors need the optional package 'sgdml' ({exc}); install it with "
                       f"`pip install ase-adapt[priors]` (or `pip install sgdml`)")


@contextlib.contextmanager
def sgdml_compat() -> Iterator[None]:
    """Run sgdml 1.0.3 code under numpy >= 2.4: provide ``numpy.in1d`` only inside the block.

    Also serialises sgdml calls (sgdml keeps module-global state) and restores numpy's global
    random state (sgdml draws from it) on exit.
    """
    with _LOCK:
        added = not hasattr(np, "in1d")
        if added:
            np.in1d = _in1d  # type: ignore[attr-defined]
        state = np.random.get_state()
        try:
            yield
        finally:
            np.random.set_state(state)
            if added and getattr(np, "in1d", None) is _in1d:
                del np.in1d  # type: ignore[attr-defined]


def _in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
    """numpy's removed ``in1d``: flat membership test."""
    return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip().splitlines()[0])


@contextlib.contextmanager
def _captured_sgdml_logs() -> Iterator[_Records]:
    """Collect sgdml's warnings instead of letting them reach the root logger's handlers."""
    logger = logging.getLogger("sgdml")
    handler = _Records()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


# --------------------------------------------------------------------------------- loading
def load_sgdml_model(path: str | Path) -> dict[str, Any]:
    """The arrays of an sGDML model .npz that prediction needs, read with ``allow_pickle=False``.

    Raises FileNotFoundError for a missing file and :class:`PriorError` for a file that is not
    an sGDML model, is inconsistent, or would need pickle for any needed array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sGDML model file {str(path)!r}")
    model: dict[str, Any] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise PriorError(f"{path}: not an sGDML model (.npz archive), but a plain array")
            missing = [k for k in _NEEDED if k not in npz.files]
            if missing:
                raise PriorError(f"{path}: not an sGDML model: missing {missing}")
            for key in _NEEDED + _OPTIONAL:
                if key not in npz.files:
                    continue
                try:
                    model[key] = npz[key]
                except ValueError as exc:  # object array: reading it would run pickle
                    raise PriorError(f"{path}: array {key!r} needs pickle to load ({exc}); refusing to unpickle "
                                     f"an sGDML model (refit it with ase_adapt.priors.fit_sgdml_prior)") from None
    except PriorError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PriorError(f"{path}: cannot read an sGDML model ({type(exc).__name__}: {exc})") from None
    _validate(model, path)
    return model


def _scalar(value: np.ndarray) -> Any:
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value


def _validate(model: dict[str, Any], path: Path) -> None:
    for key in ("type", "e_unit", "r_unit", "dataset_name", "dataset_theory", "code_version"):
        if key in model:
            model[key] = str(_scalar(model[key]))
    for key in ("sig", "c", "std", "use_E"):
        if key in model:
            model[key] = _scalar(model[key])
    if model["type"] != "m":
        raise PriorError(f"{path}: not a trained sGDML model (type {model['type']!r}, expected 'm')")
    z, r_desc, alpha = model["z"], model["R_desc"], model["R_d_desc_alpha"]
    perms, tril = model["perms"], model["tril_perms_lin"]
    arrays = ("z", "R_desc", "R_d_desc_alpha", "perms", "tril_perms_lin")
    numeric = all(np.asarray(model[k]).dtype.kind in "iuf" for k in arrays)
    n = z.shape[0] if z.ndim == 1 else -1
    d = n * (n - 1) // 2
    ok = (numeric and n >= 2 and r_desc.ndim == 2 and r_desc.shape[0] == d and alpha.shape == r_desc.shape[::-1]
          and perms.ndim == 2 and perms.shape[1] == n and tril.shape == (perms.shape[0] * d,)
          and np.isfinite(r_desc).all() and np.isfinite(alpha).all()
          and all(isinstance(model[k], (int, float)) and np.isfinite(model[k]) for k in ("sig", "c", "std")))
    if not ok:
        raise PriorError(f"{path}: inconsistent sGDML model arrays (z {z.shape}, R_desc {r_desc.shape}, "
                         f"R_d_desc_alpha {alpha.shape}, perms {perms.shape}, tril_perms_lin {tril.shape})")
    if "lattice" in model:
        raise PriorError(f"{path}: periodic sGDML models are not supported as priors")
    model["z"] = z.astype(np.int64)


# ------------------------------------------------------------------------------ prediction
class SGDMLCalculator(Calculator):
    """ASE calculator for one sGDML model (energy and forces), predicting with
    ``sgdml.predict.GDMLPredict`` in-process: no worker pool, no torch."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            GDMLPredict = _import_sgdml("sgdml.predict").GDMLPredict  # noqa: N806
        except ImportError as exc:
            raise _missing(exc) from exc
        self.numbers = np.asarray(model["z"], dtype=np.int64)
        self.molecule_name = str(model.get("dataset_name", ""))
        with sgdml_compat(), _captured_sgdml_logs():
            self._predictor = GDMLPredict(model, max_processes=1, num_workers=0, use_torch=False)

    def check_atoms(self, atoms: Atoms) -> str | None:
        """Why the model cannot evaluate ``atoms`` (``None``: it can)."""
        if atoms.pbc.any():
            return "an sGDML prior models an isolated molecule; the structure is periodic"
        if len(atoms) != len(self.numbers) or not np.array_equal(atoms.numbers, self.numbers):
            model = Atoms(numbers=self.numbers).get_chemical_formula()
            named = f", {self.molecule_name!r}" if self.molecule_name not in ("", model) else ""
            return (f"the sGDML model was trained on {model} ({len(self.numbers)} atoms{named}); it evaluates "
                    f"only that molecule with the same atoms in the same order")
        return None

    def calculate(self, atoms: Atoms | None = None, properties: Any = ("energy",),
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        reason = self.check_atoms(self.atoms)
        if reason:
            raise ValueError(reason)
        with sgdml_compat():
            energy, forces = self._predictor.predict(self.atoms.positions.reshape(1, -1).astype(np.float64))
        e = float(np.asarray(energy).ravel()[0])
        self.results = {"energy": e, "free_energy": e, "forces": np.asarray(forces, dtype=np.float64).reshape(-1, 3)}


def sgdml_prior(path: str | Path, spec: str | None = None, **options: Any) -> Prior:
    """A :class:`Prior` for the sGDML model at ``path``. Options: ``threads`` (default None)."""
    unknown = sorted(set(options) - {"threads"})
    if unknown:
        raise ValueError(f"prior 'sgdml': unknown option(s) {unknown}; accepted: ['threads']")
    calc = SGDMLCalculator(load_sgdml_model(path))
    return Prior(calc, "sgdml", spec or f"sgdml:{path}", threads=options.get("threads"),
                 checks=(calc.check_atoms,))


# --------------------------------------------------------------------------------- fitting
def _arrays(frames: Sequence[Atoms], energy_key: str, forces_key: str) -> tuple[np.ndarray, ...]:
    from ..labels import get_label

    first = frames[0]
    R, E, F = [], [], []
    for i, atoms in enumerate(frames):
        if len(atoms) != len(first) or not np.array_equal(atoms.numbers, first.numbers):
            raise DataError(f"frame {i} is {describe(atoms)} but frame 0 is {describe(first)}: an sGDML "
                            f"prior models one molecule, so every frame needs the same atoms in the same order")
        if atoms.pbc.any():
            raise DataError(f"frame {i} is periodic; an sGDML prior models an isolated molecule")
        if not np.isfinite(atoms.positions).all():
            raise DataError(f"frame {i} has non-finite positions")
        R.append(atoms.positions)
        E.append(get_label(atoms, energy_key, i))
        F.append(get_label(atoms, forces_key, i))
    z = np.array(first.numbers, dtype=np.int64)
    return (z, *(np.array(x, dtype=np.float64) for x in (R, E, F)))


def _dataset(z: np.ndarray, R: np.ndarray, E: np.ndarray, F: np.ndarray, name: str) -> dict[str, Any]:
    """An sgdml dataset dict; metadata as numpy strings, as sgdml reads them from its files."""
    import sgdml
    from sgdml.utils import io

    data = {"type": np.array("d"), "code_version": np.array(sgdml.__version__), "name": np.array(name),
            "theory": np.array("unknown (labels from ase-adapt)"), "z": z, "R": R, "E": E, "F": F,
            "r_unit": np.array("Ang"), "e_unit": np.array("eV")}
    data["md5"] = np.array(io.dataset_md5(data).decode())
    return data


def _fit(trainer: Any, train: dict[str, Any], sigma: float) -> dict[str, Any]:
    n = len(train["E"])
    # the whole dataset is the training set (n_train == its size), so sgdml draws no sample
    task = trainer.create_task(train, n, train, 0, sig=sigma, lam=1e-10)
    return trainer.train(task)


def _force_rmse(model: dict[str, Any], R: np.ndarray, F: np.ndarray) -> float:
    from sgdml.predict import GDMLPredict

    predictor = GDMLPredict(model, max_processes=1, num_workers=0, use_torch=False)
    _, pred = predictor.predict(R.reshape(len(R), -1))
    return float(np.sqrt(np.mean((pred.reshape(F.shape) - F) ** 2)))


def _pickle_free(model: dict[str, Any], extra: dict[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in {**model, **extra}.items():
        if value is None:
            continue
        if isinstance(value, dict):  # sgdml's error summaries {'mae': ..., 'rmse': ...}
            for sub, v in value.items():
                out[f"{key}_{sub}"] = np.asarray(v, dtype=np.float64)
            continue
        if isinstance(value, bytes):
            value = value.decode()
        array = np.asarray(value)
        if array.dtype.kind == "O":
            raise TypeError(f"sGDML model entry {key!r} is not a plain array")
        out[key] = array
    return out


def _sigma_search(sigma: float | None, n_train: int, n_frames: int):
    """(sigma grid, its scores so far, frames to fit, frames to score) for the length-scale choice."""
    if sigma is not None:
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        return (float(sigma),), [float("nan")], None, None
    if n_frames > n_train:
        return SIGMA_GRID, [], np.arange(n_train), np.arange(n_train, n_frames)
    if n_train < 5:
        raise ValueError(f"choosing sigma needs at least 5 training frames or extra validation frames "
                         f"(got {n_train}); pass sigma= explicitly")
    val_idx = np.arange(4, n_train, 5)
    return SIGMA_GRID, [], np.setdiff1d(np.arange(n_train), val_idx), val_idx


def fit_sgdml_prior(
    frames: str | Path | Sequence[Atoms],
    n_train: int = 50,
    *,
    out_path: str | Path,
    energy_key: str = "energy",
    forces_key: str = "forces",
    sigma: float | None = None,
    seed: int = 0,
) -> Path:
    """Fit an sGDML model to the first ``n_train`` frames of one molecule; save it to ``out_path``.

    ``frames``: labelled frames (or a file) of one molecule, same atoms in the same order,
    energies in eV and forces in eV/Å under ``energy_key``/``forces_key``. ``sigma``: kernel
    length scale; ``None`` picks the best of :data:`SIGMA_GRID` by force RMSE on validation
    frames (the frames after the first ``n_train`` when there are any, else every 5th training
    frame held out), then refits on all ``n_train``. ``seed`` fixes sgdml's random choices
    (numpy's global random state is restored afterwards). The model is written atomically as a
    pickle-free .npz; ``make_prior(f"sgdml:{path}")`` loads it. Returns ``out_path``.
    """
    from .._io import atomic_write
    from ..train.data import read_frames

    try:
        sgdml_train = _import_sgdml("sgdml.train")
    except ImportError as exc:
        raise _missing(exc) from exc
    frames = read_frames(frames) if isinstance(frames, (str, Path)) else list(frames)
    if isinstance(n_train, bool) or int(n_train) != n_train or n_train < 2:
        raise ValueError(f"n_train must be an integer >= 2, got {n_train!r}")
    if len(frames) < n_train:
        raise DataError(f"an sGDML prior with n_train={n_train} needs at least {n_train} labelled frames, "
                        f"got {len(frames)}")
    z, R, E, F = _arrays(frames, energy_key, forces_key)
    name = frames[0].get_chemical_formula()
    train = slice(0, n_train)
    grid, scores, fit_idx, val_idx = _sigma_search(sigma, n_train, len(frames))

    with sgdml_compat(), _captured_sgdml_logs() as logs:
        np.random.seed(seed)
        vars(sgdml_train).pop("glob", None)  # sgdml's one-trainer guard, left set by a failed fit
        trainer = sgdml_train.GDMLTrain(max_processes=1, use_torch=False)
        try:
            fits: dict[float, tuple[dict[str, Any], list[str]]] = {}  # sigma -> (model, sgdml warnings)
            if sigma is None:
                fit_set = _dataset(z, R[fit_idx], E[fit_idx], F[fit_idx], name)
                for s in grid:
                    logs.messages.clear()
                    fits[s] = (_fit(trainer, fit_set, s), list(logs.messages))
                    scores.append(_force_rmse(fits[s][0], R[val_idx], F[val_idx]))
                sigma = grid[int(np.nanargmin(scores))]
                if len(fit_idx) < n_train:  # the chosen model saw only part of the training frames
                    fits.clear()
            if sigma not in fits:
                logs.messages.clear()
                model = _fit(trainer, _dataset(z, R[train], E[train], F[train], name), sigma)
                fits[sigma] = (model, list(logs.messages))
            model, messages = fits[sigma]
        finally:
            del trainer  # sgdml allows one GDMLTrain at a time
    for message in messages:  # only the final model's (rejected length scales are not its problem)
        warnings.warn(f"sgdml (fitting the {name} prior): {message}", RuntimeWarning, stacklevel=2)
    extra = {"e_unit": "eV", "r_unit": "Ang", "ase_adapt_n_train": n_train,
             "ase_adapt_sigma_grid": np.asarray(grid, dtype=np.float64),
             "ase_adapt_sigma_f_rmse": np.asarray(scores, dtype=np.float64)}
    clean = _pickle_free(model, extra)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy appends no .npz suffix
            np.savez_compressed(fh, **clean)

    return atomic_write(out_path, write)
