"""Fluorescence model and z-stacks: shipped weights, auto modality, per-tile best plane, all-in-focus."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM
from napari_focusq.io.arrays import ArraySource
from napari_focusq.models import load_model, weights_dir
from napari_focusq.scoring.pipeline import score_image, score_slide
from napari_focusq.scoring.zstack import ZStackError, all_in_focus, tilted_stack

DATA = Path(__file__).resolve().parents[2] / "data"
FLUO = DATA / "fluorescence"


@pytest.fixture(scope="module")
def model():
    return load_model("default", modality="fluorescence")


@pytest.fixture(scope="module")
def test_image() -> np.ndarray:
    """The BBBC022 crop (held out of training and validation) at 0.5 µm/px, channels' max.

    Read at training.KNOWN_PIXEL_UM's 0.4 µm/px, finer than its camera's ~0.656: a
    smaller-scaled specimen whose z = 0 is sharp on the working grid (at 0.656 it would not
    be, DESIGN §3), so simulated z is its truth here."""
    from napari_focusq.training.data import load_training_image

    return load_training_image(FLUO / "bbbc022_IXMtest_A02_s9_crop.tif", "fluorescence")


def test_shipped_fluorescence_weights(model):
    assert (weights_dir() / "fast-fluorescence.safetensors").exists()
    assert model.modality == "fluorescence" and model.name == "fast-fluorescence" and model.trained
    train = model.meta["training"]["train_images"] + model.meta["training"]["val_images"]
    from napari_focusq.training.recipes import FLUORESCENCE_TEST

    assert not set(train) & set(FLUORESCENCE_TEST)  # test images stay out
    assert len(model.meta["certainty"]["u"]) >= 2
    assert model.meta["optics"]["wavelengths_um"] == [0.52]
    assert model.meta["training"]["config"]["noise_free"] == 0.1  # the recipe's (DESIGN-NOTES, round 8)


def test_auto_modality_picks_the_fluorescence_model(test_image):
    img16 = np.clip(test_image[:320, :480], 0, 65535).astype(np.uint16)
    fm = score_image(img16, pixel_size_um=0.5)
    assert fm.modality == "fluorescence" and fm.model.startswith("fast-fluorescence")
    assert any("fluorescence" in n for n in fm.extra["notes"])
    assert np.isfinite(fm.defocus_um).any()
    assert set(fm.extra) >= {"certainty", "uncertain", "information", "spread_um", "noise_ratio"}


def test_predictions_grow_with_defocus_at_any_bit_depth(model, test_image):
    from napari_focusq.optics.psf import simulate_defocus

    tile = np.pad(test_image, ((0, 8), (0, 0)), mode="symmetric")[:320, :320]
    zs = [0.0, 1.0, 2.0, 4.0]
    stack = np.stack([simulate_defocus(tile, z, pixel_size_um=0.5, modality="fluorescence") for z in zs])
    # A camera's photon noise (1000 photons at the bright end): the model reads blur against it.
    rng = np.random.default_rng(0)
    scale = 1000 / np.percentile(stack, 99.5)
    stack = (rng.poisson(np.clip(stack * scale, 0, None)) / scale).astype(np.float32)
    p_float = model.predict(stack)
    p_u8 = model.predict(np.clip(stack / stack.max() * 255, 0, 255).astype(np.uint8))
    p_dim = model.predict((stack * 0.01 + 100).astype(np.float32))  # dim, with a camera offset
    # An affine change of intensity (dim, camera offset) is removed by the input
    # normalisation: the same reading up to float32 rounding. 8-bit quantisation adds a
    # step of 1/255 of the range, far below 1000-photon shot noise (~3 %): hundredths of a µm.
    np.testing.assert_allclose(p_dim, p_float, atol=1e-3)
    np.testing.assert_allclose(p_u8, p_float, atol=0.05)
    assert np.all(np.diff(p_float) > 0), p_float
    # In µm: per-image slopes on the development test set are 0.89-1.16 (DESIGN-NOTES,
    # fluorescence round 7), so a 4 µm tile may read 3.56-4.64 from that bias alone; 0.75 µm
    # allows it plus one tile's noise. Near focus, below the 1 µm the next step is at.
    assert p_float[0] < 0.8 and abs(p_float[-1] - 4.0) < 0.75, p_float


def test_tilted_specimen_best_plane_per_tile(model, test_image):
    rows, cols = 3, 6
    big = np.pad(test_image, ((0, rows * TILE_PX), (0, cols * TILE_PX)), mode="symmetric")
    big = big[:rows * TILE_PX, :cols * TILE_PX]
    k0 = 1 + np.arange(cols)
    stack = tilted_stack(big, pixel_size_um=WORKING_PIXEL_UM, tile_px=TILE_PX, focus_plane=k0, n_planes=8,
                         dz_um=1.0)
    fmap = score_slide(ArraySource(stack, WORKING_PIXEL_UM, stack=True), model=model, slice="per-tile")
    best = fmap.extra["best_plane"]
    scored = best >= 0
    assert scored.sum() >= 0.8 * best.size
    exact = (best == np.broadcast_to(k0, best.shape))[scored].mean()
    assert exact >= 0.95, best
    assert fmap.extra["defocus_per_plane"].shape == (8, rows, cols)
    # Certainty comes from the chosen plane's own noise ratio (the shipped model's score).
    from napari_focusq.scoring.certainty import noise_ratio

    assert np.isfinite(fmap.extra["certainty"][scored]).all()
    for r, c in np.argwhere(scored)[:3]:
        y0, x0, y1, x1 = fmap.tile_bounds(r, c)
        own = noise_ratio(stack[best[r, c], y0:y1, x0:x1][None], "fluorescence")[0]
        assert fmap.extra["noise_ratio"][r, c] == pytest.approx(own, rel=1e-4)
    # The composite takes every tile from its best plane, so it is sharper than any plane.
    comp = all_in_focus(stack, fmap)
    assert comp.shape == big.shape and comp.dtype == stack.dtype
    r, c = np.argwhere(scored)[0]
    y0, x0, y1, x1 = fmap.tile_bounds(r, c)
    assert np.array_equal(comp[y0:y1, x0:x1], stack[best[r, c], y0:y1, x0:x1])
    from napari_focusq.scoring.focus import variance_of_laplacian

    assert variance_of_laplacian(comp) > max(variance_of_laplacian(s) for s in stack)
    with pytest.raises(ZStackError, match="per-tile"):
        fmap.extra.pop("best_plane")
        all_in_focus(stack, fmap)


def test_focus_plane_fit_finds_the_vertex_a_flat_bottom_hides():
    from napari_focusq.scoring.zstack import focus_plane_fit

    k = np.arange(9.0)[:, None]
    true = np.array([2.0, 3.4, 4.6, 6.0])
    # Readings flatten below ~1 µm (a floor) and carry noise: the smallest reading of the
    # second and third tiles is a plane off their truth, the V's arms are not.
    d = np.sqrt((np.abs(k - true) * 0.5) ** 2 + 1.0)  # 0.5 µm planes, ~1 µm floor
    d[4, 1] -= 0.05  # plane 4 reads a hair lower than plane 3 (truth 3.4)
    d[5, 2] += 0.05  # plane 5 reads a hair higher than plane 4 (truth 4.6)
    assert np.argmin(d, 0).tolist() == [2, 4, 4, 6]
    fit = focus_plane_fit(d)
    assert np.rint(fit).tolist() == [2, 3, 5, 6] and np.all(np.abs(fit - true) < 0.2)
    # NaN planes are skipped; a tile with no finite plane gives NaN; fewer than three
    # finite planes keep the smallest reading.
    d2 = np.full((5, 3), np.nan)
    d2[:, 0] = [3.0, 2.0, 1.0, 2.0, np.nan]
    d2[1:3, 2] = [0.5, 0.2]
    f2 = focus_plane_fit(d2)
    assert abs(f2[0] - 2) < 0.05 and np.isnan(f2[1]) and f2[2] == 2


def test_zstack_auto_slice_and_fluorescence(made_stack):
    fmap = score_slide(made_stack.path, pixel_size_um=made_stack.pixel_um)
    assert abs(fmap.extra["z"] - made_stack.best) <= 1  # 0.4 µm steps with photon noise
    assert fmap.modality == "fluorescence" and fmap.model.startswith("fast-fluorescence")


def test_all_in_focus_checks_its_inputs():
    from napari_focusq.scoring.focusmap import FocusMap

    fm = FocusMap(defocus_um=np.zeros((1, 2)), tissue_fraction=np.ones((1, 2)), tile_size_px=4, image_shape=(4, 8),
                  pixel_size_um=0.5, modality="fluorescence", model="m",
                  extra={"best_plane": np.array([[1, -1]], np.int32)})
    stack = np.arange(3 * 4 * 8).reshape(3, 4, 8)
    out = all_in_focus(stack, fm)
    assert np.array_equal(out[:, :4], stack[1, :, :4]) and np.array_equal(out[:, 4:], stack[1, :, 4:])
    with pytest.raises(ZStackError, match="image"):
        all_in_focus(stack[:, :2], fm)
    with pytest.raises(ZStackError, match="stack"):
        all_in_focus(stack[0], fm)


def test_recipe_trains_on_channels_zoomed_out_crops_and_source_split_heads(model, made_stack):
    from napari_focusq.training.data import load_training_planes
    from napari_focusq.training.recipes import FLUORESCENCE_TEST, fluorescence_recipe

    cfg = fluorescence_recipe("x.safetensors", data=FLUO)
    assert cfg.split_channels and cfg.zoom_out > 1 and cfg.head_split == "sources"
    assert not any(Path(p).name in FLUORESCENCE_TEST for p in cfg.images)
    known = {made_stack.path.name: made_stack.pixel_um}
    channels = lambda path: len(load_training_planes(path, "fluorescence", known, split_channels=True))
    assert channels(FLUO / "ndev_neuron-4Ch.ome.tiff") == 4
    assert channels(made_stack.path) == 1  # a z-stack is one plane's worth of channels
    conf = model.meta["training"]["config"]
    assert conf["split_channels"] and conf["zoom_out"] > 1 and conf["head_split"] == "sources"


def test_held_out_images_resolve_and_are_never_trained_on():
    """Every test image the repository may carry is in data/ (cells3d may not be: its licence;
    it is looked for in data/external/) and no recipe, with or without the extra sources,
    trains or validates on one of them."""
    from napari_focusq.training.recipes import (
        FLUORESCENCE_EXTRA,
        FLUORESCENCE_TEST,
        data_image,
        fluorescence_recipe,
        project_data_dir,
    )

    carried = [n for n in FLUORESCENCE_TEST if n != "cells3d_nuclei_zstack.tif"]
    assert all(data_image(n, "fluorescence").is_file() for n in carried)
    assert data_image("cells3d_nuclei_zstack.tif", "fluorescence").parent.name == "external"
    own = set(FLUORESCENCE_EXTRA)
    plain = fluorescence_recipe("x.safetensors")
    assert not {Path(p).name for p in plain.images + plain.val_images} & set(FLUORESCENCE_TEST)
    assert not {Path(p).name for p in plain.images} & own  # the shipped recipe: not the extra sources
    assert len(own) == 5
    on_disk = {p.name for p in (project_data_dir() / "fluorescence").iterdir()}
    assert own <= on_disk and not {Path(p).name for p in plain.images} - on_disk


def test_project_images_carry_licence_and_pixel_size():
    """Each of the project's own images has its row (origin, licence) in data/README.md and a
    pixel size: recorded in the file, or an estimate in KNOWN_PIXEL_UM."""
    from napari_focusq.io.formats import open_image
    from napari_focusq.training.data import KNOWN_PIXEL_UM
    from napari_focusq.training.recipes import project_data_dir

    readme = (project_data_dir() / "README.md").read_text()
    for path in sorted((project_data_dir() / "fluorescence").iterdir()):
        stem = path.stem.split("_")[0]
        assert stem in readme and path.name.split(".")[0][:12] in readme, path.name
        recorded = open_image(path).pixel_size_um
        # an estimate only where the file records none, or a placeholder (ndev's neocortex: 1.0)
        assert (recorded is not None) != (path.name in KNOWN_PIXEL_UM) or recorded == 1.0, path.name
    assert open_image(project_data_dir() / "fluorescence" / "oiffile_mitoEGFP_ch1.tif").pixel_size_um == \
        pytest.approx(0.1763, abs=1e-4)
    assert (project_data_dir() / "licences").is_dir() and len(list((project_data_dir() / "licences").iterdir())) >= 3


def test_held_out_confocal_mitochondria_read_by_their_defocus(model):
    """A specimen unlike any the model was trained on (one cell's mitochondria, confocal,
    0.176 µm/px from the file, resampled to the working grid): readings grow with z."""
    from napari_focusq.optics.psf import simulate_defocus
    from napari_focusq.training.data import load_training_image
    from napari_focusq.training.recipes import data_image

    img = load_training_image(data_image("oiffile_mitoEGFP_ch1.tif", "fluorescence"), "fluorescence")
    assert img.shape == (90, 90)  # 256 px x 0.1763 µm at 0.5 µm/px
    tile = np.pad(img, ((0, 230), (0, 230)), mode="reflect")[:320, :320]
    zs = [0.0, 1.0, 2.0, 4.0]
    stack = np.stack([simulate_defocus(tile, z, pixel_size_um=0.5, modality="fluorescence") for z in zs])
    scale = 1000 / np.percentile(stack, 99.5)  # a camera's photon noise
    noisy = (np.random.default_rng(0).poisson(np.clip(stack * scale, 0, None)) / scale).astype(np.float32)
    # ... and none at all, as in denoised or deconvolved data (a model trained only on camera
    # noise read 4 µm here as 1.1: it took the missing noise floor for detail).
    for p in (model.predict(noisy), model.predict(stack.astype(np.float32))):
        assert np.all(np.diff(p) > 0), p
        # 0.75 µm at 4 µm: the per-image slope bias of the development test set (0.89-1.16,
        # this image 1.10: +0.4 µm at 4) plus one tile's noise (see the test above).
        assert p[0] < 0.8 and abs(p[-1] - 4.0) < 0.75, p


def test_certainty_falls_on_dim_held_out_tiles_that_are_read_worse(model):
    """The held-out images the repository carries (cells3d too where a user has put it in
    data/external/), one tile each, at z 0-6 µm and 30 to 30000 photons: the expected error
    rises as light falls, and the least certain quarter of the tiles is the one read worst."""
    from napari_focusq.optics.psf import simulate_defocus
    from napari_focusq.scoring.certainty import expected_error, model_certainty, noise_ratio
    from napari_focusq.training.data import load_training_image
    from napari_focusq.training.recipes import FLUORESCENCE_TEST, data_image

    calib = model_certainty(model)
    assert calib["score"] == "noise" and calib["selection"]["noise"] > calib["selection"]["spread"]
    rng = np.random.default_rng(1)
    zs, photons = np.array([0.0, 1.0, 2.0, 3.0, 4.5, 6.0]), [30, 300, 3000, 30000]
    err, e = [], []
    names = [n for n in FLUORESCENCE_TEST if data_image(n, "fluorescence").is_file()]
    assert len(names) >= 2
    for name in names:
        img = load_training_image(data_image(name, "fluorescence"), "fluorescence", {"cells3d_nuclei_zstack.tif": 0.26})
        pad = ((0, max(0, TILE_PX - img.shape[0])), (0, max(0, TILE_PX - img.shape[1])))
        tile = np.pad(img, pad, mode="reflect")[:TILE_PX, :TILE_PX]
        clean = np.stack([simulate_defocus(tile, z, pixel_size_um=0.5, modality="fluorescence") for z in zs])
        for ph in photons:
            scale = ph / np.percentile(clean, 99.5)
            x = (rng.poisson(np.clip(clean * scale, 0, None)) / scale).astype(np.float32)
            p, s = model.predict_with_spread(x)
            err.append(np.abs(p - zs))
            e.append(expected_error(s, p, calib, noise_ratio(x, "fluorescence")))
    err, e = np.array(err).reshape(len(names), 4, -1), np.array(e).reshape(len(names), 4, -1)
    assert np.all(e[:, 0].mean(-1) > e[:, -1].mean(-1))  # 30 photons less certain than 30000, every image
    worst = e >= np.quantile(e, 0.75)
    assert err[worst].mean() >= 1.5 * err[~worst].mean(), (err[worst].mean(), err[~worst].mean())


def test_split_channels_and_zoom_out_tiles(tmp_path):
    """Every channel is a source of its own; zoomed-out crops of a small image are still whole tiles."""
    import tifffile

    from napari_focusq.training.config import TrainConfig
    from napari_focusq.training.data import iter_dataset, sample_tiles

    rng = np.random.default_rng(0)
    img = np.zeros((200, 180, 2), np.uint16)
    img[rng.integers(0, 200, 300), rng.integers(0, 180, 300), 0] = 4000  # puncta
    img[::9, :, 1] = 3000  # stripes
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, img, photometric="minisblack", planarconfig="contig")
    cfg = TrainConfig(images=[str(path)], modality="fluorescence", min_tissue=0.0, split_channels=True,
                      zoom_out=3.0, pixel_sizes={"two.tif": 0.5})
    gen = iter_dataset([str(path)], 6, cfg, 0, "data")
    try:
        while True:
            next(gen)
    except StopIteration as e:
        X, Z, S = e.value
    assert X.shape == (6, TILE_PX, TILE_PX) and sorted(set(S.tolist())) == [0, 1]  # 3 tiles per channel
    assert np.all((Z >= 0) & (Z <= cfg.z_max_um)) and np.isfinite(X).all()
    plane = np.asarray(img[..., 0], np.float32)
    t, z = sample_tiles(plane, 4, np.random.default_rng(1), cfg)
    assert t.shape == (4, TILE_PX, TILE_PX) and len(z) == 4
    with pytest.raises(Exception, match="head_split"):
        TrainConfig(head_split="pixels")


def test_grey_saved_as_rgb_is_one_specimen():
    """mahotas' nuclei are one grey channel stored three times: split into channels it is one
    plane (one specimen, one share of tiles), while a real multichannel image keeps them all."""
    from napari_focusq.training.data import load_training_planes

    grey = load_training_planes(FLUO / "mahotas_nuclear.png", "fluorescence", split_channels=True)
    assert len(grey) == 1 and grey[0].ndim == 2
    multi = load_training_planes(FLUO / "bbbc022_IXMtest_A02_s9_crop.tif", "fluorescence", split_channels=True)
    assert len(multi) == 3 and not np.array_equal(multi[0], multi[1])


def test_magnified_channels_keep_their_specimen_index(tmp_path):
    """zoom_in on split channels: every magnified copy is a channel of the same specimen, so
    the source-split heads leave out a specimen with all its magnifications."""
    import tifffile

    from napari_focusq.progress import drive
    from napari_focusq.training.config import TrainConfig
    from napari_focusq.training.data import iter_dataset

    rng = np.random.default_rng(0)
    img = (rng.random((700, 700, 2)) * 3000).astype(np.uint16)
    path = tmp_path / "fine.tif"
    tifffile.imwrite(path, img, photometric="minisblack", planarconfig="contig")
    cfg = TrainConfig(images=[str(path)], modality="fluorescence", min_tissue=0.0, split_channels=True,
                      zoom_in=2.0, zoom_in_share=0.5, pixel_sizes={"fine.tif": 0.25})
    X, Z, S = drive(iter_dataset([str(path), str(path)], 6, cfg, 0, "data"))
    # 2 images x 2 channels x (3 native + 1 magnified tiles: half a share); specimens 0-1 then 2-3.
    assert len(X) == 16 and np.bincount(S).tolist() == [4, 4, 4, 4]
