"""Running ``focusq batch`` again over a reviewed folder keeps the review (issue 20, brief R20 item 5)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PX = 0.499


def _slides(root: Path) -> Path:
    import tifffile

    from napari_focusq.io.formats import open_image, sample_slide_path

    src = root / "in"
    src.mkdir()
    with open_image(sample_slide_path()) as s:
        plane = np.asarray(s.read_plane())
    for i, (y, x) in enumerate(((2000, 650), (1500, 500))):
        tifffile.imwrite(src / f"s{i}.tif", plane[y:y + 700, x:x + 700], photometric="rgb",
                         resolution=(1e4 / PX, 1e4 / PX), resolutionunit="CENTIMETER")
    return src


def _batch(src, out, threshold_um=2.0):
    from napari_focusq.batch import main_batch

    args = argparse.Namespace(inputs=[str(src)], out=str(out), scheduler=None, workers=1, model="default",
                              pixel_size=None, modality="auto", threshold_um=threshold_um, slice="auto", level=None)
    assert main_batch(args) == 0


def test_rebatch_keeps_review_columns(tmp_path):
    from napari_focusq.export.results import read_results
    from napari_focusq.review.queue import load_stored, save_review

    src, out = _slides(tmp_path), tmp_path / "out"
    _batch(src, out)
    fmap, t, ex = load_stored(out, "s0")
    save_review(out, "s0", fmap, excluded=ex, threshold_um=t, verdict="rejected", comment="re-scan, soft edge",
                reviewed_by="dr-b")
    # again, unchanged (slides skipped), with results.tsv lost, and with other options (slides rescored)
    _batch(src, out)
    (out / "results.tsv").unlink()
    _batch(src, out)
    rows = {r["stem"]: r for r in read_results(out / "results.tsv")}
    assert (rows["s0"]["review"], rows["s0"]["reviewed_by"]) == ("rejected", "dr-b")
    _batch(src, out, threshold_um=3.0)
    rows = {r["stem"]: r for r in read_results(out / "results.tsv")}
    assert len(read_results(out / "results.tsv")) == 2  # one row per slide
    assert (rows["s0"]["review"], rows["s0"]["reviewed_by"]) == ("rejected", "dr-b")
    assert rows["s0"]["review_comment"] == "re-scan, soft edge"
    assert rows["s1"]["review"] == ""
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "re-scan, soft edge" in html and "dr-b" in html
