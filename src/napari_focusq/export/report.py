"""A self-contained HTML report of an output folder (``report.html``).

One file with inline CSS and JavaScript and every image embedded (base64 PNG), so it can
be mailed or archived alone: a run summary, then a table of slides (click a header to
sort) with each slide's overlay (thumbnail + heatmap + colour bar), downscaled to keep
the file small.
"""
from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

__all__ = ["write_report", "THUMB_MAX_WIDTH"]

#: Overlays are downscaled to at most this width (px) before they are embedded.
THUMB_MAX_WIDTH = 400

# (results.tsv column, header, numeric)
_COLUMNS = (
    ("stem", "slide", False), ("tissue_pct", "tissue %", True), ("excluded_pct", "excluded %", True),
    ("median_um", "median µm", True), ("p90_um", "p90 µm", True), ("pass", "pass", False),
    ("seconds", "seconds", True), ("status", "status", False), ("error", "error", False),
    ("review", "review", False), ("reviewed_by", "reviewed by", False), ("review_comment", "comment", False),
)

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}
.summary{display:flex;flex-wrap:wrap;gap:.6em;margin:.6em 0 1.2em}
.summary div{background:#f3f4f6;border-radius:6px;padding:.4em .8em}
.summary b{display:block;font-size:1.3em}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#fafafa;cursor:pointer;user-select:none;position:sticky;top:0}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td.pass,tr.error td.status{color:#b00020;font-weight:600}
tr.ok td.pass{color:#0a7a2f}
td.err{max-width:28em;color:#b00020;font-size:.9em}
img{max-width:400px;display:block}
.path{color:#666;font-size:.85em;word-break:break-all}
"""

# Sort by a cell's data-v (numbers numerically, empty last) on a header click.
_JS = """
document.querySelectorAll('th').forEach(function(th, i){
  th.addEventListener('click', function(){
    var tbody = th.closest('table').tBodies[0];
    var asc = !th.classList.contains('asc');
    th.parentNode.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
    th.classList.add(asc ? 'asc' : 'desc');
    var num = th.dataset.num === '1';
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function(a, b){
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      if (x === '' && y === '') return 0;
      if (x === '') return 1;
      if (y === '') return -1;
      var d = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return asc ? d : -d;
    });
    rows.forEach(function(r){tbody.appendChild(r);});
  });
});
"""


def _thumb_b64(path: Path, max_width: int = THUMB_MAX_WIDTH) -> str | None:
    """The overlay as a downscaled, palette PNG in base64 (None if missing or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.width > max_width:
                im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
            # 256 colours are plenty for a heatmap over a thumbnail and shrink the file ~3x
            im = im.quantize(256, method=Image.Quantize.MEDIANCUT)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except (OSError, ValueError):
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _latest_rows(tsv: Path) -> list[dict]:
    from napari_focusq.export.results import read_results

    latest: dict[str, dict] = {}
    for r in read_results(tsv):
        latest.pop(r.get("input", ""), None)
        latest[r.get("input", "")] = r
    return list(latest.values())


def _summary_html(rows: list[dict], run: dict) -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    items = [("slides", len(rows)), ("scored", len(ok)),
             ("passed", sum(r.get("pass") == "yes" for r in ok)),
             ("failed QC", sum(r.get("pass") == "no" for r in ok)),
             ("errors", sum(r.get("status") != "ok" for r in rows))]
    if run:
        items += [("skipped (done earlier)", run.get("skipped", "")), ("wall time", f"{run.get('seconds', 0):.1f} s")]
    cells = "".join(f"<div><b>{html.escape(str(v))}</b>{html.escape(k)}</div>" for k, v in items)
    extra = ""
    if run:
        opts = run.get("options", {})
        extra = (f"<p>Model <code>{html.escape(str(run.get('model', '')))}</code>, threshold "
                 f"{html.escape(str(opts.get('threshold_um', '')))} µm; run finished "
                 f"{html.escape(str(run.get('finished', '')))}.</p>")
    return f'<div class="summary">{cells}</div>{extra}'


def _row_html(r: dict, out: Path) -> str:
    status = r.get("status", "")
    cls = "error" if status != "ok" else ("ok" if r.get("pass") == "yes" else "fail")
    tds = []
    for col, _, num in _COLUMNS:
        v = r.get(col, "")
        esc = html.escape(v)
        if col == "stem":
            b64 = _thumb_b64(out / f"{v}.overlay.png") if status == "ok" else None
            img = f'<img alt="overlay of {esc}" src="data:image/png;base64,{b64}">' if b64 else ""
            body = f"<b>{esc}</b><div class=\"path\">{html.escape(r.get('input', ''))}</div>{img}"
            tds.append(f'<td data-v="{esc}">{body}</td>')
        else:
            klass = "num" if num else ("err" if col == "error" else col)
            tds.append(f'<td class="{klass}" data-v="{esc}">{esc}</td>')
    return f'<tr class="{cls}">{"".join(tds)}</tr>'


def write_report(out_dir) -> Path:
    """Write ``out_dir/report.html`` from the folder's ``results.tsv`` and overlays.

    Parameters
    ----------
    out_dir
        An output folder of ``focusq batch`` or ``focusq score``.

    Returns
    -------
    Path
        The report.
    """
    from napari_focusq._atomic import write_text

    out = Path(out_dir)
    tsv = out / "results.tsv"
    if not tsv.exists():
        raise FileNotFoundError(f"{out}: no results.tsv here (run focusq score or focusq batch first)")
    rows = _latest_rows(tsv)
    run = {}
    if (out / "run.json").exists():
        try:
            run = json.loads((out / "run.json").read_text(encoding="utf-8"))
        except ValueError:
            run = {}
    head = "".join(f'<th data-num="{int(num)}">{html.escape(h)}</th>' for _, h, num in _COLUMNS)
    body = "\n".join(_row_html(r, out) for r in rows)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>focusq report: {html.escape(out.name)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>Focus QC: {html.escape(str(out.resolve()))}</h1>\n{_summary_html(rows, run)}\n"
        f"<p>Defocus in µm per 320 px tile at 0.5 µm/px; the overlays share one colour scale. "
        f"Click a column header to sort. Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.</p>\n"
        f"<table id=\"slides\"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>\n"
        f"<script>{_JS}</script></body></html>\n"
    )
    return write_text(out / "report.html", page)
