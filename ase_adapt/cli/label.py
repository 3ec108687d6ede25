"""``ase-adapt label``: add prior labels (energy, forces, stress) to a dataset.

Every frame of DATA (extxyz or ASE .db) is evaluated with the prior calculator SPEC and written
to OUT with the labels ``<prefix>_energy``, ``<prefix>_forces`` (and ``<prefix>_stress`` for
3D-periodic frames), keeping the labels it already had (reference ``energy``/``forces``...).

OUT appears only when every frame is done. Until then finished frames are kept in
``OUT.partial``; if the run is killed or a frame fails, the same command resumes after them
(``--no-resume`` starts over). Settings may also come from a YAML file (``--config``), whose
keys are the long option names (data, prior, out, prefix, resume, on_error, stress, progress);
relative paths in it are taken relative to the YAML file. Options given on the command line
override the file.

examples:
  ase-adapt label md.xyz --prior emt --out md-labelled.xyz
  ase-adapt label md.db --prior lj --prefix lj --on-error skip --out md-lj.xyz --quiet
  ase-adapt label --config label.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train.label import OnError
from ._common import PRIOR_HELP, prior_calculator, add_quiet

@dataclass(frozen=True)
class LabelSettings:
    data: str  # input dataset (extxyz or .db)
    prior: str  # prior calculator spec
    out: str  # output dataset (extxyz or .db)
    prefix: str = "prior"
    resume: bool = True
    on_error: OnError = OnError.RAISE
    stress: bool | None = None  # None: for 3D-periodic frames when the prior implements stress
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("data", "prior", "out", "prefix"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"label setting {name!r} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("resume", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"label setting {name!r} must be true or false, got {getattr(self, name)!r}")
        if self.stress is not None and not isinstance(self.stress, bool):
            raise ValueError(f"label setting 'stress' must be true, false or null, got {self.stress!r}")
        try:
            object.__setattr__(self, "on_error", OnError(self.on_error))
        except ValueError:
            raise ValueError(f"label setting 'on_error' must be one of {[m.value for m in OnError]}, "
                             f"got {self.on_error!r}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> LabelSettings:
        """Settings from a YAML mapping (relative paths: relative to the file), then ``overrides``."""
        from .._settings import load_yaml_mapping

        path = Path(path)
        data = {str(k).replace("-", "_"): v for k, v in load_yaml_mapping(path).items()}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{path}: unknown label settings {unknown}; valid: {sorted(names)}")
        for key in ("data", "out"):
            if isinstance(data.get(key), str) and not Path(data[key]).expanduser().is_absolute():
                data[key] = str(path.parent / Path(data[key]).expanduser())
        return cls._build({**data, **overrides}, f"{path} and the command line")

    @classmethod
    def _build(cls, values: dict[str, Any], where: str) -> LabelSettings:
        missing = [k for k in ("data", "prior", "out") if values.get(k) is None]
        if missing:
            raise ValueError(f"label: {', '.join(missing)} not given (in {where})")
        return cls(**values)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="add prior labels (energy, forces, stress) to a dataset",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", default=None, metavar="DATA",
                   help="input dataset: extxyz (.xyz, .extxyz) or ASE database (.db)")
    p.add_argument("--prior", metavar="SPEC", default=None, help=PRIOR_HELP)
    p.add_argument("--out", metavar="OUT", default=None,
                   help="output dataset (.xyz, .extxyz or .db); the only file left behind on success")
    p.add_argument("--prefix", default=None,
                   help="label key prefix: <prefix>_energy, <prefix>_forces, <prefix>_stress (default prior)")
    p.add_argument("--no-resume", dest="resume", action="store_false", default=None,
                   help="discard OUT.partial from an interrupted run and start over")
    p.add_argument("--on-error", choices=[m.value for m in OnError], default=None,
                   help="when the prior fails on a frame: stop with an error naming it (raise, default) "
                        "or leave the frame out and warn (skip)")
    p.add_argument("--stress", action=argparse.BooleanOptionalAction, default=None,
                   help="compute <prefix>_stress for 3D-periodic frames (default: when the prior implements it)")
    add_quiet(p)
    p.add_argument("--config", metavar="YAML", default=None,
                   help="read settings from this YAML file; command-line options override it")


def settings_from_args(args: argparse.Namespace) -> LabelSettings:
    names = [f.name for f in dataclasses.fields(LabelSettings)]
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if args.config is not None:
        return LabelSettings.from_yaml(args.config, **given)
    return LabelSettings._build(given, "the command line; see ase-adapt label --help")


def run(settings: LabelSettings) -> Path:
    from ..train.label import label_frames

    calculator = prior_calculator(settings.prior)
    out = label_frames(settings.data, calculator, settings.out, prefix=settings.prefix,
                       stress=settings.stress, resume=settings.resume, progress=settings.progress,
                       on_error=settings.on_error)
    print(f"labels {settings.prefix}_energy/_forces from prior {settings.prior!r} written to {out}")
    return out
