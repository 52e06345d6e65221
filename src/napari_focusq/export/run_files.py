"""The run-wide files of ``focusq batch`` besides ``results.tsv``: ``manifest.json`` (what is
finished, and with what: a rerun skips it), ``error.log`` (a line per failure) and the
newest-row-per-input clean-up of ``results.tsv`` at the end of a run.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from napari_focusq._atomic import write_text
from napari_focusq.export.results import RESULTS_COLUMNS, read_results

#: The manifest is rewritten at most this often while slides finish (and always at the end).
MANIFEST_EVERY_S = 1.0


class Manifest:
    """``manifest.json``: absolute input path -> what was finished for it, and with what."""

    def __init__(self, path: Path):
        self.path = path
        self.slides: dict[str, dict] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.slides = dict(data.get("slides", {}))
            except (ValueError, AttributeError) as exc:
                logging.getLogger(__name__).warning("%s unreadable (%s): every slide will be redone", path, exc)
        self._saved = 0.0

    def is_complete(self, key: str, model_fp: str, options: dict, out_dir: Path) -> bool:
        e = self.slides.get(key)
        if not e or e.get("status") != "ok" or e.get("model") != model_fp or e.get("options") != options:
            return False
        try:
            st = os.stat(key)
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != (e.get("size"), e.get("mtime_ns")):
            return False
        outs = e.get("outputs") or []
        return bool(outs) and all((out_dir / f).is_file() and (out_dir / f).stat().st_size > 0 for f in outs)

    def save(self, force: bool = True) -> None:
        if not force and time.monotonic() - self._saved < MANIFEST_EVERY_S:
            return
        write_text(self.path, json.dumps({"version": 1, "slides": self.slides}, indent=1, sort_keys=True))
        self._saved = time.monotonic()


def append_line(path: Path, line: str) -> None:
    """Append one line (newlines in it folded to spaces) to ``path`` with a single write."""
    # one write of one line with O_APPEND: a crash can at worst cut the last line short
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (line.replace("\n", " ").replace("\r", " ") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def dedupe_results(tsv: Path) -> None:
    """Keep the newest row per input (a redone slide replaces its earlier row)."""
    rows = read_results(tsv)
    latest: dict[str, dict] = {}
    for r in rows:
        latest.pop(r.get("input", ""), None)
        latest[r.get("input", "")] = r
    if len(latest) == len(rows):
        return
    lines = ["\t".join(RESULTS_COLUMNS)] + ["\t".join(r.get(c, "") for c in RESULTS_COLUMNS) for r in latest.values()]
    write_text(tsv, "\n".join(lines) + "\n")
