"""Sparse fluorescence fields: foreground per object, not per area (issue 18).

A screening field of a few cells on a dark background leaves every tile under the
area rule (10 % of the tile with signal, pipeline.MIN_SIGNAL_FRACTION): 5-20 nuclei of
~10 µm in a 340 x 450 µm field cover 1-4 % of it, so the whole field came back NaN, in
focus or not. Here a fluorescence tile is also scored when it holds a whole object
(a connected region of signal of at least ``MIN_OBJECT_UM2``, counted at the tile
holding its centroid); the field gets one reading (``extra["field_um"]``, objects
weighting its tiles); and the reading says how little it rests on: tiles with fewer
than ``FEW_OBJECTS`` objects are marked low-signal, their certainty scaled down and
flagged uncertain, since a spectrum of one or two objects on a dark field reads blur
from less than a tile's worth of edges.
"""
from __future__ import annotations

import numpy as np

#: Smallest object counted (µm²): a small nucleus is ~30-80 µm²; below, noise and debris.
MIN_OBJECT_UM2 = 15.0
#: Tiles holding fewer objects than this are low-signal (certainty scaled by count / this).
FEW_OBJECTS = 3


def object_counts(mask_thumb: np.ndarray, grid, thumb_scale: tuple[float, float],
                  pixel_size_um: float) -> np.ndarray:
    """Objects per tile (int32 grid): connected signal regions of the thumbnail mask of at
    least MIN_OBJECT_UM2, each counted in the tile holding its centroid."""
    from scipy import ndimage as ndi

    rows, cols = grid.shape
    counts = np.zeros((rows, cols), np.int32)
    if not mask_thumb.any():
        return counts
    sy, sx = thumb_scale
    labels, n = ndi.label(mask_thumb)
    if n == 0:
        return counts
    idx = np.arange(1, n + 1)
    area = ndi.sum_labels(np.ones(mask_thumb.shape, np.float32), labels, idx) * sy * sx * pixel_size_um ** 2
    cy, cx = np.asarray(ndi.center_of_mass(mask_thumb, labels, idx), float).reshape(-1, 2).T
    for k in np.nonzero(area >= MIN_OBJECT_UM2)[0]:
        rc = grid.tile_at((cy[k] + 0.5) * sy, (cx[k] + 0.5) * sx)
        if rc is not None:
            counts[rc] += 1
    return counts


def field_reading(defocus_um: np.ndarray, counts: np.ndarray) -> float:
    """The whole field's reading: the mean of its tiles' readings weighted by the objects
    each holds (at least 1), NaN when no tile was read.

    Chosen over the median, a 75th percentile, the maximum and object-weighted medians on
    the sparse fields made from the *trained-on* sources (bench_sparse.py: AUC of in-focus
    against >= 10 µm fields 0.979 median, 0.995 this); the held-out sources only report.
    """
    ok = np.isfinite(defocus_um)
    if not ok.any():
        return float("nan")
    w = np.maximum(np.asarray(counts, float)[ok], 1.0)
    return float((defocus_um[ok] * w).sum() / w.sum())


def mark_low_signal(fmap, counts: np.ndarray) -> None:
    """Record objects per tile and the field's reading; scale certainty down and flag
    uncertain where few objects carry the reading (only on tiles scored for their
    objects, not for their area)."""
    fmap.extra["objects"] = counts
    d = fmap.defocus_um
    fmap.extra["field_um"] = field_reading(d, counts)
    low = np.isfinite(d) & (counts < FEW_OBJECTS) & (fmap.tissue_fraction < 0.1)
    fmap.extra["low_signal"] = low
    if not low.any():
        return
    if "certainty" in fmap.extra:
        c = np.asarray(fmap.extra["certainty"], np.float32).copy()
        c[low] *= np.maximum(counts[low], 1) / FEW_OBJECTS
        fmap.extra["certainty"] = c
    unc = np.asarray(fmap.extra.get("uncertain", np.zeros(d.shape, bool)), bool).copy()
    unc[low] = True
    fmap.extra["uncertain"] = unc
    fmap.extra.setdefault("notes", []).append(
        f"{int(low.sum())} tile(s) read from fewer than {FEW_OBJECTS} objects on a dark field: little "
        "signal, marked uncertain")


def weak_signal_centre(thumb: np.ndarray, thumb_pixel_um: float) -> tuple[float, float] | None:
    """(y, x) in thumbnail pixels of the brightest region where a field holds signal the
    area rule and the object rule both missed (dim or very blurred objects), else None.

    Permissive on purpose: a smoothed peak 8 robust SDs over the smoothed background,
    over at least MIN_OBJECT_UM2. A flat or pure-noise field gives None (no reading).
    """
    from scipy import ndimage as ndi

    a = np.asarray(thumb, np.float32)
    if a.ndim == 3:
        a = a.max(-1)
    a = np.where(np.isfinite(a), a, np.nan)
    if not np.isfinite(a).any():
        return None
    a = np.nan_to_num(a, nan=float(np.nanmedian(a)))
    sm = ndi.gaussian_filter(a, max(1.0, 1.5 / thumb_pixel_um))
    med = float(np.median(sm))
    sd = 1.4826 * float(np.median(np.abs(sm - med)))
    if sd <= 0:
        sd = max(float(sm.std()), 1e-12)
    above = sm > med + 8 * sd
    if above.sum() * thumb_pixel_um ** 2 < MIN_OBJECT_UM2:
        return None
    w = np.clip(sm - med, 0, None) * above
    cy, cx = ndi.center_of_mass(w)
    return float(cy), float(cx)


def whole_field_tile(src, grid, level: int, z, centre_level0: tuple[float, float]):
    """One working tile centred on ``centre_level0`` (level-0 y, x), the field mirrored
    where it is smaller than a tile: the whole-field reading's input."""
    from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM
    from napari_focusq.scoring.resample import tile_to_working

    ds = src.downsamples[level]
    yax = src.axes.index("Y")
    H, W = src.level_shapes[level][yax], src.level_shapes[level][yax + 1]
    side = grid.tile_size_px / ds  # one tile in level pixels
    cy, cx = centre_level0[0] / ds, centre_level0[1] / ds
    y0 = int(round(min(max(cy - side / 2, 0), max(H - side, 0))))
    x0 = int(round(min(max(cx - side / 2, 0), max(W - side, 0))))
    region = src.read_region(y0, x0, int(round(min(side, H))), int(round(min(side, W))), level=level, z=z)
    px_level = grid.pixel_size_um * ds
    tile, _valid = tile_to_working(region, px_level, TILE_PX, WORKING_PIXEL_UM)
    return tile


def whole_field_reading(src, grid, level: int, z, thumb: np.ndarray, fm, modality: str, want_noise: bool):
    """(tile (row, col), reading, spread, information, noise ratio) of one working tile around
    the field's brightest weak signal, or None when the field has none (weak_signal_centre)."""
    from napari_focusq.scoring.certainty import noise_ratio
    from napari_focusq.scoring.pooling import tile_information

    H, W = grid.image_shape
    at = weak_signal_centre(thumb, grid.pixel_size_um * H / thumb.shape[0])
    if at is None:
        return None
    cy, cx = (at[0] + 0.5) * H / thumb.shape[0], (at[1] + 0.5) * W / thumb.shape[1]
    rc = grid.tile_at(min(cy, H - 1), min(cx, W - 1))
    t = whole_field_tile(src, grid, level, z, (cy, cx))[None]
    p, q = fm.predict_with_spread(t)
    nr = noise_ratio(t, modality)[0] if want_noise else np.nan
    return rc, p[0], q[0], tile_information(t, modality)[0], nr
