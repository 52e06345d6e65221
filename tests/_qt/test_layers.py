"""Grid geometry of the heatmap / exclusion layers, reader and writers (no viewer needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_focusq.napari import layers as L


@pytest.mark.parametrize("origin", [(0.0, 0.0), (-100.5, -37.25)])
@pytest.mark.parametrize("img_scale,img_translate", [((0.499, 0.499), (0.0, 0.0)), ((0.25, 0.3), (12.0, -7.5))])
def test_tile_centres_land_on_tile_centres(origin, img_scale, img_translate):
    t = 320.6413
    scale, translate = L.grid_geometry(img_scale, img_translate, t, origin)
    for r, c in [(0, 0), (3, 5), (9, 6)]:
        wy, wx = L.tile_centre_world(r, c, scale, translate)
        # the image pixel whose *centre* is the tile's centre, in image data coordinates
        # (napari: pixel k covers [k - 0.5, k + 0.5])
        dy = (wy - img_translate[0]) / img_scale[0]
        dx = (wx - img_translate[1]) / img_scale[1]
        assert dy == pytest.approx(origin[0] + (r + 0.5) * t - 0.5)
        assert dx == pytest.approx(origin[1] + (c + 0.5) * t - 0.5)
        # the tile's first image pixel edge is at data -0.5 + origin + r*t
        edge_y = wy - scale[0] / 2
        assert (edge_y - img_translate[0]) / img_scale[0] == pytest.approx(origin[0] + r * t - 0.5)


def test_world_to_tile_round_trip_and_edges():
    scale, translate = L.grid_geometry((0.5, 0.5), (0, 0), 320, (0, 0))
    assert scale == (160.0, 160.0) and translate == (79.75, 79.75)
    for r, c in [(0, 0), (2, 3), (4, 4)]:
        assert L.world_to_tile(L.tile_centre_world(r, c, scale, translate), scale, translate, (5, 5)) == (r, c)
    # image pixel 0's top-left corner is world -0.25; pixel 319 belongs to tile 0, pixel 320 to tile 1
    assert L.world_to_tile((-0.24, -0.24), scale, translate, (5, 5)) == (0, 0)
    assert L.world_to_tile((-0.26, 0), scale, translate, (5, 5)) is None
    assert L.world_to_tile((319 * 0.5, 0), scale, translate, (5, 5)) == (0, 0)
    assert L.world_to_tile((320 * 0.5, 0), scale, translate, (5, 5)) == (1, 0)
    assert L.world_to_tile((5 * 160 - 0.26, 0), scale, translate, (5, 5)) == (4, 0)
    assert L.world_to_tile((5 * 160, 0), scale, translate, (5, 5)) is None


def test_fill_tiles_and_threshold():
    g = np.full((3, 4), np.nan, np.float32)
    tissue = np.zeros((3, 4), np.float32)
    assert L.fill_tiles(g, []) is None
    sl = L.fill_tiles(g, [(1, 2, 3.5, 0.9), (2, 0, float("nan"), 0.1), (0, 3, 1.0, 1.0)], tissue)
    assert sl == (slice(0, 3), slice(0, 4))
    assert g[1, 2] == 3.5 and g[0, 3] == 1.0 and np.isnan(g[2, 0]) and tissue[1, 2] == pytest.approx(0.9)
    m = L.threshold_mask(g, 2.0)
    assert m.dtype == np.uint8 and m.sum() == 1 and m[1, 2] == L.EXCLUDED_LABEL


def test_summary_text_mentions_the_figures():
    s = {"tiles": 70, "tissue_pct": 42.9, "excluded_pct": 10.0, "median_um": 0.5, "p90_um": 2.5, "pass": False}
    text = L.summary_text(s, 2.0)
    assert "42.9 %" in text and "10.0 %" in text and "0.50 µm" in text and "FAIL" in text
    none = L.summary_text({**s, "tissue_tiles": 0, "tiles": 1}, 2.0, "the image is smaller than one tile")
    assert none == "No result: the image is smaller than one tile." and "FAIL" not in none


def test_manifest_is_valid():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-focusq")
    ids = {c.id for c in pm.contributions.commands}
    assert {"napari-focusq.focus_qc", "napari-focusq.train", "napari-focusq.get_reader"} <= ids
    measure = [m.command for m in pm.contributions.menus["napari/layers/measure"]]
    assert measure == ["napari-focusq.focus_qc"]  # training and review are not measurements
    widgets = {w.command for w in pm.contributions.widgets}
    assert {"napari-focusq.train", "napari-focusq.review"} <= widgets  # Plugins menu
    assert {s.key for s in pm.contributions.sample_data} == {"cmu1", "defocus_demo"}


def test_reader_gives_um_scale_rgb_and_z_axis(made_stack):
    from napari_focusq.io.formats import sample_slide_path
    from napari_focusq.napari.reader import get_reader

    assert get_reader("slide.png") is None
    p = str(sample_slide_path())
    (data, kw, kind), = get_reader(p)(p)
    assert kind == "image" and kw["rgb"] and kw["units"] == ["µm", "µm"]
    assert kw["scale"] == pytest.approx([0.499, 0.499]) and data.shape == (2967, 2220, 3)
    z = str(made_stack.path)
    (data, kw, _), = get_reader(z)(z)
    assert data.shape == made_stack.data.shape and kw["axis_labels"] == ["z", "y", "x"] and "rgb" not in kw
    assert kw["metadata"]["pixel_size_um"] is None and kw["units"][-1] == "pixel"


def rasterize(features, shape) -> np.ndarray:
    """Pixels (y, x) whose centres lie inside the GeoJSON polygons (outer ring minus holes)."""
    from matplotlib.path import Path as MPath

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    pts = np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5])
    out = np.zeros(h * w, bool)
    for f in features:
        outer, *holes = f["geometry"]["coordinates"]
        inside = MPath(outer).contains_points(pts)
        for hole in holes:
            inside &= ~MPath(hole).contains_points(pts)
        out |= inside
    return out.reshape(h, w)


def excluded_pixels(fmap, excluded) -> np.ndarray:
    """Level-0 pixels of the excluded tiles, from the FocusMap's own tile bounds."""
    out = np.zeros(fmap.image_shape, bool)
    for r, c in zip(*np.nonzero(excluded)):
        y0, x0, y1, x1 = fmap.tile_bounds(r, c)
        out[y0:y1, x0:x1] = True
    return out


