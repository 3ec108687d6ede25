"""Prior calculators behind one factory; every failure becomes :class:`PriorError`.

>>> from ase_adapt.priors import make_prior
>>> prior = make_prior("gfn-ff")            # or "gfn2-xtb", "gfn1-xtb", "lj", "emt", "sgdml:model.npz"
>>> labels = prior.label(atoms)             # {'energy': ..., 'forces': ...}; prior.head_name == 'prior:gfn-ff'

Optional backends (tblite, xtb-python, sgdml, threadpoolctl) are imported only when a prior
needs them: ``pip install ase-adapt[priors]``. See docs/priors.md.
"""

from __future__ import annotations

from ..errors import PriorError
from .base import Prior, StressPrior, silenced_stdout
from .factory import PRIOR_SPECS, make_prior, wrap_calculator
from .sgdml import SIGMA_GRID, fit_sgdml_prior, load_sgdml_model, sgdml_compat

__all__ = [
    "Prior", "StressPrior", "PriorError", "PRIOR_SPECS", "make_prior", "wrap_calculator",
    "fit_sgdml_prior", "load_sgdml_model", "sgdml_compat", "SIGMA_GRID", "silenced_stdout",
]
