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
import threading
from collections import OrderedDict
from concurrent.futures import Future

import numpy as np

#: Bytes of decoded tiles kept per level. Scoring's strips are a tile row of the grid (320
#: working px) over the file's tiles (often 256 px), so neighbouring strips share a row of
#: them: on the 105 Mpx benchmark pyramid a slide decoded 1758 tiles for 1095 distinct ones.
#: A few rows of tiles is enough (a 40x level 20,000 px wide: 8 MB a row of 256-px tiles).
TILE_CACHE_BYTES = 48 * 2**20
_MISSING = object()  # a tile the writer left out


def tile_reader(tf, level_series) -> "TileRegions | None":
    """A TileRegions for one level of ``tf`` when the level is a single tiled 2-D page
    (Y, X[, samples]) whose file has a descriptor, else None (the zarr path reads it)."""
    if not hasattr(os, "pread"):  # Windows: no positioned reads; the zarr path (with its lock) it is
        return None
    try:
        pages = level_series.pages
        page = level_series.keyframe
        fd = tf.filehandle.fileno()
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    if page.parent is not tf:  # a multi-file OME-TIFF's level in another file, opened and closed by tifffile
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
    """``region(ya, yb, xa, xb)`` of one tiled page: (h, w[, samples]) in the page's dtype.

    Each tile is decoded once while it stays in a small shared cache (TILE_CACHE_BYTES,
    least recently used out): a thread that asks for a tile another thread is decoding waits
    for that decode rather than repeating it.
    """

    def __init__(self, fd: int, page, cache_bytes: int = TILE_CACHE_BYTES):
        self._fd = fd
        self._lock = threading.Lock()
        self._tiles: OrderedDict = OrderedDict()  # index -> ndarray, _MISSING, or a Future while decoding
        self._cached = 0
        self._cache_bytes = cache_bytes
        self.decoded = 0  # tiles decoded (tests, benchmarks)
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
        # every pixel is written below (a tile the writer left out as zeros): no zero-fill pass
        out = np.empty((max(yb - ya, 0), max(xb - xa, 0)) + self.shape[2:], self.dtype)
        if yb <= ya or xb <= xa:
            return out
        page = self._page
        for ty in range(ya // th, (yb - 1) // th + 1):
            for tx in range(xa // tw, (xb - 1) // tw + 1):
                tile = self._cached_tile(page, ty * self._across + tx)
                y0, x0 = ty * th, tx * tw
                sy = slice(max(ya, y0) - ya, min(yb, y0 + th) - ya)
                sx = slice(max(xa, x0) - xa, min(xb, x0 + tw) - xa)
                if tile is _MISSING:  # a tile the writer left out: tifffile reads it as zeros too
                    out[sy, sx] = 0
                else:
                    out[sy, sx] = tile[sy.start + ya - y0:sy.stop + ya - y0, sx.start + xa - x0:sx.stop + xa - x0]
        return out

    def _cached_tile(self, page, index: int):
        with self._lock:
            held = self._tiles.get(index)
            if held is None:
                pending = self._tiles[index] = Future()
            else:
                self._tiles.move_to_end(index)
        if held is not None:
            return held.result() if isinstance(held, Future) else held
        try:
            tile = self._tile(page, index)
        except BaseException as exc:
            with self._lock:
                self._tiles.pop(index, None)
            pending.set_exception(exc)
            raise
        pending.set_result(tile)
        with self._lock:
            self.decoded += 1
            if index in self._tiles:
                self._tiles[index] = tile
                self._cached += getattr(tile, "nbytes", 0)
            while self._cached > self._cache_bytes:
                old = next((k for k, v in self._tiles.items() if not isinstance(v, Future)), None)
                if old is None:
                    break
                self._cached -= getattr(self._tiles.pop(old), "nbytes", 0)
        return tile

    def _tile(self, page, index: int):
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if not offset or not count:
            return _MISSING
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise OSError(f"tile {index}: the file ends {count - len(data)} bytes short of its data")
        decoded = page.decode(data, index, **self._decode_args)[0]
        th, tw = self.tile
        return decoded.reshape((th, tw) + self.shape[2:])
