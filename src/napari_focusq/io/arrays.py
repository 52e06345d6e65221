"""Arrays as image sources: a pyramid of in-memory or lazy levels (a multiscale layer's data).

``score_slide``'s machinery (tissue from a coarse view, strips that skip glass, decoding
ahead of the model) only needs the ``ImageSource`` interface, so a napari layer's data
goes through it unchanged: a multiscale layer through its own pyramid, a plain array
through a strided view for tissue. Neither ever reads level 0 whole before the first tile.
"""
from __future__ import annotations

import math

import numpy as np

from napari_focusq.io.source import level_for
from napari_focusq.scoring.pipeline import ArraySource, ScoringError


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

