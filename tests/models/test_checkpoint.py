"""Checkpoint files: round trip, and refusal of everything that is not our safetensors model."""
from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_focusq.models as models
from napari_focusq.config import Optics
from napari_focusq.models import ModelFileError, load_model, new_model
from napari_focusq.models.checkpoint import load_checkpoint, read_tensors, save_checkpoint

CALIB = {"x": [0.0, 1.0, 4.0, 8.0], "y": [0.1, 0.8, 4.2, 8.5]}


class _Evil:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def tiles(slide_plane) -> np.ndarray:
    return np.stack([np.array(slide_plane[y:y + 320, x:x + 320]) for y, x in ((2000, 650), (2300, 1100), (1500, 800))])


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, models.FocusModel]:
    """A saved model (read-only for the tests: they write their variants elsewhere)."""
    torch.manual_seed(7)
    m = new_model("fast", name="roundtrip", device=torch.device("cpu"))
    path = m.save(tmp_path_factory.mktemp("saved") / "model.safetensors", optics=Optics.brightfield().to_dict(), calibration=CALIB,
                  trained=True)
    return path, m


def _refused(path, match: str) -> ModelFileError:
    """load_model(path) must raise a ModelFileError naming ``path`` with a reason matching ``match``."""
    with pytest.raises(ModelFileError, match=match) as e:
        load_model(path)
    assert str(path) in str(e.value)
    assert e.value.path == Path(path)
    assert isinstance(e.value, ValueError)
    return e.value


# ------------------------------------------------------------------- round trip
def test_round_trip(saved, tiles):
    path, m = saved
    assert path.exists() and path.with_suffix(".json").exists()
    loaded = load_model(path)
    assert loaded is not m
    m.meta["calibration"] = CALIB
    np.testing.assert_array_equal(loaded.predict(tiles), m.predict(tiles))
    for key in ("architecture", "tile_px", "working_pixel_um", "name", "modality", "arch_config", "version"):
        assert loaded.meta[key] == m.meta[key], key
    assert loaded.architecture == "fast" and loaded.tile_px == 320 and loaded.working_pixel_um == 0.5
    assert loaded.meta["optics"] == Optics.brightfield().to_dict()
    assert Optics.from_dict(loaded.meta["optics"]) == Optics.brightfield()
    assert loaded.meta["calibration"] == CALIB
    assert loaded.trained
    # The JSON beside the weights holds the same metadata, for people and tools.
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["sha256"] == loaded.meta["sha256"] and side["calibration"] == CALIB
    # No stray temporary files from the atomic writes.
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.safetensors"]


def test_suffix_is_forced_and_loading_never_uses_torch_load(tmp_path, tiles, monkeypatch):
    torch.manual_seed(3)
    m = new_model("fast", device=torch.device("cpu"))
    path = m.save(tmp_path / "weights.bin")
    assert path == tmp_path / "weights.safetensors"

    def forbidden(*a, **k):
        raise AssertionError("a model file went through pickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    np.testing.assert_array_equal(load_model(path).predict(tiles), m.predict(tiles))


def test_load_model_caches_by_path_and_mtime(saved):
    path, _ = saved
    a, b = load_model(path), load_model(str(path))
    assert a is b
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load_model(path) is not a


def test_save_failure_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    m = new_model("fast", device=torch.device("cpu"))
    with pytest.raises(OSError) as e:
        m.save(tmp_path / "m.safetensors")
    assert e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- refusal
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("name", ["evil.safetensors", "evil.pt"])
def test_refuses_pickle_without_running_it(tmp_path, protocol, name):
    marker = tmp_path / "code-ran"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=protocol))
    # Sanity: the payload really runs code when unpickled (in a separate file).
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe), protocol=protocol))
    assert probe.exists()
    err = _refused(path, r"pickle|not a safetensors file")
    for fn in (load_checkpoint, read_tensors):
        with pytest.raises(ModelFileError):
            fn(path)
    assert not marker.exists(), f"unpickling ran code ({err})"


