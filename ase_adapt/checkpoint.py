"""Safe model checkpoints.

Format (``.safetensors``, the default): one safetensors file. Tensors are the model state dict
(prefix ``model.``) and array-valued training statistics (prefix ``stats.``); the header metadata
holds JSON: the format name and version, the architecture config, the heads with their E0s and
the scalar training statistics. Nothing is ever unpickled.

A ``.pt`` file is also accepted: a plain dict ``{"metadata": {str: str}, "tensors": {str:
Tensor}}`` written with ``torch.save`` and read with ``torch.load(weights_only=True)``, which
refuses any pickled object beyond tensors and plain containers.

A foreign adapter (a SevenNet model made TTT-ready by ``ase-adapt prepare``) saves the same
container. Its config has ``kind: sevennet`` and names the base model (``source``, e.g.
``sevennet:7net-0``, with ``modal``, ``shared_blocks`` and the ``sevenn_version``), and each head in
the header also records its type (``sevennet`` or ``mlp`` with ``hidden``). Loading rebuilds the
adapter from the base model available offline (:func:`~ase_adapt.models.sevennet_io.restore_sevennet`),
attaches the heads and then loads every saved weight strictly.

Writes go to a temporary file in the target directory and are renamed into place, so a crash
never leaves a half-written checkpoint.

Versions: format 2 saves each head's weights under an identifier key (``model.heads.prior_gfn_ff.``,
:mod:`ase_adapt.models.heads`); format 1 used the public name (``model.heads.prior:gfn-ff.``).
Statistics carry their own ``stats_version``. Both older forms load: the head keys are renamed by
the model's ``load_state_dict`` hook, the statistics by :func:`~ase_adapt.shift.stats.upgrade_stats`
(``tests/test_checkpoint_versions.py`` loads a checkpoint saved by the format-1 code).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import _keys as K
from ._dtypes import as_dtype
from .errors import CheckpointError
from .models.build import ModelConfig, build_model, new_head
from .models.mlff import MLFF
from .models.serialize import checkpoint_payload, save_model  # noqa: F401  (public here)
from .shift.stats import upgrade_stats

# name -> packaged checkpoint. "default": trained on aspirin, benzene and uracil (GFN2-xTB reference,
# GFN-FF / sGDML / LJ prior heads) by `python benchmarks/train_default.py --install`.
BUILTIN_MODELS: dict[str, Path] = {"default": Path(__file__).parent / "data" / "default.safetensors"}
SEVENNET_PREFIX = "sevennet:"  # load_model("sevennet:7net-0"): a SevenNet model through its adapter
FOREIGN_KINDS = ("sevennet", "mace")  # config "kind" of checkpoints saved by a foreign adapter (a prepared model)


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if path.suffix == ".pt":
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError, RuntimeError on a corrupt zip...
            raise CheckpointError(f"{path}: not a safe ase-adapt checkpoint ({type(exc).__name__}: {exc})") from None
        if not (isinstance(blob, dict) and isinstance(blob.get("metadata"), dict) and isinstance(blob.get("tensors"), dict)):
            raise CheckpointError(f"{path}: a torch file, but not an ase-adapt checkpoint")
        return blob["metadata"], blob["tensors"]
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return metadata, load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({exc})") from None


def _resolve(path_or_name: str | Path) -> Path:
    if isinstance(path_or_name, str) and path_or_name in BUILTIN_MODELS:
        path = BUILTIN_MODELS[path_or_name]
        if not path.is_file():
            raise CheckpointError(f"built-in model {path_or_name!r} is missing from this installation ({path}); "
                                  "reinstall ase-adapt, or train it with `python benchmarks/train_default.py --install`")
        return path
    path = Path(path_or_name)
    if not path.is_file():
        names = ", ".join(sorted(BUILTIN_MODELS)) or "none yet"
        raise CheckpointError(f"no checkpoint file {str(path)!r} (built-in models: {names})")
    return path


def _build(config: ModelConfig, heads: dict) -> MLFF:
    base_heads = tuple(h for h in config.heads if h in (K.MAIN_HEAD, K.PRIOR_HEAD))
    model = build_model(config, heads=base_heads or (config.heads[0],))
    for name in heads:
        if name not in model.heads:
            new_head(model, name)
    return model


def _restore_foreign(config: dict, heads: dict, path: Path):
    """A foreign adapter rebuilt from its base model (offline), heads attached; weights follow."""
    if config.get("kind") == "mace":
        from .models.mace_io import restore_mace as restore
    else:
        from .models.sevennet_io import restore_sevennet as restore
    try:
        return restore(config, heads, where=str(path))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its {config.get('kind')} base model: {exc}") from None


def _load_weights(model, tensors: dict, path: Path) -> None:
    """Load the ``model.`` tensors strictly: a missing, unexpected or misshapen weight raises."""
    foreign = sorted(k for k in tensors if not k.startswith((K.STATE_PREFIX, K.STATS_PREFIX)))
    if foreign:
        raise CheckpointError(f"{path}: unexpected tensors {foreign[:5]} (neither weights nor statistics)")
    state = {k[len(K.STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(K.STATE_PREFIX)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when strict=False
        raise CheckpointError(f"{path}: weights do not match the architecture in its config ({exc})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match the architecture in its config "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )


def load_model(
    path_or_name: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> MLFF:
    """Load a checkpoint (file path or built-in name) onto ``device``, optionally casting ``dtype``.

    Loading is strict: missing or unexpected weights raise :class:`CheckpointError`; a newer
    format version warns. The model's training statistics are in ``model.training_stats``.

    Foreign models load by prefix: ``"sevennet:7net-0"``, ``"sevennet:7net-mf-0@PBE"`` or
    ``"sevennet:/path/to/checkpoint.pth"`` (needs the ``sevenn`` extra; see
    :mod:`ase_adapt.models.sevennet_io`).
    """
    if isinstance(path_or_name, str) and path_or_name.startswith(SEVENNET_PREFIX):
        from .models.sevennet_io import load_sevennet

        return load_sevennet(path_or_name[len(SEVENNET_PREFIX):], device=device, dtype=dtype)
    if isinstance(path_or_name, str) and path_or_name.startswith("mace:"):  # "mace:PATH[@HEAD]", trusted files only
        from .models.mace_io import load_mace

        return load_mace(path_or_name[len("mace:"):], device=device, dtype=dtype)
    path = _resolve(path_or_name)
    metadata, tensors = _read(path)
    if metadata.get(K.META_FORMAT) != K.FORMAT_NAME:
        raise CheckpointError(f"{path}: not an ase-adapt checkpoint (no '{K.META_FORMAT}: {K.FORMAT_NAME}' header)")
    try:
        version = int(metadata[K.META_VERSION])
        raw_config = json.loads(metadata[K.META_CONFIG])
        heads = json.loads(metadata[K.META_HEADS])
        stats = json.loads(metadata.get(K.META_STATS, "{}"))
        foreign = raw_config.get("kind") in FOREIGN_KINDS
        config = None if foreign else ModelConfig.from_dict(raw_config)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint header ({exc})") from None
    if version > K.FORMAT_VERSION:
        warnings.warn(
            f"{path} has format version {version}, newer than this ase-adapt ({K.FORMAT_VERSION}); "
            "upgrade ase-adapt if loading fails or results look wrong",
            stacklevel=2,
        )
    model = _restore_foreign(raw_config, heads, path) if foreign else _build(config, heads)
    _load_weights(model, tensors, path)
    try:
        for name, info in heads.items():
            model.heads[name].set_e0(info["e0"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed head E0s in the header ({exc})") from None
    for k, v in tensors.items():
        if k.startswith(K.STATS_PREFIX):
            stats[k[len(K.STATS_PREFIX):]] = v.numpy()
    model.training_stats = upgrade_stats(stats) or None  # older statistics in today's names
    if dtype is not None:
        model = model.to(as_dtype(dtype))
    return model.to(device)
