"""Regenerate the plugin screenshots in docs/ (run under a display, e.g. xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots.py [MODEL.safetensors]

Focus QC over the defocus demo uses the shipped default model, or the given checkpoint;
the training panel is captured mid-run on two in-focus halves of the sample slide.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

DOCS = Path(__file__).resolve().parent


def wait(worker):
    done = []
    worker.finished.connect(lambda: done.append(1))
    app = QApplication.instance()
    while not done:
        app.processEvents()


def focus_qc(model: str | None) -> None:
    v = napari.Viewer()
    v.window._qt_window.resize(1500, 950)
    v.open_sample("napari-focusq", "defocus_demo")
    _, w = v.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    if model:
        w.add_model(model)
    wait(w.score())
    v.layers["True defocus (µm)"].visible = False
    v.screenshot(str(DOCS / "focus_qc.png"), canvas_only=False)
    v.close()


def training() -> None:
    from napari_focusq.demo import write_tif
    from napari_focusq.io.formats import open_image, sample_slide_path

    tmp = Path(tempfile.mkdtemp()) / "in-focus-slides"
    tmp.mkdir()
    with open_image(sample_slide_path()) as src:
        img, px = src.read_plane(), src.pixel_size_um
    h = img.shape[0] // 2
    write_tif(tmp / "top.tif", img[:h], pixel_size_um=px)
    write_tif(tmp / "bottom.tif", img[h:], pixel_size_um=px)
    v = napari.Viewer()
    v.window._qt_window.resize(1500, 950)
    v.open_sample("napari-focusq", "cmu1")
    _, tw = v.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    tw.folder.setText(str(tmp))
    tw.out.setText(str(tmp.parent / "my-model.safetensors"))
    tw.epochs.setValue(300)
    tw.samples.setValue(100)
    worker = tw.train()

    def on_event(ev):  # pause mid-run, take the picture, then stop the run
        if ev.stage == "train" and ev.done == 60:
            worker.pause()

    def on_paused():
        v.screenshot(str(DOCS / "train_widget.png"), canvas_only=False)
        worker.quit()
        worker.resume()

    worker.yielded.connect(on_event)
    worker.paused.connect(on_paused)
    wait(worker)
    v.close()


if __name__ == "__main__":
    focus_qc(sys.argv[1] if len(sys.argv) > 1 else None)
    training()
