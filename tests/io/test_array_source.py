"""Array sources: tissue from a coarse or strided view (never level 0 whole before the first
tile), and the integer path of the pooling weights."""
from __future__ import annotations

import numpy as np
import pytest

from napari_focusq.io.arrays import ArraySource, LevelsSource
from napari_focusq.progress import drive
from napari_focusq.scoring.pipeline import iter_score_source


class Recording:
    """A lazy array (like zarr or dask): records every index it is read with."""

    def __init__(self, a, log, level):
        self.a, self.log, self.level = a, log, level
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim

    def __getitem__(self, idx):
        out = np.asarray(self.a[idx])
        self.log.append((self.level, idx, out.shape))
        return out


@pytest.fixture(scope="module")
def slide_img():
    from napari_focusq.io.formats import open_image, sample_slide_path

    with open_image(sample_slide_path()) as src:
        return src.read_plane()


def test_levels_source_reads_tissue_from_a_coarse_level_and_tiles_in_strips(slide_img, fast_model_file):
    log = []
    levels = [slide_img, slide_img[::2, ::2], slide_img[::4, ::4]]
    src = LevelsSource([Recording(a, log, i) for i, a in enumerate(levels)], 0.25, name="pyramid")
    assert src.downsamples == pytest.approx([1, 2, 4], rel=1e-3) and src.level_for(0.5) == 1
    fmap = drive(iter_score_source(src, model=fast_model_file, threads=2))
    assert fmap.extra["level"] == 1 and np.isfinite(fmap.defocus_um).any()
    assert 0 not in {lv for lv, *_ in log}  # level 0 never read: it is finer than the model needs
    thumb = [(lv, shp) for lv, idx, shp in log if isinstance(idx, tuple) and idx[0].step not in (None, 1)]
    # The thumbnail: the coarsest level at least 1024 px long (level 1, 1484 px), every 2nd pixel.
    assert thumb == [(1, (742, 555, 3))]
    strips = [shp for lv, idx, shp in log if lv == 1 and (isinstance(idx, tuple) and idx[0].step is None)]
    assert strips and max(s[0] for s in strips) <= 321  # one row of 320 px tiles at a time


def test_array_source_thumbnail_is_strided_before_it_is_read(slide_img):
    log = []
    src = ArraySource(Recording(slide_img, log, 0), 0.5)
    t = src.thumbnail(1024)
    assert t.shape == (989, 740, 3)  # every 3rd pixel of 2967 x 2220
    assert len(log) == 1 and log[0][1][0].step == 3  # one strided read, not the whole array
    np.testing.assert_array_equal(t, slide_img[::3, ::3])


def test_tile_information_integer_path_equals_the_float_formula():
    from napari_focusq.scoring.pooling import tile_information

    rng = np.random.default_rng(3)
    tiles = rng.integers(0, 256, (6, 320, 320, 3), dtype=np.uint8)
    tiles[0] = 255  # blank glass: information 0
    tiles[1, ..., 1] = np.where((np.arange(320) // 8) % 2 == 0, 40, 200)[None, :]
    for t, modality in ((tiles, "brightfield"), (tiles[..., 1], "brightfield"), (tiles[..., 0], "fluorescence")):
        got = tile_information(t, modality)
        # The formula, in float64: log(1 + std of 8x8 block means) on the 0-255 scale
        # (fluorescence: the block means' 0.5-99.5 % range mapped to 0-255).
        g = (t[..., 1] if t.ndim == 4 else t).astype(np.float64)
        blocks = g.reshape(len(g), 40, 8, 40, 8).mean((2, 4))
        if modality == "fluorescence":
            lo = np.percentile(blocks, 0.5, axis=(1, 2), keepdims=True)
            hi = np.percentile(blocks, 99.5, axis=(1, 2), keepdims=True)
            blocks = (blocks - lo) * (255.0 / np.maximum(hi - lo, 1e-6))
        want = np.log1p(blocks.reshape(len(g), -1).std(1))
        # float32 arithmetic against float64: a few units in the last place of ~5
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert tile_information(tiles, "brightfield")[0] == 0
    # Partial (non multiple of 8) tiles take the float path and agree with it on the crop.
    odd = tiles[:, :317, :317]
    np.testing.assert_allclose(tile_information(odd), tile_information(np.ascontiguousarray(odd[:, :312, :312])),
                               rtol=1e-6)


def test_jpeg_tiles_decode_on_two_workers(tmp_path, slide_img):
    """tifffile leaves a 2-core machine one decode worker (every tile of a strip in turn on
    zarr's I/O thread); compressed slides get two, uncompressed ones keep tifffile's choice."""
    import tifffile

    from napari_focusq.io.formats import open_image

    jpeg, raw = tmp_path / "jpeg.tif", tmp_path / "raw.tif"
    tifffile.imwrite(jpeg, slide_img[:1024, :1024], tile=(256, 256), compression="jpeg", photometric="rgb")
    tifffile.imwrite(raw, slide_img[:1024, :1024], photometric="rgb")
    with open_image(jpeg) as src:
        assert src._raw[0].store_path.store._maxworkers >= 2
        np.testing.assert_allclose(src.read_region(100, 300, 400, 500).astype(float).mean(),
                                   slide_img[100:500, 300:800].astype(float).mean(), atol=1.0)  # JPEG error
    with open_image(raw) as src:
        assert src._raw[0].store_path.store._maxworkers == 1
        np.testing.assert_array_equal(src.read_region(100, 300, 400, 500), slide_img[100:500, 300:800])


def test_closing_the_generator_drops_queued_strips(slide_img, fast_model_file):
    """A cancel closes the generator at a batch; the strips queued behind it are never read."""
    import threading
    import time

    row = np.concatenate([slide_img, slide_img[:, ::-1], slide_img], 1)
    big = np.concatenate([row, row[::-1]], 0)  # ~190 tissue tiles in ~50 strips
    lock, n = threading.Lock(), {"reads": 0}

    class Slow(ArraySource):
        def read_region(self, *a, **kw):
            with lock:
                n["reads"] += 1
            time.sleep(0.2)  # a slow file: the queue is still full when the first batch is out
            return super().read_region(*a, **kw)

    gen = iter_score_source(Slow(big, 0.5), model=fast_model_file, threads=2, batch_size=16)
    for ev in gen:
        if ev.stage == "score" and ev.data.get("tiles"):
            break
    before = n["reads"]
    gen.close()
    after = n["reads"]
    full = Slow(big, 0.5)
    n["reads"] = 0
    drive(iter_score_source(full, model=fast_model_file, threads=2, batch_size=16))
    # At most the two workers' next strips slip in between the count and the cancel.
    assert after - before <= 2 and after < n["reads"], (before, after, n["reads"])
