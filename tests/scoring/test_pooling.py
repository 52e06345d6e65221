"""Weighted spatial pooling of tile defocus (pooling.py) and its place in summaries and results.tsv."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_focusq.scoring.focusmap import FocusMap
from napari_focusq.scoring.pooling import pooled_defocus, pooled_from_map, tile_information

DATA = Path(__file__).resolve().parents[2] / "data"


def _map(d, t, **extra):
    d = np.asarray(d, np.float32)
    return FocusMap(defocus_um=d, tissue_fraction=np.asarray(t, np.float32), tile_size_px=100,
                    image_shape=(100 * d.shape[0], 100 * d.shape[1]), pixel_size_um=0.5,
                    modality="fluorescence", model="test", extra=extra)


def test_without_emphasis_or_information_it_is_the_tissue_weighted_mean():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 6, (6, 7))
    t = rng.uniform(0.2, 1, (6, 7))
    d[0, 0] = np.nan
    fm = _map(d, t)
    assert pooled_defocus(d, t, emphasis=1.0) == pytest.approx(fm.summary()["mean_um"], rel=1e-6)


def test_worst_tenth_is_emphasised():
    d = np.array([[0.5] * 9 + [6.0]])
    t = np.ones_like(d)
    # 9 tiles at 0.5 µm, one at 6 µm: mean 1.05; the worst tile (10 % of the tissue) counts 4x.
    assert pooled_defocus(d, t, emphasis=1) == pytest.approx(1.05)
    assert pooled_defocus(d, t) == pytest.approx((9 * 0.5 + 4 * 6.0) / 13)
    # A badly focused region moves the pooled score more than the mean.
    d2 = d.copy()
    d2[0, -1] = 8.0
    assert pooled_defocus(d2, t) - pooled_defocus(d, t) > 2 * (np.mean(d2) - np.mean(d))


def test_information_weights_tiles():
    d = np.array([[1.0, 3.0]])
    t = np.ones_like(d)
    even = pooled_defocus(d, t, np.array([[1.0, 1.0]]), emphasis=1)
    rich_blur = pooled_defocus(d, t, np.array([[1.0, 3.0]]), emphasis=1)
    assert even == pytest.approx(2.0)
    assert rich_blur == pytest.approx((1 * 1 + 3 * 3) / 4)
    # NaN information counts as a typical tile, it does not drop the tile.
    assert pooled_defocus(d, t, np.array([[np.nan, 1.0]]), emphasis=1) == pytest.approx(2.0)


def test_empty_and_bad_arguments():
    assert np.isnan(pooled_defocus(np.full((2, 2), np.nan), np.ones((2, 2))))
    with pytest.raises(ValueError, match="emphasis"):
        pooled_defocus(np.ones((2, 2)), np.ones((2, 2)), emphasis=0.5)
    with pytest.raises(ValueError, match="worst_fraction"):
        pooled_defocus(np.ones((2, 2)), np.ones((2, 2)), worst_fraction=2)
    with pytest.raises(ValueError, match="differ"):
        pooled_defocus(np.ones((2, 2)), np.ones((2, 3)))


def test_information_measures_content_not_sharpness():
    import tifffile

    from napari_focusq.optics.psf import simulate_defocus

    img = tifffile.imread(DATA / "fluorescence" / "nuclei_dsb2018.tif").astype(np.float32)
    tile = img[:320, :320]
    blurred = simulate_defocus(tile, 2.0, pixel_size_um=0.5, modality="fluorescence")
    flat = np.full_like(tile, 100.0)
    sparse = np.where(np.arange(320)[:, None] < 40, tile, np.percentile(tile, 5))
    info = tile_information(np.stack([tile, blurred, flat, sparse]), "fluorescence")
    assert info[2] == 0.0
    # 8x8 block means at 0.5 µm/px average over 4 µm, about the 2 µm PSF's blur diameter,
    # so the defocus moves them little (0.6 % measured; 5 % allowed) while a sharpness
    # measure on the same pair falls by more than half: content, not sharpness.
    from napari_focusq.scoring.focus import variance_of_laplacian

    assert abs(info[1] - info[0]) < 0.05 * info[0]
    assert variance_of_laplacian(blurred) < 0.5 * variance_of_laplacian(tile)
    assert info[3] < info[0]
    rgb = (np.random.default_rng(1).random((1, 320, 320, 3)) * 255).astype(np.uint8)
    assert tile_information(rgb)[0] > 0


def test_summary_and_results_row_carry_pooled_score(tmp_path):
    from napari_focusq.export.results import RESULTS_COLUMNS, append_results, read_results, results_row

    d = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 6.0]])
    fm = _map(d, np.ones_like(d), information=np.ones_like(d),
              uncertain=np.array([[0, 0, 0], [0, 0, 1]], bool))
    s = fm.summary()
    assert s["pooled_um"] == pytest.approx(pooled_from_map(fm)) and s["pooled_um"] > s["mean_um"]
    assert s["uncertain_pct"] == pytest.approx(100 / 6)
    # added after the first columns, in place (later additions follow them)
    i = RESULTS_COLUMNS.index("error") + 1
    assert RESULTS_COLUMNS[i:i + 2] == ("pooled_um", "uncertain_pct")
    row = results_row(fm, stem="x", input_path="x.tif", seconds=1.0)
    append_results(tmp_path / "results.tsv", row)
    got = read_results(tmp_path / "results.tsv")[0]
    assert float(got["pooled_um"]) == pytest.approx(s["pooled_um"], abs=1e-3)
    assert float(got["uncertain_pct"]) == pytest.approx(16.67, abs=0.01)
