"""Focus QC's first rows: which image layer, its pixel size, the modality, the objective and the model."""
from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

from napari_focusq import config as C
from napari_focusq.napari import layers as L
from napari_focusq.napari.widgets import forms
from napari_focusq.napari.widgets.model_picker import ModelPicker
from napari_focusq.napari.widgets.objective import ObjectiveRow

MODALITIES = ("auto", *C.MODALITIES)


class ImageForm(QWidget):
    """The image to score and what is known of it; the pixel size typed here is kept on the layer."""

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer to score: an RGB slide or a grayscale image, 2-D or a z-stack "
                                    "(the plane shown on the slider is scored).")
        form.addRow("Image", self.layer_combo)
        self.pixel_size = forms.spin(0.0, 100.0, decimals=4, step=0.01, suffix=" µm", special="unknown – enter it",
                                     tip="Size of one full-resolution pixel in µm (filled from the file when "
                                         "known). Defocus is only meaningful in µm with the right pixel size.")
        form.addRow("Pixel size", self.pixel_size)
        self.modality = forms.combo(MODALITIES, "auto decides from the image; brightfield for stained slides, "
                                                "fluorescence for dark-background images.")
        form.addRow("Modality", self.modality)
        self.objective = ObjectiveRow()
        form.addRow("Objective", self.objective)
        self.models = ModelPicker(default_text="default (by modality)", browse=True, settings_key="qc/model",
                                  default_tip="The shipped brightfield or fluorescence model, whichever fits the "
                                              "image.",
                                  tip="Model: the shipped ones, plus any checkpoint you trained or browsed to.")
        self.model_combo = self.models.combo
        form.addRow("Model", self.models)
        self.pixel_size.valueChanged.connect(self._on_pixel_size)

    def _image_layers(self):
        from napari.layers import Image

        return [ly for ly in self.viewer.layers
                if isinstance(ly, Image) and ly.metadata.get("focusq") not in L.DERIVED
                and not ly.name.startswith(L.HEATMAP_NAME)]

    def refresh_layers(self) -> None:
        """List the image layers again (result layers are not images to score), keeping the choice."""
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        names = [ly.name for ly in self._image_layers()]
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)

    def selected_layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def show_layer(self):
        """Show the chosen layer's pixel size and objective; returns the layer (None without one)."""
        layer = self.selected_layer()
        if layer is None:
            return None
        self.pixel_size.blockSignals(True)  # showing the layer's value is not typing one
        self.pixel_size.setValue(L.layer_pixel_size_um(layer) or 0.0)
        self.objective.follow(layer)
        self.pixel_size.blockSignals(False)
        return layer

    def _on_pixel_size(self, value: float):
        """A typed pixel size belongs to the image layer: kept there (metadata, scale in µm)."""
        layer = self.selected_layer()
        if layer is None or not value > 0 or L.layer_pixel_size_um(layer) == value:
            return
        L.set_layer_pixel_size(layer, value)
