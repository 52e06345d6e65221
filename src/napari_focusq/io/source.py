"""Lazy reading of whole-slide scans, OME-TIFF pyramids, z-stacks and small PNG/JPEG images.

TIFF-based files (TIFF, BigTIFF, OME-TIFF, Aperio SVS, Hamamatsu NDPI) are opened with
tifffile and read through its zarr store, so a region reads only the tiles it touches.
PNG and JPEG files are small by nature and are loaded whole with Pillow.

Whatever the file's own axis order, everything is returned channels-last in one of the
canonical orders "YX", "YXC", "ZYX" or "ZYXC".

Float data containing NaN or inf is *not* rejected here: opening never reads the pixels.
Downstream code decides what to do with non-finite pixels; :func:`finite_fraction`
measures them.
"""
from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from napari_focusq.io import budget
from napari_focusq.errors import ImageReadError
from napari_focusq.io.lazy import RegionLevel

__all__ = ["ImageSource", "open_image", "sample_slide_path", "finite_fraction", "ImageReadError"]

#: Suffixes of files only OpenSlide reads here (MIRAX, Hamamatsu VMS/VMU).
OPENSLIDE_SUFFIXES = {".mrxs", ".vms", ".vmu"}
#: TIFF layouts (OpenSlide's vendor names) that tifffile reads but OpenSlide stitches right:
#: Philips TIFF (sparse tiles), Leica SCN (several regions), Ventana BIF (overlapping tiles).
OPENSLIDE_TIFF_VENDORS = {"philips", "leica", "ventana"}
SUPPORTED_FORMATS = ("TIFF, BigTIFF, OME-TIFF, SVS, NDPI, PNG, JPEG, DICOM WSI, CZI, and through "
                     "OpenSlide MRXS, SCN, BIF, VMS/VMU and Philips TIFF, and VSI through slideio")
#: Olympus/Evident cellSens VSI, read through slideio
SLIDEIO_SUFFIXES = {".vsi"}
TIFF_SUFFIXES = {".tif", ".tiff", ".svs", ".ndpi", ".btf", ".tf2", ".tf8", ".scn", ".bif", ".qptiff"}
PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg"}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Series that hold a slide's overview pictures rather than the scan itself.
_SIDE_SERIES = {"thumbnail", "label", "macro"}
# Factors from a length unit to µm (OME UnitsLength spellings and ImageJ's).
_UM_PER_UNIT = {
    "m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0,
    "\\u00b5m": 1.0, "nm": 1e-3, "pm": 1e-6, "å": 1e-4, "Å": 1e-4, "angstrom": 1e-4,
}
# TIFF resolution tags are often a program's default rather than a calibration: 72 and 96 dpi
# are image-editor defaults and give pixels of hundreds of µm. Nothing a focus model can use
# is coarser than this, so larger values from resolution tags are treated as unknown.
_MAX_TAG_PIXEL_UM = 20.0
_MIN_TAG_PIXEL_UM = 0.01


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
                 closer: Any = None, associated: Any = None):
        self.path = path
        self.backend = backend
        self.icc_profile: bytes | None = None
        # closer: releases a non-tifffile handle; associated: () -> {name: lazy image getter}
        self._closer = closer
        self._associated = associated
        self._is_closed = False
        self._raw = raw_levels
        self._raw_axes = raw_axes
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
        try:
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
        # Integers: sums in uint32/uint64 by reduceat (partial blocks included), no float
        # copy and no padding: exact, so the same result as the float path, several times
        # faster (it runs before the first tile is scored).
        acc = np.uint32 if a.dtype.itemsize == 1 or f * f * 65535 < 2**32 else np.uint64
        s = np.add.reduceat(a, np.arange(0, H, f), axis=0, dtype=acc)
        s = np.add.reduceat(s, np.arange(0, W, f), axis=1, dtype=acc)
        cy = np.minimum(f, H - np.arange(0, H, f))
        cx = np.minimum(f, W - np.arange(0, W, f))
        n = (cy[:, None] * cx[None, :]).reshape(len(cy), len(cx), *(1,) * (a.ndim - 2))
        return np.rint(s / n).astype(a.dtype)
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


