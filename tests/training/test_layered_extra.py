"""Thick sections as extra, weighted training tiles (round 3): layered_extra / _weight / _hinge / _kind."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_focusq.optics.layered import layer_weights, one_faint_specimen, simulate_layered
from napari_focusq.progress import drive
from napari_focusq.training.config import TrainConfig, TrainingError
from napari_focusq.training.data import iter_dataset, iter_layered_extra


def _tissue(seed, shape=(64, 64), tint=(0.6, 1.2, 0.5)):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    od = gaussian_filter(rng.random(shape), 1.5)
    od = (od - od.min()) / (od.max() - od.min())
    return np.clip(255 * np.exp(-od[..., None] * np.array(tint)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def two_tissues(tmp_path_factory):
    """Two real-sized RGB images of differently tinted 'tissue' (the faint layer's source is
    told by its tint), with their pixel size in the file."""
    import tifffile

    d = tmp_path_factory.mktemp("two_tissues")
    paths = []
    for i, tint in enumerate(((0.3, 1.6, 0.3), (1.6, 0.3, 0.3))):
        p = d / f"t{i}.tif"
        tifffile.imwrite(p, _tissue(30 + i, (480, 480), tint), photometric="rgb",
                         resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
        paths.append(str(p))
    return paths


def test_defaults_off_and_checked():
    cfg = TrainConfig()
    assert (cfg.layered_extra, cfg.layered_weight, cfg.layered_hinge, cfg.layered_kind) == (0.0, 1.0, 0.0, "sections")
    for bad in (dict(layered_extra=-0.1), dict(layered_extra=3), dict(layered_weight=-1), dict(layered_hinge=2),
                dict(layered_kind="many")):
        with pytest.raises(TrainingError, match="layered"):
            TrainConfig(**bad)


@pytest.mark.parametrize("z", [0.0, 0.6, 2.0, 4.5])
def test_one_faint_specimen_keeps_the_bulk_the_best_plane(z):
    # The label is the bulk's own distance, even where the faint layer's image is far denser
    # than the bulk (its weight is capped below the bulk's content).
    rng = np.random.default_rng(3)
    pale, dense = _tissue(1, tint=(0.1, 0.2, 0.1)), _tissue(2, tint=(2.0, 3.0, 2.0))
    for bulk, faint in ((pale, dense), (dense, pale), (pale, pale)):
        for _ in range(5):
            layers, focus = one_faint_specimen(bulk, faint, z, rng)
            assert len(layers) == 2 and layers[0].depth_um == 0.0 and layers[0].weight == 1.0
            c = layer_weights(layers)
            assert c[1] <= 0.95 * c[0] + 1e-9 and 0 < layers[1].weight <= 0.45
            _, label = simulate_layered(layers, focus, pixel_size_um=0.5)
            assert label == pytest.approx(z, abs=1e-9)


def test_one_faint_specimen_nearer_focus_in_the_share_asked():
    # 'near' of the specimens put the faint layer nearer the focal plane than the bulk, the
    # others farther; 600 draws: binomial sd of the share 0.019, so +-0.08 is > 4 sd.
    rng = np.random.default_rng(4)
    bulk, faint = _tissue(5), _tissue(6)
    near = []
    for _ in range(600):
        z = rng.uniform(0.5, 6)
        layers, focus = one_faint_specimen(bulk, faint, z, rng, near=0.7)
        d = abs(layers[1].depth_um - focus)
        near.append(d < z)
        assert d <= z or z + 0.5 <= d <= z + 4.0 + 1e-9
    assert abs(np.mean(near) - 0.7) < 0.08


def test_extra_tiles_leave_the_thin_tiles_unchanged(two_tissues):
    # The thin tiles (and so every recipe without extras) are drawn as before: the extras are
    # made apart, by iter_layered_extra, from their own seed.
    base = TrainConfig(images=two_tissues, min_tissue=0.0, z_max_um=5.0)
    extra = TrainConfig(images=two_tissues, min_tissue=0.0, z_max_um=5.0, layered_extra=0.5, layered_weight=0.3,
                        layered_hinge=0.8, layered_kind="one_faint")
    X0, Z0, S0 = drive(iter_dataset(two_tissues, 6, base, 0, "data"))
    X1, Z1, S1 = drive(iter_dataset(two_tissues, 6, extra, 0, "data"))
    np.testing.assert_array_equal(X0, X1)
    np.testing.assert_array_equal(Z0, Z1)


@pytest.mark.parametrize("kind", ["one_faint", "sections"])
def test_iter_layered_extra_counts_labels_and_sources(two_tissues, kind, monkeypatch):
    import napari_focusq.optics.layered as layered

    seen = []
    real = layered.one_faint_specimen

    def spy(bulk, faint, z, rng, **kw):
        # Which image each layer came from, by its tint: green-dominant (0) or red-dominant (1)
        # absorbance; the bulk's own and the faint layer's.
        def src(img):
            od = -np.log(np.clip(img.astype(float), 1, 255) / 255).mean((0, 1))
            return int(od[0] > od[1])
        seen.append((src(bulk), src(faint)))
        return real(bulk, faint, z, rng, **kw)

    monkeypatch.setattr(layered, "one_faint_specimen", spy)
    cfg = TrainConfig(images=two_tissues, min_tissue=0.0, z_max_um=5.0, layered_extra=0.5, layered_kind=kind,
                      ihc_like=0.0)
    X, Z, S = drive(iter_layered_extra(two_tissues, 8, cfg, 7))
    assert X.shape == (8, 320, 320, 3) and X.dtype == np.uint8
    assert list(S) == [0] * 4 + [1] * 4
    assert Z.min() >= 0 and Z.max() <= 5.0 + 1e-6
    if kind == "one_faint":
        # Every faint layer is a crop of the OTHER image.
        assert len(seen) == 8 and all(b != f for b, f in seen)
    else:
        assert not seen
    again = drive(iter_layered_extra(two_tissues, 8, cfg, 7))
    np.testing.assert_array_equal(X, again[0])  # seeded
    off = drive(iter_layered_extra(two_tissues, 8, TrainConfig(images=two_tissues), 7))
    assert len(off[1]) == 0


def test_tile_loss_hinge_only_below_its_share_of_the_truth():
    import torch

    from napari_focusq.training.fit import _tile_loss

    z = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0])
    pred = torch.tensor([1.0, 1.7, 2.5, 4.0, 0.9])
    extra = torch.tensor([True, True, True, True, True])
    got = _tile_loss(pred, z, extra, 0.8)
    # 0.8 x 2 = 1.6: 1.0 reads 0.6 short (smooth L1, beta 0.2: 0.6 - 0.1); 1.7, 2.5 and 4.0
    # are not short; a truth of 0 is never short.
    assert got.tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0, 0.0])
    thin = _tile_loss(pred, z, ~extra, 0.8)
    want = torch.nn.functional.smooth_l1_loss(pred, z, beta=0.2, reduction="none")
    assert torch.equal(thin, want)
    # No hinge: every tile the plain loss.
    assert torch.equal(_tile_loss(pred, z, extra, 0.0), want)


def test_tile_loss_over_bounds_the_hinge_from_above():
    import torch

    from napari_focusq.training.fit import _tile_loss

    z = torch.tensor([2.0, 2.0, 2.0, 0.0, 0.0])
    pred = torch.tensor([1.0, 2.2, 2.7, 0.2, 0.9])
    extra = torch.ones(5, dtype=torch.bool)
    got = _tile_loss(pred, z, extra, 0.8, over=0.25)
    # Below 0.8 x truth as before (0.6 short: 0.5); up to 0.25 µm above the truth is free
    # (2.2, and 0.2 over a truth of 0); 2.7 is 0.45 over (0.35), 0.9 over 0 is 0.65 over (0.55).
    assert got.tolist() == pytest.approx([0.5, 0.0, 0.35, 0.0, 0.55])
    assert torch.equal(_tile_loss(pred, z, ~extra, 0.8, over=0.25),
                       torch.nn.functional.smooth_l1_loss(pred, z, beta=0.2, reduction="none"))
    with pytest.raises(TrainingError, match="layered_over"):
        TrainConfig(images=["a.png"], layered_over=-1.0)


def test_fit_with_extra_thick_sections(train_images, tmp_path):
    from napari_focusq.models import load_model
    from napari_focusq.training.fit import iter_fit

    paths, px = train_images
    cfg = TrainConfig(images=paths, out=str(tmp_path / "m.safetensors"), epochs=2, samples_per_image=8,
                      val_samples_per_image=8, pixel_sizes=px, seed=0, layered_extra=0.5, layered_weight=0.3,
                      layered_hinge=0.8, layered_over=0.25, layered_kind="one_faint")
    path = drive(iter_fit(cfg))
    meta = json.loads(path.with_suffix(".json").read_text())
    t = meta["training"]
    # Two training images: 8 thin + 4 thick-section tiles each; validation stays thin (8 tiles).
    assert t["train_tiles"] == 24 and t["train_thick_section_tiles"] == 8 and t["val_tiles"] == 8
    assert t["config"]["layered_extra"] == 0.5 and t["config"]["layered_kind"] == "one_faint"
    assert t["config"]["layered_over"] == 0.25
    z = load_model(path).predict(np.full((1, 320, 320, 3), 200, np.uint8))
    assert np.isfinite(z).all()


def test_soft_with_grain_is_soft_content_under_a_fine_grain():
    from napari_focusq.training.grain import soft_with_grain

    tile = np.tile(_tissue(40, (80, 80)), (4, 4, 1))  # 320 px of real-looking texture

    def hf(img):  # mean power of the finest scales (a 3x3 Laplacian) in optical density
        from scipy.ndimage import laplace

        od = -np.log(np.clip(img.astype(float).mean(-1), 1, 255) / 255)
        return float(np.mean(laplace(od) ** 2))

    outs = [soft_with_grain(tile, np.random.default_rng(k)) for k in range(40)]
    assert all(o.shape == tile.shape and o.dtype == np.uint8 for o in outs)
    # The same seed with no grain is the same magnified crop (the draws are the same): alone it
    # has lost most of the finest scales' power, and the grain puts fine power back over it.
    no_grain = [soft_with_grain(tile, np.random.default_rng(k), grain_od=(0.0, 0.0)) for k in range(40)]
    assert max(hf(o) for o in no_grain) < 0.5 * hf(tile)
    assert all(hf(o) > 1.5 * hf(n) for o, n in zip(outs, no_grain))
    # About half grey (binomial over 40 draws: 0.5 +- 0.25 is > 3 sd).
    grey = np.mean([np.array_equal(o[..., 0], o[..., 1]) and np.array_equal(o[..., 1], o[..., 2]) for o in outs])
    assert 0.25 <= grey <= 0.75


def test_grain_extra_tiles(two_tissues, train_images, tmp_path):
    from napari_focusq.training.fit import iter_fit

    cfg = TrainConfig(images=two_tissues, min_tissue=0.0, z_max_um=5.0, grain_extra=0.25)
    X, Z, S = drive(iter_layered_extra(two_tissues, 8, cfg, 9, kind="grain"))
    assert X.shape == (4, 320, 320, 3) and list(S) == [0, 0, 1, 1] and Z.max() <= 5.0 + 1e-6
    with pytest.raises(TrainingError, match="grain_extra"):
        TrainConfig(grain_extra=-1)
    paths, px = train_images
    run = TrainConfig(images=paths, out=str(tmp_path / "g.safetensors"), epochs=1, samples_per_image=8,
                      val_samples_per_image=8, pixel_sizes=px, seed=0, grain_extra=0.25, layered_extra=0.25)
    t = json.loads(drive(iter_fit(run)).with_suffix(".json").read_text())["training"]
    assert (t["train_tiles"], t["train_thick_section_tiles"], t["train_grain_tiles"]) == (24, 4, 4)  # two training images: 8 thin, 2 + 2 extra each


@pytest.mark.parametrize("one_stain", [False, True])
def test_a_restained_bulk_gets_its_layers_restained_alike(two_tissues, one_stain, monkeypatch):
    # A section is stained as one (round 6): an IHC-like bulk's faint layers are re-stained
    # with the same stain draw, not left in their own stain over it.
    import napari_focusq.optics.layered as layered
    import napari_focusq.training.stain as stain

    calls, sections = [], []
    real_stain, real_specimen = stain.ihc_like, layered.random_specimen

    def stain_spy(tile, rng):
        calls.append(json.dumps(rng.bit_generator.state, sort_keys=True))
        return real_stain(tile, rng)

    def specimen_spy(bulk, extras, z, rng, **kw):
        sections.append((len(calls), len(extras)))
        return real_specimen(bulk, extras, z, rng, **kw)

    monkeypatch.setattr(stain, "ihc_like", stain_spy)
    monkeypatch.setattr(layered, "random_specimen", specimen_spy)
    cfg = TrainConfig(images=two_tissues, min_tissue=0.0, z_max_um=5.0, layered_extra=0.5, ihc_like=1.0,
                      layered_one_stain=one_stain)
    drive(iter_layered_extra(two_tissues, 8, cfg, 7))
    assert len(sections) == 8
    start = 0
    for end, n_layers in sections:
        mine = calls[start:end]
        # the bulk, then (one stain) each layer, all from one stain draw
        assert len(mine) == (1 + n_layers if one_stain else 1)
        assert len(set(mine)) == (1 if one_stain else len(mine))
        start = end
    thin = drive(iter_dataset(two_tissues[:1], 4, cfg, 3, "data"))  # thin tiles: one stain call each, as before
    assert len(calls) == start + 4 and len(thin[1]) == 4
