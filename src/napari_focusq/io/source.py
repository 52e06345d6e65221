"""ImageSource: one lazily read image (levels, axes, pixel size) and the helpers every backend shares.

Whatever the file's own axis order, everything is returned channels-last in one of the
canonical orders "YX", "YXC", "ZYX" or "ZYXC".

Float data containing NaN or inf is *not* rejected here: opening never reads the pixels.
Downstream code decides what to do with non-finite pixels; :func:`finite_fraction`
measures them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from napari_focusq.errors import ImageReadError
from napari_focusq.io import budget
from napari_focusq.io.lazy import RegionLevel


def fail_opening(path, handle, what: str, exc: Exception) -> NoReturn:
    """Close a backend's half-opened ``handle`` and raise: ``exc`` itself when it already names
    the file (an ImageReadError), else an ImageReadError saying ``what`` could not be read.
    Called from a backend's ``except Exception`` while it builds its ImageSource."""
    handle.close()
    if isinstance(exc, ImageReadError):
        raise exc
    raise ImageReadError(path, f"cannot read {what} ({type(exc).__name__}: {exc})") from exc

__all__ = ["ImageSource", "level_for", "finite_fraction"]


def level_for(pixel_size_um: float | None, downsamples, target_um: float) -> int:
    """Index of the coarsest level (of ``downsamples``) whose pixel size is at most ``target_um``.

    0 when the pixel size is unknown. Shared by every source (ImageSource, LevelsSource).
    """
    if pixel_size_um is None:
        return 0
    best = 0
    for i, d in enumerate(downsamples):
        # tolerance: pyramid sizes are rounded, so a 2x level is rarely exactly 2.000x
        if pixel_size_um * d <= target_um * (1 + 1e-3):
            best = i
    return best


