"""Model architectures, FocusModel input handling and calibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_focusq.models import FocusModel, new_model, prepare_input
from napari_focusq.models.calibration import apply_calibration, fit_isotonic
from napari_focusq.models.fast import FastFocusNet
from napari_focusq.models.inception import InceptionFocusNet
from napari_focusq.models.registry import build_module


@pytest.fixture(scope="module")
def fast_model() -> FocusModel:
    torch.manual_seed(0)
    return new_model("fast", device=torch.device("cpu"))


@pytest.fixture(scope="module")
def inception_net(tmp_path_factory):
    """InceptionFocusNet built with every download path sabotaged and an empty torch home."""
    import torch.hub
    import torchvision.models._api as tv_api

    home = tmp_path_factory.mktemp("torch_home")

    def no_download(*a, **k):
        raise AssertionError("InceptionFocusNet tried to download weights")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        mp.setattr(torch.hub, "load_state_dict_from_url", no_download)
        mp.setattr(torch.hub, "download_url_to_file", no_download)
        mp.setattr(tv_api.WeightsEnum, "get_state_dict", no_download)
        torch.manual_seed(0)
        net = InceptionFocusNet().eval()
    assert not any(home.rglob("*")), "something was written to the torch cache"
    return net


@pytest.fixture
def rgb_tiles(slide_crop) -> np.ndarray:
    """Two real H&E tiles (uint8, 320 x 320 x 3)."""
    return np.stack([slide_crop(2000, 650, 320, 320), slide_crop(2300, 1100, 320, 320)])


# ---------------------------------------------------------------- architectures
def test_fast_forward_shape_and_range():
    torch.manual_seed(0)
    net = FastFocusNet().eval()
    x = torch.rand(3, 320, 320) * 255
    with torch.inference_mode():
        y = net(x)
        f = net.features(x)
    assert y.shape == (3,)
    assert torch.isfinite(y).all() and (y >= 0).all()  # softplus: |z| is never negative
    assert f.shape == (3, net.front.n_features)
    # The front end has no weights: only the head trains.
    assert net.fixed_front_end
    assert sum(p.numel() for p in net.front.parameters()) == 0
    assert sum(p.numel() for p in net.parameters()) < 100_000


@pytest.mark.parametrize("options, levels", [({}, 1), ({"quadrants": True, "axis_gap": 2}, 3),
                                             ({"quadrants": True, "axis_gap": 2, "blue": True}, 4)])
def test_fast_features_ignore_brightness_and_contrast(options, levels):
    torch.manual_seed(0)
    net = FastFocusNet(**options).eval()
    x = torch.rand(2, *((2,) if options.get("blue") else ()), 320, 320) * 100
    with torch.inference_mode():
        f1, f2 = net.features(x), net.features(3.0 * x + 40.0)
    # All band features are relative to the tile's (or quarter's) own low-frequency power;
    # only the reference levels themselves (/10) move, by log(9)/10.
    level = net.front.level_features
    assert len(level) == levels  # whole tile (, quarters' max, quarters' min) (, blue's whole tile)
    rel = [i for i in range(f1.shape[1]) if i not in level]
    assert torch.allclose(f1[:, rel], f2[:, rel], atol=1e-3)
    assert torch.allclose(f2[:, level] - f1[:, level], torch.full((2, len(level)), float(np.log(9.0)) / 10), atol=1e-3)


def test_quadrant_features_show_where_the_quarters_disagree():
    from scipy import ndimage as ndi

    from napari_focusq.models.fast import QuadrantFrontEnd, SpectralFrontEnd

    rng = np.random.default_rng(0)
    texture = ndi.gaussian_filter(rng.normal(size=(320, 320)), 1.0) * 40 + 128
    half = texture.copy()
    half[:, :160] = ndi.gaussian_filter(texture, 4.0)[:, :160]  # left half soft, right half sharp
    front, whole = QuadrantFrontEnd(), SpectralFrontEnd()
    with torch.inference_mode():
        f = front(torch.tensor(np.stack([texture, half]), dtype=torch.float32)).numpy()
        w = whole(torch.tensor(np.stack([texture, half]), dtype=torch.float32)).numpy()
    n = whole.n_features
    q_max, q_min = f[:, n:2 * n], f[:, 2 * n:]
    assert np.allclose(f[:, :n], w, atol=1e-5)  # the whole tile's profile comes first, unchanged
    high = slice(20, 40)  # 0.25-0.5 cycles/px: what a 4 px blur removes
    # Uniform texture: the quarters agree; half blurred: the sharp quarters keep their high
    # frequencies, the soft ones lose them, and the envelope opens by orders of magnitude.
    # (Four quarters of one texture still differ by ~0.7 in log power: few samples per band.)
    assert np.abs(q_max[0, high] - q_min[0, high]).mean() < 1.2
    assert (q_max[1, high] - q_min[1, high]).mean() > 10
    # The sharp quarters are the same texture as the uniform tile's: their envelope top
    # moves only by the quarter-to-quarter sampling spread (~0.7, as above), not by tens.
    assert np.abs(q_max[1, high] - q_max[0, high]).mean() < 1.0


def test_blue_option_adds_the_blue_channels_profile_beside_green():
    from napari_focusq.models import new_model, prepare_input
    from napari_focusq.models.fast import SpectralFrontEnd

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (2, 320, 320, 3), dtype=np.uint8)
    pair = prepare_input(rgb, "green+blue", "brightfield")
    assert pair.shape == (2, 2, 320, 320) and pair.dtype == np.float32
    np.testing.assert_array_equal(pair[:, 0], rgb[..., 1])
    np.testing.assert_array_equal(pair[:, 1], rgb[..., 2])
    wide = prepare_input(rgb.astype(np.uint16) * 257, "green+blue", "brightfield")  # 16-bit: same scale
    np.testing.assert_allclose(wide, pair, atol=1e-3)
    grey = prepare_input(rgb[..., 0], "green+blue", "brightfield")
    np.testing.assert_array_equal(grey[:, 0], grey[:, 1])

    plain = new_model("fast", config={"quadrants": True, "axis_gap": 2}, device=torch.device("cpu"))
    both = new_model("fast", config={"quadrants": True, "axis_gap": 2, "blue": True}, device=torch.device("cpu"))
    assert both.meta["input"] == "green+blue" and plain.meta["input"] == "intensity"
    with torch.inference_mode():
        f_plain = plain.module.features(plain.prepare(rgb))
        f_both = both.module.features(both.prepare(rgb))
        f_blue = SpectralFrontEnd(axis_gap=2)(torch.from_numpy(rgb[..., 2].astype(np.float32)))
    n = f_plain.shape[1]
    assert f_both.shape[1] == n + 41
    assert torch.allclose(f_both[:, :n], f_plain, atol=1e-5)  # green's features come first, unchanged
    assert torch.allclose(f_both[:, n:], f_blue, atol=1e-5)
    assert np.isfinite(both.predict(rgb)).all()


def test_fast_files_from_before_the_front_end_options_still_load(tmp_path):
    from napari_focusq.models import load_model
    from napari_focusq.models.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    old = new_model("fast", device=torch.device("cpu"))
    path = old.save(tmp_path / "old.safetensors", trained=True)
    tensors, meta = load_checkpoint(path)
    for key in ("quadrants", "axis_gap", "blue"):  # as files written before the options existed
        meta["arch_config"].pop(key)
    save_checkpoint(path, tensors, meta)
    m = load_model(path)
    assert m.module.front.n_features == 41 and not m.module.config["quadrants"]
    x = np.random.default_rng(1).integers(0, 255, (2, 320, 320, 3), dtype=np.uint8)
    assert np.allclose(m.predict(x), old.predict(x), atol=1e-5)


def test_inception_forward_shape(inception_net):
    with torch.inference_mode():
        y = inception_net(torch.rand(1, 3, 320, 320))  # ~1 CPU-s per tile
    assert y.shape == (1,)
    assert torch.isfinite(y).all() and (y >= 0).all()


def test_inception_structure(inception_net):
    backbone = inception_net.backbone
    assert backbone.aux_logits is False and backbone.AuxLogits is None
    assert isinstance(backbone.fc, nn.Identity)
    linears = [m for m in inception_net.regressor if isinstance(m, nn.Linear)]
    assert len(linears) == 6, [(m.in_features, m.out_features) for m in linears]
    assert linears[0].in_features == 2048
    assert linears[-1].out_features == 1
    for a, b in zip(linears, linears[1:]):
        assert a.out_features == b.in_features
    # No transform_input: the module normalises with ImageNet statistics itself.
    assert backbone.transform_input is False


def test_build_module_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_module("resnet")


# ------------------------------------------------------------- FocusModel input
def test_predict_uint8_rgb(fast_model, rgb_tiles):
    z = fast_model.predict(rgb_tiles)
    assert z.shape == (2,) and z.dtype == np.float32
    assert np.isfinite(z).all() and (z >= 0).all()


def test_predict_uint16_rgb_is_scaled(fast_model, rgb_tiles):
    z8 = fast_model.predict(rgb_tiles)
    z16 = fast_model.predict(rgb_tiles.astype(np.uint16) * 257)  # the same image at 16 bits
    np.testing.assert_allclose(z16, z8, rtol=1e-4, atol=1e-4)


def test_predict_grayscale_and_float(fast_model, rgb_tiles):
    z8 = fast_model.predict(rgb_tiles)
    green = rgb_tiles[..., 1]
    # Brightfield uses the green channel, so a grey tile of the green plane is the same input.
    np.testing.assert_allclose(fast_model.predict(green), z8, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast_model.predict(rgb_tiles / 255.0), z8, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast_model.predict(rgb_tiles.astype(np.float32)), z8, rtol=1e-4, atol=1e-4)
    # RGBA: alpha is dropped.
    rgba = np.concatenate([rgb_tiles, np.full(rgb_tiles.shape[:3] + (1,), 255, np.uint8)], -1)
    np.testing.assert_allclose(fast_model.predict(rgba), z8, rtol=1e-4, atol=1e-4)


def test_predict_nonfinite_float_tiles(fast_model, rgb_tiles):
    t = rgb_tiles.astype(np.float32)
    t[0, :10] = np.nan
    t[1, 5:9, 5:9] = np.inf
    z = fast_model.predict(t)
    assert np.isfinite(z).all()


def test_predict_empty_batch(fast_model):
    assert fast_model.predict(np.zeros((0, 320, 320, 3), np.uint8)).shape == (0,)


@pytest.mark.parametrize("shape", [(2, 256, 256, 3), (2, 320, 321), (320, 320), (1, 1, 320, 320, 3)])
def test_predict_wrong_tile_size(fast_model, shape):
    with pytest.raises(ValueError, match=r"expects tiles of 320x320 px") as e:
        fast_model.predict(np.zeros(shape, np.uint8))
    assert str(shape).replace(" ", "") in str(e.value).replace(" ", "")


def test_predict_applies_calibration(rgb_tiles):
    torch.manual_seed(0)
    m = new_model("fast", device=torch.device("cpu"))
    raw = m.predict(rgb_tiles)
    m.meta["calibration"] = {"x": [-100.0, 100.0], "y": [-98.0, 102.0]}  # shift by +2
    np.testing.assert_allclose(m.predict(rgb_tiles), raw + 2.0, atol=1e-4)
    np.testing.assert_allclose(m.predict_raw(rgb_tiles), raw, atol=1e-5)


def test_prepare_input_fluorescence_scale_invariant():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 50.0, (3, 320, 320)).astype(np.float32)
    a = prepare_input(x, "intensity", "fluorescence")
    b = prepare_input(10 * x, "intensity", "fluorescence")
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    # Also across bit depths, and an offset (camera bias) changes nothing either.
    u16 = np.clip(x * 40, 0, 65535).astype(np.uint16)
    np.testing.assert_allclose(prepare_input(u16, "intensity", "fluorescence"),
                               prepare_input(u16.astype(np.float64) / 40.0 + 100.0, "intensity", "fluorescence"),
                               rtol=1e-3, atol=2e-2)
    # The model's features (and so its predictions) agree too.
    torch.manual_seed(0)
    fm = new_model("fast", modality="fluorescence", device=torch.device("cpu"))
    np.testing.assert_allclose(fm.predict(x), fm.predict(10 * x), rtol=1e-4, atol=1e-4)


def test_prepare_input_fluorescence_channels_combine_as_in_training():
    """Multichannel fluorescence is combined by the channels' maximum, as training and the
    benchmark do (training.load_training_image): a sharp channel is not diluted by a
    dim diffuse one."""
    rng = np.random.default_rng(1)
    nuclei = rng.gamma(2.0, 50.0, (2, 320, 320)).astype(np.float32)
    diffuse = np.full_like(nuclei, 20.0)
    stack = np.stack([diffuse, nuclei], -1)
    np.testing.assert_allclose(prepare_input(stack, "intensity", "fluorescence"),
                               prepare_input(np.maximum(nuclei, diffuse), "intensity", "fluorescence"), atol=1e-4)
    assert not np.allclose(prepare_input(stack, "intensity", "fluorescence"),
                           prepare_input(stack.mean(-1), "intensity", "fluorescence"), atol=1e-2)


def test_prepare_input_rgb01_layouts(rgb_tiles):
    a = prepare_input(rgb_tiles, "rgb01", "brightfield")
    assert a.shape == (2, 3, 320, 320) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_allclose(prepare_input(rgb_tiles.astype(np.uint16) * 257, "rgb01", "brightfield"), a, atol=1e-6)
    g = prepare_input(rgb_tiles[..., 0], "rgb01", "brightfield")  # grey -> three equal channels
    assert g.shape == (2, 3, 320, 320)
    np.testing.assert_array_equal(g[:, 0], g[:, 2])


# ------------------------------------------------------------------ calibration
def _biased(n, seed):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 8, n)
    pred = 0.5 + 1.2 * true + rng.normal(0, 0.2, n)
    return pred, true


def test_fit_isotonic_is_monotone():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0, 10, 2000)
    true = np.sqrt(pred) + rng.normal(0, 0.5, 2000)  # noisy, so raw pairs go up and down
    c = fit_isotonic(pred, true, n_knots=64)
    x, y = np.asarray(c["x"]), np.asarray(c["y"])
    assert 2 <= len(x) <= 64 and len(x) == len(y)
    assert np.all(np.diff(x) > 0)
    assert np.all(np.diff(y) >= 0)
    grid = np.linspace(-5, 20, 1000)
    assert np.all(np.diff(apply_calibration(grid, c)) >= -1e-12)


def test_calibration_corrects_a_biased_predictor():
    calib = fit_isotonic(*_biased(3000, seed=2))
    pred, true = _biased(1000, seed=3)  # held-out data
    cal = apply_calibration(pred, calib)
    slope, intercept = np.polyfit(true, cal, 1)
    # What is corrected: slope 1.2 and offset 0.5 µm. A quarter of the slope's excess and
    # under a third of the offset may remain (the isotonic map flattens at the ends of the
    # range). The predictor's own noise, 0.2 on a slope of 1.2, leaves ~0.17 µm sd (MAE
    # ~0.13 µm) that no calibration removes: 0.3 is about twice that floor.
    assert abs(slope - 1) < 0.05, slope
    assert abs(intercept) < 0.15, intercept
    assert np.abs(cal - true).mean() < 0.3
    # Uncalibrated, the same predictions are off by 0.5 + 0.2 * true.
    assert np.abs(pred - true).mean() > 1.0


def test_calibration_extrapolates_with_slope_one():
    calib = fit_isotonic(*_biased(3000, seed=2))
    x_last, y_last = calib["x"][-1], calib["y"][-1]
    out = apply_calibration(np.array([x_last + 1.0, x_last + 5.0]), calib)
    np.testing.assert_allclose(out, [y_last + 1.0, y_last + 5.0], atol=1e-9)
    # Below the first knot: slope 1 too, but never negative.
    x0, y0 = calib["x"][0], calib["y"][0]
    low = apply_calibration(np.array([x0 - 0.1, x0 - 100.0]), calib)
    np.testing.assert_allclose(low, [max(0.0, y0 - 0.1), 0.0], atol=1e-9)


def test_calibration_none_is_identity():
    p = np.array([0.0, 1.5, 7.0])
    np.testing.assert_array_equal(apply_calibration(p, None), p)
    np.testing.assert_array_equal(apply_calibration(p, {"x": [1.0], "y": [2.0]}), p)


def test_spectral_front_end_leaves_its_input_alone_and_takes_any_strides():
    from napari_focusq.models.fast import SpectralFrontEnd

    x = torch.rand(3, 320, 320) * 255
    before = x.clone()
    fe = SpectralFrontEnd()
    with torch.inference_mode():
        f = fe(x)
        f_strided = fe(x.transpose(1, 2))  # windowing happens in its own buffer
        f_copy = fe(x.transpose(1, 2).contiguous())
    assert torch.equal(x, before)
    assert torch.allclose(f_strided, f_copy, atol=1e-4) and f.shape == (3, fe.n_features)  # sum order


def test_axis_gap_ignores_line_and_column_patterns():
    from scipy import ndimage as ndi

    from napari_focusq.models.fast import SpectralFrontEnd

    # Soft texture plus row and column offsets, as a line sensor, a stitching seam or a
    # separable resampling leaves them: power on the spectrum's axes only.
    rng = np.random.default_rng(0)
    soft = ndi.gaussian_filter(rng.normal(size=(320, 320)), 2.0) * 40 + 128
    striped = soft + rng.normal(size=(1, 320)) + rng.normal(size=(320, 1))
    x = torch.tensor(np.stack([soft, striped]), dtype=torch.float32)
    with torch.inference_mode():
        plain, gapped = SpectralFrontEnd()(x).numpy(), SpectralFrontEnd(axis_gap=2)(x).numpy()
    bands = slice(14, 27)  # 0.17-0.34 cycles/px, where a soft tile has little power of its own
    # Without the gap the pattern reads as fine detail (unit-sd offsets against a soft
    # texture's little power there: several log units, 4.6 measured); with it the two tiles
    # read alike but for the offsets' leakage off the axes through the Hann window (a few
    # hundredths). 0.1 is a fiftieth of the effect the gap removes.
    assert (plain[1, bands] - plain[0, bands]).mean() > 3
    assert np.abs(gapped[1, bands] - gapped[0, bands]).max() < 0.1


def test_torch_threads_never_drops_below_one_and_restores_on_error():
    import torch

    from napari_focusq.models import torch_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch_threads(-2):
            assert torch.get_num_threads() == 1
        torch.set_num_threads(3)
        with pytest.raises(RuntimeError), torch_threads(-1):
            assert torch.get_num_threads() == 2
            raise RuntimeError("scoring failed")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("tile_px, axis_gap", [(320, 2), (160, 1), (321, 0), (96, 2)])
def test_spectral_bands_are_the_radial_band_means_of_the_whole_spectrum(tile_px, axis_gap):
    """The front end sums the spectrum's rows 0..H/2 after adding each mirrored row (-ky)
    onto its twin; this recomputes the features the plain way, over every row of the
    spectrum, in numpy float64 (odd sizes too: their last row has a mirror, no Nyquist row)."""
    from napari_focusq.models.fast import SpectralFrontEnd

    bw = 4
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, tile_px, tile_px)) * np.array([1.0, 10.0, 3.0])[:, None, None] + 100
    fe = SpectralFrontEnd(tile_px, bw, axis_gap=axis_gap)
    with torch.inference_mode():
        got = fe(torch.tensor(x, dtype=torch.float32)).numpy()

    w = np.hanning(tile_px)  # numpy's Hann is torch's hann_window(periodic=False)
    power = np.abs(np.fft.rfft2((x - x.mean((1, 2), keepdims=True)) * np.outer(w, w))) ** 2
    # The radius from torch's float32 frequencies, as the module computes it: a bin on a band
    # edge (such as 4/321 cycles/px) then falls on the same side of it.
    fy, fx = torch.fft.fftfreq(tile_px)[:, None], torch.fft.rfftfreq(tile_px)[None, :]
    band = torch.floor(torch.sqrt(fy**2 + fx**2) * tile_px / bw).long().numpy()
    fy, fx = fy.numpy() * tile_px, fx.numpy() * tile_px
    n_bands = tile_px // 2 // bw
    keep = band < n_bands
    keep[0, 0] = False
    keep &= ~(((np.abs(fy) <= axis_gap) | (np.abs(fx) <= axis_gap)) & (band >= 5)) if axis_gap else True
    means = np.stack([power[:, keep & (band == b)].mean(1) for b in range(n_bands)], 1)
    logp = np.log(means + 1e-4)
    ref = logp[:, 1:5].mean(1, keepdims=True)
    want = np.concatenate([logp - ref, ref / 10.0], 1)
    # float32 against float64: a unit-amplitude tile on an offset of 100 keeps ~5 digits
    # once centred, and band 0 averages only ~25 bins: up to ~1.4e-4 in log units there.
    # (A band's mirrored half left out or counted twice moves it by ~0.1-0.7.)
    np.testing.assert_allclose(got, want, atol=3e-4)


def test_preload_imports_torch_the_extra_modules_and_the_models_in_the_background():
    """What the QC widget asks the preload for (torch, the shipped models, and what napari
    imports on the GUI thread when a result first shows) is imported in a daemon thread: a
    fresh interpreter, since this session has imported everything already."""
    import subprocess
    import sys

    code = "\n".join([
        "import sys",
        "from napari_focusq import models",
        "assert 'torch' not in sys.modules and 'skimage.color' not in sys.modules",
        "t = models.preload(names=('fast',), also=('skimage.color.colorconv', 'pandas'))",
        "assert t.name == 'focusq-preload' and t.daemon",
        "t.join(120)",
        "print(sorted(m for m in ('torch', 'skimage.color.colorconv', 'scipy.linalg', 'pandas') if m in sys.modules))",
        "print(sorted(m.name for m in models._cache.values()))",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    imported, loaded = out.stdout.splitlines()[:2]
    assert imported == "['pandas', 'scipy.linalg', 'skimage.color.colorconv', 'torch']"
    assert loaded == "['fast']"
