"""Physics of the defocus PSF and of simulate_defocus."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.special import j0, j1

from napari_focusq.config import Optics
from napari_focusq.optics.psf import (
    OpticsError,
    blur_radius_um,
    defocus_psf,
    depth_of_field_um,
    gaussian_sigma_px,
    simulate_defocus,
    simulate_defocus_batch,
)
from napari_focusq.scoring.focus import variance_of_laplacian

DATA = Path(__file__).parents[2] / "data"
BF = dict(wavelength_um=0.54, na=0.75, n=1.0)


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    """A 256x256 RGB crop of a real in-focus H&E image."""
    img = np.asarray(Image.open(DATA / "brightfield" / "histoqc_template1.png").convert("RGB"))
    c = img.shape[0] // 2
    return np.ascontiguousarray(img[c - 128 : c + 128, c - 128 : c + 128])


def _radial_r2(psf: np.ndarray, px: float) -> float:
    r = psf.shape[0] // 2
    y, x = (np.mgrid[-r : r + 1, -r : r + 1]) * px
    return float((psf * (x**2 + y**2)).sum())


@pytest.mark.parametrize("z", [0.0, 0.7, 2.0, 5.0])
@pytest.mark.parametrize("oversample", [4, 5])
def test_psf_unit_sum_odd_centred(z, oversample):
    psf = defocus_psf(z, pixel_size_um=0.5, oversample=oversample, **BF)
    assert psf.dtype == np.float64 and psf.ndim == 2
    assert psf.shape[0] == psf.shape[1] and psf.shape[0] % 2 == 1
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert psf.min() >= 0
    # Centred on the middle pixel, also when the fine grid is even (oversample 4).
    np.testing.assert_allclose(psf, psf[::-1, ::-1], atol=1e-12)
    np.testing.assert_allclose(psf, psf.T, atol=1e-12)


@pytest.mark.parametrize("z", [0.5, 1.5, 4.0])
def test_psf_same_at_plus_and_minus_z(z):
    plus = defocus_psf(z, pixel_size_um=0.5, **BF)
    minus = defocus_psf(-z, pixel_size_um=0.5, **BF)
    np.testing.assert_allclose(plus, minus, atol=1e-12)


def test_psf_radius_follows_geometric_optics():
    optics = Optics(na=0.75)
    prev = 0.0
    for z in (2.0, 3.0, 4.0, 6.0, 8.0, 10.0):
        psf = defocus_psf(z, pixel_size_um=0.5, **BF)
        # A uniform disc of radius R has <r²> = R²/2; the pupil weights rays uniformly in
        # sin(θ), not tan(θ), so the ratio settles near 0.86 for NA 0.75 when z is large.
        radius = np.sqrt(2 * _radial_r2(psf, 0.5))
        ratio = radius / blur_radius_um(z, optics)
        assert 0.8 < ratio < 1.2, (z, ratio)
        assert radius > prev
        prev = radius


def test_in_focus_psf_matches_airy_pattern():
    # 0.5 µm pixels: the pixel holds about the Airy energy inside a disc of equal area,
    # EE(v) = 1 - J0(v)² - J1(v)² (about 0.73 here; the truncated tail adds a few %).
    psf = defocus_psf(0.0, pixel_size_um=0.5, **BF)
    c = psf.shape[0] // 2
    v = 2 * np.pi * 0.75 * (0.5 / np.sqrt(np.pi)) / 0.54
    expected = 1 - j0(v) ** 2 - j1(v) ** 2
    assert abs(psf[c, c] - expected) < 0.05, (psf[c, c], expected)
    assert 0.65 < psf[c, c] < 0.85  # close to a delta, but not one: NA 0.75 is not infinite
    # Fine pixels: first dark ring at 0.61 λ / NA.
    fine = defocus_psf(0.0, pixel_size_um=0.04, oversample=3, **BF)
    row = fine[fine.shape[0] // 2, fine.shape[0] // 2 :]
    first_min = np.argmax(np.diff(row) > 0) * 0.04
    assert first_min == pytest.approx(0.61 * 0.54 / 0.75, abs=0.05)


def test_optics_helpers():
    o = Optics()
    assert depth_of_field_um(o) == pytest.approx(0.54 / 0.75**2)
    assert depth_of_field_um(o, wavelength_um=0.61) == pytest.approx(0.61 / 0.75**2)
    assert blur_radius_um(-4.0, o) == pytest.approx(4 * np.tan(np.arcsin(0.75)))
    sig = [gaussian_sigma_px(z, 0.5, o) for z in (0, 1, 2, 4, 8, 16)]
    assert all(b > a for a, b in zip(sig, sig[1:]))
    # Second moment of the Gaussian = per-axis second moment of the optical PSF.
    psf = defocus_psf(4.0, pixel_size_um=0.5, **BF)
    assert (sig[3] * 0.5) ** 2 == pytest.approx(_radial_r2(psf, 0.5) / 2, rel=0.02)


def test_flat_image_unchanged_and_dtypes_kept():
    flat = np.full((60, 70, 3), 237, np.uint8)
    for z in (0.0, 3.0, 12.0):
        out = simulate_defocus(flat, z, pixel_size_um=0.5)
        assert out.dtype == np.uint8 and out.shape == flat.shape
        np.testing.assert_array_equal(out, flat)
    f32 = np.full((40, 50), 0.25, np.float32)
    out = simulate_defocus(f32, 2.0, pixel_size_um=0.5, modality="fluorescence")
    assert out.dtype == np.float32 and out.shape == f32.shape
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    u16 = np.full((40, 50, 2), 4000, np.uint16)
    out = simulate_defocus(u16, 2.0, pixel_size_um=0.5, modality="fluorescence")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, u16)


def test_uint8_rounded_clipped_and_signless(tissue):
    out = simulate_defocus(tissue, 2.0, pixel_size_um=0.5)
    assert out.dtype == np.uint8 and out.shape == tissue.shape
    assert not np.array_equal(out, tissue)
    np.testing.assert_array_equal(out, simulate_defocus(tissue, -2.0, pixel_size_um=0.5))
    # Blur preserves the mean brightness (unit-sum PSF) and keeps values in range.
    assert abs(out.astype(float).mean() - tissue.astype(float).mean()) < 1.0
    as_float = simulate_defocus(tissue.astype(np.float64), 2.0, pixel_size_um=0.5)
    assert as_float.dtype == np.float64
    assert np.abs(np.rint(as_float) - out).max() <= 1


def test_rgba_alpha_passes_through(tissue):
    rgba = np.dstack([tissue, np.full(tissue.shape[:2], 200, np.uint8)])
    out = simulate_defocus(rgba, 3.0, pixel_size_um=0.5)
    np.testing.assert_array_equal(out[..., 3], 200)
    np.testing.assert_array_equal(out[..., :3], simulate_defocus(tissue, 3.0, pixel_size_um=0.5))


def test_blur_reduces_variance_of_laplacian_monotonically(tissue):
    zs = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    vol = [variance_of_laplacian(simulate_defocus(tissue, z, pixel_size_um=0.5)) for z in zs]
    assert vol[0] < variance_of_laplacian(tissue)
    assert all(b < a for a, b in zip(vol, vol[1:])), vol
    assert vol[-1] < 0.05 * vol[0]


def test_gaussian_method_blurs_like_the_optics(tissue):
    grey = tissue[..., 1]
    vol = lambda z, **kw: variance_of_laplacian(simulate_defocus(grey, z, pixel_size_um=0.5,
                                                                 modality="fluorescence", **kw))
    gau = [vol(z, method="gaussian") for z in (1.0, 2.0, 4.0)]
    assert gau[0] > gau[1] > gau[2]
    # Same second moment, not the same shape (a Gaussian keeps more mid frequencies than
    # the defocused pupil): the Gaussian at z must still read as an optical defocus within a
    # factor 2 of z - sharper than the optics at 2z, blurrier than the optics at z/2.
    for z, g in zip((1.0, 2.0, 4.0), gau):
        assert vol(2 * z) < g < vol(z / 2), (z, vol(2 * z), g, vol(z / 2))


def test_batch_matches_single(tissue):
    tiles = np.stack([tissue[:128, :128], tissue[128:, 128:]])
    out = simulate_defocus_batch(tiles, [1.0, 3.0], pixel_size_um=0.5)
    np.testing.assert_array_equal(out[1], simulate_defocus(tiles[1], 3.0, pixel_size_um=0.5))
    assert out.dtype == np.uint8


def test_bad_input_is_reported():
    img = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(OpticsError, match="modality"):
        simulate_defocus(img, 1.0, pixel_size_um=0.5, modality="phase")
    with pytest.raises(ValueError, match="method"):
        simulate_defocus(img, 1.0, pixel_size_um=0.5, method="box")
    with pytest.raises(ValueError, match="wavelengths"):
        simulate_defocus(np.zeros((20, 20, 2), np.uint8), 1.0, pixel_size_um=0.5)
    with pytest.raises(ValueError, match="finite"):
        simulate_defocus(img, float("nan"), pixel_size_um=0.5)
    with pytest.raises(ValueError, match="pixel size"):
        simulate_defocus(img, 1.0, pixel_size_um=0)
    with pytest.raises(ValueError, match="odd"):
        defocus_psf(1.0, pixel_size_um=0.5, size=10, **BF)
