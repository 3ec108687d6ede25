"""Loading SevenNet models offline: pretrained names, checkpoint paths, modal choice.

``load_sevennet(spec)`` takes what follows ``"sevennet:"`` in ``ase_adapt.load_model``:

- a pretrained name that ``sevenn`` knows (``7net-0``, ``7net-0_22may2024``, ``7net-l3i5``,
  ``7net-mf-0``, ... also spelt ``sevennet-...``, case-insensitive). It resolves only to a file
  that is already on disk: shipped inside the ``sevenn`` wheel (``sevenn/pretrained_potentials``)
  or in sevenn's own cache (``~/.cache/sevennet``). Nothing is ever downloaded; a name whose
  weights are not on disk (``7net-omni``, ``7net-mf-ompa``, ``7net-omat`` in the 0.13 wheel)
  raises an error naming the models available offline.
- a path to a SevenNet checkpoint (``.pth``). sevenn loads it with ``torch.load(weights_only=False)``,
  i.e. by unpickling: load only checkpoints you trust.
- a multi-fidelity model's modal after ``@``: ``"7net-mf-0@PBE"`` (or ``modal="PBE"``; case-insensitive). An MF model
  without a modal, or an unknown modal, raises :class:`ValueError` listing the available modals
  (SevenNet's own calculator also refuses to guess); a modal given to a single-fidelity model is
  refused as well.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .._dtypes import as_dtype
from .foreign import split_choice
from .sevennet import SevenNetModel

__all__ = ["load_sevennet", "pretrained_sevennet", "offline_pretrained", "INSTALL_HINT"]

INSTALL_HINT = 'SevenNet models need the sevenn package: pip install "ase-adapt[sevenn]"'

# sevenn's pretrained names (sevenn.util.pretrained_name_to_path) -> the sevenn._const attribute
# holding the checkpoint path. Resolved here so that no code path can reach sevenn's downloader.
_PRETRAINED = {
    "0": "SEVENNET_0_11Jul2024", "0_11jul2024": "SEVENNET_0_11Jul2024", "0_11july2024": "SEVENNET_0_11Jul2024",
    "0_22may2024": "SEVENNET_0_22May2024", "l3i5": "SEVENNET_l3i5", "mf-0": "SEVENNET_MF_0",
    "mf-ompa": "SEVENNET_MF_ompa", "omat": "SEVENNET_omat", "omni": "SEVENNET_omni",
    "omni-i8": "SEVENNET_omni_i8", "omni-i12": "SEVENNET_omni_i12",
}
_CANONICAL = ("0", "0_22may2024", "l3i5", "mf-0", "mf-ompa", "omat", "omni", "omni-i8", "omni-i12")


def _sevenn():
    try:
        import sevenn  # noqa: F401
        from sevenn import _const
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    return _const


def _on_disk(const, attribute: str) -> Path | None:
    path = getattr(const, attribute, None)
    if path is None:
        return None
    cached = path.replace(const._prefix, os.path.expanduser("~/.cache/sevennet"))
    return next((Path(p) for p in (path, cached) if os.path.isfile(p)), None)


def offline_pretrained() -> list[str]:
    """The pretrained SevenNet names whose weights are on this machine (no download needed)."""
    const = _sevenn()
    return [f"7net-{n}" for n in _CANONICAL if _on_disk(const, _PRETRAINED[n]) is not None]


def pretrained_sevennet(name: str) -> Path:
    """The checkpoint file of pretrained model ``name``; raises rather than download."""
    const = _sevenn()
    key = name.strip().lower()
    for prefix in ("7net-", "sevennet-"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    else:
        key = None
    attribute = _PRETRAINED.get(key) if key is not None else None
    offline = ", ".join(offline_pretrained()) or "none"
    if attribute is None:
        raise ValueError(f"{name!r} is neither a SevenNet checkpoint file nor a pretrained SevenNet name; "
                         f"available offline: {offline}")
    path = _on_disk(const, attribute)
    if path is None:
        raise FileNotFoundError(f"pretrained SevenNet model {name!r} is not shipped with this sevenn installation "
                                f"and ase-adapt never downloads; available offline: {offline}, or pass the path "
                                "of a checkpoint file (sevennet:/path/to/checkpoint.pth)")
    return path


def _check_modal(modal_map: dict | None, modal: str | None, what: str) -> str | None:
    """The modal to use (matched case-insensitively, as sevenn documents), or a clear error."""
    available = list(modal_map or {})
    folded = {m.lower(): m for m in available}
    if modal is not None and modal not in available and modal.lower() in folded:
        modal = folded[modal.lower()]
    if available and modal is None:
        raise ValueError(f"{what} is a multi-fidelity model: choose a modal, e.g. 'sevennet:{what}@{available[0]}' "
                         f"or modal={available[0]!r} (available modals: {available})")
    if available and modal not in available:
        raise ValueError(f"unknown modal {modal!r} for {what}; available modals: {available}")
    if not available and modal is not None:
        raise ValueError(f"modal {modal!r} given, but {what} is not a multi-fidelity model (it has no modals)")
    return modal


def load_sevennet(
    spec: str | os.PathLike,
    *,
    modal: str | None = None,
    shared_blocks: int | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> SevenNetModel:
    """Load a SevenNet model (pretrained name or checkpoint path, optional ``@modal``) as a
    :class:`~ase_adapt.models.sevennet.SevenNetModel` with a ``main`` head; see the module docstring.

    ``shared_blocks``: how many interaction blocks form the shared representation (default all;
    the rest belong to the main head). ``dtype``: cast after loading (SevenNet-0 is float32).
    """
    _sevenn()
    from sevenn.checkpoint import SevenNetCheckpoint
    import sevenn

    spec, modal = split_choice(os.fspath(spec), modal, "modal")
    path = Path(spec) if os.path.isfile(spec) else pretrained_sevennet(spec)
    checkpoint = SevenNetCheckpoint(str(path))
    with warnings.catch_warnings():  # "no tensor product accelerator": irrelevant here
        warnings.filterwarnings("ignore", message=".*accelerator.*")
        sequential = checkpoint.build_model()
    modal = _check_modal(sequential.modal_map, modal, spec)
    # a file is recorded by its absolute path, so a prepared checkpoint reloads from any directory
    source = f"sevennet:{Path(spec).resolve()}" if os.path.isfile(spec) else f"sevennet:{spec}"
    config = {"kind": "sevennet", "source": source, "checkpoint": str(path),
              "sevenn_version": sevenn.__version__, "model_version": checkpoint.config.get("version"),
              "parity": bool(checkpoint.config.get("is_parity", True))}  # False: SO(3), mirror images differ
    model = SevenNetModel(sequential, shared_blocks=shared_blocks, modal=modal, config=config)
    if dtype is not None:
        target = as_dtype(dtype)
        if target != model.dtype:
            model = _cast(model, target)
    return model.to(device)


def _cast(model: SevenNetModel, dtype: torch.dtype) -> SevenNetModel:
    """Cast and recompute the main head's E0s in the new precision (isolated atoms stay exact)."""
    model = model.to(dtype)
    model.heads["main"].set_e0(model.isolated_energies(model.heads["main"]))
    return model


