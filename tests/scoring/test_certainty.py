"""Per-tile certainty from the ensemble spread (certainty.py) and its outputs."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_focusq.scoring.certainty import (
    FALLBACK_FACTOR,
    certainty_layers,
    expected_error,
    fit_certainty,
    model_certainty,
)
from napari_focusq.scoring.focusmap import CSV_COLUMNS, FocusMap


def _validation(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 6, n)
    spread = rng.gamma(2.0, 0.1, n)
    pred = np.abs(true + rng.normal(0, 2.0 * spread))
    return spread, pred, true


def test_fit_is_monotone_and_ranks_errors():
    s, p, t = _validation()
    cal = fit_certainty(s, p, t)
    assert cal["n"] == len(s) and len(cal["u"]) >= 2
    assert np.all(np.diff(cal["error_um"]) >= 0) and np.all(np.diff(cal["u"]) > 0)
    # On fresh tiles, the 10 % least certain carry well over twice the error of the rest.
    s2, p2, t2 = _validation(seed=1)
    e = expected_error(s2, p2, cal)
    err = np.abs(p2 - t2)
    worst = e >= np.quantile(e, 0.9)
    assert err[worst].mean() >= 2 * err[~worst].mean()
    # Expected error tracks the real mean error (calibrated, within 30 %).
    assert e.mean() == pytest.approx(err.mean(), rel=0.3)


def test_layers_range_flags_and_nan():
    s, p, t = _validation()
    cal = fit_certainty(s, p, t)
    spread = np.array([[0.01, 0.2], [2.0, np.nan]])
    d = np.array([[1.0, 1.0], [1.0, np.nan]])
    lay = certainty_layers(spread, d, cal, max_error_um=1.0)
    c = lay["certainty"]
    assert np.isnan(c[1, 1]) and np.all((c[np.isfinite(c)] > 0) & (c[np.isfinite(c)] <= 1))
    assert c[0, 0] > c[0, 1] > c[1, 0]
    assert lay["uncertain"].tolist() == [[False, False], [True, False]]
    # Beyond the fitted range the expected error keeps growing.
    assert expected_error(np.array([10.0]), np.array([1.0]), cal)[0] > cal["error_um"][-1]


def test_fallback_without_calibration_and_bad_input():
    e = expected_error(np.array([0.1, 0.4]), np.array([1.0, 1.0]), None)
    assert e.tolist() == pytest.approx([0.1 * FALLBACK_FACTOR, 0.4 * FALLBACK_FACTOR])
    assert model_certainty(object()) is None
    with pytest.raises(ValueError, match="10 validation tiles"):
        fit_certainty([0.1] * 5, [1] * 5, [1] * 5)
    with pytest.raises(ValueError, match="max_error_um"):
        certainty_layers(np.ones((1, 1)), np.ones((1, 1)), None, max_error_um=0)


def test_tiles_csv_has_trailing_certainty_columns(tmp_path):
    assert CSV_COLUMNS[:9] == ("row", "col", "y", "x", "height", "width", "tissue_fraction", "defocus_um",
                               "excluded")
    assert CSV_COLUMNS[9:11] == ("certainty", "uncertain")
    assert CSV_COLUMNS[-1] == "nonfinite_px"
    d = np.array([[0.5, np.nan], [3.0, 1.0]], np.float32)
    lay = certainty_layers(np.array([[0.05, np.nan], [0.6, 0.1]]), d, None)
    fm = FocusMap(defocus_um=d, tissue_fraction=np.ones((2, 2)), tile_size_px=10, image_shape=(20, 20),
                  pixel_size_um=0.5, modality="fluorescence", model="m", extra=lay)
    rows = list(csv.DictReader(open(fm.to_csv(tmp_path / "t.csv"))))
    assert [r["uncertain"] for r in rows] == ["0", "", "1", "0"]
    assert float(rows[0]["certainty"]) == pytest.approx(np.exp(-0.15), abs=1e-4)
    assert rows[1]["certainty"] == ""
    # A map without certainty still writes the columns, empty.
    plain = FocusMap(defocus_um=d, tissue_fraction=np.ones((2, 2)), tile_size_px=10, image_shape=(20, 20),
                     pixel_size_um=0.5, modality="fluorescence", model="m")
    rows = list(csv.DictReader(open(plain.to_csv(tmp_path / "p.csv"))))
    assert all(r["certainty"] == "" and r["uncertain"] == "" for r in rows)


def _noisy_tiles(photons, n=4, seed=0):
    """Smooth random structure (Gaussian-filtered), imaged at `photons` at the bright end."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    clean = np.stack([gaussian_filter(rng.random((64, 64)), 3) for _ in range(n)])
    clean = (clean - clean.min()) / np.ptp(clean)
    return rng.poisson(clean * photons).astype(np.float32)


def test_noise_ratio_falls_with_photons_and_ignores_scale_and_offset():
    from napari_focusq.scoring.certainty import noise_ratio

    dim, bright = noise_ratio(_noisy_tiles(30), "fluorescence"), noise_ratio(_noisy_tiles(30000), "fluorescence")
    assert dim.shape == (4,) and dim.dtype == np.float32
    assert np.all(dim > 3 * bright)
    t = _noisy_tiles(300)
    assert noise_ratio(7 * t + 1000, "fluorescence") == pytest.approx(noise_ratio(t, "fluorescence"), rel=1e-4)
    # Multichannel fluorescence: the channels' maximum, as the model sees it.
    multi = np.stack([t, np.zeros_like(t)], -1)
    assert noise_ratio(multi, "fluorescence") == pytest.approx(noise_ratio(t, "fluorescence"), rel=1e-5)
    assert noise_ratio(np.full((2, 8, 8), 5.0), "fluorescence").tolist() == [0.0, 0.0]  # constant: no ratio
    with pytest.raises(ValueError, match="shape"):
        noise_ratio(np.zeros((8, 8)), "fluorescence")


