"""score_image / score_slide on real data with a freshly built model, and edge cases."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_focusq.config import MIN_TISSUE_FRACTION
from napari_focusq.progress import Cancelled, drive
from napari_focusq.scoring.grid import TileGrid
from napari_focusq.scoring.pipeline import ScoringError, iter_score_image, iter_score_slide, score_image, score_slide

REPO = Path(__file__).resolve().parents[2]
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"
SVS_PIXEL_UM = 0.499
DATA = REPO / "data"
NUCLEI = DATA / "fluorescence" / "nuclei_dsb2018.tif"
SHIPPED_FAST = REPO / "src" / "napari_focusq" / "weights" / "fast.safetensors"


@pytest.fixture(scope="module")
def edge_crop(slide_crop) -> np.ndarray:
    """640 x 1280 px: background on the left half, tissue on the right (checked on the thumbnail)."""
    return slide_crop(1200, 0, 640, 1280)


@pytest.fixture(scope="module")
def edge_result(edge_crop, fast_model_file):
    events = []
    fmap = score_image(edge_crop, pixel_size_um=SVS_PIXEL_UM, model=fast_model_file, progress=events.append)
    return fmap, events


@pytest.fixture(scope="module")
def zstack(tmp_path_factory, slide_crop) -> tuple[Path, list[float]]:
    """An RGB OME-TIFF z-stack of a tissue crop; plane 2 is in focus."""
    import tifffile

    from napari_focusq.optics.psf import simulate_defocus

    base = slide_crop(2000, 650, 640, 640)
    zs = [2.0, 1.0, 0.0, 1.5]
    stack = np.stack([simulate_defocus(base, z, pixel_size_um=SVS_PIXEL_UM, method="gaussian") if z else base
                      for z in zs])
    path = tmp_path_factory.mktemp("stack") / "stack.ome.tif"
    tifffile.imwrite(path, stack, ome=True, photometric="rgb",
                     metadata={"axes": "ZYXS", "PhysicalSizeX": SVS_PIXEL_UM, "PhysicalSizeY": SVS_PIXEL_UM})
    return path, zs


def _check_geometry(fmap, shape, px):
    grid = TileGrid(shape, px)
    assert fmap.shape == grid.shape
    assert fmap.tile_size_px == pytest.approx(grid.tile_size_px)
    assert fmap.image_shape == tuple(shape)
    assert fmap.pixel_size_um == pytest.approx(px)
    assert fmap.defocus_um.dtype == np.float32
    t = fmap.tissue_fraction
    assert np.all((t >= 0) & (t <= 1))
    scored = np.isfinite(fmap.defocus_um)
    np.testing.assert_array_equal(scored, t >= MIN_TISSUE_FRACTION)
    assert np.all(fmap.defocus_um[scored] >= 0)


# ------------------------------------------------------------------ score_image
def test_score_image_geometry(edge_result, edge_crop):
    fmap, _ = edge_result
    _check_geometry(fmap, edge_crop.shape[:2], SVS_PIXEL_UM)
    assert fmap.shape == (2, 4)
    # Left half is glass, right half tissue.
    assert np.isnan(fmap.defocus_um[:, :2]).all()
    assert np.isfinite(fmap.defocus_um[:, 3]).all()
    assert fmap.tissue_fraction[:, 3].min() > 0.8 and fmap.tissue_fraction[:, :2].max() < 0.05
    assert fmap.modality == "brightfield"
    assert fmap.model.startswith("untrained-fast ")
    assert any("brightfield" in n for n in fmap.extra["notes"])


def test_score_image_progress_events(edge_result):
    fmap, events = edge_result
    stages = [e.stage for e in events]
    assert stages[0] == "tissue" and "score" in stages
    assert stages.index("tissue") < stages.index("score")
    score_events = [e for e in events if e.stage == "score"]
    tiles = [t for e in score_events for t in e.data["tiles"]]
    cells = [(r, c) for r, c, _, _ in tiles]
    assert len(cells) == len(set(cells))  # each tile reported once
    scored = {tuple(rc) for rc in np.argwhere(np.isfinite(fmap.defocus_um))}
    assert set(cells) == scored
    for r, c, z, tissue in tiles:
        assert z == pytest.approx(float(fmap.defocus_um[r, c]))
        assert tissue == pytest.approx(float(fmap.tissue_fraction[r, c]))
    last = score_events[-1]
    assert last.done == last.total == len(scored)
    assert all(e.data["grid_shape"] == fmap.shape for e in score_events)
    dones = [e.done for e in score_events]
    assert dones == sorted(dones)


@pytest.mark.parametrize("stop_at", ["tissue", "score"])
def test_score_image_cancel(edge_crop, fast_model_file, stop_at):
    seen = []

    def progress(ev):
        seen.append(ev.stage)
        return ev.stage != stop_at

    with pytest.raises(Cancelled):
        score_image(edge_crop, pixel_size_um=SVS_PIXEL_UM, model=fast_model_file, progress=progress)
    assert seen[-1] == stop_at
    assert seen.count(stop_at) == 1  # nothing ran after the refusal


def test_generator_close_stops_work(edge_crop, fast_model_file):
    gen = iter_score_image(edge_crop, pixel_size_um=SVS_PIXEL_UM, model=fast_model_file)
    assert next(gen).stage == "tissue"
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


def test_sixteen_bit_brightfield(edge_crop, edge_result, fast_model_file):
    fmap8, _ = edge_result
    fmap16 = score_image(edge_crop.astype(np.uint16) * 257, pixel_size_um=SVS_PIXEL_UM, model=fast_model_file)
    assert fmap16.modality == "brightfield"
    np.testing.assert_array_equal(np.isfinite(fmap16.defocus_um), np.isfinite(fmap8.defocus_um))
    np.testing.assert_allclose(fmap16.defocus_um, fmap8.defocus_um, atol=0.05, equal_nan=True)
    assert any("uint16" in n for n in fmap16.extra["notes"])


def test_tiny_images_make_one_partial_tile(slide_crop, fast_model_file):
    one = score_image(slide_crop(2300, 1100, 1, 1), pixel_size_um=SVS_PIXEL_UM, model=fast_model_file,
                      modality="brightfield")
    assert one.shape == (1, 1)
    assert one.tile_size_px == pytest.approx(320 * 0.5 / SVS_PIXEL_UM)
    small = slide_crop(2300, 1100, 200, 250)  # dense tissue, ~half a tile
    fmap = score_image(small, pixel_size_um=SVS_PIXEL_UM, model=fast_model_file)
    _check_geometry(fmap, (200, 250), SVS_PIXEL_UM)
    assert fmap.shape == (1, 1)
    assert 0.3 < fmap.tissue_fraction[0, 0] <= 200 * 250 / fmap.tile_size_px**2 + 1e-6
    assert np.isfinite(fmap.defocus_um[0, 0])


def test_all_background_is_all_nan(fast_model_file):
    rng = np.random.default_rng(0)
    white = np.clip(rng.normal(242, 2, (700, 900, 3)), 0, 255).astype(np.uint8)
    events = []
    fmap = score_image(white, pixel_size_um=SVS_PIXEL_UM, model=fast_model_file, progress=events.append,
                       modality="brightfield")
    assert fmap.shape == TileGrid((700, 900), SVS_PIXEL_UM).shape
    assert np.isnan(fmap.defocus_um).all()
    assert fmap.tissue_fraction.max() < MIN_TISSUE_FRACTION
    assert events[-1].stage == "score" and events[-1].total == 0


def test_nonfinite_float_data(slide_crop, fast_model_file):
    img = slide_crop(2000, 650, 700, 700).astype(np.float32) / 255.0
    img[:50] = np.nan
    img[300:320, 300:320] = np.inf
    img[400:410, :, 1] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN casts or inf arithmetic on the way
        fmap = score_image(img, pixel_size_um=SVS_PIXEL_UM, model=fast_model_file, modality="brightfield")
    assert np.isfinite(fmap.defocus_um).sum() >= 1
    thumb = fmap.extra.get("thumbnail")
    if thumb is not None:
        assert thumb.dtype == np.uint8 and thumb.max() > 0
    finite = fmap.defocus_um[np.isfinite(fmap.defocus_um)]
    assert np.all((finite >= 0) & (finite < 100))
    with pytest.raises(ScoringError, match="no finite pixel values"):
        score_image(np.full((400, 400), np.nan, np.float32), pixel_size_um=0.5, model=fast_model_file)


def test_nonfinite_fluorescence(fast_model_file):
    import tifffile

    img = tifffile.imread(NUCLEI).astype(np.float32)
    img[100:104] = np.nan  # small: this field is only ~30 % nuclei
    img[:, 200:202] = np.inf
    fmap = score_image(img, pixel_size_um=0.5, model=fast_model_file, modality="fluorescence")
    assert fmap.modality == "fluorescence"
    finite = fmap.defocus_um[np.isfinite(fmap.defocus_um)]
    assert finite.size >= 1 and np.all(finite < 100)


@pytest.mark.parametrize("shape", [(2, 3, 40, 40, 3), (5,), (2, 40, 40, 3)])
def test_wrong_dimensions(shape, fast_model_file):
    with pytest.raises(ScoringError, match=r"expects \(Y, X\)") as e:
        score_image(np.zeros(shape, np.uint8), pixel_size_um=0.5, model=fast_model_file)
    assert str(shape) in str(e.value)


def test_bad_pixel_size(edge_crop, fast_model_file):
    for bad in (None, 0, -1.0, float("nan")):
        with pytest.raises(ScoringError, match="pixel size"):
            score_image(edge_crop, pixel_size_um=bad, model=fast_model_file)


def test_modality_auto(edge_result, fast_model_file):
    import tifffile

    assert edge_result[0].modality == "brightfield"
    nuclei = tifffile.imread(NUCLEI)
    assert nuclei.dtype == np.uint16 and nuclei.ndim == 2
    fmap = score_slide(NUCLEI, pixel_size_um=0.5, model=fast_model_file)
    assert fmap.modality == "fluorescence"
    assert any("fluorescence" in n for n in fmap.extra["notes"])
    # A brightfield model on fluorescence data says so.
    assert any("trained for brightfield" in n for n in fmap.extra["notes"])
    assert np.isfinite(fmap.defocus_um).any()


# ------------------------------------------------------------------ score_slide
def test_score_slide_svs(fast_model_file):
    fmap = score_slide(SVS, model=fast_model_file)
    _check_geometry(fmap, (2967, 2220), SVS_PIXEL_UM)  # pixel size from the SVS description
    assert fmap.source == str(SVS)
    assert 10 <= np.isfinite(fmap.defocus_um).sum() < fmap.defocus_um.size
    thumb = fmap.extra["thumbnail"]
    assert thumb.dtype == np.uint8 and thumb.ndim == 3


def test_score_slide_runs_model_batches_side_by_side(fast_model_file):
    """The model scores whole batches in its own threads (one per core of torch's budget,
    4 here), each on one torch thread; the count is restored after, and the pooling
    weights measured in the decode workers belong to the tiles the model scored."""
    import threading

    import torch

    from napari_focusq.models import load_model
    from napari_focusq.scoring.pooling import tile_information

    fm = load_model(fast_model_file)
    seen, names = [], set()
    predict = fm.predict_with_spread

    def recording(tiles):
        seen.append((torch.get_num_threads(), tiles.copy()))
        names.add(threading.current_thread().name)
        return predict(tiles)

    fm.predict_with_spread = recording
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        fmap = score_slide(SVS, model=fm)
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
    assert seen and {n for n, _ in seen} == {1}
    assert 1 <= len(names) <= 4 and all(n.startswith("focusq-model") for n in names), names
    info = fmap.extra["information"]
    scored = np.isfinite(fmap.defocus_um)
    np.testing.assert_array_equal(np.isfinite(info), scored)
    expected = np.concatenate([tile_information(t, "brightfield") for _, t in seen])
    np.testing.assert_allclose(np.sort(info[scored]), np.sort(expected), rtol=1e-6)


def test_score_slide_counts_the_cpu_of_its_workers_not_their_waits(fast_model_file):
    """``extra["cpu_s"]``: CPU seconds the decode workers and the model's threads spent (the
    figures bench_speed.py prints its floor from). A batch that sleeps adds its wall time
    to nothing; one that burns CPU adds at least that much."""
    import time

    from napari_focusq.models import load_model

    fm = load_model(fast_model_file)
    predict, batches = fm.predict_with_spread, []

    def sleeping(tiles):
        batches.append(len(tiles))
        time.sleep(0.1)
        return predict(tiles)

    def burning(tiles):
        batches.append(len(tiles))
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.1:
            pass
        return predict(tiles)

    def cpu_of_a_run():
        return drive(iter_score_slide(SVS, model=fm, batch_size=4)).extra["cpu_s"]

    fm.predict_with_spread = sleeping
    slept = cpu_of_a_run()
    n = len(batches)
    fm.predict_with_spread = burning
    burnt = cpu_of_a_run()
    assert n >= 2 and len(batches) == 2 * n
    assert slept["read"] > 0 and burnt["read"] > 0  # the strips were read and cut in the workers
    # the model's own CPU on these few batches is well under 0.1 s a batch on any machine
    assert burnt["model"] >= 0.1 * n > slept["model"]


def test_strips_skip_the_glass_between_tissue_islands():
    from napari_focusq.scoring.strips import STRIP_TILES
    from napari_focusq.scoring.strips import strip_regions as _strip_regions

    units = list(_strip_regions([(0, [0, 1, 2, 4, 8, 9]), (3, list(range(STRIP_TILES + 2)))]))
    # A one-tile gap is read through, a wider one ends the strip; no strip outgrows STRIP_TILES.
    assert units == [(0, [0, 1, 2, 4]), (0, [8, 9]), (3, list(range(STRIP_TILES))), (3, [STRIP_TILES, STRIP_TILES + 1])]


def test_decoding_keeps_two_batches_of_tiles_ahead_of_the_model(slide_crop, fast_model_file, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import napari_focusq.scoring.pipeline as P
    from napari_focusq.models import load_model, model_workers

    # Tissue in every third tile column: every strip is a single tile.
    img = np.full((8 * 320, 12 * 320, 3), 245, np.uint8)
    tissue = slide_crop(2000, 650, 320, 320)
    for r in range(8):
        for c in range(0, 12, 3):
            img[r * 320:(r + 1) * 320, c * 320:(c + 1) * 320] = tissue
    submitted, at_predict, scored = [], [], []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            if args and args[0] is P.read_strip:  # submitted as _thread_cpu(read_strip, ...): the
                submitted.append(len(args[6]))      # strip's tiles (model batches share this class)
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(P, "ThreadPoolExecutor", Recording)
    fm = load_model(fast_model_file)
    predict = fm.predict_with_spread

    def recording(tiles):
        at_predict.append(sum(submitted) - sum(scored))  # handed to the decoders, not yet scored
        scored.append(len(tiles))
        return predict(tiles)

    fm.predict_with_spread = recording
    batch = 8
    fmap = drive(P.iter_score_slide(P.ArraySource(img, 0.5), model=fm, batch_size=batch))
    assert np.isfinite(fmap.defocus_um).sum() == 32 and set(submitted) == {1}
    assert sum(scored) == 32
    # "Ahead" counts tiles, not strips: at each batch the decoders hold the batch and two
    # more (fewer only where the slide runs out). Counted in strips, 1-tile strips starve them.
    # At most: those, plus a batch waiting beside each model thread.
    most = (model_workers(fm) + 3) * batch + 2 * P.STRIP_TILES
    for k, ahead in enumerate(at_predict):
        assert min(32 - sum(scored[:k]), 3 * batch) <= ahead <= most


def test_score_slide_without_pixel_size(tmp_path, slide_crop, fast_model_file):
    from PIL import Image

    path = tmp_path / "no_pixel_size.png"
    Image.fromarray(slide_crop(2000, 650, 400, 400)).save(path)
    with pytest.raises(ScoringError, match="pixel size is not in the file") as e:
        score_slide(path, model=fast_model_file)
    assert str(path) in str(e.value)
    fmap = score_slide(path, pixel_size_um=SVS_PIXEL_UM, model=fast_model_file)
    assert fmap.shape == (2, 2)


def test_zstack_auto_picks_sharpest(zstack, fast_model_file):
    path, zs = zstack
    fmap = score_slide(path, model=fast_model_file)  # slice="auto"
    assert fmap.extra["z"] == int(np.argmin(zs)) == 2
    _check_geometry(fmap, (640, 640), SVS_PIXEL_UM)
    events = []
    score_slide(path, model=fast_model_file, progress=events.append)
    assert any(e.stage not in ("tissue", "score") for e in events)  # plane-by-plane sharpness events


def test_zstack_fixed_slice(zstack, fast_model_file):
    path, zs = zstack
    a = score_slide(path, model=fast_model_file, slice=1)
    b = score_slide(path, model=fast_model_file, slice=-3)
    assert a.extra["z"] == b.extra["z"] == 1
    np.testing.assert_array_equal(a.defocus_um, b.defocus_um)
    auto = score_slide(path, model=fast_model_file)
    assert not np.allclose(a.defocus_um, auto.defocus_um)  # another plane, other pixels
    with pytest.raises(ScoringError, match="out of range"):
        score_slide(path, model=fast_model_file, slice=len(zs))


def test_zstack_per_tile(zstack, fast_model_file):
    path, zs = zstack
    fmap = score_slide(path, model=fast_model_file, slice="per-tile")
    best = fmap.extra["best_plane"]
    per = fmap.extra["defocus_per_plane"]
    assert best.shape == fmap.shape and per.shape == (len(zs), *fmap.shape)
    assert fmap.extra["z"] == "per-tile"
    valid = np.isfinite(fmap.defocus_um)
    assert valid.any()
    assert np.all((best[valid] >= 0) & (best[valid] < len(zs)))
    assert np.all(best[~valid] == -1)
    rows, cols = np.nonzero(valid)
    np.testing.assert_allclose(fmap.defocus_um[valid], per[best[valid], rows, cols])
    # The plane is the vertex of the fitted V, within a plane of the smallest reading.
    assert np.all(np.abs(best[valid] - np.nanargmin(np.where(np.isfinite(per), per, np.inf), 0)[valid]) <= 1)
    np.testing.assert_array_equal(best[valid], np.rint(fmap.extra["focus_plane"][valid]))


# ------------------------------------------------------- the shipped default model
def _ki67_hamamatsu():
    from napari_focusq.io.formats import open_image

    with open_image(DATA / "brightfield" / "openslide_OS-2_Ki67_hamamatsu.ome.tif") as src:
        # Two tile columns (705 px each at 0.227 µm/px): one each side of the middle.
        return np.ascontiguousarray(src.read_region(0, 0, 2202, 1410)), src.pixel_size_um


@pytest.mark.skipif(not SHIPPED_FAST.exists(), reason="shipped weights/fast.safetensors not in this checkout")
@pytest.mark.parametrize("case", ["cmu1-training-image", "ki67-never-trained-on"])
def test_default_model_on_half_defocused_slide(slide_crop, case):
    from napari_focusq.demo import make_half_defocused

    if case == "cmu1-training-image":
        crop, px = slide_crop(1900, 600, 960, 1280), SVS_PIXEL_UM
    else:
        crop, px = _ki67_hamamatsu()
        assert px == pytest.approx(0.227, abs=1e-3)
    img = make_half_defocused(crop, pixel_size_um=px, z_um=3.0, modality="brightfield")
    fmap = score_image(img, pixel_size_um=px)  # the default model
    assert fmap.model.startswith("fast")
    half = crop.shape[1] // 2
    left, right = [], []
    for r in range(fmap.shape[0]):
        for c in range(fmap.shape[1]):
            z = fmap.defocus_um[r, c]
            if not np.isfinite(z):
                continue
            _, x0, _, x1 = fmap.tile_bounds(r, c)
            # Tile edges fall on fractional-pixel steps: allow a few pixels across the middle.
            if x1 <= half + 4:
                left.append(z)
            elif x0 >= half - 4:
                right.append(z)
    assert len(left) >= 3 and len(right) >= 3, (left, right)
    assert np.median(left) < 1.0, left
    assert 2.0 <= np.median(right) <= 4.0, right
