"""The run-wide ``results.tsv``: its columns, one row per input, appended or upserted atomically,
and read back (older headers upgraded in place).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from napari_focusq._atomic import UMASK
from napari_focusq.config import DEFAULT_THRESHOLD_UM
from napari_focusq.scoring.focusmap import FocusMap

#: Columns of ``results.tsv``, in order. New columns go at the end, so a table written by
#: an older version (whose header is a prefix of this one) can be upgraded in place.
#: ``tiles`` counts the whole tile grid, glass included; ``tissue_tiles`` the tiles with
#: enough tissue to be scored, over which the defocus figures and ``excluded_pct`` are
#: taken (``tissue_pct`` = 100 * tissue_tiles / tiles).


#: Columns of ``results.tsv``, in order. New columns go at the end, so a table written by
#: an older version (whose header is a prefix of this one) can be upgraded in place.
#: ``tiles`` counts the whole tile grid, glass included; ``tissue_tiles`` the tiles with
#: enough tissue to be scored, over which the defocus figures and ``excluded_pct`` are
#: taken (``tissue_pct`` = 100 * tissue_tiles / tiles).
RESULTS_COLUMNS = (
    "input", "stem", "status", "tissue_pct", "excluded_pct", "median_um", "p90_um", "mean_um",
    "pass", "model", "modality", "pixel_size_um", "tiles", "seconds", "error",
    "pooled_um", "uncertain_pct", "tissue_tiles",
    "na", "immersion_n", "wavelength_um", "optics_source", "field_um",
    # the pathologist's review (Review slides widget): accepted/rejected, who, their comment
    "review", "reviewed_by", "review_comment",
)


# ------------------------------------------------------------------------ results.tsv
def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.{digits}f}"
    return str(v)


def results_row(fmap: FocusMap | None, *, stem: str, input_path, seconds: float,
                threshold_um: float = DEFAULT_THRESHOLD_UM, status: str = "ok", error: str = "",
                excluded=None) -> dict:
    """One ``results.tsv`` row (strings keyed by :data:`RESULTS_COLUMNS`).

    ``fmap`` may be None for a failed input: the figures are then empty and ``status`` /
    ``error`` say what happened. ``pass`` is "yes" when the 90th percentile of scored
    tiles is within ``threshold_um``. ``tiles`` is the whole grid (glass included),
    ``tissue_tiles`` the scored tiles the figures are computed over.
    """
    row = dict.fromkeys(RESULTS_COLUMNS, "")
    row.update(input=str(input_path), stem=stem, status=status, seconds=f"{seconds:.2f}", error=str(error))
    if fmap is not None:
        s = fmap.summary(threshold_um, excluded)
        row.update(
            tissue_pct=_fmt(s["tissue_pct"], 2), excluded_pct=_fmt(s["excluded_pct"], 2),
            median_um=_fmt(s["median_um"]), p90_um=_fmt(s["p90_um"]), mean_um=_fmt(s["mean_um"]),
            model=fmap.model, modality=fmap.modality,
            pixel_size_um=_fmt(fmap.pixel_size_um, 4), tiles=str(s["tiles"]),
            pooled_um=_fmt(s["pooled_um"]), uncertain_pct=_fmt(s["uncertain_pct"], 2),
            tissue_tiles=str(s["tissue_tiles"]),
        )
        row["pass"] = _fmt(bool(s["pass"]))
        o = fmap.extra.get("optics")
        if o:
            w = o["wavelengths_um"]
            row.update(na=_fmt(o["na"]), immersion_n=_fmt(o["immersion_n"]),
                       wavelength_um=_fmt(w[len(w) // 2]), optics_source=o["source"]["na"])
        if "field_um" in fmap.extra:  # fluorescence: the whole field's reading (sparse_scoring.py)
            row["field_um"] = _fmt(fmap.extra["field_um"])
    return row


def _clean(v) -> str:
    # one row must stay one line of tab-separated fields, whatever an error message holds
    return re.sub(r"[\t\r\n]+", " ", "" if v is None else str(v)).strip()


def _line(values) -> bytes:
    return ("\t".join(_clean(v) for v in values) + "\n").encode("utf-8")


def append_results(tsv_path, row: dict) -> None:
    """Append one row to ``results.tsv``, creating it with a header if missing.

    The file appears complete with its header (written to a temporary file and linked
    into place, which fails rather than overwrites if another process was first), and
    each row is one ``write`` of one whole line to a descriptor opened with ``O_APPEND``.
    That is chosen over rewrite-and-rename because several processes (batch workers) may
    append to the same file: rewriting would race and drop rows, while appends of one
    short line do not interleave on a local file system and a reader never sees a
    partial file (a crash can at worst cut the last line short).
    """
    path = Path(tsv_path)
    unknown = set(row) - set(RESULTS_COLUMNS)
    if unknown:
        raise ValueError(f"{path}: unknown results columns {sorted(unknown)}")
    if not path.exists():
        _create_with_header(path)
    with open(path, "rb") as fh:
        header = fh.readline().decode("utf-8").rstrip("\n").split("\t")
    if tuple(header) != RESULTS_COLUMNS:
        if not _is_older_header(header):
            raise ValueError(f"{path}: not a focusq results table (header {header[:4]}...); "
                             "choose another output folder or move the file away")
        _upgrade_table(path)
    line = _line(row.get(c, "") for c in RESULTS_COLUMNS)
    with open(path, "rb") as fh:  # a crash may have cut the last line: end it, not glue onto it
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = b"\n" + line
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:  # disk full, read-only: say which file
        from napari_focusq._atomic import _named

        raise _named(exc, path) from None


def upsert_results(tsv_path, row: dict, key: str = "stem") -> None:
    """Put ``row`` into ``results.tsv``, replacing any row with the same ``key`` (one row per slide).

    Unlike :func:`append_results` this rewrites the table (atomically: temporary file,
    then rename); it is for single writers such as the widgets, never for batch workers.
    Columns of ``row`` left out keep the old row's values (a review keeps the scores).
    """
    from napari_focusq._atomic import write_text

    path = Path(tsv_path)
    unknown = set(row) - set(RESULTS_COLUMNS)
    if unknown:
        raise ValueError(f"{path}: unknown results columns {sorted(unknown)}")
    if path.exists():
        with open(path, "rb") as fh:
            header = fh.readline().decode("utf-8").rstrip("\n").split("\t")
        if tuple(header) != RESULTS_COLUMNS and not _is_older_header(header):
            raise ValueError(f"{path}: not a focusq results table (header {header[:4]}...); "
                             "choose another output folder or move the file away")
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: output folder {path.parent} does not exist")
    rows, placed = [], False
    for old in read_results(path):
        if old.get(key) == row.get(key):
            if not placed:
                rows.append({**old, **row})
                placed = True
            continue
        rows.append(old)
    if not placed:
        rows.append(dict(row))
    lines = [_line(RESULTS_COLUMNS)] + [_line(r.get(c, "") for c in RESULTS_COLUMNS) for r in rows]
    write_text(path, b"".join(lines).decode("utf-8"))


def _is_older_header(header) -> bool:
    """A header written by an older focusq: a shorter prefix of :data:`RESULTS_COLUMNS`.

    The first tables ended at ``error``; anything shorter is not ours.
    """
    n = len(header)
    return RESULTS_COLUMNS.index("error") < n < len(RESULTS_COLUMNS) and tuple(header) == RESULTS_COLUMNS[:n]


def _upgrade_table(path: Path) -> None:
    """Rewrite an older ``results.tsv`` with today's header, its rows kept (new columns empty).

    Atomic (temporary file, then rename). Done once, when the first row of a newer
    version is appended to an older table; unlike appends it is not safe against another
    process appending at the very same moment, which an upgrade between runs never meets.
    """
    from napari_focusq._atomic import write_text

    lines = [_line(RESULTS_COLUMNS)] + [_line(r.get(c, "") for c in RESULTS_COLUMNS) for r in read_results(path)]
    write_text(path, b"".join(lines).decode("utf-8"))


def _create_with_header(path: Path) -> None:
    if not path.parent.exists():
        raise FileNotFoundError(f"{path}: output folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_line(RESULTS_COLUMNS))
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; a results table is for sharing
        try:
            os.link(tmp, path)  # never replaces: if another writer was first, keep theirs
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links: exclusive create, one write
            try:
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return
            with os.fdopen(fd2, "wb") as fh:
                fh.write(_line(RESULTS_COLUMNS))
    finally:
        os.unlink(tmp)


def read_results(tsv_path) -> list[dict]:
    """Rows of a ``results.tsv`` as dicts of strings (an empty list if the file is missing)."""
    path = Path(tsv_path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    # a row with fewer fields than the header is one a crash cut short: not a result
    return [dict(zip(header, f)) for f in (ln.split("\t") for ln in lines[1:] if ln.strip())
            if len(f) >= len(header)]
