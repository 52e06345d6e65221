"""Defocus PSF of a widefield microscope and simulated defocus (DESIGN.md §3).

Model: an aberration-free objective of numerical aperture NA in a medium of index n.
Its pupil is a disc of radius NA/λ in spatial frequency; defocus by z adds the phase
``exp(i·2π·z·sqrt((n/λ)² − ρ²))``. The amplitude PSF is the inverse Fourier transform
of the pupil and the incoherent intensity PSF is its squared modulus. It is computed on
a grid finer than the pixels, integrated over each pixel and normalised to unit sum.

Simplifications, on purpose:

- The input image is taken as the in-focus intensity and convolved with the defocus PSF,
  so the optics (and pixel integration) already in the image are counted twice; at z = 0
  this softens the image slightly, about as much as the objective itself does.
- Brightfield images are treated as transmitted intensity and 8-bit values as roughly
  linear in the light (no gamma is undone); blank glass stays white because the PSF has
  unit sum and the borders are reflect-padded.
- The intensity PSF is the same at +z and −z for an aberration-free system, so defocus
  has no sign: ``simulate_defocus`` uses ``|z|``.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from napari_focusq.config import Optics
from napari_focusq.errors import OpticsError

__all__ = [
    "OpticsError",
    "defocus_psf",
    "simulate_defocus",
    "simulate_defocus_batch",
    "gaussian_sigma_px",
    "blur_radius_um",
    "depth_of_field_um",
]

#: simulate_defocus rounds |z| to this step so PSFs and OTFs can be cached; far below
#: the depth of field (~1 µm at NA 0.75), so the rounding is invisible in the images.
Z_STEP_UM = 0.05
#: Beyond this |z| the Gaussian-equivalent table is extended with the geometric law.
_SIGMA_TABLE_MAX_UM = 12.0
_SIGMA_TABLE_STEP_UM = 0.25
METHODS = ("optical", "gaussian")


def _tan_theta(optics_na: float, n: float) -> float:
    s = optics_na / n
    return s / math.sqrt(1.0 - s * s)


def blur_radius_um(z_um: float, optics: Optics | None = None) -> float:
    """Geometric radius of the defocus blur disc, ``|z| · tan(asin(NA/n))``, in µm."""
    optics = optics or Optics()
    return abs(float(z_um)) * _tan_theta(optics.na, optics.n)


def depth_of_field_um(optics: Optics | None = None, wavelength_um: float | None = None) -> float:
    """Wave-optical depth of field ``λ·n/NA²`` in µm.

    ``wavelength_um`` defaults to the middle one of ``optics.wavelengths_um``
    (green, 0.54 µm, for the brightfield defaults).
    """
    optics = optics or Optics()
    lam = _mid_wavelength(optics) if wavelength_um is None else float(wavelength_um)
    return lam * optics.n / optics.na**2


def _mid_wavelength(optics: Optics) -> float:
    w = optics.wavelengths_um
    return float(w[len(w) // 2])


# --------------------------------------------------------------------------- PSF
def _check_psf_args(z_um, pixel_size_um, wavelength_um, na, n, oversample, size):
    if not np.isfinite(z_um):
        raise OpticsError(f"defocus z must be a finite number of µm; got {z_um}")
    if not (pixel_size_um > 0 and np.isfinite(pixel_size_um)):
        raise OpticsError(f"pixel size must be a positive number of µm; got {pixel_size_um}")
    if not (wavelength_um > 0 and np.isfinite(wavelength_um)):
        raise OpticsError(f"wavelength must be a positive number of µm; got {wavelength_um}")
    if not 0 < na < n:
        raise OpticsError(f"NA must be in (0, n={n}); got {na}")
    if int(oversample) != oversample or oversample < 1:
        raise OpticsError(f"oversample must be a positive integer; got {oversample}")
    if size is not None and (int(size) != size or size < 1 or size % 2 == 0):
        raise OpticsError(f"PSF size must be a positive odd integer; got {size}")


def _auto_radius_px(z_um, pixel_size_um, wavelength_um, na, n) -> int:
    # Geometric disc plus room for the diffraction rings around it; what lies beyond
    # (the far Airy tail, a few % of the energy at z = 0) only adds a faint haze.
    r_um = 1.25 * abs(z_um) * _tan_theta(na, n) + max(3.0, 6 * 0.61 * wavelength_um / na)
    return int(math.ceil(r_um / pixel_size_um))


@functools.lru_cache(maxsize=4096)
def _psf_cached(z_um, pixel_size_um, wavelength_um, na, n, oversample, size) -> np.ndarray:
    import scipy.fft as sfft

    # The intensity PSF is band-limited to 2NA/λ: keep the fine grid at or below its
    # Nyquist spacing even when the pixels are coarse.
    s = max(int(oversample), int(math.ceil(pixel_size_um * 4 * na / wavelength_um)))
    d = pixel_size_um / s
    out_r = (size // 2) if size is not None else _auto_radius_px(z_um, pixel_size_um, wavelength_um, na, n)
    # The FFT field must hold the blur disc without wrapping; the same bound keeps the
    # defocus phase sampled finely enough at the pupil edge (< π per frequency step).
    r_geo = abs(z_um) * _tan_theta(na, n)
    field_um = max(2 * (2 * r_geo + 4.0), 2 * (out_r + 1) * pixel_size_um * 1.5, 16.0)
    m = int(math.ceil(field_um / pixel_size_um))
    m += (m % 2 == 0)  # odd number of pixels so one pixel sits on the optical axis
    m = max(m, 2 * out_r + 1)
    nfine = sfft.next_fast_len(m * s)
    m = nfine // s
    if m % 2 == 0:
        m -= 1
    nfine = m * s

    f = sfft.fftfreq(nfine, d)
    fx2 = f[None, :] ** 2 + f[:, None] ** 2
    kmax2 = (n / wavelength_um) ** 2
    inside = fx2 <= (na / wavelength_um) ** 2
    # Subtracting n/λ removes a constant phase: no effect on the intensity, better precision.
    pupil = np.zeros(fx2.shape, dtype=np.complex128)
    pupil[inside] = np.exp(2j * np.pi * z_um * (np.sqrt(kmax2 - fx2[inside]) - n / wavelength_um))
    # Put the PSF centre on the centre of the middle pixel's block of fine samples
    # (between two fine samples when the fine grid is even).
    off = ((nfine - 1) / 2 - nfine // 2) * d
    if off:
        ramp = np.exp(-2j * np.pi * f * off)
        pupil = pupil * ramp[None, :] * ramp[:, None]
    amp = sfft.fftshift(sfft.ifft2(pupil))
    inten = amp.real**2 + amp.imag**2
    pix = inten.reshape(m, s, m, s).sum(axis=(1, 3))
    c = m // 2
    psf = pix[c - out_r : c + out_r + 1, c - out_r : c + out_r + 1]
    psf = psf / psf.sum()
    psf.flags.writeable = False
    return psf


def _key(x: float) -> float:
    return round(float(x), 6)


def defocus_psf(
    z_um: float,
    *,
    pixel_size_um: float,
    wavelength_um: float,
    na: float,
    n: float = 1.0,
    oversample: int = 5,
    size: int | None = None,
) -> np.ndarray:
    """Pixel-integrated intensity PSF of a widefield objective defocused by ``z_um``.

    Parameters
    ----------
    z_um
        Defocus in µm (either sign; the intensity PSF is the same at ±z).
    pixel_size_um
        Image pixel size in µm.
    wavelength_um, na, n
        Wavelength (µm), numerical aperture and immersion refractive index.
    oversample
        The PSF is computed on a grid this many times finer than the pixels (more if
        needed to sample it at all) and summed over each pixel.
    size
        Odd edge length in pixels; by default large enough for the blur disc plus a
        few Airy radii.

    Returns
    -------
    numpy.ndarray
        2-D float64, odd size, unit sum, centred on the middle pixel.
    """
    _check_psf_args(z_um, pixel_size_um, wavelength_um, na, n, oversample, size)
    return _psf_cached(_key(z_um), _key(pixel_size_um), _key(wavelength_um), _key(na), _key(n),
                       int(oversample), None if size is None else int(size)).copy()


# ---------------------------------------------------------- Gaussian equivalent
@functools.lru_cache(maxsize=64)
def _sigma_table(pixel_size_um, wavelength_um, na, n, oversample):
    zs = np.arange(0.0, _SIGMA_TABLE_MAX_UM + 1e-9, _SIGMA_TABLE_STEP_UM)
    var = np.empty_like(zs)
    for i, z in enumerate(zs):
        psf = _psf_cached(_key(z), pixel_size_um, wavelength_um, na, n, oversample, None)
        r = psf.shape[0] // 2
        x = (np.arange(psf.shape[0]) - r) * pixel_size_um
        var[i] = float((psf.sum(axis=0) * x**2).sum())  # per-axis variance, µm²
    return zs, var


def gaussian_sigma_px(z_um: float, pixel_size_um: float, optics: Optics | None = None,
                      wavelength_um: float | None = None) -> float:
    """Sigma (pixels) of the Gaussian blur equivalent to a defocus of ``z_um``.

    The founding paper blurred in-focus tiles with Gaussians of growing sigma. Here
    sigma is tied to µm: the Gaussian's per-axis second moment equals that of the
    optical PSF (as used by :func:`simulate_defocus`, i.e. truncated and pixel
    integrated) at the same ``|z|``, read from a table every 0.25 µm up to 12 µm and
    extended beyond with the geometric disc (variance grows by ``(z·tanθ)²/4``).
    ``wavelength_um`` defaults to the middle of ``optics.wavelengths_um``.
    """
    optics = optics or Optics()
    lam = _mid_wavelength(optics) if wavelength_um is None else float(wavelength_um)
    _check_psf_args(z_um, pixel_size_um, lam, optics.na, optics.n, optics.oversample, None)
    zs, var = _sigma_table(_key(pixel_size_um), _key(lam), _key(optics.na), _key(optics.n),
                           int(optics.oversample))
    z = abs(float(z_um))
    if z <= zs[-1]:
        v = float(np.interp(z, zs, var))
    else:
        t2 = _tan_theta(optics.na, optics.n) ** 2
        v = float(var[-1] + t2 / 4 * (z * z - zs[-1] ** 2))
    return math.sqrt(v) / pixel_size_um


# ----------------------------------------------------------------- simulation
@functools.lru_cache(maxsize=64)
def _otf_cached(psf_key: tuple, shape: tuple[int, int], real: bool) -> np.ndarray:
    import scipy.fft as sfft

    psf = _psf_cached(*psf_key)
    r = psf.shape[0] // 2
    buf = np.zeros(shape, dtype=np.float32 if real else np.float64)
    buf[: 2 * r + 1, : 2 * r + 1] = psf
    buf = np.roll(buf, (-r, -r), axis=(0, 1))  # PSF centre at (0, 0): no shift in the output
    otf = sfft.rfft2(buf)
    otf.flags.writeable = False
    return otf


def _wavelengths_for(modality: str, optics: Optics | None, nchan: int) -> tuple[float, ...]:
    if modality not in ("brightfield", "fluorescence"):
        raise OpticsError(f"modality must be 'brightfield' or 'fluorescence'; got {modality!r}")
    optics = optics or Optics.for_modality(modality)
    w = tuple(optics.wavelengths_um)
    if nchan == 0:  # 2-D image: one wavelength (green for the RGB defaults)
        return (w[len(w) // 2],)
    if len(w) == 1:
        return w * nchan
    if len(w) == nchan:
        return w
    raise OpticsError(
        f"image has {nchan} channels but the optics give {len(w)} wavelengths {w}; "
        "give one wavelength, or one per channel")


def _validate_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise OpticsError(f"image must be (Y, X) or (Y, X, C); got shape {img.shape}")
    if img.dtype.kind not in "uif":
        raise OpticsError(f"image must have an integer or float dtype; got {img.dtype}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise OpticsError(f"image is empty: shape {img.shape}")
    return img


def _restore_dtype(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        out = np.rint(out)
        np.clip(out, info.min, info.max, out=out)
        return out.astype(dtype)
    return out.astype(dtype, copy=False)


def simulate_defocus(
    image,
    z_um: float,
    *,
    pixel_size_um: float,
    modality: str = "brightfield",
    optics: Optics | None = None,
    method: str = "optical",
    rng=None,
    layers=None,
) -> np.ndarray:
    """Blur an in-focus image as a widefield microscope defocused by ``z_um`` would.

    Parameters
    ----------
    image
        (Y, X) or (Y, X, C) array, any integer or float dtype. Brightfield RGB gets one
        wavelength per channel (0.61/0.54/0.47 µm by default); fluorescence one
        emission wavelength (0.52 µm) for every channel; a 4th brightfield channel
        (alpha) is passed through.
    z_um
        Defocus in µm; its sign does not matter.
    pixel_size_um
        The image's pixel size in µm.
    modality
        ``"brightfield"`` or ``"fluorescence"``; picks the default optics.
    optics
        Overrides the default :class:`~napari_focusq.config.Optics` of the modality.
    method
        ``"optical"`` (the PSF above) or ``"gaussian"`` (the founding paper's blur,
        sigma from :func:`gaussian_sigma_px`).
    rng
        Unused (the blur is deterministic); accepted so callers can pass one through.
    layers
        Thick-section mode (:mod:`napari_focusq.optics.layered`): further
        :class:`~napari_focusq.optics.layered.Layer` s (images of ``image``'s shape, depth in µm,
        weight on their optical density or emission) beside ``image``, which is the bulk
        at depth 0 with weight 1. ``z_um`` is then the focal plane's signed distance from
        the specimen's best plane (positive: towards greater depths), and every layer is
        blurred by its own distance to the focal plane.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``image`` (integers rounded and clipped).
    """
    del rng
    if layers:
        from napari_focusq.optics.layered import thick_section

        return thick_section(image, z_um, layers, pixel_size_um=pixel_size_um, modality=modality, optics=optics,
                             method=method)
    if method not in METHODS:
        raise OpticsError(f"method must be one of {METHODS}; got {method!r}")
    img = _validate_image(image)
    if not np.isfinite(z_um):
        raise OpticsError(f"defocus z must be a finite number of µm; got {z_um}")
    if not (pixel_size_um > 0 and np.isfinite(pixel_size_um)):
        raise OpticsError(f"pixel size must be a positive number of µm; got {pixel_size_um}")
    if optics is None:
        if modality not in ("brightfield", "fluorescence"):
            raise OpticsError(f"modality must be 'brightfield' or 'fluorescence'; got {modality!r}")
        optics = Optics.for_modality(modality)
    dtype = img.dtype
    work = img[..., None] if img.ndim == 2 else img
    nchan = work.shape[-1]
    passthrough = None
    if modality == "brightfield" and nchan == 4 and len(optics.wavelengths_um) == 3:
        work, passthrough = work[..., :3], work[..., 3:]
    lams = _wavelengths_for(modality, optics, 0 if img.ndim == 2 else work.shape[-1])
    z = round(abs(float(z_um)) / Z_STEP_UM) * Z_STEP_UM

    if method == "gaussian":
        out = _gaussian_blur(work, z, pixel_size_um, optics, lams)
    else:
        out = _optical_blur(work, z, pixel_size_um, optics, lams)
    if passthrough is not None:
        out = np.concatenate([out, passthrough.astype(out.dtype)], axis=-1)
    out = out[..., 0] if img.ndim == 2 else out
    return _restore_dtype(out, dtype)


def _optical_blur(work, z, pixel_size_um, optics, lams) -> np.ndarray:
    import scipy.fft as sfft

    h, w, c = work.shape
    # float32 is plenty for 8/16-bit data and twice as fast; float64 input keeps float64.
    real = work.dtype != np.float64
    ftype = np.float32 if real else np.float64
    keys = [(_key(z), _key(pixel_size_um), _key(lam), _key(optics.na), _key(optics.n),
             int(optics.oversample), None) for lam in lams]
    r = max(_psf_cached(*k).shape[0] // 2 for k in keys)
    ph, pw = sfft.next_fast_len(h + 2 * r, real=True), sfft.next_fast_len(w + 2 * r, real=True)
    # Channels first so each 2-D FFT runs on contiguous memory.
    chw = np.ascontiguousarray(np.moveaxis(work, -1, 0), dtype=ftype)
    # Reflect padding so edges do not darken; the extra rows/cols beyond 2r only round the
    # FFT up to a fast size. Circular wrap then touches only the padding we crop away.
    padded = np.pad(chw, ((0, 0), (r, ph - h - r), (r, pw - w - r)),
                    mode="reflect" if min(h, w) > 1 else "edge")
    spec = sfft.rfft2(padded, overwrite_x=True)
    if len(set(keys)) == 1:
        spec *= _otf_cached(keys[0], (ph, pw), real)
    else:
        for i, k in enumerate(keys):
            spec[i] *= _otf_cached(k, (ph, pw), real)
    out = sfft.irfft2(spec, s=(ph, pw), overwrite_x=True)
    return np.moveaxis(out[:, r : r + h, r : r + w], 0, -1)


def _gaussian_blur(work, z, pixel_size_um, optics, lams) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = np.empty(work.shape, dtype=np.float64 if work.dtype == np.float64 else np.float32)
    for i, lam in enumerate(lams):
        sigma = gaussian_sigma_px(z, pixel_size_um, optics, wavelength_um=lam)
        out[..., i] = gaussian_filter(work[..., i].astype(out.dtype), sigma, mode="reflect")
    return out


def simulate_defocus_batch(
    tiles,
    z_um: Sequence[float] | np.ndarray,
    *,
    pixel_size_um: float,
    modality: str = "brightfield",
    optics: Optics | None = None,
    method: str = "optical",
) -> np.ndarray:
    """:func:`simulate_defocus` on a batch of tiles ``(N, H, W[, C])``, one ``z`` per tile."""
    tiles = np.asarray(tiles)
    z = np.broadcast_to(np.asarray(z_um, dtype=float), (tiles.shape[0],))
    if tiles.ndim not in (3, 4):
        raise OpticsError(f"tiles must be (N, H, W) or (N, H, W, C); got shape {tiles.shape}")
    out = np.empty_like(tiles)
    for i in range(tiles.shape[0]):
        out[i] = simulate_defocus(tiles[i], z[i], pixel_size_um=pixel_size_um, modality=modality,
                                  optics=optics, method=method)
    return out
