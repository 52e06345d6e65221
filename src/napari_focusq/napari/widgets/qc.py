"""Focus QC dock widget: score the image layer tile by tile, review and export.

All scoring, geometry and writing lives in core functions; this file only wires them to
napari layers, through its parts: the model picker, the z-stack box, the jobs
(qc_jobs.py, run by a JobRunner), the result's layers (result_layers.py), the review
controller (threshold, clicks, undo, summary), the export box and the collect box.
Keyboard: with the heatmap or "Excluded tiles" layer selected, a click on a tile toggles
its exclusion, Ctrl+Z undoes and Ctrl+Shift+Z redoes.
"""
from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFormLayout, QProgressBar, QWidget

from napari_focusq.napari import layers as L
from napari_focusq.napari.widgets import forms, notify
from napari_focusq.napari.widgets import result_layers as R
from napari_focusq.napari.widgets.jobs import JobRunner, show_progress
from napari_focusq.napari.widgets.qc_jobs import DeblurJob, ScoreJob, SharpestJob, checked_input
from napari_focusq.napari.widgets.viewer_hooks import ViewerHooks
from napari_focusq.napari.widgets.workers import settings

HELP = ("Blue hatched tiles are excluded; tissue in focus stays clear, out-of-focus tiles turn yellow to "
        "purple. Select the heatmap or “Excluded tiles” layer, then click a tile to exclude or include it "
        "(your clicks stay when the threshold moves). Ctrl+Z undoes, Ctrl+Shift+Z redoes. "
        "H switches between the tissue alone and the overlay.")
BUSY = "Focus QC: a job is already running; wait for it or press Cancel."


def _via(part: str, name: str):
    """A method of the panel that is ``name`` of its part ``part`` (the same signature and docstring)."""
    def method(self, *args, **kwargs):
        return getattr(getattr(self, part), name)(*args, **kwargs)

    method.__name__ = name
    return method


