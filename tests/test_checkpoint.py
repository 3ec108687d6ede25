"""Checkpoints: no pickle execution, strict loading, atomic writes, exact round trips (14, 16, 17, 21)."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ase_adapt
import ase_adapt.checkpoint as ckpt
import ase_adapt.models.serialize as serialize
from ase_adapt import CheckpointError, MLFFCalculator, load_model, save_model
from ase_adapt.models import new_head

SUFFIXES = [".safetensors", ".pt"]


def _systems() -> list[Atoms]:
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=0)
    cell = bulk("C", "diamond", a=3.57) * (1, 1, 2)
    cell.numbers[0] = 7
    cell.rattle(0.05, seed=1)
    return [mol, cell]


def _predict(model, head: str = "main") -> list[dict[str, np.ndarray]]:
    out = []
    for atoms in _systems():
        calc = MLFFCalculator(model, head=head)
        res = {"energy": np.array(calc.get_potential_energy(atoms)), "forces": calc.get_forces(atoms)}
        if atoms.pbc.all():
            res["stress"] = calc.get_stress(atoms)
        out.append(res)
    return out


def _assert_same_predictions(a, b, atol: float) -> None:
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra:
            np.testing.assert_allclose(ra[key], rb[key], rtol=0, atol=atol, err_msg=key)


def _read_raw(path: pathlib.Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The (metadata, tensors) of a checkpoint, read directly with safetensors / torch."""
    if path.suffix == ".pt":
        blob = torch.load(path, weights_only=True)
        return dict(blob["metadata"]), dict(blob["tensors"])
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    return metadata, load_file(str(path))