def sample_slide_path() -> Path:
    """Path of the bundled sample slide (CMU-1-Small-Region.svs, CC0, OpenSlide test data)."""
    from importlib.resources import files

    p = Path(str(files("napari_focusq") / "data" / "CMU-1-Small-Region.svs"))
    if not p.is_file():
        raise FileNotFoundError(f"{p}: the bundled sample slide is missing from the installation")
    return p


# ----------------------------------------------------------------------------------------
def open_image(path: str | Path, *, pixel_size_um: float | None = None) -> ImageSource:
    """Open a slide, z-stack or image lazily.

    Parameters
    ----------
    path
        TIFF/BigTIFF, OME-TIFF, Aperio SVS, Hamamatsu NDPI, PNG or JPEG.
    pixel_size_um
        Level-0 pixel size in µm; overrides the file's metadata (source "user").

    Returns
    -------
    ImageSource

    Raises
    ------
    ImageReadError
        The file is missing, empty, not a supported format, truncated or corrupt, or has
        axes that cannot be read as (Z,) Y, X (, C).
    """
    if pixel_size_um is not None and not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number of µm; got {pixel_size_um!r}")
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise ImageReadError(path, "a symbolic link that leads nowhere (broken, or a loop)")
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        from napari_focusq.io.dicom import is_dicom_folder

        if not is_dicom_folder(path):
            raise ImageReadError(path, "is a directory, not an image file (a folder is read only "
                                       "when it holds the .dcm files of one DICOM slide)")
        src = _open_dicom(path)
    else:
        src = _open_file(path)
    if pixel_size_um is not None:
        src.pixel_size_um, src.pixel_size_source = float(pixel_size_um), "user"
    return src


def _open_file(path: Path) -> ImageSource:
    """Pick the backend by what the file is (its first bytes), then by its suffix."""
    if not path.is_file():  # opening a FIFO would wait for a writer forever
        raise ImageReadError(path, "is not a regular file (a FIFO, socket or device); focusq reads image files")
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc.strerror or exc})") from exc
    if not head:
        raise ImageReadError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in SLIDEIO_SUFFIXES:  # a VSI is a TIFF holding only the overview; the scan is in .ets files
        from napari_focusq.io.slideio import open_slideio

        return open_slideio(path)
    if head[:4] in _TIFF_MAGIC:
        return _open_tiff_family(path)
    if head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC):
        return _open_pillow(path)
    if head[128:132] == b"DICM":
        return _open_dicom(path)
    if head.startswith(b"ZISRAWFILE"):
        from napari_focusq.io.czi import open_czi

        return open_czi(path)
    if suffix in OPENSLIDE_SUFFIXES:
        from napari_focusq.io.openslide import open_openslide

        return open_openslide(path)
    if suffix in TIFF_SUFFIXES | PILLOW_SUFFIXES | {".czi", ".dcm"}:
        kind = {".czi": "CZI", ".dcm": "DICOM"}.get(suffix, "TIFF" if suffix in TIFF_SUFFIXES
                                                       else suffix[1:].upper())
        raise ImageReadError(path, f"not a valid {kind} file (it starts with bytes {head[:4]!r})")
    raise ImageReadError(path, f"unsupported format {suffix or '(no extension)'!r}: focusq reads "
                               f"{SUPPORTED_FORMATS}; convert other slide formats to OME-TIFF "
                               "(e.g. with QuPath or bfconvert)")


def _open_tiff_family(path: Path) -> ImageSource:
    """tifffile (the fast path) unless the TIFF is a vendor layout only OpenSlide stitches right."""
    vendor = _openslide_vendor(path)
    if vendor in OPENSLIDE_TIFF_VENDORS:
        from napari_focusq.io.openslide import open_openslide

        return open_openslide(path)
    return _open_tiff(path)


