"""A review queue made from a plain list of slides (no Qt): slides not scored yet, scored into the queue's folder.

The queue lives in the output folder: ``review_slides.txt`` lists its slides (one
absolute path a line, the format ``focusq batch`` reads as a list), so reopening the
folder shows them again. A slide with no ``results.tsv`` row yet is "not scored";
:func:`iter_score_into` scores it exactly as ``focusq score`` does (same pipeline, same
outputs, same row) and :func:`record_result` stores a result scored elsewhere (Focus QC)
the same way. Rows are upserted (one per slide) and keep the slide's review.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Generator

from napari_focusq._atomic import write_text
from napari_focusq.config import DEFAULT_THRESHOLD_UM
from napari_focusq.progress import Progress

QUEUE_NAME = "review_slides.txt"


def _key(path) -> str:
    return os.path.abspath(os.fspath(path))


def queued_slides(folder) -> list[Path]:
    """The slides of the folder's queue file, in order (none if it has no queue)."""
    p = Path(folder) / QUEUE_NAME
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    return [Path(s) for s in dict.fromkeys(ln.strip() for ln in lines) if s and not s.startswith("#")]


def add_slides(folder, specs) -> tuple[list[Path], list[Path]]:
    """Add slides (files, a ``.txt`` list like ``focusq batch`` takes, folders, globs) to the folder's queue.

    Returns (the whole queue, the paths that do not exist). The queue file is written
    atomically; the folder is created if needed.
    """
    from napari_focusq.io.inputs import expand_inputs

    found, missing = expand_inputs([os.fspath(s) for s in specs])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    queue = list(dict.fromkeys([_key(p) for p in queued_slides(folder)] + [_key(p) for p in found]))
    write_text(folder / QUEUE_NAME, "# napari-focusq review queue: one slide a line\n" + "\n".join(queue) + "\n")
    return [Path(q) for q in queue], list(missing)


def unscored_entries(folder, scored: list[dict]) -> list[dict]:
    """Entries (as :func:`napari_focusq.review.list_slides` gives) for queued slides without a row yet."""
    from napari_focusq.export.outputs import unique_stem

    have = {_key(e.get("input", "")) for e in scored if e.get("input")}
    taken = {e["stem"] for e in scored}
    out = []
    for p in queued_slides(folder):
        if _key(p) in have:
            continue
        out.append({"stem": unique_stem(p, taken), "input": str(p), "status": "", "pass": "", "median_um": "",
                    "p90_um": "", "error": "", "review": None, "review_error": "", "state": "not scored"})
    return out


def record_result(fmap, folder, stem: str, input_path, *, seconds: float = 0.0,
                  threshold_um: float = DEFAULT_THRESHOLD_UM) -> dict:
    """Store a scored map as ``focusq score`` would: its outputs, its ``results.tsv`` row (upserted), the report."""
    from napari_focusq.export.outputs import write_outputs
    from napari_focusq.export.results import results_row, upsert_results
    from napari_focusq.review.queue import review_exclusions, with_review

    folder = Path(folder)
    excluded = review_exclusions(folder, stem, fmap)  # a reviewed slide scored again keeps them
    write_outputs(fmap, folder, stem, threshold_um=threshold_um, excluded=excluded)
    row = with_review(results_row(fmap, stem=stem, input_path=input_path, seconds=seconds,
                                  threshold_um=threshold_um, excluded=excluded), folder)
    upsert_results(folder / "results.tsv", row)
    _report(folder)
    return row


def _report(folder: Path) -> None:
    try:
        from napari_focusq.export.report import write_report

        write_report(folder)
    except Exception as exc:  # the report is a convenience; the results are saved
        import logging

        logging.getLogger(__name__).warning("could not rewrite the HTML report: %s", exc)


def iter_score_into(path, folder, stem: str, *, model="default", modality: str = "auto",
                    pixel_size_um: float | None = None, threshold_um: float = DEFAULT_THRESHOLD_UM,
                    optics=None) -> Generator[Progress, None, dict]:
    """Score one slide into ``folder`` (the pipeline and outputs of ``focusq score``), as progress events.

    Closing the generator cancels (nothing is written then). Expected failures
    (unreadable file, unknown pixel size) give an "error" row; the row is returned.
    """
    from napari_focusq.config import ScoreConfig
    from napari_focusq.errors import INPUT_ERRORS
    from napari_focusq.export.outputs import error_reason, iter_score_checked
    from napari_focusq.export.results import results_row, upsert_results

    folder = Path(folder)
    t0 = time.perf_counter()
    try:  # the step focusq score and batch take (export.outputs), with the GUI's hint
        config = ScoreConfig.from_options(pixel_size_um=pixel_size_um, modality=modality, model=model,
                                          threshold_um=threshold_um, optics=optics)
        fmap = yield from iter_score_checked(path, config, pixel_size_hint="open the slide, type its pixel "
                                             "size in Focus QC and score it there")
    except (*INPUT_ERRORS, OSError) as exc:  # no dask to retry an I/O error here: the row says it
        row = results_row(None, stem=stem, input_path=str(path), seconds=time.perf_counter() - t0, status="error",
                          error=error_reason(exc, path))
        upsert_results(folder / "results.tsv", row)
        _report(folder)
        return row
    yield Progress("write", 0, 1, f"writing {stem}'s outputs")
    row = record_result(fmap, folder, stem, str(path), seconds=time.perf_counter() - t0, threshold_um=threshold_um)
    yield Progress("write", 1, 1, "done")
    return row
