"""Arrays as image sources: a pyramid of in-memory or lazy levels (a multiscale layer's data).

``score_slide``'s machinery (tissue from a coarse view, strips that skip glass, decoding
ahead of the model) only needs the ``ImageSource`` interface, so a napari layer's data
goes through it unchanged: a multiscale layer through its own pyramid, a plain array
through a strided view for tissue. Neither ever reads level 0 whole before the first tile.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from napari_focusq.errors import ScoringError
from napari_focusq.io.source import level_for


class ArraySource:
    """An in-memory (Y, X[, C]) or (Z, Y, X[, C]) array seen through the ImageSource interface."""

    def __init__(self, image, pixel_size_um: float | None, name: str = "image", stack: bool = False):
        self.array = image
        self.path = Path(name)
        nd = len(image.shape)
        if stack:
            self.axes = "ZYXC" if nd == 4 else "ZYX"
        else:
            self.axes = "YXC" if nd == 3 else "YX"
        if nd != len(self.axes):
            raise ScoringError(f"{name}: expected {self.axes} data; got shape {tuple(image.shape)}")
        self.shape = tuple(image.shape)
        self.level_shapes = [self.shape]
        self.downsamples = [1.0]
        self.dtype = np.dtype(image.dtype)
        self.n_z = self.shape[0] if stack else 1
        self.is_rgb = self.dtype == np.uint8 and self.axes.endswith("C") and self.shape[-1] == 3
        self.pixel_size_um = pixel_size_um

    def read_region(self, y0, x0, h, w, *, level=0, z=None):
        """Pixels of a (y0, x0, h, w) region of plane ``z``, clipped to the image."""
        a = self.array if z is None or "Z" not in self.axes else self.array[z]
        return np.asarray(a[max(0, y0):max(0, y0 + h), max(0, x0):max(0, x0 + w)])

    def read_plane(self, z=None, level=0):
        """The whole plane ``z`` (the array itself when there are no planes)."""
        return np.asarray(self.array if z is None or "Z" not in self.axes else self.array[z])

    def level_for(self, pixel_size_um):
        """Always level 0: an array has no pyramid."""
        return 0

    def thumbnail(self, max_size=1024, z=None):
        """A strided view of plane ``z`` (default the middle one) at most ``max_size`` a side."""
        z = z if z is not None else (self.n_z // 2 if "Z" in self.axes else None)
        a = self.array if z is None or "Z" not in self.axes else self.array[z]
        f = max(1, math.ceil(max(a.shape[:2]) / max_size))
        # Strided before it is converted: a lazy (dask, zarr) array is never read whole for it.
        return np.asarray(a[::f, ::f])

    def close(self):
        """Nothing to release: the array belongs to the caller."""
        pass


class LevelsSource(ArraySource):
    """Pyramid levels (largest first; numpy, dask or zarr arrays) seen as an ImageSource.

    Parameters
    ----------
    levels
        (Y, X[, C]) or, with ``stack``, (Z, Y, X[, C]) arrays, each a downsampled copy of
        the first.
    pixel_size_um
        Level-0 pixel size in µm.
    name
        What errors and results call the image.
    """

    def __init__(self, levels, pixel_size_um: float | None, name: str = "image", stack: bool = False):
        levels = list(levels)
        if not levels:
            raise ScoringError(f"{name}: no pyramid levels")
        super().__init__(levels[0], pixel_size_um, name=name, stack=stack)
        self.levels = levels
        self.level_shapes = [tuple(int(n) for n in a.shape) for a in levels]
        if any(len(s) != len(self.shape) for s in self.level_shapes):
            raise ScoringError(f"{name}: pyramid levels differ in their axes: {self.level_shapes}")
        y = self.axes.index("Y")
        H, W = self.shape[y], self.shape[y + 1]
        self.downsamples = [1.0 if i == 0 else 0.5 * (H / s[y] + W / s[y + 1])
                            for i, s in enumerate(self.level_shapes)]

    def _plane(self, level: int, z):
        a = self.levels[level]
        return a[z] if z is not None and "Z" in self.axes else a

    def read_region(self, y0, x0, h, w, *, level=0, z=None):
        a = self._plane(level, z)
        return np.asarray(a[max(0, y0):max(0, y0 + h), max(0, x0):max(0, x0 + w)])

    def read_plane(self, z=None, level=0):
        return np.asarray(self._plane(level, z))

    def level_for(self, pixel_size_um):
        """Coarsest level whose pixel size is at most ``pixel_size_um`` (as ImageSource.level_for)."""
        return level_for(self.pixel_size_um, self.downsamples, pixel_size_um)

    def thumbnail(self, max_size=1024, z=None):
        """The coarsest level at least ``max_size`` px long, strided down to about that size."""
        if z is None and "Z" in self.axes:
            z = self.n_z // 2
        y = self.axes.index("Y")
        level = 0
        for i, s in enumerate(self.level_shapes):
            if max(s[y], s[y + 1]) >= max_size:
                level = i
        s = self.level_shapes[level]
        f = max(1, math.ceil(max(s[y], s[y + 1]) / max_size))
        # Slice the lazy array before converting it: only the sampled pixels are read.
        return np.asarray(self._plane(level, z)[::f, ::f])

