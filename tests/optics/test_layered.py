"""Thick-section (layered) simulation: physics and the best-plane label."""
from __future__ import annotations

import numpy as np
import pytest

from napari_focusq.config import Optics
from napari_focusq.optics.layered import (
    Layer,
    best_plane,
    layer_weights,
    optical_density,
    random_specimen,
    simulate_layered,
)
from napari_focusq.optics.psf import OpticsError, defocus_psf, simulate_defocus


def _tissue(seed, shape=(96, 96, 3)):
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    od = gaussian_filter(rng.random(shape[:2]), 1.5)
    od = (od - od.min()) / (od.max() - od.min())
    rgb = 255 * np.exp(-od[..., None] * np.array([0.6, 1.2, 0.5]))
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("z", [0.0, 0.8, 2.0, 4.5])
def test_each_layers_psf_sums_to_one(z):
    # Every layer is blurred by the PSF of its own distance to the focal plane; each of those
    # conserves light (1e-9: float64 sums of a few thousand terms).
    optics = Optics.for_modality("brightfield")
    for lam in optics.wavelengths_um:
        psf = defocus_psf(z, pixel_size_um=0.5, wavelength_um=lam, na=optics.na, n=optics.n)
        assert abs(psf.sum() - 1.0) < 1e-9


def test_blank_glass_stays_white():
    # Layers of empty glass absorb nothing at any depth: unit-sum PSFs keep them white.
    glass = np.full((64, 64, 3), 255, np.uint8)
    out, _ = simulate_layered([Layer(glass, 0.0), Layer(glass, 3.0, 0.4)], 1.2, pixel_size_um=0.5)
    assert np.all(out == 255)


@pytest.mark.parametrize("modality", ["brightfield", "fluorescence"])
def test_single_layer_at_depth_zero_is_the_thin_simulator(modality):
    img = _tissue(1) if modality == "brightfield" else _tissue(1)[..., 1].astype(np.float32) * 7.0
    img[0, 0] = 3  # a dark pixel above the 1/255 floor of optical density
    for z in (0.0, 1.5, 3.0):
        got, label = simulate_layered([Layer(img, 0.0)], z, pixel_size_um=0.5, modality=modality)
        want = simulate_defocus(img, z, pixel_size_um=0.5, modality=modality)
        assert label == pytest.approx(z)
        # The thin simulator blurs uint8 in float32, the layered one in float64: rounding
        # may differ by one grey level where a value sits on .5 (float: 1e-4 relative).
        if modality == "brightfield":
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_optical_densities_add():
    a, b = _tissue(2).astype(np.float64), _tissue(3).astype(np.float64)
    a, b = np.clip(a, 1, 255), np.clip(b, 1, 255)
    for za, zb, wb in ((0.0, 0.0, 1.0), (0.0, 2.0, 0.3), (1.5, 4.0, 0.45)):
        out, _ = simulate_layered([Layer(a, za), Layer(b, zb, wb)], 0.0, pixel_size_um=0.5)
        # Each layer alone (its optical density scaled by its weight) at its own distance.
        ta = simulate_defocus(a, za, pixel_size_um=0.5)
        tb = simulate_defocus(255 * np.exp(-wb * optical_density(b)), zb, pixel_size_um=0.5)
        # Optical density of the whole = sum of the layers' (1e-9: float64 round-off).
        np.testing.assert_allclose(optical_density(out), optical_density(ta) + optical_density(tb),
                                   atol=1e-9)
    # In focus, the weights scale each layer's optical density exactly.
    out, _ = simulate_layered([Layer(a, 0.0), Layer(b, 0.0, 0.25)], 0.0, pixel_size_um=0.5)
    sharp_a = simulate_defocus(a, 0.0, pixel_size_um=0.5)
    sharp_b = simulate_defocus(255 * np.exp(-0.25 * optical_density(b)), 0.0, pixel_size_um=0.5)
    np.testing.assert_allclose(optical_density(out), optical_density(sharp_a) + optical_density(sharp_b), atol=1e-9)


def test_fluorescence_emission_adds():
    a = _tissue(4)[..., 0].astype(np.float64)
    b = _tissue(5)[..., 1].astype(np.float64)
    out, _ = simulate_layered([Layer(a, 0.0), Layer(b, 2.5, 0.2)], 0.5, pixel_size_um=0.5, modality="fluorescence")
    want = (simulate_defocus(a, 0.5, pixel_size_um=0.5, modality="fluorescence")
            + simulate_defocus(0.2 * b, 2.0, pixel_size_um=0.5, modality="fluorescence"))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-9)  # float64 round-off only


def test_best_plane_on_hand_made_cases():
    assert best_plane([3.0], [1.0]) == 3.0
    # A faint layer (less than half the density) does not move the best plane off the bulk.
    assert best_plane([0.0, 2.0], [1.0, 0.4]) == 0.0
    assert best_plane([2.0, 0.0], [0.4, 1.0]) == 0.0
    # Two equal halves: the midpoint, as the median of an even count.
    assert best_plane([0.0, 2.0], [1.0, 1.0]) == 1.0
    # Three layers: the middle of the weight, not of the depths.
    assert best_plane([0.0, 1.0, 4.0], [0.2, 0.2, 1.0]) == 4.0
    assert best_plane([0.0, 1.0, 4.0], [0.3, 0.3, 0.3]) == 1.0
    assert best_plane([0.0, 1.0, 4.0, 5.0], [0.4, 0.2, 0.3, 0.1]) == 1.0
    with pytest.raises(OpticsError):
        best_plane([0.0, 1.0], [0.0, 0.0])
    with pytest.raises(OpticsError):
        best_plane([0.0, 1.0], [1.0])


