"""Per-tile certainty from the spread of the fast model's ensemble.

The fast model has several heads trained on bootstrap subsets; where they disagree the
tile looks unlike the training data and the prediction is less reliable. Training fits,
on the held-out validation tiles, a monotone map from the ensemble spread ``s`` (and the
predicted defocus ``d``, since errors grow with |z|) to the expected absolute error:

    u = s + ALPHA · d            (one scalar per tile, µm)
    E(u) = isotonic fit of |prediction − truth| against u, on validation tiles

stored in the model metadata as ``meta["certainty"] = {"u": [...], "error_um": [...],
"alpha": ALPHA}``. A tile's certainty is ``exp(−E / 1 µm)`` in [0, 1] (E = 0.1 µm gives
0.90, 0.5 µm gives 0.61, 1 µm gives 0.37); tiles with ``E > max_error_um`` (default 1 µm)
are marked *uncertain*: still scored and shown, not excluded.

Models without the metadata (older checkpoints) get ``E = FALLBACK_FACTOR · s``, an
uncalibrated rule of thumb (bootstrap ensembles typically under-state the error by a
factor of a few), and the pipeline notes that.
"""
from __future__ import annotations

import numpy as np

#: Weight of the predicted defocus in the certainty score u = spread + ALPHA * defocus.
ALPHA = 0.05
#: Expected error per µm of spread for models without a fitted certainty map.
FALLBACK_FACTOR = 3.0
#: Tiles with a larger expected |error| (µm) are marked uncertain.
MAX_ERROR_UM = 1.0
#: E at which certainty is 1/e.
CERTAINTY_SCALE_UM = 1.0


def certainty_score(spread_um, defocus_um, alpha: float = ALPHA) -> np.ndarray:
    """The scalar ``u = spread + alpha * defocus`` the certainty map is fitted on (µm)."""
    return np.asarray(spread_um, np.float64) + alpha * np.clip(np.asarray(defocus_um, np.float64), 0, None)


def fit_certainty(spread_um, pred_um, true_um, *, alpha: float = ALPHA, knots: int = 24) -> dict:
    """Fit the map u -> expected |error| on validation tiles (isotonic regression, thinned to knots).

    Parameters
    ----------
    spread_um, pred_um, true_um
        Ensemble spread, calibrated prediction and true |z| of validation tiles.
    alpha
        Weight of the prediction in u.
    knots
        At most this many (u, error) knots are kept.

    Returns
    -------
    dict
        ``{"alpha", "u", "error_um", "n"}``, JSON-ready, for ``meta["certainty"]``.
    """
    from .models.calibration import fit_isotonic

    s = np.asarray(spread_um, float)
    p = np.asarray(pred_um, float)
    t = np.asarray(true_um, float)
    ok = np.isfinite(s) & np.isfinite(p) & np.isfinite(t)
    if ok.sum() < 10:
        raise ValueError(f"need at least 10 validation tiles with a spread to fit certainty; got {int(ok.sum())}")
    u = certainty_score(s[ok], p[ok], alpha)
    fit = fit_isotonic(u, np.abs(p[ok] - t[ok]), n_knots=knots)
    return {"alpha": float(alpha), "u": fit["x"], "error_um": fit["y"], "n": int(ok.sum())}


def expected_error(spread_um, defocus_um, calibration: dict | None) -> np.ndarray:
    """Expected |error| (µm) per tile; NaN where spread or defocus is NaN.

    Beyond the last fitted knot the error grows 1:1 with u (conservative); without a
    calibration it is ``FALLBACK_FACTOR * spread``.
    """
    s = np.asarray(spread_um, float)
    d = np.asarray(defocus_um, float)
    if not calibration or len(calibration.get("u", ())) < 2:
        return FALLBACK_FACTOR * s
    u = certainty_score(s, d, float(calibration.get("alpha", ALPHA)))
    x, y = np.asarray(calibration["u"], float), np.asarray(calibration["error_um"], float)
    out = np.interp(u, x, y)
    hi = u > x[-1]
    out[hi] = y[-1] + (u[hi] - x[-1])
    out[~np.isfinite(u)] = np.nan
    return out


def certainty_layers(spread_um, defocus_um, calibration: dict | None, *,
                     max_error_um: float = MAX_ERROR_UM) -> dict:
    """Per-tile layers for ``FocusMap.extra``: expected error, certainty in [0, 1], uncertain flag.

    Returns
    -------
    dict
        ``{"expected_error_um": float32 grid, "certainty": float32 grid (NaN = not scored),
        "uncertain": bool grid}``.
    """
    if not max_error_um > 0:
        raise ValueError(f"max_error_um must be > 0; got {max_error_um}")
    e = expected_error(spread_um, defocus_um, calibration)
    with np.errstate(invalid="ignore"):
        cert = np.exp(-e / CERTAINTY_SCALE_UM)
        uncertain = np.isfinite(e) & (e > max_error_um)
    return {"expected_error_um": e.astype(np.float32), "certainty": cert.astype(np.float32),
            "uncertain": uncertain}


def model_certainty(model) -> dict | None:
    """The fitted certainty map in a FocusModel's metadata, or None."""
    meta = getattr(model, "meta", None) or {}
    c = meta.get("certainty")
    return c if isinstance(c, dict) and len(c.get("u", ())) >= 2 else None


__all__ = ["fit_certainty", "expected_error", "certainty_layers", "certainty_score", "model_certainty",
           "MAX_ERROR_UM"]
