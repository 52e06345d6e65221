"""Review slides end to end on a folder made by ``focusq batch``: open, step, edit, save, reopen."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import shot

PX = 0.499
CROPS = ((2000, 650), (2300, 1100), (1500, 500))
SIZE = 1000  # 1000 px at 0.499 µm: a 4 x 4 tile grid


@pytest.fixture(scope="module")
def batch_folder(tmp_path_factory):
    """Three slides scored by ``focusq batch`` with the shipped model (one worker process) and a corrupt file.

    s1's right half is defocused by 3 µm (simulated), so the review has something to see.
    """
    import tifffile

    from napari_focusq.batch import main_batch
    from napari_focusq.demo import make_half_defocused
    from napari_focusq.io.formats import open_image, sample_slide_path

    root = tmp_path_factory.mktemp("review")
    src = root / "in"
    src.mkdir()
    with open_image(sample_slide_path()) as s:
        plane = np.asarray(s.read_plane())
    for i, (y, x) in enumerate(CROPS):
        img = plane[y:y + SIZE, x:x + SIZE]
        if i == 1:
            img = make_half_defocused(img, pixel_size_um=PX, z_um=3.0)
        tifffile.imwrite(src / f"s{i}.tif", img, photometric="rgb",
                         resolution=(1e4 / PX, 1e4 / PX), resolutionunit="CENTIMETER")
    (src / "corrupt.tif").write_bytes(b"II*\x00" + os.urandom(300))
    out = root / "out"
    args = argparse.Namespace(inputs=[str(src)], out=str(out), scheduler=None, workers=1, model="default",
                              pixel_size=None, modality="auto", threshold_um=2.0, slice="auto", level=None)
    assert main_batch(args) == 1  # one input failed (the corrupt one), the rest were scored
    return out


def test_review_queue_end_to_end(make_napari_viewer_proxy, qtbot, notes, batch_folder, tmp_path):
    import tifffile
    from qtpy.QtWidgets import QShortcut

    from napari_focusq.export.results import read_results

    out = batch_folder
    viewer = make_napari_viewer_proxy()
    _, rw = viewer.window.add_plugin_dock_widget("napari-focusq", "Review slides")
    rw.reviewer.setText("dr-a")
    assert rw.open_folder(out), notes["error"]
    assert sorted(e["stem"] for e in rw.entries) == ["corrupt", "s0", "s1", "s2"]
    states = {e["stem"]: e["state"] for e in rw.entries}
    assert states["corrupt"] == "error" and {states[s] for s in ("s0", "s1", "s2")} <= {"pass", "fail"}
    assert sorted(k.key().toString() for k in rw.findChildren(QShortcut)) == ["PgDown", "PgUp"]

    # opened on the first slide to review, with its stored heatmap: no rescoring
    first = rw.entries[rw.current]
    assert first["status"] == "ok"
    qc = rw.qc_widget()
    stored = tifffile.imread(out / f"{first['stem']}.heatmap.tif")
    from napari_focusq.napari.edge_tiles import whole_tiles_grid

    np.testing.assert_array_equal(qc.fmap.defocus_um, stored)
    np.testing.assert_array_equal(viewer.layers["Defocus (µm)"].data, whole_tiles_grid(qc.fmap))  # edge: own layer
    assert f"{first['stem']}.tif" in viewer.layers and not any(ly.name.endswith("[scoring]") for ly in viewer.layers)
    assert qc.fmap is not None and qc.fmap.shape == stored.shape
    shot(viewer, "review_open.png", tmp_path)

    # edit: exclude a scored tile by hand, comment, accept -> saved, on to the next slide to review
    r, c = map(int, np.argwhere(qc.fmap.scored & ~qc.excluded_grid())[0])
    qc.toggle_tile(r, c)
    edited = qc.excluded_grid().copy()
    rw.comment.setText("left edge soft; fine for diagnosis")
    shot(viewer, "review_edit.png", tmp_path)
    rec = rw.save("accepted", advance=True)
    assert rec is not None and [r, c] in rec["excluded"]
    side = json.loads((out / f"{first['stem']}.review.json").read_text())
    assert side["verdict"] == "accepted" and side["reviewed_by"] == "dr-a" and side["comment"].startswith("left")
    assert rw.current is not None and rw.entries[rw.current]["stem"] != first["stem"]
    second = rw.entries[rw.current]["stem"]
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*review*"))  # nothing half-written left behind

    rows = {row["stem"]: row for row in read_results(out / "results.tsv")}
    assert len(read_results(out / "results.tsv")) == 4  # one row per slide, still
    assert rows[first["stem"]]["review"] == "accepted" and rows[first["stem"]]["reviewed_by"] == "dr-a"
    assert rows[first["stem"]]["review_comment"] == "left edge soft; fine for diagnosis"
    assert rows[second]["review"] == ""
    report = (out / "report.html").read_text()
    assert "accepted" in report and "dr-a" in report
    tiles = (out / f"{first['stem']}.tiles.csv").read_text().splitlines()
    assert any(t.startswith(f"{r},{c},") and t.split(",")[8] == "1" for t in tiles)  # the exports follow

    # step: next / previous move through the list as shown; reject the second
    rw.previous()
    assert rw.entries[rw.current]["stem"] == first["stem"]
    rw.next()
    assert rw.entries[rw.current]["stem"] == second
    rw.save("rejected")
    assert read_review_state(out, second) == "rejected"

    # sort and filter
    rw.table.sortItems(3)  # p90, ascending, empty (error) last
    p90 = [rw.entries[i]["p90_um"] for i in rw.visible_order()]
    assert p90[-1] == "" and [float(v) for v in p90[:-1]] == sorted(float(v) for v in p90[:-1])
    rw.filter.setCurrentText("error")
    assert [rw.entries[i]["stem"] for i in rw.visible_order()] == ["corrupt"]
    rw.filter.setCurrentText("reviewed")
    assert sorted(rw.entries[i]["stem"] for i in rw.visible_order()) == sorted([first["stem"], second])
    rw.filter.setCurrentText("all")
    rw.search.setText("s2")
    assert [rw.entries[i]["stem"] for i in rw.visible_order()] == ["s2"]
    rw.search.setText("")
    shot(viewer, "review_list.png", tmp_path)

    # reopen in a fresh viewer: lands on the first unreviewed slide; the saved edits are there
    viewer2 = make_napari_viewer_proxy()
    _, rw2 = viewer2.window.add_plugin_dock_widget("napari-focusq", "Review slides")
    assert rw2.open_folder(out)
    left = [s for s in ("s0", "s1", "s2") if s not in (first["stem"], second)]
    assert rw2.entries[rw2.current]["stem"] == left[0]
    rw2.select(next(i for i, e in enumerate(rw2.entries) if e["stem"] == first["stem"]))
    qc2 = rw2.qc_widget()
    np.testing.assert_array_equal(qc2.excluded_grid(), edited & qc2.fmap.scored)
    assert rw2.comment.text() == "left edge soft; fine for diagnosis"
    assert qc2.manual_edit_count() >= 1  # the hand edit is known as one (kept across threshold moves)


def read_review_state(out: Path, stem: str) -> str:
    from napari_focusq.review.queue import list_slides

    return next(e["state"] for e in list_slides(out) if e["stem"] == stem)


def test_review_folder_errors(make_napari_viewer_proxy, notes, tmp_path):
    viewer = make_napari_viewer_proxy()
    _, rw = viewer.window.add_plugin_dock_widget("napari-focusq", "Review slides")
    assert not rw.open_folder(tmp_path / "missing") and "no such folder" in notes["error"][-1]
    assert not rw.open_folder(tmp_path) and "no results.tsv" in notes["error"][-1]
