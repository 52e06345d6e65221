"""report.html: self-contained, one row per slide (latest row wins), small embedded overlays, escaped text."""
from __future__ import annotations

import base64
import html.parser
import io
import json

import numpy as np
import pytest
from PIL import Image

from napari_focusq.export.report import THUMB_MAX_WIDTH, write_report
from napari_focusq.export.results import RESULTS_COLUMNS, append_results


def _row(**kw) -> dict:
    r = dict.fromkeys(RESULTS_COLUMNS, "")
    r.update(kw)
    return r


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.imgs, self.headers, self.external = [], [], [], []
        self._cell = None
        self._tag = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._tag = tag
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self.rows[-1].append(a.get("data-v"))
        elif tag == "img":
            self.imgs.append(a["src"])
        elif tag in ("script", "link") and (a.get("src") or a.get("href")):
            self.external.append(a)

    def handle_data(self, data):
        if self._tag == "th" and data.strip():
            self.headers.append(data.strip())


@pytest.fixture
def out_dir(tmp_path):
    yy, xx = np.mgrid[0:700, 0:1200]
    img = np.stack([xx % 256, yy % 256, (xx // 5 + yy // 7) % 256], -1).astype(np.uint8)
    for stem in ("a", "b"):  # a 1200 px wide stand-in for a real overlay
        Image.fromarray(img).save(tmp_path / f"{stem}.overlay.png", compress_level=1)
    tsv = tmp_path / "results.tsv"
    append_results(tsv, _row(input="/s/a.svs", stem="a", status="error", error="old failure"))
    append_results(tsv, _row(input="/s/a.svs", stem="a", status="ok", tissue_pct="55.00", excluded_pct="3.10",
                             median_um="0.800", p90_um="1.900", **{"pass": "yes"}, seconds="4.20"))
    append_results(tsv, _row(input="/s/b.svs", stem="b", status="ok", tissue_pct="12.00", excluded_pct="40.00",
                             median_um="2.500", p90_um="5.100", **{"pass": "no"}, seconds="3.00"))
    append_results(tsv, _row(input="/s/c<x>.svs", stem="c_x", status="error", seconds="0.10",
                             error="bad <script>alert(1)</script> file"))
    (tmp_path / "run.json").write_text(json.dumps({"seconds": 12.5, "skipped": 1, "model": "fast 0.1.0",
                                                    "options": {"threshold_um": 2.0}, "finished": "now"}))
    return tmp_path


def test_report_rows_images_and_escaping(out_dir):
    path = write_report(out_dir)
    assert path == out_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    body = [r for r in page.rows if r]  # the header row has no td
    assert len(body) == 3  # a.svs once (its latest row), b, c
    assert [r[0] for r in body] == ["a", "b", "c_x"]
    assert body[0][7] == "ok" and body[2][7] == "error"
    for h in ("tissue %", "excluded %", "median µm", "p90 µm", "pass", "seconds", "status", "error"):
        assert h in page.headers
    assert "<script>alert" not in text and "&lt;script&gt;" in text
    assert not page.external  # self-contained
    assert "addEventListener('click'" in text
    assert len(page.imgs) == 2
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert im.format == "PNG" and im.width == THUMB_MAX_WIDTH and im.height == round(700 * 400 / 1200)
    assert path.stat().st_size < 600_000
    assert "12.5 s" in text and "fast 0.1.0" in text


def test_report_without_results_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.tsv"):
        write_report(tmp_path)


def test_report_missing_overlay_still_writes(out_dir):
    (out_dir / "b.overlay.png").unlink()
    (out_dir / "a.overlay.png").write_bytes(b"not a png")
    page = _Page()
    page.feed(write_report(out_dir).read_text(encoding="utf-8"))
    assert page.imgs == [] and len([r for r in page.rows if r]) == 3