class FocusQCWidget(QWidget):
    """Score an image layer's defocus per tile, show it as a heatmap, exclude and export tiles."""

    #: a FocusMap just scored here (not a stored one shown for review)
    result_shown = Signal(object)

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.fmap = None  # the shown result and its layers
        self.heatmap = None
        self.excluded = None
        self.extras: dict = {}  # derived layers of the shown result: certainty, best plane, all in focus
        self.scored_on: dict | None = None  # which layer/plane the shown result is of (for the deblur preview)
        self.result_id: str | None = None  # metadata key tying the result layers to this panel
        self.edits = None  # ExclusionEdits of the shown result: hand edits, undo steps
        self.roi: dict | None = None  # {"grid": bool (rows, cols), "rings": [...]} from a QuPath import
        self.runner = JobRunner(self, viewer=napari_viewer, on_started=self._on_started,
                                on_finished=self._on_finished)
        self._build()
        self._wire()
        self._restore()
        self._refresh_layers()
        from napari_focusq.models import preload

        # torch and the default models load in the background, not after Score; so do what
        # napari imports on the GUI thread when a result first shows: pandas for the Shapes
        # layer (0.3 s), and skimage's colour conversions with scipy.linalg for the Labels
        # layer's colours (0.2-0.3 s; skimage.color itself is a lazy module)
        preload(also=("pandas", "skimage.color.colorconv"))

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        from napari_focusq.napari.widgets.collect_box import CollectBox  # collecting training tiles (issue 22)
        from napari_focusq.napari.widgets.export_box import ExportBox
        from napari_focusq.napari.widgets.image_form import ImageForm
        from napari_focusq.napari.widgets.review_controller import ReviewController
        from napari_focusq.napari.widgets.scroll import scrolling_layout
        from napari_focusq.napari.widgets.zstack_box import ZStackBox

        self.image = ImageForm(self.viewer)
        for name in ("layer_combo", "pixel_size", "modality", "objective", "models", "model_combo"):
            setattr(self, name, getattr(self.image, name))  # the panel's own names for them (tests, Review)
        self.na, self.immersion, self.wavelength = self.objective.na, self.objective.immersion, self.objective.wavelength
        self.stack_box = ZStackBox()
        self.measure, self.sharpest_btn, self.per_tile = (self.stack_box.measure, self.stack_box.sharpest_btn,
                                                          self.stack_box.per_tile)
        self.score_btn = forms.button("Score defocus", "Predict each tile's distance from focus (µm) on the shown "
                                                       "plane.")
        self.cancel_btn = forms.button("Cancel", "Stop the running job (nothing is left half-done).", enabled=False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Progress of the running job (also in the activity dock).")
        self.progress_bar.setValue(0)
        self.review = ReviewController(self)
        self.threshold_slider, self.summary, self.hover = (self.review.threshold_slider, self.review.summary,
                                                           self.review.hover)
        qc = QFormLayout()
        qc.addRow("Threshold (µm)", self.threshold_slider)
        self.deblur_btn = forms.button(
            "Deblur preview", "Preview a de-blurred 3x3-tile region at the centre of the view (Richardson-Lucy with "
            "the predicted defocus). Adds a separate layer; the image is never changed. A preview for looking, not "
            "data for measuring.", enabled=False)
        self.export_box = ExportBox(self)
        self.export_btn, self.import_btn = self.export_box.export_btn, self.export_box.import_btn
        self.collect_box = CollectBox(self)
        lay = scrolling_layout(self)
        lay.addWidget(self.image)
        lay.addWidget(self.stack_box)
        lay.addLayout(forms.hrow(self.score_btn, self.cancel_btn))
        lay.addWidget(self.progress_bar)
        lay.addLayout(qc)
        for w in (self.summary, self.deblur_btn, self.hover, forms.label(HELP, HELP), self.export_box,
                  self.collect_box):
            lay.addWidget(w)
        lay.addStretch(1)

    def optics(self) -> dict | None:
        """The objective fields as score_image's ``optics`` (None: the file's, else the model's)."""
        return self.objective.optics()

    def _wire(self) -> None:
        ev = self.viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self._refresh_layers)
        ev.removed.connect(self._on_layer_removed)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.score_btn.clicked.connect(self.score)
        self.cancel_btn.clicked.connect(self.cancel)
        self.sharpest_btn.clicked.connect(self.sharpest_slice)
        self.deblur_btn.clicked.connect(self.deblur_preview)
        # unbound when the dock closes (napari keeps them on the viewer)
        self._viewer_hooks = ViewerHooks(self.viewer, self, keys={L.TOGGLE_KEY: self.toggle_overlay},
                                         drag=[self.review.on_click], move=[self.review.on_hover])

    def _restore(self) -> None:
        s = settings()
        self.modality.setCurrentText(s.value("qc/modality", "auto"))
        self.threshold_slider.setValue(float(s.value("qc/threshold_um", self.threshold_slider.value())))
        self.stack_box.restore()
        self.export_box.restore()

    def _save(self) -> None:
        s = settings()
        s.setValue("qc/modality", self.modality.currentText())
        s.setValue("qc/threshold_um", self.threshold_slider.value())
        s.setValue("qc/model", self.models.current() or "")
        self.stack_box.save()
        self.export_box.save()

    # ------------------------------------------------------------------ layers and models
    def _refresh_layers(self, *_):
        self.image.refresh_layers()
        self._on_layer_changed()

    def selected_layer(self):
        return self.image.selected_layer()

    def _on_layer_changed(self, *_):
        layer = self.image.show_layer()
        self.stack_box.setVisible(layer is not None and L.is_stack(layer))

    def add_model(self, path: str) -> None:
        """Check a checkpoint loads, then list and select it (remembered between sessions)."""
        self.models.add_model(path)

    # ------------------------------------------------------------------ jobs
    @property
    def busy(self) -> bool:
        return self.runner.busy

    def _idle(self) -> bool:
        if self.busy:
            notify.info(BUSY)
        return not self.busy

    def score(self, *_):
        """Start scoring the selected layer's shown plane in a worker thread (returns the worker)."""
        from napari_focusq.config import ScoreConfig
        from napari_focusq.errors import ConfigError
        from napari_focusq.optics.user import OpticsOptionError

        if not self._idle():
            return None
        checked = checked_input(self)
        if checked is None:
            return None
        n = self.manual_edit_count()
        if n and not notify.confirm(self, "Score again?", f"Scoring again discards your {n} manual tile "
                                    f"edit{'s' if n != 1 else ''} (tiles you included or excluded by hand). Continue?"):
            return None
        layer, plane, z, px = checked
        self._save()
        try:
            self.objective.check(self.modality.currentText())
        except OpticsOptionError as exc:
            notify.error(f"Focus QC: {exc}")
            return None
        try:  # the settings as the CLI and batch validate them (one ScoreConfig)
            config = ScoreConfig.from_options(pixel_size_um=px, modality=self.modality.currentText(),
                                              model=self.models.current(), optics=self.optics())
        except ConfigError as exc:
            notify.error(f"Focus QC: {exc}")
            return None
        return self.runner.start(ScoreJob(self, layer, plane, z, config,
                                          per_tile=z is not None and self.per_tile.isChecked()))

    def sharpest_slice(self, *_):
        """Find the sharpest plane of the selected stack in a worker and move the slider to it."""
        if not self._idle():
            return None
        layer = self.selected_layer()
        if layer is None or not L.is_stack(layer):
            notify.error("Focus QC: the sharpest slice needs a z-stack image layer.")
            return None
        if L.level0(layer).shape[0] < 2:
            notify.error(f"Focus QC: {layer.name!r} has a single plane; there is no sharpest slice to find.")
            return None
        self._save()
        return self.runner.start(SharpestJob(self, layer, self.measure.currentText()))

    def deblur_preview(self, *_, world_yx=None):
        """De-blur the 3x3 tiles at the view's centre in a worker; adds a preview layer (returns the worker)."""
        if not self._idle():
            return None
        src = R.preview_source(self)
        if self.fmap is None or src is None:
            notify.error("Focus QC: score an image first; the preview uses its predicted defocus.")
            return None
        return self.runner.start(DeblurJob(self, src[0], src[1], self.fmap, self.preview_region(world_yx)))

    def preview_region(self, world_yx=None):
        """Level-0 (y0, x0, y1, x1) of the 3x3 tiles around ``world_yx`` (default: the view's centre)."""
        return R.preview_region(self, world_yx)

    def cancel(self, *_):
        """Ask the running job to stop at its next progress event."""
        self.runner.cancel()

    def _on_started(self):
        for b in (self.score_btn, self.sharpest_btn, self.deblur_btn):
            b.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress_bar.setValue(0)

    def _on_event(self, ev):
        """The panel's progress bar follows a job's event (the activity bar is the runner's)."""
        if ev.stage == "deblur" and ev.total and ev.done < ev.total:
            self.progress_bar.setRange(0, 0)  # one long step: a busy bar, not a frozen 0 %
            self.progress_bar.setFormat("de-blurring the preview…")
        else:
            show_progress(self.progress_bar, ev)

    def _on_finished(self):
        if self.progress_bar.maximum() == 0:  # a busy bar left by a cancelled or failed preview
            self.progress_bar.setRange(0, 1)
        self.score_btn.setEnabled(True)
        self.sharpest_btn.setEnabled(True)
        self.deblur_btn.setEnabled(self.fmap is not None)
        self.cancel_btn.setEnabled(False)

    # ------------------------------------------------------------------ the shown result
    def show_result(self, fmap, place) -> None:
        """Replace the previous heatmap/exclusion layers by this result's (a qc_jobs.Placement)."""
        R.show_result(self, fmap, place)

    def show_stored(self, fmap, layer=None, *, excluded=None, threshold_um: float | None = None) -> None:
        """Show a stored result (the review of a batch folder) over ``layer``, without rescoring."""
        R.show_stored(self, fmap, layer, excluded=excluded, threshold_um=threshold_um)

    def result_changed(self) -> None:
        """Buttons, summary and the collect box follow a new result (or none)."""
        has = self.fmap is not None
        self.export_box.set_result(has)
        self.deblur_btn.setEnabled(has)
        if has:
            self.review.update_summary()
        else:
            self.summary.setText("No result yet.")
            self.hover.setText("")
        self.collect_box.refresh()

    def _on_layer_removed(self, event):
        """Removing the result's heatmap or exclusions ends the result: the panel forgets it.

        Matched by metadata, not identity: through ``add_plugin_dock_widget`` the widget
        holds proxies of its layers, never the objects the event carries.
        """
        md = getattr(event.value, "metadata", None) or {}
        if self.result_id is not None and md.get("result_id") == self.result_id and \
                md.get("focusq") in ("heatmap", "excluded"):
            self.clear_result()

    def clear_result(self) -> None:
        """Forget the shown result (its layers may stay in the viewer as plain layers)."""
        self.fmap = self.heatmap = self.excluded = self.result_id = self.roi = self.edits = None
        self.result_changed()

    # the review controller's and the export box's work, as the panel's own API
    excluded_grid = _via("review", "excluded_grid")
    roi_grid = _via("review", "roi_grid")
    summary_dict = _via("review", "summary_dict")
    manual_edit_count = _via("review", "manual_edit_count")
    toggle_tile = _via("review", "toggle_tile")
    undo = _via("review", "undo")
    redo = _via("review", "redo")
    tile_at_world = _via("review", "tile_at_world")
    tile_text = _via("review", "tile_text")
    import_qupath = _via("export_box", "import_qupath")
    export = _via("export_box", "export")

    def toggle_overlay(self, *_):
        """One key (H): the tissue alone, or the heatmap and exclusions over it."""
        R.toggle_overlay(self)
