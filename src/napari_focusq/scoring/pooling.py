"""One defocus figure per image: weighted spatial pooling of the tile scores.

A plain tissue-weighted mean lets a large, well-focused area hide a smaller region
that is badly out of focus, and counts a tile holding two nuclei as much as one
packed with them. Following the idea of weighted spatial pooling for image quality
(Su & Korhonen: weight local scores by local information content, and give the
worst regions more say, as in percentile pooling), the pooled score is

.. math::

    w_i = t_i \\cdot \\frac{I_i}{\\operatorname{median}_j I_j}, \\qquad
    v_i = \\begin{cases} \\gamma & i \\in \\text{worst}_p \\\\ 1 & \\text{otherwise} \\end{cases}, \\qquad
    D = \\frac{\\sum_i w_i v_i d_i}{\\sum_i w_i v_i}

over the scored tiles ``i``, where ``d_i`` is the tile's predicted defocus (µm),
``t_i`` its tissue fraction, ``I_i`` its information content (see
:func:`tile_information`; 1 for every tile when the map has none), ``worst_p`` the
most defocused tiles, taken worst first while the weight before them is below a share
``p`` of the total (so at least one tile, about a share ``p`` of the weighted tissue),
and ``gamma`` the emphasis. Defaults: ``p = 0.1``,
``gamma = 4``. With ``gamma = 1`` and no information layer, ``D`` is the plain
tissue-weighted mean (``FocusMap.summary()["mean_um"]``).

Example: 90 % of the tissue at 0.5 µm and 10 % at 6 µm gives a tissue-weighted mean
of 1.05 µm and a pooled score of 2.19 µm.

The information content of a tile is ``log(1 + s)``, where ``s`` is the standard
deviation of the tile's 8x8 pixel block means (4 µm blocks at the working resolution)
on the 0-255 scale the model sees (brightfield: green channel; fluorescence: the block
means' 0.5-99.5 percentile range mapped to 0-255): it measures how much structure (nuclei,
tissue texture) a tile holds at a scale that defocus of a few µm barely changes, so
blurred tiles are not down-weighted for being blurred.
"""
from __future__ import annotations

import warnings

import numpy as np

#: Defaults of :func:`pooled_defocus`.
WORST_FRACTION = 0.1
EMPHASIS = 4.0
#: Block edge (working pixels) of the information measure.
INFO_BLOCK_PX = 8


