"""Regions of a tiled TIFF level decoded straight from the file, without zarr.

tifffile's zarr store runs every chunk read through zarr's asyncio machinery: on a 105 Mpx
JPEG pyramid reading a level in tile-row strips took 1.43 s through it against 0.78 s for
the same tiles decoded one after another (2 cores, quiet; ``benchmarks/bench_speed.py``
decodes through whichever path the source uses), and its event-loop thread holds the GIL
that the model's and napari's threads need. Scoring reads regions of one level from a few
decode threads, which is exactly what this does: the tile bytes by ``os.pread`` (no shared
file position, so threads need no lock) and tifffile's own decoder for the page (JPEG
tables, predictors, colour spaces: the same pixels as the zarr path, tested), in the
calling thread. Everything else (stacks, strips, planar or sub-sampled layouts, napari's
display arrays) keeps the zarr store.
"""
from __future__ import annotations

import os

import numpy as np


def tile_reader(tf, level_series) -> "TileRegions | None":
    """A TileRegions for one level of ``tf`` when the level is a single tiled 2-D page
    (Y, X[, samples]) whose file has a descriptor, else None (the zarr path reads it)."""
    try:
        pages = level_series.pages
        page = level_series.keyframe
        fd = tf.filehandle.fileno()
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    if len(pages) != 1 or not page.is_tiled or page.tiledepth != 1 or page.imagedepth != 1:
        return None
    if tuple(level_series.shape) != tuple(page.shape) or page.ndim not in (2, 3):
        return None
    if page.samplesperpixel > 1 and page.planarconfig != 1:  # separate planes per sample
        return None
    if len(page.dataoffsets) != page.chunked[0] * page.chunked[1]:
        return None
    return TileRegions(fd, page)


class TileRegions:
    """``region(ya, yb, xa, xb)`` of one tiled page: (h, w[, samples]) in the page's dtype."""

    def __init__(self, fd: int, page):
        self._fd = fd
        self._page = page
        self.shape = tuple(int(s) for s in page.shape)
        self.dtype = np.dtype(page.dtype)
        self.tile = (int(page.tilelength), int(page.tilewidth))
        self._across = int(page.chunked[1])
        self._decode_args = {"_fullsize": True}
        if page.jpegtables is not None:
            self._decode_args["jpegtables"] = page.jpegtables
        if page.jpegheader is not None:
            self._decode_args["jpegheader"] = page.jpegheader
        page.decode  # noqa: B018 - tifffile builds (and caches) the page's decoder on first access

    def region(self, ya: int, yb: int, xa: int, xb: int) -> np.ndarray:
        th, tw = self.tile
        out = np.zeros((yb - ya, xb - xa) + self.shape[2:], self.dtype)
        if yb <= ya or xb <= xa:
            return out
        page = self._page
        for ty in range(ya // th, (yb - 1) // th + 1):
            for tx in range(xa // tw, (xb - 1) // tw + 1):
                tile = self._tile(page, ty * self._across + tx)
                if tile is None:
                    continue  # a tile the writer left out: tifffile reads it as zeros too
                y0, x0 = ty * th, tx * tw
                sy = slice(max(ya, y0), min(yb, y0 + th))
                sx = slice(max(xa, x0), min(xb, x0 + tw))
                out[sy.start - ya:sy.stop - ya, sx.start - xa:sx.stop - xa] = \
                    tile[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0]
        return out

    def _tile(self, page, index: int) -> np.ndarray | None:
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if not offset or not count:
            return None
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise OSError(f"tile {index}: the file ends {count - len(data)} bytes short of its data")
        decoded = page.decode(data, index, **self._decode_args)[0]
        th, tw = self.tile
        return decoded.reshape((th, tw) + self.shape[2:])