def _openslide_vendor(path: Path) -> str | None:
    """OpenSlide's name for a TIFF's layout ("philips", "leica", ...), None without OpenSlide."""
    try:
        import openslide
    except ImportError:  # also a broken openslide-bin: tifffile still reads the file
        return None
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # a TIFF OpenSlide cannot parse: leave it to tifffile's diagnostics
        return None


def _open_dicom(path: Path) -> ImageSource:
    """wsidicom for DICOM WSI; OpenSlide when only that is installed."""
    from napari_focusq.io.extras import MissingExtraError, require

    try:
        require("wsidicom", "dicom", "reading DICOM WSI")
    except MissingExtraError as exc:
        try:
            import openslide  # noqa: F401  (OpenSlide 4 reads DICOM WSI too)
        except ImportError:
            raise ImageReadError(path, str(exc)) from exc
        from napari_focusq.io.openslide import open_openslide

        if path.is_dir():  # OpenSlide opens a DICOM slide by any one of its files
            from napari_focusq.io.dicom import _is_dicom_file

            path = next(f for f in sorted(path.iterdir()) if f.is_file() and _is_dicom_file(f))
        return open_openslide(path)
    from napari_focusq.io.dicom import open_dicom

    return open_dicom(path)




def _canonical_axes(path: Path, axes: str, shape: tuple) -> tuple[str, str]:
    """Map a file's axes to canonical ones: (one letter per stored axis, canonical axes)."""
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(path, f"has no Y and X axes (axes {axes!r}, shape {shape})")
    # positions, not letters: unnamed axes ("Q") can repeat
    big = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    letters = [axes[i] for i in big]
    if "C" in letters and "S" in letters:
        raise ImageReadError(path, f"has both channels and samples per pixel (axes {axes!r}, "
                                   f"shape {shape}); save one channel layout")
    unknown = [i for i in big if axes[i] not in "ZCS"]
    zpos = [i for i in big if axes[i] == "Z"]
    if not zpos and len(unknown) == 1 and axes[unknown[0]] in "QI":
        # plain multi-page TIFFs (and tifffile's "shaped" files) stack planes without naming
        # the axis; a stack of same-size planes is read as z
        zpos, unknown = unknown, []
    if unknown:
        names = ", ".join(f"{axes[i]}={shape[i]}" for i in unknown)
        raise ImageReadError(path, f"has axes focusq cannot use ({names}; axes {axes!r}, shape {shape}): "
                                   "it reads 2-D images and z-stacks with optional channels; "
                                   "save a single time point / position")
    raw = "".join(
        a if a in "YX" else "Z" if i in zpos else "C" if i in big else "-"
        for i, a in enumerate(axes)
    )
    canon = ("Z" if "Z" in raw else "") + "YX" + ("C" if "C" in raw else "")
    return raw, canon


