"""QuPath round trip: tile objects with measurements out, Ignore*/ROI annotations back in."""
from __future__ import annotations

import gzip
import json
import zipfile

import numpy as np
import pytest

from napari_focusq.export.qupath import (
    DEFOCUS,
    EXCLUDED,
    EXPECTED_ERROR,
    TISSUE,
    QuPathImportError,
    import_annotations,
    read_geojson,
    restrict_to_roi,
    tile_features,
    write_tiles_geojson,
)
from napari_focusq.scoring.focusmap import FocusMap


def _fmap(shape=(6, 8), image_shape=(3700, 5000), px=0.25, origin=(-37.0, -12.5), seed=0) -> FocusMap:
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 5, shape).astype(np.float32)
    d[0, :3] = np.nan
    tissue = np.where(np.isfinite(d), 0.8, 0.05)
    fm = FocusMap(d, tissue, tile_size_px=320 * 0.5 / px, image_shape=image_shape, pixel_size_um=px,
                  modality="brightfield", model="fast 0.1.0", origin_px=origin, source="x/slide.svs")
    fm.extra["expected_error_um"] = np.where(np.isfinite(d), 0.3, np.nan).astype(np.float32)
    return fm


def test_every_tile_is_a_qupath_tile_object_with_measurements(tmp_path):
    fm = _fmap()
    path = write_tiles_geojson(fm, tmp_path / "slide.tiles.geojson.gz", 2.0)
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"  # gzip
    doc = json.loads(gzip.decompress(raw))  # strict JSON: no NaN literals (QuPath's reader is lenient, others not)
    assert doc["type"] == "FeatureCollection"
    tiles = [f for f in doc["features"] if f["properties"]["objectType"] == "tile"]
    on_image = [(r, c) for r in range(fm.shape[0]) for c in range(fm.shape[1])
                if fm.tile_bounds(r, c)[2] > fm.tile_bounds(r, c)[0] and fm.tile_bounds(r, c)[3] > fm.tile_bounds(r, c)[1]]
    assert len(on_image) == fm.defocus_um.size  # origin < 0: the first row and column are cut by the border
    assert sorted((f["properties"]["measurements"]["Tile row"], f["properties"]["measurements"]["Tile column"])
                  for f in tiles) == on_image  # every tile on the image, once
    ex = fm.excluded(2.0)
    for f in tiles:
        m = f["properties"]["measurements"]
        r, c = m["Tile row"], m["Tile column"]
        (ring,) = f["geometry"]["coordinates"]
        assert ring[0] == ring[-1] and len(ring) == 5  # closed rectangle
        y0, x0, y1, x1 = fm.tile_bounds(r, c)
        assert [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring),
                max(p[1] for p in ring)] == [x0, y0, x1, y1]  # level-0 pixels, clipped to the image
        assert m[TISSUE] == pytest.approx(fm.tissue_fraction[r, c], abs=1e-4)
        assert m[EXCLUDED] == int(ex[r, c])
        if np.isfinite(fm.defocus_um[r, c]):
            assert m[DEFOCUS] == pytest.approx(fm.defocus_um[r, c], abs=1e-4)  # 4 decimals written
            assert m[EXPECTED_ERROR] == pytest.approx(0.3, abs=1e-4)
        else:
            assert DEFOCUS not in m and EXPECTED_ERROR not in m  # QuPath reads a missing measurement as NaN
    ignore = [f for f in doc["features"] if f["properties"]["objectType"] == "annotation"]
    assert ignore and all(f["properties"]["classification"]["name"] == "Ignore*" for f in ignore)


