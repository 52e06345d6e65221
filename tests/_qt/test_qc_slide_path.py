"""Focus QC on the slide pipeline: a file-backed layer is scored from its file's pyramid, and
a cancel stops the decode threads, not only the event stream."""
from __future__ import annotations

import threading

import numpy as np
import pytest

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """The sample slide as a JPEG-tiled OME-TIFF pyramid that says 0.25 µm/px (a "40x" scan):
    level 1 is the 0.5 µm/px level the model reads, levels 2-3 are coarser still."""
    import tifffile

    from napari_focusq.io.formats import open_image, sample_slide_path

    with open_image(sample_slide_path()) as src:
        img = src.read_plane()
    levels = [img]
    while max(levels[-1].shape[:2]) > 400:
        levels.append(levels[-1][::2, ::2])
    path = tmp_path_factory.mktemp("slides") / "pyramid.ome.tif"
    opts = dict(tile=(256, 256), compression="jpeg", photometric="rgb")
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(img, subifds=len(levels) - 1, metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25,
                                                         "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}, **opts)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, **opts)
    return path


@pytest.fixture
def reads(monkeypatch):
    """Every ImageSource.read_region call, as (level, h, w, thread name), in call order."""
    from napari_focusq.io.source import ImageSource

    got = []
    real = ImageSource.read_region

    def read_region(self, y0, x0, h, w, *, level=0, z=None):
        got.append((level, h, w, threading.current_thread().name))
        return real(self, y0, x0, h, w, level=level, z=z)

    monkeypatch.setattr(ImageSource, "read_region", read_region)
    return got


def test_file_backed_layer_scored_through_the_slide_path(make_napari_viewer_proxy, qtbot, notes, pyramid, reads,
                                                         model_path):
    from napari_focusq.scoring.pipeline import score_slide

    viewer = make_napari_viewer_proxy()
    viewer.open(str(pyramid), plugin="napari-focusq")
    layer = viewer.layers[pyramid.name]
    assert layer.multiscale and len(layer.data) == 4
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    w.add_model(str(model_path))
    assert w.pixel_size.value() == pytest.approx(0.25)
    reads.clear()  # opening the layer reads nothing through read_region; the score does
    worker = w.score()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    assert not notes["error"], notes["error"]
    fmap = w.fmap
    assert fmap.extra["read_from"] == "file" and fmap.source == str(pyramid)
    # Level 0 (2967 x 2220 px at 0.25 µm) is never read: tissue comes from level 1 (the
    # coarsest at least 1024 px long), tiles from level 1 (0.5 µm/px), in strips of tiles.
    assert reads and {lv for lv, *_ in reads} == {1}, sorted(set(reads))
    assert fmap.extra["level"] == 1
    tile_reads = [r for r in reads if r[3] != "MainThread" and not r[3].startswith("Dummy")]
    assert all(h <= 321 for _, h, _, _ in tile_reads[1:])  # one tile row per strip after the thumbnail
    # The same numbers as the CLI's score_slide on the file.
    ref = score_slide(pyramid, model=str(model_path))
    np.testing.assert_array_equal(fmap.defocus_um, ref.defocus_um)
    from napari_focusq.napari.edge_tiles import whole_tiles_grid

    # the layer draws the whole tiles; those the slide's edge cuts are drawn by the edge layer
    np.testing.assert_array_equal(viewer.layers["Defocus (µm)"].data, whole_tiles_grid(ref))


def test_running_heatmap_stays_over_the_slide(make_napari_viewer_proxy, qtbot, notes, pyramid, model_path):
    """While scoring, tiles the slide's edge cuts stay out of the growing heatmap (one pixel a
    tile would draw them whole, past the edge); the result draws them at their true size."""
    from napari_focusq.napari.edge_tiles import EDGE_NAME, partial_tiles

    viewer = make_napari_viewer_proxy()
    viewer.open(str(pyramid), plugin="napari-focusq")
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    w.add_model(str(model_path))
    seen = []
    worker = w.score()
    worker.yielded.connect(lambda ev: seen.append(np.array(w.runner.job.place.running.data))
                           if w.runner.job is not None and w.runner.job.place.running is not None else None)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    assert not notes["error"], notes["error"]
    cut = partial_tiles(w.fmap)[0]
    scored = np.isfinite(w.fmap.defocus_um)
    assert (cut & scored).any() and (~cut & scored).any()  # the slide has scored tiles of both kinds
    assert seen and np.isfinite(seen[-1]).any()
    assert all(not np.isfinite(grid[cut]).any() for grid in seen)
    assert len(viewer.layers[EDGE_NAME].data) == int((cut & scored).sum())


def test_cancel_stops_the_decoders(make_napari_viewer_proxy, qtbot, notes, model_path, monkeypatch):
    """Cancel mid-run: no strip read starts after cancel(); only the reads the two decode
    threads already had in hand finish (counted, not timed)."""
    from napari_focusq.io.arrays import LevelsSource
    from napari_focusq.io.formats import open_image, sample_slide_path
    from napari_focusq.progress import drive
    from napari_focusq.scoring.viewer_source import DECODE_THREADS, iter_score_layer

    with open_image(sample_slide_path()) as src:
        img = src.read_plane()
    row = np.concatenate([img, img[:, ::-1], img], 1)
    big = np.concatenate([row, row[::-1]], 0)  # 2 x 3 copies: ~190 tissue tiles in ~50 strips
    lock = threading.Lock()
    calls = {"n": 0, "after_cancel": 0}
    reached, cancelled = threading.Event(), threading.Event()
    real = LevelsSource.read_region

    def read_region(self, *a, **kw):
        with lock:
            calls["n"] += 1
            calls["after_cancel"] += cancelled.is_set()
            n = calls["n"]
        if n >= 10 and not cancelled.is_set():
            # The user presses Cancel while this read is in hand: hold it until they have.
            reached.set()
            cancelled.wait(60)
        return real(self, *a, **kw)

    monkeypatch.setattr(LevelsSource, "read_region", read_region)
    # Strips the whole plane takes, read without a cancel.
    cancelled.set()
    drive(iter_score_layer(big, {}, multiscale=False, pixel_size_um=0.5, name="big", model=str(model_path)))
    n_full, calls["n"], calls["after_cancel"] = calls["n"], 0, 0
    cancelled.clear()

    viewer = make_napari_viewer_proxy()
    viewer.add_image(big, name="in memory", rgb=True, metadata={"pixel_size_um": 0.5})
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    w.add_model(str(model_path))
    worker = w.score()
    qtbot.waitUntil(reached.is_set, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):  # connected before the run can end
        w.cancel()
        at_cancel = calls["n"]
        cancelled.set()
    assert calls["after_cancel"] == 0, calls  # every later read was refused before it began
    assert at_cancel <= calls["n"] <= 10 + DECODE_THREADS - 1 < n_full, (calls, n_full)
    assert "cancelled" in notes["info"][-1] and not notes["error"], notes
    assert not w.busy and w.fmap is None and w.score_btn.isEnabled()
    assert [ly.name for ly in viewer.layers] == ["in memory"]
