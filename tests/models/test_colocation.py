"""Co-location features (thick sections, round 4) on hand-made tiles."""
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_focusq.models.colocation import FEATURES, colocation_features

IDX = {f: i for i, f in enumerate(FEATURES)}


def _blobs(seed, n=14):
    """Coarse structure: soft discs of 10-30 px radius (optical density 0..1)."""
    r = np.random.default_rng(seed)
    yy, xx = np.ogrid[:320, :320]
    m = np.zeros((320, 320))
    for _ in range(n):
        y, x = r.integers(20, 300, 2)
        m[(yy - y) ** 2 + (xx - x) ** 2 < r.integers(10, 30) ** 2] = 1
    return ndi.gaussian_filter(m, 4)


def _fine(seed):
    """A sharp fine pattern: white noise smoothed by 0.7 px (most power above 0.15 cycles/px)."""
    return ndi.gaussian_filter(np.random.default_rng(seed).standard_normal((320, 320)), 0.7)


def _tile(od):
    return torch.tensor(255 * np.exp(-od)[None], dtype=torch.float32)


def _pair(seed):
    coarse, fine = _blobs(seed), _fine(seed + 100)
    edges = np.hypot(*np.gradient(coarse))
    edges /= edges.max()
    # Same plane: the fine detail is the coarse objects' own, on their edges.
    same = 0.8 * coarse + 0.5 * edges * fine
    # A faint layer of other tissue: the same amount of fine detail, where *other* objects
    # are (a smooth envelope independent of the bulk), over the same coarse bulk.
    env = ndi.gaussian_filter(np.random.default_rng(seed + 200).random((320, 320)), 20)
    env = (env - env.min()) / (env.max() - env.min())
    other = 0.8 * coarse + fine * env * (np.std(0.5 * edges * fine) / np.std(fine * env))
    return _tile(same), _tile(other)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fine_detail_on_the_edges_correlates_more_than_independent_detail(seed):
    same, other = _pair(seed)
    fs, fo = colocation_features(torch.cat([same, other]))
    # Correlations lie in [-1, 1]. Measured on seeds 0-4: where the fine trace is (r_hg, r_pix)
    # 0.94-0.99 vs 0.04-0.44, so a margin of 0.4; how strong a window is (r_hm, rho_hm)
    # 0.95-1.00 vs 0.75-0.83, a margin of 0.1.
    for f, margin in (("r_hg", 0.4), ("r_pix", 0.4), ("r_hm", 0.1), ("rho_hm", 0.1)):
        assert fs[IDX[f]] > fo[IDX[f]] + margin, f
    # Fine detail grows with the coarse content in one plane: slope 1 (1.00-1.02 measured).
    assert abs(fs[IDX["slope_hm"]] - 1) < 0.1
    assert fo[IDX["slope_hm"]] < fs[IDX["slope_hm"]]


def test_batched_equals_one_by_one_and_flat_tiles_are_finite():
    same, other = _pair(3)
    flat = torch.full((1, 320, 320), 200.0)
    batch = colocation_features(torch.cat([same, other, flat]))
    singles = torch.cat([colocation_features(t) for t in (same, other, flat)])
    assert torch.allclose(batch, singles, atol=1e-5)  # float32 rounding only
    assert torch.isfinite(batch).all()
    assert batch.shape == (3, len(FEATURES))


def test_brightness_scale_barely_moves_the_features():
    same, _ = _pair(4)
    a, b = colocation_features(torch.cat([same, 0.6 * same]))
    # log(I + 1) is log I up to the +1 (tiles here are 90-255 grey levels): correlations are
    # scale-free, so only the +1 moves them, by far less than the 0.2 margins above.
    assert torch.allclose(a, b, atol=0.05)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="N, H, W"):
        colocation_features(torch.zeros(320, 320))
    with pytest.raises(ValueError, match="divisible"):
        colocation_features(torch.zeros(1, 300, 300))


def test_names_pick_features_in_their_order_and_unknown_names_fail():
    same, other = _pair(3)
    x = torch.cat([same, other])
    full = colocation_features(x)
    pick = ("r_pix", "r_hm")
    assert torch.equal(colocation_features(x, names=pick), full[:, [IDX[f] for f in pick]])
    with pytest.raises(ValueError, match="unknown co-location"):
        colocation_features(x, names=("r_pix", "sharpness"))


@pytest.mark.parametrize("seed", [0, 1])
def test_step_two_reads_every_second_pixel_with_the_same_windows(seed):
    same, other = _pair(seed)
    x = torch.cat([same, other])
    # The decimated tile's own features at half the pooling: the same 40-px windows.
    dec = colocation_features(x[:, ::2, ::2].contiguous(), grid=8, pool=4, coarse=2)
    assert torch.equal(colocation_features(x, step=2), dec)
    # It still tells fine detail on the edges from independent detail (where the trace sits).
    fs, fo = dec
    for f in ("r_hg", "r_pix"):
        assert fs[IDX[f]] > fo[IDX[f]] + 0.3, f
    with pytest.raises(ValueError, match="step 3"):
        colocation_features(x, step=3)