def restore_sevennet(config: dict, heads: dict, where: str = "checkpoint") -> SevenNetModel:
    """The adapter a saved ase-adapt checkpoint describes, with its heads attached (weights not loaded).

    The base model is rebuilt offline from ``config["source"]`` (a pretrained name shipped with
    ``sevenn``, or a checkpoint path), with the saved modal, ``shared_blocks`` and dtype; the
    caller then loads the saved weights strictly. A different ``sevenn`` version warns.
    """
    _sevenn()  # ImportError naming the extra before anything else
    import sevenn

    source = str(config.get("source", ""))
    if not source.startswith("sevennet:"):
        raise ValueError(f"{where}: the config names no SevenNet base model (source {source!r})")
    saved = config.get("sevenn_version")
    if saved != sevenn.__version__:
        warnings.warn(f"{where} was prepared with sevenn {saved}, this is sevenn {sevenn.__version__}: "
                      "if loading fails or predictions look wrong, install the version it was made with",
                      stacklevel=3)
    model = load_sevennet(source[len("sevennet:"):], modal=config.get("modal"),
                          shared_blocks=config.get("shared_blocks"), dtype=config.get("dtype"))
    for name, info in heads.items():
        kind = info.get("type")
        if name in model.heads:
            continue
        if kind == "sevennet":
            model.new_head(name, copy_main=True)
        elif kind == "mlp":
            model.new_head(name, hidden=int(info["hidden"]))
        else:
            raise ValueError(f"{where}: head {name!r} has unknown type {kind!r} (expected 'sevennet' or 'mlp')")
    if list(config.get("elements", model.elements)) != list(model.elements):
        raise ValueError(f"{where}: the base model {source!r} found here has other elements than the one it was "
                         "prepared from")
    fresh = ("checkpoint", "sevenn_version", "heads", "dtype")  # facts of this installation and this load
    model.config.update({k: v for k, v in config.items() if k not in fresh})
    return model
