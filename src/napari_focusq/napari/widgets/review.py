"""Review slides: step through a folder of ``focusq batch``/``score`` outputs, slide by slide.

The list shows every slide's state (pass, fail, error, accepted, rejected), median and
90th-percentile defocus; click a header to sort, filter by state or name. Selecting a
slide opens it with its stored heatmap and exclusions in the Focus QC panel (no
rescoring), where tiles are clicked in or out as usual. Accept or Reject saves the
review beside the outputs (``<stem>.review.json``, the exclusion files, the
``results.tsv`` row and ``report.html``; see :mod:`napari_focusq.review.queue`) and moves on.
Keyboard: Page Down / Page Up for the next / previous slide.

Slides… starts (or extends) a queue from slide files or a ``.txt`` list, before any
scoring: they show as "not scored"; opening one opens the slide, and Score (here, the
``focusq score`` pipeline into the queue's folder, cancellable) or Score defocus in Focus
QC fills its row (:mod:`napari_focusq.review.slide_list`).
"""
from __future__ import annotations

import getpass
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QFileDialog, QFormLayout, QLineEdit, QProgressBar, QShortcut, QVBoxLayout, QWidget

from napari_focusq.napari.widgets import forms, notify
from napari_focusq.napari.widgets import review_unscored as U
from napari_focusq.napari.widgets.jobs import JobRunner
from napari_focusq.napari.widgets.review_save import save_verdict
from napari_focusq.napari.widgets.review_table import FILTERS, SlideTable
from napari_focusq.napari.widgets.workers import settings

NEXT_KEY, PREV_KEY = "PgDown", "PgUp"



