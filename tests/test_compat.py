"""e3nn 0.4.x (mace-torch's pin) imports on torch >= 2.6 once ``slice`` is allowed in safe loads;
newer e3nn needs nothing (ase_adapt/_compat.py)."""

import pytest
import torch

from ase_adapt._compat import allow_old_e3nn, needs_slice_allowlist


@pytest.mark.parametrize("version, needed", [("0.4.4", True), ("0.4.0", True), ("0.5.1", False), ("0.6.0", False),
                                             ("0.5.0rc1", False), ("1.0", False)])
def test_only_old_e3nn_needs_the_allowlist(version, needed):
    assert needs_slice_allowlist(version) is needed


def test_the_allowlist_is_applied_for_old_e3nn(monkeypatch):
    from importlib import metadata

    added = []
    monkeypatch.setattr(metadata, "version", lambda name: "0.4.4")
    monkeypatch.setattr(torch.serialization, "add_safe_globals", lambda items: added.extend(items))
    assert allow_old_e3nn() is True and added == [slice]
    monkeypatch.setattr(metadata, "version", lambda name: "0.6.0")
    assert allow_old_e3nn() is False and added == [slice]