def test_refuses_torch_save_zip(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.safetensors"
    torch.save({"state": new_model("fast").module.state_dict(), "evil": _Evil(marker)}, path)
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    _refused(path, "pickle/torch.save")
    assert not marker.exists()


def test_refuses_truncated(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    _refused(bad, r"corrupt safetensors|bad header length|truncated")
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(data[:5])
    _refused(tiny, "empty or truncated")


def test_refuses_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _refused(path, "not a safetensors file|corrupt")
    # Random bytes with a plausible header length: the JSON header does not parse.
    path2 = tmp_path / "noise2.safetensors"
    path2.write_bytes((100).to_bytes(8, "little") + np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes())
    _refused(path2, "corrupt safetensors")


def test_refuses_empty(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _refused(path, "empty")


def test_refuses_safetensors_without_our_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file(dict(new_model("fast").module.state_dict()), str(path))
    _refused(path, "without napari-focusq metadata")
    path2 = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path2), metadata={"focusq": "{not json"})
    _refused(path2, "not valid JSON")
    path3 = tmp_path / "format.safetensors"
    save_file({"w": torch.zeros(3)}, str(path3), metadata={"focusq": json.dumps({"format": "someone-else/9"})})
    _refused(path3, "unknown model format")


def test_refuses_tampered_weights(saved, tmp_path):
    path, _ = saved
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    start = 8 + n  # tensor data region
    assert len(data) - start > 1000
    k = start + (len(data) - start) // 2
    data[k] ^= 0x01
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    _refused(bad, "checksum")


def test_refuses_fast_weights_labelled_inception(saved, tmp_path):
    path, _ = saved
    tensors, meta = load_checkpoint(path)
    bad = save_checkpoint(tmp_path / "liar.safetensors", tensors,
                          {**meta, "architecture": "inception", "arch_config": None})
    _refused(bad, "do not fit architecture 'inception'")


def test_refuses_inception_weights_labelled_fast(saved, tmp_path):
    path, _ = saved
    _, meta = load_checkpoint(path)
    # Keys of torchvision's InceptionV3 + our regressor, without building the 24M-parameter net.
    tensors = {"backbone.Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3),
               "regressor.0.weight": torch.zeros(1024, 2048), "mean": torch.zeros(1, 3, 1, 1)}
    bad = save_checkpoint(tmp_path / "liar2.safetensors", tensors, meta)
    _refused(bad, "do not fit architecture 'fast'")


def test_refuses_unknown_architecture(saved, tmp_path):
    path, _ = saved
    tensors, meta = load_checkpoint(path)
    bad = save_checkpoint(tmp_path / "unknown.safetensors", tensors, {**meta, "architecture": "resnet"})
    _refused(bad, "unknown architecture 'resnet'")


def test_refuses_other_tile_size(saved, tmp_path):
    path, _ = saved
    tensors, meta = load_checkpoint(path)
    bad = save_checkpoint(tmp_path / "t256.safetensors", tensors, {**meta, "tile_px": 256})
    _refused(bad, "made for 256 px tiles")
    bad2 = save_checkpoint(tmp_path / "px025.safetensors", tensors, {**meta, "working_pixel_um": 0.25})
    _refused(bad2, "0.25 µm/px")


def test_refuses_directory_and_missing(tmp_path):
    folder = tmp_path / "a_folder.safetensors"
    folder.mkdir()
    _refused(folder, "folder")
    _refused(tmp_path / "nope.safetensors", "no such model file")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_shipped_names_without_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "weights_dir", lambda: tmp_path)
    monkeypatch.setenv("FOCUSQ_DATA", str(tmp_path / "data"))  # no data/models/ either
    assert models.available_models() == []
    for name in ("inception", "fast", "default"):
        with pytest.raises(ModelFileError, match="no shipped weights") as e:
            load_model(name)
        assert "focusq train" in str(e.value)
    assert str(tmp_path / "inception.safetensors") in str(_shipped_error("inception"))


def _shipped_error(name):
    try:
        load_model(name)
    except ModelFileError as e:
        return e
    raise AssertionError("no error")

