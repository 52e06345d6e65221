"""Collecting tiles in Focus QC (Ctrl-click, the two buttons, undo) and training on the
collection from the training panel: issue 22's loop, end to end under the virtual display."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import shot

TIMEOUT_MS = 240_000


def ctrl_click(viewer, world_yx, modifiers=("Control",)):
    """A left click with a modifier held (press + release, no drag) at a world position."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    real = getattr(viewer, "__wrapped__", viewer)
    common = dict(position=tuple(world_yx), button=1, buttons=[1], modifiers=tuple(modifiers), is_dragging=False,
                  view_direction=None, dims_displayed=[0, 1], dims_point=tuple(world_yx), delta=(0, 0),
                  pos=(100, 100))
    mouse_press_callbacks(real, ReadOnlyWrapper(SimpleNamespace(type="mouse_press", **common)))
    mouse_release_callbacks(real, SimpleNamespace(type="mouse_release", **common))


def tile_centre(qc, r, c):
    hm = qc.heatmap
    return tuple(np.asarray(hm.translate[-2:]) + np.array([r, c]) * np.asarray(hm.scale[-2:]))  # napari: pixel centres


def wait(qtbot, worker):
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass


@pytest.fixture
def scored(make_napari_viewer_proxy, qtbot, notes):
    """The sample slide opened with the plugin's reader (a file-backed layer), scored with the
    shipped model in Focus QC."""
    from napari_focusq.io.formats import sample_slide_path

    viewer = make_napari_viewer_proxy()
    viewer.open(str(sample_slide_path()), plugin="napari-focusq")
    _, qc = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    i = qc.model_combo.findData("default")
    if i >= 0:
        qc.model_combo.setCurrentIndex(i)
    wait(qtbot, qc.score())
    assert qc.fmap is not None and qc.fmap.scored.any(), notes["error"]
    return viewer, qc


def _stored_equals_pipeline(coll, fmap):
    """Every stored tile is bit-equal to the tile the pipeline reads for the model there."""
    from napari_focusq.io.formats import sample_slide_path
    from napari_focusq.review.collect import read_working_tiles

    recs = list(coll)
    ref = read_working_tiles(str(sample_slide_path()), fmap, [(r.row, r.col) for r in recs])
    for rec, t in zip(recs, ref):
        np.testing.assert_array_equal(coll.load_tile(rec), t)


def _open_box(qc, folder):
    """Focus QC's collect box, expanded, collecting into ``folder``."""
    box = qc.collect_box
    box.expand(animate=False)
    box.folder.setText(str(folder))
    box._folder_changed()
    return box, folder


def test_collect_by_ctrl_click_buttons_and_undo(scored, qtbot, notes, tmp_path):
    from napari_focusq.io.formats import sample_slide_path
    from napari_focusq.review.collection import Collection

    viewer, qc = scored
    box, folder = _open_box(qc, tmp_path / "coll")
    assert box.under_btn.isEnabled() and not box.undo_btn.isEnabled()
    fmap = qc.fmap
    r, c = [int(v[0]) for v in np.nonzero(fmap.scored)]
    before_excl = qc.excluded.data.copy()

    # a plain click toggles exclusion (Focus QC's own); a Ctrl-click collects and leaves exclusions alone
    box.label.setCurrentText("out-of-focus")
    ctrl_click(viewer, tile_centre(qc, r, c))
    wait(qtbot, box.runner.worker)
    np.testing.assert_array_equal(qc.excluded.data, before_excl)
    coll = Collection(folder)
    assert [(x.row, x.col, x.label) for x in coll] == [(r, c, "out-of-focus")]
    assert coll.records[0].slide == str(sample_slide_path())
    assert coll.records[0].reading_um == pytest.approx(float(fmap.defocus_um[r, c]), abs=1e-3)
    assert "1 in-focus" not in box.counts.text() and "1 out-of-focus" in box.counts.text()
    assert box.thumbs[0].pixmap() is not None and not box.thumbs[0].pixmap().isNull()
    # only Ctrl alone collects: a Shift- or Ctrl-Shift-click adds nothing (Alt is napari's zoom box)
    for mods in (("Shift",), ("Control", "Shift")):
        ctrl_click(viewer, tile_centre(qc, r, c), mods)
        assert box.runner.worker is None

    # the buttons: every tile under the threshold (in-focus), then a known defocus on the excluded ones
    qc.threshold_slider.setValue(float(np.nanmedian(fmap.defocus_um[fmap.scored])))
    under = box.under_threshold_cells()
    assert under and all(fmap.defocus_um[x] <= qc.threshold_slider.value() for x in under)
    box.label.setCurrentText("in-focus")
    wait(qtbot, box.add_under_threshold())
    excl = box.excluded_cells()
    assert excl and not set(excl) & set(under)
    box.label.setCurrentIndex(2)
    box.defocus.setValue(3.5)
    wait(qtbot, box.add_excluded())
    coll = Collection(folder)
    want = {rc: "in-focus" for rc in under} | {rc: 3.5 for rc in excl}
    if (r, c) not in want:
        want[(r, c)] = "out-of-focus"
    assert {(x.row, x.col): x.label for x in coll} == want
    assert len(coll) == len(want)  # the Ctrl-clicked tile, added again by a button, stays one row
    assert len(list((folder / "tiles").iterdir())) == len(want)
    _stored_equals_pipeline(coll, fmap)
    assert f"{len(under)} in-focus" in box.counts.text()

    # undo removes what the last add added, and nothing else
    assert box.undo() == len(excl) - int((r, c) in excl)
    coll = Collection(folder)
    assert {(x.row, x.col) for x in coll if x.label == 3.5} == set()
    assert {(x.row, x.col) for x in coll if x.label == "in-focus"} == set(under)
    if (r, c) in excl:  # the clicked tile was relabelled by that add: undo gives its label back
        assert [x.label for x in coll if (x.row, x.col) == (r, c)] == ["out-of-focus"]
    assert not box.undo_btn.isEnabled() and box.undo() == 0
    assert not notes["error"], notes["error"]


