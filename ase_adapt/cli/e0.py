"""``ase-adapt e0``: atomic reference energies (E0s) of a head, three ways.

  isolated    one isolated atom per element, computed with a calculator (--calculator emt, lj...)
  average     least-squares fit E ≈ Σ_Z n_Z E0_Z over labelled frames (training from scratch)
  reestimate  model-aware: E0_pre + ΔE0, ΔE0 the least-squares fit of (E_ref − E_pred) against
              element counts (fine-tuning a pretrained model on a new reference level)

The E0s are printed as a table. --json writes them as {symbol: E0 in eV}; --out applies them
to a head of the model loaded from --model and saves the result there (atomically). The --model
file itself is only overwritten when --out names the same path. Settings can come from a
YAML file (--config) whose keys are the option names (e.g. ``energy_key``); options given on the
command line win. See docs/e0.md.

examples:
  ase-adapt e0 --method isolated --calculator emt --elements H C N O --json e0.json
  ase-adapt e0 --method average --data train.xyz --energy-key energy
  ase-adapt e0 --method reestimate --model pre.safetensors --data new.xyz --head main \\
      --out tuned.safetensors --json e0.json
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from ase.data import chemical_symbols

from .._keys import MAIN_HEAD, REF_ENERGY
from .._settings import load_yaml_mapping
from ..errors import DataError
from ._common import prior_calculator


class E0Method(str, Enum):
    ISOLATED = "isolated"
    AVERAGE = "average"
    REESTIMATE = "reestimate"


@dataclass(frozen=True)
class E0Settings:
    method: E0Method
    calculator: str | None = None  # isolated: calculator spec ("emt", "lj", or a priors spec)
    elements: tuple[str, ...] = ()  # isolated: default the --model's elements
    box: float | None = None  # isolated: cubic (non-periodic) cell edge in Å
    data: str | None = None  # average / reestimate: labelled frames (extxyz...)
    energy_key: str = REF_ENERGY
    model: str | None = None  # reestimate: the pretrained model; any method: the model to write
    head: str = MAIN_HEAD
    batch_size: int = 32
    json: str | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", E0Method(self.method))
        except ValueError:
            choices = ", ".join(m.value for m in E0Method)
            raise ValueError(f"unknown E0 method {self.method!r} (choose from {choices})") from None
        elements = self.elements.split() if isinstance(self.elements, str) else self.elements
        object.__setattr__(self, "elements", tuple(str(e) for e in elements or ()))
        m = self.method
        if m is E0Method.ISOLATED and not self.calculator:
            raise ValueError("--method isolated needs --calculator (e.g. emt, lj)")
        if m is E0Method.ISOLATED and not (self.elements or self.model):
            raise ValueError("--method isolated needs --elements (or --model to take its elements)")
        if m in (E0Method.AVERAGE, E0Method.REESTIMATE) and not self.data:
            raise ValueError(f"--method {m.value} needs --data FRAMES")
        if m is E0Method.REESTIMATE and not self.model:
            raise ValueError("--method reestimate needs --model CKPT (the pretrained model)")
        if self.out and not self.model:
            raise ValueError("--out needs --model CKPT (the model whose head gets the E0s)")
        if self.json and self.out and Path(self.json).resolve() == Path(self.out).resolve():
            raise ValueError(f"--json and --out name the same file {self.json!r}")
        for name, kind in (("batch_size", int), ("box", float)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                try:
                    object.__setattr__(self, name, kind(value))
                except (TypeError, ValueError):
                    raise ValueError(f"{name} must be a number, got {value!r}") from None
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.box is not None and self.box <= 0:
            raise ValueError(f"--box must be positive, got {self.box}")
        if not self.head or not self.energy_key:
            raise ValueError("--head and --energy-key must not be empty")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "settings") -> "E0Settings":
        """Settings from a mapping with field names as keys (``-`` may stand for ``_``)."""
        known = {f.name for f in fields(cls)}
        clean = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(clean) - known)
        if unknown:
            raise ValueError(f"{where}: unknown settings {unknown} (known: {sorted(known)})")
        if "method" not in clean:
            raise ValueError(f"{where}: no method given (--method isolated|average|reestimate)")
        return cls(**clean)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "E0Settings":
        return cls.from_mapping(load_yaml_mapping(path), where=str(path))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("e0", help="atomic reference energies: isolated atoms, averaging, re-estimation",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # every default is None so that --config values are only overridden by options actually given
    p.add_argument("--method", choices=[m.value for m in E0Method], default=None,
                   help="how to get the E0s (required, here or in --config)")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="read settings from a YAML file; command-line options override it")
    g = p.add_argument_group("isolated")
    g.add_argument("--calculator", default=None, metavar="SPEC",
                   help="calculator for the isolated atoms: emt, lj (or any ase_adapt.priors spec)")
    g.add_argument("--elements", nargs="+", default=None, metavar="EL",
                   help="element symbols (isolated: default the elements of --model; "
                        "average: default those in --data)")
    g.add_argument("--box", type=float, default=None, metavar="ANGSTROM",
                   help="give each atom a cubic, non-periodic cell of this edge (for calculators that need one)")
    g = p.add_argument_group("average / reestimate")
    g.add_argument("--data", default=None, metavar="FRAMES",
                   help="labelled frames (extxyz or any ASE-readable file)")
    g.add_argument("--energy-key", default=None, metavar="KEY",
                   help=f"energy label in atoms.info or single-point results (default {REF_ENERGY})")
    g.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="frames per model evaluation in reestimate (default 32)")
    g = p.add_argument_group("model and output")
    g.add_argument("--model", default=None, metavar="CKPT",
                   help="pretrained model (required for reestimate; the source model for --out)")
    g.add_argument("--head", default=None, help=f"head to re-estimate / write (default {MAIN_HEAD})")
    g.add_argument("--json", default=None, metavar="OUT.json", help="write the E0s as JSON {symbol: E0 in eV}")
    g.add_argument("--out", default=None, metavar="CKPT_OUT",
                   help="save a copy of --model with these E0s in --head to this path")


def settings_from_args(args: argparse.Namespace) -> E0Settings:
    values: dict[str, Any] = {}
    if args.config:
        values.update({str(k).replace("-", "_"): v for k, v in load_yaml_mapping(args.config).items()})
    for f in fields(E0Settings):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return E0Settings.from_mapping(values, where=args.config or "command line")


# ----------------------------------------------------------------------------------- building blocks
def make_calculator(spec: str):
    """The calculator for isolated-atom E0s: any prior spec (:func:`ase_adapt.priors.make_prior`)."""
    return prior_calculator(spec)


def load_frames(path: str | Path) -> list:
    """All frames of ``path`` (extxyz or ASE .db); a bad file raises DataError naming it."""
    from ..train.data import read_frames

    return list(read_frames(path))


def compute_e0(settings: E0Settings, model=None) -> dict[int, float]:
    """The E0s ``{Z: eV}`` that ``settings`` ask for (``model``: the loaded --model, if any)."""
    from ..train.e0 import average_e0, isolated_atom_e0, reestimate_e0

    m = settings.method
    try:
        if m is E0Method.ISOLATED:
            elements = settings.elements or model.elements
            return isolated_atom_e0(elements, make_calculator(settings.calculator), box=settings.box)
        frames = load_frames(settings.data)
        if m is E0Method.AVERAGE:
            return average_e0(frames, settings.elements or None, energy_key=settings.energy_key)
        return reestimate_e0(model, frames, settings.head, settings.energy_key, batch_size=settings.batch_size)
    except (KeyError, DataError) as exc:  # missing energy label or head: a user error, reported as such
        where = f"{settings.data}: " if settings.data else ""
        raise ValueError(where + str(exc.args[0] if exc.args else exc)) from None


def print_table(e0: Mapping[int, float], previous: Mapping[int, float] | None = None) -> None:
    if previous:
        print(f"{'element':<8} {'E0 / eV':>16} {'model E0 / eV':>16} {'change / eV':>13}")
        for z in sorted(e0):
            old = previous.get(z)
            rest = f" {old:16.6f} {e0[z] - old:+13.6f}" if old is not None else f" {'-':>16} {'-':>13}"
            print(f"{chemical_symbols[z]:<8} {e0[z]:16.6f}" + rest)
    else:
        print(f"{'element':<8} {'E0 / eV':>16}")
        for z in sorted(e0):
            print(f"{chemical_symbols[z]:<8} {e0[z]:16.6f}")


def run(settings: E0Settings) -> dict[int, float]:
    from ..checkpoint import load_model, save_model
    from ..train.e0 import apply_e0, e0_to_json, head_e0

    model = load_model(settings.model) if settings.model else None
    previous = None
    if model is not None and settings.head not in model.heads:
        raise ValueError(f"{settings.model}: no head {settings.head!r} (heads: {', '.join(model.heads)})")
    if model is not None:
        previous = head_e0(model, settings.head)
    e0 = compute_e0(settings, model)
    if settings.out:
        apply_e0(model, e0, settings.head)  # raises before anything is written if elements are missing
    print_table(e0, previous)
    if settings.json:
        e0_to_json(e0, settings.json)
        print(f"E0s written to {settings.json}")
    if settings.out:
        save_model(model, settings.out)
        print(f"model with the new E0s in head {settings.head!r} written to {settings.out}")
    return e0

