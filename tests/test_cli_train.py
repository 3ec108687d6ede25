"""``ase-adapt train`` / ``finetune``: the documented flows, resume, and clear errors."""

from __future__ import annotations

import json

import pytest

import ase_adapt
from ase_adapt.cli.main import main
from ase_adapt.testing import toy_frames
from ase_adapt.train.data import write_frames

FAST = ["--arch", "model-tiny", "--epochs", "2", "--batch-size", "5", "--no-stats", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_frames(root / "train.xyz", toy_frames(12, seed=0))
    write_frames(root / "new.xyz", toy_frames(8, seed=1))
    return root


def test_train_then_resume_then_finetune(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data / "train.xyz"), "--out", str(out), *FAST]) == 0
    assert "best model" in capsys.readouterr().out
    model = ase_adapt.load_model(out / "best.safetensors")
    assert model.head_names == ["main", "prior"] and model.elements == (1, 6, 8)
    assert len(json.loads((out / "metrics.json").read_text())) == 2
    # a second run into the same directory must not silently start over ...
    assert main(["train", "--data", str(data / "train.xyz"), "--out", str(out), *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    # ... and --resume of a finished run has nothing left to do
    assert main(["train", "--data", str(data / "train.xyz"), "--out", str(out), "--resume", *FAST]) == 0
    ft = tmp_path / "ft"
    args = ["finetune", "--model", str(out / "best.safetensors"), "--data", str(data / "new.xyz"),
            "--out", str(ft), "--strategy", "multihead", "--replay", str(data / "train.xyz"),
            "--epochs", "2", "--no-stats", "--quiet"]
    assert main(args) == 0
    assert ase_adapt.load_model(ft / "best.safetensors").head_names == ["main", "prior", "replay"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft", "run"]


def test_train_reports_missing_labels_with_frame_and_key(tmp_path, capsys):
    frames = toy_frames(4, seed=2, with_prior=False)
    write_frames(tmp_path / "d.xyz", frames)
    assert main(["train", "--data", str(tmp_path / "d.xyz"), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "prior_energy" in err and "frame 0" in err


def test_train_mode_main_and_yaml_config(data, tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("mode: main\noptim: {epochs: 1, lr: 0.002}\n")
    out = tmp_path / "o"
    assert main(["train", "--data", str(data / "train.xyz"), "--out", str(out), "--config", str(cfg),
                 "--arch", "model-tiny", "--no-stats", "--quiet"]) == 0
    assert ase_adapt.load_model(out / "best.safetensors").head_names == ["main"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: main\nepochz: 3\n")
    assert main(["train", "--data", str(data / "train.xyz"), "--out", str(out), "--config", str(bad)]) == 2


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_help_is_complete(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for word in ("--data", "--out", "--config", "--resume", "--epochs", "--lr", "examples:"):
        assert word in text