def test_cancelled_add_leaves_the_collection_unchanged(scored, qtbot, notes, tmp_path):
    from napari_focusq.review.collection import Collection

    viewer, qc = scored
    box = qc.collect_box
    box.folder.setText(str(tmp_path / "c"))
    box._folder_changed()
    qc.threshold_slider.setValue(6.0)
    worker = box.add_under_threshold()
    worker.yielded.connect(lambda ev: box.cancel())
    wait(qtbot, worker)
    assert len(Collection(tmp_path / "c")) == 0 and "cancelled" in notes["info"][-1]
    assert box.last_add is None


def test_nothing_to_collect_without_a_result(make_napari_viewer_proxy, notes, tmp_path):
    viewer = make_napari_viewer_proxy()
    _, qc = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    box = qc.collect_box
    assert not box.under_btn.isEnabled() and not box.excluded_btn.isEnabled()
    assert box.add_cells([(0, 0)]) is None and "score an image first" in notes["error"][-1]


@pytest.fixture(scope="module")
def half_defocused(tmp_path_factory):
    """The sample slide with its right half defocused by 3 µm, as a tiled TIFF (a second slide)."""
    from napari_focusq.demo import make_half_defocused, write_tif
    from napari_focusq.io.formats import open_image, sample_slide_path

    with open_image(sample_slide_path()) as src:
        img, px = src.read_plane(), src.pixel_size_um
    half = make_half_defocused(img, pixel_size_um=px, z_um=3.0, modality="brightfield")
    return Path(write_tif(tmp_path_factory.mktemp("half") / "half_defocused.tif", half, pixel_size_um=px,
                          tiled=True))


