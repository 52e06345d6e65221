"""Classical focus measures and sharpest_slice on real and simulated stacks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focusq.optics.psf import simulate_defocus
from napari_focusq.progress import Cancelled, Progress
from napari_focusq.scoring.focus import (
    MEASURES,
    FocusMeasureError,
    focus_measure,
    focus_measures_batch,
    iter_sharpest_slice,
    sharpest_slice,
    variance_of_laplacian,
    variance_of_laplacian_batch,
)

DATA = Path(__file__).parents[2] / "data"


@pytest.fixture(scope="module")
def nuclei_stack(made_stack) -> np.ndarray:
    stack = tifffile.imread(made_stack.path)
    assert stack.shape == (41, 256, 256) and stack.dtype == np.uint16 and made_stack.best == 23
    return stack


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    img = np.asarray(Image.open(DATA / "brightfield" / "histoqc_template1.png").convert("RGB"))
    c = img.shape[0] // 2
    return np.ascontiguousarray(img[c - 80 : c + 80, c - 80 : c + 80])


class PlaneOnly:
    """A stack that can be indexed by plane but refuses to be read whole."""

    def __init__(self, data):
        self._data = data
        self.shape = data.shape
        self.reads = 0

    def __getitem__(self, z):
        assert isinstance(z, (int, np.integer)), "read by plane only"
        self.reads += 1
        return self._data[z]

    def __array__(self, *a, **k):
        raise AssertionError("the whole stack was materialised")


def test_noisy_stack_sharpest_plane(nuclei_stack):
    """Real nuclei defocused in 0.4 µm steps with photon noise: every measure finds plane 23
    (one step either side: 0.4 µm is about a third of the depth of field, where noise can
    tip two neighbouring planes)."""
    idx, scores = sharpest_slice(nuclei_stack, "std")
    assert abs(idx - 23) <= 1
    assert scores.dtype == np.float64 and scores.shape == (41,)
    assert idx == int(np.argmax(scores))
    for m in MEASURES:
        i, s = sharpest_slice(nuclei_stack, m)
        assert np.isfinite(s).all(), m
        assert abs(i - 23) <= 1, (m, i)


@pytest.mark.parametrize("channels", [True, False])
def test_simulated_stack_sharpest_at_true_focus(tissue, channels):
    img = tissue if channels else tissue[..., 1]
    modality = "brightfield" if channels else "fluorescence"
    stack = np.stack([simulate_defocus(img, abs(k - 7), pixel_size_um=0.5, modality=modality)
                      for k in range(15)])
    for m in MEASURES:
        idx, scores = sharpest_slice(stack, m)
        assert idx == 7, (m, scores)
        # Scores fall off on both sides of focus.
        assert scores[6] > scores[3] > scores[0] and scores[8] > scores[11] > scores[14], m


def test_reads_plane_by_plane_numpy_dask_zarr(nuclei_stack):
    import dask.array as da
    import zarr

    sub = nuclei_stack[25:40, :128, :128]
    ref = sharpest_slice(sub)
    lazy = PlaneOnly(sub)
    assert sharpest_slice(lazy)[0] == ref[0]
    assert lazy.reads == sub.shape[0]
    np.testing.assert_array_equal(sharpest_slice(da.from_array(sub, chunks=(1, 64, 64)))[1], ref[1])
    z = zarr.zeros(sub.shape, chunks=(1, 128, 128), dtype=sub.dtype)
    z[:] = sub
    np.testing.assert_array_equal(sharpest_slice(z)[1], ref[1])


def test_progress_events_and_cancel(nuclei_stack):
    sub = nuclei_stack[30:36]
    events: list[Progress] = []
    idx, scores = sharpest_slice(sub, progress=events.append)
    assert len(events) == 7 and events[-1].done == events[-1].total == 6
    gen = iter_sharpest_slice(sub, "brenner")
    assert isinstance(next(gen), Progress)
    with pytest.raises(Cancelled):
        sharpest_slice(sub, progress=lambda ev: ev.done < 2)


def test_one_plane_stack():
    rng = np.random.default_rng(0)
    plane = rng.random((1, 32, 32))
    idx, scores = sharpest_slice(plane, "laplacian")
    assert idx == 0 and scores.shape == (1,) and np.isfinite(scores[0])


def test_bad_stacks_and_measures():
    with pytest.raises(ValueError, match=r"\(Z, Y, X\[, C\]\)"):
        sharpest_slice(np.zeros((32, 32)))
    with pytest.raises(ValueError, match=r"\(Z, Y, X\[, C\]\)"):
        sharpest_slice(np.zeros((2, 3, 8, 8, 1)))
    with pytest.raises(ValueError, match="RGB"):
        sharpest_slice(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(FocusMeasureError, match="brenner"):
        sharpest_slice(np.zeros((2, 8, 8)), "sobel")
    with pytest.raises(ValueError, match="tenengrad"):
        focus_measure(np.zeros((8, 8)), "fft")
    with pytest.raises(ValueError, match="finite"):
        sharpest_slice(np.full((3, 8, 8), np.nan))


def test_nan_and_inf_pixels_are_ignored(nuclei_stack):
    plane = nuclei_stack[34, :96, :96].astype(np.float64)
    holed = plane.copy()
    holed[40:44, 40:44] = np.nan
    holed[0, 0] = np.inf
    for m in MEASURES:
        s = focus_measure(holed, m)
        assert np.isfinite(s), m
        assert s == pytest.approx(focus_measure(plane, m), rel=0.1), m
    stack = np.stack([plane[::-1], np.full_like(plane, np.nan), plane])
    idx, scores = sharpest_slice(stack, "laplacian")
    assert scores[1] == -np.inf and idx in (0, 2)


def test_measures_agree_single_and_batch(tissue):
    tiles = np.stack([tissue, simulate_defocus(tissue, 3.0, pixel_size_um=0.5)])
    for m in MEASURES:
        batch = focus_measures_batch(tiles, m)
        assert batch.shape == (2,) and batch[0] > batch[1], m
        assert batch[0] == pytest.approx(focus_measure(tissue, m))
    np.testing.assert_allclose(variance_of_laplacian_batch(tiles), focus_measures_batch(tiles, "laplacian"))
    # RGB uint8 is measured on its luminance.
    luma = tissue.astype(float) @ [0.299, 0.587, 0.114]
    assert variance_of_laplacian(tissue) == pytest.approx(variance_of_laplacian(luma))
    # A flat plane has no contrast under any measure.
    for m in MEASURES:
        assert focus_measure(np.full((16, 16), 9.0), m) == 0.0
