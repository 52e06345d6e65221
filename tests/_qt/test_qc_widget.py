"""Focus QC widget end to end: sample -> score in a worker -> heatmap -> click/undo -> export."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_layers import excluded_pixels, rasterize

from conftest import click

TIMEOUT_MS = 120_000


def run(qtbot, widget, start):
    """Start a job with ``start()`` and wait (no sleeping) for the worker to finish."""
    worker = start()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    return worker


def test_score_demo_heatmap_alignment_click_undo_export(qc, qtbot, notes, tmp_path, read_only_dir, model_path):
    viewer, w = qc
    image = viewer.layers["Defocus demo (0, 1, 2, 4 µm)"]
    assert w.layer_combo.currentText() == image.name
    assert w.pixel_size.value() == pytest.approx(0.499)
    assert w.model_combo.currentData() == str(model_path)  # the model just added is the one used

    events = []
    worker = w.score()
    worker.yielded.connect(events.append)
    assert w.score() is None and "already running" in notes["info"][-1]  # pressing Score twice
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    assert not notes["error"], notes["error"]
    assert any(e.stage == "score" and e.data.get("tiles") for e in events)
    assert w.score_btn.isEnabled() and not w.cancel_btn.isEnabled()

    fmap = w.fmap
    heat, lab = viewer.layers["Defocus (µm)"], viewer.layers["Excluded tiles"]
    t = 320 * 0.5 / 0.499
    assert heat.data.shape == (math.ceil(2967 / t), math.ceil(2220 / t)) == fmap.shape
    from napari_focusq.napari.edge_tiles import whole_tiles_grid

    np.testing.assert_array_equal(heat.data, whole_tiles_grid(fmap))  # cut edge tiles: their own layer
    assert tuple(heat.contrast_limits) == (0, 6) and heat.colorbar.visible
    assert np.allclose(lab.scale, heat.scale) and np.allclose(lab.translate, heat.translate)
    assert not any(ly.name.endswith("[scoring]") for ly in viewer.layers)
    # tile centres in world coordinates sit on the image's tile centres
    for r, c in [(0, 0), (4, 3), (9, 6)]:
        world = heat.data_to_world((r, c))
        assert np.allclose(image.world_to_data(world), [(r + 0.5) * t - 0.5, (c + 0.5) * t - 0.5])
    assert "µm" in w.summary.text() and "Tissue" in w.summary.text()
    # one tile with tissue and one of glass, each with its own text
    scored = [tuple(map(int, rc)) for rc in np.argwhere(fmap.scored)]
    glass = [tuple(map(int, rc)) for rc in np.argwhere(~fmap.scored)]
    assert scored and glass
    r, c = scored[len(scored) // 2]
    assert w.tile_text(heat.data_to_world((r, c))).startswith(f"{fmap.defocus_um[r, c]:.2f} µm")
    assert w.tile_text(heat.data_to_world(glass[0])).startswith("no tissue")

    # a click toggles the (scored) tile under it, and the summary follows; undo and redo restore
    viewer.layers.selection.active = heat
    before = int(lab.data[r, c])
    text = w.summary.text()
    click(viewer, heat.data_to_world((r, c)) + np.array([0.3, -0.3]) * heat.scale)
    assert lab.data[r, c] == 1 - before and lab.data.sum() == fmap.excluded(2.0).sum() + (1 - 2 * before)
    assert w.summary.text() != text
    w.undo()
    assert lab.data[r, c] == before
    w.redo()
    assert lab.data[r, c] == 1 - before
    # the threshold re-applies to every tile, in one undo step
    w.threshold_slider.setValue(0.25)
    np.testing.assert_array_equal(lab.data, fmap.excluded(0.25))
    w.undo()
    assert lab.data[r, c] == 1 - before

    paths = w.export(tmp_path)
    assert paths is not None, notes["error"]
    excluded = lab.data > 0
    feats = json.loads(paths["geojson"].read_text())["features"]
    assert np.array_equal(rasterize(feats, fmap.image_shape), excluded_pixels(fmap, excluded & fmap.scored))
    rows = paths["tiles_csv"].read_text().splitlines()
    assert len(rows) == 1 + fmap.defocus_um.size
    assert rows[0].startswith("row,col,y,x")
    res = paths["results"].read_text().splitlines()
    assert len(res) == 2 and res[0].startswith("input\tstem")
    from PIL import Image

    mask = Image.open(paths["mask"])
    assert mask.size == (round(2220 / 16), round(2967 / 16))
    assert mask.info["dpi"][0] == pytest.approx(25400 / (0.499 * 16), rel=1e-3)

    assert w.export(read_only_dir) is None and "read-only" in notes["error"][-1]
    assert list(read_only_dir.iterdir()) == []


def test_cancel_leaves_no_partial_layer(qc, qtbot, notes):
    viewer, w = qc
    worker = w.score()
    assert w.busy
    worker.yielded.connect(lambda ev: w.cancel())  # cancel at the first event
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    assert not w.busy and w.score_btn.isEnabled()
    assert "cancelled" in notes["info"][-1]
    assert [ly.name for ly in viewer.layers] == ["Defocus demo (0, 1, 2, 4 µm)", "True defocus (µm)"]


def test_bad_input_is_reported(make_napari_viewer_proxy, qtbot, notes, model_path, made_stack):
    viewer = make_napari_viewer_proxy()
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    assert w.score() is None and "choose an image layer" in notes["error"][-1]
    viewer.add_labels(np.zeros((10, 10), np.uint8), name="not an image")
    assert w.layer_combo.count() == 0 and w.score() is None

    # a z-stack without pixel size, then the sharpest slice moves the slider
    viewer.open(str(made_stack.path), plugin="napari-focusq")
    stack = viewer.layers[made_stack.path.name]
    assert w.layer_combo.currentText() == stack.name and w.stack_box.isVisibleTo(w)
    assert w.pixel_size.value() == 0
    assert w.score() is None and "no pixel size" in notes["error"][-1]
    run(qtbot, w, w.sharpest_slice)
    z = viewer.dims.current_step[0]
    assert abs(z - made_stack.best) <= 1, z  # 0.4 µm steps with photon noise
    assert "sharpest plane is z" in notes["info"][-1]

    viewer.add_image(np.zeros((1, 64, 64), np.uint16), name="one plane")
    w.layer_combo.setCurrentText("one plane")
    assert w.sharpest_slice() is None and "single plane" in notes["error"][-1]


def test_trained_checkpoint_appears_in_list(qc, tmp_path):
    import torch

    from napari_focusq.models import new_model
    from napari_focusq.napari.widgets.workers import model_registry

    viewer, w = qc
    torch.manual_seed(0)
    p = new_model("fast").save(tmp_path / "mine.safetensors")
    model_registry().add(str(p))
    assert w.model_combo.currentData() == str(p)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    n = w.model_combo.count()
    w.add_model(str(bad))
    assert w.model_combo.count() == n


def test_objective_fields_score_for_the_users_optics(qc, qtbot, notes, tmp_path):
    viewer, w = qc
    assert w.optics() is None  # the sample has no objective metadata: the model's optics
    w.na.setValue(0.45)
    w.immersion.setCurrentText("air")
    assert w.optics() == {"na": 0.45, "immersion": "air"}
    run(qtbot, w, w.score)
    assert not notes["error"], notes["error"]
    o = w.fmap.extra["optics"]
    assert o["na"] == 0.45 and o["source"]["na"] == "user" and o["mapped_from_model_optics"]
    assert viewer.layers["Defocus (µm)"].metadata["optics"]["na"] == 0.45
    assert any("NA 0.45" in n for n in notes["info"])
    assert w.na.value() == 0.45  # the result layers did not reset the entry
    # The export records the objective too.
    paths = w.export(tmp_path)
    from napari_focusq.export.results import read_results

    assert read_results(paths["results"])[-1]["na"] == "0.450"
    assert json.loads(paths["geojson"].read_text())["focusq"]["optics"]["na"] == 0.45
    viewer.screenshot(str(tmp_path / "objective.png"), canvas_only=False)
    # An impossible objective is refused before any work starts.
    w.na.setValue(1.3)
    assert w.score() is None and "immersion" in notes["error"][-1]


def test_widget_scores_through_one_score_config(qc, qtbot, notes, monkeypatch):
    """The dock builds the same validated ScoreConfig as `focusq score` and batch (issue 17)."""
    import napari_focusq.napari.widgets.qc as qc_module
    from napari_focusq.config import ScoreConfig

    viewer, w = qc
    seen, real = [], qc_module.ScoreJob
    monkeypatch.setattr(qc_module, "ScoreJob", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    w.na.setValue(0.45)
    run(qtbot, w, w.score)
    assert not notes["error"], notes["error"]
    (config,) = seen
    assert isinstance(config, ScoreConfig)
    assert config.pixel_size_um == pytest.approx(w.pixel_size.value()) and config.optics == {"na": 0.45}
    assert config.modality == w.modality.currentText() and config.model == w.models.current()
    assert w.fmap.extra["optics"]["na"] == 0.45  # and the run used it


def test_scoring_again_replaces_the_result_layers_in_one_batch(qc, qtbot, notes, monkeypatch):
    """napari collects garbage after every layer it removes (~0.2 s each with torch loaded):
    the previous result's layers go in one batch, a single collection; the first result,
    which removes nothing, needs none. The layers are then those of one result."""
    import gc

    import napari_focusq.napari.widgets.result_layers as R

    viewer, w = qc
    calls = []
    real = R.show_result

    def counting(*args, **kwargs):
        collect = gc.collect
        monkeypatch.setattr(gc, "collect", lambda *a: calls.append(1) or collect(*a))
        try:
            real(*args, **kwargs)
        finally:
            monkeypatch.setattr(gc, "collect", collect)
        calls.append("shown")

    monkeypatch.setattr(R, "show_result", counting)
    run(qtbot, w, w.score)
    after_first = [ly.name for ly in viewer.layers]
    run(qtbot, w, w.score)
    assert [ly.name for ly in viewer.layers] == after_first
    first, second = calls[:calls.index("shown")], calls[calls.index("shown") + 1:-1]
    assert first == [] and second == [1], calls
    derived = [(ly.metadata or {}).get("focusq") for ly in viewer.layers if (ly.metadata or {}).get("focusq")]
    assert sorted(derived) == sorted(set(derived)) and "heatmap" in derived and "excluded" in derived
