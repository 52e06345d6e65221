"""Training on tiny real data: both presets, determinism, cancel, resume, failures."""
from __future__ import annotations

import errno
import json
import math
from dataclasses import asdict

import numpy as np
import pytest

from napari_focusq.models import load_model
from napari_focusq.training.config import TrainConfig, TrainingError
from napari_focusq.training.fit import iter_fit


def _cfg(images, out, **kw) -> TrainConfig:
    paths, pixel_sizes = images
    base = dict(images=paths, out=str(out), epochs=2, samples_per_image=8, val_samples_per_image=8,
                pixel_sizes=pixel_sizes, seed=0)
    return TrainConfig(**{**base, **kw})


def _drain(gen):
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return stop.value, events


_DATA_CACHE: dict = {}


def _cache_datasets(mp: pytest.MonkeyPatch) -> None:
    """Reuse simulated datasets across runs: the first run builds them for real; later tests
    exercise cancel, resume and failures, not data generation."""
    import napari_focusq.training.fit as training

    real = training.iter_dataset

    def iter_dataset(paths, per_image, cfg, seed, stage, **kw):
        # Every config field a dataset could depend on is in the key (jpeg, z_max_um,
        # photons, arch, ...): only those that act after the data is built are left out, so
        # a new field is cached apart by default rather than served a stale dataset.
        after_data = {"out", "epochs", "lr", "batch_size", "resume", "name", "workers", "head_split"}
        fields = tuple(sorted((k, repr(v)) for k, v in asdict(cfg).items() if k not in after_data))
        key = (tuple(paths), per_image, seed, stage, fields, tuple(kw.items()))
        if key not in _DATA_CACHE:
            _DATA_CACHE[key] = yield from real(paths, per_image, cfg, seed, stage, **kw)
        else:
            yield training.Progress(stage, len(paths), len(paths), "cached")
        return _DATA_CACHE[key]

    mp.setattr(training, "iter_dataset", iter_dataset)


@pytest.fixture
def cached_data(monkeypatch):
    _cache_datasets(monkeypatch)


@pytest.fixture(scope="module")
def probe_tiles(slide_plane) -> np.ndarray:
    """Real tiles from parts of the slide the training crops do not cover."""
    return np.stack([np.array(slide_plane[y:y + 320, x:x + 320]) for y, x in ((2500, 300), (1000, 900))])


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, train_images):
    out = tmp_path_factory.mktemp("fast_run") / "tiny.safetensors"
    with pytest.MonkeyPatch.context() as mp:
        _cache_datasets(mp)  # builds for real, and keeps the datasets for later tests
        path, events = _drain(iter_fit(_cfg(train_images, out, name="tiny")))
    return path, events


def test_fast_preset_writes_a_loadable_checkpoint(fast_run, probe_tiles):
    path, events = fast_run
    assert path.exists() and path.suffix == ".safetensors"
    side = path.with_suffix(".json")
    assert side.exists()
    # Nothing else in the folder: no temporary files left by the atomic writes.
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.json", "tiny.safetensors"]
    stages = {e.stage for e in events}
    assert {"data", "features", "train", "save"} <= stages
    train = [e for e in events if e.stage == "train"]
    assert [e.done for e in train] == [1, 2] and all(e.total == 2 for e in train)
    for e in train:
        assert math.isfinite(e.data["loss"]) and e.data["loss"] > 0
        assert math.isfinite(e.data["val_mae"])
        assert len(e.data["val_pred"]) == len(e.data["val_true"]) == 8
    assert events[-1].stage == "save" and events[-1].done == 1

    model = load_model(path)
    assert model.trained and model.architecture == "fast" and model.name == "tiny"
    meta = model.meta
    t = meta["training"]
    assert t["epochs_done"] == 2 and 1 <= t["best_epoch"] <= 2
    assert t["train_tiles"] == 16 and t["val_tiles"] == 8
    assert len(t["train_images"]) == 2 and len(t["val_images"]) == 1
    assert not set(t["train_images"]) & set(t["val_images"])  # split by source image
    assert len(meta["calibration"]["x"]) >= 2
    # One validation image: no cross-fitted calibration figure (it needs two), and the
    # in-sample figures say so.
    assert set(meta["metrics"]) == {"validation_raw", "validation_calibrated", "in_sample"}
    assert meta["optics"]["na"] == 0.75
    assert json.loads(side.read_text())["sha256"] == meta["sha256"]
    z = model.predict(probe_tiles)
    assert z.shape == (2,) and np.all(np.isfinite(z)) and np.all(z >= 0)


