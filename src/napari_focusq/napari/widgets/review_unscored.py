"""Review slides' queue of slides not scored yet: pick them, score one here, or store Focus QC's result.

Functions of the Review slides panel (``panel``): the queue lives in its folder
(:mod:`napari_focusq.review.slide_list`); a slide scored here runs as a
:class:`ScoreSlideJob` on the panel's JobRunner, and a result scored in Focus QC is
stored as ``focusq score`` would store it.
"""
from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog

from napari_focusq.napari.widgets import notify
from napari_focusq.napari.widgets.jobs import Job, show_progress
from napari_focusq.napari.widgets.workers import settings


def slides_dialog(panel):
    start = settings().value("review/slides", "") or ""
    paths, _ = QFileDialog.getOpenFileNames(panel, "Slides to review (or a .txt list of slides)", start,
                                            "Slides and lists (*)")
    if not paths:
        return
    settings().setValue("review/slides", str(Path(paths[0]).parent))
    folder = panel.folder or (Path(panel.folder_edit.text()) if panel.folder_edit.text().strip() else None)
    if folder is None:
        d = QFileDialog.getExistingDirectory(panel, "Output folder for their results",
                                             settings().value("review/folder", ""))
        if not d:
            return
        folder = Path(d)
    open_slides(panel, paths, folder)


def open_slides(panel, specs, folder) -> bool:
    """Queue slides (files, a .txt list, folders, globs) for review in ``folder`` and show the queue."""
    from napari_focusq.review.slide_list import add_slides

    try:
        _queue, missing = add_slides(folder, specs)
    except OSError as exc:
        notify.error(f"Review slides: cannot write the queue in {folder}: {exc}")
        return False
    if missing:
        notify.error("Review slides: not found, left out: " + ", ".join(str(m) for m in missing))
    return panel.open_folder(folder)


def open_unscored(panel, e: dict) -> None:
    qc = panel.qc_widget()
    panel._close_opened()
    layer = panel._open_slide(e)
    if layer is not None:
        qc.layer_combo.setCurrentText(layer.name)  # Score defocus there scores this slide
    where = "" if layer is not None else f" (slide not found at {e.get('input')})"
    panel.status.setText(f"{e['stem']}: not scored yet – press Score (or Score defocus in Focus QC){where}")


def current_px(panel, qc) -> float | None:
    """The pixel size typed in Focus QC for the opened slide, if any (else the file's own)."""
    names = {ly.name for ly in panel._opened}
    px = float(qc.pixel_size.value())
    return px if px > 0 and qc.layer_combo.currentText() in names else None


def score_current(panel, *_):
    """Score the current (queued) slide into the queue's folder in a worker; its row fills in."""
    if panel.busy or panel.current is None or panel.folder is None:
        return None
    e = panel.entries[panel.current]
    qc = panel.qc_widget()
    job = ScoreSlideJob(panel, e, model=qc.model_combo.currentData(), modality=qc.modality.currentText(),
                        pixel_size_um=current_px(panel, qc), threshold_um=qc.threshold_slider.value(),
                        optics=qc.optics())
    worker = panel.runner.start(job)
    panel.progress.setRange(0, 0)
    panel._set_enabled()
    panel.status.setText(f"{e['stem']}: scoring…")
    return worker


def reload(panel, stem: str) -> None:
    """Reread the folder (a slide was scored) and open ``stem`` again, now with its stored result."""
    from napari_focusq.review.queue import ReviewError, list_slides

    try:
        panel.entries = list_slides(panel.folder)
    except ReviewError as exc:
        notify.error(f"Review slides: {exc}")
        return
    panel.current = None
    panel._fill_table()
    for i, e in enumerate(panel.entries):
        if e["stem"] == stem:
            panel.select(i)
    panel._set_enabled()


