"""Per-tile certainty: an expected |error| per tile, calibrated on held-out validation tiles.

Two scores can drive it; training keeps the one whose least certain tenth carries the most
error on the validation images (DESIGN-NOTES, fluorescence round 9):

* ``"spread"``: the fast model's heads are trained on bootstrap subsets; where they
  disagree the tile looks unlike the training data. ``u = s + ALPHA · d`` (spread ``s``,
  predicted defocus ``d``, since errors grow with |z|).
* ``"noise"``: the tile's noise-to-signal ratio, ``u = log10(median |Laplacian| / range)``
  of the model's intensity input (:func:`noise_ratio`). Photon noise hides the fine
  detail the reading rests on, and unlike the heads' spread it does not vanish when
  every head shares a bias.

``E(u)`` is an isotonic fit of |prediction − truth| against ``u`` on the validation tiles,
stored in the model metadata as ``meta["certainty"] = {"score", "u", "error_um", "alpha",
"n", "selection"}`` (files without ``score`` use ``"spread"``). A tile's certainty is
``exp(−E / 1 µm)`` in [0, 1] (E = 0.1 µm gives 0.90, 0.5 µm gives 0.61, 1 µm gives 0.37);
tiles with ``E > max_error_um`` (default 1 µm) are marked *uncertain*: still scored and
shown, not excluded.

Models without the metadata (older checkpoints) get ``E = FALLBACK_FACTOR · s``, an
uncalibrated rule of thumb (bootstrap ensembles typically under-state the error by a
factor of a few), and the pipeline notes that.
"""
from __future__ import annotations

import numpy as np

#: Weight of the predicted defocus in the spread score u = spread + ALPHA * defocus.
ALPHA = 0.05
#: Expected error per µm of spread for models without a fitted certainty map.
FALLBACK_FACTOR = 3.0
#: Tiles with a larger expected |error| (µm) are marked uncertain.
MAX_ERROR_UM = 1.0
#: E at which certainty is 1/e.
CERTAINTY_SCALE_UM = 1.0
#: The scores a certainty map can be fitted on.
SCORES = ("spread", "noise")
#: Share of tiles judged least certain when training compares the scores (the benchmark's).
LEAST_CERTAIN = 0.1
#: The noise ratio samples every NOISE_STEP-th row and column (6400 pixels of a 320 px tile).
NOISE_STEP = 4


