"""Focus QC with the shipped models: demo bands in µm, certainty, pooled score, deblur preview, z-stacks."""
from __future__ import annotations

import numpy as np

from conftest import DATA

TIMEOUT_MS = 180_000
DEMO = "Defocus demo (0, 1, 2, 4 µm)"


def wait(qtbot, worker):
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass


def truth_per_tile(fmap, truth: np.ndarray):
    """{(row, col): the set of true |z| values over the tile's pixels} (truth may be coarser than the image)."""
    H, W = fmap.image_shape
    fy, fx = truth.shape[0] / H, truth.shape[1] / W
    out = {}
    for r in range(fmap.shape[0]):
        for c in range(fmap.shape[1]):
            y0, x0, y1, x1 = fmap.tile_bounds(r, c)
            t = truth[int(y0 * fy):max(int(np.ceil(y1 * fy)), int(y0 * fy) + 1),
                      int(x0 * fx):max(int(np.ceil(x1 * fx)), int(x0 * fx) + 1)]
            out[r, c] = np.unique(t)
    return out


def test_shipped_model_reads_demo_bands_certainty_pooled_and_deblur(make_napari_viewer_proxy, qtbot, notes):
    viewer = make_napari_viewer_proxy()
    viewer.open_sample("napari-focusq", "defocus_demo")
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    assert w.model_combo.currentData() == "default"  # the shipped model of the modality seen
    image = viewer.layers[DEMO]
    before = np.array(image.data, copy=True)
    data_obj = image.data
    wait(qtbot, w.score())
    assert not notes["error"], notes["error"]
    fmap = w.fmap
    assert fmap.modality == "brightfield" and fmap.model.startswith("fast ")

    # --- every band reads its known µm. The bands are horizontal and tile-aligned, each at
    # least two tile rows tall, and the sample's tissue runs down the whole slide: every
    # tissue tile lies wholly inside one band, and every band holds some.
    truth = truth_per_tile(fmap, np.asarray(viewer.layers["True defocus (µm)"].data))
    bands: dict[float, list[float]] = {}
    for (r, c), zs in truth.items():
        assert zs.size == 1, ((r, c), zs)
        d = fmap.defocus_um[r, c]
        if np.isfinite(d):
            bands.setdefault(float(zs[0]), []).append(float(d))
    medians = {z: float(np.median(v)) for z, v in sorted(bands.items())}
    print("band medians (µm):", {z: round(m, 2) for z, m in medians.items()},
          "tiles:", {z: len(v) for z, v in bands.items()})
    assert sorted(medians) == [0.0, 1.0, 2.0, 4.0] and all(len(v) >= 3 for v in bands.values()), bands
    # CMU-1 is a *training* image of the shipped brightfield weights (fast.json's
    # train_images), so this checks the widget end to end, not accuracy: held-out figures
    # are the benchmarks' (bench_accuracy, bench_frozen). 0.5 µm is half the spacing of
    # the 0/1/2 µm bands, so no band can pass as its neighbour; and the bands keep order.
    for z, m in medians.items():
        assert abs(m - z) <= 0.5, (z, m, bands[z])
    assert list(medians.values()) == sorted(medians.values())

    # --- certainty on the heatmap's grid, hidden; summary with pooled and uncertain figures
    heat, lab, cert = viewer.layers["Defocus (µm)"], viewer.layers["Excluded tiles"], viewer.layers["Certainty"]
    assert not cert.visible and cert.data.shape == fmap.shape
    assert np.allclose(cert.scale, heat.scale) and np.allclose(cert.translate, heat.translate)
    expected = np.where(fmap.scored, fmap.extra["certainty"], np.nan)
    np.testing.assert_allclose(cert.data, expected)
    assert np.nanmin(cert.data) >= 0 and np.nanmax(cert.data) <= 1
    assert "Certainty" not in [w.layer_combo.itemText(i) for i in range(w.layer_combo.count())]
    s = fmap.summary(w.threshold_slider.value())
    text = w.summary.text()
    assert f"pooled {s['pooled_um']:.2f} µm" in text and f"mean {s['mean_um']:.2f} µm" in text
    assert f"uncertain {s['uncertain_pct']:.1f} %" in text
    # an uncertain tile is counted as uncertain but stays included
    ok = np.argwhere(fmap.scored & (fmap.defocus_um < w.threshold_slider.value()))
    r, c = ok[0]
    fmap.extra["uncertain"] = np.zeros(fmap.shape, bool)
    fmap.extra["uncertain"][r, c] = True
    w.threshold_slider.setValue(w.threshold_slider.value() + 0.01)  # re-applies the threshold and the summary
    assert lab.data[r, c] == 0
    assert f"uncertain {100 / fmap.scored.sum():.1f} %" in w.summary.text()
    assert "(uncertain)" in w.tile_text(heat.data_to_world((r, c)))
    fmap.extra["nonfinite_px"] = np.zeros(fmap.shape, np.int32)
    fmap.extra["nonfinite_px"][r, c] = 7  # issue 19: masked NaN/inf pixels are shown, not hidden
    assert "7 NaN/inf px masked (uncertain)" in w.tile_text(heat.data_to_world((r, c)))

    # --- de-blurring preview over the 3x3 tiles at the view's centre; the data stays as it was
    r, c = 5, 3
    viewer.camera.center = tuple(heat.data_to_world((r, c)))
    y0, x0 = fmap.tile_bounds(r - 1, c - 1)[:2]
    y1, x1 = fmap.tile_bounds(r + 1, c + 1)[2:]
    assert w.preview_region() == (y0, x0, y1, x1)
    wait(qtbot, w.deblur_preview())
    assert not notes["error"], notes["error"]
    prev = viewer.layers["Deblurred preview (not data)"]
    assert prev.metadata["region_px"] == (y0, x0, y1, x1) and prev.rgb
    assert prev.data.shape == (y1 - y0, x1 - x0, 3) and prev.data.dtype == np.uint8
    assert np.allclose(prev.scale, image.scale)
    # preview pixel (0, 0) sits exactly on image pixel (y0, x0), and its last pixel on (y1-1, x1-1)
    assert np.allclose(prev.data_to_world((0, 0)), image.data_to_world((y0, x0)))
    assert np.allclose(prev.data_to_world((y1 - y0 - 1, x1 - x0 - 1)), image.data_to_world((y1 - 1, x1 - 1)))
    assert image.data is data_obj and np.array_equal(image.data, before)  # the image is never modified
    from napari_focusq.scoring.focus import variance_of_laplacian

    crop = before[y0:y1, x0:x1]
    assert variance_of_laplacian(prev.data) > 1.5 * variance_of_laplacian(crop)  # it did sharpen
    assert "not data" in notes["info"][-1]
    assert prev.name not in [w.layer_combo.itemText(i) for i in range(w.layer_combo.count())]
    assert w.deblur_btn.isEnabled() and w.score_btn.isEnabled()


