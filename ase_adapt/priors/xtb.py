"""Tight-binding and force-field priors: GFN2-xTB / GFN1-xTB (tblite) and GFN-FF (xtb-python).

Both backends run OpenMP code. Their thread count defaults to ``threads=1``, applied with
``threadpoolctl`` around each computation only: tblite shares torch's ``libgomp`` when torch is
imported first, so without the limit ``torch.set_num_threads`` would change how many threads
the SCF uses, and with it the last digits of the labels.
"""

from __future__ import annotations

from typing import Any

from ase import Atoms

from .base import Prior, StressPrior

__all__ = ["XTB_ELEMENTS", "tblite_prior", "gfnff_prior"]

# tblite's GFN1/GFN2 parametrisations and GFN-FF cover H to Rn. xtb-python's GFN-FF silently
# returns numbers for heavier elements, so this is checked before any compute.
XTB_ELEMENTS = frozenset(range(1, 87))

_TBLITE_METHODS = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}
_OURS = ("threads", "reuse_setup")


def _missing(spec: str, package: str, exc: ImportError) -> ImportError:
    return ImportError(f"prior {spec!r} needs the optional package {package!r} ({exc}); install it with "
                       f"`pip install ase-adapt[priors]` (or `pip install {package}`)")


def _split_options(spec: str, options: dict[str, Any], backend_keys: set[str],
                   ours: tuple[str, ...] = _OURS) -> tuple[dict, dict]:
    """(our options, the backend's options); unknown names raise ValueError listing the accepted."""
    mine = {k: options[k] for k in ours if k in options}
    rest = {k: v for k, v in options.items() if k not in ours}
    unknown = sorted(set(rest) - backend_keys)
    if unknown:
        raise ValueError(f"prior {spec!r}: unknown option(s) {unknown}; accepted: {sorted(set(ours) | backend_keys)}")
    return mine, rest


def tblite_prior(spec: str, **options: Any) -> StressPrior:
    """GFN2-xTB (``spec='gfn2-xtb'``) or GFN1-xTB (``'gfn1-xtb'``) with tblite's ASE calculator.

    Molecules and periodic cells (with stress). Options: ``threads`` (default 1),
    ``reuse_setup`` (default False) and any ``tblite.ase.TBLite`` parameter except ``method``
    (``charge``, ``multiplicity``, ``accuracy``, ``electronic_temperature``, ``max_iterations``,
    ``solvation``...). Output is off (``verbosity=0``) unless given. SCF non-convergence raises
    :class:`~ase_adapt.errors.PriorError`.
    """
    try:
        from tblite.ase import TBLite
    except ImportError as exc:
        raise _missing(spec, "tblite", exc) from exc
    keys = set(TBLite.default_parameters) - {"method"}
    ours, rest = _split_options(spec, options, keys)
    rest.setdefault("verbosity", 0)
    backend = TBLite(method=_TBLITE_METHODS[spec], **rest)
    return StressPrior(backend, spec, spec, threads=ours.get("threads", 1), elements=XTB_ELEMENTS,
                       reuse_setup=ours.get("reuse_setup", False), electronic=True)


def _molecules_only(atoms: Atoms) -> str | None:
    if atoms.pbc.any():
        return ("GFN-FF through xtb-python supports only non-periodic molecules (xtb-python cannot "
                "build a periodic GFN-FF calculator); use gfn2-xtb or gfn1-xtb for periodic cells")
    return None


def gfnff_prior(spec: str = "gfn-ff", **options: Any) -> Prior:
    """GFN-FF with xtb-python's ASE calculator (non-periodic molecules only).

    Options: ``threads`` (default 1), ``reuse_setup`` (default False; True keeps the topology of
    the first structure), ``quiet`` (default True: GFN-FF's setup printout, which ignores xtb's
    muted verbosity, is sent to /dev/null at the file-descriptor level) and the
    ``xtb.ase.calculator.XTB`` parameters ``accuracy``, ``max_iterations``,
    ``electronic_temperature``, ``solvent``, ``cache_api``. Each computation runs in a private
    temporary working directory, because xtb writes ``gfnff_topo`` and ``gfnff_adjacency``
    (hundreds of kB) into the current one.
    """
    try:
        from xtb.ase.calculator import XTB
    except ImportError as exc:
        raise _missing(spec, "xtb", exc) from exc
    keys = set(XTB.default_parameters) - {"method"}
    ours, rest = _split_options(spec, options, keys, _OURS + ("quiet",))
    backend = XTB(method="GFN-FF", **rest)
    return Prior(backend, "gfn-ff", spec, threads=ours.get("threads", 1), elements=XTB_ELEMENTS,
                 checks=(_molecules_only,), reuse_setup=ours.get("reuse_setup", False),
                 quiet=ours.get("quiet", True), scratch=True, electronic=True)
