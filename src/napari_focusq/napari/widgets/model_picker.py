"""The model picker: shipped models and the checkpoints the user trained or browsed to.

Focus QC's "Model" row and the training panel's "Start from" row; both follow the
session's model registry (a model trained in one dock is listed in the other at once).
"""
from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QWidget

from napari_focusq.napari.widgets import forms, notify
from napari_focusq.napari.widgets.workers import model_registry, settings


class ModelPicker(QWidget):
    """A model list (``combo``): a "default" entry, optionally the shipped models, the user's checkpoints.

    ``browse`` adds a Browse… button that checks a checkpoint loads before listing it;
    ``follow_added`` selects a model as soon as it is added to the registry (with
    ``select``: a model that failed validation is listed, not selected).
    """

    def __init__(self, *, default_text: str, default_tip: str = "", tip: str, shipped: bool = True,
                 browse: bool = False, follow_added: bool = True, settings_key: str | None = None, parent=None):
        super().__init__(parent)
        self.default_text, self.default_tip = default_text, default_tip
        self.shipped, self.follow_added, self.settings_key = shipped, follow_added, settings_key
        self.combo = QComboBox()
        self.combo.setToolTip(tip)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        self.browse_btn = None
        if browse:
            self.browse_btn = forms.button("Browse…", "Add a model checkpoint (.safetensors) trained with focusq or "
                                                      "the training widget.")
            row.addWidget(self.browse_btn)
            self.browse_btn.clicked.connect(self._browse)
        model_registry().added.connect(self._on_added)
        model_registry().listed.connect(self.refresh)
        self.refresh()

    def current(self) -> str | None:
        """"default", a shipped model's name or a checkpoint's path."""
        return self.combo.currentData()

    def select(self, value) -> bool:
        i = self.combo.findData(value)
        if i >= 0:
            self.combo.setCurrentIndex(i)
        return i >= 0

    def refresh(self, *_) -> None:
        """List the models again, keeping the choice (the remembered one on first use)."""
        keep = self.combo.currentData()
        if keep is None and self.settings_key:
            keep = settings().value(self.settings_key, "")
        self.combo.clear()
        # "default" lets the pipeline pick the shipped model of the modality it sees
        self.combo.addItem(self.default_text, "default")
        if self.default_tip:
            self.combo.setItemData(0, self.default_tip, Qt.ItemDataRole.ToolTipRole)
        if self.shipped:
            from napari_focusq.models import available_models

            for name in available_models():
                self.combo.addItem(name, name)
        for path in model_registry().paths():
            self.combo.addItem(Path(path).name, path)
            self.combo.setItemData(self.combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        if not self.select(keep):
            self.combo.setCurrentIndex(0)

    def _on_added(self, path: str) -> None:
        self.refresh()
        if self.follow_added:
            self.select(path)

    def _browse(self) -> None:
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
            notify.error(f"Cannot use this model: {exc}")
            return
        model_registry().add(str(path))
