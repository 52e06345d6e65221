"""Physical defocus between two registered captures of one field (``focusq pair``).

A defocused capture B of a field is the in-focus capture A seen through the defocus
transfer function: ``B(f) = H(f) · A(f)`` with ``H = OTF(z) / OTF(0)`` when both are
captures through the same objective (``reference="capture"``), or ``H = OTF(z)`` when A
is an image taken as the in-focus truth and B was made from it, as ``simulate_defocus``
does (``reference="image"``). ``H`` is real for an aberration-free objective (the PSF is
symmetric) and changes sign at the zeros of the defocus OTF, which a blur measure cannot
see but a cross-spectrum can.

The measured ``H`` is the cross-spectrum over the in-focus power, ring by ring in
spatial frequency (cycles/µm); the model is the project's own pixel-integrated PSF
(``optics.defocus_psf``) at defocus z (and NA, when not given), with a free gain for
exposure or bleaching differences between the captures. Weighted least squares, the
weight of a ring being A's power in it, so rings where the in-focus capture has no
detail (noise only) count for little.

Registration is checked, not assumed: the shift is measured from the squared
cross-spectrum (its phase is twice the shift's ramp, whatever the sign of H, so defocus
sign reversals do not split the peak) and refused beyond ``max_shift_px``; a sub-pixel
shift within it is removed before the fit. Captures of different fields, or rotated or
scaled ones, have no correlation peak and no coherence between their spectra: refused too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from napari_focusq.config import Optics
from napari_focusq.errors import PairError

__all__ = ["PairError", "PairFit", "fit_pair", "otf_profile", "pair_channel", "registration", "plot_pair_fit"]

#: Radial frequency rings of the fit (between the lowest ring, skipped, and the top).
N_RINGS = 64
#: Correlation peak over the correlation surface's spread below which no shift is trusted.
MIN_PEAK_RATIO = 8.0
#: Power-weighted ring coherence below which the two captures are not one field.
MIN_COHERENCE = 0.2
#: NA values tried when the NA is unknown (then refined), as a fraction of n.
_NA_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class PairFit:
    """The fitted defocus between an in-focus and a defocused capture of one field."""

    z_um: float
    na: float
    n: float
    wavelength_um: float
    gain: float
    residual: float  # weighted RMS of (measured - model) H
    r2: float  # weighted R² of the model H against the measured H (NaN when H is flat)
    shift_px: tuple[float, float]
    peak_ratio: float
    coherence: float
    reference: str
    na_fitted: bool
    freqs: np.ndarray = field(repr=False)  # ring centres, cycles/µm
    measured: np.ndarray = field(repr=False)  # H per ring
    model: np.ndarray = field(repr=False)  # gain * H_model per ring
    weights: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"z_um": round(self.z_um, 4), "na": round(self.na, 4), "n": self.n,
                "wavelength_um": self.wavelength_um, "gain": round(self.gain, 4),
                "residual": round(self.residual, 5), "r2": round(self.r2, 5),
                "shift_px": [round(s, 3) for s in self.shift_px], "peak_ratio": round(self.peak_ratio, 2),
                "coherence": round(self.coherence, 4), "reference": self.reference,
                "na_fitted": self.na_fitted}


def pair_channel(image, modality: str, optics: Optics) -> tuple[np.ndarray, float]:
    """The float channel a pair is fitted on and its wavelength: green of RGB brightfield
    (as the model reads it, 0.54 µm by default), the sum of fluorescence channels."""
    a = np.asarray(image)
    w = tuple(optics.wavelengths_um)
    if a.ndim == 3 and modality == "brightfield" and a.shape[-1] in (3, 4):
        return a[..., 1].astype(np.float64), float(w[len(w) // 2])
    if a.ndim == 3:
        a = a.sum(-1)
    return a.astype(np.float64), float(w[len(w) // 2])


def _window(shape) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def registration(a: np.ndarray, b: np.ndarray) -> tuple[tuple[float, float], float]:
    """(dy, dx) shift of b against a in pixels, and the peak's height over the surface's spread.

    The correlation is that of the squared, magnitude-normalised cross-spectrum: a real
    transfer function (defocus, any sign) drops out of its phase, which is twice the
    shift's ramp, so the peak sits at twice the shift.
    """
    import scipy.fft as sfft

    win = _window(a.shape)
    fa = sfft.rfft2((a - a.mean()) * win)
    fb = sfft.rfft2((b - b.mean()) * win)
    c = fb * np.conj(fa)
    mag = np.abs(c)
    # sqrt(|C|) weighting: whiter than |C| (a sharp peak), less noisy than phase only.
    keep = mag > 1e-12 * mag.max()
    z = np.zeros_like(c)
    z[keep] = c[keep] ** 2 / mag[keep] ** 1.5
    surf = sfft.irfft2(z, s=a.shape)
    iy, ix = np.unravel_index(int(np.argmax(surf)), surf.shape)
    peak = surf[iy, ix]
    ny, nx = surf.shape
    mask = np.ones(surf.shape, bool)
    for dy in range(-2, 3):
        mask[(iy + dy) % ny, [(ix + dx) % nx for dx in range(-2, 3)]] = False
    rest = surf[mask]
    ratio = float((peak - np.median(rest)) / max(rest.std(), 1e-30))

    def sub(axis_vals, i, n):  # parabolic sub-pixel peak
        m, p = axis_vals[(i - 1) % n], axis_vals[(i + 1) % n]
        d = m - 2 * peak + p
        return i + (0.5 * (m - p) / d if d < 0 else 0.0)

    py = sub(surf[:, ix], iy, ny)
    px = sub(surf[iy, :], ix, nx)
    # The peak is at 2 * shift (mod n): unwrap to the nearest, then halve.
    py = (py + ny / 2) % ny - ny / 2
    px = (px + nx / 2) % nx - nx / 2
    return (py / 2, px / 2), ratio


def _rings(shape, pixel_size_um, f_top):
    """Ring index of every rfft2 bin (-1 outside the fit band) and the ring centres (cycles/µm)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    rho = np.sqrt(fy**2 + fx**2) / pixel_size_um
    f_lo = 3.0 / (min(shape) * pixel_size_um)  # below: the window's own leakage
    edges = np.linspace(f_lo, f_top, N_RINGS + 1)
    idx = np.digitize(rho, edges) - 1
    idx[(rho < f_lo) | (rho >= f_top)] = -1
    return idx, 0.5 * (edges[1:] + edges[:-1])


