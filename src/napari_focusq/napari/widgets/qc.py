"""Focus QC dock widget: score the image layer tile by tile, review and export.

All scoring, geometry and writing lives in core functions; this file only wires them to
napari layers. Keyboard: with the heatmap or "Excluded tiles" layer selected, a click on
a tile toggles its exclusion, Ctrl+Z undoes and Ctrl+Shift+Z redoes.
"""
from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                            QLabel, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from napari_focusq.napari import edge_tiles as E
from napari_focusq.napari import layers as L
from napari_focusq.napari.widgets.edits import ExclusionEdits
from napari_focusq.napari.widgets.redraw import Throttle
from napari_focusq.napari.widgets.viewer_hooks import ViewerHooks
from napari_focusq.napari.widgets.workers import ActivityBar, model_registry, progress_worker, settings

HELP = ("Blue hatched tiles are excluded; tissue in focus stays clear, out-of-focus tiles turn yellow to "
        "purple. Select the heatmap or “Excluded tiles” layer, then click a tile to exclude or include it "
        "(your clicks stay when the threshold moves). Ctrl+Z undoes, Ctrl+Shift+Z redoes. "
        "H switches between the tissue alone and the overlay.")
MODALITIES = ("auto", "brightfield", "fluorescence")


def _notify_error(msg: str) -> None:
    from napari.utils.notifications import show_error

    show_error(msg)


def _notify_info(msg: str) -> None:
    from napari.utils.notifications import show_info

    show_info(msg)


