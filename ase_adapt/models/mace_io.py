"""Loading MACE model files offline, and the choice of a MACE head.

``load_mace(spec)`` takes what follows ``"mace:"`` in ``ase_adapt.load_model``:

- a path to a MACE model file as MACE saves it (``torch.save`` of the whole ``MACE`` /
  ``ScaleShiftMACE`` module, e.g. ``my_model.model`` or ``..._stagetwo.model``). Such a file is a
  pickle: it is loaded with ``torch.load(weights_only=False)``, which can execute code stored in the
  file. **Load only model files you trust** (MACE's own calculator loads them the same way).
  Nothing is downloaded: MACE's foundation-model names (``mace_mp`` ...) are not accepted, pass the
  path of a file you have.
- a MACE head after ``@``: ``"mace:model.model@pbe"`` (or ``head="pbe"``). Default, as MACE's own
  calculator: the only head of a single-head model, otherwise the head named ``Default``
  (case-insensitive). A multi-head model without such a head, or an unknown head, raises
  :class:`ValueError` listing the available heads (MACE's calculator would warn and fall back to
  its last head).

mace-torch 0.3.16 pins ``e3nn==0.4.4`` while ``sevenn`` needs ``e3nn>=0.5``: the two cannot share an
environment. ase-adapt itself runs on both e3nn versions (:mod:`ase_adapt._compat`), so install
``pip install "ase-adapt[mace]"`` in an environment of its own. Importing ``mace`` sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process (mace's doing); ase-adapt's own loads pass
``weights_only=True`` explicitly and stay safe.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .._dtypes import as_dtype
from .foreign import split_choice
from .mace import MaceModel

__all__ = ["load_mace", "choose_head", "restore_mace", "INSTALL_HINT"]

INSTALL_HINT = ('MACE models need the mace-torch package: pip install "ase-adapt[mace]". mace-torch 0.3.16 pins '
                'e3nn==0.4.4, which conflicts with sevenn (e3nn>=0.5), so install it in its own environment')


def _mace() -> str | None:
    """Import mace (clear ImportError naming the extra); its version."""
    try:
        import mace  # noqa: F401
        from mace import modules  # noqa: F401  (the classes the pickle refers to)
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    from importlib import metadata

    try:
        return metadata.version("mace-torch")
    except metadata.PackageNotFoundError:  # a source checkout of mace
        return getattr(mace, "__version__", None)


def choose_head(available: list[str], head: str | None, what: str = "the MACE model") -> str:
    """The MACE head to use: ``head`` (exact, else case-insensitive), or the default; clear errors."""
    if head is None:
        if len(available) == 1:
            return available[0]
        defaults = [h for h in available if h.lower() == "default"]
        if len(defaults) != 1:
            raise ValueError(f"{what} has several heads and none is called 'Default': choose one, e.g. "
                             f"'mace:PATH@{available[0]}' or head={available[0]!r} (available heads: {available})")
        return defaults[0]
    if head in available:
        return head
    folded = [h for h in available if h.lower() == head.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError(f"unknown MACE head {head!r} for {what}; available heads: {available}")


def read_mace_file(path: Path) -> torch.nn.Module:
    """Unpickle a MACE model file (trusted files only, see the module docstring) onto the CPU."""
    _mace()
    if not path.is_file():
        raise FileNotFoundError(f"no MACE model file {str(path)!r} (ase-adapt never downloads MACE models)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weights_only.*")
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, torch.nn.Module):
        raise ValueError(f"{path}: not a MACE model file (it holds a {type(obj).__name__}, not a saved MACE "
                         "module; state dicts and training checkpoints are not model files)")
    return obj


def load_mace(
    spec: str | os.PathLike,
    *,
    head: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> MaceModel:
    """Load a MACE model file (optional ``@head``) as a :class:`~ase_adapt.models.mace.MaceModel`
    with a ``main`` head; see the module docstring. ``dtype``: cast after loading."""
    version = _mace()
    spec, head = split_choice(os.fspath(spec), head, "MACE head")
    path = Path(spec)
    module = read_mace_file(path)
    available = list(getattr(module, "heads", None) or ["Default"])
    chosen = choose_head(available, head, what=str(path))
    config = {"kind": "mace", "source": f"mace:{path.resolve()}", "model_file": str(path.resolve()),
              "mace_version": version}
    model = MaceModel(module, head=chosen, config=config)
    if dtype is not None:
        target = as_dtype(dtype)
        if target != model.dtype:
            model = model.to(target)
            model.refresh_e0()
    return model.to(device)


def restore_mace(config: dict, heads: dict, where: str = "checkpoint") -> MaceModel:
    """The adapter a saved ase-adapt checkpoint describes, with its heads attached (weights not loaded).

    The base model is re-read from ``config["source"]`` (the MACE model file, which must still be
    there and trusted), with the saved MACE head and dtype; the caller then loads the saved weights
    strictly. A different mace-torch version warns.
    """
    version = _mace()
    source = str(config.get("source", ""))
    if not source.startswith("mace:"):
        raise ValueError(f"{where}: the config names no MACE base model (source {source!r})")
    if config.get("mace_version") != version:
        warnings.warn(f"{where} was prepared with mace-torch {config.get('mace_version')}, this is {version}: "
                      "if loading fails or predictions look wrong, install the version it was made with",
                      stacklevel=3)
    spec, _ = split_choice(source[len("mace:"):], None, "MACE head")
    model = load_mace(spec, head=config.get("mace_head"), dtype=config.get("dtype"))
    if list(config.get("elements", model.elements)) != list(model.elements):
        raise ValueError(f"{where}: the MACE model file {spec!r} found here has other elements than the one it was "
                         "prepared from")
    for name, info in heads.items():
        if name in model.heads:
            continue
        kind = info.get("type")
        if kind not in ("mace", "mlp"):
            raise ValueError(f"{where}: head {name!r} has unknown type {kind!r} (expected 'mace' or 'mlp')")
        model.new_head(name, copy_main=kind == "mace", hidden=int(info.get("hidden", 16)))
    fresh = ("model_file", "mace_version", "heads", "dtype")  # facts of this installation and this load
    model.config.update({k: v for k, v in config.items() if k not in fresh})
    return model