def test_sharpest_plane_per_tile_best_plane_and_all_in_focus(make_napari_viewer_proxy, qtbot, notes):
    from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM
    from napari_focusq.scoring.zstack import all_in_focus, tilted_stack
    from napari_focusq.training.data import load_training_image

    img = load_training_image(DATA / "fluorescence" / "bbbc022_IXMtest_A02_s9_crop.tif", "fluorescence")
    rows, cols = 2, 3
    big = np.pad(img, ((0, rows * TILE_PX), (0, cols * TILE_PX)), mode="symmetric")[:rows * TILE_PX, :cols * TILE_PX]
    k0 = np.array([1, 2, 3])
    stack = tilted_stack(big, pixel_size_um=WORKING_PIXEL_UM, tile_px=TILE_PX, focus_plane=k0, n_planes=5,
                         dz_um=1.0)
    viewer = make_napari_viewer_proxy()
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    layer = viewer.add_image(stack, name="tilted stack", scale=(1.0, WORKING_PIXEL_UM, WORKING_PIXEL_UM),
                             translate=(0, 10.0, -5.0), units=("µm", "µm", "µm"), metadata={"pixel_size_um": WORKING_PIXEL_UM})
    assert w.layer_combo.currentText() == "tilted stack" and w.stack_box.isVisibleTo(w)
    w.per_tile.setChecked(True)
    wait(qtbot, w.score())
    assert not notes["error"], notes["error"]
    fmap = w.fmap
    assert fmap.modality == "fluorescence" and fmap.model.startswith("fast-fluorescence")
    best = fmap.extra["best_plane"]
    assert best.shape == (rows, cols) and (best == k0[None, :]).mean() >= 5 / 6, best

    heat, bp = viewer.layers["Defocus (µm)"], viewer.layers["Best plane"]
    np.testing.assert_array_equal(bp.data, np.where(best >= 0, best, np.nan))
    assert np.allclose(bp.scale, heat.scale) and np.allclose(bp.translate, heat.translate)
    # tile (r, c) of the grid layers is centred on that tile of the stack's planes
    for r, c in [(0, 0), (1, 2)]:
        centre = layer.data_to_world((0, (r + 0.5) * TILE_PX - 0.5, (c + 0.5) * TILE_PX - 0.5))[-2:]
        assert np.allclose(bp.data_to_world((r, c)), centre)
    aif = viewer.layers["All in focus"]
    assert aif.data.shape == big.shape and aif.data.dtype == stack.dtype
    np.testing.assert_array_equal(aif.data, all_in_focus(stack, fmap))
    assert np.allclose(aif.scale, layer.scale[-2:]) and np.allclose(aif.translate, layer.translate[-2:])
    y0, x0, y1, x1 = fmap.tile_bounds(0, 1)
    assert np.array_equal(aif.data[y0:y1, x0:x1], stack[best[0, 1], y0:y1, x0:x1])
    assert "best plane" in w.tile_text(heat.data_to_world((0, 1)))
    assert "Best plane" not in [w.layer_combo.itemText(i) for i in range(w.layer_combo.count())]

    # scoring again replaces the derived layers instead of piling them up
    wait(qtbot, w.score())
    names = [ly.name for ly in viewer.layers]
    assert sorted(names) == sorted(["tilted stack", "All in focus", "Best plane", "Certainty", "Defocus (µm)",
                                    "Excluded tiles", "Excluded (hatched)"]), names