def noise_ratio(tiles, modality: str) -> np.ndarray:
    """Noise-to-signal ratio per tile: median |4-neighbour Laplacian| over the 0.5-99.5 % range.

    Computed on the channel the model's intensity input is made of (fluorescence: the
    channels' maximum; brightfield: green), before its scaling, which the ratio ignores.
    On flat or defocused content the Laplacian is mostly noise; the median keeps a few
    sharp edges from counting as noise.

    Returns
    -------
    numpy.ndarray
        (N,) float32, >= 0; 0 for a constant tile.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim not in (3, 4) or min(tiles.shape[1:3]) < 3:
        raise ValueError(f"tiles must be (N, H, W[, C]) with H, W >= 3; got shape {tiles.shape}")
    # In chunks: a validation set of float tiles would otherwise be copied three times over.
    return np.concatenate([_noise_ratio(tiles[i:i + 64], modality) for i in range(0, len(tiles), 64)]
                          or [np.zeros(0, np.float32)])


def _noise_ratio(tiles, modality):
    from napari_focusq.models import intensity_channel

    # The ratio is unchanged by the model's per-tile intensity scaling: skip it. A sparse
    # grid of pixels gives the same median, near enough, for a fraction of the work.
    x = intensity_channel(tiles, modality)
    # 8- and 16-bit integers stay integers (exact, and cheaper than a float copy); anything
    # else is made float32, without NaN or inf.
    integer = x.dtype.kind in "ui" and x.dtype.itemsize <= 2

    def at(dy, dx):
        v = x[:, 1 + dy:x.shape[1] - 1 + dy:NOISE_STEP, 1 + dx:x.shape[2] - 1 + dx:NOISE_STEP]
        return v.astype(np.int32) if integer else np.nan_to_num(v.astype(np.float32))

    c = at(0, 0)
    lap = 4 * c - at(-1, 0) - at(1, 0) - at(0, -1) - at(0, 1)
    # Order statistics by partition (np.median and np.percentile along an axis cost ~15x more).
    a = np.abs(lap).reshape(len(x), -1)
    n = a.shape[1]
    med = np.partition(a, n // 2, axis=1)[:, n // 2]
    k = (int(0.005 * (n - 1)), int(0.995 * (n - 1)))
    lo, hi = np.partition(c.reshape(len(x), -1), k, axis=1)[:, k].T
    rng = (hi - lo).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(rng > 1e-6, med / rng, 0.0)
    return r.astype(np.float32)


def certainty_score(spread_um, defocus_um, alpha: float = ALPHA, *, noise=None, score: str = "spread") -> np.ndarray:
    """The scalar ``u`` a certainty map is fitted on: ``spread + alpha * defocus`` (µm), or
    ``log10(noise ratio)`` for ``score="noise"`` (NaN where the ratio is missing)."""
    if score == "noise":
        if noise is None:
            return np.full(np.shape(defocus_um), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(np.maximum(np.asarray(noise, np.float64), 1e-6))
    if score != "spread":
        raise ValueError(f"certainty score must be one of {SCORES}; got {score!r}")
    return np.asarray(spread_um, np.float64) + alpha * np.clip(np.asarray(defocus_um, np.float64), 0, None)


def least_certain_ratio(u, err, sources=None, share: float = LEAST_CERTAIN) -> float:
    """MAE of the ``share`` of tiles with the largest ``u`` over the MAE of the rest; with
    ``sources``, the mean over sources, so one image cannot carry the choice."""
    u, err = np.asarray(u, float), np.asarray(err, float)
    groups = [np.ones(len(u), bool)] if sources is None else [np.asarray(sources) == s for s in np.unique(sources)]
    ratios = []
    for g in groups:
        ug, eg = u[g], err[g]
        worst = ug >= np.quantile(ug, 1 - share)
        if worst.all() or not worst.any():
            continue
        ratios.append(eg[worst].mean() / max(eg[~worst].mean(), 1e-9))
    return float(np.mean(ratios)) if ratios else float("nan")


def fit_certainty(spread_um, pred_um, true_um, *, noise=None, sources=None, alpha: float = ALPHA,
                  knots: int = 24) -> dict:
    """Fit the map u -> expected |error| on validation tiles (isotonic regression, thinned to knots).

    Parameters
    ----------
    spread_um, pred_um, true_um
        Ensemble spread, calibrated prediction and true |z| of validation tiles.
    noise
        The tiles' :func:`noise_ratio`; given, the ``"noise"`` score competes with
        ``"spread"`` and the one with the larger :func:`least_certain_ratio` is kept
        (ties keep ``"spread"``).
    sources
        Source image of each tile, so the comparison weighs each image alike.
    alpha
        Weight of the prediction in the spread score.
    knots
        At most this many (u, error) knots are kept.

    Returns
    -------
    dict
        ``{"score", "alpha", "u", "error_um", "n", "selection"}``, JSON-ready, for
        ``meta["certainty"]``; ``selection`` holds each score's ratio on these tiles.
    """
    from napari_focusq.models.calibration import fit_isotonic

    s = np.asarray(spread_um, float)
    p = np.asarray(pred_um, float)
    t = np.asarray(true_um, float)
    candidates = {"spread": certainty_score(s, p, alpha)}
    if noise is not None:
        candidates["noise"] = certainty_score(s, p, noise=noise, score="noise")
    ok = np.isfinite(p) & np.isfinite(t) & np.logical_and.reduce([np.isfinite(u) for u in candidates.values()])
    if ok.sum() < 10:
        raise ValueError(f"need at least 10 validation tiles with a spread to fit certainty; got {int(ok.sum())}")
    err = np.abs(p[ok] - t[ok])
    src = None if sources is None else np.asarray(sources)[ok]
    selection = {k: round(least_certain_ratio(u[ok], err, src), 4) for k, u in candidates.items()}
    score = max(selection, key=lambda k: (selection[k], k == "spread"))
    fit = fit_isotonic(candidates[score][ok], err, n_knots=knots)
    return {"score": score, "alpha": float(alpha), "u": fit["x"], "error_um": fit["y"], "n": int(ok.sum()),
            "selection": selection}


def uses_noise(calibration: dict | None) -> bool:
    """Whether a certainty map needs the tiles' :func:`noise_ratio`."""
    return bool(calibration) and calibration.get("score", "spread") == "noise"