def on_qc_result(panel, fmap):
    """A slide of the queue scored in Focus QC: store it as focusq score would (outputs,
    results row, report: about a second of writing, so in a worker), then fill its row.
    Returns the worker, or None when there is nothing to store."""
    import os

    if panel.folder is None or not fmap.source:
        return None
    src = os.path.abspath(str(fmap.source))
    # only a slide still without a result: a rescore of a scored slide does not overwrite its stored outputs
    match = [e for e in panel.entries if e.get("input") and e.get("status") in ("", "error")
             and os.path.abspath(e["input"]) == src]
    if not match:
        return None
    job = StoreResultJob(panel, match[0], fmap, panel.qc_widget().threshold_slider.value())
    if panel.busy:  # the panel is scoring a queued slide: store here rather than wait for it
        drive_job(job)
        return None
    worker = panel.runner.start(job)
    panel._set_enabled()
    return worker


def drive_job(job) -> None:
    """Run ``job``'s events to the end in this thread, as the runner would (result or failure)."""
    from napari_focusq.progress import drive

    try:
        job.on_result(drive(job.events()))
    except (OSError, ValueError) as exc:
        notify.error(job.failure_text(exc))


class StoreResultJob(Job):
    """Store a result scored in Focus QC into the queue's folder, off the GUI thread."""

    title = "Review slides"

    def __init__(self, panel, entry: dict, fmap, threshold_um: float):
        self.panel, self.stem, self.input = panel, entry["stem"], entry["input"]
        self.fmap, self.threshold_um = fmap, threshold_um

    def events(self):
        from napari_focusq.progress import Progress
        from napari_focusq.review.slide_list import record_result

        yield Progress("store", 0, 1, f"storing the result in {self.panel.folder}")
        row = record_result(self.fmap, self.panel.folder, self.stem, self.input,
                            seconds=float(self.fmap.extra.get("seconds", 0.0)), threshold_um=self.threshold_um)
        yield Progress("store", 1, 1, "stored")
        return row

    def on_event(self, ev) -> None:
        show_progress(self.panel.progress, ev)
        self.panel.status.setText(f"{self.stem}: {ev.message}")

    def failure_text(self, exc) -> str:
        return f"Review slides: could not store {self.stem}'s result in {self.panel.folder}: {exc}"

    def on_finished(self, aborted: bool) -> None:
        if aborted:  # a cancel lands after the store (one call): show what is on disk
            self.on_result(None)

    def on_result(self, row) -> None:
        from napari_focusq.review.queue import list_slides

        panel, qc = self.panel, self.panel.qc_widget()
        # The user may have moved on while it was stored: stay where they are.
        here = panel.entries[panel.current]["stem"] if panel.current is not None else None
        keep = list(panel._opened)
        if here == self.stem:
            keep += [ly for ly in (qc.heatmap, qc.excluded, *qc.extras.values()) if ly is not None]
        panel.entries = list_slides(panel.folder)
        panel._fill_table()
        panel.current = next((i for i, x in enumerate(panel.entries) if x["stem"] == here), None)
        row_i = panel.table.row_of(panel.current) if panel.current is not None else None
        if row_i is not None:
            panel.table.blockSignals(True)  # the result is shown already: no reopening
            panel.table.selectRow(row_i)
            panel.table.blockSignals(False)
            panel._where = ""
            panel._show_status(panel.current)
        panel._opened = keep
        panel._set_enabled()


class ScoreSlideJob(Job):
    """Score a queued slide as ``focusq score`` does, into the review folder; its row then fills in."""

    title = "Review slides"

    def __init__(self, panel, entry: dict, **options):
        self.panel, self.stem, self.input, self.options = panel, entry["stem"], entry["input"], options

    def events(self):
        from napari_focusq.review.slide_list import iter_score_into

        return iter_score_into(self.input, self.panel.folder, self.stem, **self.options)

    def on_event(self, ev) -> None:
        show_progress(self.panel.progress, ev)
        if ev.message:
            self.panel.status.setText(f"{self.stem}: {ev.stage}: {ev.message}")

    def on_result(self, row) -> None:
        if row.get("status") != "ok":
            notify.error(f"Review slides: {self.stem}: {row.get('error')}")
        reload(self.panel, self.stem)

    def failure_text(self, exc) -> str:
        return f"Review slides: scoring {self.stem} failed: {type(exc).__name__}: {exc}"

    def on_finished(self, aborted: bool) -> None:
        if aborted:
            self.panel.status.setText(f"{self.stem}: scoring cancelled; nothing was written.")
