"""The pathologist's review of a folder of ``focusq batch`` / ``focusq score`` outputs (no Qt).

Each slide's review is a sidecar beside its outputs, ``<stem>.review.json`` (written
atomically): the verdict ("accepted" or "rejected"), a free-text comment, who reviewed and
when, the threshold, and the exclusions as the reviewer left them. Saving a review also
rewrites the outputs that carry the exclusions (mask, GeoJSON, tiles CSV, QuPath tiles),
puts ``review``/``reviewed_by``/``review_comment`` into the slide's ``results.tsv`` row, and
rewrites ``report.html``. The stored map is rebuilt from ``<stem>.heatmap.tif`` (grid and
geometry) and ``<stem>.tiles.csv`` (tissue, certainty), so a review never rescores.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from napari_focusq._atomic import write_text
from napari_focusq.errors import ReviewError
from napari_focusq.scoring.focusmap import FocusMap

VERDICTS = ("accepted", "rejected")
SIDECAR_SUFFIX = ".review.json"


def sidecar_path(folder, stem: str) -> Path:
    return Path(folder) / f"{stem}{SIDECAR_SUFFIX}"


def read_review(folder, stem: str) -> dict | None:
    """The saved review of one slide, or None if it has none (a broken sidecar raises ReviewError)."""
    p = sidecar_path(folder, stem)
    if not p.exists():
        return None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReviewError(f"{p}: unreadable review file ({exc})") from None
    if not isinstance(rec, dict):
        raise ReviewError(f"{p}: not a focusq review file")
    return rec


def slide_state(entry: dict) -> str:
    """One word for the list: not scored, error, accepted, rejected, pass or fail."""
    if not entry.get("status"):  # a queued slide (review/slide_list.py) with no results.tsv row yet
        return "not scored"
    if entry.get("status") != "ok":
        return "error"
    verdict = (entry.get("review") or {}).get("verdict")
    if verdict in VERDICTS:
        return verdict
    return "pass" if entry.get("pass") == "yes" else "fail"


def list_slides(folder) -> list[dict]:
    """The slides of an output folder: the latest ``results.tsv`` row of each, with its saved review,
    then the slides of its queue (``review_slides.txt``) that have no row yet ("not scored").

    Each entry: ``{"stem", "input", "status", "pass", "median_um", "p90_um", "error",
    "review" (dict or None), "review_error" (str), "state"}``.
    """
    from napari_focusq.export.results import read_results
    from napari_focusq.review.slide_list import QUEUE_NAME, unscored_entries

    folder = Path(folder)
    tsv = folder / "results.tsv"
    if not folder.is_dir():
        raise ReviewError(f"{folder}: no such folder")
    if not tsv.exists() and not (folder / QUEUE_NAME).exists():
        raise ReviewError(f"{folder}: no results.tsv here; choose a folder written by focusq batch or "
                          "focusq score (or Export in Focus QC), or add slides to review")
    latest: dict[str, dict] = {}
    for r in (read_results(tsv) if tsv.exists() else []):
        latest.pop(r.get("stem", ""), None)
        latest[r.get("stem", "")] = r
    entries = []
    for stem, r in latest.items():
        e = {k: r.get(k, "") for k in ("stem", "input", "status", "pass", "median_um", "p90_um", "error")}
        try:
            e["review"], e["review_error"] = read_review(folder, stem), ""
        except ReviewError as exc:
            e["review"], e["review_error"] = None, str(exc)
        e["state"] = slide_state(e)
        entries.append(e)
    return entries + unscored_entries(folder, entries)


def with_review(row: dict, folder) -> dict:
    """``row`` (a ``results.tsv`` row) with the review columns filled from the slide's sidecar, if it has one.

    ``focusq batch`` writes rows from scratch (a rescored slide, or a results.tsv that was
    lost); the review lives in ``<stem>.review.json`` and must not be lost with them. An
    unreadable sidecar leaves the row as it is (the Review slides list reports it).
    """
    stem = row.get("stem", "")
    try:
        rec = read_review(folder, stem) if stem else None
    except ReviewError:
        rec = None
    if not rec or not rec.get("verdict"):
        return row
    return {**row, "review": str(rec.get("verdict", "")), "reviewed_by": str(rec.get("reviewed_by", "")),
            "review_comment": str(rec.get("comment", ""))}


def review_exclusions(folder, stem: str, fmap: FocusMap) -> np.ndarray | None:
    """The scored tiles of ``fmap`` a saved review excluded (a bool grid); None when the slide
    has no readable review or its review was made on another grid (it names other tiles).

    A slide scored again (``focusq batch``, ``focusq score`` or Focus QC into its folder) keeps
    the reviewer's exclusions in every output that carries exclusions, not only its review columns.
    """
    try:
        rec = read_review(folder, stem)
    except ReviewError:
        return None
    shape = fmap.shape
    if not rec or list(rec.get("grid_shape", shape)) != list(shape):
        return None
    excluded = np.zeros(tuple(shape), bool)
    for r, c in rec.get("excluded", []):
        if 0 <= r < shape[0] and 0 <= c < shape[1]:
            excluded[r, c] = True
    return excluded & fmap.scored


def is_reviewed(entry: dict) -> bool:
    return (entry.get("review") or {}).get("verdict") in VERDICTS


def first_unreviewed(entries: list[dict]) -> int | None:
    """Index of the first slide still to review (scored or not yet scored, without a verdict); None when all are done."""
    for i, e in enumerate(entries):
        if e.get("status") in ("ok", "") and not is_reviewed(e):
            return i
    return None


def load_stored(folder, stem: str) -> tuple[FocusMap, float, np.ndarray]:
    """(map, threshold µm, exclusions) of a slide as stored: the review's exclusions when it has one.

    Raises ReviewError naming the missing or unreadable file.
    """
    import tifffile

    from napari_focusq.export.outputs import read_heatmap_description

    folder = Path(folder)
    heat, tiles = folder / f"{stem}.heatmap.tif", folder / f"{stem}.tiles.csv"
    for p in (heat, tiles):
        if not p.exists():
            raise ReviewError(f"{p}: missing (the slide's outputs are incomplete; score it again)")
    try:
        desc = read_heatmap_description(heat)
        grid = np.asarray(tifffile.imread(heat), np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ReviewError(f"{heat}: not a focusq heatmap ({exc})") from None
    if list(grid.shape) != list(desc.get("grid_shape", grid.shape)):
        raise ReviewError(f"{heat}: grid {grid.shape} does not match its description {desc.get('grid_shape')}")
    tissue = np.zeros(grid.shape, np.float32)
    excluded = np.zeros(grid.shape, bool)
    cert = np.full(grid.shape, np.nan, np.float32)
    unc = np.zeros(grid.shape, bool)
    try:
        with open(tiles, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                r, c = int(row["row"]), int(row["col"])
                tissue[r, c] = float(row["tissue_fraction"] or 0)
                excluded[r, c] = row["excluded"] == "1"
                if row.get("certainty"):
                    cert[r, c] = float(row["certainty"])
                    unc[r, c] = row.get("uncertain") == "1"
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise ReviewError(f"{tiles}: unreadable tiles table ({exc})") from None
    fmap = FocusMap(grid, tissue, tile_size_px=float(desc["tile_size_px"]), image_shape=tuple(desc["image_shape"]),
                    pixel_size_um=float(desc["pixel_size_um"]), modality=str(desc.get("modality", "")),
                    model=str(desc.get("model", "")), origin_px=tuple(desc.get("origin_px", (0.0, 0.0))),
                    source=desc.get("source"))
    if np.isfinite(cert).any():
        fmap.extra["certainty"], fmap.extra["uncertain"] = cert, unc
    threshold = float(desc.get("threshold_um", 2.0))
    review = read_review(folder, stem)  # raises on a broken sidecar: the reviewer must hear of it
    if review is not None:
        threshold = float(review.get("threshold_um", threshold))
        # A review made on another grid (the slide was scored again differently) names other
        # tiles: the tiles table's exclusions stand.
        reviewed = review_exclusions(folder, stem, fmap)
        excluded = excluded if reviewed is None else reviewed
    return fmap, threshold, excluded & fmap.scored


def save_review(folder, stem: str, fmap: FocusMap, *, excluded, threshold_um: float, verdict: str = "",
                comment: str = "", reviewed_by: str = "", roi_rings=None) -> dict:
    """Save one slide's review beside its outputs (see the module docstring); returns the record."""
    from napari_focusq.export.masks import write_tissue_mask
    from napari_focusq.export.qupath import write_qupath_tiles
    from napari_focusq.export.results import _fmt, upsert_results

    folder = Path(folder)
    if verdict not in ("", *VERDICTS):
        raise ValueError(f"verdict must be one of {VERDICTS} or empty; got {verdict!r}")
    excluded = np.asarray(excluded, bool) & fmap.scored
    if excluded.shape != fmap.shape:
        raise ValueError(f"exclusions {excluded.shape} do not match the map {fmap.shape}")
    record = {
        "software": "napari-focusq", "stem": stem, "source": fmap.source, "verdict": verdict,
        "comment": comment, "reviewed_by": reviewed_by,
        "reviewed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "threshold_um": float(threshold_um), "grid_shape": list(fmap.shape),
        "excluded": [[int(r), int(c)] for r, c in np.argwhere(excluded)],
        "roi": roi_rings or None,
    }
    write_text(sidecar_path(folder, stem), json.dumps(record, indent=1, ensure_ascii=False))
    # the outputs that carry the exclusions follow the review
    fmap.to_geojson(folder / f"{stem}.geojson", threshold_um, excluded)
    fmap.to_csv(folder / f"{stem}.tiles.csv", threshold_um, excluded)
    write_qupath_tiles(fmap, folder, stem, threshold_um, excluded, roi_rings)
    write_tissue_mask(fmap, folder / f"{stem}.mask.png", threshold_um=threshold_um, excluded=excluded)
    s = fmap.summary(threshold_um, excluded)
    upsert_results(folder / "results.tsv", {"stem": stem, "excluded_pct": _fmt(s["excluded_pct"], 2),
                                            "review": verdict, "reviewed_by": reviewed_by,
                                            "review_comment": comment})
    try:
        from napari_focusq.export.report import write_report

        write_report(folder)
    except Exception as exc:  # the report is a convenience; the review itself is saved
        logging.getLogger(__name__).warning("could not rewrite the HTML report: %s", exc)
    return record
