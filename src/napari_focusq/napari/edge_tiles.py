"""Partial edge tiles drawn at their true size, so the heatmap stays over the slide (pure; no Qt).

The heatmap is one pixel per tile (DESIGN §5) and napari cannot clip a 2-D image layer
(its clipping planes work on volumes only), so a tile cut by the slide's edge would be
drawn whole, overhanging the slide by up to a tile. The cheapest exact drawing: the
heatmap layer shows the whole tiles (its partial ones are NaN, i.e. transparent) and one
Shapes layer draws the partial ones as rectangles ending exactly at the image's edge.
They are only the outer row and column (a few hundred rectangles on a 100 000-px slide),
so the layer stays light, while a finer image grid would be exact only for a tile size
that divides the slide, and a level-resolution layer would cost a slide-sized array.
The map itself (``FocusMap.defocus_um``, the layer's ``metadata["focusmap"]``) is unchanged.
"""
from __future__ import annotations

import numpy as np

EDGE_NAME = "Defocus (edge tiles)"


def partial_tiles(fmap) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) bool of tiles the image's edge cuts, and their extents (N, 4) in grid units.

    An extent is ``(y0, x0, y1, x1)`` in tiles from the grid's start (tile ``r`` spans
    ``[r, r + 1]`` when whole), cut at the image (level-0 pixels ``[0, H] x [0, W]``).
    """
    return cut_tiles(fmap.shape, fmap.origin_px, fmap.tile_size_px, fmap.image_shape)


def cut_tiles(shape, origin_px, tile_size_px, image_shape) -> tuple[np.ndarray, np.ndarray]:
    """:func:`partial_tiles` of a grid given by its geometry (a TileGrid's, before a map exists)."""
    rows, cols = shape
    oy, ox = (float(v) for v in origin_px)
    t = float(tile_size_px)
    h, w = (float(v) for v in image_shape)
    ys0 = np.clip(oy + np.arange(rows) * t, 0, h)
    ys1 = np.clip(oy + (np.arange(rows) + 1) * t, 0, h)
    xs0 = np.clip(ox + np.arange(cols) * t, 0, w)
    xs1 = np.clip(ox + (np.arange(cols) + 1) * t, 0, w)
    cut_r = (ys1 - ys0) < t - 1e-6
    cut_c = (xs1 - xs0) < t - 1e-6
    cut = cut_r[:, None] | cut_c[None, :]
    rr, cc = np.nonzero(cut)
    ext = np.stack([(ys0[rr] - oy) / t, (xs0[cc] - ox) / t, (ys1[rr] - oy) / t, (xs1[cc] - ox) / t], axis=1)
    return cut, ext.reshape(-1, 4)


def whole_tiles_grid(fmap) -> np.ndarray:
    """The heatmap layer's data: the map, with the partial edge tiles left transparent (NaN)."""
    grid = np.asarray(fmap.defocus_um, np.float32).copy()
    grid[partial_tiles(fmap)[0]] = np.nan
    return grid


def edge_shapes(fmap, colormap, contrast_limits) -> tuple[list, np.ndarray]:
    """Rectangles (in the heatmap layer's data coordinates) and RGBA face colours of the scored partial tiles."""
    cut, ext = partial_tiles(fmap)
    vals = np.asarray(fmap.defocus_um, np.float64)[cut]
    keep = np.isfinite(vals)
    ext, vals = ext[keep], vals[keep]
    lo, hi = contrast_limits
    rgba = np.asarray(colormap.map(np.clip((vals - lo) / (hi - lo), 0, 1)), np.float32).reshape(-1, 4)
    # a pixel r of the heatmap covers data [r - 0.5, r + 0.5]: shift the tile units by half a pixel
    rects = [np.array([[y0, x0], [y1, x1]]) - 0.5 for y0, x0, y1, x1 in ext]
    return rects, rgba


def edge_kwargs(scale, translate, units, ident: dict) -> dict:
    """Layer keyword arguments of the edge-tiles Shapes layer (on the heatmap's scale and translate)."""
    return {"name": EDGE_NAME, "shape_type": "rectangle", "scale": tuple(scale), "translate": tuple(translate),
            "edge_width": 0, "opacity": 1.0, "blending": "translucent", "units": tuple(units),
            "metadata": {"focusq": "heatmap_edge", **ident}}