def test_round_trip_exclusions_and_roi(tmp_path):
    fm = _fmap(seed=3)
    excluded = fm.excluded(2.0)
    scored = np.argwhere(fm.scored)
    # a manual include of a far-off tile and a manual exclude of a sharp one: both must survive
    far = [tuple(rc) for rc in scored if fm.defocus_um[tuple(rc)] > 2.0][0]
    near = [tuple(rc) for rc in scored if fm.defocus_um[tuple(rc)] <= 2.0][0]
    excluded[far], excluded[near] = False, True
    # a region of interest: the rectangle over tiles rows 2-4, cols 1-5 (level-0 x/y pixels)
    y0, x0 = fm.tile_bounds(2, 1)[:2]
    y1, x1 = fm.tile_bounds(4, 5)[2:]
    roi_ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    path = write_tiles_geojson(fm, tmp_path / "s.tiles.geojson.gz", 2.0, excluded, roi=[roi_ring])

    got = import_annotations(fm, read_geojson(path), current_excluded=fm.excluded(2.0))
    np.testing.assert_array_equal(got["excluded"], excluded & fm.scored)
    want_roi = np.zeros(fm.shape, bool)
    want_roi[2:5, 1:6] = True
    np.testing.assert_array_equal(got["roi"], want_roi)
    assert got["roi_regions"] == 1 and got["ignore_regions"] >= 1

    # the ROI restricts the figures to the tiles inside it
    inside = restrict_to_roi(fm, got["roi"])
    s = inside.summary(2.0, got["excluded"])
    assert s["tissue_tiles"] == int((fm.scored & want_roi).sum())
    assert s["median_um"] == pytest.approx(float(np.median(fm.defocus_um[fm.scored & want_roi])))


def test_plain_qupath_annotations_add_exclusions(tmp_path):
    """A file drawn in QuPath (no tile objects): Ignore* regions add to the exclusions in use."""
    fm = _fmap(seed=1)
    y0, x0, y1, x1 = fm.tile_bounds(3, 3)
    hole = fm.tile_bounds(3, 4)
    feats = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            [[x0, y0], [hole[3], y0], [hole[3], y1], [x0, y1], [x0, y0]],
            [[hole[1] + 5, hole[0] + 5], [hole[3] - 5, hole[0] + 5], [hole[3] - 5, hole[2] - 5],
             [hole[1] + 5, hole[2] - 5], [hole[1] + 5, hole[0] + 5]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Ignore*", "color": [1, 2, 3]}}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 10]}, "properties": {}},
    ]
    p = tmp_path / "drawn.geojson"
    p.write_text(json.dumps(feats))  # QuPath also writes a bare list of features
    base = np.zeros(fm.shape, bool)
    base[5, 7] = True
    got = import_annotations(fm, read_geojson(p), current_excluded=base)
    want = base.copy()
    want[3, 3] = True  # (3, 4)'s centre is in the hole
    np.testing.assert_array_equal(got["excluded"], want & fm.scored)
    assert got["roi"] is None  # the point is an annotation without area: no ROI tile


def test_zip_and_bad_files(tmp_path):
    fm = _fmap()
    doc = tile_features(fm, 2.0)
    z = tmp_path / "objects.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("objects.geojson", json.dumps(doc))
    assert len(read_geojson(z)) == len(doc["features"])
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(QuPathImportError, match="bad.geojson"):
        read_geojson(bad)
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(QuPathImportError, match="not GeoJSON features"):
        read_geojson(tmp_path / "other.json")
    with pytest.raises(QuPathImportError, match="no such file"):
        read_geojson(tmp_path / "missing.geojson")


def test_the_same_map_gives_the_same_bytes_and_ids_name_what_they_are(tmp_path):
    # Reruns must be diffable: ids come from the slide, the kind of feature and its place, not a clock.
    fm = _fmap()
    roi = [[(0, 0), (900, 0), (900, 900), (0, 900), (0, 0)]]
    a = write_tiles_geojson(fm, tmp_path / "a.tiles.geojson.gz", 2.0, roi=roi).read_bytes()
    b = write_tiles_geojson(_fmap(), tmp_path / "b.tiles.geojson.gz", 2.0, roi=roi).read_bytes()
    assert a == b
    assert fm.to_geojson(tmp_path / "a.geojson", 2.0).read_bytes() == _fmap().to_geojson(tmp_path / "b.geojson", 2.0).read_bytes()
    ids = [f["id"] for f in json.loads(gzip.decompress(a))["features"]]
    assert len(set(ids)) == len(ids)  # tiles, excluded regions and the ROI: one id each
    other = _fmap()
    other.source = "y/another.svs"
    assert not set(ids) & {f["id"] for f in tile_features(other, 2.0, roi=roi)["features"]}
