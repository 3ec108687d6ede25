"""Benchmark data of the distribution-shift protocol: reference-level Langevin MD frames with prior labels.

    python benchmarks/data.py                        # full run -> benchmarks/data/ (rerun after a kill: resumes)
    python benchmarks/data.py --quick                # smoke run -> benchmarks/data_quick/
    python benchmarks/data.py --molecules benzene toluene path/to/other.xyz
    python benchmarks/data.py --molecules pyridine furan acetone styrene indole methyl_acetate \
        fluorobenzene trimethyl_phosphate           # the validation molecules (300 frames each)
    python benchmarks/data.py --estimate             # time the calls, estimate a full run; generates nothing

Protocol (DESIGN.md, "Benchmark protocol"; GFN2-xTB stands in for DFT as the reference level):
  molecules    training aspirin, benzene, uracil; unseen test molecules naphthalene, toluene;
               validation molecules (for choices, never training; run only when named) pyridine, furan,
               acetone, styrene, indole, methyl_acetate, fluorobenzene, trimethyl_phosphate. Starting
               geometries are bundled in benchmarks/molecules/<name>.xyz (GFN2-xTB minima, made by
               benchmarks/make_geometry.py or as each file's comment line says). Any other molecule can
               be given as an xyz path; it is treated as a test molecule and its geometry is used as given.
               Test and validation molecules get the same frames and labels (no sGDML).
  MD           GFN2-xTB (tblite, 1 thread) Langevin NVT at 500 K, 0.5 fs, friction 0.01 /fs, centre of
               mass fixed (ase FixCom), Maxwell-Boltzmann start (no net momentum or rotation); EQUIL
               steps of equilibration, then one frame every STRIDE steps. Each molecule has its own
               deterministic seed (crc32 of "<seed>:<name>"), recorded in the manifest.
  labels       energy (info) / forces (arrays): GFN2-xTB, the reference ("main task") level;
               prior_gfn-ff_energy / prior_gfn-ff_forces: GFN-FF (xtb-python), for head prior:gfn-ff;
               training molecules also prior_sgdml_energy / prior_sgdml_forces: an sGDML model fitted
               on 50 frames of that molecule spread evenly over its trajectory (sigma chosen on up to
               200 other frames), saved as <name>_sgdml.npz; info sgdml_train marks its 50 frames.
  atoms        isolated_atoms.xyz: one config_type=IsolatedAtom frame per element (H, C, N, O and any
               element of the molecules run) with GFN2-xTB (tblite's default spin) and GFN-FF labels.
  output       <out>/<name>.xyz (extxyz, ase_adapt.train.data.write_frames, atomic) and manifest.json
               (settings, seeds, counts, timings, label statistics, tool versions, file sizes).
Resumable: the MD state of each molecule is checkpointed atomically (<out>/<name>.ckpt.npz) every
CHECKPOINT_EVERY frames and on any stop; finished molecules are never recomputed; a checkpoint or
output made with other settings is refused rather than mixed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import signal
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, machine_info, print_table, timestamp, write_json_atomic  # noqa: E402
from _data_md import MDFailure, MDRun, MDState, bonds_changed, label_stats, log, quiet_sgdml  # noqa: E402

NAME = "data"
TRAIN = ("aspirin", "benzene", "uracil")
TEST = ("naphthalene", "toluene")
VALIDATION = ("pyridine", "furan", "acetone", "styrene", "indole", "methyl_acetate", "fluorobenzene",
              "trimethyl_phosphate")  # shared/molecules.md; not in the default run
BUNDLED = TRAIN + TEST + VALIDATION
MOLECULE_DIR = BENCH_DIR / "molecules"
ISOLATED_ELEMENTS = ("H", "C", "N", "O")
HUND_MULTIPLICITY = {"H": 2, "C": 3, "N": 4, "O": 3, "F": 2, "P": 4}  # recorded for comparison only
REFERENCE = "gfn2-xtb"
FF, FF_PREFIX = "gfn-ff", "prior_gfn-ff"
SGDML_PREFIX = "prior_sgdml"
RETRY_OPTIONS = {"max_iterations": 1000}  # tblite's default is 250; a converged result is unchanged
LABELS = "raw-gradient"  # since the priors stopped FixCom-projecting forces; older data is refused
MANIFEST = "manifest.json"
ISOLATED_FILE = "isolated_atoms.xyz"


@dataclasses.dataclass(frozen=True)
class Settings:
    train_frames: int = 2000
    test_frames: int = 300
    equil: int = 1000
    stride: int = 10
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    seed: int = 0
    sgdml_frames: int = 50
    sgdml_val_frames: int = 200
    checkpoint_every: int = 50
    threads: int = 1


QUICK = Settings(train_frames=12, test_frames=6, equil=10, stride=2, sgdml_frames=6, sgdml_val_frames=6,
                 checkpoint_every=4)


@dataclasses.dataclass
class Molecule:
    name: str
    role: str  # "train" (with sGDML labels), "validation" or "test"
    path: Path
    atoms: Any


# ---------------------------------------------------------------------------------------- inputs
def tool_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for pkg in ("ase-adapt", "ase", "numpy", "tblite", "xtb", "sgdml"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def resolve_molecule(spec: str) -> Molecule:
    """A bundled molecule by name, or any xyz/extxyz file (its first frame; a test molecule)."""
    from ase import Atoms
    from ase.io import read

    if spec in BUNDLED:
        path, name = MOLECULE_DIR / f"{spec}.xyz", spec
        role = "train" if spec in TRAIN else "validation" if spec in VALIDATION else "test"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SystemExit(f"unknown molecule {spec!r}: not one of {', '.join(BUNDLED)} nor an xyz file")
        name, role = path.stem, "test"
        if name in BUNDLED or name in ("isolated_atoms", "manifest", "estimate"):
            raise SystemExit(f"{path}: its name {name!r} is taken (bundled molecule or output); rename the file")
    try:
        first = read(str(path), index=0)
    except Exception as exc:
        raise SystemExit(f"{path}: cannot read a starting geometry ({type(exc).__name__}: {exc})") from None
    if first.pbc.any() or len(first) < 2:
        raise SystemExit(f"{path}: needs one non-periodic molecule of 2 atoms or more")
    return Molecule(name, role, path, Atoms(numbers=first.numbers, positions=first.positions))


def molecule_seed(base: int, name: str) -> int:
    return zlib.crc32(f"{base}:{name}".encode())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    return _sha256(path.read_bytes())


def molecule_settings(mol: Molecule, s: Settings, versions: dict) -> dict[str, Any]:
    """What the frames of ``mol`` depend on; a run with other values is refused."""
    geometry = _sha256(mol.atoms.numbers.astype(np.int64).tobytes() + mol.atoms.positions.astype(np.float64).tobytes())
    out = {"name": mol.name, "role": mol.role, "geometry_sha256": geometry,
           "n_frames": s.train_frames if mol.role == "train" else s.test_frames, "equil": s.equil,
           "stride": s.stride, "temperature_K": s.temperature_K, "timestep_fs": s.timestep_fs,
           "friction_per_fs": s.friction_per_fs, "seed": molecule_seed(s.seed, mol.name), "threads": s.threads,
           "reference": REFERENCE, "ff": FF, "labels": LABELS, "versions": {k: v for k, v in versions.items() if k != "ase-adapt"}}
    if mol.role == "train":
        out.update(sgdml_frames=s.sgdml_frames, sgdml_val_frames=s.sgdml_val_frames)
    return out


def _fingerprint(settings: dict[str, Any]) -> str:
    return _sha256(json.dumps(settings, sort_keys=True).encode())[:20]


def _differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


# ---------------------------------------------------------------------------------------- passes
def isolated_atoms(out: Path, elements: list[str], s: Settings, versions: dict, manifest: dict) -> None:
    """``isolated_atoms.xyz``: one IsolatedAtom frame per element at the reference level and with GFN-FF."""
    from ase import Atoms
    from ase.data import atomic_numbers

    from ase_adapt.priors import PriorError, make_prior
    from ase_adapt.train.data import write_frames

    settings = {"reference": REFERENCE, "ff": FF, "threads": s.threads,
                "versions": {k: v for k, v in versions.items() if k != "ase-adapt"}}
    fp = _fingerprint(settings)
    entry = manifest.get("isolated_atoms") or {}
    path = out / ISOLATED_FILE
    if path.exists() and entry.get("fingerprint") not in (None, fp):
        raise SystemExit(f"{path} was made with other settings or tool versions ({entry.get('settings')}); "
                         f"use another --out or delete it")
    have = entry.get("elements", []) if path.exists() and entry.get("fingerprint") == fp else []
    wanted = sorted(set(elements) | set(have), key=lambda e: atomic_numbers[e])
    if set(wanted) <= set(have):
        return
    frames, records = [], {}
    ref = make_prior(REFERENCE, threads=s.threads)
    for sym in wanted:
        atoms = Atoms(sym)
        rec: dict[str, Any] = {}
        labels = ref.label(atoms)  # an isolated atom must work at the reference level
        atoms.info.update(config_type="IsolatedAtom", energy=labels["energy"])
        atoms.arrays["forces"] = labels["forces"]
        rec["gfn2_xtb_eV"] = labels["energy"]
        if sym in HUND_MULTIPLICITY:
            hund = make_prior(REFERENCE, threads=s.threads, multiplicity=HUND_MULTIPLICITY[sym]).label(Atoms(sym))
            rec["gfn2_xtb_hund_multiplicity_eV"] = hund["energy"]
        try:
            ff = make_prior(FF, threads=s.threads).label(Atoms(sym))
            atoms.info[f"{FF_PREFIX}_energy"] = ff["energy"]
            atoms.arrays[f"{FF_PREFIX}_forces"] = ff["forces"]
            rec["gfn_ff_eV"] = ff["energy"]
        except PriorError as exc:
            rec["gfn_ff_error"] = str(exc)
            log(f"isolated {sym}: GFN-FF failed ({exc}); its GFN-FF label is left out")
        frames.append(atoms)
        records[sym] = rec
    write_frames(path, frames)
    manifest["isolated_atoms"] = {
        "file": ISOLATED_FILE, "elements": wanted, "fingerprint": fp, "settings": settings, "energies": records,
        "note": ("energy: GFN2-xTB with tblite's default spin (the settings of the MD labels); "
                 "gfn2_xtb_hund_multiplicity_eV: the same atom with Hund's-rule multiplicity, for comparison "
                 "only. GFN-FF has no atomic reference energies: an isolated atom is 0 eV by construction."),
        "file_bytes": path.stat().st_size}
    log(f"isolated atoms {', '.join(wanted)} -> {path}")


def _frame(numbers: np.ndarray, st: MDState, i: int, name: str) -> Any:
    from ase import Atoms

    atoms = Atoms(numbers=numbers, positions=np.asarray(st.frames["positions"][i]))
    atoms.info.update(molecule=name, md_step=int(st.frames["md_step"][i]), energy=float(st.frames["energy"][i]))
    atoms.info[f"{FF_PREFIX}_energy"] = float(st.frames["ff_energy"][i])
    atoms.arrays["forces"] = np.asarray(st.frames["forces"][i])
    atoms.arrays[f"{FF_PREFIX}_forces"] = np.asarray(st.frames["ff_forces"][i])
    return atoms


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int)) if n and k > 0 else np.zeros(0, int)


def sgdml_pass(mol: Molecule, frames: list, st: MDState, s: Settings, out: Path, ckpt: Path, seed: int) -> dict:
    """Fit the molecule's sGDML prior (once; recorded in the checkpoint) and label every frame with it."""
    from ase_adapt.priors import fit_sgdml_prior, load_sgdml_model, make_prior

    n = len(frames)
    train = _spread(n, min(s.sgdml_frames, n // 2))  # at least as many frames left to choose sigma on
    rest = np.setdiff1d(np.arange(n), train)
    val = rest[_spread(len(rest), s.sgdml_val_frames)]
    path = out / f"{mol.name}_sgdml.npz"
    done = st.meta.get("sgdml") or {}
    if not (path.exists() and done.get("sha256") == _file_sha256(path)):
        log(f"{mol.name}: fitting sGDML on {len(train)} frames (sigma chosen on {len(val)} others)")
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught, quiet_sgdml():
            warnings.simplefilter("always")
            fit_sgdml_prior([frames[i] for i in train] + [frames[i] for i in val], n_train=len(train),
                            out_path=path, seed=seed)
        done = {"sha256": _file_sha256(path), "fit_seconds": time.perf_counter() - t0,
                "warnings": sorted({str(w.message)[:300] for w in caught})}
        st.meta["sgdml"] = done
        st.save(ckpt)
    prior = make_prior(f"sgdml:{path}")
    t0 = time.perf_counter()
    in_train = set(train.tolist())
    for i, atoms in enumerate(frames):
        labels = prior.label(atoms)
        atoms.info[f"{SGDML_PREFIX}_energy"] = labels["energy"]
        atoms.arrays[f"{SGDML_PREFIX}_forces"] = labels["forces"]
        atoms.info["sgdml_train"] = i in in_train
    label_s = time.perf_counter() - t0
    model = load_sgdml_model(path)
    return {"model_file": path.name, "model_bytes": path.stat().st_size, "sigma": float(model["sig"]),
            "n_train": int(len(train)), "train_indices": train.tolist(), "n_val": int(len(val)),
            "fit_seconds": done["fit_seconds"], "label_seconds_per_frame": label_s / max(n, 1),
            "warnings": done.get("warnings", [])}


def process_molecule(mol: Molecule, s: Settings, out: Path, versions: dict, manifest: dict, *,
                     progress: bool, make_reference: Callable[..., Any], make_ff: Callable[[], Any]) -> None:
    from ase_adapt.train.data import write_frames

    settings = molecule_settings(mol, s, versions)
    fp = _fingerprint(settings)
    path, ckpt = out / f"{mol.name}.xyz", out / f"{mol.name}.ckpt.npz"
    entry = manifest["molecules"].get(mol.name)
    if entry and path.exists() and not ckpt.exists():
        if entry.get("fingerprint") != fp:
            raise SystemExit(f"{path} was made with other settings ({_differences(entry.get('settings', {}), settings)}); "
                             f"refusing to mix: use another --out, the same settings, or delete it")
        if entry.get("file_sha256") == _file_sha256(path):
            log(f"{mol.name}: done already ({entry['n_frames']} frames in {path}); skipped")
            return
    if path.exists() and not ckpt.exists():
        raise SystemExit(f"{path} exists but {MANIFEST} does not describe it (another run, or edited); "
                         f"refusing to overwrite it: use another --out or delete it")
    n_frames = settings["n_frames"]
    run = MDRun(mol.name, mol.atoms, s, n_frames, settings["seed"], fp, ckpt, make_reference, make_ff, RETRY_OPTIONS)
    log(f"{mol.name} ({mol.atoms.get_chemical_formula()}, {mol.role}): {n_frames} frames, "
        f"{run.total_steps} MD steps, seed {settings['seed']}")
    st = run.run(progress=progress)
    frames = [_frame(mol.atoms.numbers, st, i, mol.name) for i in range(len(st.frames["energy"]))]
    sgdml = sgdml_pass(mol, frames, st, s, out, ckpt, settings["seed"]) if mol.role == "train" else None
    write_frames(path, frames)
    m = st.meta
    temps = np.array(st.frames["temperature_K"])
    manifest["molecules"][mol.name] = {
        "role": mol.role, "formula": mol.atoms.get_chemical_formula(), "n_atoms": len(mol.atoms),
        "n_frames": len(frames), "md_steps": m["step"], "seed": settings["seed"], "fingerprint": fp,
        "settings": settings, "geometry": str(mol.path.relative_to(BENCH_DIR.parent) if mol.path.is_relative_to(BENCH_DIR.parent) else mol.path),
        "file": path.name, "file_bytes": path.stat().st_size, "file_sha256": _file_sha256(path),
        "label_keys": ["energy", "forces", f"{FF_PREFIX}_energy", f"{FF_PREFIX}_forces"]
                      + ([f"{SGDML_PREFIX}_energy", f"{SGDML_PREFIX}_forces"] if sgdml else []),
        "timings": {"md_seconds": m["md_seconds"], "reference_calls": m["reference_calls"],
                    "reference_seconds_per_call": m["reference_seconds"] / max(m["reference_calls"], 1),
                    "gfn_ff_calls": m["ff_calls"], "gfn_ff_seconds_per_call": m["ff_seconds"] / max(m["ff_calls"], 1)},
        "resumed": m["resumed"], "retries": m["retries"],
        "temperature_K": {"mean": float(temps.mean()), "std": float(temps.std())},
        "frames_with_changed_bonds": bonds_changed(mol.atoms, frames),
        "reference": label_stats(frames, "energy", "forces", ref=True),
        "gfn_ff": label_stats(frames, f"{FF_PREFIX}_energy", f"{FF_PREFIX}_forces"),
        **({"sgdml": {**sgdml, **label_stats([f for f in frames if not f.info["sgdml_train"]] or frames,
                                        f"{SGDML_PREFIX}_energy", f"{SGDML_PREFIX}_forces")}} if sgdml else {}),
    }
    _save_manifest(out, manifest)
    ckpt.unlink(missing_ok=True)
    log(f"{mol.name}: {len(frames)} frames -> {path} ({path.stat().st_size / 1e6:.1f} MB)")


# ---------------------------------------------------------------------------------------- driver
def _load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if path.exists():
        return json.loads(path.read_text())
    return {"benchmark": NAME, "schema_version": 1, "molecules": {}}


def _save_manifest(out: Path, manifest: dict) -> None:
    manifest["updated"] = timestamp()
    write_json_atomic(out / MANIFEST, manifest)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    import fcntl

    lock = out / ".data.lock"
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit(f"another benchmarks/data.py run is writing to {out}; wait for it or use another --out") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def generate(s: Settings, specs: list[str], out: str | Path, *, progress: bool = True,
             make_reference: Callable[..., Any] | None = None, make_ff: Callable[[], Any] | None = None,
             mode: str = "full") -> dict[str, Any]:
    """Generate (or resume) the data of ``specs`` (names or xyz paths) in ``out``; return the manifest."""
    from ase_adapt.priors import make_prior

    out = Path(out)
    mols = [resolve_molecule(spec) for spec in specs]
    names = [m.name for m in mols]
    if len(set(names)) != len(names):
        raise SystemExit(f"molecule names must be unique, got {names}")
    make_reference = make_reference or (lambda **kw: make_prior(REFERENCE, threads=s.threads, **kw))
    make_ff = make_ff or (lambda: make_prior(FF, threads=s.threads))
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        versions = tool_versions()
        manifest = _load_manifest(out)
        manifest.update(mode=mode, reference_level="GFN2-xTB (tblite), standing in for DFT", versions=versions,
                        last_run_settings=dataclasses.asdict(s), machine=machine_info(),
                        protocol=__doc__.split("Protocol", 1)[1].split("Resumable:", 1)[0].strip())
        started = time.perf_counter()
        elements = sorted(set(ISOLATED_ELEMENTS) | {sym for m in mols for sym in m.atoms.get_chemical_symbols()})
        isolated_atoms(out, elements, s, versions, manifest)
        _save_manifest(out, manifest)
        for mol in mols:
            process_molecule(mol, s, out, versions, manifest, progress=progress,
                             make_reference=make_reference, make_ff=make_ff)
        manifest["last_run_seconds"] = time.perf_counter() - started
        _save_manifest(out, manifest)
    return manifest


def estimate(s: Settings, specs: list[str], out: Path, calls: int = 20) -> dict[str, Any]:
    """Time reference and GFN-FF calls (and an sGDML fit for training molecules); estimate a full run."""
    from ase_adapt.priors import fit_sgdml_prior, make_prior

    rng = np.random.default_rng(0)
    ref, ff = make_prior(REFERENCE, threads=s.threads), make_prior(FF, threads=s.threads)
    rows, result = [], {}
    for mol in map(resolve_molecule, specs):
        frames = []
        for _ in range(calls):
            a = mol.atoms.copy()
            a.positions += rng.normal(0, 0.05, a.positions.shape)
            frames.append(a)
        t_ref = _median_time(ref.label, frames)
        t_ff = _median_time(ff.label, frames)
        n = s.train_frames if mol.role == "train" else s.test_frames
        steps = s.equil + s.stride * n
        fit = None
        if mol.role == "train":  # the fit as in the run: sgdml_frames, sigma chosen on 10 more frames
            fit_frames = []
            for _ in range(s.sgdml_frames + 10):
                a = mol.atoms.copy()
                a.positions += rng.normal(0, 0.05, a.positions.shape)
                lab = ref.label(a)
                a.info["energy"], a.arrays["forces"] = lab["energy"], lab["forces"]
                fit_frames.append(a)
            with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), quiet_sgdml():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                fit_sgdml_prior(fit_frames, n_train=s.sgdml_frames, out_path=Path(tmp) / "m.npz")
                fit = time.perf_counter() - t0
        total = (steps + 1) * t_ref + n * t_ff + (fit or 0.0)
        result[mol.name] = {"atoms": len(mol.atoms), "gfn2_xtb_seconds_per_call": t_ref, "gfn_ff_seconds_per_call": t_ff,
                            "sgdml_fit_seconds": fit, "md_steps": steps, "frames": n, "estimated_seconds": total}
        rows.append([mol.name, len(mol.atoms), 1e3 * t_ref, 1e3 * t_ff, fit, steps, total / 60])
    print_table(["molecule", "atoms", "GFN2 ms/call", "GFN-FF ms/call", "sGDML fit s", "MD steps", "est. min"], rows)
    total = sum(r["estimated_seconds"] for r in result.values())
    print(f"estimated total: {total / 60:.1f} min on this machine (1 thread per call, current load)")
    data = {"created": timestamp(), "settings": dataclasses.asdict(s), "molecules": result,
            "estimated_total_seconds": total, "machine": machine_info(), "versions": tool_versions()}
    write_json_atomic(out / "estimate.json", data)
    return data


def _median_time(call: Callable[[Any], Any], frames: list) -> float:
    call(frames[0])  # warm-up: library loading
    times = []
    for a in frames:
        t0 = time.perf_counter()
        call(a)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecules", nargs="+", metavar="NAME|XYZ",
                   help=f"default: {' '.join(TRAIN + TEST)}; validation (only when named): {' '.join(VALIDATION)}")
    p.add_argument("--molecule", action="append", default=[], metavar="XYZ", help="an extra molecule file (repeatable)")
    p.add_argument("--out", type=Path, help="output folder (default benchmarks/data, --quick: benchmarks/data_quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: a few frames and steps")
    p.add_argument("--estimate", action="store_true", help="time the calls and estimate a full run; no data")
    p.add_argument("--frames", type=int, help="frames per training molecule (default 2000)")
    p.add_argument("--test-frames", type=int, help="frames per test or validation molecule (default 300)")
    for name, typ in (("equil", int), ("stride", int), ("temperature-K", float), ("timestep-fs", float),
                      ("friction-per-fs", float), ("seed", int), ("sgdml-frames", int), ("checkpoint-every", int),
                      ("threads", int)):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    base = QUICK if args.quick else Settings()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if getattr(args, f.name, None) is not None}
    if args.frames is not None:
        overrides["train_frames"] = args.frames
    s = dataclasses.replace(base, **overrides)
    if min(s.test_frames, s.stride, s.checkpoint_every, s.threads) < 1 or s.equil < 0 or s.train_frames < 4:
        p.error("frames >= 4; test-frames, stride, checkpoint-every, threads >= 1; equil >= 0")
    specs = list(args.molecules or []) + list(args.molecule)
    specs = specs or list(TRAIN + TEST)
    out = args.out or BENCH_DIR / ("data_quick" if args.quick else "data")
    if args.estimate:
        out.mkdir(parents=True, exist_ok=True)
        estimate(s, specs, out)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # a kill saves the MD state like Ctrl-C does
    try:
        manifest = generate(s, specs, out, progress=not args.no_progress, mode="quick" if args.quick else "full")
    except MDFailure as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; rerun the same command to resume")
        return 130
    rows = [[n, e["n_frames"], e["file_bytes"] / 1e6, e["timings"]["reference_seconds_per_call"] * 1e3,
             e["gfn_ff"]["force_mae_vs_reference_meV_per_A"],
             e.get("sgdml", {}).get("force_mae_vs_reference_meV_per_A")] for n, e in manifest["molecules"].items()]
    print_table(["molecule", "frames", "MB", "GFN2 ms/call", "GFN-FF F-MAE meV/A", "sGDML F-MAE meV/A"], rows)
    print(f"data in {out} (manifest {out / MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
