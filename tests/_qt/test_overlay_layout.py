"""Readable overlay (clear at focus, hatched exclusions, one-key toggle) and a layout that fits 1000 px."""
from __future__ import annotations

import numpy as np

from napari_focusq.napari import layers as L

TIMEOUT_MS = 120_000


def test_colormap_clear_at_focus_growing_to_a_warning():
    cmap = L.defocus_colormap()
    um = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0])
    rgba = cmap.map((um - L.CONTRAST_UM[0]) / (L.CONTRAST_UM[1] - L.CONTRAST_UM[0]))
    assert rgba[0, 3] == 0  # in focus: the tissue is not shaded at all
    assert np.all(np.diff(rgba[:, 3]) > 0)  # ever more opaque with defocus
    # lightness (Rec. 709 luma) falls monotonically: the order reads without hue (colour-blind safe)
    luma = rgba[:, :3] @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luma) < 0)
    # no blue-dominant colour: blue is kept for exclusions
    assert np.all(rgba[:, 2] <= rgba[:, 0])


def test_hatch_outlines_regions_and_stays_on_the_slide():
    from napari_focusq.scoring.focusmap import FocusMap

    ex = np.zeros((3, 4), bool)
    ex[1, 1:3] = True
    ex[2, 3] = True  # the bottom-right tile overhangs the image
    fm = FocusMap(np.ones((3, 4)), np.ones((3, 4)), tile_size_px=100, image_shape=(250, 330), pixel_size_um=0.5,
                  modality="brightfield", model="m")
    k = 10
    h = L.hatch_rgba(ex, fm, k=k, step=4)
    assert h.shape == (30, 40, 4) and h.dtype == np.uint8
    on = h[..., 3] > 0
    tile_on = on.reshape(3, k, 4, k).any(axis=(1, 3))
    np.testing.assert_array_equal(tile_on, ex)  # only excluded tiles carry marks
    block = on[10:20, 10:30]  # the two-tile region: one outline around both, no line between them
    assert block[0].all() and block[-1].all() and block[:, 0].all() and block[:, -1].all()
    assert not block[1:-1, 9:11].all()
    # tile (2, 3) covers level-0 y 200-300, x 300-400; the image ends at 250 and 330
    assert not on[25:, :].any() and not on[20:30, 33:].any() and on[20:25, 30:33].any()


def test_overlay_layers_toggle_and_deblur_progress(qc, qtbot, notes):
    from napari_focusq.progress import Progress

    viewer, w = qc
    assert w.score() is not None
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    heat, hatch, lab = viewer.layers["Defocus (µm)"], viewer.layers[L.HATCH_NAME], viewer.layers["Excluded tiles"]
    assert heat.opacity == 1.0 and heat.colormap.name == L.COLORMAP_NAME and lab.opacity == 0.0
    assert heat.colorbar.visible and heat.name_overlay.visible  # the bar's label: "Defocus (µm)"
    k = L.HATCH_PX
    marks = (np.asarray(hatch.data)[..., 3] > 0).reshape(*lab.data.shape[:1], k, lab.data.shape[1], k).any(axis=(1, 3))
    np.testing.assert_array_equal(marks, (lab.data > 0) & marks)  # marks only on excluded tiles
    r, c = map(int, np.argwhere(w.fmap.scored & (lab.data == 0))[0])
    w.toggle_tile(r, c)
    assert (np.asarray(hatch.data)[r * k:(r + 1) * k, c * k:(c + 1) * k, 3] > 0).any()  # follows the edit
    w.undo()
    assert not (np.asarray(hatch.data)[r * k:(r + 1) * k, c * k:(c + 1) * k, 3] > 0).any()

    w.toggle_overlay()  # H: the tissue alone
    assert not heat.visible and not hatch.visible
    w.toggle_overlay()
    assert heat.visible and hatch.visible

    w._on_event(Progress("deblur", 0, 1, "de-blurring"))
    assert w.progress_bar.maximum() == 0  # busy, not frozen at 0 %
    w._on_event(Progress("deblur", 1, 1, "done"))
    assert w.progress_bar.maximum() == 1 and w.progress_bar.value() == 1


def test_docks_fit_a_1000_px_screen_and_export_opens_next_to_the_slide(qc, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer, w = qc
    _, tw = viewer.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    _, rw = viewer.window.add_plugin_dock_widget("napari-focusq", "Review slides")
    for widget in (w, tw, rw):
        # the minimum a dock needs; the rest scrolls (menu bar, title bars and margins take ~150 px)
        assert widget.minimumSizeHint().height() <= 700, (type(widget).__name__, widget.minimumSizeHint())
    # no sideways scrolling: the docks are as wide as their content needs
    assert tw.minimumSizeHint().width() >= tw.plots.minimumSizeHint().width()
    # machine-learning settings are folded away; the pixel size is not
    assert not tw.advanced.isExpanded() and tw.advanced.content().maximumHeight() == 0  # folded: no room taken
    assert tw.epochs.parent() is not None and tw.advanced.content().isAncestorOf(tw.epochs)
    assert not tw.advanced.content().isAncestorOf(tw.pixel_size) and tw.pixel_size.isVisibleTo(tw)

    assert w.score() is not None
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    slide = tmp_path / "slides" / "case-7.svs"
    slide.parent.mkdir()
    slide.write_bytes(b"")
    w.fmap.source = str(slide)
    seen = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a: seen.append(a[2]) or "")
    w.export_box._export_dialog()
    assert seen == [str(slide.parent)]


def test_training_pixel_size_workload_and_time_left(make_napari_viewer_proxy, tmp_path):
    from napari_focusq.progress import Progress

    viewer = make_napari_viewer_proxy()
    _, tw = viewer.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    d = tmp_path / "imgs"
    d.mkdir()
    from PIL import Image

    for n in ("a.png", "b.png", "c.png", "d.png"):
        Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(d / n)
    tw.folder.setText(str(d))
    tw.out.setText(str(tmp_path / "m.safetensors"))
    tw.epochs.setValue(10)
    tw.samples.setValue(50)
    assert "4 images (1 kept aside" in tw.workload.text() and "3 × 50" not in tw.workload.text()
    assert f"{3 * 50 * 10:,} tile passes" in tw.workload.text()
    tw.pixel_size.setValue(0.25)
    cfg = tw.config()
    assert cfg.pixel_sizes == {n: 0.25 for n in ("a.png", "b.png", "c.png", "d.png")}
    tw._first_epoch = None
    assert tw._time_left(Progress("train", 1, 10)) == ""  # the first epoch pays for start-up
    tw._first_epoch = (1, tw._first_epoch[1] - 20.0)  # as if epoch 1 ended 20 s before epoch 2
    assert tw._time_left(Progress("train", 2, 10)) in (" · about 2 min left", " · about 3 min left")