class ReviewWidget(QWidget):
    """Review a folder of Focus QC outputs slide by slide."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.folder: Path | None = None
        self.entries: list[dict] = []
        self.current: int | None = None  # index into entries
        self._opened: list = []  # layers this widget opened (the current slide)
        self.runner = JobRunner(self, on_finished=self._set_enabled)  # scoring a queued slide
        self._qc = None  # the Focus QC panel whose results this widget listens to
        self._build()
        self._wire()
        s = settings()
        self.reviewer.setText(s.value("review/reviewer", "") or _user())

    # ------------------------------------------------------------------ building
    def _build(self):
        form = QFormLayout()
        row, self.folder_edit, self.open_btn = forms.path_row(
            "An output folder with results.tsv and the slides' heatmaps.", "Open…",
            "Choose the output folder to review.", placeholder="folder written by focusq batch / score")
        self.slides_btn = forms.button("Slides…", "Review slides not scored yet: pick slide files or a .txt list "
                                                  "(one path a line, as focusq batch takes); their results go to the "
                                                  "Outputs folder.")
        row.addWidget(self.slides_btn)
        form.addRow("Outputs", row)
        self.reviewer = QLineEdit()
        self.reviewer.setToolTip("Your name or initials, saved with each review (reviewed_by).")
        form.addRow("Reviewer", self.reviewer)
        self.filter = forms.combo(FILTERS, "Show only slides in this state.")
        self.search = QLineEdit()
        self.search.setPlaceholderText("name contains…")
        self.search.setToolTip("Show only slides whose name contains this text.")
        form.addRow("Show", forms.hrow(self.filter, self.search, stretch=1))
        self.table = SlideTable()
        self.status = forms.label("Open an output folder to start.")
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment (saved with the review)")
        self.comment.setToolTip("Free text saved with the review, e.g. “re-scan: blurred left edge”.")
        self.prev_btn = forms.button("◀ Previous", f"Previous slide in the list ({PREV_KEY}).")
        self.accept_btn = forms.button("Accept", "Save the review as accepted (with your exclusions and comment), "
                                                 "then go on.")
        self.reject_btn = forms.button("Reject", "Save the review as rejected (e.g. to re-scan), then go on.")
        self.save_btn = forms.button("Save", "Save exclusions and comment without a verdict change.")
        self.next_btn = forms.button("Next ▶", f"Next slide in the list ({NEXT_KEY}).")
        self.score_btn = forms.button("Score", "Score this slide as focusq score does (Focus QC's model and "
                                               "modality), into the Outputs folder; its row fills in.")
        self.cancel_btn = forms.button("Cancel", "Stop scoring (nothing is written).")
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        srow = forms.hrow(self.score_btn, self.progress, self.cancel_btn, stretch=1)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.status)
        lay.addWidget(self.comment)
        lay.addLayout(forms.hrow(self.prev_btn, self.accept_btn, self.reject_btn, self.save_btn, self.next_btn))
        lay.addLayout(srow)
        self._set_enabled()

    def _wire(self):
        self.open_btn.clicked.connect(self._open_dialog)
        self.slides_btn.clicked.connect(lambda: U.slides_dialog(self))
        self.score_btn.clicked.connect(self.score_current)
        self.cancel_btn.clicked.connect(self.cancel)
        self.folder_edit.returnPressed.connect(lambda: self.open_folder(self.folder_edit.text()))
        self.filter.currentTextChanged.connect(self._apply_filter)
        self.search.textChanged.connect(self._apply_filter)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.prev_btn.clicked.connect(self.previous)
        self.next_btn.clicked.connect(self.next)
        self.accept_btn.clicked.connect(lambda: self.save("accepted", advance=True))
        self.reject_btn.clicked.connect(lambda: self.save("rejected", advance=True))
        self.save_btn.clicked.connect(lambda: self.save(None))
        for key, slot in ((NEXT_KEY, self.next), (PREV_KEY, self.previous)):
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)  # anywhere in the napari window
            sc.activated.connect(slot)

    def _set_enabled(self):
        has = self.current is not None and self.entries[self.current].get("status") == "ok"
        for b in (self.accept_btn, self.reject_btn, self.save_btn):
            b.setEnabled(has)
        self.prev_btn.setEnabled(bool(self.entries))
        self.next_btn.setEnabled(bool(self.entries))
        e = self.entries[self.current] if self.current is not None else {}
        self.score_btn.setEnabled(not self.busy and e.get("status") in ("", "error") and bool(e.get("input")))
        self.cancel_btn.setEnabled(self.busy)
        self.progress.setVisible(self.busy)

    # ------------------------------------------------------------------ folder and list
    def _open_dialog(self):
        d = QFileDialog.getExistingDirectory(self, "Output folder to review",
                                             self.folder_edit.text() or settings().value("review/folder", ""))
        if d:
            self.open_folder(d)

    def open_folder(self, folder) -> bool:
        """List the folder's slides and open the first one still to review (resuming a review)."""
        from napari_focusq.review.queue import ReviewError, first_unreviewed, list_slides

        try:
            entries = list_slides(folder)
        except ReviewError as exc:
            notify.error(f"Review slides: {exc}")
            return False
        self.folder = Path(folder)
        self.folder_edit.setText(str(self.folder))
        settings().setValue("review/folder", str(self.folder))
        self.entries = entries
        self.current = None
        self._fill_table()
        # resume: the first slide still to review, in the order the list shows
        order = self.visible_order()
        i = first_unreviewed([entries[j] for j in order])
        i = None if i is None else order[i]
        if i is None:
            self.status.setText(f"All {sum(e['status'] == 'ok' for e in entries)} scored slides are reviewed.")
            self._where = ""
            i = 0 if entries else None
        if i is not None:
            self.select(i)
        self._set_enabled()
        return True

    def _fill_table(self):
        self.table.fill(self.entries)
        self._apply_filter()

    def _apply_filter(self, *_):
        self.table.show_only(self.entries, self.filter.currentText(), self.search.text())

    def visible_order(self) -> list[int]:
        """Entry indices in the order shown (sorted, filtered)."""
        return self.table.visible_order()

    # ------------------------------------------------------------------ stepping
    def select(self, index: int) -> None:
        row = self.table.row_of(index)
        if row is not None:
            self.table.selectRow(row)  # opens it through _on_selection
            if self.current != index:  # selection unchanged (already selected): open anyway
                self._open(index)

    def _on_selection(self):
        rows = {i.row() for i in self.table.selectedIndexes()}
        if len(rows) == 1:
            i = self.table.index_of_row(rows.pop())
            if i is not None and i != self.current:
                self._open(i)

    def _step(self, delta: int):
        order = self.visible_order()
        if not order:
            return
        if self.current in order:
            pos = min(max(order.index(self.current) + delta, 0), len(order) - 1)
        else:
            pos = 0
        self.select(order[pos])

    def next(self, *_):
        """The next slide in the list as shown."""
        self._step(1)

    def previous(self, *_):
        self._step(-1)

    # ------------------------------------------------------------------ opening a slide
    def qc_widget(self):
        """The Focus QC panel (docked on first use) that shows and edits the slide's tiles."""
        _, w = self.viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
        if w is not self._qc:  # a new panel (the user may have closed the last one)
            self._qc = w
            w.result_shown.connect(self._on_qc_result)
        return w

    def _close_opened(self):
        for ly in self._opened:
            if ly in self.viewer.layers:
                self.viewer.layers.remove(ly)
        self._opened = []

    def _open(self, index: int) -> None:
        """Open slide ``index`` with its stored heatmap and exclusions (never rescored)."""
        from napari_focusq.review.queue import ReviewError, load_stored

        e = self.entries[index]
        self.current = index
        self._set_enabled()
        self.comment.setText((e.get("review") or {}).get("comment", ""))
        if not e["status"]:  # a queued slide: open it to score here or in Focus QC
            U.open_unscored(self, e)
            return
        if e["status"] != "ok":
            self.status.setText(f"{e['stem']}: not scored – {e.get('error') or 'error'}")
            return
        try:
            fmap, threshold, excluded = load_stored(self.folder, e["stem"])
        except ReviewError as exc:
            self.status.setText(f"{e['stem']}: {exc}")
            notify.error(f"Review slides: {exc}")
            return
        qc = self.qc_widget()
        self._close_opened()
        layer = self._open_slide(e)
        src = Path(e.get("input") or "")
        qc.show_stored(fmap, layer, excluded=excluded, threshold_um=threshold)
        for ly in (qc.heatmap, qc.excluded, *qc.extras.values()):
            if ly is not None:
                self._opened.append(ly)
        self._where = "" if layer is not None else f" (slide not found at {src}: heatmap only)"
        self._show_status(index)

    def _show_status(self, index: int) -> None:
        e = self.entries[index]
        rev = e.get("review") or {}
        done = (f" · {rev['verdict']} by {rev.get('reviewed_by') or '?'} {rev.get('reviewed_at', '')}"
                if rev.get("verdict") else "")
        pos = self.visible_order()
        n = f"{pos.index(index) + 1}/{len(pos)}" if index in pos else ""
        qc_state = "pass" if e.get("pass") == "yes" else "fail"
        self.status.setText(f"{n} {e['stem']}: QC {qc_state}, median {e.get('median_um') or '–'} µm, "
                            f"p90 {e.get('p90_um') or '–'} µm{done}{getattr(self, '_where', '')}".strip())

    # ------------------------------------------------------------------ a queue of slides not scored yet
    def open_slides(self, specs, folder) -> bool:
        """Queue slides (files, a .txt list, folders, globs) for review in ``folder`` and show the queue."""
        return U.open_slides(self, specs, folder)

    def score_current(self, *_):
        """Score the current (queued) slide into the queue's folder in a worker; its row fills in."""
        return U.score_current(self)

    def _on_qc_result(self, fmap):
        """A slide of the queue scored in Focus QC: store it as focusq score would (in a worker,
        returned), and fill its row."""
        return U.on_qc_result(self, fmap)

    def cancel(self, *_):
        self.runner.cancel()

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def _open_slide(self, e: dict):
        """Open the slide file of entry ``e`` (its layer, or None after saying why)."""
        src = Path(e.get("input") or "")
        if not src.is_file():
            return None
        try:
            opened = self.viewer.open(str(src), plugin="napari-focusq")
        except Exception as exc:  # an unreadable slide must not stop the review of the others
            notify.error(f"Review slides: cannot open {src}: {exc}")
            return None
        self._opened = list(opened)
        return opened[0] if opened else None

    # ------------------------------------------------------------------ saving
    def save(self, verdict: str | None = None, advance: bool = False) -> dict | None:
        """Save the current slide's review (``verdict`` None keeps the saved one); optionally go on."""
        return save_verdict(self, verdict, advance)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): leave it for the user to type
        return ""
