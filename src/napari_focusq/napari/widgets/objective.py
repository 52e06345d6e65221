"""Focus QC's "Objective" row: NA, immersion and wavelength of the objective the image was taken with."""
from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QWidget

from napari_focusq.napari.widgets import forms


class ObjectiveRow(QWidget):
    """The three fields; empty ones mean the file's value, else the model's (optics/user.py)."""

    def __init__(self, parent=None):
        from napari_focusq.optics.user import IMMERSION_INDEX

        super().__init__(parent)
        self.na = forms.spin(0.0, 1.7, decimals=2, step=0.05, prefix="NA ", special="NA auto",
                             tip="Numerical aperture of the objective (filled from the file's OME metadata when it "
                                 "has it). Readings are then µm of defocus through it; empty: the model's 20x/0.75 "
                                 "dry.")
        self.immersion = forms.combo(["auto"] + [k for k in IMMERSION_INDEX if k not in ("dry", "glycerin")],
                                     "Immersion medium of the objective (air = dry); auto: the file's, else air.")
        self.wavelength = forms.spin(0.0, 2.0, decimals=3, step=0.01, suffix=" µm", special="λ auto",
                                     tip="Emission wavelength (fluorescence) or the green channel's (brightfield), "
                                         "µm; default 0.52 / 0.54.")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        for w in (self.na, self.immersion, self.wavelength):
            row.addWidget(w)
        self._of = None  # the image layer whose objective the fields show

    def optics(self) -> dict | None:
        """The fields as score_image's ``optics`` (None: the file's, else the model's)."""
        d = {}
        if self.na.value() > 0:
            d["na"] = self.na.value()
        if self.immersion.currentIndex() > 0:
            d["immersion"] = self.immersion.currentText()
        if self.wavelength.value() > 0:
            d["wavelength_um"] = self.wavelength.value()
        return d or None

    def follow(self, layer) -> None:
        """Show the objective recorded with ``layer``, only when another image is chosen.

        Adding result layers refreshes the layer list: that must not undo the user's entry.
        """
        if self._of == layer.name:
            return
        self._of = layer.name
        obj = (layer.metadata or {}).get("objective") or {}
        self.na.setValue(float(obj.get("na", 0.0)))
        imm = obj.get("immersion", "auto")
        self.immersion.setCurrentText("air" if imm == "dry" else imm)

    def check(self, modality: str) -> None:
        """Raise OpticsOptionError for fields no modality that ``modality`` may be could use."""
        from napari_focusq.optics.user import resolve_optics

        o = self.optics() or {}
        for mod in ("brightfield", "fluorescence") if modality == "auto" else (modality,):
            resolve_optics(mod, na=o.get("na"), immersion=o.get("immersion"), wavelength_um=o.get("wavelength_um"))
