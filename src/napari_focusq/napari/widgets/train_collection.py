"""The training panel's "Collection" source: fine-tune a model on a tile collection.

The settings (collection folder with its counts per label, the model to start from, the
threshold real out-of-focus tiles must read above, epochs) and the generator the panel
runs: :func:`napari_focusq.training.collection.iter_train_collection`, the function behind
``focusq train --collection``.
"""
from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QFormLayout, QWidget

from napari_focusq.napari.widgets import forms
from napari_focusq.napari.widgets.workers import settings


def collection_summary(folder) -> tuple[bool, str]:
    """(trainable, "12 in-focus · 3 out-of-focus · … from 4 slides") for a collection folder."""
    from napari_focusq.napari.widgets.collect_box import count_text
    from napari_focusq.review.collection import Collection

    folder = str(folder).strip()
    if not folder:
        return False, "Choose a collection folder (Focus QC's “Collect tiles” fills one)."
    p = Path(folder).expanduser()
    if not p.is_dir():
        return False, f"{p}: no such folder."
    try:
        c = Collection(p)
    except (OSError, ValueError) as exc:
        return False, str(exc)
    if not len(c):
        return False, f"{p}: the collection is empty; collect tiles in Focus QC (“Collect tiles”) first."
    n = len(c.slides())
    text = f"{count_text(c)} from {n} slide{'s' if n != 1 else ''}"
    if n < 2:
        return False, text + ": training needs tiles of at least two slides (one is held out to judge the result)."
    return True, text + "."


class CollectionSource(QWidget):
    """Collection folder, counts, start model, threshold and epochs (rows of the panel's form)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from napari_focusq.config import DEFAULT_THRESHOLD_UM
        from napari_focusq.napari.widgets.model_picker import ModelPicker

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        row, self.folder, self.folder_btn = forms.path_row(
            "A tile collection (Focus QC's “Collect tiles”, or `focusq collect`): its in-focus tiles feed the "
            "simulated-defocus recipe, its real out-of-focus tiles are taught to read over the threshold. Slides "
            "are held out to judge the result.", "Browse…", "Choose the collection folder.",
            placeholder="tile collection folder")
        form.addRow("Collection", row)
        self.counts = forms.label("", "Tiles in the collection, per label, and the slides they come from.")
        form.addRow("", self.counts)
        # a model trained elsewhere is listed, not chosen: the start of a fine-tuning is the user's choice
        self.models = ModelPicker(default_text="shipped model (default)", shipped=False, follow_added=False,
                                  tip="The model to fine-tune (its front end is kept; its heads and calibration "
                                      "learn the collection). The shipped model unless you choose one you trained.")
        self.init = self.models.combo
        form.addRow("Start from", self.models)
        self.threshold = forms.spin(0.25, 6.0, DEFAULT_THRESHOLD_UM, decimals=2, step=0.25, suffix=" µm",
                                    tip="Real out-of-focus tiles must read above this (your QC threshold); the "
                                        "held-out figures are counted at it.")
        form.addRow("Threshold", self.threshold)
        self.epochs = forms.spin(1, 10000, 40, tip="Passes over the collection's tiles (40: a few minutes on a "
                                                   "laptop CPU).")
        form.addRow("Epochs", self.epochs)
        self.folder_btn.clicked.connect(self._pick)
        self.folder.textChanged.connect(self.update_counts)

    def _pick(self):
        d = QFileDialog.getExistingDirectory(self, "Tile collection folder", self.folder.text())
        if d:
            self.folder.setText(d)

    def update_counts(self, *_) -> bool:
        ok, text = collection_summary(self.folder.text())
        self.counts.setText(text)
        self.counts.setStyleSheet("" if ok else "color: #e69f00;")
        return ok

    def restore(self) -> None:
        from napari_focusq.review.collection import default_collection_dir

        s = settings()
        # the folder last trained on, else the one Focus QC collects into
        self.folder.setText(s.value("train/collection", "") or s.value("collect/folder", "")
                            or str(default_collection_dir()))
        self.threshold.setValue(float(s.value("train/collection_threshold_um", self.threshold.value())))
        self.epochs.setValue(int(s.value("train/collection_epochs", 40)))
        if not self.models.select(s.value("train/collection_init", "default")):
            self.models.select("default")
        self.update_counts()

    def save(self) -> None:
        s = settings()
        s.setValue("train/collection", self.folder.text().strip())
        s.setValue("train/collection_threshold_um", self.threshold.value())
        s.setValue("train/collection_epochs", self.epochs.value())
        s.setValue("train/collection_init", self.models.current() or "default")

    def generator(self, out):
        """The training run (a Progress generator returning the checkpoint path); raises ValueError."""
        from napari_focusq.training.collection import iter_train_collection

        ok, text = collection_summary(self.folder.text())
        if not ok:
            raise ValueError(text)
        # keep_worse: a worse model is written (not the start's copy) so the user may still choose
        # it; the panel lists it without selecting it, as for a model that fails validation
        return iter_train_collection(Path(self.folder.text().strip()).expanduser(), out,
                                     init=self.models.current() or "default", threshold_um=self.threshold.value(),
                                     epochs=self.epochs.value(), keep_worse=True)
