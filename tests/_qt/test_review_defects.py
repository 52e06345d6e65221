"""The eight defects of issue 20, one test each (every one failed on main at 922a9a7)."""
from __future__ import annotations

import numpy as np
import pytest

TIMEOUT_MS = 120_000
DEMO = "Defocus demo (0, 1, 2, 4 µm)"


@pytest.fixture
def answers(monkeypatch):
    """Answers to the widget's yes/no questions, given in order; records the questions asked."""
    import napari_focusq.napari.widgets.notify as notify

    state = {"answers": [], "asked": []}

    def confirm(_parent, _title, question):
        state["asked"].append(question)
        return state["answers"].pop(0) if state["answers"] else False

    monkeypatch.setattr(notify, "confirm", confirm)
    return state


def score(qtbot, w):
    """Score and wait until the widget's job is over (a tiny job may finish before a signal could be awaited)."""
    assert w.score() is not None
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)


def test_1_removed_result_is_forgotten_not_exported_as_another_slide(qc, qtbot, notes, tmp_path):
    viewer, w = qc
    score(qtbot, w)
    assert w.export_btn.isEnabled() and "median" in w.summary.text()
    viewer.layers.clear()  # the user clears the layer list, then opens another slide
    viewer.add_image(np.full((400, 400, 3), 200, np.uint8), name="another slide", rgb=True)
    assert w.fmap is None and w.summary.text() == "No result yet."
    assert not w.export_btn.isEnabled()
    out = tmp_path / "out"
    out.mkdir()
    assert w.export(out) is None and list(out.iterdir()) == []  # nothing of the old slide written


def test_1b_deleting_one_result_layer_ends_the_result(qc, qtbot, notes):
    viewer, w = qc
    score(qtbot, w)
    viewer.layers.remove("Defocus (µm)")
    assert w.fmap is None and not w.export_btn.isEnabled()


def test_2_typed_pixel_size_is_kept_per_layer(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    stack = viewer.add_image(np.zeros((3, 64, 64), np.uint16), name="stack")
    assert w.layer_combo.currentText() == "stack" and w.pixel_size.value() == 0
    w.pixel_size.setValue(0.26)
    viewer.add_points([[1, 1]], name="points")  # adding any layer rebuilt the list and lost the value
    assert w.pixel_size.value() == pytest.approx(0.26)
    assert tuple(stack.scale[-2:]) == pytest.approx((0.26, 0.26)) and stack.metadata["pixel_size_um"] == 0.26
    assert [str(u) for u in stack.units[-2:]] == ["micrometer", "micrometer"]
    viewer.add_image(np.zeros((64, 64), np.uint16), name="other")
    w.layer_combo.setCurrentText("other")
    assert w.pixel_size.value() == 0  # each layer keeps its own
    w.pixel_size.setValue(0.5)
    w.layer_combo.setCurrentText("stack")
    assert w.pixel_size.value() == pytest.approx(0.26)


def test_3_activity_bar_moves(qtbot):
    from napari_focusq.napari.widgets.workers import ActivityBar
    from napari_focusq.progress import Progress

    bar = ActivityBar("Focus QC", min_interval=0.0)
    seen = []
    bar._bar.events.value.connect(lambda e: seen.append(e.value))  # what the activity dock's bar listens to
    bar.update(Progress("score", 261, 484))
    assert seen and seen[-1] == 261
    bar.update(Progress("score", 484, 484))
    assert seen[-1] == 484 and bar._bar.n == 484
    bar.close()


def test_4_undo_after_threshold_move_restores_slider_and_verdict(qc, qtbot, notes):
    viewer, w = qc
    w.threshold_slider.setValue(2.0)
    score(qtbot, w)
    lab = viewer.layers["Excluded tiles"]
    before_labels, before_text = np.array(lab.data), w.summary.text()
    w.threshold_slider.setValue(0.25)
    assert w.summary.text() != before_text and (lab.data != before_labels).any()
    w.undo()
    np.testing.assert_array_equal(lab.data, before_labels)
    assert w.threshold_slider.value() == pytest.approx(2.0)
    assert w.summary.text() == before_text
    w.redo()
    assert w.threshold_slider.value() == pytest.approx(0.25)
    np.testing.assert_array_equal(lab.data, w.fmap.excluded(0.25))


def test_5_image_smaller_than_a_tile_says_why_and_no_fail(make_napari_viewer_proxy, qtbot, notes, model_path):
    viewer = make_napari_viewer_proxy()
    _, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    rng = np.random.default_rng(0)
    img = viewer.add_image(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8), name="tiny", rgb=True)
    w.pixel_size.setValue(0.66)  # 66 µm wide: less than one 160 µm tile
    w.add_model(str(model_path))
    score(qtbot, w)
    assert not notes["error"], notes["error"]
    text = w.summary.text()
    assert "FAIL" not in text and "No result" in text and "smaller than one" in text, text
    assert "smaller than one" in notes["info"][-1]
    heat = viewer.layers["Defocus (µm)"]
    assert [str(u) for u in heat.units] == [str(u) for u in img.units[-2:]]
    assert viewer.layers.extent.units is not None  # one unit for all layers: napari does not warn


