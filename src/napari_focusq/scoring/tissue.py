"""Which tiles are worth scoring: :func:`tissue_mask` / :func:`tissue_fraction` (brightfield tissue or
fluorescence signal), the brightfield white level, and :func:`detect_modality`.
"""
from __future__ import annotations

import math

import numpy as np

from napari_focusq.config import MODALITIES

#: Pixel sizes within this relative distance of the working one are used as they are.
from napari_focusq.scoring.grid import TilingError


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
