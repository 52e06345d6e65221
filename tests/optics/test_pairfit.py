"""focusq pair: the physical defocus between two captures of one field (pairfit.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy.ndimage import fourier_shift, rotate
from tests.conftest import SVS_PIXEL_UM, TISSUE_YX

from napari_focusq.cli.app import main
from napari_focusq.config import Optics
from napari_focusq.optics.pairfit import PairError, fit_pair, registration
from napari_focusq.optics.psf import simulate_defocus

PX = SVS_PIXEL_UM


@pytest.fixture(scope="module")
def field(slide_crop):
    y, x = TISSUE_YX[0]
    return slide_crop(y, x, 384, 384)


def _shift(img, dy, dx):
    f = img.astype(np.float64)
    return np.stack([np.fft.ifft2(fourier_shift(np.fft.fft2(f[..., c]), (dy, dx))).real
                     for c in range(f.shape[-1])], -1)


@pytest.mark.parametrize("z", [0.5, 1.25, 2.5, 5.0])
def test_fit_returns_the_simulated_defocus(field, z):
    rng = np.random.default_rng(int(z * 100))
    out = simulate_defocus(field, z, pixel_size_um=PX).astype(np.float64)
    out = np.clip(out + rng.normal(0, 1.0, out.shape), 0, 255)  # sensor noise, seeded
    fit = fit_pair(field, out, pixel_size_um=PX, reference="image", na=0.75)
    # The issue's target: |z fitted - z true| <= 0.25 µm for z 0.5-5 µm.
    assert abs(fit.z_um - z) <= 0.25, fit.to_dict()
    assert fit.r2 > 0.95 and fit.residual < 0.05, fit.to_dict()


def test_capture_reference_two_captures_through_the_objective(field):
    # Both captures through the objective: H = OTF(z) / OTF(0).
    a = simulate_defocus(field, 0.0, pixel_size_um=PX)
    b = simulate_defocus(field, 3.0, pixel_size_um=PX)
    fit = fit_pair(a, b, pixel_size_um=PX, reference="capture", na=0.75)
    assert abs(fit.z_um - 3.0) <= 0.25, fit.to_dict()
    # Read as if b were blurred from a directly, the in-focus OTF is counted twice and the
    # fit is worse: the two models are told apart.
    other = fit_pair(a, b, pixel_size_um=PX, reference="image", na=0.75)
    assert other.residual > fit.residual


def test_sub_pixel_shift_is_measured_and_removed(field):
    b = simulate_defocus(field, 2.0, pixel_size_um=PX)
    shifted = _shift(b, 0.4, -0.3)
    (dy, dx), ratio = registration(field[..., 1].astype(float), shifted[..., 1])
    # Parabolic peak of the doubled phase: a few hundredths of a pixel on real tissue.
    assert abs(dy - 0.4) < 0.08 and abs(dx + 0.3) < 0.08 and ratio > 20
    fit = fit_pair(field, shifted, pixel_size_um=PX, reference="image", na=0.75)
    assert abs(fit.z_um - 2.0) <= 0.25


def test_exposure_difference_is_a_gain_not_defocus(field):
    b = simulate_defocus(field, 1.5, pixel_size_um=PX).astype(np.float64) * 0.7
    fit = fit_pair(field, b, pixel_size_um=PX, reference="image", na=0.75)
    assert abs(fit.z_um - 1.5) <= 0.25 and abs(fit.gain - 0.7) < 0.05


def test_na_fitted_when_unknown(field):
    b = simulate_defocus(field, 2.0, pixel_size_um=PX, optics=Optics(na=0.5))
    fit = fit_pair(field, b, pixel_size_um=PX, reference="image", na=None)
    assert fit.na_fitted
    # z and NA trade off through the blur radius z·tan(asin NA): looser than with NA known.
    assert abs(fit.z_um - 2.0) <= 0.5 and abs(fit.na - 0.5) <= 0.1, fit.to_dict()


@pytest.mark.parametrize("how", ["shifted 3 px", "another field", "rotated 4°", "different size"])
def test_misregistered_pairs_are_refused(field, slide_crop, how):
    b = simulate_defocus(field, 2.0, pixel_size_um=PX)
    if how == "shifted 3 px":
        b = np.roll(b, 3, axis=1)
        match = "misregistered.*shifted by .*\\+3.00"
    elif how == "another field":
        y, x = TISSUE_YX[1]
        b = simulate_defocus(slide_crop(y, x, 384, 384), 2.0, pixel_size_um=PX)
        match = "not registered captures of one field|do not show one field"
    elif how == "rotated 4°":
        b = rotate(b, 4, reshape=False, mode="reflect")
        match = "misregistered|not registered|do not show one field"
    else:
        b = b[:300]
        match = "same size"
    with pytest.raises(PairError, match=match):
        fit_pair(field, b, pixel_size_um=PX, reference="image", na=0.75, names=("in.tif", "out.tif"))


def test_identical_captures_fit_zero(field):
    fit = fit_pair(field, field, pixel_size_um=PX, na=0.75)
    assert fit.z_um < 0.1 and fit.residual < 1e-3 and np.isnan(fit.r2)  # flat H: no R² to give


def test_flat_and_tiny_inputs_are_refused(field):
    with pytest.raises(PairError, match="flat"):
        fit_pair(field, np.full_like(field, 200), pixel_size_um=PX)
    with pytest.raises(PairError, match="too small"):
        fit_pair(field[:40, :40], field[:40, :40], pixel_size_um=PX)


def _write(path, a):
    tifffile.imwrite(path, np.asarray(a, np.uint8), photometric="rgb",
                     resolution=(1e4 / PX, 1e4 / PX), resolutionunit="CENTIMETER")


def test_cli_pair_prints_z_residual_and_writes_plot(field, tmp_path, capsys):
    _write(tmp_path / "in.tif", simulate_defocus(field, 0.0, pixel_size_um=PX))
    _write(tmp_path / "out.tif", simulate_defocus(field, 2.5, pixel_size_um=PX))
    rc = main(["pair", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--na", "0.75",
               "--plot", str(tmp_path / "fit.png"), "--json", str(tmp_path / "fit.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "defocus 2." in out and "fit residual" in out and "R²" in out
    d = json.loads((tmp_path / "fit.json").read_text())
    assert abs(d["z_um"] - 2.5) <= 0.25 and d["optics_source"]["na"] == "user"
    from PIL import Image

    assert Image.open(tmp_path / "fit.png").size[0] > 400


def test_cli_pair_misregistered_is_an_error_not_a_number(field, tmp_path, capsys):
    _write(tmp_path / "in.tif", field)
    _write(tmp_path / "out.tif", np.roll(simulate_defocus(field, 2.0, pixel_size_um=PX), 5, axis=0))
    rc = main(["pair", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--na", "0.75",
               "--plot", str(tmp_path / "fit.png")])
    cap = capsys.readouterr()
    assert rc == 1 and "misregistered" in cap.err and "defocus" not in cap.out
    assert not (tmp_path / "fit.png").exists()


def test_cli_pair_bad_optics_is_usage(tmp_path, capsys):
    assert main(["pair", "a.tif", "b.tif", "--na", "1.3"]) == 2
    assert "immersion" in capsys.readouterr().err


def test_evaluate_pairs_reads_both_captures(field, tmp_path, capsys):
    for i, z in enumerate((0.0, 3.0)):
        _write(tmp_path / f"in{i}.tif", simulate_defocus(field, 0.0, pixel_size_um=PX))
        _write(tmp_path / f"out{i}.tif", simulate_defocus(field, z if z else 1.0, pixel_size_um=PX))
    (tmp_path / "pairs.csv").write_text("in,out\nin0.tif,out0.tif\nin1.tif,out1.tif\n")
    rc = main(["evaluate", "default", "--pairs-csv", str(tmp_path / "pairs.csv"), "--na", "0.75",
               "--out", str(tmp_path / "ev.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    res = json.loads((tmp_path / "ev.json").read_text())
    z = [r["z_physical_um"] for r in res["pairs"]]
    assert abs(z[0] - 1.0) <= 0.25 and abs(z[1] - 3.0) <= 0.25
    # The shipped model reads the 3 µm capture as further from focus than the 1 µm one.
    assert res["pairs"][1]["read_out_um"] > res["pairs"][0]["read_out_um"]
    assert "MAE" in out
    assert main(["evaluate", "default", "--pairs", "nocolon"]) == 1
    assert main(["evaluate", "default"]) == 2


def test_real_focus_sweep_fits_symmetric_growing_defocus():
    # The real smear sweep in data/ (plane 9 best, constant step; pixel size and NA not
    # stated, so 0.5 µm/px and NA 0.5 are assumed): fitted z grows with the distance from
    # the best plane and agrees on both sides. Its planes drift 1-2 px: --max-shift 2.5.
    from tests.conftest import DATA

    st = tifffile.imread(DATA / "brightfield_through_focus" / "smear_through_focus_19planes.tif")
    z = {k: fit_pair(st[9], st[9 + k], pixel_size_um=0.5, na=0.5, max_shift_px=2.5).z_um for k in (-4, 4, -8, 8)}
    # Tolerance: the two sides differed by 0.1-0.35 µm at 3-8 planes (DESIGN-NOTES), 0.6 allows noise.
    assert abs(z[4] - z[-4]) < 0.6 and abs(z[8] - z[-8]) < 0.6, z
    assert min(z[8], z[-8]) > max(z[4], z[-4]) + 2.0, z
    with pytest.raises(PairError, match="misregistered"):
        fit_pair(st[9], st[1], pixel_size_um=0.5, na=0.5)  # default 1 px: its 1.9 px drift is refused