# ------------------------------------------------------------------ the fast front end's option
def test_the_coloc_option_appends_features_and_is_recorded(tmp_path):
    from napari_focusq.models import load_model, new_model
    from napari_focusq.models.colocation import FRONT_END_FEATURES

    arch = {"quadrants": True, "axis_gap": 2, "blue": True}
    torch.manual_seed(0)
    plain = new_model("fast", config=arch, device="cpu")
    with_c = new_model("fast", config={**arch, "coloc": True}, device="cpu")
    assert "coloc" not in plain.meta["arch_config"]  # files without the option stay as they were
    assert with_c.meta["arch_config"]["coloc"] is True
    tiles = np.random.default_rng(5).integers(0, 256, (3, 320, 320, 3), dtype=np.uint8)
    f0 = plain.module.features(plain.prepare(tiles))
    f1 = with_c.module.features(with_c.prepare(tiles))
    n = f0.shape[1]
    assert f1.shape[1] == n + len(FRONT_END_FEATURES)
    assert torch.equal(f1[:, :n], f0)  # the band profile is untouched, bit for bit
    path = with_c.save(tmp_path / "coloc.safetensors")
    again = load_model(path)
    assert again.meta["arch_config"]["coloc"] is True
    np.testing.assert_array_equal(again.predict(tiles), with_c.predict(tiles))


def test_a_stepped_option_is_recorded_and_reads_every_second_pixel(tmp_path):
    from napari_focusq.models import load_model, new_model
    from napari_focusq.models.colocation import FRONT_END_FEATURES

    arch = {"quadrants": True, "axis_gap": 2, "blue": True}
    m = new_model("fast", config={**arch, "coloc": 2}, device="cpu")
    assert m.meta["arch_config"]["coloc"] == 2 and m.module.front.step == 2
    tiles = np.random.default_rng(7).integers(0, 256, (2, 320, 320, 3), dtype=np.uint8)
    f = m.module.features(m.prepare(tiles))
    green = torch.from_numpy(tiles[..., 1].astype(np.float32))
    assert torch.equal(f[:, -len(FRONT_END_FEATURES):], colocation_features(green, step=2, names=FRONT_END_FEATURES))
    again = load_model(m.save(tmp_path / "coloc2.safetensors"))
    assert again.module.front.step == 2
    np.testing.assert_array_equal(again.predict(tiles), m.predict(tiles))


def test_shipped_weights_record_their_front_end():
    from napari_focusq.models import load_model
    from napari_focusq.models.colocation import ColocationFrontEnd
    from napari_focusq.training.recipes import BRIGHTFIELD_ARCH

    # Brightfield ships with the co-location features (round 4) at every second pixel (round
    # 5), as its recipe trains them; fluorescence's file has no "coloc" and builds the front
    # end it was trained with.
    bf = load_model("fast")
    assert bf.meta["arch_config"]["coloc"] == 2 and BRIGHTFIELD_ARCH["coloc"] == 2
    assert isinstance(bf.module.front, ColocationFrontEnd) and bf.module.front.step == 2
    assert bf.meta["training"]["config"]["layered_hinge"] == 0.8
    # 15 heads since thick sections round 7, as the recipe's front end says (fluorescence: 5)
    assert bf.meta["arch_config"]["heads"] == BRIGHTFIELD_ARCH["heads"] == len(bf.module.weights[0]) == 15
    fl = load_model("fast-fluorescence", modality="fluorescence")
    assert "coloc" not in fl.meta["arch_config"]
    assert not isinstance(fl.module.front, ColocationFrontEnd) and len(fl.module.weights[0]) == 5


def test_a_file_without_the_option_reads_as_before(tmp_path):
    """Checkpoints written before round 4 (no "coloc" in arch_config) build today's front end
    and read bit for bit as a module built without the option."""
    from napari_focusq.models import load_model
    from napari_focusq.models.fast import FastFocusNet

    fl = load_model("fast-fluorescence", modality="fluorescence")
    ref = FastFocusNet(**{**fl.meta["arch_config"], "hidden": tuple(fl.meta["arch_config"]["hidden"])})
    ref.load_state_dict(fl.module.state_dict())
    x = torch.from_numpy(np.random.default_rng(6).random((4, 320, 320), dtype=np.float32) * 255)
    with torch.inference_mode():
        assert torch.equal(fl.module.cpu()(x), ref(x))
