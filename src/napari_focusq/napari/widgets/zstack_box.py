"""Focus QC's "Z-stack" box: the focus measure, Sharpest slice, and Sharpest plane per tile."""
from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout

from napari_focusq.napari.widgets import forms
from napari_focusq.napari.widgets.workers import settings


class ZStackBox(QGroupBox):
    """Shown only while the chosen image is a z-stack."""

    def __init__(self, parent=None):
        from napari_focusq.scoring.focus import MEASURES

        super().__init__("Z-stack", parent)
        self.measure = forms.combo(MEASURES, "Focus measure for finding the sharpest plane (std of intensity is "
                                             "robust).")
        self.sharpest_btn = forms.button("Sharpest slice", "Find the sharpest plane of the stack and move the z "
                                                           "slider to it.")
        self.per_tile = QCheckBox("Sharpest plane per tile")
        self.per_tile.setToolTip("Score every plane and keep, per tile, the plane with the least defocus; adds a "
                                 "“Best plane” map and an “All in focus” composite of those planes.")
        row = QHBoxLayout(self)
        for w in (self.measure, self.sharpest_btn, self.per_tile):
            row.addWidget(w)
        self.setVisible(False)

    def restore(self) -> None:
        s = settings()
        self.measure.setCurrentText(s.value("qc/measure", "std"))
        self.per_tile.setChecked(s.value("qc/per_tile", False, type=bool))

    def save(self) -> None:
        s = settings()
        s.setValue("qc/measure", self.measure.currentText())
        s.setValue("qc/per_tile", self.per_tile.isChecked())
