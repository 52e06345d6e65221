"""Strips: the pipeline's decode units (runs of tissue tiles in one grid row), read and cut
into working tiles in a decode worker, off the thread that runs the model."""
from __future__ import annotations

import math

import numpy as np

from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM

#: Tiles read per strip (one decode unit); bounds memory to ~strip x tile^2 x channels.
STRIP_TILES = 16


def strip_regions(todo_rows, max_gap: int = 1):
    """(row, [cols]) work units: runs of up to STRIP_TILES tissue tiles within a grid row.

    A unit is read as one region from its first tile to its last, so a run ends where more
    than ``max_gap`` tiles without tissue follow: on a slide with tissue in islands, reading
    through the glass between them decoded 87 Mpx to score 51. A one-tile gap is read
    through: its JPEG tiles are shared with the neighbours and would be decoded twice anyway.
    """
    for r, cols in todo_rows:
        run = []
        for c in cols:
            if run and (c - run[-1] > max_gap + 1 or len(run) == STRIP_TILES):
                yield r, run
                run = []
            run.append(c)
        if run:
            yield r, run


def read_strip(src, grid, level, z, r, cols, modality, noise=False):
    """Read the level region covering tiles (r, cols), cut it into working tiles and measure
    their information content (pooling weights) and, for certainty maps fitted on it, their
    noise ratio: all of it in a decode worker, off the thread that runs the model."""
    from napari_focusq.models import mask_nonfinite, nonfinite_count
    from napari_focusq.scoring.certainty import noise_ratio
    from napari_focusq.scoring.pooling import tile_information
    from napari_focusq.scoring.resample import tile_to_working

    ds = src.downsamples[level]
    px_level = grid.pixel_size_um * ds
    y0, x0, y1, _ = grid.tile_bounds(r, cols[0])
    x1 = grid.tile_bounds(r, cols[-1])[3]
    ly0, lx0 = int(math.floor(y0 / ds)), int(math.floor(x0 / ds))
    ly1, lx1 = int(math.ceil(y1 / ds)), int(math.ceil(x1 / ds))
    region = src.read_region(ly0, lx0, ly1 - ly0, lx1 - lx0, level=level, z=z)
    tiles, valid = None, []
    for i, c in enumerate(cols):
        ty0, tx0, ty1, tx1 = grid.tile_bounds(r, c)
        a, b = round(ty0 / ds) - ly0, round(ty1 / ds) - ly0
        d, e = round(tx0 / ds) - lx0, round(tx1 / ds) - lx0
        sub = region[max(a, 0):max(b, a + 1), max(d, 0):max(e, d + 1)]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            sub = region[-1:, -1:]
        # A partial edge tile is judged on its real part: scale the level geometry so that
        # a full tile maps to exactly TILE_PX.
        full_level = grid.tile_size_px / ds
        eff_px = WORKING_PIXEL_UM * full_level / TILE_PX
        t, v = tile_to_working(sub, eff_px if abs(eff_px - px_level) / px_level < 0.2 else px_level, TILE_PX,
                               copy=False)
        if tiles is None:  # the strip's tiles written once into one array (no per-tile copy, no stack)
            tiles = np.empty((len(cols), *t.shape), t.dtype)
        tiles[i] = t
        valid.append(v)
    # NaN/inf pixels: counted here, masked (tile median) before the measures and the model
    bad = nonfinite_count(tiles)
    if bad.any():
        tiles = mask_nonfinite(tiles)
    nr = noise_ratio(tiles, modality) if noise else np.full(len(tiles), np.nan, np.float32)
    return tiles, np.asarray(valid), tile_information(tiles, modality), nr, bad
