"""De-blurring preview (deblur.py): Richardson-Lucy with the defocus PSF."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_focusq.optics.deblur import DeblurError, deblur, deblur_region
from napari_focusq.optics.psf import simulate_defocus
from napari_focusq.scoring.focus import variance_of_laplacian
from napari_focusq.scoring.focusmap import FocusMap

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def nuclei() -> np.ndarray:
    import tifffile

    return np.array(tifffile.imread(DATA / "fluorescence" / "nuclei_dsb2018.tif")[96:352, 96:352])


def _rmse(a, b):
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_deblurring_2um_sharpens_and_restores(nuclei):
    truth = nuclei.astype(np.float32)
    blurred = simulate_defocus(truth, 2.0, pixel_size_um=0.5, modality="fluorescence")
    keep = blurred.copy()
    out = deblur(blurred, 2.0, pixel_size_um=0.5, iterations=30)
    assert np.array_equal(blurred, keep)  # the input is never modified
    assert out.shape == blurred.shape and out.dtype == blurred.dtype
    assert variance_of_laplacian(out) > 2 * variance_of_laplacian(blurred)
    # The truth has its own pixel noise, which no deconvolution restores, so "closer" is
    # measured against what a wrong PSF gives, not against a fixed fraction: the PSF of the
    # true 2 µm restores more than that of a quarter of it (a model that ignored the
    # defocus), which restores more than nothing.
    wrong = deblur(blurred, 0.5, pixel_size_um=0.5, iterations=30)
    assert _rmse(out, truth) < _rmse(wrong, truth) < _rmse(blurred, truth)


def test_integer_dtype_kept_and_regularisation_options(nuclei):
    blurred = simulate_defocus(nuclei, 2.0, pixel_size_um=0.5, modality="fluorescence")  # uint16
    plain = deblur(blurred, 2.0, pixel_size_um=0.5, iterations=15)
    damped = deblur(blurred, 2.0, pixel_size_um=0.5, iterations=15, prefilter_sigma_px=1.0, tv_weight=0.02)
    assert plain.dtype == np.uint16 and damped.dtype == np.uint16
    # Regularisation trades sharpness for less noise amplification.
    assert variance_of_laplacian(damped) < variance_of_laplacian(plain)
    assert _rmse(damped, nuclei) < _rmse(blurred, nuclei)


def test_rgb_brightfield_channels():
    """Each RGB channel is deconvolved with its own wavelength's PSF and stays in place."""
    from PIL import Image

    img = np.asarray(Image.open(DATA / "brightfield" / "histoqc_template1.png").convert("RGB"))[100:228, 100:228]
    blurred = simulate_defocus(img, 1.5, pixel_size_um=0.5)
    out = deblur(blurred, 1.5, pixel_size_um=0.5, modality="brightfield", iterations=20)
    wrong = deblur(blurred, 0.4, pixel_size_um=0.5, modality="brightfield", iterations=20)
    assert out.shape == img.shape and out.dtype == np.uint8
    for k in range(3):
        o, b, t = (a[..., k].astype(np.float32) for a in (out, blurred, img))
        # At 1.5 µm the PSF takes most of the power at the Laplacian's frequencies; getting
        # less than half of it back (VoL x2) would be a failed deconvolution.
        assert variance_of_laplacian(o) > 2 * variance_of_laplacian(b), k
        assert _rmse(o, t) < _rmse(wrong[..., k], t) < _rmse(b, t), k
        # Channels are not swapped or mixed: each is closest to its own truth.
        assert min(range(3), key=lambda j: _rmse(o, img[..., j])) == k


def test_region_uses_the_predicted_defocus(nuclei):
    blurred = simulate_defocus(nuclei.astype(np.float32), 2.0, pixel_size_um=0.5, modality="fluorescence")
    fm = FocusMap(defocus_um=np.array([[2.0, 2.0], [2.0, np.nan]]), tissue_fraction=np.ones((2, 2)),
                  tile_size_px=128, image_shape=blurred.shape, pixel_size_um=0.5, modality="fluorescence",
                  model="m")
    region = deblur_region(blurred, fm, 0, 0, 128, 256, iterations=20)
    direct = deblur(blurred[:128, :256], 2.0, pixel_size_um=0.5, iterations=20)
    assert np.allclose(region, direct)
    fm.defocus_um[:] = np.nan
    with pytest.raises(DeblurError, match="no scored tile"):
        deblur_region(blurred, fm, 0, 0, 64, 64)


@pytest.mark.parametrize("kw, match", [
    (dict(defocus_um=np.nan), "defocus"), (dict(pixel_size_um=0), "pixel size"),
    (dict(iterations=0), "iterations"), (dict(tv_weight=-1), ">= 0"),
])
def test_bad_options(kw, match):
    args = dict(defocus_um=1.0, pixel_size_um=0.5)
    args.update(kw)
    with pytest.raises(DeblurError, match=match):
        deblur(np.ones((16, 16)), args.pop("defocus_um"), **args)
    with pytest.raises(DeblurError, match="image must"):
        deblur(np.ones((4, 4, 4, 4)), 1.0, pixel_size_um=0.5)
