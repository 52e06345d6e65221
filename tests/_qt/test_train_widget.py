"""Train focus model widget: a few epochs from the widget; the model shows up in Focus QC."""
from __future__ import annotations

import numpy as np
import pytest

TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory):
    """Two in-focus images with pixel sizes: the halves of the bundled CMU-1 region."""
    from napari_focusq.demo import write_tif
    from napari_focusq.io.formats import open_image, sample_slide_path

    d = tmp_path_factory.mktemp("infocus")
    with open_image(sample_slide_path()) as src:
        img, px = src.read_plane(), src.pixel_size_um
    h = img.shape[0] // 2
    write_tif(d / "top.tif", img[:h], pixel_size_um=px)
    write_tif(d / "bottom.tif", img[h:], pixel_size_um=px)
    return d


def small(widget, folder, out):
    widget.folder.setText(str(folder))
    widget.out.setText(str(out))
    widget.epochs.setValue(3)
    widget.batch.setValue(8)
    widget.samples.setValue(8)
    widget.z_max.setValue(6.0)


def test_train_from_widget_then_model_in_focus_qc(make_napari_viewer_proxy, qtbot, notes, train_folder, tmp_path):
    viewer = make_napari_viewer_proxy()
    _, tw = viewer.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    _, qc = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    small(tw, train_folder, tmp_path / "mine.safetensors")
    epochs = []
    worker = tw.train()
    assert worker is not None, notes["error"]
    worker.yielded.connect(lambda ev: epochs.append(ev.data) if ev.stage == "train" else None)
    assert tw.train() is None  # pressing Train twice starts nothing
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    assert not notes["error"], notes["error"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [h["epoch"] for h in tw.plots.history] == [1, 2, 3]  # in order, despite re-entrant progress bars
    assert np.isfinite(tw.plots.history[-1]["loss"])
    assert (tmp_path / "mine.safetensors").is_file() and tw.checkpoint == str(tmp_path / "mine.safetensors")
    # listed in Focus QC at once; put into use only when it passed validation (3 epochs rarely do)
    assert qc.model_combo.findData(tw.checkpoint) >= 0
    passed = tw.verdict.text().startswith("Passed validation")
    assert tw.verdict.text().startswith(("Passed validation", "Failed validation")), tw.verdict.text()
    assert (qc.model_combo.currentData() == tw.checkpoint) == passed
    assert tw.train_btn.isEnabled() and not tw.cancel_btn.isEnabled()


def test_cancel_training_saves_nothing(make_napari_viewer_proxy, qtbot, notes, train_folder, tmp_path):
    viewer = make_napari_viewer_proxy()
    _, tw = viewer.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    out = tmp_path / "out"
    out.mkdir()
    small(tw, train_folder, out / "never.safetensors")
    worker = tw.train()
    worker.yielded.connect(lambda ev: tw.cancel())
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass
    assert "cancelled" in notes["info"][-1]
    assert list(out.iterdir()) == []


def test_bad_training_settings(make_napari_viewer_proxy, notes, tmp_path):
    viewer = make_napari_viewer_proxy()
    _, tw = viewer.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    tw.folder.setText(str(tmp_path / "missing"))
    assert tw.train() is None and "no such folder" in notes["error"][-1]
    (tmp_path / "empty").mkdir()
    tw.folder.setText(str(tmp_path / "empty"))
    assert tw.train() is None and "at least two" in notes["error"][-1]
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="no scale", rgb=True)
    tw.use_layer.setChecked(True)
    tw.layer_combo.setCurrentText("no scale")
    assert tw.train() is None and "no pixel size" in notes["error"][-1]
