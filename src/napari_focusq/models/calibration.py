"""Monotone calibration (predicted µm -> true µm) by isotonic regression.

Fitted on the validation split after training, stored as knots in the model's
metadata and applied by linear interpolation, so the calibrated fit is y = x.
"""
from __future__ import annotations

import numpy as np


def fit_isotonic(pred, true, n_knots: int = 64) -> dict:
    """Pool-adjacent-violators fit of true ~ pred, reduced to at most ``n_knots`` knots."""
    pred = np.asarray(pred, float)
    true = np.asarray(true, float)
    order = np.argsort(pred, kind="stable")
    x, y = pred[order], true[order]
    # PAV: merge neighbouring blocks while they decrease.
    vals, wts, xs = [], [], []
    for xi, yi in zip(x, y):
        vals.append(yi)
        wts.append(1.0)
        xs.append([xi])
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, x2 = vals.pop(), wts.pop(), xs.pop()
            v1, w1 = vals[-1], wts[-1]
            vals[-1] = (v1 * w1 + v2 * w2) / (w1 + w2)
            wts[-1] = w1 + w2
            xs[-1].extend(x2)
    kx = np.array([np.mean(b) for b in xs])
    ky = np.array(vals)
    if len(kx) > n_knots:
        idx = np.unique(np.linspace(0, len(kx) - 1, n_knots).round().astype(int))
        kx, ky = kx[idx], ky[idx]
    # Strictly increasing x for np.interp; keep y non-decreasing.
    kx, keep = np.unique(kx, return_index=True)
    ky = np.maximum.accumulate(ky[keep])
    return {"x": kx.round(5).tolist(), "y": ky.round(5).tolist()}


def apply_calibration(pred, calib: dict | None) -> np.ndarray:
    """Map raw predictions through the knots; beyond the last knot keep slope 1."""
    pred = np.asarray(pred, float)
    if not calib or len(calib.get("x", ())) < 2:
        return pred
    x, y = np.asarray(calib["x"]), np.asarray(calib["y"])
    out = np.interp(pred, x, y)
    hi = pred > x[-1]
    out[hi] = y[-1] + (pred[hi] - x[-1])
    lo = pred < x[0]
    out[lo] = y[0] + (pred[lo] - x[0])
    # |z| is never negative; clipping everywhere (not only below the first knot, whose
    # y may itself be < 0) keeps the map monotone.
    return np.maximum(out, 0.0)


def crossfit_calibration(pred, true, sources) -> np.ndarray | None:
    """Calibrated predictions that are out of sample: each source's tiles mapped by an
    isotonic fit to the *other* sources' tiles. None with fewer than two sources.

    The shipped map is fitted on every validation tile, so figures of the calibrated
    predictions on those tiles are in-sample; this is the honest figure beside them.
    """
    pred, true, sources = np.asarray(pred, float), np.asarray(true, float), np.asarray(sources)
    ids = np.unique(sources)
    if len(ids) < 2:
        return None
    out = np.empty_like(pred)
    for s in ids:
        own = sources == s
        out[own] = apply_calibration(pred[own], fit_isotonic(pred[~own], true[~own]))
    return out