def test_training_keeps_the_score_that_ranks_validation_errors_and_says_so():
    from napari_focusq.scoring.certainty import least_certain_ratio, uses_noise

    rng = np.random.default_rng(0)
    n = 1500
    true = rng.uniform(0, 6, n)
    noise = 10 ** rng.uniform(-2.5, -0.5, n)
    spread = rng.gamma(2.0, 0.1, n)  # unrelated to the error here
    pred = np.abs(true + rng.normal(0, 3 * noise))
    sources = np.repeat([0, 1, 2], n // 3)
    cal = fit_certainty(spread, pred, true, noise=noise, sources=sources)
    assert cal["score"] == "noise" and uses_noise(cal)
    assert cal["selection"]["noise"] > 2 > cal["selection"]["spread"]
    err = np.abs(pred - true)
    assert cal["selection"]["noise"] == pytest.approx(least_certain_ratio(np.log10(noise), err, sources), abs=1e-4)
    e = expected_error(spread, pred, cal, noise)
    assert np.all(np.diff(e[np.argsort(noise)]) >= -1e-12)  # monotone in the noise ratio
    assert e.mean() == pytest.approx(err.mean(), rel=0.3)
    # Noisier than any validation tile: the expected error keeps growing; no ratio: NaN.
    far = expected_error(np.array([0.1, 0.1]), np.array([1.0, 1.0]), cal, np.array([10.0, np.nan]))
    assert far[0] > cal["error_um"][-1] and np.isnan(far[1])
    # Where the spread carries the error, the spread is kept; old files without "score" read as spread.
    s, p, t = _validation()
    cal2 = fit_certainty(s, p, t, noise=rng.uniform(0.01, 0.1, len(s)))
    assert cal2["score"] == "spread" and not uses_noise(cal2)
    legacy = {k: cal2[k] for k in ("alpha", "u", "error_um", "n")}
    assert np.array_equal(expected_error(s, p, legacy), expected_error(s, p, cal2))


def test_certainty_report_gives_the_benchmarks_figures():
    from napari_focusq.scoring.certainty import certainty_report, format_certainty_report

    rng = np.random.default_rng(3)
    n = 600
    true = rng.uniform(0, 6, n)
    noise = 10 ** rng.uniform(-2.5, -0.5, n)
    spread = rng.gamma(2.0, 0.1, n)
    pred = np.abs(true + rng.normal(0, 3 * noise))
    cal = fit_certainty(spread, pred, true, noise=noise)
    rep = certainty_report(pred, true, spread, noise, cal, sources=np.arange(n) % 2)
    err = np.abs(pred - true)
    worst = expected_error(spread, pred, cal, noise) >= np.quantile(expected_error(spread, pred, cal, noise), 0.9)
    assert rep["ratio"] == pytest.approx(err[worst].mean() / err[~worst].mean())
    assert rep["ratio_by_score"]["noise"] > 2 > rep["ratio_by_score"]["spread"]
    assert set(rep["ratio_by_score"]) == {"spread", "spread/image", "noise", "noise/image"}
    assert rep["real_um"] == pytest.approx(err.mean()) and 0 <= rep["uncertain"] <= 1
    text = format_certainty_report(rep, cal)
    assert "calibrated on the noise score" in text and f"{rep['ratio']:.2f}x" in text


def test_pipeline_measures_noise_only_for_maps_fitted_on_it():
    """score_image computes each tile's noise ratio in the decode workers when the model's
    certainty map needs it, and its certainty then follows it; a spread map skips the work."""
    import copy

    from napari_focusq.models import load_model
    from napari_focusq.scoring.certainty import noise_ratio
    from napari_focusq.scoring.pipeline import score_image

    fm = load_model("default", modality="fluorescence")
    assert fm.meta["certainty"]["score"] == "noise"
    from napari_focusq.training.data import load_training_image
    from napari_focusq.training.recipes import FLUORESCENCE_TEST, data_image

    rng = np.random.default_rng(0)
    cells = load_training_image(data_image(FLUORESCENCE_TEST[0], "fluorescence"), "fluorescence")
    clean = np.pad(cells, ((0, 320), (0, 960)), mode="symmetric")[:320, :960]
    clean = clean / np.percentile(clean, 99.5)
    # Three tiles side by side, alike in brightness, imaged with 20, 200 and 20000 photons.
    img = np.concatenate([rng.poisson(clean[:, i * 320:(i + 1) * 320] * ph) * (1000 / ph)
                          for i, ph in enumerate((20, 200, 20000))], 1).astype(np.float32)
    fmap = score_image(img, pixel_size_um=0.5, modality="fluorescence", model=fm)
    nr = fmap.extra["noise_ratio"][0]
    assert nr == pytest.approx(noise_ratio(img.reshape(320, 3, 320).transpose(1, 0, 2), "fluorescence"), rel=1e-5)
    assert nr[0] > nr[1] > nr[2]
    assert fmap.extra["expected_error_um"][0, 0] >= fmap.extra["expected_error_um"][0, 2]
    spread_model = copy.copy(fm)
    spread_model.meta = {**fm.meta, "certainty": {**fm.meta["certainty"], "score": "spread"}}
    fmap2 = score_image(img, pixel_size_um=0.5, modality="fluorescence", model=spread_model)
    assert "noise_ratio" not in fmap2.extra and np.isfinite(fmap2.extra["certainty"]).all()