def _open_tiff(path: Path) -> ImageSource:
    import tifffile
    import zarr

    warnings = _Collect()
    logging.getLogger("tifffile").addHandler(warnings)
    try:
        tf = tifffile.TiffFile(path)
    except Exception as exc:
        logging.getLogger("tifffile").removeHandler(warnings)
        raise ImageReadError(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    try:
        try:
            series = _pick_series(path, tf)
        except ImageReadError:
            _raise_if_truncated(path, tf, warnings.messages)
            raise
        finally:
            logging.getLogger("tifffile").removeHandler(warnings)
        # tifffile reads a broken chain of IFDs as a shorter file and only logs it
        _raise_if_truncated(path, tf, warnings.messages)
        raw, canon = _canonical_axes(path, series.axes, series.shape)
        _check_not_truncated(path, tf, series)
        raw_levels = []
        # tifffile decodes a region's tiles on zarr's one I/O thread unless it has more than
        # two workers, which it gives itself only on 6+ cores: on 2 cores every JPEG tile of
        # a strip was decoded in turn. Compressed tiles get at least two, which tifffile
        # decodes through threads (uncompressed ones are left as tifffile sets them) (A/B, 105 Mpx
        # pyramid, loaded machine: decode 6.16/3.83 -> 3.58/2.60 s, score_slide
        # 10.38/7.96 -> 6.43/5.01 s).
        kf = series.keyframe
        workers = max(2, kf.maxworkers) if kf.compression != 1 and kf.maxworkers else None
        for i in range(len(series.levels)):
            arr = zarr.open(series.aszarr(level=i, maxworkers=workers), mode="r")
            if not hasattr(arr, "shape"):  # a group: should not happen for one level
                raise ImageReadError(path, f"level {i} did not open as an array")
            raw_levels.append(arr)
        page = series.keyframe
        drop_alpha = (
            "S" in series.axes and raw[series.axes.index("S")] == "C"
            and raw_levels[0].shape[series.axes.index("S")] == 4
            and page.photometric == tifffile.PHOTOMETRIC.RGB
        )
        src = ImageSource(path, raw_levels, raw, canon, drop_alpha=drop_alpha, tiff=tf,
                          associated=lambda: _tiff_associated(tf))
        icc = page.tags.get(34675)  # InterColorProfile
        src.icc_profile = bytes(icc.value) if icc is not None and icc.value else None
        src.pixel_size_um, src.pixel_size_source, src.z_spacing_um = _tiff_pixel_size(tf, series)
        if tf.is_ome and tf.ome_metadata:
            from napari_focusq.optics.user import ome_objective

            src.objective = ome_objective(tf.ome_metadata, tf.series.index(series))
        if src.n_z == 1:
            src.z_spacing_um = None
        return src
    except ImageReadError:
        tf.close()
        raise
    except Exception as exc:
        tf.close()
        raise ImageReadError(path, f"cannot read TIFF structure ({type(exc).__name__}: {exc})") from exc


def _raise_if_truncated(path: Path, tf, messages: list[str]) -> None:
    # tifffile logs "invalid page offset N" for a later directory and "invalid offset to
    # first page N" when even the first lies past the end (a file cut before its IFDs, as
    # writers that put the directories last leave it)
    for msg in messages:
        m = re.search(r"invalid (?:page offset|offset to first page) (\d+)", msg)
        if m and int(m.group(1)) >= tf.filehandle.size:
            raise ImageReadError(path, f"file is truncated: its {'first' if 'first' in msg else 'next'} "
                                       f"image directory is at byte {int(m.group(1)):,} but the file "
                                       f"has only {tf.filehandle.size:,} bytes")


class _Collect(logging.Handler):
    """Keeps the messages tifffile logs while a file is opened."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _pick_series(path: Path, tf):
    """The scan itself: the largest series by plane area, skipping overview pictures."""
    best, best_area = None, -1
    for s in tf.series:
        if (s.name or "").strip().lower() in _SIDE_SERIES:
            continue
        sizes = dict(zip(s.axes, s.shape))
        area = sizes.get("Y", 0) * sizes.get("X", 0)
        if area > best_area:
            best, best_area = s, area
    if best is None:
        raise ImageReadError(path, "contains no image series")
    return best


def _tiff_associated(tf) -> dict:
    """{name: reader} for the label / macro / thumbnail series of a slide TIFF."""
    out = {}
    for s in tf.series:
        name = (s.name or "").strip().lower()
        if name in _SIDE_SERIES and name not in out:
            out[name] = s.asarray
    return out


def _check_not_truncated(path: Path, tf, series) -> None:
    """Fail at open time, not mid-run, when image data lie beyond the end of the file."""
    size = tf.filehandle.size
    n = len(series.pages)
    pages = [series.pages[i] for i in (range(n) if n <= 2000 else (0, n - 1))]
    for lvl in series.levels[1:]:
        pages += [lvl.pages[0], lvl.pages[-1]]
    end = 0
    for p in pages:
        if p is None:
            continue
        for off, nbytes in zip(p.dataoffsets, p.databytecounts):
            if nbytes:
                end = max(end, off + nbytes)
    if series.dataoffset is not None:  # contiguous, uncompressed (ImageJ, tifffile "shaped")
        end = max(end, series.dataoffset + series.nbytes)
    if end > size:
        raise ImageReadError(path, f"file is truncated: image data run to byte {end:,} "
                                   f"but the file has only {size:,} bytes")


def _um(value: Any, unit: str | None) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    f = _UM_PER_UNIT.get((unit or "µm").strip(), _UM_PER_UNIT.get((unit or "").strip().lower()))
    if f is None or not math.isfinite(v) or v <= 0:
        return None
    return v * f


def _tiff_pixel_size(tf, series) -> tuple[float | None, str, float | None]:
    """(pixel µm, source, z spacing µm) from OME, Aperio, ImageJ or resolution tags."""
    if tf.is_ome and tf.ome_metadata:
        px, dz = _ome_pixel_size(tf.ome_metadata, tf.series.index(series))
        if px is not None:
            return px, "OME", dz
    page = tf.pages[0]
    desc = page.description or ""
    if tf.is_philips and (px := _philips_pixel_size(tf.philips_metadata)):
        return px, "Philips DICOM_PIXEL_SPACING", None
    if tf.is_svs or desc.startswith("Aperio"):
        m = re.search(r"\bMPP\s*=\s*([0-9.eE+-]+)", desc)
        if m and (px := _um(m.group(1), "µm")):
            return px, "Aperio MPP", None
    dz = None
    ij = tf.imagej_metadata or {}
    ij_unit = str(ij.get("unit", "")).strip()
    if ij_unit and _um(1, ij_unit) and ij.get("spacing"):
        dz = _um(ij["spacing"], ij_unit)
    px = _resolution_um(series.keyframe, ij_unit if ij else None)
    if px is not None:
        return px, "TIFF resolution", dz
    return None, "unknown", dz


def _philips_pixel_size(xml: str | None) -> float | None:
    """Level-0 µm from a Philips TIFF's first DICOM_PIXEL_SPACING ('"row mm" "col mm"')."""
    m = re.search(r'Name="DICOM_PIXEL_SPACING"[^>]*>([^<]+)<', xml or "")
    if not m:
        return None
    vals = [_um(v.strip('"'), "mm") for v in m.group(1).replace("&quot;", '"').split()]
    vals = [v for v in vals if v]
    return float(np.mean(vals)) if vals else None


def _ome_pixel_size(xml: str, index: int) -> tuple[float | None, float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    images = [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Image"]
    if not images:
        return None, None
    image = images[index] if index < len(images) else images[0]
    pixels = next((e for e in image if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None, None
    a = pixels.attrib
    sizes = [_um(a[k], a.get(k + "Unit")) for k in ("PhysicalSizeX", "PhysicalSizeY") if k in a]
    sizes = [s for s in sizes if s]
    px = float(np.mean(sizes)) if sizes else None
    dz = _um(a["PhysicalSizeZ"], a.get("PhysicalSizeZUnit")) if "PhysicalSizeZ" in a else None
    return px, dz


def _resolution_um(page, ij_unit: str | None) -> float | None:
    tags = page.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if not num or not den:
        return None
    per_unit = num / den
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    if unit == 2:
        if per_unit in (1, 72, 96):  # "no resolution" and screen defaults
            return None
        px = 25400.0 / per_unit
    elif unit == 3:
        px = 10000.0 / per_unit
    elif ij_unit and _um(1, ij_unit):  # ImageJ: unit in the description, tag unit "none"
        px = _um(1.0 / per_unit, ij_unit)
    else:
        return None  # dimensionless
    if px is None or not _MIN_TAG_PIXEL_UM <= px <= _MAX_TAG_PIXEL_UM:
        return None
    return px


def _open_pillow(path: Path) -> ImageSource:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("1", "LA"):
                im = im.convert("L")
            elif mode in ("PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
                im = im.convert("RGBA" if mode == "PA" else "RGB")
            arr = np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"too large to read as {path.suffix[1:].upper() or 'PNG/JPEG'} "
                                   "(convert it to a tiled TIFF)") from exc
    except Exception as exc:
        raise ImageReadError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]  # RGBA: alpha carries no focus information
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    arr = np.ascontiguousarray(arr)
    axes = "YXC" if arr.ndim == 3 else "YX"
    return ImageSource(path, [arr], axes, axes)