def _ring_sum(values, idx):
    ok = idx >= 0
    return np.bincount(idx[ok], weights=values[ok], minlength=N_RINGS)[:N_RINGS]


@dataclass(frozen=True)
class _Measured:
    freqs: np.ndarray
    h: np.ndarray
    w: np.ndarray
    coherence: float


def _measure(a, b, pixel_size_um, shift, f_top) -> _Measured:
    import scipy.fft as sfft

    win = _window(a.shape)
    fa = sfft.rfft2((a - a.mean()) * win)
    fb = sfft.rfft2((b - b.mean()) * win)
    # Undo the measured sub-pixel shift of b before comparing.
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.rfftfreq(a.shape[1])[None, :]
    fb = fb * np.exp(2j * np.pi * (fy * shift[0] + fx * shift[1]))
    idx, freqs = _rings(a.shape, pixel_size_um, f_top)
    pa = _ring_sum(np.abs(fa) ** 2, idx)
    pb = _ring_sum(np.abs(fb) ** 2, idx)
    cross = fb * np.conj(fa)
    cr, ci = _ring_sum(cross.real, idx), _ring_sum(cross.imag, idx)
    good = pa > 0
    h = np.where(good, cr / np.where(good, pa, 1), 0.0)
    coh = np.where(good & (pb > 0), (cr**2 + ci**2) / np.maximum(pa * pb, 1e-300), 0.0)
    w = np.where(good, pa, 0.0)
    coherence = float((coh * w).sum() / max(w.sum(), 1e-300))
    return _Measured(freqs, h, w / max(w.sum(), 1e-300), coherence)


def otf_profile(z, pixel_size_um, wavelength_um, na, n, freqs, oversample=3) -> np.ndarray:
    """Radial profile of the pixel-integrated OTF at the ring centres (cycles/µm)."""
    import scipy.fft as sfft

    from napari_focusq.optics.psf import defocus_psf

    psf = defocus_psf(z, pixel_size_um=pixel_size_um, wavelength_um=wavelength_um, na=na, n=n,
                      oversample=oversample)
    r = psf.shape[0] // 2
    m = sfft.next_fast_len(max(512, 4 * psf.shape[0]))
    buf = np.zeros((m, m))
    buf[: 2 * r + 1, : 2 * r + 1] = psf
    buf = np.roll(buf, (-r, -r), axis=(0, 1))
    otf = sfft.rfft2(buf).real  # symmetric PSF: real OTF
    fy = np.fft.fftfreq(m)[:, None]
    fx = np.fft.rfftfreq(m)[None, :]
    rho = (np.sqrt(fy**2 + fx**2) / pixel_size_um).ravel()
    # Radial mean on a fine grid of radii, then read at the ring centres.
    step = 1.0 / (m * pixel_size_um)
    k = np.rint(rho / step).astype(np.int64)
    sums = np.bincount(k, weights=otf.ravel())
    cnt = np.bincount(k)
    prof = sums / np.maximum(cnt, 1)
    radii = np.arange(len(prof)) * step
    ok = cnt > 0
    return np.interp(freqs, radii[ok], prof[ok])