class ImageSource:
    """An opened image: lazy pyramid levels plus what is known of its geometry.

    Use :func:`open_image` to create one; close it (or use it as a context manager)
    to release the file.

    Attributes
    ----------
    path
        The file.
    levels
        Lazy arrays, largest first, in canonical axis order: zarr arrays from tifffile (or
        dask views of them when the file's axes need reordering), numpy for PNG/JPEG.
    level_shapes
        Shape of each level in canonical axes.
    downsamples
        Level-0 pixels per level pixel (1.0 for level 0).
    axes
        "YX", "YXC", "ZYX" or "ZYXC".
    pixel_size_um, pixel_size_source
        Level-0 pixel size in µm (None when unknown) and where it came from: "OME",
        "Aperio MPP", "TIFF resolution", "user" or "unknown".
    z_spacing_um
        Distance between z planes in µm, when the file states it for a stack.
    is_rgb
        uint8 with three channels (an alpha channel is dropped).
    backend
        What reads the file: "tifffile", "pillow", "openslide", "wsidicom" or "pylibCZIrw".
    icc_profile
        The file's ICC colour profile (bytes) when it has one; pixels are returned as
        stored, :func:`napari_focusq.io.icc.display_transform` converts them for display.
    """

    # raw_axes: one letter per axis of the stored arrays, "Y", "X", "Z", "C", or "-" for a
    # singleton axis that is indexed away.
    def __init__(self, path: Path, raw_levels: list, raw_axes: str, axes: str, *,
                 drop_alpha: bool = False, tiff: Any = None, backend: str = "tifffile",
                 closer: Any = None, associated: Any = None, region_readers: list | None = None):
        self.path = path
        self.backend = backend
        self.icc_profile: bytes | None = None
        # closer: releases a non-tifffile handle; associated: () -> {name: lazy image getter}
        self._closer = closer
        self._associated = associated
        self._is_closed = False
        self._raw = raw_levels
        self._raw_axes = raw_axes
        # region_readers[level]: (ya, yb, xa, xb) -> (h, w[, C]) in raw order, where a level has a
        # faster path than its lazy array for 2-D regions (tiff_tiles.py); None where not
        self._region_readers = region_readers or [None] * len(raw_levels)
        self.axes = axes
        self._drop_alpha = drop_alpha
        self._tiff = tiff
        self._levels: list | None = None
        self.level_shapes = [self._canonical_shape(a.shape) for a in raw_levels]
        self.shape = self.level_shapes[0]
        y, x = axes.index("Y"), axes.index("X")
        self.downsamples = [
            1.0 if i == 0 else 0.5 * (self.shape[y] / s[y] + self.shape[x] / s[x])
            for i, s in enumerate(self.level_shapes)
        ]
        self.dtype = np.dtype(raw_levels[0].dtype)
        self.n_z = self.shape[0] if "Z" in axes else 1
        self.is_rgb = self.dtype == np.uint8 and "C" in axes and self.shape[-1] == 3
        self.pixel_size_um: float | None = None
        self.pixel_size_source = "unknown"
        self.z_spacing_um: float | None = None
        # The objective from the file's metadata (user_optics.ome_objective: na, n, ...).
        self.objective: dict | None = None

    # -- geometry -----------------------------------------------------------------------
    def _canonical_shape(self, raw_shape: tuple) -> tuple:
        sizes = {c: raw_shape[i] for i, c in enumerate(self._raw_axes) if c != "-"}
        if self._drop_alpha:
            sizes["C"] = 3
        return tuple(int(sizes[c]) for c in self.axes)

    def _index(self, ys: slice, xs: slice, z: int | None) -> tuple[tuple, list[str]]:
        """Raw index tuple for a region and the canonical letters of the result's axes."""
        idx, letters = [], []
        for c in self._raw_axes:
            if c == "-":
                idx.append(0)  # a singleton axis of the file (T, or an unused one)
                continue
            elif c == "Y":
                idx.append(ys)
            elif c == "X":
                idx.append(xs)
            elif c == "Z" and z is not None:
                idx.append(z)
                continue
            elif c == "C" and self._drop_alpha:
                idx.append(slice(0, 3))
            else:
                idx.append(slice(None))
            letters.append(c)
        return tuple(idx), letters

    @property
    def levels(self) -> list:
        """Lazy arrays in canonical axis order, largest first."""
        if self._levels is None:
            identity = self._raw_axes == self.axes and not self._drop_alpha
            if identity and all(not isinstance(a, RegionLevel) for a in self._raw):
                self._levels = list(self._raw)
            else:
                import dask.array as da

                views = []
                for arr in self._raw:
                    lazy = arr if isinstance(arr, np.ndarray) else da.from_array(arr, chunks=arr.chunks)
                    idx, letters = self._index(slice(None), slice(None), None)
                    v = lazy[idx]
                    views.append(v.transpose([letters.index(c) for c in self.axes]))
                self._levels = views
        return self._levels

    # -- reading ------------------------------------------------------------------------
    def read_region(self, y0: int, x0: int, h: int, w: int, *, level: int = 0,
                    z: int | None = None) -> np.ndarray:
        """Read a window of one level, clipped to the image.

        Parameters
        ----------
        y0, x0, h, w
            Top-left corner and size in that level's pixels. Parts outside the image are
            cut off, so the result may be smaller than (h, w) (even empty).
        level
            Pyramid level (0 = full resolution).
        z
            Plane of a z-stack. ``None`` on a stack returns every plane, (Z, h, w[, C]);
            ignored for 2-D images.

        Returns
        -------
        ndarray
            (h, w[, C]) (or (Z, h, w[, C])) in canonical order, the file's dtype.
        """
        if not 0 <= level < len(self._raw):
            raise ValueError(f"{self.path}: level {level} out of range (0..{len(self._raw) - 1})")
        shape = self.level_shapes[level]
        H, W = shape[self.axes.index("Y")], shape[self.axes.index("X")]
        ya, yb = min(max(int(y0), 0), H), min(max(int(y0) + int(h), 0), H)
        xa, xb = min(max(int(x0), 0), W), min(max(int(x0) + int(w), 0), W)
        zi = None
        if "Z" in self.axes and z is not None:
            zi = int(z)
            if not -self.n_z <= zi < self.n_z:
                raise ValueError(f"{self.path}: z={z} out of range (stack has {self.n_z} planes)")
            zi %= self.n_z
        idx, letters = self._index(slice(ya, yb), slice(xa, xb), zi)
        planes = self.n_z if "Z" in self.axes and zi is None else 1
        channels = self.shape[-1] if "C" in self.axes else 1
        # the backstop of every read: callers check their whole working set first (budget.py)
        hy, wx = self._decoded_span(level, ya, yb, xa, xb)
        budget.require(self.path, f"reading a {yb - ya:,} x {xb - xa:,} px region" +
                       (f" of {planes} planes" if planes > 1 else "") +
                       (f" (the file's chunks make it {hy:,} x {wx:,} px to decode)" if (hy, wx) != (yb - ya, xb - xa) else ""),
                       budget.nbytes(planes, channels, hy * wx + (yb - ya) * (xb - xa), itemsize=self.dtype.itemsize))
        fast = self._region_readers[level] if zi is None and "Z" not in self._raw_axes else None
        try:
            if fast is not None:
                data = fast(ya, yb, xa, xb)[(slice(None), slice(None), *idx[2:])]
            else:
                data = np.asarray(self._raw[level][idx])
        except MemoryError:
            raise  # asking for too much is the caller's problem, not the file's
        except Exception as exc:  # decoding errors surface from deep inside codecs
            _settle_zarr_tasks()
            raise ImageReadError(self.path, f"cannot read pixels ({type(exc).__name__}: {exc}); "
                                            "the file may be truncated or corrupt") from exc
        order = [letters.index(c) for c in self.axes if c in letters]
        return np.ascontiguousarray(data.transpose(order))

    def _decoded_span(self, level: int, ya: int, yb: int, xa: int, xb: int) -> tuple[int, int]:
        """Rows and columns decoded to read [ya, yb) x [xa, xb): whole chunks (TIFF tiles or
        strips), so a one-strip file decodes every row for a one-pixel read."""
        chunks = getattr(self._raw[level], "chunks", None)
        if yb <= ya or xb <= xa or not isinstance(chunks, tuple) or len(chunks) != len(self._raw_axes):
            return yb - ya, xb - xa
        span = []
        for a, b, letter in ((ya, yb, "Y"), (xa, xb, "X")):
            c = int(chunks[self._raw_axes.index(letter)]) or 1
            span.append((((b - 1) // c) - (a // c) + 1) * c)
        return span[0], span[1]

    def read_plane(self, z: int | None = None, level: int = 0) -> np.ndarray:
        """Read a whole level: one plane (or the whole stack when ``z`` is None on a stack)."""
        s = self.level_shapes[level]
        return self.read_region(0, 0, s[self.axes.index("Y")], s[self.axes.index("X")],
                                level=level, z=z)

    def level_for(self, pixel_size_um: float) -> int:
        """Coarsest level whose pixel size is at most ``pixel_size_um`` (0 if unknown)."""
        return level_for(self.pixel_size_um, self.downsamples, pixel_size_um)

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """A small overview (longest side <= ``max_size``) read from the smallest adequate level.

        Stacks give their middle plane. The level is reduced by block averaging in row
        strips, so a file without a pyramid is never loaded whole.
        """
        yax, xax = self.axes.index("Y"), self.axes.index("X")
        level = 0
        for i, s in enumerate(self.level_shapes):
            if max(s[yax], s[xax]) >= max_size:
                level = i
        H, W = self.level_shapes[level][yax], self.level_shapes[level][xax]
        f = max(1, math.ceil(max(H, W) / max_size))
        z = self.n_z // 2 if "Z" in self.axes else None
        nc = self.shape[-1] if "C" in self.axes else 1
        # about 16 MB of source per strip (block averaging works in float64, 8x that)
        rows_per_strip = f * max(1, (16 << 20) // max(1, f * W * nc * self.dtype.itemsize))
        # A level without a smaller one above it must still be read f full-width rows at a
        # time: a header claiming 10^6 x 10^6 px makes that gigabytes, so check first.
        budget.require(self.path, f"the overview of a {H:,} x {W:,} px level (strips of {f} full-width rows)",
                       budget.overview_need(min(rows_per_strip, H), W, nc, self.dtype.itemsize,
                                            math.ceil(H / f) * math.ceil(W / f)),
                       hint="or save the slide with a pyramid (e.g. bfconvert -pyramid-resolutions)")
        strips = []
        for y in range(0, H, rows_per_strip):
            strip = self.read_region(y, 0, rows_per_strip, W, level=level, z=z)
            strips.append(_block_mean(strip, f) if f > 1 else strip)
        return np.concatenate(strips, axis=0)

    # -- lifetime -----------------------------------------------------------------------
    def associated_images(self) -> dict[str, np.ndarray]:
        """The slide's side pictures ("label", "macro", "thumbnail"...) as RGB arrays.

        Read on demand (they are small); empty when the file has none.
        """
        if self._associated is None:
            return {}
        return {name: np.asarray(get()) for name, get in self._associated().items()}

    @property
    def associated_names(self) -> list[str]:
        """Names of the side pictures the file holds, without reading them."""
        return [] if self._associated is None else sorted(self._associated())

    @property
    def closed(self) -> bool:
        return self._is_closed

    def close(self) -> None:
        """Release the file handle."""
        self._is_closed = True
        self._region_readers = [None] * len(self._raw)  # they read the handle's descriptor and hold decoded tiles
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None
        if self._closer is not None:
            closer, self._closer = self._closer, None
            closer()

    def __enter__(self) -> "ImageSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        px = f"{self.pixel_size_um:g} µm ({self.pixel_size_source})" if self.pixel_size_um else "unknown"
        return (f"ImageSource({self.path.name!r}, shape={self.shape}, axes={self.axes!r}, "
                f"dtype={self.dtype}, levels={len(self.level_shapes)}, pixel_size={px})")


def _settle_zarr_tasks(timeout_s: float = 60.0) -> None:
    """Let the chunk reads a failed zarr read left behind finish, their errors retrieved.

    zarr decodes a region's chunks as tasks gathered on its own event loop; when one chunk
    fails, gather raises and its siblings run on unawaited. At exit asyncio then printed
    dozens of "Task exception was never retrieved" tracebacks after our one-line message
    (issue 19, a corrupt JPEG tile in sharpest/simulate).
    """
    import asyncio

    try:
        from zarr.core.sync import _get_loop

        loop = _get_loop()
    except Exception:  # another zarr version: nothing we can settle
        return

    async def settle():
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*others, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(settle(), loop).result(timeout_s)
    except Exception:
        pass


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Average f x f blocks of the first two axes; partial edge blocks average what they have."""
    H, W = a.shape[:2]
    if a.dtype.kind in "ui" and a.dtype.itemsize <= 2 and H and W:
        # Integers: exact sums, no float copy and no padding, so the same result as the float
        # path. It runs before the first tile is scored: the f x f strided views added into
        # the narrowest accumulator that cannot overflow are ~5x faster than np.add.reduceat
        # (its casting loop; 49 -> 9 ms for a 1483 x 1110 RGB level at f 2). Row i of each
        # block is a[i::f]: a partial last block simply gets fewer of them.
        info = np.iinfo(a.dtype)
        top = float(max(info.max, -int(info.min))) * f * f
        accs = (np.int32, np.int64) if info.min < 0 else (np.uint16, np.uint32, np.uint64)
        acc = next(t for t in accs if top < np.iinfo(t).max)
        s = np.zeros((-(-H // f), -(-W // f)) + a.shape[2:], acc)
        for i in range(min(f, H)):
            for j in range(min(f, W)):
                part = a[i::f, j::f]
                s[:part.shape[0], :part.shape[1]] += part
        cy = np.minimum(f, H - np.arange(0, H, f))
        cx = np.minimum(f, W - np.arange(0, W, f))
        n = (cy[:, None] * cx[None, :]).reshape(len(cy), len(cx), *(1,) * (a.ndim - 2))
        # float32 rounds as float64 would while 2 x max x f² < 2^24: a mean off a .5 by the
        # least it can be (1 / 2n) is then still more than half a float32 step away from it.
        q = s.astype(np.float32 if top < 2**23 else np.float64)
        q /= n
        return np.rint(q, out=q).astype(a.dtype)
    hp, wp = -H % f, -W % f
    x = a.astype(np.float64)
    if hp or wp:
        pad = [(0, hp), (0, wp)] + [(0, 0)] * (a.ndim - 2)
        w = np.pad(np.ones((H, W)), [(0, hp), (0, wp)])
        x = np.pad(x, pad)
    else:
        w = np.ones((H, W))
    shp = (x.shape[0] // f, f, x.shape[1] // f, f) + a.shape[2:]
    s = x.reshape(shp).sum(axis=(1, 3))
    n = w.reshape(shp[:4]).sum(axis=(1, 3))
    out = s / n.reshape(n.shape + (1,) * (a.ndim - 2))
    if np.issubdtype(a.dtype, np.integer):
        out = np.rint(out)
    return out.astype(a.dtype)


def finite_fraction(a: np.ndarray) -> float:
    """Fraction of finite values (1.0 for integer data); NaN/inf are not an error at open time."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating) or a.size == 0:
        return 1.0
    return float(np.isfinite(a).mean())