def _confirm(parent, title: str, question: str) -> bool:
    """Ask a yes/no question (tests replace this function)."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(parent, title, question,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class FocusQCWidget(QWidget):
    """Score an image layer's defocus per tile, show it as a heatmap, exclude and export tiles."""

    #: a FocusMap just scored here (not a stored one shown for review)
    result_shown = Signal(object)

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._worker = None
        self._job = None  # the running ScoringJob, whose cancel reaches the decode threads
        self._task_id = None
        self._pbar = None
        self._run: dict | None = None
        self.fmap = None
        self.heatmap = None
        self.excluded = None
        self.extras: dict = {}  # derived layers of the shown result: certainty, best plane, all in focus
        self._scored: dict | None = None  # which layer/plane the shown result is of (for the deblur preview)
        self._result_id: str | None = None  # metadata key tying the result layers to this panel
        self.edits = None  # ExclusionEdits of the shown result: hand edits, undo steps
        self._roi: dict | None = None  # {"grid": bool (rows, cols), "rings": [...]} from a QuPath import
        self._build()
        self._wire()
        self._restore()
        self._refresh_layers()
        self._refresh_models()
        from napari_focusq.models import preload

        preload()  # torch and the default models load in the background, not after Score

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        form = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer to score: an RGB slide or a grayscale image, 2-D or a z-stack "
                                    "(the plane shown on the slider is scored).")
        form.addRow("Image", self.layer_combo)
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setRange(0.0, 100.0)
        self.pixel_size.setDecimals(4)
        self.pixel_size.setSingleStep(0.01)
        self.pixel_size.setSuffix(" µm")
        self.pixel_size.setSpecialValueText("unknown – enter it")
        self.pixel_size.setToolTip("Size of one full-resolution pixel in µm (filled from the file when known). "
                                   "Defocus is only meaningful in µm with the right pixel size.")
        form.addRow("Pixel size", self.pixel_size)
        self.modality = QComboBox()
        self.modality.addItems(MODALITIES)
        self.modality.setToolTip("auto decides from the image; brightfield for stained slides, fluorescence "
                                 "for dark-background images.")
        form.addRow("Modality", self.modality)
        form.addRow("Objective", self._objective_row())
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Model: the shipped ones, plus any checkpoint you trained or browsed to.")
        self.browse_btn = QPushButton("Browse…")
        self.browse_btn.setToolTip("Add a model checkpoint (.safetensors) trained with focusq or the training widget.")
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.browse_btn)
        form.addRow("Model", row)

        self.stack_box = QGroupBox("Z-stack")
        zl = QHBoxLayout(self.stack_box)
        self.measure = QComboBox()
        from napari_focusq.scoring.focus import MEASURES

        self.measure.addItems(MEASURES)
        self.measure.setToolTip("Focus measure for finding the sharpest plane (std of intensity is robust).")
        self.sharpest_btn = QPushButton("Sharpest slice")
        self.sharpest_btn.setToolTip("Find the sharpest plane of the stack and move the z slider to it.")
        self.per_tile = QCheckBox("Sharpest plane per tile")
        self.per_tile.setToolTip("Score every plane and keep, per tile, the plane with the least defocus; adds a "
                                 "“Best plane” map and an “All in focus” composite of those planes.")
        zl.addWidget(self.measure)
        zl.addWidget(self.sharpest_btn)
        zl.addWidget(self.per_tile)
        self.stack_box.setVisible(False)

        btns = QHBoxLayout()
        self.score_btn = QPushButton("Score defocus")
        self.score_btn.setToolTip("Predict each tile's distance from focus (µm) on the shown plane.")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop the running job (nothing is left half-done).")
        self.cancel_btn.setEnabled(False)
        btns.addWidget(self.score_btn)
        btns.addWidget(self.cancel_btn)
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Progress of the running job (also in the activity dock).")
        self.progress_bar.setValue(0)

        qc = QFormLayout()
        from napari_focusq.config import DEFAULT_THRESHOLD_UM
        from superqt import QLabeledDoubleSlider

        self.threshold_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0.25, 6.0)
        self.threshold_slider.setValue(DEFAULT_THRESHOLD_UM)
        self.threshold_slider.setToolTip("Tiles predicted further from focus than this are excluded.")
        qc.addRow("Threshold (µm)", self.threshold_slider)
        self.summary = QLabel("No result yet.")
        self.summary.setWordWrap(True)
        # word-wrapped labels get squeezed to one line in a dock; keep room for the summary's lines
        self.summary.setMinimumHeight(6 * self.summary.fontMetrics().lineSpacing())
        self.summary.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.summary.setToolTip("Slide summary: tissue, excluded and uncertain tiles (uncertain ones are kept), "
                                "median and 90th-percentile defocus, the pooled slide score (tissue- and "
                                "information-weighted, worst tiles emphasised) beside the plain mean; the slide "
                                "passes when the 90th percentile is within the threshold.")
        self.deblur_btn = QPushButton("Deblur preview")
        self.deblur_btn.setToolTip("Preview a de-blurred 3x3-tile region at the centre of the view (Richardson-Lucy "
                                   "with the predicted defocus). Adds a separate layer; the image is never changed. "
                                   "A preview for looking, not data for measuring.")
        self.deblur_btn.setEnabled(False)
        self.hover = QLabel("")
        self.hover.setToolTip("Defocus of the tile under the mouse.")
        help_label = QLabel(HELP)
        help_label.setWordWrap(True)
        help_label.setToolTip(HELP)

        from superqt import QCollapsible

        ex = QCollapsible("Export and QuPath")  # folds away: the dock fits a 1000 px screen
        ex_inner = QWidget()
        exl = QFormLayout(ex_inner)
        ex.addWidget(ex_inner)
        ex.expand(animate=False)
        self.mask_format = QComboBox()
        self.mask_format.addItems(["png", "tif"])
        self.mask_format.setToolTip("File type of the usable-tissue mask (255 = usable tissue).")
        self.downsample = QSpinBox()
        self.downsample.setRange(1, 1024)
        self.downsample.setValue(16)
        self.downsample.setToolTip("Mask pixels per full-resolution pixel side (the scale is stored in the file).")
        self.export_btn = QPushButton("Export…")
        self.export_btn.setToolTip("Write the mask, QuPath GeoJSON of excluded tiles, the tiles CSV and a "
                                   "results.tsv row into a folder.")
        self.export_btn.setEnabled(False)
        self.import_btn = QPushButton("Import QuPath…")
        self.import_btn.setToolTip("Lay QuPath annotations (GeoJSON, .geojson.gz or .zip) over the result: "
                                   "“Ignore*” regions are excluded, any other annotation becomes the region of "
                                   "interest (the summary then counts only the tiles inside it).")
        self.import_btn.setEnabled(False)
        exl.addRow("Mask format", self.mask_format)
        exl.addRow("Downsample", self.downsample)
        ebtns = QHBoxLayout()
        ebtns.addWidget(self.export_btn)
        ebtns.addWidget(self.import_btn)
        exl.addRow(ebtns)

        lay = _scrolling_layout(self)
        lay.addLayout(form)
        lay.addWidget(self.stack_box)
        lay.addLayout(btns)
        lay.addWidget(self.progress_bar)
        lay.addLayout(qc)
        lay.addWidget(self.summary)
        lay.addWidget(self.deblur_btn)
        lay.addWidget(self.hover)
        lay.addWidget(help_label)
        lay.addWidget(ex)
        from napari_focusq.napari.widgets.collect_box import CollectBox  # collecting training tiles (issue 22)

        self.collect_box = CollectBox(self)
        lay.addWidget(self.collect_box)
        lay.addStretch(1)

    def _objective_row(self) -> QHBoxLayout:
        """NA, immersion and wavelength of the objective the image was taken with (user_optics.py)."""
        from napari_focusq.optics.user import IMMERSION_INDEX

        row = QHBoxLayout()
        self.na = QDoubleSpinBox()
        self.na.setRange(0.0, 1.7)
        self.na.setDecimals(2)
        self.na.setSingleStep(0.05)
        self.na.setPrefix("NA ")
        self.na.setSpecialValueText("NA auto")
        self.na.setToolTip("Numerical aperture of the objective (filled from the file's OME metadata when it has "
                           "it). Readings are then µm of defocus through it; empty: the model's 20x/0.75 dry.")
        self.immersion = QComboBox()
        self.immersion.addItems(["auto"] + [k for k in IMMERSION_INDEX if k not in ("dry", "glycerin")])
        self.immersion.setToolTip("Immersion medium of the objective (air = dry); auto: the file's, else air.")
        self.wavelength = QDoubleSpinBox()
        self.wavelength.setRange(0.0, 2.0)
        self.wavelength.setDecimals(3)
        self.wavelength.setSingleStep(0.01)
        self.wavelength.setSuffix(" µm")
        self.wavelength.setSpecialValueText("λ auto")
        self.wavelength.setToolTip("Emission wavelength (fluorescence) or the green channel's (brightfield), µm; "
                                   "default 0.52 / 0.54.")
        for w in (self.na, self.immersion, self.wavelength):
            row.addWidget(w)
        return row

    def optics(self) -> dict | None:
        """The objective fields as score_image's ``optics`` (None: the file's, else the model's)."""
        d = {}
        if self.na.value() > 0:
            d["na"] = self.na.value()
        if self.immersion.currentIndex() > 0:
            d["immersion"] = self.immersion.currentText()
        if self.wavelength.value() > 0:
            d["wavelength_um"] = self.wavelength.value()
        return d or None

    def _wire(self) -> None:
        ev = self.viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self._refresh_layers)
        ev.removed.connect(self._on_layer_removed)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.browse_btn.clicked.connect(self._browse_model)
        self.score_btn.clicked.connect(self.score)
        self.cancel_btn.clicked.connect(self.cancel)
        self.sharpest_btn.clicked.connect(self.sharpest_slice)
        self.deblur_btn.clicked.connect(self.deblur_preview)
        self.threshold_slider.valueChanged.connect(self._on_threshold)
        self.pixel_size.valueChanged.connect(self._on_pixel_size)
        self.export_btn.clicked.connect(self._export_dialog)
        self.import_btn.clicked.connect(self._import_dialog)
        model_registry().added.connect(self._on_model_added)
        model_registry().listed.connect(self._on_model_listed)
        # unbound when the dock closes (napari keeps them on the viewer)
        self._viewer_hooks = ViewerHooks(self.viewer, self, keys={L.TOGGLE_KEY: self.toggle_overlay},
                                         drag=[self._on_click], move=[self._on_hover])
        self.destroyed.connect(_stop_worker_later(self))

    def _restore(self) -> None:
        s = settings()
        self.modality.setCurrentText(s.value("qc/modality", "auto"))
        self.threshold_slider.setValue(float(s.value("qc/threshold_um", self.threshold_slider.value())))
        self.measure.setCurrentText(s.value("qc/measure", "std"))
        self.per_tile.setChecked(s.value("qc/per_tile", False, type=bool))
        self.mask_format.setCurrentText(s.value("qc/mask_format", "png"))
        self.downsample.setValue(int(s.value("qc/downsample", 16)))
        self._last_folder = s.value("qc/export_folder", str(Path.home()))

    def _save(self) -> None:
        s = settings()
        s.setValue("qc/modality", self.modality.currentText())
        s.setValue("qc/threshold_um", self.threshold_slider.value())
        s.setValue("qc/measure", self.measure.currentText())
        s.setValue("qc/per_tile", self.per_tile.isChecked())
        s.setValue("qc/mask_format", self.mask_format.currentText())
        s.setValue("qc/downsample", self.downsample.value())
        s.setValue("qc/model", self.model_combo.currentData() or "")
        s.setValue("qc/export_folder", self._last_folder)

    # ------------------------------------------------------------------ layers and models
    def _image_layers(self):
        from napari.layers import Image

        return [ly for ly in self.viewer.layers
                if isinstance(ly, Image) and ly.metadata.get("focusq") not in L.DERIVED
                and not ly.name.startswith(L.HEATMAP_NAME)]

    def _refresh_layers(self, *_):
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        names = [ly.name for ly in self._image_layers()]
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        self._on_layer_changed()

    def selected_layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _on_layer_changed(self, *_):
        layer = self.selected_layer()
        if layer is None:
            self.stack_box.setVisible(False)
            return
        self.pixel_size.blockSignals(True)  # showing the layer's value is not typing one
        self.pixel_size.setValue(L.layer_pixel_size_um(layer) or 0.0)
        if getattr(self, "_objective_of", None) != layer.name:
            # Only when another image is chosen: adding result layers must not undo the user's entry.
            self._objective_of = layer.name
            obj = (layer.metadata or {}).get("objective") or {}
            self.na.setValue(float(obj.get("na", 0.0)))
            imm = obj.get("immersion", "auto")
            self.immersion.setCurrentText("air" if imm == "dry" else imm)
        self.pixel_size.blockSignals(False)
        self.stack_box.setVisible(L.is_stack(layer))

    def _on_pixel_size(self, value: float):
        """A typed pixel size belongs to the image layer: kept there (metadata, scale in µm)."""
        layer = self.selected_layer()
        if layer is None or not value > 0 or L.layer_pixel_size_um(layer) == value:
            return
        L.set_layer_pixel_size(layer, value)

    def _refresh_models(self):
        from napari_focusq.models import available_models

        keep = self.model_combo.currentData() or settings().value("qc/model", "")
        self.model_combo.clear()
        # "default" lets the pipeline pick the shipped model of the modality it sees
        self.model_combo.addItem("default (by modality)", "default")
        self.model_combo.setItemData(0, "The shipped brightfield or fluorescence model, whichever fits the image.",
                                     Qt.ItemDataRole.ToolTipRole)
        for name in available_models():
            self.model_combo.addItem(name, name)
        for path in model_registry().paths():
            self.model_combo.addItem(Path(path).name, path)
            self.model_combo.setItemData(self.model_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        i = self.model_combo.findData(keep)
        if i >= 0:
            self.model_combo.setCurrentIndex(i)

    def _on_model_added(self, path: str):
        self._refresh_models()
        i = self.model_combo.findData(path)
        if i >= 0:
            self.model_combo.setCurrentIndex(i)

    def _on_model_listed(self, _path: str):
        self._refresh_models()  # keeps the current choice

    def _browse_model(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "", "Model checkpoints (*.safetensors)")
        if path:
            self.add_model(path)

    def add_model(self, path: str) -> None:
        """Check a checkpoint loads, then list and select it (remembered between sessions)."""
        from napari_focusq.errors import FocusQError
        from napari_focusq.models import load_model

        try:
            load_model(path)
        except (FocusQError, OSError, ValueError) as exc:
            _notify_error(f"Cannot use this model: {exc}")
            return
        model_registry().add(str(path))

    # ------------------------------------------------------------------ input checks
    def _plane(self, layer):
        """(array, z) of the plane to score: level 0, the z shown on the slider for stacks."""
        data = L.level0(layer)
        if not L.is_stack(layer):
            return data, None
        if layer.ndim > 3:
            raise ValueError(f"layer {layer.name!r} has {layer.ndim} axes; Focus QC scores (z, y, x) stacks")
        world_axis = self.viewer.dims.ndim - layer.ndim
        z = round((self.viewer.dims.point[world_axis] - layer.translate[0]) / layer.scale[0])
        z = int(min(max(z, 0), data.shape[0] - 1))
        return data[z], z

    def _checked_input(self):
        """The layer, plane, z and pixel size to score, or None after telling the user why."""
        from napari.layers import Image

        layer = self.selected_layer()
        if layer is None or not isinstance(layer, Image):
            _notify_error("Focus QC: choose an image layer to score (open a slide or a sample first).")
            return None
        px = self.pixel_size.value()
        if not px > 0:
            _notify_error(f"Focus QC: {layer.name!r} has no pixel size; enter it in µm (e.g. 0.25 for a 40x "
                          "scan, 0.5 for 20x) so defocus can be given in µm.")
            return None
        try:
            plane, z = self._plane(layer)
        except ValueError as exc:
            _notify_error(f"Focus QC: {exc}")
            return None
        return layer, plane, z, px

    # ------------------------------------------------------------------ scoring
    @property
    def busy(self) -> bool:
        return self._worker is not None

    def score(self, *_):
        """Start scoring the selected layer's shown plane in a worker thread (returns the worker)."""
        if self.busy:
            _notify_info("Focus QC: a job is already running; wait for it or press Cancel.")
            return None
        checked = self._checked_input()
        if checked is None:
            return None
        n = self.manual_edit_count()
        if n and not _confirm(self, "Score again?", f"Scoring again discards your {n} manual tile "
                              f"edit{'s' if n != 1 else ''} (tiles you included or excluded by hand). Continue?"):
            return None
        layer, plane, z, px = checked
        from napari_focusq.scoring.viewer_source import ScoringJob
        from napari_focusq.scoring.grid import TileGrid

        h, w = plane.shape[:2]
        grid = TileGrid((h, w), px)
        scale, translate = L.grid_geometry(layer.scale, layer.translate, grid.tile_size_px, grid.origin_px)
        per_tile = z is not None and self.per_tile.isChecked()
        self._run = {"layer": layer.name, "z": "per-tile" if per_tile else z, "px": px, "scale": scale,
                     "translate": translate, "t0": time.perf_counter(), "layer_obj": None, "kind": "score",
                     "source": layer.metadata.get("path") or layer.name, "units": L.grid_units(layer)}
        self._save()
        try:
            from napari_focusq.optics.user import OpticsOptionError, resolve_optics

            o = self.optics() or {}
            for mod in (("brightfield", "fluorescence") if self.modality.currentText() == "auto"
                        else (self.modality.currentText(),)):
                resolve_optics(mod, na=o.get("na"), immersion=o.get("immersion"),
                               wavelength_um=o.get("wavelength_um"))
        except OpticsOptionError as exc:
            _notify_error(f"Focus QC: {exc}")
            return None
        kw = {"modality": self.modality.currentText(), "model": self.model_combo.currentData(),
              "optics": self.optics()}
        if per_tile:
            gen = _iter_per_tile(L.level0(layer), px, layer.name, **kw)
        else:
            # The slide pipeline: the file behind the layer, or the layer's own levels.
            self._job = ScoringJob(layer.data, dict(layer.metadata), multiscale=bool(layer.multiscale),
                                   pixel_size_um=px, name=layer.name, z=z, **kw)
            gen = self._job.events()
        self._start(gen, f"Focus QC: scoring {layer.name}" + (" (best plane per tile)" if per_tile else ""))
        return self._worker

    def sharpest_slice(self, *_):
        """Find the sharpest plane of the selected stack in a worker and move the slider to it."""
        if self.busy:
            _notify_info("Focus QC: a job is already running; wait for it or press Cancel.")
            return None
        layer = self.selected_layer()
        if layer is None or not L.is_stack(layer):
            _notify_error("Focus QC: the sharpest slice needs a z-stack image layer.")
            return None
        stack = L.level0(layer)
        if stack.shape[0] < 2:
            _notify_error(f"Focus QC: {layer.name!r} has a single plane; there is no sharpest slice to find.")
            return None
        from napari_focusq.scoring.focus import iter_sharpest_slice

        self._run = {"kind": "sharpest", "layer": layer.name}
        self._save()
        self._start(iter_sharpest_slice(stack, measure=self.measure.currentText()),
                    f"Focus QC: sharpest slice of {layer.name}")
        return self._worker

    def _start(self, gen, description: str) -> None:
        self._worker = progress_worker(gen, on_started=self._on_started, on_event=self._on_event,
                                       on_result=self._on_result, on_error=self._on_error,
                                       on_finished=self._on_finished)
        self._register_task(description)
        self._worker.start()

    def cancel(self, *_):
        """Ask the running job to stop at its next progress event."""
        if self._job is not None:
            self._job.cancel()  # stops the decoders now, not after the batch in hand
        if self._worker is not None:
            self._worker.quit()

    def _task_manager(self):
        # napari asks before closing a window with busy tasks and cancels them through
        # their callback; the manager is private, so fall back to `destroyed` without it
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return getattr(getattr(self.viewer, "window", None), "_task_status_manager", None)

    def _register_task(self, description: str) -> None:
        mgr = self._task_manager()
        if mgr is None:
            return
        from napari.utils.task_status import Status

        worker = self._worker
        self._task_id = mgr.register_task_status("napari-focusq", Status.BUSY, description,
                                                 cancel_callback=lambda: worker.quit() or True)

    def _end_task(self, status_name: str) -> None:
        mgr = self._task_manager()
        if mgr is not None and self._task_id is not None:
            from napari.utils.task_status import Status

            mgr.update_task_status(self._task_id, getattr(Status, status_name))
        self._task_id = None

    def _on_started(self):
        self.score_btn.setEnabled(False)
        self.sharpest_btn.setEnabled(False)
        self.deblur_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress_bar.setValue(0)
        self._pbar = ActivityBar("Focus QC")

    def _on_event(self, ev):
        # the activity bar processes events while updating: our own state first, the bar last
        if ev.stage == "deblur" and ev.total and ev.done < ev.total:
            self.progress_bar.setRange(0, 0)  # one long step: a busy bar, not a frozen 0 %
            self.progress_bar.setFormat("de-blurring the preview…")
        elif ev.total:
            self.progress_bar.setRange(0, ev.total)
            self.progress_bar.setValue(ev.done)
            self.progress_bar.setFormat(f"{ev.stage} %v/%m")
        if ev.stage == "score" and self._run and "grid_shape" in ev.data:
            self._fill_running(ev.data["grid_shape"], ev.data.get("tiles", ()))
        if self._pbar is not None:
            self._pbar.update(ev)

    def _fill_running(self, grid_shape, tiles):
        run = self._run
        layer = run.get("layer_obj")
        if layer is None or layer not in self.viewer.layers:
            data = np.full(tuple(grid_shape), np.nan, np.float32)
            kw = L.heatmap_kwargs(run["scale"], run["translate"])
            kw.update(name=f"{L.HEATMAP_NAME} [scoring]", units=run.get("units", ("µm", "µm")))
            layer = self.viewer.add_image(data, **kw)
            run["layer_obj"] = layer
            run["redraw"] = Throttle(lambda: layer.refresh() if layer in self.viewer.layers else None)
        if L.fill_tiles(layer.data, tiles) is not None:
            # Redraws are throttled: each one re-renders the canvas on the cores scoring uses.
            run["redraw"].request()

    def _on_result(self, result):
        run = self._run or {}
        if run.get("kind") == "sharpest":
            index, _scores = result
            layer = self.viewer.layers[run["layer"]] if run["layer"] in self.viewer.layers else None
            if layer is not None:
                world_axis = self.viewer.dims.ndim - layer.ndim
                self.viewer.dims.set_point(world_axis, layer.translate[0] + index * layer.scale[0])
            _notify_info(f"Focus QC: sharpest plane is z = {index} ({self.measure.currentText()}).")
            return
        if run.get("kind") == "deblur":
            self._show_preview(result, run)
            return
        if run.get("kind") == "score":
            composite = None
            if isinstance(result, tuple):  # best plane per tile: (FocusMap, all-in-focus composite)
                result, composite = result
            run["composite"] = composite
            result.extra["seconds"] = time.perf_counter() - run["t0"]
            if result.source in (None, "image"):
                result.source = str(run["source"])
            self._show_result(result, run)
            self.result_shown.emit(result)  # e.g. Review slides stores it for a queued slide

    def show_stored(self, fmap, layer=None, *, excluded=None, threshold_um: float | None = None) -> None:
        """Show a stored result (the review of a batch folder) over ``layer``, without rescoring.

        ``excluded`` are the stored exclusions ((rows, cols) bool); tiles where they differ
        from the threshold's count as set by hand.
        """
        if threshold_um is not None:
            self._set_threshold_quietly(float(threshold_um))
        if layer is not None:
            scale, translate = L.grid_geometry(layer.scale, layer.translate, fmap.tile_size_px, fmap.origin_px)
            units, name = L.grid_units(layer), layer.name
        else:  # the slide itself is missing: the map alone, in µm
            px = float(fmap.pixel_size_um)
            scale, translate = L.grid_geometry((px, px), (0.0, 0.0), fmap.tile_size_px, fmap.origin_px)
            units, name = ("µm", "µm"), None
        self._show_result(fmap, {"kind": "stored", "layer": name, "z": None, "px": fmap.pixel_size_um,
                                 "scale": scale, "translate": translate, "units": units, "excluded": excluded})

    def _show_result(self, fmap, run) -> None:
        """Replace the previous heatmap/exclusion layers by this run's."""
        scale, translate = run["scale"], run["translate"]
        running = run.get("layer_obj")
        # The running heatmap becomes the result's (the all-in-focus composite must go under
        # it, so a per-tile run adds a new one): napari runs a full gc.collect() for every
        # layer it removes, seconds of GUI time with torch loaded.
        reuse = running is not None and running in self.viewer.layers and run.get("composite") is None
        for ly in (self.heatmap, self.excluded, None if reuse else running, *self.extras.values()):
            if ly is not None and ly in self.viewer.layers:
                self.viewer.layers.remove(ly)
        self.extras = {}
        self.fmap = fmap
        self._scored = {"layer": run["layer"], "z": run["z"]}
        self._result_id = uuid.uuid4().hex
        self._roi = None
        units = run.get("units", ("µm", "µm"))
        self._add_extras(fmap, run)
        # result layers are recognised by their metadata (the viewer may hand out proxies)
        ident = {"focusmap": fmap, "source": fmap.source, "model": fmap.model, "result_id": self._result_id}
        kw = L.heatmap_kwargs(scale, translate)
        kw.update(metadata={"focusq": "heatmap", **ident, "optics": fmap.extra.get("optics")}, units=units)
        if reuse:
            run["layer_obj"] = None  # kept: _on_finished removes only a partial layer
            if run.get("redraw") is not None:
                run["redraw"].cancel()
            running.data = E.whole_tiles_grid(fmap)  # partial edge tiles: the edge layer below
            running.name = kw["name"]
            running.metadata.update(kw["metadata"])
            self.heatmap = running
        else:
            self.heatmap = self.viewer.add_image(E.whole_tiles_grid(fmap), **kw)
        self.heatmap.colorbar.visible = True
        rects, rgba = E.edge_shapes(fmap, self.heatmap.colormap, L.CONTRAST_UM)
        if rects:  # tiles cut by the slide's edge, drawn only over the slide (edge_tiles.py)
            self.extras["edge"] = self.viewer.add_shapes(
                rects, face_color=rgba, **E.edge_kwargs(scale, translate, units, {"result_id": self._result_id}))
        kw = L.excluded_kwargs(scale, translate)
        kw.update(metadata={"focusq": "excluded", **ident}, units=units)
        t = self.threshold_slider.value()
        labels = L.threshold_mask(fmap.defocus_um, t)
        self.edits = ExclusionEdits(labels, fmap.defocus_um, t)
        if run.get("excluded") is not None:  # stored exclusions (a review): shown as they were saved
            labels = np.asarray(run["excluded"], bool).astype(np.uint8) * L.EXCLUDED_LABEL
            self.edits = ExclusionEdits.from_labels(labels, fmap.defocus_um, t)
        self.excluded = self.viewer.add_labels(labels, **kw)
        self._hook_layer(self.heatmap)
        self._hook_layer(self.excluded)
        self.excluded.events.paint.connect(self._on_paint)
        hs, ht = L.hatch_geometry(scale, translate)
        self.extras["hatch"] = self.viewer.add_image(
            L.hatch_rgba(self.excluded.data > 0, fmap), name=L.HATCH_NAME, rgb=True, scale=hs, translate=ht,
            units=units, interpolation2d="nearest", metadata={"focusq": "hatch", "result_id": self._result_id})
        self._label_colorbar(self.heatmap)
        self.viewer.layers.selection.active = self.heatmap
        self.export_btn.setEnabled(True)
        self.import_btn.setEnabled(True)
        self.deblur_btn.setEnabled(True)
        self._update_summary()
        self.collect_box.refresh()
        notes = fmap.extra.get("notes") or []
        if not fmap.scored.any():
            _notify_info(f"Focus QC: no result – {L.no_result_reason(fmap)}.")
            return
        if run.get("kind") == "stored":
            return  # a stored result: the review widget says what it opened
        _notify_info(f"Focus QC: scored {int(fmap.scored.sum())} tissue tiles with {fmap.model}"
                     + (f" ({'; '.join(notes)})" if notes else ""))

    def _add_extras(self, fmap, run) -> None:
        """Composite (under the heatmap), best plane and certainty layers of a result, where it has them."""
        scale, translate = run["scale"], run["translate"]
        image = self.viewer.layers[run["layer"]] if run["layer"] in self.viewer.layers else None
        composite = run.get("composite")
        if composite is not None and image is not None:
            kw = {"name": L.ALL_IN_FOCUS_NAME, "scale": tuple(image.scale[-2:]),
                  "translate": tuple(image.translate[-2:]), "rgb": bool(image.rgb), "units": L.grid_units(image),
                  "metadata": {"focusq": "all_in_focus", "pixel_size_um": run["px"]}}
            if not image.rgb:
                kw.update(colormap=image.colormap.name, contrast_limits=tuple(image.contrast_limits))
            self.extras["all_in_focus"] = self.viewer.add_image(composite, **kw)
        best = fmap.extra.get("best_plane")
        if best is not None and np.shape(best) == fmap.shape:
            grid = np.where(np.asarray(best) >= 0, best, np.nan).astype(np.float32)
            n_z = np.shape(fmap.extra.get("defocus_per_plane", [[0]]))[0]
            self.extras["best_plane"] = self.viewer.add_image(
                grid, **{**L.best_plane_kwargs(scale, translate, n_z), "units": run.get("units", ("µm", "µm"))})
            self._label_colorbar(self.extras["best_plane"])  # its legend: shown with the layer
        cert = fmap.extra.get("certainty")
        if cert is not None and np.shape(cert) == fmap.shape:
            data = np.where(fmap.scored, cert, np.nan).astype(np.float32)
            self.extras["certainty"] = self.viewer.add_image(
                data, **{**L.certainty_kwargs(scale, translate), "units": run.get("units", ("µm", "µm"))})

    # ------------------------------------------------------------------ de-blurring preview
    def _preview_source(self):
        """(image layer, level-0 (Y, X[, C]) array) the shown result was scored on, or None."""
        sc = self._scored or {}
        if sc.get("z") == "per-tile":
            layer = self.extras.get("all_in_focus")
            return (layer, layer.data) if layer is not None and layer in self.viewer.layers else None
        layer = self.viewer.layers[sc["layer"]] if sc.get("layer") in self.viewer.layers else None
        if layer is None:
            return None
        data = L.level0(layer)
        return layer, (data if sc.get("z") is None else data[sc["z"]])

    def preview_region(self, world_yx=None) -> tuple[int, int, int, int] | None:
        """Level-0 (y0, x0, y1, x1) of the 3x3 tiles around ``world_yx`` (default: the view's centre)."""
        src = self._preview_source()
        if src is None or self.fmap is None:
            return None
        layer = src[0]
        world_yx = list(self.viewer.camera.center)[-2:] if world_yx is None else list(world_yx)[-2:]
        s, tr = list(layer.scale)[-2:], list(layer.translate)[-2:]
        rows, cols = self.fmap.shape
        H, W = self.fmap.image_shape
        y = min(max((world_yx[0] - tr[0]) / s[0], 0), H - 1)
        x = min(max((world_yx[1] - tr[1]) / s[1], 0), W - 1)
        r, c = self.fmap.tile_at(round(y), round(x)) or (rows // 2, cols // 2)
        r0, c0 = max(r - 1, 0), max(c - 1, 0)
        r1, c1 = min(r + 1, rows - 1), min(c + 1, cols - 1)
        y0, x0 = self.fmap.tile_bounds(r0, c0)[:2]
        y1, x1 = self.fmap.tile_bounds(r1, c1)[2:]
        return y0, x0, y1, x1

    def deblur_preview(self, *_, world_yx=None):
        """De-blur the 3x3 tiles at the view's centre in a worker; adds a preview layer (returns the worker)."""
        if self.busy:
            _notify_info("Focus QC: a job is already running; wait for it or press Cancel.")
            return None
        src = self._preview_source()
        if self.fmap is None or src is None:
            _notify_error("Focus QC: score an image first; the preview uses its predicted defocus.")
            return None
        layer, data = src
        y0, x0, y1, x1 = self.preview_region(world_yx)
        self._run = {"kind": "deblur", "layer": layer.name, "region": (y0, x0, y1, x1)}
        self._start(_iter_deblur(data, self.fmap, (y0, x0, y1, x1)),
                    f"Focus QC: de-blurring a preview of {layer.name}")
        return self._worker

    def _show_preview(self, result, run) -> None:
        out, defocus = result
        layer = self.viewer.layers[run["layer"]] if run["layer"] in self.viewer.layers else None
        if layer is None:
            return
        old = self.extras.pop("preview", None)
        if old is not None and old in self.viewer.layers:
            self.viewer.layers.remove(old)
        y0, x0, y1, x1 = run["region"]
        kw = {"name": L.PREVIEW_NAME, "scale": tuple(layer.scale[-2:]),
              "translate": L.region_translate(layer.scale, layer.translate, y0, x0), "rgb": bool(layer.rgb),
              "units": ("µm", "µm"),
              "metadata": {"focusq": "preview", "region_px": (y0, x0, y1, x1), "defocus_um": defocus,
                           "source_layer": layer.name, "note": "de-blurring preview, not measured data"}}
        if not layer.rgb:
            kw.update(colormap=layer.colormap.name, contrast_limits=tuple(layer.contrast_limits))
        self.extras["preview"] = self.viewer.add_image(out, **kw)
        _notify_info(f"Focus QC: de-blurred preview of pixels ({y0}, {x0})–({y1}, {x1}) at {defocus:.2f} µm; "
                     "a preview for looking, not data (the image is unchanged).")

    def _hook_layer(self, layer) -> None:
        """Status text in µm on hover, undo/redo keys, and summary refresh after undo."""
        widget = self
        orig_status = layer.get_status

        def get_status(position=None, **kw):
            status = orig_status(position, **kw)
            text = widget.tile_text(position) if position is not None else ""
            if text:
                status["value"] = text
                status["coordinates"] = f"{status.get('coords', '')}: {text}"
            return status

        layer.get_status = get_status
        layer.bind_key("Control-Z", lambda _l: widget.undo(), overwrite=True)
        layer.bind_key(L.TOGGLE_KEY, lambda _l: widget.toggle_overlay(), overwrite=True)
        layer.bind_key("Control-Shift-Z", lambda _l: widget.redo(), overwrite=True)

    def _on_error(self, exc):
        from napari_focusq.errors import FocusQError
        from napari_focusq.progress import Cancelled

        if isinstance(exc, Cancelled) or (self._job is not None and self._job.cancelled):
            return  # the user's cancel, surfacing from a decode thread; _on_finished reports it
        msg = str(exc) if isinstance(exc, (FocusQError, ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
        _notify_error(f"Focus QC failed: {msg}")
        self._end_task("FAILED")

    def _on_finished(self):
        run = self._run or {}
        aborted = (self._worker is not None and self._worker.abort_requested) or (
            self._job is not None and self._job.cancelled)
        running = run.get("layer_obj")
        if run.get("redraw") is not None:
            run["redraw"].cancel()
        if running is not None and running in self.viewer.layers:
            self.viewer.layers.remove(running)  # a cancelled or failed run leaves no partial layer
        if aborted:
            _notify_info("Focus QC: cancelled.")
        self._end_task("CANCELLED" if aborted else "COMPLETED")
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._worker = None
        self._job = None
        self._run = None
        if self.progress_bar.maximum() == 0:  # a busy bar left by a cancelled or failed preview
            self.progress_bar.setRange(0, 1)
        self.score_btn.setEnabled(True)
        self.sharpest_btn.setEnabled(True)
        self.deblur_btn.setEnabled(self.fmap is not None)
        self.cancel_btn.setEnabled(False)

    # ------------------------------------------------------------------ review
    def excluded_grid(self) -> np.ndarray | None:
        if self.excluded is None or self.fmap is None:
            return None
        return np.asarray(self.excluded.data) > 0

    def roi_grid(self):
        """(rows, cols) bool of the tiles inside the imported region of interest, or None."""
        return None if self._roi is None else self._roi["grid"]

    def summary_dict(self) -> dict | None:
        """:meth:`FocusMap.summary` of the shown result with the current threshold and exclusions.

        With a region of interest (from QuPath) only the tiles inside it count.
        """
        if self.fmap is None:
            return None
        from napari_focusq.export.qupath import restrict_to_roi

        return restrict_to_roi(self.fmap, self.roi_grid()).summary(self.threshold_slider.value(),
                                                                    self.excluded_grid())

    def _label_colorbar(self, layer) -> None:
        """The layer's name ("Defocus (µm)") beside its colour bar: the bar's unit and legend."""
        try:
            layer.colorbar.visible = True
            layer.name_overlay.position = layer.colorbar.position
            layer.name_overlay.visible = True
        except AttributeError:  # napari without per-layer overlays: the layer list still names it
            pass

    def _refresh_hatch(self) -> None:
        hatch = self.extras.get("hatch")
        if hatch is None or hatch not in self.viewer.layers or self.excluded is None or self.fmap is None:
            return
        hatch.data = L.hatch_rgba(np.asarray(self.excluded.data) > 0, self.fmap)

    def toggle_overlay(self, *_):
        """One key (H): the tissue alone, or the heatmap and exclusions over it."""
        layers = [ly for ly in (self.heatmap, self.extras.get("edge"), self.extras.get("hatch"))
                  if ly is not None and ly in self.viewer.layers]
        if not layers:
            return
        show = not any(ly.visible for ly in layers)
        for ly in layers:
            ly.visible = show

    def _update_summary(self, *_):
        if self.fmap is None:
            return
        self._refresh_hatch()
        t = self.threshold_slider.value()
        text = L.summary_text(self.summary_dict(), t, L.no_result_reason(self.fmap))
        if self.roi_grid() is not None:
            text = f"Inside the region of interest ({int(self.roi_grid().sum())} tiles):\n{text}"
        self.summary.setText(text)

    def manual_edit_count(self) -> int:
        """Tiles of the shown result included or excluded by hand (0 without a result)."""
        return 0 if self.fmap is None or self.edits is None else self.edits.count

    def _on_threshold(self, value: float):
        if self.fmap is None or self.excluded is None or self.excluded not in self.viewer.layers:
            return
        ed = self.edits
        old = ed.threshold_um
        # tiles set by hand keep their state: they are the pathologist's decisions
        new = ed.for_threshold(value)
        idx = np.nonzero(np.asarray(self.excluded.data) != new)
        if idx[0].size:
            ed.pending = ("threshold", old, value)
            try:
                with self.excluded.block_history():  # one undo step for the whole re-threshold
                    self.excluded.data_setitem(idx, new[idx])
            finally:
                ed.pending = None
        ed.threshold_um = float(value)
        self._update_summary()

    def _on_paint(self, event=None):
        """Every undo step of the exclusion layer (a click, a paint stroke, a threshold move, an import)."""
        if self.edits is not None and self.excluded is not None:
            self.edits.record(self.excluded.data, getattr(event, "value", None))
        self._update_summary()

    def _set_threshold_quietly(self, value: float | None) -> None:
        if value is None:
            return
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(value)
        self.threshold_slider.blockSignals(False)

    def toggle_tile(self, row: int, col: int) -> None:
        """Flip one tile between excluded and included (one undo step)."""
        lab = self.excluded
        new = 0 if lab.data[row, col] else L.EXCLUDED_LABEL
        lab.data_setitem((np.array([row]), np.array([col])), new)
        self._update_summary()

    def undo(self) -> None:
        """Undo the last exclusion edit; a threshold move also puts the slider (and verdict) back."""
        if self.excluded is None or self.edits is None or not self.edits.done:
            return
        self.excluded.undo()
        self._set_threshold_quietly(self.edits.undo(self.excluded.data))
        self._update_summary()

    def redo(self) -> None:
        if self.excluded is None or self.edits is None or not self.edits.undone:
            return
        self.excluded.redo()
        self._set_threshold_quietly(self.edits.redo(self.excluded.data))
        self._update_summary()

    def tile_at_world(self, world) -> tuple[int, int] | None:
        if self.heatmap is None or self.heatmap not in self.viewer.layers:
            return None
        return L.world_to_tile(world, self.heatmap.scale, self.heatmap.translate, self.heatmap.data.shape)

    def tile_text(self, world) -> str:
        """"1.83 µm (tile 3, 4; tissue 80 %)" for the tile under a world position."""
        rc = self.tile_at_world(world)
        if rc is None or self.fmap is None:
            return ""
        d = self.fmap.defocus_um[rc]
        tissue = self.fmap.tissue_fraction[rc]
        val = "no tissue" if not math.isfinite(d) else f"{d:.2f} µm"
        ex = " · excluded" if self.excluded is not None and self.excluded.data[rc] else ""
        cert, unc = self.fmap.extra.get("certainty"), self.fmap.extra.get("uncertain")
        if math.isfinite(d) and cert is not None and np.shape(cert) == self.fmap.shape:
            ex += f" · certainty {float(cert[rc]):.2f}" + (" (uncertain)" if unc is not None and unc[rc] else "")
        bad = self.fmap.extra.get("nonfinite_px")  # NaN/inf pixels masked before scoring
        if math.isfinite(d) and bad is not None and np.shape(bad) == self.fmap.shape and bad[rc] > 0:
            ex += f" · {int(bad[rc])} NaN/inf px masked (uncertain)"
        best = self.fmap.extra.get("best_plane")
        if best is not None and np.shape(best) == self.fmap.shape and best[rc] >= 0:
            ex += f" · best plane {int(best[rc])}"
        return f"{val} (tile {rc[0]}, {rc[1]}; tissue {100 * tissue:.0f} %){ex}"

    def _on_hover(self, viewer, event):
        if self.fmap is not None:
            self.hover.setText(self.tile_text(event.position))

    def _on_click(self, viewer, event):
        """A click (press and release without dragging) toggles the tile under the mouse."""
        if self.excluded is None or viewer.layers.selection.active not in (self.heatmap, self.excluded):
            return
        if getattr(self.excluded, "mode", "pan_zoom") != "pan_zoom" or event.button != 1 or event.modifiers:
            return
        rc = self.tile_at_world(event.position)
        moved = False
        yield
        while event.type == "mouse_move":
            moved = True
            yield
        if rc is not None and not moved:
            self.toggle_tile(*rc)

    def _on_layer_removed(self, event):
        """Removing the result's heatmap or exclusions ends the result: the panel forgets it.

        Matched by metadata, not identity: through ``add_plugin_dock_widget`` the widget
        holds proxies of its layers, never the objects the event carries.
        """
        md = getattr(event.value, "metadata", None) or {}
        if self._result_id is None or md.get("result_id") != self._result_id:
            return
        if md.get("focusq") in ("heatmap", "excluded"):
            self.clear_result()

    def clear_result(self) -> None:
        """Forget the shown result (its layers may stay in the viewer as plain layers)."""
        self.fmap = None
        self.heatmap = None
        self.excluded = None
        self._result_id = None
        self._roi = None
        self.edits = None
        self.export_btn.setEnabled(False)
        self.import_btn.setEnabled(False)
        self.deblur_btn.setEnabled(False)
        self.summary.setText("No result yet.")
        self.collect_box.refresh()
        self.hover.setText("")

    # ------------------------------------------------------------------ QuPath import
    def _import_dialog(self):
        start = str(Path(str(self.fmap.source)).parent) if self.fmap is not None and self.fmap.source else ""
        path, _ = QFileDialog.getOpenFileName(self, "QuPath annotations", start,
                                              "GeoJSON (*.geojson *.json *.geojson.gz *.zip);;All files (*)")
        if path:
            self.import_qupath(path)

    def import_qupath(self, path) -> dict | None:
        """Apply a QuPath GeoJSON file: ``Ignore*`` regions as exclusions (one undo step), others as the ROI."""
        from napari_focusq.export.qupath import QuPathImportError, import_annotations, read_geojson

        if self.fmap is None or self.excluded is None or self.excluded not in self.viewer.layers:
            _notify_error("Focus QC: score an image (or open a review) before importing QuPath annotations.")
            return None
        try:
            got = import_annotations(self.fmap, read_geojson(path), self.excluded_grid())
        except QuPathImportError as exc:
            _notify_error(f"Focus QC: cannot import QuPath annotations: {exc}")
            return None
        new = got["excluded"].astype(np.uint8) * L.EXCLUDED_LABEL
        idx = np.nonzero(np.asarray(self.excluded.data) != new)
        if idx[0].size:
            with self.excluded.block_history():  # the whole import is one undo step
                self.excluded.data_setitem(idx, new[idx])
        if got["roi"] is not None:
            self._roi = {"grid": got["roi"], "rings": got["roi_rings"]}
            self._show_roi(got["roi_rings"])
        self._update_summary()
        _notify_info(f"Focus QC: imported {got['ignore_regions']} Ignore* region(s) and {got['roi_regions']} "
                     f"region(s) of interest from {Path(path).name}.")
        return got

    def _show_roi(self, rings) -> None:
        """The region of interest as an outline (Shapes layer) over the slide."""
        heat = self.heatmap
        if heat is None or heat not in self.viewer.layers:
            return
        t = float(self.fmap.tile_size_px)
        s = np.asarray(heat.scale[-2:], float) / t
        oy, ox = self.fmap.origin_px
        base = np.asarray(heat.translate[-2:], float) - (np.array([oy, ox]) + t / 2 - 0.5) * s
        # level-0 pixel edge p is at data coordinate p - 0.5 of the image layer
        shapes = [base + (np.asarray(r, float)[:, ::-1] - 0.5) * s for r in rings]
        for ly in list(self.viewer.layers):
            if (ly.metadata or {}).get("focusq") == "roi":
                self.viewer.layers.remove(ly)
        self.extras["roi"] = self.viewer.add_shapes(
            shapes, shape_type="polygon", name=L.ROI_NAME, edge_color="white", face_color="transparent",
            edge_width=0.04 * float(heat.scale[-1]), units=heat.units,  # a 25th of a tile: seen at any zoom
            metadata={"focusq": "roi", "result_id": self._result_id})
        self.viewer.layers.selection.active = heat  # clicks keep toggling tiles
    # ------------------------------------------------------------------ export
    def _export_dialog(self):
        # open next to the slide: that is where its results belong (the last folder otherwise)
        src = Path(str(self.fmap.source)) if self.fmap is not None and self.fmap.source else None
        start = str(src.parent) if src is not None and src.parent.is_dir() and str(src.parent) != "." else self._last_folder
        folder = QFileDialog.getExistingDirectory(self, "Export Focus QC results to", start)
        if folder:
            self._last_folder = folder
            self._save()
            self.export(folder)

    def export(self, folder) -> dict | None:
        """Write the mask, GeoJSON, tiles CSV and QuPath tiles, and the slide's results.tsv row, into ``folder``.

        Exporting the same slide again replaces its row (one row per slide) and asks
        before overwriting its files. Returns the written paths (None if nothing was written).
        """
        from napari_focusq.export.results import results_row
        from napari_focusq.export.outputs import unique_stem
        from napari_focusq.export.results import upsert_results
        from napari_focusq.export.qupath import TILES_GZ, TILES_ZIP, restrict_to_roi, write_qupath_tiles
        from napari_focusq.napari.writer import ExportError, save_mask

        if self.fmap is None:
            _notify_error("Focus QC: score an image before exporting.")
            return None
        fmap, excluded, t = self.fmap, self.excluded_grid(), self.threshold_slider.value()
        folder = Path(folder)
        stem = unique_stem(fmap.source or "image", set())
        ds = self.downsample.value()
        targets = {"mask": folder / f"{stem}.mask.{self.mask_format.currentText()}",
                   "geojson": folder / f"{stem}.geojson", "tiles_csv": folder / f"{stem}.tiles.csv",
                   "tiles_geojson": folder / f"{stem}{TILES_GZ}", "tiles_qupath": folder / f"{stem}{TILES_ZIP}"}
        existing = [p.name for p in targets.values() if p.exists()]
        if existing and not _confirm(self, "Overwrite?", f"{folder} already holds {', '.join(existing)} for this "
                                     "slide. Overwrite them (its results.tsv row is replaced)?"):
            return None
        roi = self.roi_grid()
        paths = {}
        try:
            if not folder.is_dir():
                raise ExportError(f"{folder}: no such folder")
            paths["mask"] = save_mask(targets["mask"], fmap.pixel_mask(t, excluded, downsample=ds),
                                      fmap.pixel_size_um * ds)
            paths["geojson"] = fmap.to_geojson(targets["geojson"], t, excluded)
            paths["tiles_csv"] = fmap.to_csv(targets["tiles_csv"], t, excluded)
            paths.update(write_qupath_tiles(fmap, folder, stem, t, excluded,
                                            roi=self._roi.get("rings") if self._roi else None))
            row = results_row(restrict_to_roi(fmap, roi), stem=stem, input_path=fmap.source or stem,
                              seconds=float(fmap.extra.get("seconds", 0.0)), threshold_um=t, excluded=excluded)
            paths["results"] = folder / "results.tsv"
            upsert_results(paths["results"], row)
        except PermissionError as exc:
            _notify_error(f"Focus QC: cannot write to {folder} (permission denied: is it read-only?) – {exc}")
            return None
        except (OSError, ValueError) as exc:
            _notify_error(f"Focus QC: export failed: {exc}")
            return None
        _notify_info(f"Focus QC: exported {len(paths)} files to {folder}")
        return paths


def _scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """A layout inside a scroll area filling ``widget``: a dock taller than the screen scrolls.

    Only vertically: the dock still widens to its content's width, as it did without the area.
    """
    from qtpy.QtWidgets import QFrame, QScrollArea

    class _VScroll(QScrollArea):
        def _with_width(self, hint, inner_hint):
            hint.setWidth(inner_hint.width() + self.verticalScrollBar().sizeHint().width())
            return hint

        def minimumSizeHint(self):
            w = self.widget()
            hint = super().minimumSizeHint()
            return hint if w is None else self._with_width(hint, w.minimumSizeHint())

        def sizeHint(self):
            w = self.widget()
            hint = super().sizeHint()
            return hint if w is None else self._with_width(hint, w.sizeHint())

    inner = QWidget()
    scroll = _VScroll()
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(inner)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(inner)


def _iter_per_tile(stack, px: float, name: str, *, modality: str, model, optics=None):
    """Score every plane, keep each tile's best; return (FocusMap, all-in-focus composite)."""
    from napari_focusq.scoring.pipeline import ArraySource, iter_score_slide
    from napari_focusq.progress import Progress
    from napari_focusq.scoring.zstack import all_in_focus

    src = ArraySource(stack, px, name=name, stack=True)
    fmap = yield from iter_score_slide(src, pixel_size_um=px, modality=modality, model=model, slice="per-tile",
                                       optics=optics)
    yield Progress("all in focus", 0, 1, "composing the best planes")
    return fmap, all_in_focus(stack, fmap)


def _iter_deblur(image, fmap, region):
    """De-blur one region (one step: Richardson-Lucy has no cancel point inside); returns (array, µm)."""
    from napari_focusq.optics.deblur import deblur_region
    from napari_focusq.progress import Progress

    y0, x0, y1, x1 = region
    a, b = fmap.tile_at(y0, x0), fmap.tile_at(y1 - 1, x1 - 1)
    d = fmap.defocus_um[a[0]:b[0] + 1, a[1]:b[1] + 1]
    d = d[np.isfinite(d)]
    yield Progress("deblur", 0, 1, "de-blurring the preview region")
    out = deblur_region(image, fmap, y0, x0, y1, x1)
    yield Progress("deblur", 1, 1, "done")
    return out, float(np.median(d)) if d.size else float("nan")


def _stop_worker_later(widget: FocusQCWidget):
    """A callback for ``destroyed`` that does not touch the (deleted) widget itself."""
    holder = {"w": widget}

    def stop(*_):
        w = holder.pop("w", None)
        worker = getattr(w, "_worker", None) if w is not None else None
        if worker is not None:
            try:
                worker.quit()
            except RuntimeError:
                pass

    return stop