def _model_h(z, na, n, lam, px, freqs, reference):
    h = otf_profile(z, px, lam, na, n, freqs)
    if reference == "capture":
        h0 = otf_profile(0.0, px, lam, na, n, freqs)
        h = h / np.where(np.abs(h0) > 1e-3, h0, np.nan)
    return h


def _cost(m: _Measured, hm: np.ndarray) -> tuple[float, float]:
    """(weighted squared residual, gain) with the best gain in [0.1, 10] for this model."""
    ok = np.isfinite(hm)
    w, y, x = m.w[ok], m.h[ok], hm[ok]
    den = float((w * x * x).sum())
    g = float((w * x * y).sum() / den) if den > 0 else 1.0
    g = min(10.0, max(0.1, g))
    return float((w * (y - g * x) ** 2).sum() / max(w.sum(), 1e-300)), g


def fit_pair(in_focus, defocused, *, pixel_size_um: float, modality: str = "brightfield",
             optics: Optics | None = None, na: float | None = None, reference: str = "capture",
             max_shift_px: float = 1.0, z_max_um: float = 12.0, names=("IN", "OUT")) -> PairFit:
    """Fit the physical defocus between an in-focus and a defocused capture of one field.

    Parameters
    ----------
    in_focus, defocused
        Registered captures of the same field, same shape: (Y, X) or (Y, X, C).
    pixel_size_um
        Their pixel size.
    modality, optics
        Which channel and wavelength (green 0.54 µm of RGB brightfield, the emission
        wavelength in fluorescence), immersion index n and, unless ``na`` is given, NA.
    na
        The objective's NA; ``None`` fits it too (0.2 n .. 0.9 n, then refined). With
        both z and NA free the fit is less certain: blur radius grows with z·tan(asin(NA/n)),
        and only the diffraction rings tell the two apart.
    reference
        ``"capture"``: both are captures through the objective (H = OTF(z)/OTF(0)).
        ``"image"``: the in-focus image is the truth and the other was blurred from it,
        as ``simulate_defocus`` does (H = OTF(z)).
    max_shift_px
        Larger shifts between the captures are refused (register them first); smaller
        ones are measured and removed.
    names
        How the two inputs are named in error messages (file names in the CLI).
    """
    from scipy.optimize import minimize, minimize_scalar

    if reference not in ("capture", "image"):
        raise PairError(f"reference must be 'capture' or 'image'; got {reference!r}")
    if not (pixel_size_um and math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise PairError(f"pixel size must be a positive number of µm; got {pixel_size_um!r}")
    fit_na = na is None
    optics = optics or Optics.for_modality(modality)
    na = float(optics.na if na is None else na)
    n = float(optics.n)
    if not fit_na and not 0 < na < n:
        raise PairError(f"NA must be in (0, n={n}); got {na}")
    A, B = np.asarray(in_focus), np.asarray(defocused)
    if A.shape != B.shape:
        raise PairError(f"{names[0]} is {A.shape} and {names[1]} is {B.shape}: the captures of one "
                        "field must have the same size (crop or register them first)")
    a, lam = pair_channel(A, modality, optics)
    b, _ = pair_channel(B, modality, optics)
    if min(a.shape) < 64:
        raise PairError(f"{names[0]}: {a.shape[1]}x{a.shape[0]} px is too small for a transfer function "
                        "(at least 64x64 px)")
    for arr, nm in ((a, names[0]), (b, names[1])):
        if not np.isfinite(arr).all():
            raise PairError(f"{nm}: has NaN or infinite pixels")
        if float(arr.std()) == 0:
            raise PairError(f"{nm}: the image is flat (no detail to compare)")

    shift, ratio = registration(a, b)
    if ratio < MIN_PEAK_RATIO:
        raise PairError(f"{names[0]} and {names[1]} are not registered captures of one field: no "
                        f"correlation peak (peak {ratio:.1f}x the background spread, need "
                        f"{MIN_PEAK_RATIO:g}); register them (same field, same scale and rotation)")
    if math.hypot(*shift) > max_shift_px:
        raise PairError(f"{names[0]} and {names[1]} are misregistered: {names[1]} is shifted by "
                        f"({shift[0]:+.2f}, {shift[1]:+.2f}) px (y, x), more than {max_shift_px:g} px; "
                        "register them first")
    # Fit band: up to Nyquist and, for the capture reference, short of the in-focus
    # cutoff 2NA/λ where OTF(0) -> 0 (NA unknown: the largest NA tried).
    na_top = 0.95 * n if fit_na else na
    f_top = 0.5 / pixel_size_um
    if reference == "capture":
        f_top = min(f_top, 0.8 * 2 * na_top / lam)
    m = _measure(a, b, pixel_size_um, shift, f_top)
    if m.coherence < MIN_COHERENCE:
        raise PairError(f"{names[0]} and {names[1]} do not show one field: the coherence of their "
                        f"cross-spectrum is {m.coherence:.2f} (need {MIN_COHERENCE:g}); register them "
                        "(same field, same scale and rotation)")

    px = float(pixel_size_um)

    def cost(z, na_):
        return _cost(m, _model_h(abs(z), na_, n, lam, px, m.freqs, reference))[0]

    zs = np.arange(0.0, z_max_um + 1e-9, 0.25)
    nas = [f * n for f in _NA_GRID if f * n < n] if fit_na else [na]
    grid = np.array([[cost(z, a_) for z in zs] for a_ in nas])
    ia, iz = np.unravel_index(int(np.argmin(grid)), grid.shape)
    z0, na0 = float(zs[iz]), float(nas[ia])
    if fit_na:
        res = minimize(lambda p: cost(p[0], float(np.clip(p[1], 0.1 * n, 0.97 * n))), [z0, na0],
                       method="Nelder-Mead", options={"xatol": 0.005, "fatol": 1e-9, "maxiter": 200})
        z_fit, na_fit = abs(float(res.x[0])), float(np.clip(res.x[1], 0.1 * n, 0.97 * n))
    else:
        lo, hi = max(0.0, z0 - 0.25), min(z_max_um, z0 + 0.25)
        res = minimize_scalar(lambda z: cost(z, na0), bounds=(lo, hi), method="bounded",
                              options={"xatol": 0.005})
        z_fit, na_fit = float(res.x), na0
    hm = _model_h(z_fit, na_fit, n, lam, px, m.freqs, reference)
    sq, g = _cost(m, hm)
    ok = np.isfinite(hm)
    w = m.w[ok]
    var = float((w * (m.h[ok] - (w * m.h[ok]).sum() / w.sum()) ** 2).sum() / w.sum())
    return PairFit(z_um=z_fit, na=na_fit, n=n, wavelength_um=lam, gain=g, residual=math.sqrt(sq),
                   # A flat H (no defocus: H = 1 everywhere) has no variance to explain.
                   r2=1 - sq / var if var > 1e-4 else float("nan"), shift_px=(float(shift[0]), float(shift[1])),
                   peak_ratio=ratio, coherence=m.coherence, reference=reference, na_fitted=fit_na,
                   freqs=m.freqs, measured=m.h, model=g * hm, weights=m.w)


def plot_pair_fit(fit: PairFit, path, title: str = "") -> None:
    """The measured transfer function against the fitted one, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from napari_focusq._atomic import atomic_path

    fig = Figure(figsize=(7, 4.2), dpi=120)
    ax = fig.add_subplot(111)
    size = 8 + 120 * fit.weights / max(fit.weights.max(), 1e-300)
    ax.scatter(fit.freqs, fit.measured, s=size, c="tab:blue", alpha=0.7,
               label="measured (dot size: in-focus power)")
    ax.plot(fit.freqs, fit.model, c="tab:red",
            label=f"PSF fit: z = {fit.z_um:.2f} µm, NA {fit.na:.2f}{' (fitted)' if fit.na_fitted else ''}")
    ax.axhline(0, c="0.6", lw=0.8)
    ax.set_xlabel("spatial frequency (cycles/µm)")
    ax.set_ylabel("transfer function H(f)")
    ax.set_title(title or f"defocus {fit.z_um:.2f} µm · residual {fit.residual:.3f} · R² {fit.r2:.3f}",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
