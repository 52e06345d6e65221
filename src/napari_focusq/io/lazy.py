"""Array-likes over backends that read regions rather than hand out arrays (OpenSlide, DICOM, CZI).

:class:`RegionLevel` looks enough like a zarr array (``shape``, ``dtype``, ``ndim``,
``chunks``, basic slicing) for :class:`napari_focusq.io.source.ImageSource`, dask and napari to
use it unchanged: indexing reads only the window asked for, never the whole level.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


class RegionLevel:
    """One pyramid level as a lazy (Y, X[, C]) array.

    Parameters
    ----------
    shape
        (H, W) or (H, W, C) of the level; (Z, H, W[, C]) when ``stack``.
    dtype
        What ``read`` returns.
    read
        ``read(y0, x0, h, w) -> ndarray`` of shape (h, w[, C]) in this level's pixels; the
        window is always inside the level and non-empty. For a stack it is
        ``read(z, y0, x0, h, w)``, one plane at a time.
    chunks
        Tile shape used when a dask view is made (the file's own tile where known, so a
        napari view decodes each stored tile once).
    """

    def __init__(self, shape: tuple, dtype, read: Callable[[int, int, int, int], np.ndarray],
                 chunks: tuple | None = None, *, stack: bool = False):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._read = read
        self._stack = stack
        plane = self.shape[1:] if stack else self.shape
        tile = chunks or (512, 512)
        self.chunks = ((1,) if stack else ()) + (min(int(tile[0]), plane[0]), min(int(tile[1]), plane[1])) + plane[2:]

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-D level")
        if self._stack:
            zk, key = key[0], key[1:]
            if isinstance(zk, (int, np.integer)):
                return self._plane_region(key, lambda *a, z=int(zk) % self.shape[0]: self._read(z, *a))
            if not isinstance(zk, slice):
                raise TypeError(f"RegionLevel supports ints and slices, not {type(zk).__name__}")
            planes = [self._plane_region(key, lambda *a, z=z: self._read(z, *a))
                      for z in range(self.shape[0])[zk]]
            if not planes:
                return np.zeros((0,) + self._plane_region(key, None, shape_only=True), self.dtype)
            return np.stack(planes)
        return self._plane_region(key, self._read)

    def _plane_region(self, key: tuple, read, shape_only: bool = False):
        plane = self.shape[1:] if self._stack else self.shape
        spans, post = [], []
        for k, n in zip(key[:2], plane[:2]):
            if isinstance(k, (int, np.integer)):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} out of range for size {n}")
                spans.append((i, i + 1))
                post.append(0)
            elif isinstance(k, slice):
                a, b, step = k.indices(n)
                b = max(a, b) if step > 0 else b
                if step > 0:
                    spans.append((a, b))
                    post.append(slice(None, None, step))
                else:  # rare; read the covering span and let numpy reverse it
                    lo = b + 1
                    spans.append((lo, a + 1))
                    post.append(slice(None, None, step))
            else:
                raise TypeError(f"RegionLevel supports ints and slices, not {type(k).__name__}")
        (y0, y1), (x0, x1) = spans
        if shape_only:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)) + plane[2:], np.uint8)[
                tuple(post) + tuple(key[2:])].shape
        if y1 <= y0 or x1 <= x0:
            out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)) + plane[2:], self.dtype)
        else:
            out = np.asarray(read(y0, x0, y1 - y0, x1 - x0))
        return out[tuple(post) + tuple(key[2:])]

    def __repr__(self) -> str:
        return f"RegionLevel(shape={self.shape}, dtype={self.dtype}, chunks={self.chunks})"
