"""Issue 20 follow-ups (brief R20): each test failed on main at f6ad43f."""
from __future__ import annotations

import numpy as np
import pytest

TIMEOUT_MS = 120_000


def test_overlay_key_is_unbound_when_the_dock_closes(make_napari_viewer_proxy):
    from napari_focusq.napari.layers import TOGGLE_KEY

    viewer = make_napari_viewer_proxy()
    real = getattr(viewer, "__wrapped__", viewer)
    dock, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    assert TOGGLE_KEY in {str(k).lower() for k in real.keymap}
    viewer.window.remove_dock_widget(dock)  # what the dock's close button does
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    assert TOGGLE_KEY not in {str(k).lower() for k in real.keymap}
    # its clicks and hover go with it: a closed panel must not toggle tiles
    assert w.review.on_click not in real.mouse_drag_callbacks and w.review.on_hover not in real.mouse_move_callbacks


# ---------------------------------------------------------------- partial edge tiles
PX = 0.499


def _edge_map(shape=(4, 4), t=300.0, image_shape=(1000, 1000), origin=(0.0, 0.0)):
    from napari_focusq.scoring.focusmap import FocusMap

    rows, cols = shape
    d = np.add.outer(np.linspace(0, 2.5, rows), np.linspace(0, 2.5, cols)).astype(np.float32)  # 0-5 µm
    d[0, 0] = np.nan  # glass
    return FocusMap(d, np.where(np.isfinite(d), 0.9, 0.0), tile_size_px=t, image_shape=image_shape,
                    pixel_size_um=PX, modality="brightfield", model="m", origin_px=origin, source="slide.tif")


def test_partial_tiles_extents_end_at_the_image_edge():
    from napari_focusq.napari.edge_tiles import partial_tiles, whole_tiles_grid

    fm = _edge_map(origin=(-50.0, 0.0))  # a crop: the first row starts 50 px before the image
    cut, ext = partial_tiles(fm)
    # rows: -50..250 (cut at 0), ..., 850..1150 (cut at 1000); cols: 0..300, ..., 900..1200 (cut at 1000)
    np.testing.assert_array_equal(cut, np.array([[1, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1], [1, 1, 1, 1]], bool))
    y0, x0, y1, x1 = ext.T  # tile units from the grid's start; level-0 = origin + units * t
    assert np.allclose(-50 + np.r_[y0, y1] * 300, np.r_[[0] * 4 + [250, 550] + [850] * 4,
                                                         [250] * 4 + [550, 850] + [1000] * 4])
    assert x1.max() * 300 == 1000 and x0.min() == 0
    g = whole_tiles_grid(fm)
    assert np.isnan(g[cut]).all() and np.array_equal(g[~cut], fm.defocus_um[~cut])
    assert np.isfinite(fm.defocus_um[cut]).sum() == 9  # the map itself is unchanged


def test_edge_tiles_drawn_only_over_the_slide(make_napari_viewer_proxy, tmp_path):
    from conftest import shot
    from napari_focusq.io.formats import open_image, sample_slide_path
    from napari_focusq.napari import layers as L
    from napari_focusq.napari.edge_tiles import EDGE_NAME

    with open_image(sample_slide_path()) as s:
        img = np.asarray(s.read_plane())[2000:3000, 650:1650]
    viewer = make_napari_viewer_proxy()
    image = viewer.add_image(img, rgb=True, name="slide", scale=(PX, PX), units=("µm", "µm"),
                             metadata={"pixel_size_um": PX})
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    fm = _edge_map()  # tiles of 300 px on 1000 px: the last row and column are a third of a tile
    ex = np.isfinite(fm.defocus_um) & (fm.defocus_um > 3.5)
    w.show_stored(fm, image, excluded=ex, threshold_um=2.0)
    viewer.reset_view()
    shot(viewer, "edge_tiles_after.png", tmp_path)  # the same code on main made edge_tiles_before.png

    edge = viewer.layers[EDGE_NAME]
    heat = viewer.layers[L.HEATMAP_NAME]
    end = (1000 - 0.5) * PX  # world position of the image's far edge (pixel k spans k ± 0.5)
    start = -0.5 * PX
    assert len(edge.data) == 7  # the 4 + 4 - 1 cut tiles, all scored
    corners = np.array([[heat.data_to_world(p) for p in rect] for rect in edge.data])
    assert np.isclose(corners[..., 0].max(), end) and np.isclose(corners[..., 1].max(), end)
    assert corners.min() >= start - 1e-9
    # the heatmap draws the whole tiles only: its last row and column are transparent
    assert np.isnan(heat.data[-1]).all() and np.isnan(heat.data[:, -1]).all()
    assert np.array_equal(heat.metadata["focusmap"].defocus_um, fm.defocus_um, equal_nan=True)
    # a face colour per tile, from the heatmap's colour map: the 5 µm corner is the darkest, most opaque
    faces = np.asarray(edge.face_color)
    assert faces[:, 3].max() == pytest.approx(L.defocus_colormap().map(np.array([5.0 / 6.0]))[0, 3], abs=1e-3)
    # the hatch never runs past the slide either
    hatch = viewer.layers[L.HATCH_NAME]
    on = np.argwhere(np.asarray(hatch.data)[..., 3] > 0)
    assert on.size and ex[-1].any()
    far = np.array([hatch.data_to_world(p + 0.5) for p in on])  # pixel far corners
    assert far.max() <= end + 1e-9
    # the one-key toggle takes the edge tiles along
    w.toggle_overlay()
    assert not heat.visible and not edge.visible and not hatch.visible
    w.toggle_overlay()
    assert heat.visible and edge.visible