def _write_raw(path: pathlib.Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if path.suffix == ".pt":
        torch.save({"metadata": metadata, "tensors": tensors}, path)
    else:
        save_file(tensors, str(path), metadata=metadata)


@pytest.fixture
def saved(model64, tmp_path, request):
    """``(path, model)``: the float64 fixture model saved in the parametrised format."""
    path = tmp_path / f"model{getattr(request, 'param', '.safetensors')}"
    save_model(model64, path)
    return path, model64


# ---------------------------------------------------------------- checklist 17: round trips
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_reproduces_energy_forces_stress(model64, tmp_path, suffix):
    path = save_model(model64, tmp_path / f"m{suffix}")
    assert path == tmp_path / f"m{suffix}" and path.is_file()
    loaded = load_model(path)
    assert loaded.dtype == torch.float64
    assert loaded.elements == model64.elements and loaded.cutoff == model64.cutoff
    assert loaded.head_names == model64.head_names
    assert loaded.heads["main"].e0 == model64.heads["main"].e0
    for k, v in model64.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    _assert_same_predictions(_predict(loaded), _predict(model64), atol=1e-8)
    _assert_same_predictions(_predict(loaded, "prior"), _predict(model64, "prior"), atol=1e-8)


def test_model_save_method_and_str_path(model64, tmp_path):
    model64.save(str(tmp_path / "sub" / "dir" / "m.safetensors"))  # parent dirs are created
    loaded = load_model(str(tmp_path / "sub" / "dir" / "m.safetensors"))
    _assert_same_predictions(_predict(loaded), _predict(model64), atol=1e-8)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_training_stats_round_trip(model64, tmp_path, suffix):
    model64.training_stats = {"x": 1.0, "n_frames": 12, "label": "aspirin", "spectrum": np.arange(5.0),
                              "force_norm": np.array([[0.5, 0.25]], dtype=np.float32)}
    loaded = load_model(save_model(model64, tmp_path / f"m{suffix}"))
    stats = loaded.training_stats
    assert set(stats) == {"x", "n_frames", "label", "spectrum", "force_norm"}
    assert stats["x"] == 1.0 and stats["n_frames"] == 12 and stats["label"] == "aspirin"
    assert isinstance(stats["spectrum"], np.ndarray) and stats["spectrum"].dtype == np.float64
    np.testing.assert_array_equal(stats["spectrum"], np.arange(5.0))
    assert stats["force_norm"].dtype == np.float32 and stats["force_norm"].shape == (1, 2)
    np.testing.assert_array_equal(stats["force_norm"], [[0.5, 0.25]])


def test_no_training_stats_round_trip(model64, tmp_path):
    model64.training_stats = None
    loaded = load_model(save_model(model64, tmp_path / "m.safetensors"))
    assert not loaded.training_stats


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_extra_heads_round_trip_with_e0(model64, tmp_path, suffix):
    head = new_head(model64, "prior:gfn-ff")
    with torch.no_grad():
        head.scale.fill_(5.0)
    head.set_e0([-10.1, -20.2, -30.3, -40.4])
    new_head(model64, "replay")
    model64.heads["replay"].set_e0([0.5, 0.25, 0.125, 1.0 / 3.0])
    loaded = load_model(save_model(model64, tmp_path / f"m{suffix}"))
    assert set(loaded.head_names) == {"main", "prior", "prior:gfn-ff", "replay"}
    for name in model64.head_names:
        assert loaded.heads[name].e0 == model64.heads[name].e0, name
        _assert_same_predictions(_predict(loaded, name), _predict(model64, name), atol=1e-8)
    # and a second round trip keeps them
    again = load_model(save_model(loaded, tmp_path / f"again{suffix}"))
    assert set(again.head_names) == set(loaded.head_names)
    assert again.heads["prior:gfn-ff"].e0 == [-10.1, -20.2, -30.3, -40.4]


# ---------------------------------------------------------------- checklist 14: dtype and device
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_float32_checkpoint_loads_as_float64_and_back(model32, tmp_path, suffix):
    model32.heads["main"].set_e0([-13.6123456789, -1037.123456789, -1485.1, -2040.987654321])
    path = save_model(model32, tmp_path / f"m32{suffix}")
    as32 = load_model(path)
    as64 = load_model(path, dtype="float64")
    as64b = load_model(path, dtype=torch.float64)
    assert as32.dtype == torch.float32
    assert as64.dtype == as64b.dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in [*as64.parameters(), *as64.buffers()] if t.is_floating_point())
    for k, v in model32.state_dict().items():
        assert torch.equal(as64.state_dict()[k], v.to(as64.state_dict()[k].dtype)), k
    # E0s are float64 numbers whatever the weights' dtype
    assert as32.heads["main"].e0 == as64.heads["main"].e0 == model32.heads["main"].e0
    iso = Atoms("O", positions=[[0.0, 0.0, 0.0]])
    assert MLFFCalculator(as32).get_potential_energy(iso) == -2040.987654321
    # float32 and float64 evaluations of the same weights agree to float32 precision
    _assert_same_predictions(_predict(as64), _predict(as32), atol=2e-4)

    path64 = save_model(as64, tmp_path / f"m64{suffix}")
    back = load_model(path64, dtype="float32")
    assert back.dtype == torch.float32
    for k, v in as32.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_cast_model_round_trips_in_its_current_dtype(model32, tmp_path):
    """A float32-built model cast to float64 (e.g. by the calculator) saves and reloads as float64."""
    calc = MLFFCalculator(model32, dtype="float64")
    assert model32.dtype == torch.float32 and calc.model.dtype == torch.float64  # the user's model is not cast
    expected = _predict(calc.model)
    loaded = load_model(save_model(calc.model, tmp_path / "cast.safetensors"))
    assert loaded.dtype == torch.float64
    _assert_same_predictions(_predict(loaded), expected, atol=1e-8)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_device_mapping(saved, device):
    path, model = saved
    loaded = load_model(path, device=device)
    assert loaded.device == torch.device("cpu")
    assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()])
    calc = MLFFCalculator(loaded, device=device)
    atoms = _systems()[1]
    for value in (calc.get_forces(atoms), calc.get_stress(atoms), calc.get_potential_energies(atoms)):
        assert isinstance(value, np.ndarray) and value.dtype == np.float64


