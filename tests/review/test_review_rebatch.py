"""Running ``focusq batch`` again over a reviewed folder keeps the review (issue 20, brief R20 item 5)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

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


def test_rescoring_keeps_the_reviewers_exclusions_in_every_output(tmp_path):
    """A reviewed slide scored again (other options, so it is rescored) writes its tiles CSV,
    GeoJSON, mask and results row with the review's exclusions, not the automatic ones."""
    import csv

    from PIL import Image

    from napari_focusq.export.masks import fmap_mask
    from napari_focusq.export.results import read_results
    from napari_focusq.review.queue import load_stored, save_review

    src, out = _slides(tmp_path), tmp_path / "out"
    _batch(src, out, threshold_um=2.0)
    fmap, t, auto = load_stored(out, "s0")
    # The reviewer keeps every automatic exclusion off and clicks away two in-focus tiles instead.
    sharp = np.argwhere(fmap.scored & ~auto)
    assert len(sharp) >= 2
    mine = np.zeros_like(auto)
    mine[tuple(sharp[:2].T)] = True
    save_review(out, "s0", fmap, excluded=mine, threshold_um=t, verdict="accepted", reviewed_by="dr-c")
    _batch(src, out, threshold_um=3.0)  # other options: s0 is rescored

    def csv_excluded(stem):
        with open(out / f"{stem}.tiles.csv", newline="", encoding="utf-8") as fh:
            return {(int(r["row"]), int(r["col"])) for r in csv.DictReader(fh) if r["excluded"] == "1"}

    assert csv_excluded("s0") == {tuple(map(int, rc)) for rc in sharp[:2]}
    again, _, ex = load_stored(out, "s0")
    np.testing.assert_array_equal(ex, mine)
    rows = {r["stem"]: r for r in read_results(out / "results.tsv")}
    assert float(rows["s0"]["excluded_pct"]) == pytest.approx(100 * 2 / fmap.scored.sum(), abs=0.01)
    # the mask is the one the review's exclusions give, not the automatic one at 3 µm
    want, _ = fmap_mask(again, threshold_um=3.0, excluded=mine)
    auto_mask, _ = fmap_mask(again, threshold_um=3.0)
    got = np.asarray(Image.open(out / "s0.mask.png"))
    np.testing.assert_array_equal(got > 0, want > 0)
    assert not np.array_equal(want > 0, auto_mask > 0)
    # a slide without a review keeps the automatic exclusions of its own run
    assert rows["s1"]["review"] == ""


def test_a_result_recorded_from_focus_qc_keeps_the_reviewers_exclusions(tmp_path):
    """record_result (a slide scored in Focus QC into a review folder) keeps a saved review's
    exclusions; a review made on another grid does not apply."""
    import csv

    from napari_focusq.review.queue import save_review
    from napari_focusq.review.slide_list import record_result
    from napari_focusq.scoring.focusmap import FocusMap

    d = np.array([[0.5, 3.5, 0.4], [0.3, 0.2, 5.0]], np.float32)

    def fmap(values):
        return FocusMap(defocus_um=values, tissue_fraction=np.ones_like(values), tile_size_px=320,
                        image_shape=(320 * values.shape[0], 320 * values.shape[1]), pixel_size_um=0.5,
                        modality="brightfield", model="fast")

    def excluded_tiles():
        with open(tmp_path / "s.tiles.csv", newline="", encoding="utf-8") as fh:
            return {(int(r["row"]), int(r["col"])) for r in csv.DictReader(fh) if r["excluded"] == "1"}

    record_result(fmap(d), tmp_path, "s", "s.tif", threshold_um=2.0)
    assert excluded_tiles() == {(0, 1), (1, 2)}  # automatic: beyond 2 µm
    mine = np.zeros(d.shape, bool)
    mine[0, 0] = True
    save_review(tmp_path, "s", fmap(d), excluded=mine, threshold_um=2.0, verdict="accepted")
    row = record_result(fmap(d + 0.1), tmp_path, "s", "s.tif", threshold_um=2.0)  # scored again
    assert excluded_tiles() == {(0, 0)} and row["review"] == "accepted"
    assert float(row["excluded_pct"]) == pytest.approx(100 / 6, abs=0.01)
    record_result(fmap(np.vstack([d, d])), tmp_path, "s", "s.tif", threshold_um=2.0)  # another grid
    assert excluded_tiles() == {(0, 1), (1, 2), (2, 1), (3, 2)}
