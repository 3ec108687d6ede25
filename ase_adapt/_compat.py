"""Compatibility with the e3nn that mace-torch pins (0.4.4), so that the two install side by side.

e3nn 0.4.x loads its Wigner constants with a bare ``torch.load`` when ``e3nn.o3`` is imported.
Since torch 2.6 that call defaults to ``weights_only=True``, and the file holds ``slice``
objects, which the safe loader refuses: ``from e3nn import o3`` then fails. Allowing ``slice``
(a plain builtin) in safe loads fixes it without turning safe loading off; ase-adapt's own loads
pass ``weights_only=True`` explicitly and are unaffected. Nothing happens with e3nn >= 0.5,
which no longer loads that file. Checked: the default model gives bit-identical energies and
forces on e3nn 0.4.4 and 0.6.0 (torch 2.13), and mace-torch 0.3.16 resolves next to it.
"""

from __future__ import annotations

from importlib import metadata


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def needs_slice_allowlist(e3nn_version: str) -> bool:
    """True for e3nn < 0.5, whose import needs ``slice`` in torch's safe-load allowlist."""
    return _version_tuple(e3nn_version) < (0, 5)


def allow_old_e3nn() -> bool:
    """Before e3nn is first imported: allow ``slice`` in safe loads if this e3nn needs it."""
    try:
        version = metadata.version("e3nn")
    except metadata.PackageNotFoundError:
        return False
    if not needs_slice_allowlist(version):
        return False
    import torch

    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is None:  # torch < 2.4 loads without the allowlist anyway
        return False
    add([slice])
    return True
