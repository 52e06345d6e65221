"""Focus QC's "Export and QuPath" section: write the result's files, lay QuPath annotations over it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QFormLayout, QWidget
from superqt import QCollapsible

from napari_focusq.napari import layers as L
from napari_focusq.napari.widgets import forms, notify
from napari_focusq.napari.widgets.workers import settings


class ExportBox(QCollapsible):
    """Mask format and downsample, Export… and Import QuPath… for the result shown in ``qc``."""

    def __init__(self, qc, parent=None):
        super().__init__("Export and QuPath", parent)  # folds away: the dock fits a 1000 px screen
        self.qc = qc
        inner = QWidget()
        form = QFormLayout(inner)
        self.addWidget(inner)
        self.expand(animate=False)
        self.mask_format = forms.combo(["png", "tif"], "File type of the usable-tissue mask (255 = usable tissue).")
        self.downsample = forms.spin(1, 1024, 16, tip="Mask pixels per full-resolution pixel side (the scale is "
                                                      "stored in the file).")
        self.export_btn = forms.button("Export…", "Write the mask, QuPath GeoJSON of excluded tiles, the tiles CSV "
                                                  "and a results.tsv row into a folder.", enabled=False)
        self.import_btn = forms.button("Import QuPath…", "Lay QuPath annotations (GeoJSON, .geojson.gz or .zip) over "
                                       "the result: “Ignore*” regions are excluded, any other annotation becomes the "
                                       "region of interest (the summary then counts only the tiles inside it).",
                                       enabled=False)
        form.addRow("Mask format", self.mask_format)
        form.addRow("Downsample", self.downsample)
        form.addRow(forms.hrow(self.export_btn, self.import_btn))
        self.export_btn.clicked.connect(self._export_dialog)
        self.import_btn.clicked.connect(self._import_dialog)

    def restore(self) -> None:
        s = settings()
        self.mask_format.setCurrentText(s.value("qc/mask_format", "png"))
        self.downsample.setValue(int(s.value("qc/downsample", 16)))
        self.last_folder = s.value("qc/export_folder", str(Path.home()))

    def save(self) -> None:
        s = settings()
        s.setValue("qc/mask_format", self.mask_format.currentText())
        s.setValue("qc/downsample", self.downsample.value())
        s.setValue("qc/export_folder", self.last_folder)

    def set_result(self, has: bool) -> None:
        self.export_btn.setEnabled(has)
        self.import_btn.setEnabled(has)

    # ------------------------------------------------------------------ QuPath import
    def _import_dialog(self):
        fmap = self.qc.fmap
        start = str(Path(str(fmap.source)).parent) if fmap is not None and fmap.source else ""
        path, _ = QFileDialog.getOpenFileName(self, "QuPath annotations", start,
                                              "GeoJSON (*.geojson *.json *.geojson.gz *.zip);;All files (*)")
        if path:
            self.import_qupath(path)

    def import_qupath(self, path) -> dict | None:
        """Apply a QuPath GeoJSON file: ``Ignore*`` regions as exclusions (one undo step), others as the ROI."""
        from napari_focusq.export.qupath import QuPathImportError, import_annotations, read_geojson
        from napari_focusq.napari.widgets.result_layers import show_roi

        qc = self.qc
        if qc.fmap is None or qc.excluded is None or qc.excluded not in qc.viewer.layers:
            notify.error("Focus QC: score an image (or open a review) before importing QuPath annotations.")
            return None
        try:
            got = import_annotations(qc.fmap, read_geojson(path), qc.excluded_grid())
        except QuPathImportError as exc:
            notify.error(f"Focus QC: cannot import QuPath annotations: {exc}")
            return None
        qc.review.set_labels(got["excluded"].astype(np.uint8) * L.EXCLUDED_LABEL)  # the import is one undo step
        if got["roi"] is not None:
            qc.roi = {"grid": got["roi"], "rings": got["roi_rings"]}
            show_roi(qc, got["roi_rings"])
        qc.review.update_summary()
        notify.info(f"Focus QC: imported {got['ignore_regions']} Ignore* region(s) and {got['roi_regions']} "
                    f"region(s) of interest from {Path(path).name}.")
        return got

    # ------------------------------------------------------------------ export
    def _export_dialog(self):
        # open next to the slide: that is where its results belong (the last folder otherwise)
        fmap = self.qc.fmap
        src = Path(str(fmap.source)) if fmap is not None and fmap.source else None
        start = str(src.parent) if src is not None and src.parent.is_dir() and str(src.parent) != "." else \
            self.last_folder
        folder = QFileDialog.getExistingDirectory(self, "Export Focus QC results to", start)
        if folder:
            self.last_folder = folder
            self.qc._save()
            self.export(folder)

    def export(self, folder) -> dict | None:
        """Write the mask, GeoJSON, tiles CSV and QuPath tiles, and the slide's results.tsv row, into ``folder``.

        Exporting the same slide again replaces its row (one row per slide) and asks
        before overwriting its files. Returns the written paths (None if nothing was written).
        """
        from napari_focusq.export.outputs import unique_stem
        from napari_focusq.export.qupath import TILES_GZ, TILES_ZIP, restrict_to_roi, write_qupath_tiles
        from napari_focusq.export.results import results_row, upsert_results
        from napari_focusq.napari.writer import ExportError, save_mask

        qc = self.qc
        if qc.fmap is None:
            notify.error("Focus QC: score an image before exporting.")
            return None
        fmap, excluded, t = qc.fmap, qc.excluded_grid(), qc.review.threshold
        folder = Path(folder)
        stem = unique_stem(fmap.source or "image", set())
        ds = self.downsample.value()
        targets = {"mask": folder / f"{stem}.mask.{self.mask_format.currentText()}",
                   "geojson": folder / f"{stem}.geojson", "tiles_csv": folder / f"{stem}.tiles.csv",
                   "tiles_geojson": folder / f"{stem}{TILES_GZ}", "tiles_qupath": folder / f"{stem}{TILES_ZIP}"}
        existing = [p.name for p in targets.values() if p.exists()]
        if existing and not notify.confirm(self, "Overwrite?", f"{folder} already holds {', '.join(existing)} for "
                                           "this slide. Overwrite them (its results.tsv row is replaced)?"):
            return None
        roi = qc.roi_grid()
        paths = {}
        try:
            if not folder.is_dir():
                raise ExportError(f"{folder}: no such folder")
            paths["mask"] = save_mask(targets["mask"], fmap.pixel_mask(t, excluded, downsample=ds),
                                      fmap.pixel_size_um * ds)
            paths["geojson"] = fmap.to_geojson(targets["geojson"], t, excluded)
            paths["tiles_csv"] = fmap.to_csv(targets["tiles_csv"], t, excluded)
            paths.update(write_qupath_tiles(fmap, folder, stem, t, excluded,
                                            roi=qc.roi.get("rings") if qc.roi else None))
            row = results_row(restrict_to_roi(fmap, roi), stem=stem, input_path=fmap.source or stem,
                              seconds=float(fmap.extra.get("seconds", 0.0)), threshold_um=t, excluded=excluded)
            paths["results"] = folder / "results.tsv"
            upsert_results(paths["results"], row)
        except PermissionError as exc:
            notify.error(f"Focus QC: cannot write to {folder} (permission denied: is it read-only?) – {exc}")
            return None
        except (OSError, ValueError) as exc:
            notify.error(f"Focus QC: export failed: {exc}")
            return None
        notify.info(f"Focus QC: exported {len(paths)} files to {folder}")
        return paths
