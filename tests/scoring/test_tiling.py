"""Tile grid geometry, resampling to the working resolution, tissue and modality."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_focusq.scoring.focusmap import FocusMap
from napari_focusq.scoring.grid import ResolutionWarning, TileGrid, TilingError
from napari_focusq.scoring.resample import resample_to_working, tile_to_working
from napari_focusq.scoring.tissue import detect_modality, estimate_white_level, tissue_fraction, tissue_mask

REPO = Path(__file__).resolve().parents[2]
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"
DATA = REPO / "data"


# ----------------------------------------------------------------------- grid
grids = st.builds(
    lambda h, w, px, fy, fx: (h, w, px, fy, fx),
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.floats(0.1, 2.0, allow_nan=False),
    st.floats(0.0, 0.99),
    st.floats(0.0, 0.99),
)


def _grid(h, w, px, fy, fx):
    t = 320 * 0.5 / px
    return TileGrid((h, w), px, origin_px=(-fy * (t - 1), -fx * (t - 1)))


@settings(max_examples=60, deadline=None)
@given(grids)
def test_tiles_cover_every_pixel_once(g):
    grid = _grid(*g)
    h, w = grid.image_shape
    rows, cols = grid.shape
    assert rows == len({grid.tile_bounds(r, 0)[0] for r in range(rows)})
    # Per axis the clipped spans must partition [0, n): contiguous, non-empty.
    ys = [grid.tile_bounds(r, 0)[::2] for r in range(rows)]
    xs = [grid.tile_bounds(0, c)[1::2] for c in range(cols)]
    for spans, n in ((ys, h), (xs, w)):
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a1 == b0 for (_, a1), (b0, _) in zip(spans, spans[1:]))
        assert all(b > a for a, b in spans)
    area = 0
    for r, c in grid.iter_tiles():
        y0, x0, y1, x1 = grid.tile_bounds(r, c)
        area += (y1 - y0) * (x1 - x0)
    assert area == h * w
    assert sum(1 for _ in grid.iter_tiles()) == rows * cols
    # The grid is no bigger than it must be: one tile fewer would miss pixels.
    t = grid.tile_size_px
    assert rows <= math.ceil((h - grid.origin_px[0]) / t)


@settings(max_examples=60, deadline=None)
@given(grids, st.data())
def test_tile_at_centre_and_focusmap_agree(g, data):
    grid = _grid(*g)
    h, w = grid.image_shape
    rows, cols = grid.shape
    fm = FocusMap(
        defocus_um=np.zeros((rows, cols)), tissue_fraction=np.zeros((rows, cols)),
        tile_size_px=grid.tile_size_px, image_shape=(h, w), pixel_size_um=grid.pixel_size_um,
        modality="brightfield", model="test", origin_px=grid.origin_px,
    )
    cells = {(0, 0), (rows - 1, cols - 1), (rows - 1, 0), (0, cols - 1)}
    cells |= {(data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, cols - 1))) for _ in range(5)}
    t = grid.tile_size_px
    for r, c in cells:
        b = grid.tile_bounds(r, c)
        assert b == fm.tile_bounds(r, c)
        y0, x0, y1, x1 = b
        assert grid.tile_at(y0, x0) == (r, c)
        assert grid.tile_at(y1 - 1, x1 - 1) == (r, c)
        assert grid.tile_at(y0 + 0.7, x1 - 0.3) == (r, c)  # fractional coordinates floor
        cy, cx = grid.tile_centre(r, c)
        assert grid.origin_px[0] + r * t <= cy < grid.origin_px[0] + (r + 1) * t
        assert grid.origin_px[1] + c * t <= cx < grid.origin_px[1] + (c + 1) * t
    assert grid.tile_at(-1, 0) is None and grid.tile_at(0, -0.5) is None
    assert grid.tile_at(h, 0) is None and grid.tile_at(0, w) is None


def test_grid_geometry_examples():
    g = TileGrid((2967, 2220), 0.499)
    assert g.tile_size_px == pytest.approx(320 * 0.5 / 0.499)
    assert g.shape == (10, 7)  # 2967 / 320.64 = 9.25 -> 10 rows; 2220 / 320.64 = 6.9 -> 7
    assert g.tile_bounds(9, 6) == (round(9 * g.tile_size_px), round(6 * g.tile_size_px), 2967, 2220)
    # A last sliver that rounds to nothing is not a tile.
    # (tile edge 33.2 px: ceil(100 / 33.2) = 4, but round(3 * 33.2) = 100.)
    g = TileGrid((100, 100), 160 / 33.2)
    assert g.tile_size_px == pytest.approx(33.2)
    assert g.shape == (3, 3) and g.tile_bounds(2, 2) == (66, 66, 100, 100)


@pytest.mark.parametrize("kw", [
    dict(image_shape=(0, 10), pixel_size_um=0.5),
    dict(image_shape=(10, 10), pixel_size_um=0.0),
    dict(image_shape=(10, 10), pixel_size_um=float("nan")),
    dict(image_shape=(10, 10), pixel_size_um=0.5, tile_px=0),
    dict(image_shape=(10, 10), pixel_size_um=0.5, origin_px=(5.0, 0.0)),
    dict(image_shape=(10, 10), pixel_size_um=500.0),
])
def test_grid_rejects_bad_geometry(kw):
    with pytest.raises(TilingError):
        TileGrid(**kw)
    assert issubclass(TilingError, ValueError)


# ------------------------------------------------------------------ resampling
def test_quarter_micron_is_exact_block_mean():
    rng = np.random.default_rng(1)
    img = rng.random((64, 48, 3))
    out = resample_to_working(img, 0.25)
    blocks = img.reshape(32, 2, 24, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(out, blocks, rtol=0, atol=1e-12)
    u8 = (img * 255).astype(np.uint8)
    out8 = resample_to_working(u8, 0.25)
    assert out8.dtype == np.uint8 and out8.shape == (32, 24, 3)
    ref = u8.astype(float).reshape(32, 2, 24, 2, 3).mean(axis=(1, 3))
    assert np.abs(out8 - ref).max() <= 0.5
    gray = resample_to_working(img[..., 0], 0.25)
    np.testing.assert_allclose(gray, blocks[..., 0], atol=1e-12)


def test_non_integer_factor_averages_area():
    img = np.full((705, 705, 3), 77, np.uint8)
    out = resample_to_working(img, 0.227)
    assert out.shape == (320, 320, 3) and out.dtype == np.uint8
    assert (out == 77).all()  # weights sum to one everywhere, edges included
    ramp = np.tile(np.arange(1000, dtype=np.float64), (10, 1))
    r = resample_to_working(ramp, 0.3)
    assert r.shape == (6, 600)
    assert r.mean() == pytest.approx(ramp.mean(), abs=1.0)
    # An area mean of a ramp is close to the ramp at the output pixel's centre
    # (not exactly: the input is a staircase, cut mid-step at most borders).
    centres = (np.arange(600) + 0.5) / 0.6 - 0.5
    np.testing.assert_allclose(r[0], centres, atol=0.07)
    assert np.abs(r[0] - centres).max() > 0.01  # and it is an area mean, not a point sample


def test_within_five_percent_is_untouched():
    img = np.arange(300 * 200 * 3, dtype=np.uint8).reshape(300, 200, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for px in (0.499, 0.5, 0.51, 0.476):
            assert resample_to_working(img, px) is img


def test_coarse_input_warns_and_upsamples():
    img = np.zeros((50, 40), np.uint16)
    img[:, 20:] = 1000
    with pytest.warns(ResolutionWarning, match="coarser than 0.5 µm/px: sub-micrometre defocus is beyond it"):
        out = resample_to_working(img, 1.0)
    assert out.shape == (100, 80) and out.dtype == np.uint16
    assert out[:, :38].max() == 0 and out[:, 42:].min() == 1000
    assert 0 < out[0, 39] < 1000 or 0 < out[0, 40] < 1000  # linear, not nearest


def test_hamamatsu_tile_becomes_320():
    g = TileGrid((2202, 2202), 0.227)
    assert g.tile_size_px == pytest.approx(704.85, abs=0.01)
    y0, x0, y1, x1 = g.tile_bounds(1, 1)
    region = np.random.default_rng(0).integers(0, 255, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    assert resample_to_working(region, 0.227).shape == (320, 320, 3)
    tile, valid = tile_to_working(region, 0.227)
    assert tile.shape == (320, 320, 3) and tile.dtype == np.uint8 and valid == 1.0


def test_partial_tile_is_padded_to_full_size():
    rng = np.random.default_rng(2)
    region = rng.integers(0, 255, (100, 320, 3), dtype=np.uint8)
    tile, valid = tile_to_working(region, 0.5)
    assert tile.shape == (320, 320, 3) and tile.dtype == np.uint8
    assert valid == pytest.approx(100 / 320)
    np.testing.assert_array_equal(tile[:100], region)
    np.testing.assert_array_equal(tile[100], region[98])  # reflection, not zeros
    # Same at 0.25 µm/px: resampled by the same factor, then padded.
    fine = np.repeat(np.repeat(region, 2, 0), 2, 1)[:200, :300]
    tile, valid = tile_to_working(fine, 0.25)
    assert tile.shape == (320, 320, 3)
    assert valid == pytest.approx((100 / 320) * (150 / 320))
    np.testing.assert_array_equal(tile[:100, :150], region[:, :150])
    # A one-pixel sliver still yields a full tile.
    tile, valid = tile_to_working(region[:1, :1], 0.5)
    assert tile.shape == (320, 320, 3) and valid == pytest.approx(1 / 320**2)


def test_full_tile_near_working_resolution_is_not_resampled():
    region = np.random.default_rng(3).integers(0, 255, (321, 320), dtype=np.uint8)
    tile, valid = tile_to_working(region, 0.499)
    assert tile.shape == (320, 320) and valid == 1.0
    np.testing.assert_array_equal(tile, region[:320])


# ----------------------------------------------------------------------- tissue
@pytest.fixture(scope="module")
def svs():
    import tifffile

    return tifffile.imread(SVS)


def test_tissue_on_cmu1(svs):
    assert svs.shape == (2967, 2220, 3) and svs.dtype == np.uint8
    frac = tissue_mask(svs, "brightfield").mean()
    # The region is a strip of skin with glass on both sides: about 35 % tissue.
    assert 0.25 < frac < 0.5, frac
    # Per tile with the slide's white level: glass tiles empty, the dermis full.
    white = estimate_white_level(svs)
    assert 230 < white <= 255
    g = TileGrid(svs.shape[:2], 0.499)
    fr = {}
    for r, c in g.iter_tiles():
        y0, x0, y1, x1 = g.tile_bounds(r, c)
        tile, valid = tile_to_working(svs[y0:y1, x0:x1], 0.499)
        fr[r, c] = tissue_fraction(tile, "brightfield", valid, white_level=white)
    assert fr[0, 0] < 0.02  # top-left corner is glass
    assert max(fr.values()) > 0.95
    assert sum(v > 0.25 for v in fr.values()) >= len(fr) // 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_blank_brightfield_has_no_tissue(dtype):
    top = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    white = np.full((200, 200, 3), top, dtype)
    assert not tissue_mask(white, "brightfield").any()
    black = np.zeros((200, 200, 3), dtype)  # pen / ink
    assert not tissue_mask(black, "brightfield").any()
    assert tissue_fraction(black, "brightfield") == 0.0


def test_ink_and_nan_are_not_tissue():
    img = np.full((100, 100, 3), 240, np.uint8)
    img[:, :50] = (200, 120, 180)  # pink tissue on the left
    img[:20, 60:] = (15, 15, 20)  # black marker on the glass
    m = tissue_mask(img, "brightfield")
    assert m[:, 3:47].all() and not m[:, 53:].any()
    f = img.astype(np.float32) / 255
    f[40:60, 10:30] = np.nan
    f[0, 0, 1] = np.inf
    m = tissue_mask(f, "brightfield")
    assert not m[40:60, 10:30].any() and not m[0, 0] and m[5:35, 5:45].all()
    fl = np.zeros((100, 100), np.float32)
    fl[30:70, 30:70] = 1000
    fl[45:55, 45:55] = np.nan
    m = tissue_mask(fl, "fluorescence")
    assert m[32:44, 32:68].all() and not m[45:55, 45:55].any()


def test_tissue_fraction_valid_forms():
    img = np.full((320, 320, 3), 240, np.uint8)
    img[:160] = (150, 80, 160)
    assert tissue_fraction(img, "brightfield") == pytest.approx(0.5, abs=0.01)
    assert tissue_fraction(img, "brightfield", 0.5) == pytest.approx(0.25, abs=0.01)
    valid = np.zeros((320, 320), bool)
    valid[:80] = True
    assert tissue_fraction(img, "brightfield", valid) == pytest.approx(0.25, abs=0.01)
    with pytest.raises(TilingError):
        tissue_fraction(img, "brightfield", np.ones((10, 10), bool))
    with pytest.raises(TilingError):
        tissue_mask(img, "phase")


def test_fluorescence_nuclei_detected():
    import tifffile

    nuc = tifffile.imread(DATA / "fluorescence" / "nuclei_dsb2018.tif")
    frac = tissue_mask(nuc, "fluorescence").mean()
    assert 0.05 < frac < 0.7, frac
    # Brighter than the rest on average: the mask is on the nuclei, not the background.
    m = tissue_mask(nuc, "fluorescence")
    assert nuc[m].mean() > 2 * nuc[~m].mean()
    assert not tissue_mask(np.zeros((256, 256), np.uint16), "fluorescence").any()
    noise = np.random.default_rng(0).poisson(5, (256, 256)).astype(np.uint16)
    assert tissue_mask(noise, "fluorescence").mean() < 0.01
    # Multichannel: signal in any channel counts.
    two = np.stack([np.zeros_like(nuc), nuc], axis=-1)
    assert tissue_mask(two, "fluorescence").mean() == pytest.approx(frac, abs=1e-9)


# --------------------------------------------------------------------- modality
def test_detect_modality_on_real_images(svs, made_stack):
    import skimage.io
    import tifffile

    mod, why = detect_modality(svs)
    assert mod == "brightfield" and "RGB uint8" in why and "bright background" in why
    he = skimage.io.imread(DATA / "brightfield" / "histoqc_template1.png")
    assert detect_modality(he)[0] == "brightfield"
    nuc = tifffile.imread(DATA / "fluorescence" / "nuclei_dsb2018.tif")
    mod, why = detect_modality(nuc)
    assert mod == "fluorescence" and "single channel" in why
    stack = made_stack.data
    assert detect_modality(stack[stack.shape[0] // 2])[0] == "fluorescence"
    rgb_dark = skimage.io.imread(DATA / "fluorescence" / "mahotas_nuclear.png")
    mod, why = detect_modality(rgb_dark)
    assert mod == "fluorescence" and "dark background" in why
    mod, why = detect_modality(np.zeros((10, 10, 5), np.uint16))
    assert mod == "fluorescence" and "not RGB" in why
    with pytest.raises(TilingError):
        detect_modality(np.zeros((2, 3, 4, 5)))


def test_coarse_tile_warns_and_fills_the_tile():
    region = np.full((160, 100, 3), 200, np.uint8)
    with pytest.warns(ResolutionWarning):
        tile, valid = tile_to_working(region, 1.0)
    assert tile.shape == (320, 320, 3) and (tile == 200).all()
    assert valid == pytest.approx(200 / 320)
