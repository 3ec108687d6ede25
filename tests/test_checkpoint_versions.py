"""Checkpoints written by earlier versions of ase-adapt keep loading, with the same predictions.

``tests/data/checkpoint_v1.safetensors`` was saved by the format-1 code (see
``checkpoint_v1.json``: how it was made, and its predictions then): heads stored under their
public names (``heads.prior:lj.``) and statistics of ``stats_version`` 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

import ase_adapt
from ase_adapt import MLFFCalculator
from ase_adapt.checkpoint import load_model
from ase_adapt.shift.stats import STATS_VERSION, TrainingStats

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def v1():
    return load_model(DATA / "checkpoint_v1.safetensors"), json.loads((DATA / "checkpoint_v1.json").read_text())


def test_format_1_checkpoint_predicts_as_when_saved(v1):
    model, record = v1
    assert model.head_names == list(record["heads"])
    for head, expected in record["heads"].items():
        atoms = molecule(record["molecule"])
        atoms.calc = MLFFCalculator(model, head=head)
        assert atoms.get_potential_energy() == pytest.approx(expected["energy"], abs=1e-5)
        np.testing.assert_allclose(atoms.get_forces(), expected["forces"], atol=1e-5)


def test_format_1_names_are_upgraded(v1, tmp_path):
    model, _ = v1
    assert model.config["heads"] == model.head_names == ["main", "prior", "prior:lj"]
    keys = list(model.state_dict())
    assert not any(":" in k or "-" in k for k in keys)
    assert any(k.startswith("heads.prior_lj.") for k in keys)
    stats = model.training_stats
    assert stats["stats_version"] == STATS_VERSION
    assert not {"force_norm_ref", "force_norm_prior", "force_norm_priors", "prior_loss"} & set(stats)
    view = TrainingStats.from_model(model)
    assert set(view.prior_force_norm_by_head) >= {"prior"} and view.prior_loss("prior") > 0
    # saved again, it is a format-2 file that round-trips
    model.save(tmp_path / "v2.safetensors")
    again = load_model(tmp_path / "v2.safetensors")
    assert again.head_names == model.head_names and again.training_stats.keys() == stats.keys()


def test_saved_head_keys_are_identifiers(tmp_path):
    from ase_adapt.models.build import new_head
    from safetensors import safe_open

    model = ase_adapt.build_model(elements=("H", "C"), channels=4, num_layers=1, l_max=1, radial_hidden=4,
                                  head_hidden=4, heads=("main",))
    new_head(model, "prior:gfn1-xtb")
    path = model.save(tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        assert json.loads(f.metadata()["config"])["heads"] == ["main", "prior:gfn1-xtb"]
    assert any(k.startswith("model.heads.prior_gfn1_xtb.") for k in keys)
    assert not any(":" in k or "-" in k for k in keys)


def test_head_names_that_share_a_key_are_refused(make_model):
    from ase_adapt.models.build import new_head

    model = make_model()
    new_head(model, "prior:gfn-ff")
    with pytest.raises(ValueError, match="clashes"):
        new_head(model, "prior:gfn_ff")