def test_label_is_distance_to_the_od_weighted_median():
    dark, pale = _tissue(6), _tissue(7)
    pale = (255 - (255 - pale.astype(int)) // 4).astype(np.uint8)  # about a quarter of the density
    w = layer_weights([Layer(dark, 0), Layer(pale, 0)])
    assert w[1] < 0.4 * w[0]
    # A faint sharp layer at the focal plane over a bulk 2.5 µm away: 2.5 µm out of focus.
    _, label = simulate_layered([Layer(dark, 2.5), Layer(pale, 0.0, 1.0)], 0.0, pixel_size_um=0.5)
    assert label == pytest.approx(2.5)
    # The same pale layer made dense enough to outweigh the bulk takes the best plane with it.
    _, label = simulate_layered([Layer(dark, 2.5), Layer(dark, 0.0, 1.2)], 0.0, pixel_size_um=0.5)
    assert label == pytest.approx(0.0)
    # An in-focus bulk under faint blurred layers is in focus.
    _, label = simulate_layered([Layer(dark, 1.0), Layer(pale, 3.0, 0.3), Layer(pale, 5.0, 0.3)], 1.0,
                                pixel_size_um=0.5)
    assert label == pytest.approx(0.0)


def test_random_specimen_reports_the_defocus_asked_for():
    rng = np.random.default_rng(0)
    bulk, extras = _tissue(8), [_tissue(9), _tissue(10)]
    nearer = 0
    for z in (0.0, 0.5, 2.0, 5.0) * 5:
        layers, focus = random_specimen(bulk, extras, z, rng)
        depths = [L.depth_um for L in layers]
        assert max(depths) - min(depths) <= 6.0
        assert all(0.05 <= L.weight <= 0.45 for L in layers[1:])
        _, label = simulate_layered(layers, focus, pixel_size_um=0.5)
        assert label == pytest.approx(z, abs=1e-9)
        if z > 0:
            nearer += np.mean([abs(focus - d) for d in depths[1:]]) < abs(focus - depths[0])
    # near=0.7: the faint layers sit nearer focus than the bulk in most specimens (15 draws;
    # at least 8 holds unless the seeded draws change).
    assert nearer >= 8


def test_bad_layers_are_refused():
    a = _tissue(1)
    with pytest.raises(OpticsError, match="share one shape"):
        simulate_layered([Layer(a, 0), Layer(a[:50], 1)], 0.0, pixel_size_um=0.5)
    with pytest.raises(OpticsError, match="at least one layer"):
        simulate_layered([], 0.0, pixel_size_um=0.5)
    with pytest.raises(OpticsError, match="non-negative"):
        simulate_layered([Layer(a, 0, -1.0)], 0.0, pixel_size_um=0.5)


def test_simulate_defocus_layered_mode():
    bulk, other = _tissue(11), _tissue(12)
    # No further layers: the thin simulator, as before.
    np.testing.assert_array_equal(simulate_defocus(bulk, 2.0, pixel_size_um=0.5, layers=[]),
                                  simulate_defocus(bulk, 2.0, pixel_size_um=0.5))
    # A faint layer 3 µm deep: the bulk stays the best plane, so z = 0 leaves the bulk sharp
    # and blurs the faint layer by 3 µm; z = +3 focuses on the faint layer, blurring the bulk.
    faint = [Layer(other, 3.0, 0.3)]
    at0 = simulate_defocus(bulk, 0.0, pixel_size_um=0.5, layers=faint)
    want0, label0 = simulate_layered([Layer(bulk, 0.0), *faint], 0.0, pixel_size_um=0.5)
    np.testing.assert_array_equal(at0, want0)
    assert label0 == 0.0
    at3 = simulate_defocus(bulk, 3.0, pixel_size_um=0.5, layers=faint)
    want3, label3 = simulate_layered([Layer(bulk, 0.0), *faint], 3.0, pixel_size_um=0.5)
    np.testing.assert_array_equal(at3, want3)
    assert label3 == 3.0
    # The sign matters in a thick section: -3 keeps both layers out of focus.
    assert not np.array_equal(simulate_defocus(bulk, -3.0, pixel_size_um=0.5, layers=faint), at3)
    with pytest.raises(OpticsError, match="shape"):
        simulate_defocus(bulk, 1.0, pixel_size_um=0.5, layers=[Layer(other[:40], 1.0)])


def test_training_tiles_with_a_layered_share(tmp_path):
    # Real crops of two images; half the tiles thick sections: labels stay within the range
    # asked for, and a layered share changes tiles without changing the thin ones' draw.
    import tifffile

    from napari_focusq.progress import drive
    from napari_focusq.training.config import TrainConfig, TrainingError
    from napari_focusq.training.data import iter_dataset

    paths = []
    for i in range(2):
        p = tmp_path / f"t{i}.tif"
        tifffile.imwrite(p, np.tile(_tissue(20 + i, (160, 160, 3)), (3, 3, 1)), photometric="rgb",
                         resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
        paths.append(str(p))
    cfg = TrainConfig(images=paths, layered=0.5, min_tissue=0.0, z_max_um=5.0)
    X, Z, S = drive(iter_dataset(paths, 12, cfg, 0, "data"))
    assert X.shape == (24, 320, 320, 3) and X.dtype == np.uint8
    assert Z.min() >= 0 and Z.max() <= 5.0 + 1e-6
    thin = TrainConfig(images=paths, layered=0.0, min_tissue=0.0, z_max_um=5.0)
    X0, Z0, _ = drive(iter_dataset(paths, 12, thin, 0, "data"))
    assert not np.array_equal(X, X0)
    with pytest.raises(TrainingError, match="layered"):
        TrainConfig(images=paths, layered=1.5)
