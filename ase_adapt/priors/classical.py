"""Classical priors from ASE: Lennard-Jones and EMT."""

from __future__ import annotations

from typing import Any

from ase.data import atomic_numbers

from .base import StressPrior

__all__ = ["LJ_DEFAULTS", "EMT_ELEMENTS", "lj_prior", "emt_prior"]

# One LJ pair potential for every pair of atoms, tuned for bonded organic molecules: with
# sigma = 1 Å the minimum (1.12 Å) sits near C-H/N-H/O-H bonds and heavier-atom bonds feel the
# attractive tail; the cutoff is smoothed between ro and rc so that forces go to zero
# continuously. On ethanol, benzene, acetic acid and acetamide rattled by 0.05 Å, epsilon = 0.1 eV
# gives energies of about -0.05 eV/atom and forces of median 0.12 eV/Å (max 35 eV/Å; GFN2-xTB:
# median 0.76 eV/Å), force correlation with GFN2-xTB 0.59. ASE's defaults (epsilon = 1 eV, no
# smoothing) give ten times that, with forces up to 350 eV/Å on the same structures.
LJ_DEFAULTS: dict[str, Any] = {"sigma": 1.0, "epsilon": 0.1, "rc": 3.0, "ro": 2.0, "smooth": True}

EMT_ELEMENTS = frozenset(atomic_numbers[s] for s in ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"))


def _ours(spec: str, options: dict[str, Any], accepted: set[str]) -> None:
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"prior {spec!r}: unknown option(s) {unknown}; accepted: {sorted(accepted)}")


def lj_prior(spec: str = "lj", **options: Any) -> StressPrior:
    """ASE ``LennardJones`` with :data:`LJ_DEFAULTS` (override any of them as options).

    Options: ``sigma`` (Å), ``epsilon`` (eV), ``rc``, ``ro`` (Å), ``smooth``, ``threads``
    (default None: no limit). Any element; stress for 3D-periodic cells.
    """
    from ase.calculators.lj import LennardJones

    _ours(spec, options, set(LJ_DEFAULTS) | {"threads"})
    threads = options.pop("threads", None)
    params = {**LJ_DEFAULTS, **options}
    if params["rc"] is not None and params["ro"] is not None and not 0 < params["ro"] < params["rc"]:
        raise ValueError(f"prior {spec!r}: need 0 < ro < rc, got ro={params['ro']}, rc={params['rc']}")
    return StressPrior(LennardJones(**params), "lj", spec, threads=threads)


def emt_prior(spec: str = "emt", **options: Any) -> StressPrior:
    """ASE ``EMT`` (elements H, C, N, O, Al, Ni, Cu, Pd, Ag, Pt, Au; checked before compute).

    Options: ``asap_cutoff`` (ASE's), ``threads`` (default None). Stress for 3D-periodic cells.
    """
    from ase.calculators.emt import EMT

    _ours(spec, options, {"asap_cutoff", "threads"})
    threads = options.pop("threads", None)
    return StressPrior(EMT(**options), "emt", spec, threads=threads, elements=EMT_ELEMENTS)