def test_same_seed_same_model(fast_run, tmp_path, train_images, probe_tiles):
    path, _ = fast_run
    again, _ = _drain(iter_fit(_cfg(train_images, tmp_path / "again.safetensors", name="tiny")))
    a, b = load_model(path), load_model(again)
    assert a.meta["sha256"] == b.meta["sha256"]
    assert a.meta["calibration"] == b.meta["calibration"]
    np.testing.assert_array_equal(a.predict(probe_tiles), b.predict(probe_tiles))


def test_cancel_leaves_nothing(tmp_path, train_images, cached_data):
    out_dir = tmp_path / "cancelled"
    gen = iter_fit(_cfg(train_images, out_dir / "m.safetensors", epochs=50))
    for ev in gen:
        if ev.stage == "train":  # the model exists in memory: cancel now
            break
    gen.close()
    assert out_dir.is_dir()  # made at the start of the run
    assert list(out_dir.iterdir()) == []  # no checkpoint, no JSON, no temporary file


def test_cancel_early(tmp_path, train_images):
    gen = iter_fit(_cfg(train_images, tmp_path / "m.safetensors"))
    first = [next(gen) for _ in range(2)]
    assert first[0].stage == "data"
    gen.close()
    assert list(tmp_path.iterdir()) == []


def test_too_few_images(tmp_path, train_images):
    paths, px = train_images
    with pytest.raises(TrainingError, match="at least two source images"):
        next(iter_fit(_cfg((paths[:1], px), tmp_path / "m.safetensors")))
    assert list(tmp_path.iterdir()) == []


def test_bad_config():
    with pytest.raises(TrainingError, match="preset"):
        TrainConfig(preset="resnet")
    with pytest.raises(TrainingError, match="positive"):
        TrainConfig(epochs=0)
    with pytest.raises(TrainingError, match="z_max_um"):
        TrainConfig(z_max_um=-1)
    assert TrainConfig(preset="inception").lr == 1e-5  # the paper's default


def test_fluorescence_exposure_range_and_noise_free_share():
    """Photon noise follows cfg.photons (relative noise ~ 1/sqrt(photons)); a noise_free share
    of tiles passes untouched; nonsense ranges are refused."""
    from napari_focusq.training.augment import _degrade

    tile = np.full((64, 64), 5.0, np.float32)
    tile[::2] = 10.0
    rel = lambda cfg: float(np.std(_degrade(tile, np.random.default_rng(0), cfg)[1::2]) / 5.0)
    dim = TrainConfig(modality="fluorescence", photons=(20.0, 20.0))
    bright = TrainConfig(modality="fluorescence", photons=(1e6, 1e6))
    assert rel(dim) == pytest.approx((20 / 2) ** -0.5, rel=0.2)  # the bright end is 10, these pixels 5
    assert rel(bright) < 0.01 * rel(dim)
    clean = TrainConfig(modality="fluorescence", noise_free=1.0)
    out = _degrade(tile, np.random.default_rng(0), clean)
    assert out.dtype == np.float32 and np.array_equal(out, tile)
    for bad in (dict(photons=(0.0, 10.0)), dict(photons=(100.0, 10.0)), dict(noise_free=1.5)):
        with pytest.raises(TrainingError, match="photons"):
            TrainConfig(modality="fluorescence", **bad)


def test_unknown_pixel_size(tmp_path, train_images):
    paths, _ = train_images
    with pytest.raises(TrainingError, match="pixel size unknown") as e:
        _drain(iter_fit(_cfg((paths, {}), tmp_path / "m.safetensors")))
    assert "crop" in str(e.value)