# ---------------------------------------------------------------- a review queue from a list of slides
def _queue_slides(root):
    import tifffile

    from napari_focusq.io.formats import open_image, sample_slide_path

    with open_image(sample_slide_path()) as s:
        plane = np.asarray(s.read_plane())
    paths = []
    for i, (y, x) in enumerate(((2000, 650), (1500, 500), (2300, 1100))):
        p = root / f"q{i}.tif"
        tifffile.imwrite(p, plane[y:y + 700, x:x + 700], photometric="rgb",
                         resolution=(1e4 / PX, 1e4 / PX), resolutionunit="CENTIMETER")
        paths.append(p)
    return paths


def test_review_queue_from_a_list_of_slides(make_napari_viewer_proxy, qtbot, notes, tmp_path):
    from conftest import shot
    from napari_focusq.export.results import read_results

    slides = _queue_slides(tmp_path)
    lst = tmp_path / "monday.txt"
    lst.write_text("\n".join(p.name for p in slides[:2]) + "\n")  # relative to the list, as focusq batch reads it
    out = tmp_path / "out"
    viewer = make_napari_viewer_proxy()
    _, rw = viewer.window.add_plugin_dock_widget("napari-focusq", "Review slides")
    assert rw.open_slides([lst], out), notes["error"]
    assert [(e["stem"], e["state"]) for e in rw.entries] == [("q0", "not scored"), ("q1", "not scored")]
    # the first slide to review is open, chosen in Focus QC, and can be scored here
    assert rw.entries[rw.current]["stem"] == "q0" and "q0.tif" in viewer.layers
    qc = rw.qc_widget()
    assert qc.layer_combo.currentText() == "q0.tif" and rw.score_btn.isEnabled() and not rw.accept_btn.isEnabled()
    assert "not scored" in rw.status.text()
    rw.filter.setCurrentText("not scored")
    assert len(rw.visible_order()) == 2
    rw.filter.setCurrentText("all")
    shot(viewer, "review_queue.png", tmp_path)

    # Score in the queue: the focusq score pipeline into the folder, then the stored result opens
    assert rw.score_current() is not None
    assert rw.cancel_btn.isEnabled() and not rw.score_btn.isEnabled()
    qtbot.waitUntil(lambda: not rw.busy, timeout=TIMEOUT_MS)
    e0 = next(e for e in rw.entries if e["stem"] == "q0")
    assert e0["state"] in ("pass", "fail") and e0["median_um"], notes["error"]
    assert (out / "q0.heatmap.tif").exists() and (out / "q0.tiles.geojson.zip").exists()
    assert rw.entries[rw.current]["stem"] == "q0" and qc.fmap is not None and rw.accept_btn.isEnabled()

    # the next one is scored from Focus QC: its row fills in, stored as focusq score would
    rw.next()
    assert rw.entries[rw.current]["stem"] == "q1" and qc.layer_combo.currentText() == "q1.tif"
    stored = []
    rw.runner.start = lambda job, start=rw.runner.start: stored.append(type(job).__name__) or start(job)
    assert qc.score() is not None
    # stored in the panel's worker (a second of writing, off the GUI thread), then the row fills in
    qtbot.waitUntil(lambda: not qc.busy and stored and not rw.busy, timeout=TIMEOUT_MS)
    assert stored == ["StoreResultJob"]
    e1 = next(e for e in rw.entries if e["stem"] == "q1")
    assert e1["state"] in ("pass", "fail"), notes["error"]
    assert (out / "q1.heatmap.tif").exists() and rw.entries[rw.current]["stem"] == "q1"
    rows = {r["stem"]: r for r in read_results(out / "results.tsv")}
    assert set(rows) == {"q0", "q1"} and rows["q1"]["status"] == "ok"
    assert qc.heatmap is not None and qc.heatmap in rw._opened  # moving on closes it with the slide
    shot(viewer, "review_queue_scored.png", tmp_path)

    # edits are saved the same way as for batch outputs
    rw.comment.setText("fine")
    assert rw.save("accepted") is not None
    rows = {r["stem"]: r for r in read_results(out / "results.tsv")}
    assert rows["q1"]["review"] == "accepted" and (out / "q1.review.json").exists()

    # a third slide, scoring cancelled: nothing written, the row stays "not scored"
    assert rw.open_slides([slides[2]], out)
    i = next(i for i, e in enumerate(rw.entries) if e["stem"] == "q2")
    rw.select(i)
    assert rw.score_current() is not None
    rw.cancel()
    qtbot.waitUntil(lambda: not rw.busy, timeout=TIMEOUT_MS)
    assert not list(out.glob("q2.*")) and "cancelled" in rw.status.text()
    assert next(e for e in rw.entries if e["stem"] == "q2")["state"] == "not scored"

    # reopening the folder shows the whole queue again
    assert rw.open_folder(out)
    assert sorted((e["stem"], e["state"] == "not scored") for e in rw.entries) == [
        ("q0", False), ("q1", False), ("q2", True)]


