"""``ase-adapt stats``: (re)compute a checkpoint's training statistics from a dataset.

The statistics (elements, force-norm distributions of reference and prior labels, the average
normalized-Laplacian spectrum and the spread of spectral distances, the prior heads' training
loss) are what shift detection and test-time training compare against. They are computed at the
model's cutoff from the frames of DATA (extxyz or ASE .db; isolated-atom frames are skipped).

Nothing is written unless asked: --out writes the checkpoint with the new statistics (atomically;
it may be the input checkpoint itself), --json writes the statistics as JSON. A short summary is
always printed; --quiet only turns the progress bars off, as in every command. Settings may also come from a YAML file
(--config) whose keys are the settings' names (model, data, out, json, batch_size, energy_key,
...); relative paths in it are taken relative to the YAML file; command-line options override it.

Label keys: reference energy/forces (default energy/forces); head "prior" reads
prior_energy/prior_forces, head "prior:<kind>" reads prior_<kind>_energy/prior_<kind>_forces.

examples:
  ase-adapt stats --model model.safetensors --data train.xyz
  ase-adapt stats --model model.safetensors --data train.xyz --out model.safetensors
  ase-adapt stats --model model.pt --data train.db --json stats.json --quiet
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..losses import LossKind, LossWeights
from ._common import add_quiet

_PATHS = ("model", "data", "out", "json")


@dataclass(frozen=True)
class StatsSettings:
    model: str  # checkpoint to read
    data: str  # training frames (extxyz or .db)
    out: str | None = None  # write the checkpoint with the new statistics here
    json: str | None = None  # write the statistics as JSON here
    batch_size: int = 16
    energy_key: str = "energy"
    forces_key: str = "forces"
    prior_energy_key: str = "prior_energy"
    prior_forces_key: str = "prior_forces"
    prior_heads: tuple[str, ...] | None = None  # None: every prior head of the model
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 0.0
    loss: LossKind = LossKind.MSE
    huber_delta: float = 0.01
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("model", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"stats setting {name!r} must be a non-empty string, got {getattr(self, name)!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"stats setting 'batch_size' must be an integer >= 1, got {self.batch_size!r}")
        if self.prior_heads is not None:
            object.__setattr__(self, "prior_heads", tuple(self.prior_heads))
        try:
            object.__setattr__(self, "loss", LossKind(self.loss))
        except ValueError:
            raise ValueError(f"stats setting 'loss' must be one of {[k.value for k in LossKind]}, "
                             f"got {self.loss!r}") from None
        self.loss_weights()  # validates the weights

    def loss_weights(self) -> LossWeights:
        return LossWeights(energy=self.energy_weight, forces=self.forces_weight, stress=self.stress_weight,
                           kind=self.loss, huber_delta=self.huber_delta)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> StatsSettings:
        """Settings from a YAML mapping (relative paths: relative to the file), then ``overrides``."""
        from .._settings import load_yaml_mapping

        path = Path(path)
        data = {str(k).replace("-", "_"): v for k, v in load_yaml_mapping(path).items()}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown stats settings {unknown}; valid: {sorted(f.name for f in dataclasses.fields(cls))}")
        for key in _PATHS:
            if isinstance(data.get(key), str) and not Path(data[key]).expanduser().is_absolute():
                data[key] = str(path.parent / Path(data[key]).expanduser())
        return cls._build({**data, **overrides}, f"{path} and the command line")

    @classmethod
    def _build(cls, values: dict[str, Any], where: str) -> StatsSettings:
        missing = [k for k in ("model", "data") if values.get(k) is None]
        if missing:
            raise ValueError(f"stats: {', '.join('--' + k for k in missing)} not given (in {where})")
        return cls(**values)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="compute a checkpoint's training statistics from a dataset",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = StatsSettings(model="-", data="-")
    p.add_argument("--model", metavar="CKPT", default=None, help="checkpoint (.safetensors or .pt) or built-in name")
    p.add_argument("--data", metavar="FRAMES", default=None, help="training frames: extxyz (.xyz, .extxyz) or ASE .db")
    p.add_argument("--out", metavar="CKPT", default=None, help="write the checkpoint with the new statistics here")
    p.add_argument("--json", metavar="JSON", default=None, help="write the statistics as JSON here")
    p.add_argument("--batch-size", type=int, default=None, help=f"frames per model evaluation (default {d.batch_size})")
    keys = p.add_argument_group("label keys")
    for name in ("energy_key", "forces_key", "prior_energy_key", "prior_forces_key"):
        keys.add_argument("--" + name.replace("_", "-"), default=None, metavar="KEY",
                          help=f"default {getattr(d, name)}")
    keys.add_argument("--prior-head", dest="prior_heads", action="append", default=None, metavar="HEAD",
                      help="prior head whose loss to compute (repeatable; its labels are then required); "
                           "default: every prior head of the model that has labels")
    loss = p.add_argument_group("loss (use the weights test-time training will use)")
    loss.add_argument("--energy-weight", type=float, default=None, help=f"default {d.energy_weight}")
    loss.add_argument("--forces-weight", type=float, default=None, help=f"default {d.forces_weight}")
    loss.add_argument("--stress-weight", type=float, default=None, help=f"default {d.stress_weight}")
    loss.add_argument("--loss", choices=[k.value for k in LossKind], default=None, help="loss shape (default mse)")
    loss.add_argument("--huber-delta", type=float, default=None, help=f"default {d.huber_delta}")
    add_quiet(p)
    p.add_argument("--config", metavar="YAML", default=None,
                   help="read settings from this YAML file; command-line options override it")


def settings_from_args(args: argparse.Namespace) -> StatsSettings:
    names = [f.name for f in dataclasses.fields(StatsSettings)]
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if args.config is not None:
        return StatsSettings.from_yaml(args.config, **given)
    return StatsSettings._build(given, "the command line; see ase-adapt stats --help")


def _read_frames(path: str) -> list:
    from ..train.data import read_frames

    return read_frames(path)


def summary_lines(stats: dict) -> list[str]:
    """A short human-readable summary of a statistics dict."""
    from ase.data import chemical_symbols

    def dist(d: dict | None) -> str:
        return "n/a" if d is None else f"{d['mean']:.4g} ± {d['std']:.4g}"

    lines = [
        f"frames      {stats['n_frames']} (isolated atoms skipped: {stats.get('n_isolated_skipped', 0)})"
        f"   cutoff {stats['cutoff']} Å",
        f"elements    {' '.join(chemical_symbols[z] for z in stats['elements'])}",
        f"|F| ref     {dist(stats.get('force_norm_reference'))} eV/Å",
        f"spectrum    length {len(stats['spectrum_mean'])}   distance {dist(stats['spectral_distance'])}",
    ]
    for head, value in (stats.get("prior_force_norm_by_head") or {}).items():
        lines.append(f"|F| prior   {head}: {dist(value)} eV/Å")
    for head, value in (stats.get("prior_loss_by_head") or {}).items():
        lines.append(f"prior loss  {head}: {value:.6g}")
    if stats.get("main_loss") is not None:
        lines.append(f"main loss   {stats['main_loss']:.6g}")
    lines.extend(f"note        {n}" for n in stats.get("notes") or [])
    return lines


def _refuse_losing_prior_heads(model, frames: list, settings: StatsSettings) -> None:
    """Before any work: writing statistics without a prior head's labels would drop its prior loss,
    the reference point TTT compares against, from the checkpoint."""
    from .. import _keys as K
    from ..labels import has_label, prior_heads, prior_label_keys

    heads = settings.prior_heads if settings.prior_heads is not None else prior_heads(model)
    missing = []
    for h in heads:
        keys = (settings.prior_energy_key, settings.prior_forces_key) if h == K.PRIOR_HEAD else prior_label_keys(h)[:2]
        if not any(has_label(a, k) for a in frames for k in keys):
            missing.append(f"{h} ({keys[0]}/{keys[1]})")
    if missing:
        raise ValueError(f"no frame of {settings.data} carries labels for prior head(s) {', '.join(missing)}; "
                         f"statistics written to {settings.out} would lose their prior losses, which TTT needs. "
                         "Label the frames first (ase-adapt label --prior SPEC --prefix ...), or write --json only")


def run(settings: StatsSettings) -> dict:
    from .._io import write_json
    from ..checkpoint import load_model, save_model
    from ..shift.stats import attach_training_stats, compute_training_stats, stats_to_json

    model = load_model(settings.model)
    frames = _read_frames(settings.data)
    if settings.out:
        _refuse_losing_prior_heads(model, frames, settings)
    stats = compute_training_stats(
        model, frames,
        energy_key=settings.energy_key, forces_key=settings.forces_key,
        prior_energy_key=settings.prior_energy_key, prior_forces_key=settings.prior_forces_key,
        prior_heads=settings.prior_heads, loss_weights=settings.loss_weights(),
        batch_size=settings.batch_size, progress=settings.progress,
    )
    print("\n".join(summary_lines(stats)))
    if settings.out:
        attach_training_stats(model, stats)
        save_model(model, settings.out)
        print(f"checkpoint with statistics written to {settings.out}")
    if settings.json:
        write_json(settings.json, stats_to_json(stats))
        print(f"statistics written to {settings.json}")
    return stats