def test_review_collect_train_loop(scored, qtbot, notes, tmp_path, half_defocused):
    """Collect in Focus QC from two slides, train on the collection in the training panel (a few
    epochs), see the held-out verdict, and score with the new model."""
    from napari_focusq.models.checkpoint import load_checkpoint
    from napari_focusq.review.collection import Collection

    viewer, qc = scored
    box, folder = _open_box(qc, tmp_path / "lab_tiles")
    qc.threshold_slider.setValue(2.0)
    wait(qtbot, box.add_under_threshold())  # the sharp sample slide: in focus

    viewer.open(str(half_defocused), plugin="napari-focusq")
    qc.layer_combo.setCurrentText(half_defocused.name)
    wait(qtbot, qc.score())
    fmap = qc.fmap
    assert Path(str(fmap.source)).name == half_defocused.name
    wait(qtbot, box.add_under_threshold())  # its sharp half: in focus
    box.label.setCurrentText("out-of-focus")
    excl = box.excluded_cells()
    assert len(excl) >= 3, "the 3 µm half reads over 2 µm"
    ctrl_click(viewer, tile_centre(qc, *excl[0]))  # one by Ctrl-click, the rest by the button
    wait(qtbot, box.runner.worker)
    wait(qtbot, box.add_excluded())
    coll = Collection(folder)
    assert coll.counts()["out-of-focus"] == len(excl) and len(coll.slides()) == 2
    from qtpy.QtWidgets import QScrollArea

    qc.findChild(QScrollArea).ensureWidgetVisible(box)
    shot(viewer, "collect_tiles.png", tmp_path)  # FOCUSQ_SCREENSHOTS=docs: the README's picture
    assert all(r.slide == str(half_defocused) and 2 * r.x + r.width > fmap.image_shape[1] - 2 * 320
               for r in coll if r.label == "out-of-focus")  # in (or straddling the edge of) the blurred half

    # the training panel lists the collection with its counts, and trains on it
    _, tw = viewer.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    tw.source.setCurrentText("Collection")
    assert not tw.folder.isVisibleTo(tw) and tw.collection.isVisibleTo(tw)
    assert tw.collection.folder.text() == str(folder), "defaults to the folder Focus QC collects into"
    assert f"{len(excl)} out-of-focus" in tw.collection.counts.text() and "2 slides" in tw.collection.counts.text()
    tw.collection.epochs.setValue(3)
    tw.collection.threshold.setValue(2.0)
    tw.out.setText(str(tmp_path / "lab.safetensors"))
    wait(qtbot, tw.train())
    assert not notes["error"], notes["error"]
    assert tw.checkpoint == str(tmp_path / "lab.safetensors")
    rep = load_checkpoint(tw.checkpoint)[1]["collection"]
    assert rep["digest"] == "sha256:" + Collection(folder).digest()
    assert rep["heldout_slides"] == [half_defocused.name]  # the only slide holding both kinds
    # the loss curve and the held-out AUC per epoch, drawn as for a folder run
    assert tw.plots.isVisibleTo(tw) and [h["epoch"] for h in tw.plots.history] == [1, 2, 3]
    assert tw.plots.ax_cal.get_title() == "simulated draws (training slides)"
    assert "held-out AUC" in [t.get_text() for t in tw.plots.ax_loss.get_legend().get_texts()]
    text = tw.verdict.text()
    assert text.startswith("On the held-out slides (half_defocused.tif") and "AUC" in text and "start:" in text
    # put into use in Focus QC only when no worse than its start (as the verdict says)
    assert (qc.model_combo.currentData() == tw.checkpoint) == rep["not_worse"]
    assert ("does no worse" in text) == rep["not_worse"] and qc.model_combo.findData(tw.checkpoint) >= 0

    # the new model scores the next slide
    qc.model_combo.setCurrentIndex(qc.model_combo.findData(tw.checkpoint))
    wait(qtbot, qc.score())
    assert qc.fmap.model.endswith("+collection") or "collection" in qc.fmap.model, qc.fmap.model
    shot(viewer, "train_collection.png", tmp_path)


def test_collect_from_an_in_memory_layer(qc, qtbot, notes, tmp_path):
    """A layer with no file behind it (the simulated demo) is read through its own data, at the
    level and resampling the pipeline used: the stored tile is what the model read."""
    from napari_focusq.io.arrays import LevelsSource
    from napari_focusq.review.collect import read_working_tiles
    from napari_focusq.review.collection import Collection

    viewer, w = qc
    wait(qtbot, w.score())
    layer = viewer.layers[w.scored_on["layer"]]
    assert w.fmap.extra.get("read_from") == "levels"
    box = w.collect_box
    box.folder.setText(str(tmp_path / "c"))
    box._folder_changed()
    r, c = [int(v[-1]) for v in np.nonzero(w.fmap.scored)]
    ctrl_click(viewer, tile_centre(w, r, c))
    wait(qtbot, box.runner.worker)
    coll = Collection(tmp_path / "c")
    assert [(x.row, x.col, x.label, x.slide) for x in coll] == [(r, c, "in-focus", str(w.fmap.source))]
    ref = read_working_tiles(LevelsSource([np.asarray(layer.data)], w.fmap.pixel_size_um), w.fmap, [(r, c)])[0]
    np.testing.assert_array_equal(coll.load_tile(coll.records[0]), ref)
    assert not notes["error"], notes["error"]