def tile_information(tiles: np.ndarray, modality: str = "brightfield") -> np.ndarray:
    """Information content of tiles at the working resolution, ``log(1 + std of 8x8 block means)``.

    Parameters
    ----------
    tiles
        (N, H, W) or (N, H, W, C) raw tiles, any dtype (prepared as the model sees them).
    modality
        "brightfield" or "fluorescence" (decides the intensity scaling).

    Returns
    -------
    numpy.ndarray
        (N,) float32, >= 0.
    """
    from napari_focusq.models import prepare_input

    t = np.asarray(tiles)
    if t.ndim not in (3, 4):
        raise ValueError(f"tiles must be (N, H, W) or (N, H, W, C); got shape {t.shape}")
    n, h, w = t.shape[:3]
    b = INFO_BLOCK_PX
    hh, ww = max(b, h // b * b), max(b, w // b * b)
    if h < b or w < b:
        return np.zeros(n, np.float32)
    # Block means first: cheap, and the intensity scaling (a per-tile percentile range for
    # fluorescence) then runs on 1/64 of the pixels.
    if modality != "fluorescence" and t.ndim == 4 and t.shape[-1] in (3, 4):
        # Brightfield: only the green channel is used below; drop the rest before any work.
        t = t[..., 1]
    if t.dtype == np.uint8 and t.ndim == 3 and h % b == 0 and w % b == 0 and b * 255 < 2**16:
        # The common case (8-bit brightfield, whole tiles), in integer block sums: exact, so
        # the same figures as the float path below, at a quarter of its cost (decode workers).
        s = t.reshape(n, h // b, b, w).sum(2, dtype=np.uint16)
        s = s.reshape(n, h // b, w // b, b).sum(3, dtype=np.uint32)
        x = s.astype(np.float32) * np.float32(1.0 / (b * b))
        if modality == "fluorescence":
            x = prepare_input(x, "intensity", modality)
        return np.log1p(x.reshape(n, -1).std(1)).astype(np.float32)
    blocks = t[:, :hh, :ww].astype(np.float32).reshape(n, hh // b, b, ww // b, b, *t.shape[3:])
    if t.dtype.kind == "f":
        # NaN/inf pixels (masked data) must not make a whole tile's information NaN.
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            blocks = np.where(np.isfinite(blocks), blocks, np.nan)
            blocks = np.nanmean(blocks, (2, 4))
            fill = np.nanmedian(blocks.reshape(n, -1), 1)
        blocks = np.where(np.isfinite(blocks), blocks,
                          np.nan_to_num(fill, nan=0.0).reshape((n,) + (1,) * (blocks.ndim - 1)))
    else:
        blocks = blocks.mean((2, 4))
    if modality == "fluorescence":
        x = prepare_input(blocks, "intensity", modality)
    else:
        # As the model sees brightfield: the green channel on a 0-255 scale.
        x = blocks.mean(-1) if blocks.ndim == 4 else blocks
        if t.dtype.kind in "ui":
            x = x * (255.0 / float(np.iinfo(t.dtype).max))
        elif np.nanmax(x) <= 1.0:
            x = x * 255.0
    return np.log1p(x.reshape(n, -1).std(1)).astype(np.float32)


def pooled_defocus(defocus_um, tissue_fraction, information=None, *, worst_fraction: float = WORST_FRACTION,
                   emphasis: float = EMPHASIS) -> float:
    """Weighted spatial pooling of tile defocus into one figure (µm); see the module docstring.

    Parameters
    ----------
    defocus_um, tissue_fraction
        (rows, cols) grids; NaN defocus = not scored (ignored).
    information
        Optional (rows, cols) information content per tile; uniform when None.
    worst_fraction
        ``p``: share of the weight, taken from the most defocused tiles, that is emphasised.
    emphasis
        ``gamma`` >= 1: how much more those tiles count.

    Returns
    -------
    float
        NaN when no tile is scored.
    """
    if not 0 <= worst_fraction <= 1:
        raise ValueError(f"worst_fraction must be in [0, 1]; got {worst_fraction}")
    if not emphasis >= 1:
        raise ValueError(f"emphasis must be >= 1; got {emphasis}")
    d = np.asarray(defocus_um, np.float64)
    t = np.asarray(tissue_fraction, np.float64)
    if d.shape != t.shape:
        raise ValueError(f"defocus {d.shape} and tissue {t.shape} grids differ")
    ok = np.isfinite(d) & np.isfinite(t) & (t > 0)
    if information is not None:
        info = np.asarray(information, np.float64)
        if info.shape != d.shape:
            raise ValueError(f"information {info.shape} and defocus {d.shape} grids differ")
    if not ok.any():
        return float("nan")
    d, w = d[ok], t[ok]
    if information is not None:
        i = np.clip(info[ok], 0, None)
        med = float(np.nanmedian(i)) if np.isfinite(i).any() else 0.0
        i = np.where(np.isfinite(i), i, med)  # unknown information: a typical tile
        # A map of featureless tiles (median 0) falls back to tissue weights alone.
        w = w * (i / med) if med > 0 else w
        if not w.sum() > 0:
            w = t[ok]
    v = np.ones_like(d)
    if worst_fraction > 0 and emphasis > 1:
        # The most defocused tiles, worst first, until they hold a share p of the weight.
        order = np.argsort(-d, kind="stable")
        before = np.cumsum(w[order]) - w[order]
        v[order[before < worst_fraction * w.sum()]] = emphasis
    return float(np.sum(w * v * d) / np.sum(w * v))


def pooled_from_map(fmap, **kw) -> float:
    """:func:`pooled_defocus` of a FocusMap, with its ``extra["information"]`` layer if present."""
    return pooled_defocus(fmap.defocus_um, fmap.tissue_fraction, fmap.extra.get("information"), **kw)


__all__ = ["pooled_defocus", "pooled_from_map", "tile_information", "WORST_FRACTION", "EMPHASIS"]
