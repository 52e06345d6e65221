"""The GeoJSON export's excluded regions are valid polygons that cover exactly the excluded tiles.

QuPath (JTS), GIS tools and shapely follow the OGC simple-features rules: a ring may not
touch itself, holes lie inside their shell. Masks are drawn by hypothesis (derandomised in
conftest.py), with fractional tile sizes, offsets and partial edge tiles, and checked with
shapely against the union of the excluded tiles' pixel boxes.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

shapely = pytest.importorskip("shapely")
from shapely.geometry import Polygon, box, shape  # noqa: E402
from shapely.ops import unary_union  # noqa: E402
from shapely.validation import explain_validity  # noqa: E402

from napari_focusq.export.polygons import grid_polygons  # noqa: E402
from napari_focusq.scoring.focusmap import FocusMap  # noqa: E402

masks = st.integers(1, 9).flatmap(lambda r: st.integers(1, 9).flatmap(
    lambda c: st.lists(st.booleans(), min_size=r * c, max_size=r * c).map(
        lambda v: np.array(v, bool).reshape(r, c))))


def _fmap(mask, tile, oy, ox, cut_y, cut_x):
    rows, cols = mask.shape
    # The image ends inside the last row/column of tiles (partial edge tiles, clipped), as
    # the pipeline's grids do: at least one pixel of the last tile is in the image.
    h = max(int(oy + rows * tile - cut_y * tile), round(oy + (rows - 1) * tile) + 1)
    w = max(int(ox + cols * tile - cut_x * tile), round(ox + (cols - 1) * tile) + 1)
    d = np.where(mask, 5.0, 0.5).astype(np.float32)
    return FocusMap(d, np.ones_like(d), tile, (h, w), 0.5, "brightfield", "test", origin_px=(oy, ox))


@settings(max_examples=300)
@given(masks, st.sampled_from([1.0, 7.0, 63.5, 256.0]), st.integers(0, 5), st.integers(0, 5),
       st.floats(0.0, 0.9), st.floats(0.0, 0.9))
def test_geojson_polygons_valid_and_exact(mask, tile, oy, ox, cut_y, cut_x):
    fm = _fmap(mask, tile, float(oy), float(ox), cut_y, cut_x)
    features = fm.geojson(threshold_um=2.0)["features"]
    ex = fm.excluded(2.0)
    assert np.array_equal(ex, mask)
    tiles = [box(x0, y0, x1, y1) for r, c in zip(*np.nonzero(ex))
             for y0, x0, y1, x1 in [fm.tile_bounds(r, c)] if y1 > y0 and x1 > x0]
    polys = [shape(f["geometry"]) for f in features]
    for poly in polys:
        assert poly.is_valid, explain_validity(poly)
        shell = Polygon(poly.exterior)
        for hole in poly.interiors:
            assert shell.contains(Polygon(hole)), "hole outside its shell"
    # Exact cover: same total area (pixel areas are integers, so equality holds up to float
    # summation error, ~1e-9 of the area) and nothing of either outside the other.
    want = unary_union(tiles) if tiles else None
    total = sum(p.area for p in polys)
    assert total == pytest.approx(sum(t.area for t in tiles), rel=1e-9, abs=1e-9)
    if want is not None:
        got = unary_union(polys)
        assert got.symmetric_difference(want).area == pytest.approx(0.0, abs=1e-9)
    # One polygon per 4-connected excluded component; components do not overlap.
    from scipy import ndimage

    assert len(polys) == ndimage.label(ex)[1]
    for i in range(len(polys)):
        for j in range(i + 1, len(polys)):
            assert polys[i].intersection(polys[j]).area == 0.0


def test_holes_touching_at_a_corner_are_separate_rings():
    # Two one-tile holes that meet diagonally inside one region: traced as one walk, they
    # used to come out as one self-touching ring ("Ring Self-intersection" in shapely).
    mask = np.ones((4, 4), bool)
    mask[1, 1] = mask[2, 2] = False
    (rings,) = grid_polygons(mask)
    assert len(rings) == 3  # the shell and two holes, not a shell and one figure-of-eight
    poly = Polygon(rings[0], rings[1:])
    assert poly.is_valid and poly.area == 14.0
    for ring in rings:
        assert len(set(ring[:-1])) == len(ring) - 1  # no vertex visited twice


def test_pocket_touching_the_outside_at_a_corner():
    # The ring of tiles around (1, 1), open at a corner: the pocket meets the outside at
    # one vertex; it is a hole touching the shell there, not a pinched outer ring.
    mask = np.ones((3, 3), bool)
    mask[0, 0] = mask[1, 1] = False
    (rings,) = grid_polygons(mask)
    poly = Polygon(rings[0], rings[1:])
    assert poly.is_valid and poly.area == 7.0 and len(rings) == 2


@settings(max_examples=100)
@given(masks, st.sampled_from([1.0, 7.0, 63.5, 256.0]), st.integers(0, 5), st.integers(0, 5),
       st.floats(0.0, 0.9), st.floats(0.0, 0.9))
def test_qupath_tile_objects_valid_and_exact(tmp_path_factory, mask, tile, oy, ox, cut_y, cut_x):
    """<stem>.tiles.geojson.gz: every tile object a valid polygon, tiles never overlapping,
    together covering exactly the image's part of the grid, and the excluded ones exactly
    the excluded tiles' area."""
    import gzip
    import json

    from napari_focusq.export.qupath import EXCLUDED, write_tiles_geojson

    fm = _fmap(mask, tile, float(oy), float(ox), cut_y, cut_x)
    path = write_tiles_geojson(fm, tmp_path_factory.mktemp("qp") / "s.tiles.geojson.gz", 2.0)
    features = [f for f in json.loads(gzip.decompress(path.read_bytes()))["features"]
                if f["properties"]["objectType"] == "tile"]
    polys = [shape(f["geometry"]) for f in features]
    for poly in polys:
        assert poly.is_valid and not poly.interiors, explain_validity(poly)
    boxes = [box(x0, y0, x1, y1) for r in range(fm.shape[0]) for c in range(fm.shape[1])
             for y0, x0, y1, x1 in [fm.tile_bounds(r, c)] if y1 > y0 and x1 > x0]
    # Pixel areas are integers: equality up to float summation error (~1e-9 of the area).
    assert sum(p.area for p in polys) == pytest.approx(sum(b.area for b in boxes), rel=1e-9)
    assert unary_union(polys).area == pytest.approx(sum(p.area for p in polys), rel=1e-9)  # no overlap
    excluded = [p for p, f in zip(polys, features) if f["properties"]["measurements"].get(EXCLUDED)]
    want = [box(x0, y0, x1, y1) for r, c in zip(*np.nonzero(fm.excluded(2.0)))
            for y0, x0, y1, x1 in [fm.tile_bounds(r, c)] if y1 > y0 and x1 > x0]
    assert sum(p.area for p in excluded) == pytest.approx(sum(b.area for b in want), rel=1e-9, abs=1e-9)
