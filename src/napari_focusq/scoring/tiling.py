"""Tile grid at the working resolution, resampling to it, and tissue detection.

The model sees ``TILE_PX`` x ``TILE_PX`` tiles at ``WORKING_PIXEL_UM``. A
:class:`TileGrid` maps that grid onto the input's level-0 pixels (tile edges may be
fractional there; bounds are rounded exactly as :meth:`FocusMap.tile_bounds` does),
:func:`tile_to_working` turns one level-0 region into a model-sized tile, and
:func:`tissue_mask` / :func:`tissue_fraction` decide which tiles are worth scoring.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from napari_focusq.config import MODALITIES, TILE_PX, WORKING_PIXEL_UM

#: Pixel sizes within this relative distance of the working one are used as they are.
RESAMPLE_TOLERANCE = 0.05


class ResolutionWarning(UserWarning):
    """The input is coarser than the working resolution; small defocus is beyond it."""


class TilingError(ValueError):
    """Bad geometry or image passed to the tiling functions."""


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


# --------------------------------------------------------------------- resampling
def _scale(pixel_size_um: float, working_pixel_um: float) -> float:
    if not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise TilingError(f"pixel size must be a positive number of µm; got {pixel_size_um!r}")
    if not (np.isfinite(working_pixel_um) and working_pixel_um > 0):
        raise TilingError(f"working pixel size must be a positive number of µm; got {working_pixel_um!r}")
    return pixel_size_um / working_pixel_um


def needs_resampling(pixel_size_um: float, working_pixel_um: float = WORKING_PIXEL_UM) -> bool:
    """Whether ``pixel_size_um`` is further than 5 % from the working resolution."""
    return abs(_scale(pixel_size_um, working_pixel_um) - 1) > RESAMPLE_TOLERANCE


def working_shape(shape, pixel_size_um: float, working_pixel_um: float = WORKING_PIXEL_UM) -> tuple[int, int]:
    """(height, width) that a level-0 region of ``shape`` has at the working resolution."""
    if not needs_resampling(pixel_size_um, working_pixel_um):
        return int(shape[0]), int(shape[1])
    s = _scale(pixel_size_um, working_pixel_um)
    return max(1, round(shape[0] * s)), max(1, round(shape[1] * s))


def _area_weights(n: int, m: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(m, k) input indices and weights: output j averages input span [j*step, (j+1)*step)."""
    lo = np.arange(m) * step
    hi = lo + step
    first = np.floor(lo).astype(np.int64)
    last = np.minimum(np.ceil(hi).astype(np.int64), n)  # exclusive
    width = int(max(1, (last - first).max()))
    idx = first[:, None] + np.arange(width)[None, :]
    w = np.clip(np.minimum(idx + 1, hi[:, None]) - np.maximum(idx, lo[:, None]), 0, None)
    w[idx >= n] = 0
    tot = w.sum(1, keepdims=True)
    # An output pixel past the input (only with an explicit out_shape) copies the last one.
    empty = tot[:, 0] <= 0
    w[empty, 0] = 1.0
    tot[empty] = 1.0
    return np.minimum(idx, n - 1), w / tot


