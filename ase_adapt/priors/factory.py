"""``make_prior``: every prior behind one spec string (the config/CLI boundary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ase.calculators.calculator import Calculator

from .base import Prior, StressPrior

__all__ = ["PRIOR_SPECS", "make_prior", "wrap_calculator"]

# spec -> what it is (the order is the order of the "accepted:" list in error messages)
PRIOR_SPECS: dict[str, str] = {
    "lj": "ASE LennardJones with molecule-friendly parameters (sigma 1 Å, epsilon 0.1 eV, smooth cutoff 2-3 Å)",
    "emt": "ASE EMT (H, C, N, O, Al, Ni, Cu, Pd, Ag, Pt, Au)",
    "gfn2-xtb": "GFN2-xTB via tblite (molecules and periodic cells)",
    "gfn1-xtb": "GFN1-xTB via tblite (molecules and periodic cells)",
    "gfn-ff": "GFN-FF via xtb-python (molecules only)",
    "sgdml:PATH": "a trained sGDML model .npz (see fit_sgdml_prior)",
}
_ALIASES = {"gfn2": "gfn2-xtb", "gfn2xtb": "gfn2-xtb", "gfn1": "gfn1-xtb", "gfn1xtb": "gfn1-xtb",
            "gfnff": "gfn-ff", "lennard-jones": "lj"}


def _builders() -> dict[str, Callable[..., Prior]]:
    from .classical import emt_prior, lj_prior
    from .xtb import gfnff_prior, tblite_prior

    return {"lj": lj_prior, "emt": emt_prior, "gfn2-xtb": tblite_prior, "gfn1-xtb": tblite_prior,
            "gfn-ff": gfnff_prior}


def _accepted() -> str:
    return ", ".join(PRIOR_SPECS) + ", or an ASE Calculator instance"


# ASE calculators known to take a total charge and spin (as initial charges and magnetic moments)
ELECTRONIC_CALCULATORS = ("TBLite", "XTB")


def wrap_calculator(calc: Calculator, *, kind: str | None = None, threads: int | None = None,
                    reuse_setup: bool = False, electronic: bool | None = None) -> Prior:
    """Any ASE calculator as a :class:`Prior` (kind: its class name, lower-cased).

    The result implements stress when ``calc`` does. ``electronic``: the calculator takes
    ``atoms.info`` charge and spin (as ASE initial charges and moments); default True for
    tblite's and xtb-python's calculators, False otherwise (a charged system is then refused).
    """
    cls = StressPrior if "stress" in getattr(calc, "implemented_properties", ()) else Prior
    name = type(calc).__name__
    if electronic is None:
        electronic = name in ELECTRONIC_CALCULATORS
    return cls(calc, kind or name.lower(), f"calculator:{name}", threads=threads, reuse_setup=reuse_setup,
               electronic=electronic)


def make_prior(spec: str | Calculator, **options: Any) -> Prior:
    """The prior named by ``spec``; ``options`` go to its backend (see docs/priors.md).

    ``spec``: ``"lj"``, ``"emt"``, ``"gfn2-xtb"``, ``"gfn1-xtb"``, ``"gfn-ff"``,
    ``"sgdml:PATH"`` or an ASE ``Calculator`` instance (wrapped; a :class:`Prior` is returned
    as it is). Unknown specs and options raise ValueError; a missing optional backend raises
    ImportError naming the extra to install (``pip install ase-adapt[priors]``).
    """
    if isinstance(spec, Prior):
        if options:
            raise ValueError(f"make_prior: {spec!r} is already a prior; options {sorted(options)} cannot be applied")
        return spec
    if isinstance(spec, Calculator):
        return wrap_calculator(spec, **options)
    if not isinstance(spec, str):
        raise TypeError(f"prior spec must be a string or an ASE Calculator, got {type(spec).__name__}")
    text = spec.strip()
    head, sep, tail = text.partition(":")
    if head.strip().lower() == "sgdml":
        if not sep or not tail.strip():
            raise ValueError("the sGDML prior needs a model file: 'sgdml:PATH' (fit one with fit_sgdml_prior)")
        from .sgdml import sgdml_prior

        path = tail.strip()
        return sgdml_prior(Path(path).expanduser(), f"sgdml:{path}", **options)
    key = text.lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    builders = _builders()
    if key not in builders:
        raise ValueError(f"unknown prior {spec!r}; accepted: {_accepted()}")
    return builders[key](key, **options)