def _fmap():
    from napari_focusq.scoring.focusmap import FocusMap

    d = np.array([[0.5, 3.0, np.nan], [2.5, 1.0, 4.0]], np.float32)
    return FocusMap(defocus_um=d, tissue_fraction=np.isfinite(d).astype(np.float32), tile_size_px=100.0,
                    image_shape=(180, 290), pixel_size_um=1.6, modality="brightfield", model="m 1")


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_mask_writer_records_scale(tmp_path, suffix):
    from napari_focusq.napari.writer import write_mask

    fmap = _fmap()
    ex = fmap.excluded(2.0).astype(np.uint8)
    out = write_mask(str(tmp_path / f"m{suffix}"), ex, {"metadata": {"focusq": "excluded", "focusmap": fmap}})
    assert out == [str(tmp_path / f"m{suffix}")]
    if suffix == ".png":
        from PIL import Image

        im = Image.open(out[0])
        arr = np.asarray(im)
        assert im.info["dpi"][0] == pytest.approx(25400 / 1.6, rel=1e-3)
    else:
        import tifffile

        with tifffile.TiffFile(out[0]) as tf:
            arr = tf.pages[0].asarray()
            xres = tf.pages[0].tags["XResolution"].value
            assert xres[0] / xres[1] == pytest.approx(1e4 / 1.6, rel=1e-4)
    assert arr.shape == (180, 290)
    assert arr[50, 50] == 255 and arr[50, 150] == 0 and arr[50, 250] == 0 and arr[150, 150] == 255
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}"]  # no temporary left behind


def test_geojson_writer_and_read_only_folder(tmp_path, read_only_dir):
    from napari_focusq.napari.writer import ExportError, write_geojson, write_mask

    fmap = _fmap()
    ex = fmap.excluded(2.0).astype(np.uint8)
    (p,) = write_geojson(str(tmp_path / "x.geojson"), ex, {"metadata": {"focusmap": fmap}})
    feats = json.loads(open(p).read())["features"]
    assert len(feats) == 3  # (0,1), (1,0) and (1,2) only touch at corners: three polygons
    assert np.array_equal(rasterize(feats, fmap.image_shape), excluded_pixels(fmap, fmap.excluded(2.0)))
    for writer, name in [(write_mask, "m.png"), (write_mask, "m.tif"), (write_geojson, "m.geojson")]:
        with pytest.raises(ExportError, match="read-only"):
            writer(str(read_only_dir / name), ex, {"metadata": {"focusq": "excluded", "focusmap": fmap}})
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize("meta", [
    {"name": "nuclei", "metadata": {}},                                   # a user's segmentation
    {"name": "nuclei", "metadata": {"focusq": "excluded"}},               # marker without a result
    {"name": "heatmap", "metadata": {"focusq": "heatmap", "focusmap": None}},
])
def test_mask_writer_refuses_labels_that_are_not_the_exclusion_layer(tmp_path, meta):
    from napari_focusq.napari.writer import ExportError, write_mask

    labels = np.zeros((50, 60), np.uint16)
    labels[10:20, 10:30] = 7  # label values a 0/255 mask would destroy
    with pytest.raises(ExportError, match="not a Focus QC exclusion layer"):
        write_mask(str(tmp_path / "m.tif"), labels, meta)
    assert list(tmp_path.iterdir()) == []


def test_mask_writer_refuses_a_grid_that_no_longer_matches(tmp_path):
    from napari_focusq.napari.writer import ExportError, write_mask

    fmap = _fmap()
    with pytest.raises(ExportError, match="no longer matches"):
        write_mask(str(tmp_path / "m.tif"), np.zeros((3, 3), np.uint8),
                   {"metadata": {"focusq": "excluded", "focusmap": fmap}})
