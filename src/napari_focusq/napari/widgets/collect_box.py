"""Focus QC's "Collect tiles" section: gather training tiles while reviewing a result.

Ctrl-click (Cmd-click on a Mac) on the heatmap adds the tile under the mouse; two buttons
add the tiles under the threshold or the excluded ones, with the chosen label. Tiles are
read in a worker through :func:`napari_focusq.review.collect.iter_add_cells` from the file or
layer the result was scored from (a file-backed layer from its file: the same tiles the
pipeline read). A count per label, the latest tiles as thumbnails, and Undo of the last add.

Ctrl-click is free in napari 0.5-0.9 in pan/zoom mode: Alt-drag draws a zoom box, Alt-
double-click zooms out, Shift-drag moves a 3-D plane, and the camera pans only without
modifiers; Focus QC's own plain click toggles a tile's exclusion.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QFormLayout, QProgressBar, QWidget
from superqt import QCollapsible

from napari_focusq.napari.widgets import forms, notify
from napari_focusq.napari.widgets.collect_thumbs import N_THUMBS, ThumbStrip
from napari_focusq.napari.widgets.jobs import Job, JobRunner, show_progress
from napari_focusq.napari.widgets.workers import settings

#: Modifier of the click that collects a tile (napari's name; Qt maps Cmd to it on a Mac).
COLLECT_MODIFIER = "Control"
LABELS = ("in-focus", "out-of-focus", "defocus (µm)")



def count_text(coll) -> str:
    """"12 in-focus · 3 out-of-focus · 2 of known defocus (17 tiles)"."""
    n_in = sum(1 for r in coll if r.label == "in-focus")
    n_out = sum(1 for r in coll if r.label == "out-of-focus")
    n_known = len(coll) - n_in - n_out
    return (f"{n_in} in-focus · {n_out} out-of-focus · {n_known} of known defocus "
            f"({len(coll)} tile{'s' if len(coll) != 1 else ''})")


class CollectBox(QCollapsible):
    """The collapsible "Collect tiles" section of a :class:`FocusQCWidget` (``qc``)."""

    def __init__(self, qc, parent=None):
        super().__init__("Collect tiles (for training)", parent)
        self.qc = qc
        self.runner = JobRunner(self, on_started=self._on_started, on_finished=self._on_finished)
        self.last_add = None  # collect.AddedTiles of the latest add (Undo reverts it)
        self._build()
        self._wire()
        self.folder.setText(settings().value("collect/folder", "") or str(self._default_folder()))
        self.refresh()

    @staticmethod
    def _default_folder() -> Path:
        from napari_focusq.review.collection import default_collection_dir

        return default_collection_dir()

    def _build(self) -> None:
        inner = QWidget()
        form = QFormLayout(inner)
        row, self.folder, self.folder_btn = forms.path_row(
            "Collection folder: one PNG per tile plus a table (collection.jsonl); created on the first add. "
            "`focusq train --collection` and the training panel train on it.", "Browse…",
            "Choose the collection folder.")
        form.addRow("Folder", row)
        self.label = forms.combo(LABELS, "Label of the tiles you add: in focus, out of focus (a real blurred region, "
                                         "amount unknown), or a defocus you know in µm (e.g. measured with a pair "
                                         "of captures).")
        self.defocus = forms.spin(0.0, 99.0, 2.0, decimals=2, step=0.25, suffix=" µm",
                                  tip="The known defocus of the tiles you add.")
        self.defocus.setEnabled(False)
        form.addRow("Label", forms.hrow(self.label, self.defocus, stretch=0))
        self.under_btn = forms.button("Add tiles under threshold", "Add every scored tile that reads at or under the "
                                      "threshold and is not excluded, with the label above.")
        self.excluded_btn = forms.button("Add excluded tiles", "Add every excluded tile (over the threshold or "
                                         "excluded by hand), with the label above.")
        form.addRow(forms.hrow(self.under_btn, self.excluded_btn))
        self.undo_btn = forms.button("Undo last add", "Remove the tiles the last add added (and restore the labels "
                                                      "it replaced).")
        self.cancel_btn = forms.button("Cancel", "Stop reading tiles; the collection is left as it was.")
        form.addRow(forms.hrow(self.undo_btn, self.cancel_btn))
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Reading the tiles to collect.")
        self.progress_bar.setVisible(False)
        form.addRow(self.progress_bar)
        self.counts = forms.label("", "Tiles in the collection, per label.")
        form.addRow(self.counts)
        self.hint = forms.label("Ctrl-click (Cmd-click on a Mac) a tile of the heatmap to add it.")
        form.addRow(self.hint)
        self.strip = ThumbStrip()
        self.thumbs = self.strip.thumbs
        form.addRow(self.strip)
        self.addWidget(inner)

    def _wire(self) -> None:
        self.folder_btn.clicked.connect(self._pick_folder)
        self.folder.editingFinished.connect(self._folder_changed)
        self.label.currentIndexChanged.connect(lambda i: self.defocus.setEnabled(i == 2))
        self.under_btn.clicked.connect(self.add_under_threshold)
        self.excluded_btn.clicked.connect(self.add_excluded)
        self.undo_btn.clicked.connect(self.undo)
        self.cancel_btn.clicked.connect(self.cancel)
        self.qc.viewer.mouse_drag_callbacks.append(self._on_click)

    # ---------------------------------------------------------------- state
    def current_label(self):
        i = self.label.currentIndex()
        return LABELS[i] if i < 2 else float(self.defocus.value())

    def collection(self):
        """The chosen collection (read now: another dock or the CLI may have changed it)."""
        from napari_focusq.review.collection import Collection

        return Collection(Path(self.folder.text().strip() or self._default_folder()).expanduser())

    def refresh(self, *_) -> None:
        """Buttons follow Focus QC's result and this box's work; counts and thumbnails follow the folder."""
        has = self.qc.fmap is not None and bool(self.qc.fmap.scored.any())
        busy = self.runner.busy
        for b in (self.under_btn, self.excluded_btn):
            b.setEnabled(has and not busy)
        self.undo_btn.setEnabled(self.last_add is not None and not busy)
        self.cancel_btn.setEnabled(busy)
        try:
            coll = self.collection()
        except (OSError, ValueError) as exc:
            self.counts.setText(f"cannot read the collection: {exc}")
            self.strip.show_tiles(None, [])
            return
        self.counts.setText(count_text(coll) if len(coll) else "The collection is empty.")
        latest = list(self.last_add.ids) if self.last_add is not None else []
        latest += [r.id for r in reversed(coll.records) if r.id not in latest]
        self.strip.show_tiles(coll, [i for i in latest if i in coll][:N_THUMBS])

    def _pick_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Collection folder", self.folder.text())
        if d:
            self.folder.setText(d)
            self._folder_changed()

    def _folder_changed(self) -> None:
        s = settings()
        s.setValue("collect/folder", self.folder.text().strip())
        self.last_add = None  # an add to another folder is not undone here
        self.refresh()

    # ---------------------------------------------------------------- adding
    def under_threshold_cells(self) -> list[tuple[int, int]]:
        fmap = self.qc.fmap
        t = self.qc.threshold_slider.value()
        with np.errstate(invalid="ignore"):
            ok = fmap.scored & np.isfinite(fmap.defocus_um) & (fmap.defocus_um <= t)
        ex = self.qc.excluded_grid()
        if ex is not None:
            ok &= ~ex
        return [(int(r), int(c)) for r, c in zip(*np.nonzero(ok))]

    def excluded_cells(self) -> list[tuple[int, int]]:
        ex = self.qc.excluded_grid()
        if ex is None:
            return []
        return [(int(r), int(c)) for r, c in zip(*np.nonzero(ex & self.qc.fmap.scored))]

    def add_under_threshold(self, *_):
        return self.add_cells(self.under_threshold_cells() if self.qc.fmap is not None else [], "under the threshold")

    def add_excluded(self, *_):
        return self.add_cells(self.excluded_cells() if self.qc.fmap is not None else [], "excluded")

    def _open_source(self):
        """(callable giving (source, close_it)) for the image the shown result was scored on."""
        from napari_focusq.napari import layers as L

        qc, fmap = self.qc, self.qc.fmap
        name = (qc.scored_on or {}).get("layer")
        layer = qc.viewer.layers[name] if name is not None and name in qc.viewer.layers else None
        px = float(fmap.pixel_size_um)
        if layer is not None:
            from napari_focusq.scoring.viewer_source import layer_source

            data, md, multi, stack = layer.data, dict(layer.metadata), bool(layer.multiscale), L.is_stack(layer)

            def open_layer():
                src, kind = layer_source(data, md, multiscale=multi, pixel_size_um=px, name=name, stack=stack)
                return src, kind == "file"

            return open_layer
        path = Path(str(fmap.source)) if fmap.source else None
        if path is not None and path.is_file():
            def open_file():
                from napari_focusq.io.formats import open_image

                return open_image(path, pixel_size_um=px), True

            return open_file
        raise ValueError(f"the image this result was scored on ({fmap.source}) is no longer open; open it again "
                         "to collect its tiles")

    def add_cells(self, cells, what: str = ""):
        """Read ``cells`` of the shown result and add them with the chosen label (returns the worker)."""
        if self.runner.busy:
            notify.info("Collect tiles: an add is running; wait for it or press Cancel.")
            return None
        if self.qc.fmap is None:
            notify.error("Collect tiles: score an image first.")
            return None
        if not cells:
            notify.info(f"Collect tiles: no {what} tiles to add." if what else "Collect tiles: no tiles to add.")
            return None

        try:
            opener = self._open_source()
            folder = self.collection().folder
        except (OSError, ValueError) as exc:
            notify.error(f"Collect tiles: {exc}")
            return None
        settings().setValue("collect/folder", self.folder.text().strip())
        return self.runner.start(CollectJob(self, folder, opener, cells))

    def add_tile(self, row: int, col: int):
        fmap = self.qc.fmap
        if fmap is None or not fmap.scored[row, col]:
            notify.info(f"Collect tiles: tile {row}, {col} has no tissue score; only scored tiles are collected.")
            return None
        return self.add_cells([(row, col)])

    def _on_click(self, viewer, event):
        """Ctrl-click (no drag) on the result's heatmap or exclusions adds the tile under the mouse."""
        from napari_focusq.napari.widgets.review_controller import tile_click

        yield from tile_click(self.qc, viewer, event, (COLLECT_MODIFIER,), self.add_tile)

    def _on_started(self) -> None:
        self.progress_bar.setValue(0)
        self.progress_bar.setVisible(True)
        self.refresh()

    def _on_finished(self) -> None:
        self.progress_bar.setVisible(False)
        self.refresh()

    def cancel(self, *_) -> None:
        self.runner.cancel()

    def undo(self, *_) -> int:
        """Undo the last add (quick: a table rewrite, done here); returns the tiles removed."""
        if self.last_add is None or self.runner.busy:
            return 0
        try:
            n = self.last_add.undo()
        except (OSError, ValueError) as exc:
            notify.error(f"Collect tiles: cannot undo: {exc}")
            return 0
        self.last_add = None
        notify.info(f"Collect tiles: undone ({n} tile{'s' if n != 1 else ''} removed).")
        self.refresh()
        return n


class CollectJob(Job):
    """Read tiles of the shown result and add them to the collection with the chosen label."""

    title = bar = "Collect tiles"
    cancelled_text = "Collect tiles: cancelled; the collection was not changed."

    def __init__(self, box: CollectBox, folder, opener, cells):
        self.box, self.folder, self.opener, self.cells = box, folder, opener, cells
        self.fmap, self.label = box.qc.fmap, box.current_label()

    def events(self):
        from napari_focusq.review.collect import iter_add_cells

        return iter_add_cells(self.folder, self.opener, self.fmap, self.cells, self.label)

    def on_event(self, ev) -> None:
        show_progress(self.box.progress_bar, ev, ev.message)

    def on_result(self, added) -> None:
        self.box.last_add = added
        n, label = len(added.ids), added.label
        again = len(added.previous)
        notify.info(f"Collect tiles: added {n} tile{'s' if n != 1 else ''} as {label}"
                    + (f" ({again} already collected: relabelled)" if again else "") + f" to {added.folder}.")
