"""QuPath round trip through the Focus QC widget: Export -> (QuPath) -> Import gives the same exclusions and ROI."""
from __future__ import annotations

import gzip
import json
import zipfile

import numpy as np

TIMEOUT_MS = 120_000


def score(qtbot, w):
    """Score and wait until the widget's job is over (a tiny job may finish before a signal could be awaited)."""
    assert w.score() is not None
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)


def test_export_import_round_trip(qc, qtbot, notes, tmp_path, monkeypatch):
    import napari_focusq.napari.widgets.notify as notify
    from napari_focusq.export.qupath import DEFOCUS, EXCLUDED

    viewer, w = qc
    score(qtbot, w)
    fmap = w.fmap
    r, c = map(int, np.argwhere(fmap.scored & ~w.excluded_grid())[0])
    w.toggle_tile(r, c)  # a hand edit travels too
    exported = w.excluded_grid().copy()
    out = tmp_path / "out"
    out.mkdir()
    paths = w.export(out)
    assert paths is not None, notes["error"]
    doc = json.loads(gzip.decompress(paths["tiles_geojson"].read_bytes()))
    with zipfile.ZipFile(paths["tiles_qupath"]) as zf:  # the file QuPath opens: the same objects
        assert json.loads(zf.read(zf.namelist()[0])) == doc
    tiles = [f for f in doc["features"] if f["properties"]["objectType"] == "tile"]
    assert {f["properties"]["measurements"][EXCLUDED] for f in tiles} == {0, 1}
    assert sum(DEFOCUS in f["properties"]["measurements"] for f in tiles) == int(fmap.scored.sum())

    # in QuPath the user draws a region of interest over tile rows 1-5 and exports (as .geojson)
    y0, x0 = fmap.tile_bounds(1, 0)[:2]
    y1, x1 = fmap.tile_bounds(5, fmap.shape[1] - 1)[2:]
    doc["features"].append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}, "properties": {"objectType": "annotation",
                                                                             "name": "ROI"}})
    qupath_file = tmp_path / "from_qupath.geojson"
    qupath_file.write_text(json.dumps(doc))

    # a fresh score of the same slide (its hand edit gone), then the import
    monkeypatch.setattr(notify, "confirm", lambda *a: True)
    score(qtbot, w)
    assert w.manual_edit_count() == 0 and not np.array_equal(w.excluded_grid(), exported)
    got = w.import_qupath(qupath_file)
    assert got is not None, notes["error"]
    np.testing.assert_array_equal(w.excluded_grid(), exported & w.fmap.scored)
    roi = np.zeros(fmap.shape, bool)
    roi[1:6, :] = True
    np.testing.assert_array_equal(w.roi_grid(), roi)
    assert viewer.layers["Region of interest"].nshapes == 1
    # the summary counts only the tiles inside the ROI
    assert w.summary_dict()["tissue_tiles"] == int((w.fmap.scored & roi).sum()) < int(w.fmap.scored.sum())
    # one undo step takes the import's exclusions back
    w.undo()
    assert not np.array_equal(w.excluded_grid(), exported)
    w.redo()
    np.testing.assert_array_equal(w.excluded_grid(), exported & w.fmap.scored)

    # and back out: the export carries the ROI, a second import gives the same again
    again = w.export(tmp_path / "out")
    assert again is not None
    w.import_qupath(again["tiles_geojson"])
    np.testing.assert_array_equal(w.roi_grid(), roi)
    np.testing.assert_array_equal(w.excluded_grid(), exported & w.fmap.scored)

    bad = tmp_path / "bad.geojson"
    bad.write_text("nope")
    assert w.import_qupath(bad) is None and "bad.geojson" in notes["error"][-1]
