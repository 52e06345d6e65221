"""Resampling to the working resolution: :func:`resample_to_working` for an image,
:func:`tile_to_working` for one level-0 region turned into a model-sized tile.
"""
from __future__ import annotations

import warnings

import numpy as np

from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM

#: Pixel sizes within this relative distance of the working one are used as they are.
from napari_focusq.scoring.grid import ResolutionWarning, TilingError

#: Pixel sizes within this relative distance of the working one are used as they are.
RESAMPLE_TOLERANCE = 0.05


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
    copy: bool = True,
) -> tuple[np.ndarray, float]:
    """Turn one tile's level-0 region into a model tile of exactly tile_px x tile_px.

    ``copy=False`` may return a view of ``region`` (a caller that copies it anyway).

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
    return (np.ascontiguousarray(out) if copy else out), float(valid)
