"""Focus QC's review of a result: the threshold, hand exclusions (clicks, undo, redo), the summary and verdict.

The controller owns the threshold slider, the summary and the hover line, and edits the
panel's "Excluded tiles" layer; every change is one undo step of that layer, and the
hand edits survive a threshold move (:class:`~napari_focusq.napari.widgets.edits.ExclusionEdits`).
"""
from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import Qt

from napari_focusq.napari import layers as L
from napari_focusq.napari.widgets import forms
from napari_focusq.napari.widgets.edits import ExclusionEdits

SUMMARY_TIP = ("Slide summary: tissue, excluded and uncertain tiles (uncertain ones are kept), median and "
               "90th-percentile defocus, the pooled slide score (tissue- and information-weighted, worst tiles "
               "emphasised) beside the plain mean; the slide passes when the 90th percentile is within the threshold.")


class ReviewController:
    """Threshold, exclusion edits and summary of the result shown in ``qc`` (a FocusQCWidget)."""

    def __init__(self, qc):
        from superqt import QLabeledDoubleSlider

        from napari_focusq.config import DEFAULT_THRESHOLD_UM

        self.qc = qc
        self.threshold_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0.25, 6.0)
        self.threshold_slider.setValue(DEFAULT_THRESHOLD_UM)
        self.threshold_slider.setToolTip("Tiles predicted further from focus than this are excluded.")
        self.summary = forms.label("No result yet.", SUMMARY_TIP)
        # word-wrapped labels get squeezed to one line in a dock; keep room for the summary's lines
        self.summary.setMinimumHeight(6 * self.summary.fontMetrics().lineSpacing())
        self.summary.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.hover = forms.label("", "Defocus of the tile under the mouse.", wrap=False)
        self.threshold_slider.valueChanged.connect(self.on_threshold)

    @property
    def threshold(self) -> float:
        return self.threshold_slider.value()

    def exclusions_for(self, fmap, stored=None):
        """(labels, ExclusionEdits) of a new result: the threshold's, or ``stored`` exclusions as saved."""
        t = self.threshold
        labels = L.threshold_mask(fmap.defocus_um, t)
        edits = ExclusionEdits(labels, fmap.defocus_um, t)
        if stored is not None:  # stored exclusions (a review): shown as they were saved
            labels = np.asarray(stored, bool).astype(np.uint8) * L.EXCLUDED_LABEL
            edits = ExclusionEdits.from_labels(labels, fmap.defocus_um, t)
        return labels, edits

    def hook(self, layer) -> None:
        """Status text in µm on hover, undo/redo and overlay keys on a result layer."""
        orig_status = layer.get_status
        tile_text = self.tile_text

        def get_status(position=None, **kw):
            status = orig_status(position, **kw)
            text = tile_text(position) if position is not None else ""
            if text:
                status["value"] = text
                status["coordinates"] = f"{status.get('coords', '')}: {text}"
            return status

        layer.get_status = get_status
        layer.bind_key("Control-Z", lambda _l: self.undo(), overwrite=True)
        layer.bind_key(L.TOGGLE_KEY, lambda _l: self.qc.toggle_overlay(), overwrite=True)
        layer.bind_key("Control-Shift-Z", lambda _l: self.redo(), overwrite=True)

    # ------------------------------------------------------------------ the result's state
    def excluded_grid(self) -> np.ndarray | None:
        qc = self.qc
        if qc.excluded is None or qc.fmap is None:
            return None
        return np.asarray(qc.excluded.data) > 0

    def roi_grid(self):
        """(rows, cols) bool of the tiles inside the imported region of interest, or None."""
        return None if self.qc.roi is None else self.qc.roi["grid"]

    def summary_dict(self) -> dict | None:
        """:meth:`FocusMap.summary` of the shown result with the current threshold and exclusions.

        With a region of interest (from QuPath) only the tiles inside it count.
        """
        if self.qc.fmap is None:
            return None
        from napari_focusq.export.qupath import restrict_to_roi

        return restrict_to_roi(self.qc.fmap, self.roi_grid()).summary(self.threshold, self.excluded_grid())

    def update_summary(self, *_) -> None:
        from napari_focusq.napari.widgets.result_layers import refresh_hatch

        if self.qc.fmap is None:
            return
        refresh_hatch(self.qc)
        text = L.summary_text(self.summary_dict(), self.threshold, L.no_result_reason(self.qc.fmap))
        if self.roi_grid() is not None:
            text = f"Inside the region of interest ({int(self.roi_grid().sum())} tiles):\n{text}"
        self.summary.setText(text)

    def manual_edit_count(self) -> int:
        """Tiles of the shown result included or excluded by hand (0 without a result)."""
        return 0 if self.qc.fmap is None or self.qc.edits is None else self.qc.edits.count

    # ------------------------------------------------------------------ edits
    def _live(self) -> bool:
        qc = self.qc
        return qc.fmap is not None and qc.excluded is not None and qc.excluded in qc.viewer.layers

    def on_threshold(self, value: float) -> None:
        if not self._live():
            return
        ed, lab = self.qc.edits, self.qc.excluded
        old = ed.threshold_um
        # tiles set by hand keep their state: they are the pathologist's decisions
        new = ed.for_threshold(value)
        idx = np.nonzero(np.asarray(lab.data) != new)
        if idx[0].size:
            ed.pending = ("threshold", old, value)
            try:
                with lab.block_history():  # one undo step for the whole re-threshold
                    lab.data_setitem(idx, new[idx])
            finally:
                ed.pending = None
        ed.threshold_um = float(value)
        self.update_summary()

    def set_labels(self, new) -> None:
        """Replace the exclusions by ``new`` (uint8 labels) as one undo step (e.g. a QuPath import)."""
        lab = self.qc.excluded
        idx = np.nonzero(np.asarray(lab.data) != new)
        if idx[0].size:
            with lab.block_history():
                lab.data_setitem(idx, new[idx])

    def on_paint(self, event=None) -> None:
        """Every undo step of the exclusion layer (a click, a paint stroke, a threshold move, an import)."""
        if self.qc.edits is not None and self.qc.excluded is not None:
            self.qc.edits.record(self.qc.excluded.data, getattr(event, "value", None))
        self.update_summary()

    def set_threshold_quietly(self, value: float | None) -> None:
        if value is None:
            return
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(value)
        self.threshold_slider.blockSignals(False)

    def toggle_tile(self, row: int, col: int) -> None:
        """Flip one tile between excluded and included (one undo step)."""
        lab = self.qc.excluded
        new = 0 if lab.data[row, col] else L.EXCLUDED_LABEL
        lab.data_setitem((np.array([row]), np.array([col])), new)
        self.update_summary()

    def undo(self) -> None:
        """Undo the last exclusion edit; a threshold move also puts the slider (and verdict) back."""
        self._history(redo=False)

    def redo(self) -> None:
        self._history(redo=True)

    def _history(self, redo: bool) -> None:
        qc = self.qc
        if qc.excluded is None or qc.edits is None or not (qc.edits.undone if redo else qc.edits.done):
            return
        (qc.excluded.redo if redo else qc.excluded.undo)()
        self.set_threshold_quietly((qc.edits.redo if redo else qc.edits.undo)(qc.excluded.data))
        self.update_summary()

    # ------------------------------------------------------------------ the mouse
    def tile_at_world(self, world) -> tuple[int, int] | None:
        heat = self.qc.heatmap
        if heat is None or heat not in self.qc.viewer.layers:
            return None
        return L.world_to_tile(world, heat.scale, heat.translate, heat.data.shape)

    def tile_text(self, world) -> str:
        """"1.83 µm (tile 3, 4; tissue 80 %)" for the tile under a world position."""
        fmap, rc = self.qc.fmap, self.tile_at_world(world)
        if rc is None or fmap is None:
            return ""
        d = fmap.defocus_um[rc]
        tissue = fmap.tissue_fraction[rc]
        val = "no tissue" if not math.isfinite(d) else f"{d:.2f} µm"
        ex = " · excluded" if self.qc.excluded is not None and self.qc.excluded.data[rc] else ""
        cert, unc = fmap.extra.get("certainty"), fmap.extra.get("uncertain")
        if math.isfinite(d) and cert is not None and np.shape(cert) == fmap.shape:
            ex += f" · certainty {float(cert[rc]):.2f}" + (" (uncertain)" if unc is not None and unc[rc] else "")
        bad = fmap.extra.get("nonfinite_px")  # NaN/inf pixels masked before scoring
        if math.isfinite(d) and bad is not None and np.shape(bad) == fmap.shape and bad[rc] > 0:
            ex += f" · {int(bad[rc])} NaN/inf px masked (uncertain)"
        best = fmap.extra.get("best_plane")
        if best is not None and np.shape(best) == fmap.shape and best[rc] >= 0:
            ex += f" · best plane {int(best[rc])}"
        return f"{val} (tile {rc[0]}, {rc[1]}; tissue {100 * tissue:.0f} %){ex}"

    def on_hover(self, viewer, event) -> None:
        if self.qc.fmap is not None:
            self.hover.setText(self.tile_text(event.position))

    def on_click(self, viewer, event):
        """A click (press and release without dragging) toggles the tile under the mouse."""
        yield from tile_click(self.qc, viewer, event, (), self.toggle_tile)


def tile_click(qc, viewer, event, modifiers: tuple, act):
    """A mouse-drag callback's body: a left click with exactly ``modifiers`` held (press and release
    without dragging) on the result's heatmap or exclusions calls ``act(row, col)`` for the tile.
    """
    if qc.excluded is None or viewer.layers.selection.active not in (qc.heatmap, qc.excluded):
        return
    if getattr(qc.excluded, "mode", "pan_zoom") != "pan_zoom" or event.button != 1 or \
            tuple(event.modifiers) != tuple(modifiers):
        return
    rc = qc.tile_at_world(event.position)
    moved = False
    yield
    while event.type == "mouse_move":
        moved = True
        yield
    if rc is not None and not moved:
        act(*rc)
