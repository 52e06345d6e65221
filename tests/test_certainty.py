"""Per-tile certainty from the ensemble spread (certainty.py) and its outputs."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_focusq.certainty import (FALLBACK_FACTOR, certainty_layers, expected_error, fit_certainty,
                                     model_certainty)
from napari_focusq.focusmap import CSV_COLUMNS, FocusMap


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
    assert CSV_COLUMNS[9:] == ("certainty", "uncertain")
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