def test_6_export_twice_one_row_and_asks_before_overwriting(qc, qtbot, notes, tmp_path, answers):
    from napari_focusq.export.results import read_results

    viewer, w = qc
    score(qtbot, w)
    assert w.export(tmp_path) is not None and answers["asked"] == []  # nothing to overwrite yet
    answers["answers"] = [False]
    assert w.export(tmp_path) is None and len(answers["asked"]) == 1  # asked; "no" writes nothing
    assert len(read_results(tmp_path / "results.tsv")) == 1
    w.threshold_slider.setValue(1.0)
    answers["answers"] = [True]
    paths = w.export(tmp_path)
    assert paths is not None
    rows = read_results(tmp_path / "results.tsv")
    assert len(rows) == 1 and float(rows[0]["excluded_pct"]) == pytest.approx(w.summary_dict()["excluded_pct"],
                                                                               abs=0.01)


def test_7_manual_edits_survive_threshold_moves_and_rescoring_asks(qc, qtbot, notes, answers):
    viewer, w = qc
    score(qtbot, w)
    fmap, lab = w.fmap, viewer.layers["Excluded tiles"]
    d = np.where(fmap.scored, fmap.defocus_um, np.nan)
    sharp = np.unravel_index(np.nanargmin(d), d.shape)
    far = np.unravel_index(np.nanargmax(d), d.shape)
    lo, hi = float(d[sharp]), float(d[far])
    assert hi > lo + 0.02 and lo > 0.26, (lo, hi)  # room for thresholds around them (slider minimum 0.25)
    w.threshold_slider.setValue((lo + hi) / 2)
    w.toggle_tile(*sharp)  # excluded by hand
    w.toggle_tile(*far)  # included by hand
    # thresholds on both sides of both tiles: a threshold alone would flip each of them
    for t in (lo - 0.01, hi + 0.01, (lo + hi) / 2):
        w.threshold_slider.setValue(t)
        assert lab.data[sharp] == 1 and lab.data[far] == 0, t
        others = np.ones(fmap.shape, bool)
        others[sharp] = others[far] = False
        np.testing.assert_array_equal(lab.data[others], fmap.excluded(t)[others])
    assert w.manual_edit_count() == 2
    answers["answers"] = [False]
    assert w.score() is None and "2 manual tile edits" in answers["asked"][-1]
    assert lab.data[sharp] == 1  # nothing discarded
    answers["answers"] = [True]
    score(qtbot, w)
    assert w.manual_edit_count() == 0


def test_8_model_that_fails_validation_is_listed_not_selected(make_napari_viewer_proxy, notes, tmp_path):
    from napari_focusq.models import new_model

    viewer = make_napari_viewer_proxy()
    _, tw = viewer.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    _, qc = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    before = qc.model_combo.currentData()
    bad = new_model("fast").save(tmp_path / "bad.safetensors", metrics={
        "validation_calibrated": {"r2": -0.84, "mae_0_4": 2.1}})
    tw._on_result(str(bad))
    assert qc.model_combo.currentData() == before  # not put into use
    assert qc.model_combo.findData(str(bad)) >= 0  # but listed: the user may choose it anyway
    assert "Failed validation" in tw.verdict.text() and "worse than always guessing" in tw.verdict.text()
    assert "not selected" in notes["info"][-1]
    good = new_model("fast").save(tmp_path / "good.safetensors", metrics={
        "validation_calibrated": {"r2": 0.93, "mae_0_4": 0.31}})
    tw._on_result(str(good))
    assert qc.model_combo.currentData() == str(good)
    assert "Passed validation" in tw.verdict.text() and "±0.31 µm" in tw.verdict.text()