def test_given_pixel_size_overrides_the_file(tmp_path):
    import tifffile

    from napari_focusq.training.data import load_training_image

    img = np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)
    path = tmp_path / "tagged.tif"
    tifffile.imwrite(path, img, photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    assert load_training_image(path, "brightfield").shape[:2] == (400, 400)  # the file's 0.25 µm/px
    given = load_training_image(path, "brightfield", {"tagged.tif": 0.5})
    assert given.shape[:2] == (800, 800)


def test_zoom_in_factors():
    from napari_focusq.training.data import zoom_in_factors

    assert zoom_in_factors(3.0) == (3.0,)
    assert zoom_in_factors(0.0) == () and zoom_in_factors(1.1) == ()


def test_magnified_min_z_grows_with_what_magnifying_blurs():
    from napari_focusq.config import Optics
    from napari_focusq.training.data import magnified_min_z

    o = Optics.brightfield()
    assert magnified_min_z(1.0, o, 0.227) == 0
    # A fine scan can be magnified a little for free; a 0.5 µm scan cannot.
    assert magnified_min_z(1.3, o, 0.227) == 0 and magnified_min_z(1.3, o, 0.5) > 0.5
    z = [magnified_min_z(m, o, 0.227) for m in (1.48, 2.2)]
    assert 0.3 < z[0] < 0.6 and 1.2 < z[1] < 1.6
    assert 1.8 < magnified_min_z(2.0, o, 0.5) < 2.2
    # A higher NA resolves finer, so the same magnification costs less.
    assert magnified_min_z(2.0, Optics(na=0.9), 0.5) < magnified_min_z(2.0, o, 0.5)


def test_zoom_in_samples_magnified_copies(tmp_path):
    import tifffile

    from napari_focusq.config import Optics
    from napari_focusq.progress import drive
    from napari_focusq.training.data import iter_dataset, load_training_planes, magnified_min_z

    rng = np.random.default_rng(0)
    img = (rng.random((800, 800, 3)) * 120 + 60).astype(np.uint8)
    path = tmp_path / "fine.tif"
    tifffile.imwrite(path, img, photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    planes = load_training_planes(path, "brightfield", zoom_in=2.0, with_scales=True)
    assert [(f, px) for f, px, _ in planes] == [(1.0, 0.25), (2.0, 0.25)]
    # 0.25 µm/px at 1x and 2x magnification, seen at 0.5 µm/px.
    assert [p.shape[0] for _, _, p in planes] == [400, 800]
    cfg = TrainConfig(images=[str(path)], zoom_in=2.0, min_tissue=0.0)
    X, Z, S = drive(iter_dataset([str(path)], 4, cfg, 0, "data"))
    assert len(X) == 8 and set(S) == {0}  # 4 native tiles, 4 magnified
    # The magnified copy only at a defocus that swamps what magnifying blurs.
    assert (Z[4:] >= magnified_min_z(2.0, Optics.brightfield(), 0.25) - 0.025).all() and Z[4:].min() > 0.5
    X, Z, S = drive(iter_dataset([str(path)], 4, cfg, 0, "validation data", magnify=False))
    assert len(X) == 4


def test_resume_adds_epochs(fast_run, tmp_path, train_images, cached_data):
    path, _ = fast_run
    out, events = _drain(iter_fit(_cfg(train_images, tmp_path / "more.safetensors", epochs=1, resume=str(path),
                                       seed=1)))
    meta = load_model(out).meta
    assert meta["training"]["epochs_done"] == 3
    assert meta["training"]["best_epoch"] == 3
    # The head kept training from the stored weights (same input standardisation).
    a, b = load_model(path).module, load_model(out).module
    np.testing.assert_array_equal(a.feat_mean.numpy(), b.feat_mean.numpy())


def test_resume_other_architecture(fast_run, tmp_path, train_images, cached_data):
    path, _ = fast_run
    with pytest.raises(TrainingError, match="cannot resume"):
        _drain(iter_fit(_cfg(train_images, tmp_path / "x.safetensors", preset="inception", resume=str(path))))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["save_file", "os.replace"])
def test_full_disk_leaves_nothing(tmp_path, train_images, monkeypatch, target, cached_data):
    import os

    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if target == "save_file":
        monkeypatch.setattr(safetensors.torch, "save_file", full)
    else:
        import napari_focusq._atomic as atomic

        real_replace = os.replace

        def replace(src, dst):
            if str(dst).endswith(".safetensors"):
                full()
            return real_replace(src, dst)

        monkeypatch.setattr(atomic.os, "replace", replace)
    out_dir = tmp_path / "disk"
    with pytest.raises(OSError) as e:
        _drain(iter_fit(_cfg(train_images, out_dir / "m.safetensors", epochs=1)))
    assert e.value.errno == errno.ENOSPC
    assert list(out_dir.iterdir()) == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # 2 validation tiles
def test_inception_preset_trains(tmp_path, train_images):
    from napari_focusq.models.checkpoint import load_checkpoint

    # Minimal (InceptionV3 on 320 px tiles costs ~3 CPU-s per tile and step): 2 training
    # images x 2 tiles = one step of batch 4, one epoch, 2 validation tiles.
    out, events = _drain(iter_fit(_cfg(train_images, tmp_path / "inc.safetensors", preset="inception", epochs=1,
                                       batch_size=4, samples_per_image=2, val_samples_per_image=2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inc.json", "inc.safetensors"]
    steps = [e for e in events if e.stage == "train step"]
    assert len(steps) == 1 and all(math.isfinite(e.data["loss"]) for e in steps)
    assert "features" not in {e.stage for e in events}  # the whole network trains
    # Read back with the full checks (format, checksum) without building a second InceptionV3.
    tensors, meta = load_checkpoint(out)
    assert meta["architecture"] == "inception" and meta["training"]["epochs_done"] == 1
    assert meta["training"]["config"]["lr"] == 1e-5 and meta["trained"]
    assert tensors["regressor.10.weight"].shape == (1, 64)
    assert any(k.startswith("backbone.Mixed_7c.") for k in tensors)


def test_arch_options_reach_the_model(tmp_path, train_images, cached_data):
    """TrainConfig.arch builds the preset with those options, and the file says so."""
    arch = {"quadrants": True, "axis_gap": 2, "blue": True}
    out, _ = _drain(iter_fit(_cfg(train_images, tmp_path / "quarters.safetensors", epochs=1, arch=arch)))
    m = load_model(out)
    assert {k: m.meta["arch_config"][k] for k in arch} == arch
    assert m.meta["training"]["config"]["arch"] == arch
    assert m.meta["input"] == "green+blue" and m.meta["normalisation"].startswith("green and blue")
    assert m.module.front.n_features == 4 * 41  # whole tile, quarters' max and min, blue's whole tile


@pytest.mark.parametrize("modality, preset, front_end", [("brightfield", "fast", True), ("fluorescence", "fast", False),
                                                          ("brightfield", "inception", False)])
def test_focusq_train_on_own_images_gets_the_shipped_front_end(tmp_path, train_images, modality, preset, front_end):
    """`focusq train DATA...` trains a brightfield `fast` model with the shipped weights' front end."""
    from argparse import Namespace

    from napari_focusq.cli.train import train_config
    from napari_focusq.training.recipes import BRIGHTFIELD_ARCH, default_recipe

    args = Namespace(data=train_images[0], out=str(tmp_path / "m.safetensors"), preset=preset, modality=modality,
                     recipe="default", epochs=None, seed=None, lr=None, batch_size=None, init=None, pixel_size=0.5)
    cfg = train_config(args)
    assert cfg.arch == (BRIGHTFIELD_ARCH if front_end else {}) and cfg.preset == preset
    assert cfg.images == [str(p) for p in train_images[0]] and cfg.modality == modality
    assert default_recipe(tmp_path / "r.safetensors").arch == BRIGHTFIELD_ARCH


def test_training_leaves_torch_threads_as_it_found_them(tmp_path, train_images, cached_data):
    """The head trains on one thread; a GUI session that scores after training must not inherit that."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        _drain(iter_fit(_cfg(train_images, tmp_path / "t.safetensors", epochs=1)))
        assert torch.get_num_threads() == 3
        gen = iter_fit(_cfg(train_images, tmp_path / "c.safetensors", epochs=3))
        while next(gen).stage != "train":  # cancel mid-training
            pass
        gen.close()
        assert torch.get_num_threads() == 3 and not (tmp_path / "c.safetensors").exists()
    finally:
        torch.set_num_threads(before)


def test_certainty_learns_out_of_sample_errors_where_it_can():
    # Two validation images read with opposite biases: the calibration fitted on both hides
    # most of it in-sample; each image calibrated by the other's map shows the error a new
    # image's tiles come with, and that is what the certainty map must learn.
    from napari_focusq.models.calibration import apply_calibration, fit_isotonic
    from napari_focusq.training.fit import certainty_readings

    rng = np.random.default_rng(0)
    z = np.tile(np.linspace(0, 5, 200), 2)
    src = np.repeat([0, 1], 200)
    raw = z + np.where(src == 0, 0.4, -0.4) + rng.normal(0, 0.05, len(z))
    cal = apply_calibration(raw, fit_isotonic(raw, z))
    readings, how = certainty_readings(raw, cal, z, src)
    assert how == "crossfit" and np.abs(readings - z).mean() > 2 * np.abs(cal - z).mean()
    one, how1 = certainty_readings(raw[:200], cal[:200], z[:200], src[:200])
    assert how1 == "in-sample" and np.array_equal(one, cal[:200])


def test_shipped_brightfield_certainty_is_fitted_out_of_sample():
    meta = load_model("default").meta
    assert meta["certainty"]["readings"] == "crossfit" and len(meta["training"]["val_images"]) >= 2