def _linear_weights(n: int, m: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(m, 2) input indices and linear-interpolation weights, pixel centres aligned."""
    x = np.clip((np.arange(m) + 0.5) * step - 0.5, 0, n - 1)
    i0 = np.floor(x).astype(np.int64)
    f = x - i0
    return np.stack([i0, np.minimum(i0 + 1, n - 1)], 1), np.stack([1 - f, f], 1)


def _sparse(idx: np.ndarray, w: np.ndarray, n: int, channels: int, dtype):
    """(m*channels, n*channels) sparse matrix of the weights, one block per channel."""
    from scipy import sparse

    m, k = idx.shape
    c = np.arange(channels)
    rows = (np.repeat(np.arange(m), k)[:, None] * channels + c).ravel()
    cols = (idx.ravel()[:, None] * channels + c).ravel()
    vals = np.repeat(w.ravel(), channels).astype(dtype)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(m * channels, n * channels))


def _resample_axes(a: np.ndarray, weights) -> np.ndarray:
    # Both axes as sparse products on 2-D views: the y axis from the left on
    # (Y, X*C), the x axis from the right on the same layout (with the weights
    # repeated per channel), so the image is never transposed (slow for C=3).
    y, x = a.shape[:2]
    c = a.shape[2] if a.ndim == 3 else 1
    out = a.reshape(y, x * c)
    wy, wx = weights
    if wy is not None:
        out = _sparse(*wy, y, 1, a.dtype) @ out
    if wx is not None:
        out = out @ _sparse(*wx, x, c, a.dtype).T.tocsr()
    return np.asarray(out).reshape(out.shape[0], -1, *a.shape[2:])


def _cast_like(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(a), info.min, info.max).astype(dtype)
    if dtype == np.bool_:
        return a >= 0.5
    return a.astype(dtype, copy=False)


def resample_to_working(
    image,
    pixel_size_um: float,
    working_pixel_um: float = WORKING_PIXEL_UM,
    *,
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resample a (Y, X[, C]) image to the working resolution.

    Finer inputs are area-averaged (an exact block mean for integer factors);
    coarser ones are interpolated linearly with a :class:`ResolutionWarning`;
    inputs within 5 % of the working pixel size are returned untouched.

    Parameters
    ----------
    image
        (Y, X) or (Y, X, C) array of any numeric dtype; the dtype is kept.
    pixel_size_um, working_pixel_um
        Input and target pixel sizes in µm.
    out_shape
        Exact (height, width) wanted; the scale is stretched slightly to fit.
        Defaults to the input size times the scale, rounded.

    Returns
    -------
    numpy.ndarray
        The resampled image, same dtype and channel count as the input.
    """
    return _resample(image, pixel_size_um, working_pixel_um, out_shape, stacklevel=3)


def _resample(image, pixel_size_um, working_pixel_um, out_shape, stacklevel):
    s = _scale(pixel_size_um, working_pixel_um)
    image = np.asarray(image)
    if image.ndim not in (2, 3) or 0 in image.shape[:2]:
        raise TilingError(f"expected a non-empty (Y, X) or (Y, X, C) image; got shape {image.shape}")
    n_y, n_x = image.shape[:2]
    if s > 1 + RESAMPLE_TOLERANCE:
        warnings.warn(
            f"pixel size {pixel_size_um:g} µm is coarser than {working_pixel_um:g} µm/px: "
            "sub-micrometre defocus is beyond it; the image is upsampled",
            ResolutionWarning,
            stacklevel=stacklevel,
        )
    if out_shape is None:
        if not needs_resampling(pixel_size_um, working_pixel_um):
            return image
        out_shape = (max(1, round(n_y * s)), max(1, round(n_x * s)))
        steps = (1 / s, 1 / s)
    else:
        out_shape = (int(out_shape[0]), int(out_shape[1]))
        if min(out_shape) < 1:
            raise TilingError(f"out_shape must be positive; got {out_shape}")
        if out_shape == (n_y, n_x):
            return image
        steps = (n_y / out_shape[0], n_x / out_shape[1])
    make = _area_weights if s < 1 else _linear_weights
    work = np.float64 if image.dtype in (np.float64, np.int64, np.uint64, np.int32, np.uint32) else np.float32
    weights = [make(n, m, st) if (m != n or st != 1) else None
               for n, m, st in zip((n_y, n_x), out_shape, steps)]
    out = _resample_axes(image.astype(work, copy=False), weights)
    return _cast_like(out, image.dtype)


def tile_to_working(
    region,
    pixel_size_um: float,
    tile_px: int = TILE_PX,
    working_pixel_um: float = WORKING_PIXEL_UM,
) -> tuple[np.ndarray, float]:
    """Turn one tile's level-0 region into a model tile of exactly tile_px x tile_px.

    The region is resampled by the working factor; a partial (edge) tile is then
    padded by reflection at the bottom/right, and a region a pixel too large is
    centre-cropped.

    Returns
    -------
    tile
        (tile_px, tile_px[, C]) array, same dtype as ``region``.
    valid_fraction
        Fraction of the tile that is real image rather than padding: the top-left
        ``round(h * s) x round(w * s)`` pixels (s = pixel / working size); 1.0 for
        interior tiles.
    """
    region = np.asarray(region)
    if region.ndim not in (2, 3) or 0 in region.shape[:2]:
        raise TilingError(f"expected a non-empty (h, w[, C]) tile region; got shape {region.shape}")
    s = _scale(pixel_size_um, working_pixel_um)
    h, w = region.shape[:2]
    if needs_resampling(pixel_size_um, working_pixel_um):
        target = tuple(min(tile_px, max(1, round(n * s))) for n in (h, w))
        # Coarse input warns here too; Python's default filter shows it once per call site.
        out = _resample(region, pixel_size_um, working_pixel_um, target, stacklevel=3)
    else:
        out = region
    oy = max(0, (out.shape[0] - tile_px) // 2)
    ox = max(0, (out.shape[1] - tile_px) // 2)
    out = out[oy:oy + tile_px, ox:ox + tile_px]
    valid = out.shape[0] * out.shape[1] / tile_px**2  # real pixels, before the padding
    pad = [(0, tile_px - out.shape[0]), (0, tile_px - out.shape[1])] + [(0, 0)] * (out.ndim - 2)
    if pad[0][1] or pad[1][1]:
        mode = "reflect" if min(out.shape[:2]) > 1 else "edge"
        out = np.pad(out, pad, mode=mode)
    return np.ascontiguousarray(out), float(valid)


# ------------------------------------------------------------------------- tissue
def _subsample(a: np.ndarray, max_px: int = 1_000_000) -> np.ndarray:
    step = max(1, math.ceil(math.sqrt(a.shape[0] * a.shape[1] / max_px)))
    return np.asarray(a[::step, ::step])


def _as_float(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 copy with non-finite pixels zeroed, and the mask of finite pixels."""
    a = np.asarray(image).astype(np.float32, copy=True)
    if not np.issubdtype(np.asarray(image).dtype, np.floating):
        return a, np.ones(a.shape[:2], bool)
    finite = np.isfinite(a)
    if a.ndim == 3:
        finite = finite.all(axis=2)
    a[~np.isfinite(a)] = 0
    return a, finite


def _brightfield_mask(a: np.ndarray, finite: np.ndarray, white_level: float) -> np.ndarray:
    from scipy import ndimage

    if a.ndim == 2 or a.shape[2] < 3:
        r = g = b = a if a.ndim == 2 else a[..., 0]
    else:
        r, g, b = a[..., 0], a[..., 1], a[..., 2]
    inv = np.float32(1 / max(float(white_level), 1e-12))
    # Per-channel ops: reductions over a length-3 last axis are several times slower.
    mx = np.maximum(np.maximum(r, g), b)
    chroma = mx - np.minimum(np.minimum(r, g), b)
    lum = r * np.float32(0.299 * inv) + g * np.float32(0.587 * inv) + b * np.float32(0.114 * inv)
    lum = ndimage.uniform_filter(lum, 3)
    chroma = ndimage.uniform_filter(chroma * inv, 3)
    sat = chroma / np.maximum(ndimage.uniform_filter(mx * inv, 3), 1e-6)
    tissue = (sat > 0.07) | (lum < 0.8)
    # Black ink, pen and out-of-slide regions: very dark and colourless. Grown by
    # two pixels, since their blurred rims are grey and would pass as tissue.
    ink = (lum < 0.25) & (chroma < 0.08)
    if ink.any():
        tissue &= ~ndimage.maximum_filter(ink, 5)
    tissue &= lum > 0.02
    return tissue & finite


def estimate_white_level(image) -> float:
    """Brightfield white (glass) level: the 99th percentile of the luminance.

    Bounded below for integer images so an all-black field is not taken as "white".
    Pass the result of a whole-slide thumbnail to :func:`tissue_mask` when masking
    single tiles, so an all-tissue tile is not judged against its own brightest pixels.
    """
    a = _subsample(np.asarray(image))
    dtype = a.dtype
    a = a.astype(np.float32)
    if a.ndim == 3 and a.shape[2] >= 3:
        lum = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    else:
        lum = a if a.ndim == 2 else a[..., 0]
    lum = lum[np.isfinite(lum)]
    white = float(np.percentile(lum, 99)) if lum.size else 0.0
    if np.issubdtype(dtype, np.integer):
        white = max(white, 0.3 * np.iinfo(dtype).max)
    return white


def _fluorescence_channel(a: np.ndarray, finite: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    sm = ndimage.gaussian_filter(a, 1.0)
    vals = _subsample(sm)[_subsample(finite)]
    if vals.size < 2:
        return np.zeros(a.shape, bool)
    lo, hi = float(vals.min()), float(vals.max())
    if not hi > lo:
        return np.zeros(a.shape, bool)  # flat (e.g. all dark): no signal
    delta = (hi - lo) * 1e-3
    logv = np.log(vals - lo + delta)
    t = float(np.exp(threshold_otsu(logv)) - delta + lo)
    bg, fg = vals[vals <= t], vals[vals > t]
    if fg.size == 0 or bg.size == 0:
        return np.zeros(a.shape, bool)
    bg_med = float(np.median(bg))
    bg_sd = 1.4826 * float(np.median(np.abs(bg - bg_med)))
    bg_sd = max(bg_sd, (hi - lo) * 1e-3)
    # Otsu splits pure noise in two; demand signal well clear of the background.
    if (float(np.median(fg)) - bg_med) / bg_sd < 5:
        return np.zeros(a.shape, bool)
    return (sm > max(t, bg_med + 3 * bg_sd)) & finite


def tissue_mask(image_working, modality: str, *, white_level: float | None = None) -> np.ndarray:
    """Boolean (Y, X) mask of tissue (brightfield) or signal (fluorescence).

    Parameters
    ----------
    image_working
        (Y, X) or (Y, X, C) image at the working resolution, any dtype.
    modality
        "brightfield": tissue is coloured or darker than the glass, but not black
        ink. "fluorescence": signal clearly above the background, any channel.
    white_level
        Brightfield glass level in image units; estimated from the image when
        omitted (pass a slide-wide value when masking single tiles).

    Returns
    -------
    numpy.ndarray
        bool (Y, X); NaN/inf pixels are never tissue.
    """
    img = np.asarray(image_working)
    if img.ndim not in (2, 3) or 0 in img.shape[:2]:
        raise TilingError(f"expected a non-empty (Y, X) or (Y, X, C) image; got shape {img.shape}")
    if img.dtype == np.bool_:
        img = img.astype(np.uint8)
    a, finite = _as_float(img)
    if modality == "brightfield":
        if white_level is None:
            white_level = estimate_white_level(img)
        return _brightfield_mask(a, finite, white_level)
    if modality == "fluorescence":
        if a.ndim == 2:
            return _fluorescence_channel(a, finite)
        out = np.zeros(a.shape[:2], bool)
        for c in range(a.shape[2]):
            out |= _fluorescence_channel(a[..., c], finite)
        return out
    raise TilingError(f"unknown modality {modality!r}; expected one of {MODALITIES}")


def tissue_fraction(tile_working, modality: str, valid=None, *, white_level: float | None = None) -> float:
    """Fraction of a tile's full area covered by real tissue.

    Parameters
    ----------
    tile_working
        A working-resolution tile (Y, X[, C]).
    modality
        "brightfield" or "fluorescence".
    valid
        None (the whole tile is real image), a bool (Y, X) mask of real pixels, or
        the ``valid_fraction`` from :func:`tile_to_working` (the padded part is taken
        to look like the real part, so the fraction is scaled by it).
    white_level
        See :func:`tissue_mask`.
    """
    mask = tissue_mask(tile_working, modality, white_level=white_level)
    if valid is None:
        return float(mask.mean())
    if np.ndim(valid) == 0:
        v = float(valid)
        if not 0 <= v <= 1:
            raise TilingError(f"valid fraction must be in [0, 1]; got {v}")
        return float(mask.mean()) * v
    valid = np.asarray(valid, bool)
    if valid.shape != mask.shape:
        raise TilingError(f"valid mask {valid.shape} does not match the tile {mask.shape}")
    return float((mask & valid).sum() / mask.size)


# ----------------------------------------------------------------------- modality
def detect_modality(image) -> tuple[str, str]:
    """Guess the modality of an image from its layout and background.

    Returns
    -------
    (modality, reason)
        "brightfield" for RGB(A) images with a bright background, otherwise
        "fluorescence", with a short human-readable reason.
    """
    shape = getattr(image, "shape", None)
    if shape is None:
        image = np.asarray(image)
        shape = image.shape
    dtype = np.dtype(getattr(image, "dtype", np.float64))
    if len(shape) == 2:
        return "fluorescence", f"single channel {dtype.name} image"
    if len(shape) != 3:
        raise TilingError(f"expected a (Y, X) or (Y, X, C) image; got shape {tuple(shape)}")
    c = shape[2]
    if c not in (3, 4):
        return "fluorescence", f"{c}-channel {dtype.name} image (not RGB)"
    a = _subsample(image[..., :3]).astype(np.float32)
    if np.issubdtype(dtype, np.integer):
        full = float(np.iinfo(dtype).max)
    else:
        finite = a[np.isfinite(a)]
        full = 1.0 if finite.size and finite.max() <= 1.0 else 255.0
    lum = a.mean(axis=2)
    med = float(np.nanmedian(lum)) if lum.size else 0.0
    bright = float(np.nanpercentile(lum, 95)) if lum.size else 0.0
    kind = "RGBA" if c == 4 else "RGB"
    if np.issubdtype(dtype, np.integer) and dtype != np.uint8 and (a.max() <= 255):
        full = 255.0  # 8-bit data stored in a wider type
    rel = f"{med:.3g}" if full != 255 else f"{med:.0f}"
    if med > 0.4 * full and bright > 0.7 * full:
        return "brightfield", f"{kind} {dtype.name} with a bright background (median {rel})"
    return "fluorescence", f"{kind} {dtype.name} with a dark background (median {rel})"
