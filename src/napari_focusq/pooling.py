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
deviation of the tile (on the 0-255 scale the model sees) after averaging 8x8 pixel
blocks (4 µm at the working resolution): it measures how much structure (nuclei,
tissue texture) a tile holds at a scale that defocus of a few µm barely changes, so
blurred tiles are not down-weighted for being blurred.
"""
from __future__ import annotations

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
    from .models import prepare_input

    x = prepare_input(np.asarray(tiles), "intensity", modality)
    n, h, w = x.shape
    b = INFO_BLOCK_PX
    hh, ww = h // b * b, w // b * b
    blocks = x[:, :hh, :ww].reshape(n, hh // b, b, ww // b, b).mean((2, 4))
    return np.log1p(blocks.reshape(n, -1).std(1)).astype(np.float32)


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
        ok &= np.isfinite(info)
    if not ok.any():
        return float("nan")
    d, w = d[ok], t[ok]
    if information is not None:
        i = np.clip(info[ok], 0, None)
        med = float(np.median(i))
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