def expected_error(spread_um, defocus_um, calibration: dict | None, noise=None) -> np.ndarray:
    """Expected |error| (µm) per tile; NaN where the score's inputs or the defocus are NaN.

    Beyond the last fitted knot the error keeps growing (conservative): 1:1 with the
    spread score, at the fit's mean slope with the noise score. Without a calibration it
    is ``FALLBACK_FACTOR * spread``.
    """
    s = np.asarray(spread_um, float)
    d = np.asarray(defocus_um, float)
    if not calibration or len(calibration.get("u", ())) < 2:
        return FALLBACK_FACTOR * s
    score = calibration.get("score", "spread")
    u = certainty_score(s, d, float(calibration.get("alpha", ALPHA)), noise=noise, score=score)
    x, y = np.asarray(calibration["u"], float), np.asarray(calibration["error_um"], float)
    out = np.interp(u, x, y)
    slope = 1.0 if score == "spread" else max((y[-1] - y[0]) / (x[-1] - x[0]), 0.0)
    hi = u > x[-1]
    out[hi] = y[-1] + slope * (u[hi] - x[-1])
    out[~(np.isfinite(u) & np.isfinite(d))] = np.nan
    return out


def certainty_layers(spread_um, defocus_um, calibration: dict | None, *, noise=None,
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
    e = expected_error(spread_um, defocus_um, calibration, noise)
    with np.errstate(invalid="ignore"):
        cert = np.exp(-e / CERTAINTY_SCALE_UM)
        uncertain = np.isfinite(e) & (e > max_error_um)
    return {"expected_error_um": e.astype(np.float32), "certainty": cert.astype(np.float32),
            "uncertain": uncertain}


def certainty_report(pred_um, true_um, spread_um, noise, calibration: dict | None, sources=None) -> dict:
    """How well certainty ranks the errors of tiles with known defocus (the benchmarks' figures).

    Returns
    -------
    dict
        ``ratio``: MAE of the least certain tenth over the rest's, by the calibrated expected
        error; ``ratio_by_score``: the same for each score ranked on its own (``/image``:
        averaged per source); ``expected_um`` and ``real_um``: mean expected and real
        |error|; ``uncertain``: share marked uncertain.
    """
    p, t = np.asarray(pred_um, float), np.asarray(true_um, float)
    err = np.abs(p - t)
    e = expected_error(spread_um, p, calibration, noise)
    by_score = {}
    for score in SCORES:
        u = certainty_score(spread_um, p, noise=noise, score=score)
        if np.isfinite(u).all():
            by_score[score] = least_certain_ratio(u, err)
            if sources is not None:
                by_score[score + "/image"] = least_certain_ratio(u, err, sources)
    return {"ratio": least_certain_ratio(e, err), "ratio_by_score": by_score, "expected_um": float(np.mean(e)),
            "real_um": float(err.mean()), "uncertain": float(np.mean(e > MAX_ERROR_UM))}


def format_certainty_report(rep: dict, calibration: dict | None) -> str:
    """A :func:`certainty_report` as the benchmarks print it."""
    kind = f"calibrated on the {calibration.get('score', 'spread')} score" if calibration else "UNCALIBRATED"
    lines = [f"== certainty ({kind}) on the same held-out tiles ==",
             f"the 10 % least certain carry {rep['ratio']:.2f}x the MAE of the rest; mean expected "
             f"error {rep['expected_um']:.3f} vs real {rep['real_um']:.3f} µm; {100 * rep['uncertain']:.1f} % "
             f"marked uncertain (expected error > {MAX_ERROR_UM:g} µm)"]
    if calibration and "selection" in calibration:
        lines.append(f"training's choice on its validation images (ratio per image, averaged): "
                     f"{calibration['selection']}")
    lines.append("each score ranked on its own: " + ", ".join(f"{k} {v:.2f}" for k, v in rep["ratio_by_score"].items()))
    return "\n".join(lines)


def model_certainty(model) -> dict | None:
    """The fitted certainty map in a FocusModel's metadata, or None."""
    meta = getattr(model, "meta", None) or {}
    c = meta.get("certainty")
    return c if isinstance(c, dict) and len(c.get("u", ())) >= 2 else None


__all__ = ["fit_certainty", "expected_error", "certainty_layers", "certainty_score", "model_certainty",
           "certainty_report", "format_certainty_report",
           "noise_ratio", "least_certain_ratio", "uses_noise", "MAX_ERROR_UM", "SCORES"]
