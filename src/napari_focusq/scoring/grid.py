"""The working-resolution tile grid laid over an image's level-0 pixels.

The model sees ``TILE_PX`` x ``TILE_PX`` tiles at ``WORKING_PIXEL_UM``. A
:class:`TileGrid` maps that grid onto the input's level-0 pixels (tile edges may be
fractional there; bounds are rounded exactly as :meth:`FocusMap.tile_bounds` does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM
from napari_focusq.errors import TilingError

#: Pixel sizes within this relative distance of the working one are used as they are.


class ResolutionWarning(UserWarning):
    """The input is coarser than the working resolution; small defocus is beyond it."""


# --------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class TileGrid:
    """The working-resolution tile grid laid over an image's level-0 pixels.

    Parameters
    ----------
    image_shape
        Level-0 (height, width) in pixels.
    pixel_size_um
        Level-0 pixel size in µm.
    working_pixel_um, tile_px
        Working resolution and tile edge in working pixels.
    origin_px
        (y, x) of the top-left corner of tile (0, 0), in level-0 pixels; must not
        leave image pixels uncovered (``-tile_size_px < origin <= 0``).
    """

    image_shape: tuple[int, int]
    pixel_size_um: float
    working_pixel_um: float = WORKING_PIXEL_UM
    tile_px: int = TILE_PX
    origin_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        try:
            shape = tuple(int(v) for v in self.image_shape)
        except (TypeError, ValueError):
            raise TilingError(f"image_shape must be (height, width); got {self.image_shape!r}") from None
        if len(shape) != 2 or min(shape) < 1:
            raise TilingError(f"image must be at least 1x1 pixels; got shape {self.image_shape!r}")
        for name in ("pixel_size_um", "working_pixel_um"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v > 0):
                raise TilingError(f"{name} must be a positive number of µm; got {v!r}")
        if int(self.tile_px) != self.tile_px or self.tile_px < 1:
            raise TilingError(f"tile_px must be a positive integer; got {self.tile_px!r}")
        origin = tuple(float(v) for v in self.origin_px)
        if len(origin) != 2 or not all(math.isfinite(v) for v in origin):
            raise TilingError(f"origin_px must be two finite numbers; got {self.origin_px!r}")
        object.__setattr__(self, "image_shape", shape)
        object.__setattr__(self, "origin_px", origin)
        object.__setattr__(self, "tile_px", int(self.tile_px))
        t = self.tile_size_px
        if t < 1:
            raise TilingError(
                f"a tile would be {t:.3g} level-0 pixels wide (pixel size {self.pixel_size_um} µm is "
                f"too coarse for {self.tile_px} px tiles at {self.working_pixel_um} µm/px)"
            )
        if any(o > 0 or o <= -t or round(o + t) < 1 for o in origin):
            raise TilingError(f"origin_px must lie in (-{t:g}, 0] so every pixel is covered; got {origin}")

    @property
    def tile_size_px(self) -> float:
        """Tile edge in level-0 pixels (may be fractional)."""
        return self.tile_px * self.working_pixel_um / self.pixel_size_um

    def _count(self, axis: int) -> int:
        o, n, t = self.origin_px[axis], self.image_shape[axis], self.tile_size_px
        k = max(1, math.ceil((n - o) / t))
        while k > 1 and round(o + (k - 1) * t) >= n:  # rounding can empty a last sliver
            k -= 1
        return k

    @property
    def rows(self) -> int:
        """Number of tile rows; the last may be partial."""
        return self._count(0)

    @property
    def cols(self) -> int:
        """Number of tile columns; the last may be partial."""
        return self._count(1)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.rows, self.cols

    def _edge(self, axis: int, k: int) -> int:
        # Same expression as FocusMap.tile_bounds, so both agree to the pixel.
        return round(self.origin_px[axis] + k * self.tile_size_px)

    def tile_bounds(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of a tile in level-0 pixels, clipped to the image."""
        h, w = self.image_shape
        y0, x0 = self._edge(0, row), self._edge(1, col)
        y1, x1 = self._edge(0, row + 1), self._edge(1, col + 1)
        return max(0, y0), max(0, x0), min(h, y1), min(w, x1)

    def _index(self, axis: int, v: float, count: int) -> int | None:
        p = math.floor(v)
        if not 0 <= p < self.image_shape[axis]:
            return None
        k = math.floor((p - self.origin_px[axis]) / self.tile_size_px)
        # Bounds are rounded, so the float guess can be one off near an edge.
        while k > 0 and self._edge(axis, k) > p:
            k -= 1
        while k < count - 1 and self._edge(axis, k + 1) <= p:
            k += 1
        return k

    def tile_at(self, y: float, x: float) -> tuple[int, int] | None:
        """The (row, col) of the tile holding level-0 pixel (y, x), or None outside.

        Fractional coordinates are floored to the pixel that holds them.
        """
        r = self._index(0, y, self.rows)
        c = self._index(1, x, self.cols)
        return None if r is None or c is None else (r, c)

    def tile_centre(self, row: int, col: int) -> tuple[float, float]:
        """Unclipped centre of a tile in level-0 pixel coordinates."""
        t = self.tile_size_px
        return self.origin_px[0] + (row + 0.5) * t, self.origin_px[1] + (col + 0.5) * t

    def iter_tiles(self) -> Iterator[tuple[int, int]]:
        """All (row, col) in row-major order."""
        rows, cols = self.shape
        for r in range(rows):
            for c in range(cols):
                yield r, c
