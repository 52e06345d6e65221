"""A review queue from a plain list of slides (issue 20, brief R20 item 1), without Qt."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PX = 0.499


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> list[Path]:
    import tifffile

    from napari_focusq.io.formats import open_image, sample_slide_path

    src = tmp_path_factory.mktemp("slides")
    with open_image(sample_slide_path()) as s:
        plane = np.asarray(s.read_plane())
    paths = []
    for i, (y, x) in enumerate(((2000, 650), (1500, 500))):
        p = src / f"q{i}.tif"
        tifffile.imwrite(p, plane[y:y + 700, x:x + 700], photometric="rgb",
                         resolution=(1e4 / PX, 1e4 / PX), resolutionunit="CENTIMETER")
        paths.append(p)
    nopx = src / "nopx.tif"  # no pixel size in the file: an error row that says what to do
    tifffile.imwrite(nopx, plane[:400, :400], photometric="rgb")
    paths.append(nopx)
    return paths


def test_queue_from_a_list_scores_like_focusq_score(slides, tmp_path):
    from napari_focusq.export.results import read_results
    from napari_focusq.progress import drive
    from napari_focusq.review.queue import first_unreviewed, list_slides, load_stored
    from napari_focusq.review.slide_list import QUEUE_NAME, add_slides, iter_score_into

    lst = tmp_path / "todo.txt"  # a list as focusq batch takes: relative paths, comments, a typo
    lst.write_text(f"# Monday\n{slides[0]}\n{slides[1].name}\nmissing.tif\n")
    (tmp_path / slides[1].name).write_bytes(slides[1].read_bytes())
    out = tmp_path / "out"
    queue, missing = add_slides(out, [lst])
    assert [p.name for p in queue] == ["q0.tif", "q1.tif"] and [p.name for p in missing] == ["missing.tif"]
    queue, _ = add_slides(out, [slides[0], slides[2]])  # adding again: no duplicates, order kept
    assert [p.name for p in queue] == ["q0.tif", "q1.tif", "nopx.tif"]
    assert (out / QUEUE_NAME).exists() and not (out / "results.tsv").exists()

    entries = list_slides(out)
    assert [(e["stem"], e["state"]) for e in entries] == [("q0", "not scored"), ("q1", "not scored"),
                                                          ("nopx", "not scored")]
    assert first_unreviewed(entries) == 0  # a slide still to score is still to review

    events = []
    row = drive(iter_score_into(entries[0]["input"], out, "q0", model="default"), events.append)
    assert row["status"] == "ok" and any(e.stage == "score" for e in events)
    for ext in (".tiles.csv", ".heatmap.tif", ".mask.png", ".geojson", ".overlay.png", ".tiles.geojson.gz",
                ".tiles.geojson.zip"):
        assert (out / f"q0{ext}").stat().st_size > 0  # the outputs of focusq score
    assert (out / "report.html").exists()
    fmap, _t, _ex = load_stored(out, "q0")  # what the review opens without rescoring
    assert fmap.scored.any()
    bad = drive(iter_score_into(entries[2]["input"], out, "nopx", model="default"))
    assert bad["status"] == "error" and "pixel size" in bad["error"] and "Focus QC" in bad["error"]

    again = {e["stem"]: e for e in list_slides(out)}
    assert again["q0"]["state"] in ("pass", "fail") and again["q1"]["state"] == "not scored"
    assert again["nopx"]["state"] == "error"
    rows = read_results(out / "results.tsv")
    assert sorted(r["stem"] for r in rows) == ["nopx", "q0"]  # one row each; q1 still waits
    # scoring q0 again replaces its row (upsert), as Export does
    drive(iter_score_into(entries[0]["input"], out, "q0", model="default"))
    assert sorted(r["stem"] for r in read_results(out / "results.tsv")) == ["nopx", "q0"]


def test_cancelled_scoring_writes_nothing(slides, tmp_path):
    from napari_focusq.review.slide_list import add_slides, iter_score_into

    out = tmp_path / "out"
    add_slides(out, [slides[0]])
    gen = iter_score_into(slides[0], out, "q0", model="default")
    next(gen)
    gen.close()  # what Cancel does (the worker stops draining and closes the generator)
    assert sorted(p.name for p in out.iterdir()) == ["review_slides.txt"]
