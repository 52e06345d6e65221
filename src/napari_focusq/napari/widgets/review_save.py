"""Review slides' Accept / Reject / Save: the review saved beside the outputs, then the next slide to review.

Functions of the Review slides panel (``panel``); what is written is
:func:`napari_focusq.review.queue.save_review`'s (``<stem>.review.json``, the exclusion
files, the ``results.tsv`` row and ``report.html``).
"""
from __future__ import annotations

from napari_focusq.napari.widgets import notify
from napari_focusq.napari.widgets.workers import settings


def save_verdict(panel, verdict: str | None = None, advance: bool = False) -> dict | None:
    """Save the current slide's review (``verdict`` None keeps the saved one); optionally go on."""
    from napari_focusq.review.queue import read_review, save_review, slide_state

    if panel.current is None or panel.folder is None:
        return None
    e = panel.entries[panel.current]
    qc = panel.qc_widget()
    if e["status"] != "ok" or qc.fmap is None or qc.excluded_grid() is None:
        notify.error("Review slides: this slide has no result to review.")
        return None
    if verdict is None:
        verdict = (e.get("review") or {}).get("verdict", "")
    reviewer = panel.reviewer.text().strip()
    settings().setValue("review/reviewer", reviewer)
    roi = qc.roi.get("rings") if getattr(qc, "roi", None) else None
    try:
        rec = save_review(panel.folder, e["stem"], qc.fmap, excluded=qc.excluded_grid(),
                          threshold_um=qc.threshold_slider.value(), verdict=verdict,
                          comment=panel.comment.text().strip(), reviewed_by=reviewer, roi_rings=roi)
    except (OSError, ValueError) as exc:
        notify.error(f"Review slides: could not save the review of {e['stem']} in {panel.folder}: {exc}")
        return None
    e["review"], e["review_error"] = read_review(panel.folder, e["stem"]), ""
    e["state"] = slide_state(e)
    if panel.table.row_of(panel.current) is not None:
        panel.table.refill_row(panel.current, e)
        panel._apply_filter()
    panel._show_status(panel.current)
    notify.info(f"Review slides: {e['stem']} saved ({verdict or 'no verdict'}).")
    if advance:
        advance_after_save(panel)
    return rec


def advance_after_save(panel):
    """Go to the next slide still to review after this one in the list (or the next one)."""
    order = panel.visible_order()
    start = order.index(panel.current) + 1 if panel.current in order else 0
    for i in order[start:] + order[:start]:
        e = panel.entries[i]
        if e["status"] in ("ok", "") and e["state"] not in ("accepted", "rejected"):
            panel.select(i)
            return
    panel.status.setText("All slides in the list are reviewed.")
