"""De-blurring preview: Richardson-Lucy deconvolution with the defocus PSF a tile's prediction implies.

This is a preview of what a region might look like in focus, not a restoration for
measurement: the PSF is the aberration-free widefield model of :mod:`napari_focusq.optics.psf`
at the predicted |z|, and defocus removes information that no deconvolution recovers.
"""
from __future__ import annotations

import numpy as np

from napari_focusq.config import Optics
from napari_focusq.errors import DeblurError


def deblur(image, defocus_um: float, *, pixel_size_um: float, modality: str = "fluorescence",
           optics: Optics | None = None, iterations: int = 30, prefilter_sigma_px: float = 0.0,
           tv_weight: float = 0.0, filter_epsilon: float | None = None) -> np.ndarray:
    """Richardson-Lucy deconvolution of ``image`` with the defocus PSF at ``defocus_um``.

    Parameters
    ----------
    image
        (Y, X) or (Y, X, C), any integer or float dtype; never modified.
    defocus_um
        The region's (predicted) |z| in µm.
    pixel_size_um
        The image's pixel size; the PSF is computed at it.
    modality, optics
        Pick the wavelengths and NA (defaults of the modality: fluorescence emission
        0.52 µm, brightfield R/G/B 0.61/0.54/0.47 µm; NA 0.75).
    iterations
        Richardson-Lucy iterations (more: sharper and noisier).
    prefilter_sigma_px
        Regularisation by a Gaussian pre-blur of the input (pixels), which keeps noise
        from being amplified; 0 = off.
    tv_weight
        Regularisation by total-variation denoising of the result (Chambolle weight,
        on the image scaled to [0, 1]); 0 = off.
    filter_epsilon
        Passed to skimage's richardson_lucy: values below it are treated as zero in
        the ratio, which damps the division by tiny numbers.

    Returns
    -------
    numpy.ndarray
        A new array of the input's shape and dtype (integers rounded and clipped).
    """
    from napari_focusq.optics.psf import OpticsError, _wavelengths_for, defocus_psf

    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] < 2 or img.shape[1] < 2:
        raise DeblurError(f"image must be (Y, X) or (Y, X, C) and at least 2x2; got shape {img.shape}")
    if img.dtype.kind not in "uif":
        raise DeblurError(f"image must have an integer or float dtype; got {img.dtype}")
    if not np.isfinite(defocus_um):
        raise DeblurError(f"defocus must be a finite number of µm; got {defocus_um}")
    if not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise DeblurError(f"pixel size must be a positive number of µm; got {pixel_size_um}")
    if int(iterations) != iterations or iterations < 1:
        raise DeblurError(f"iterations must be a positive integer; got {iterations}")
    if prefilter_sigma_px < 0 or tv_weight < 0:
        raise DeblurError("prefilter_sigma_px and tv_weight must be >= 0")
    optics = optics or Optics.for_modality(modality)
    work = img[..., None] if img.ndim == 2 else img
    try:
        lams = _wavelengths_for(modality, optics, 0 if img.ndim == 2 else min(work.shape[-1], 3 if modality == "brightfield" else work.shape[-1]))
        psfs = [defocus_psf(abs(float(defocus_um)), pixel_size_um=pixel_size_um, wavelength_um=lam,
                            na=optics.na, n=optics.n, oversample=optics.oversample) for lam in lams]
    except OpticsError as exc:
        raise DeblurError(str(exc)) from None
    out = np.empty(work.shape, np.float64)
    for c in range(work.shape[-1]):
        psf = psfs[min(c, len(psfs) - 1)] if c < len(psfs) else None
        ch = work[..., c].astype(np.float64)
        out[..., c] = ch if psf is None else _rl_channel(ch, psf, int(iterations), prefilter_sigma_px,
                                                         tv_weight, filter_epsilon)
    out = out[..., 0] if img.ndim == 2 else out
    if img.dtype.kind in "ui":
        info = np.iinfo(img.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(img.dtype)
    return out.astype(img.dtype)


def _rl_channel(ch: np.ndarray, psf: np.ndarray, iterations: int, prefilter: float, tv: float, eps) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    from skimage.restoration import denoise_tv_chambolle, richardson_lucy

    finite = np.isfinite(ch)
    fill = float(np.median(ch[finite])) if finite.any() else 0.0
    ch = np.where(finite, ch, fill)
    lo, hi = float(ch.min()), float(ch.max())
    if not hi > lo:
        return ch.copy()
    # RL wants non-negative data; on [0, 1] with a small floor so ratios stay defined.
    x = (ch - lo) / (hi - lo) + 1e-3
    if prefilter > 0:
        x = gaussian_filter(x, prefilter, mode="reflect")
    # Reflect padding by the PSF radius: skimage convolves with zeros outside, which
    # would darken the borders and ring inwards.
    r = psf.shape[0] // 2
    pad = min(r, x.shape[0] - 1, x.shape[1] - 1)
    xp = np.pad(x, pad, mode="reflect")
    y = richardson_lucy(xp, psf, num_iter=iterations, clip=False, filter_epsilon=eps)
    y = y[pad:pad + x.shape[0], pad:pad + x.shape[1]]
    if tv > 0:
        y = denoise_tv_chambolle(y, weight=tv)
    return (y - 1e-3) * (hi - lo) + lo


def deblur_region(image, fmap, y0: int, x0: int, y1: int, x1: int, **options) -> np.ndarray:
    """De-blur a region of a scored image with the median predicted defocus of the tiles it overlaps.

    Parameters
    ----------
    image
        The scored image (Y, X[, C]) at level 0 (an array; only the region is read).
    fmap
        Its FocusMap (gives the defocus per tile and the pixel size).
    y0, x0, y1, x1
        The region in level-0 pixels.
    options
        Passed to :func:`deblur` (iterations, prefilter_sigma_px, tv_weight, optics...).
    """
    H, W = fmap.image_shape
    y0, x0, y1, x1 = max(0, int(y0)), max(0, int(x0)), min(H, int(y1)), min(W, int(x1))
    if y1 - y0 < 2 or x1 - x0 < 2:
        raise DeblurError(f"region ({y0}, {x0})-({y1}, {x1}) is empty or outside the {H}x{W} image")
    a = fmap.tile_at(y0, x0)
    b = fmap.tile_at(y1 - 1, x1 - 1)
    d = fmap.defocus_um[a[0]:b[0] + 1, a[1]:b[1] + 1]
    d = d[np.isfinite(d)]
    if not d.size:
        raise DeblurError("the region holds no scored tile (no tissue): its defocus is unknown")
    options.setdefault("modality", fmap.modality)
    return deblur(np.asarray(image[y0:y1, x0:x1]), float(np.median(d)), pixel_size_um=fmap.pixel_size_um,
                  **options)


__all__ = ["deblur", "deblur_region", "DeblurError"]