def _queued_panel(make_viewer, tmp_path, notes, n: int):
    """Review slides with ``n`` queued slides (the first open in Focus QC): (panel, Focus QC, folder)."""
    out = tmp_path / "out"
    _, rw = make_viewer().window.add_plugin_dock_widget("napari-focusq", "Review slides")
    assert rw.open_slides(_queue_slides(tmp_path)[:n], out), notes["error"]
    return rw, rw.qc_widget(), out


def test_a_result_stored_while_the_user_moves_on_keeps_them_where_they_are(make_napari_viewer_proxy, qtbot, notes,
                                                                           tmp_path, monkeypatch):
    # Focus QC's result is stored in a worker; if the user goes to the next slide meanwhile,
    # the stored row fills in and the selection stays on the slide they moved to.
    import threading

    import napari_focusq.review.slide_list as slide_list
    from napari_focusq.export.results import read_results

    rw, qc, out = _queued_panel(make_napari_viewer_proxy, tmp_path, notes, 2)
    go = threading.Event()
    real = slide_list.record_result
    monkeypatch.setattr(slide_list, "record_result", lambda *a, **k: go.wait(60) and real(*a, **k))
    assert qc.score() is not None
    # scored; storing (held): the panel says so, and nothing can be accepted yet
    qtbot.waitUntil(lambda: not qc.busy and rw.busy and "storing" in rw.status.text(), timeout=TIMEOUT_MS)
    assert not rw.accept_btn.isEnabled() and rw.cancel_btn.isEnabled()
    rw.next()
    assert rw.entries[rw.current]["stem"] == "q1"
    go.set()
    qtbot.waitUntil(lambda: not rw.busy, timeout=TIMEOUT_MS)
    assert rw.entries[rw.current]["stem"] == "q1", "the store did not pull the user back"
    assert next(e for e in rw.entries if e["stem"] == "q0")["state"] in ("pass", "fail")
    assert [r["stem"] for r in read_results(out / "results.tsv")] == ["q0"] and not notes["error"]


def test_a_result_scored_while_the_panel_is_busy_is_stored_at_once(make_napari_viewer_proxy, qtbot, notes, tmp_path,
                                                                   monkeypatch):
    # The panel's worker is scoring a queued slide: Focus QC's result is stored in the GUI
    # thread rather than waiting for it (the runner runs one job at a time).
    from napari_focusq.export.results import read_results
    from napari_focusq.napari.widgets.review import ReviewWidget

    rw, qc, out = _queued_panel(make_napari_viewer_proxy, tmp_path, notes, 1)
    started = []
    monkeypatch.setattr(rw.runner, "start", lambda job: started.append(job))
    monkeypatch.setattr(ReviewWidget, "busy", property(lambda self: True))
    assert qc.score() is not None
    qtbot.waitUntil(lambda: not qc.busy and bool(read_results(out / "results.tsv") if (out / "results.tsv").exists()
                                                  else []), timeout=TIMEOUT_MS)
    assert not started and next(e for e in rw.entries if e["stem"] == "q0")["state"] in ("pass", "fail")
    assert not notes["error"]