# ---------------------------------------------------------------- checklist 16/21: safety
class _TouchOnUnpickle:
    """Unpickling this object creates ``path``: a stand-in for arbitrary code execution."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def _crafted(model, path: pathlib.Path, marker: pathlib.Path, legacy: bool) -> None:
    metadata, tensors = ckpt.checkpoint_payload(model)
    blob = {"metadata": metadata, "tensors": tensors, "payload": _TouchOnUnpickle(marker)}
    torch.save(blob, path, _use_new_zipfile_serialization=not legacy)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".pth"])
def test_pickle_payload_is_never_executed(model32, tmp_path, legacy, suffix):
    # the crafted file is really dangerous: an unsafe load writes the marker
    probe_marker = tmp_path / "probe_marker"
    _crafted(model32, tmp_path / "probe.pt", probe_marker, legacy)
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe_marker.exists()

    marker = tmp_path / "MARKER"
    path = tmp_path / f"evil{suffix}"
    _crafted(model32, path, marker, legacy)
    with pytest.raises(CheckpointError):
        load_model(path)
    with pytest.raises(CheckpointError):
        MLFFCalculator(path)
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["probe.pt", "probe_marker", path.name])


def _add_key(meta, tensors):
    tensors["model.interactions.0.extra_weight"] = torch.zeros(3, dtype=torch.float64)


def _drop_key(meta, tensors):
    del tensors[sorted(k for k in tensors if k.startswith("model.interactions.1."))[0]]


def _drop_head_key(meta, tensors):
    del tensors[next(k for k in tensors if k.startswith("model.heads.prior."))]


def _wrong_shape(meta, tensors):
    key = next(k for k in tensors if k.startswith("model.embedding."))
    tensors[key] = torch.zeros(tensors[key].numel() + 1, dtype=tensors[key].dtype)


def _other_architecture(meta, tensors):
    config = json.loads(meta["config"])
    config["channels"] = 16
    meta["config"] = json.dumps(config)


def _unknown_tensor(meta, tensors):
    tensors["optimizer.momentum"] = torch.zeros(2)


@pytest.mark.parametrize("saved", SUFFIXES, indirect=True)
def test_rewritten_unspoiled_file_loads(saved):
    """Control for the spoiled-file tests below: reading and rewriting alone breaks nothing."""
    path, model = saved
    _write_raw(path, *_read_raw(path))
    loaded = load_model(path)
    assert loaded.heads["main"].e0 == model.heads["main"].e0
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


STRICT_VIOLATIONS = [_add_key, _drop_key, _drop_head_key, _wrong_shape, _other_architecture, _unknown_tensor]


@pytest.mark.parametrize("saved", SUFFIXES, indirect=True)
@pytest.mark.parametrize("spoil", STRICT_VIOLATIONS, ids=lambda f: f.__name__.strip("_"))
def test_loading_is_strict(saved, spoil):
    path, _ = saved
    meta, tensors = _read_raw(path)
    spoil(meta, tensors)
    _write_raw(path, meta, tensors)
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_model(path)


def _bad_json(meta):
    meta["config"] = "{not json"


def _unknown_config_key(meta):
    config = json.loads(meta["config"])
    config["hidden_layers_of_doom"] = 3
    meta["config"] = json.dumps(config)


def _no_heads(meta):
    del meta["heads"]


def _wrong_e0_length(meta):
    heads = json.loads(meta["heads"])
    heads["main"]["e0"] = heads["main"]["e0"][:-1]
    meta["heads"] = json.dumps(heads)


def _bad_version(meta):
    meta["format_version"] = "one"


@pytest.mark.parametrize("saved", SUFFIXES, indirect=True)
@pytest.mark.parametrize("spoil", [_bad_json, _unknown_config_key, _no_heads, _wrong_e0_length, _bad_version],
                         ids=lambda f: f.__name__.strip("_"))
def test_malformed_header(saved, spoil):
    path, _ = saved
    meta, tensors = _read_raw(path)
    spoil(meta)
    _write_raw(path, meta, tensors)
    with pytest.raises(CheckpointError):
        load_model(path)


@pytest.mark.parametrize("saved", SUFFIXES, indirect=True)
def test_newer_format_version_warns(saved):
    path, model = saved
    meta, tensors = _read_raw(path)
    meta["format_version"] = str(int(meta["format_version"]) + 1)
    _write_raw(path, meta, tensors)
    with pytest.warns(UserWarning, match="format version"):
        loaded = load_model(path)
    _assert_same_predictions(_predict(loaded), _predict(model), atol=1e-8)


@pytest.mark.parametrize("saved", SUFFIXES, indirect=True)
@pytest.mark.parametrize("damage", ["half", "header-only", "empty", "random", "text"])
def test_corrupt_files_raise_checkpoint_error(saved, damage):
    path, _ = saved
    data = path.read_bytes()
    new = {
        "half": data[: len(data) // 2],
        "header-only": data[:64],
        "empty": b"",
        "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text": b"Not a checkpoint at all\n" * 10,
    }[damage]
    path.write_bytes(new)
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_model(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_foreign_file_is_not_an_ase_adapt_checkpoint(model32, tmp_path, suffix):
    path = tmp_path / f"plain{suffix}"
    state = {k: v.contiguous() for k, v in model32.state_dict().items()}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    with pytest.raises(CheckpointError, match="not an ase-adapt checkpoint"):
        load_model(path)


def test_other_format_name_is_rejected(saved):
    path, _ = saved
    meta, tensors = _read_raw(path)
    meta["format"] = "some-other-tool"
    _write_raw(path, meta, tensors)
    with pytest.raises(CheckpointError, match="not an ase-adapt checkpoint"):
        load_model(path)


def test_missing_path_is_clear(tmp_path):
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(missing)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        MLFFCalculator(str(missing))
    with pytest.raises(CheckpointError):
        load_model(tmp_path)  # a directory is not a checkpoint
    with pytest.raises(CheckpointError):
        load_model("not-a-builtin-model-name")


# ---------------------------------------------------------------- checklist 21: atomic writes
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_save_keeps_previous_file_and_leaves_no_temp(model32, model64, tmp_path, monkeypatch, suffix, exc):
    path = save_model(model64, tmp_path / f"m{suffix}")
    before = path.read_bytes()
    listing = sorted(os.listdir(tmp_path))
    written, final = [], [path]

    def failing_write(obj, target, *args, **kwargs):
        target = pathlib.Path(target)
        assert target.parent == final[0].parent and target != final[0]  # writes go to a temp file
        target.write_bytes(b"half a checkpoint")
        written.append(target)
        raise exc

    def save_failing(target):
        monkeypatch.setattr(*((serialize.torch, "save") if suffix == ".pt" else (serialize, "save_file")), failing_write)
        with pytest.raises(type(exc)):
            save_model(model32, target)
        monkeypatch.undo()

    save_failing(path)
    assert written, "the patched writer was not used"
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == listing

    # and a failed first save leaves nothing at all
    fresh = tmp_path / "fresh" / f"new{suffix}"
    fresh.parent.mkdir()
    final[0] = fresh
    save_failing(fresh)
    assert list(fresh.parent.iterdir()) == []


def test_save_overwrites_atomically(model32, model64, tmp_path):
    path = save_model(model64, tmp_path / "m.safetensors")
    save_model(model32, path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert load_model(path).dtype == torch.float32


def test_builtin_registry_is_used(model64, tmp_path, monkeypatch):
    path = save_model(model64, tmp_path / "m.safetensors")
    monkeypatch.setitem(ckpt.BUILTIN_MODELS, "tiny-test", path)
    loaded = load_model("tiny-test")
    _assert_same_predictions(_predict(loaded), _predict(model64), atol=1e-8)
    assert isinstance(MLFFCalculator("tiny-test").model, ase_adapt.MLFF)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoints_follow_the_umask_like_every_other_output(model64, tmp_path, suffix):
    """mkstemp's 0600 survived for checkpoints (safetensors recreates the file it writes)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_model(model64, tmp_path / f"m{suffix}")
        json_path = ase_adapt._io.write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 == stat.S_IMODE(json_path.stat().st_mode)
