"""Per-input output files, results.tsv, output stems and the demo-data builders."""
from __future__ import annotations

import csv
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focusq.demo import band_edges, make_defocus_demo, make_half_defocused, tissue_map, write_tif
from napari_focusq.export.masks import mask_downsample
from napari_focusq.export.outputs import read_heatmap_description, unique_stem, write_outputs
from napari_focusq.export.results import RESULTS_COLUMNS, append_results, read_results, results_row
from napari_focusq.io.formats import open_image
from napari_focusq.scoring.focus import focus_measure
from napari_focusq.scoring.focusmap import CSV_COLUMNS, FocusMap

DATA = Path(__file__).parents[2] / "data"


def _fmap(shape=(6, 8), image_shape=(1900, 2500), px=0.25, origin=(-37.0, -12.5), seed=0) -> FocusMap:
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 5, shape).astype(np.float32)
    d[0, :3] = np.nan
    tissue = np.where(np.isfinite(d), 0.8, 0.05)
    return FocusMap(d, tissue, tile_size_px=320 * 0.5 / px, image_shape=image_shape, pixel_size_um=px,
                    modality="brightfield", model="fast 0.1.0", origin_px=origin, source="x/slide.svs")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    fm = _fmap()
    thumb = np.full((380, 500, 3), 230, np.uint8)
    return fm, write_outputs(fm, out, "slide", threshold_um=2.0, thumbnail=thumb), out


def test_write_outputs_writes_every_file_and_nothing_else(written):
    fm, paths, out = written
    assert set(paths) == {"tiles_csv", "heatmap", "mask", "geojson", "overlay", "tiles_geojson", "tiles_qupath"}
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"slide{s}" for s in (".tiles.csv", ".heatmap.tif", ".mask.png", ".geojson", ".overlay.png",
                                                 ".tiles.geojson.gz", ".tiles.geojson.zip"))
    assert all(paths[k].stat().st_size > 0 for k in paths)


def test_every_output_file_is_the_same_bytes_when_written_again(written, tmp_path):
    # Reproducible outputs: no clock or random id in any file (OME UUID, GeoJSON ids, PNG, gzip, zip).
    fm, paths, _ = written
    again = write_outputs(_fmap(), tmp_path, "slide", threshold_um=2.0, thumbnail=np.full((380, 500, 3), 230, np.uint8))
    assert set(again) == set(paths)
    for key in paths:
        assert again[key].read_bytes() == paths[key].read_bytes(), key


def test_tiles_csv(written):
    fm, paths, _ = written
    with open(paths["tiles_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == fm.defocus_um.size
    by_rc = {(int(r["row"]), int(r["col"])): r for r in rows}
    assert by_rc[(0, 0)]["defocus_um"] == ""  # no tissue
    assert float(by_rc[(2, 3)]["defocus_um"]) == pytest.approx(fm.defocus_um[2, 3], abs=1e-3)
    n_ex = sum(int(r["excluded"]) for r in rows)
    assert n_ex == int(fm.excluded(2.0).sum()) > 0


def test_heatmap_tif_float32_grid_with_scale(written):
    fm, paths, _ = written
    with tifffile.TiffFile(paths["heatmap"]) as tf:
        a = tf.asarray()
        page = tf.pages[0]
        xres = page.tags["XResolution"].value
        unit = page.tags["ResolutionUnit"].value
        assert tf.is_ome
    assert a.dtype == np.float32 and a.shape == fm.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(fm.defocus_um))
    np.testing.assert_allclose(a[np.isfinite(a)], fm.defocus_um[np.isfinite(fm.defocus_um)])
    tile_um = fm.tile_size_px * fm.pixel_size_um  # 160 µm per grid pixel
    assert int(unit) == 3  # centimetre
    assert 1e4 / (xres[0] / xres[1]) == pytest.approx(tile_um, rel=1e-6)
    with open_image(paths["heatmap"]) as src:  # the package's own reader sees the scale in the OME
        assert src.pixel_size_um == pytest.approx(tile_um, rel=1e-6)
    desc = read_heatmap_description(paths["heatmap"])
    assert desc["origin_px"] == [-37.0, -12.5]
    assert desc["tile_size_px"] == pytest.approx(640.0)
    assert desc["model"] == "fast 0.1.0" and desc["modality"] == "brightfield"
    assert desc["grid_shape"] == list(fm.shape) and desc["units"] == "um"


def test_mask_png_matches_pixel_mask(written):
    fm, paths, _ = written
    im = Image.open(paths["mask"])
    assert im.mode == "L"
    assert int(im.text["downsample"]) == 1
    m = np.asarray(im)
    assert m.shape == fm.image_shape
    np.testing.assert_array_equal(m, fm.pixel_mask(2.0))
    assert set(np.unique(m)) == {0, 255}


def test_mask_png_downsampled_for_a_whole_slide(tmp_path):
    fm = _fmap(shape=(80, 48), image_shape=(50_000, 30_000), px=0.5, origin=(0, 0))
    p = write_outputs(fm, tmp_path, "big")["mask"]
    im = Image.open(p)
    ds = int(im.text["downsample"])
    assert ds == mask_downsample((50_000, 30_000)) == 13
    assert max(im.size) <= 4096
    assert im.size == (round(30_000 / ds), round(50_000 / ds))
    assert float(im.text["pixel_size_um"]) == pytest.approx(0.5 * ds)


def test_geojson_feature_collection(written):
    fm, paths, _ = written
    gj = json.loads(paths["geojson"].read_text())
    assert gj["type"] == "FeatureCollection"
    assert gj["features"], "excluded tiles must give polygons"
    for f in gj["features"]:
        assert f["geometry"]["type"] == "Polygon"
        assert f["properties"]["objectType"] == "annotation"
        xs = [x for ring in f["geometry"]["coordinates"] for x, _ in ring]
        ys = [y for ring in f["geometry"]["coordinates"] for _, y in ring]
        assert 0 <= min(xs) and max(xs) <= fm.image_shape[1]
        assert 0 <= min(ys) and max(ys) <= fm.image_shape[0]


def test_overlay_png_shows_heatmap_colours(written):
    fm, paths, _ = written
    im = np.asarray(Image.open(paths["overlay"]).convert("RGB"))
    assert im.shape[0] > 200 and im.shape[1] > 400
    # a grey thumbnail under a viridis heatmap: many strongly coloured pixels must appear
    a = im.astype(int)
    saturated = (a.max(-1) - a.min(-1)) > 60
    assert saturated.mean() > 0.05


def test_overlay_without_thumbnail_and_with_fluorescence_thumbnail(tmp_path):
    fm = _fmap()
    write_outputs(fm, tmp_path / "a", "nothumb")
    fm.extra["thumbnail"] = np.random.default_rng(1).integers(0, 4000, (95, 125), dtype=np.uint16)
    p = write_outputs(fm, tmp_path / "b", "fluo")["overlay"]
    assert Image.open(tmp_path / "a" / "nothumb.overlay.png").size[0] > 400
    assert Image.open(p).size[0] > 400


def test_hand_exclusions_override_the_threshold(tmp_path):
    fm = _fmap()
    ex = np.zeros(fm.shape, bool)
    ex[5, 7] = True
    paths = write_outputs(fm, tmp_path, "hand", excluded=ex)
    with open(paths["tiles_csv"], newline="") as fh:
        flagged = [(int(r["row"]), int(r["col"])) for r in csv.DictReader(fh) if r["excluded"] == "1"]
    assert flagged == [(5, 7)]
    assert len(json.loads(paths["geojson"].read_text())["features"]) == 1
    m = np.asarray(Image.open(paths["mask"]))
    y0, x0, y1, x1 = fm.tile_bounds(5, 7)
    assert (m[y0:y1, x0:x1] == 0).all()
    assert m[fm.tile_bounds(3, 3)[0] + 5, fm.tile_bounds(3, 3)[1] + 5] == 255


def test_no_temporary_files_left_when_a_writer_fails(tmp_path, monkeypatch):
    fm = _fmap()

    def broken(path, data, **kw):  # half a file, then the failure
        Path(path).write_bytes(b"II*\x00partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(fm, tmp_path, "slide")
    names = [p.name for p in tmp_path.iterdir()]
    assert "slide.heatmap.tif" not in names
    assert not [n for n in names if n.startswith(".")], names


# ------------------------------------------------------------------------ results.tsv
def test_results_row_figures():
    fm = _fmap()
    row = results_row(fm, stem="slide", input_path="x/slide.svs", seconds=3.14159, threshold_um=2.0)
    assert tuple(row) == RESULTS_COLUMNS
    s = fm.summary(2.0)
    assert row["status"] == "ok" and row["error"] == ""
    assert float(row["median_um"]) == pytest.approx(s["median_um"], abs=1e-3)
    assert float(row["p90_um"]) == pytest.approx(s["p90_um"], abs=1e-3)
    assert float(row["tissue_pct"]) == pytest.approx(100 * 45 / 48, abs=0.01)
    assert row["pass"] == ("yes" if s["pass"] else "no")
    # tiles: the whole grid, glass included; tissue_tiles: the scored tiles the figures are over
    assert row["tiles"] == "48" and row["tissue_tiles"] == "45" == str(int(fm.scored.sum()))
    assert float(row["tissue_pct"]) == pytest.approx(100 * int(row["tissue_tiles"]) / int(row["tiles"]), abs=0.01)
    assert results_row(None, stem="b", input_path="b", seconds=0, status="error")["tissue_tiles"] == ""
    assert row["seconds"] == "3.14" and row["model"] == "fast 0.1.0"
    sharp = _fmap()
    sharp.defocus_um[np.isfinite(sharp.defocus_um)] = 0.5
    assert results_row(sharp, stem="s", input_path="s", seconds=0)["pass"] == "yes"


def test_append_and_read_results(tmp_path):
    tsv = tmp_path / "results.tsv"
    assert read_results(tsv) == []
    append_results(tsv, results_row(_fmap(), stem="a", input_path="a.svs", seconds=1))
    append_results(tsv, results_row(None, stem="b", input_path="b.svs", seconds=0, status="error",
                                    error="b.svs: bad\tthing\nwith lines"))
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == list(RESULTS_COLUMNS)
    assert len(lines) == 3 and all(len(ln.split("\t")) == len(RESULTS_COLUMNS) for ln in lines)
    rows = read_results(tsv)
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert rows[1]["error"] == "b.svs: bad thing with lines"
    assert rows[1]["median_um"] == "" and rows[0]["median_um"] != ""


def test_append_refuses_a_foreign_table_and_unknown_columns(tmp_path):
    tsv = tmp_path / "results.tsv"
    tsv.write_text("name\tvalue\nx\t1\n")
    with pytest.raises(ValueError, match="not a focusq results table"):
        append_results(tsv, results_row(None, stem="a", input_path="a", seconds=0))
    with pytest.raises(ValueError, match="unknown results columns"):
        append_results(tmp_path / "new.tsv", {"stem": "a", "colour": "red"})
    assert tsv.read_text() == "name\tvalue\nx\t1\n"


def test_append_upgrades_a_table_of_an_older_version(tmp_path):
    tsv = tmp_path / "results.tsv"
    old_cols = RESULTS_COLUMNS[:RESULTS_COLUMNS.index("tissue_tiles")]  # before tissue_tiles was added
    old_row = dict(zip(old_cols, ["old.svs", "old", "ok", "50.00"] + [""] * (len(old_cols) - 4)))
    tsv.write_text("\t".join(old_cols) + "\n" + "\t".join(old_row.values()) + "\n")
    append_results(tsv, results_row(_fmap(), stem="a", input_path="a.svs", seconds=1))
    lines = tsv.read_text().splitlines()
    assert lines[0] == "\t".join(RESULTS_COLUMNS) and all(len(ln.split("\t")) == len(RESULTS_COLUMNS) for ln in lines)
    rows = read_results(tsv)
    assert [r["stem"] for r in rows] == ["old", "a"]
    assert rows[0]["tissue_pct"] == "50.00" and rows[0]["tissue_tiles"] == "" and rows[1]["tissue_tiles"] == "45"
    # a table that is not an older focusq header is still refused
    short = tmp_path / "short.tsv"
    short.write_text("input\tstem\n")
    with pytest.raises(ValueError, match="not a focusq results table"):
        append_results(short, results_row(None, stem="a", input_path="a", seconds=0))


def test_concurrent_appends_keep_every_row_whole(tmp_path):
    tsv = tmp_path / "results.tsv"
    start = threading.Barrier(4)

    def work(k):
        start.wait()
        for i in range(25):
            append_results(tsv, results_row(None, stem=f"s{k}_{i}", input_path="x" * 300, seconds=i,
                                            status="error", error="e" * 200))

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(work, range(4)))
    lines = tsv.read_text().splitlines()
    assert lines.count("\t".join(RESULTS_COLUMNS)) == 1 and lines[0] == "\t".join(RESULTS_COLUMNS)
    rows = read_results(tsv)
    assert len(rows) == 100 and len({r["stem"] for r in rows}) == 100
    assert all(r["error"] == "e" * 200 for r in rows)


# ------------------------------------------------------------------------------ stems
def test_unique_stem():
    taken: set = set()
    assert unique_stem("/a/run1/slide.ome.tif", taken) == "slide"
    assert unique_stem("/a/run2/slide.svs", taken) == "run2_slide"
    assert unique_stem("/b/run2/slide.tiff", taken) == "slide_2"
    assert unique_stem("/b/run2/slide.ndpi", taken) == "slide_3"
    assert unique_stem("scan 7 (copy).OME.TIFF", taken) == "scan_7_copy"
    assert unique_stem("noext", taken) == "noext"
    assert taken == {"slide", "run2_slide", "slide_2", "slide_3", "scan_7_copy", "noext"}


# ------------------------------------------------------------------------ demo data
@pytest.fixture(scope="module")
def ihc() -> np.ndarray:
    img = np.asarray(Image.open(DATA / "brightfield" / "ihc_skimage.png").convert("RGB"))[:256, :384]
    return np.ascontiguousarray(img)


def test_make_half_defocused(ihc):
    out = make_half_defocused(ihc, pixel_size_um=0.5, z_um=3.0)
    assert out.shape == ihc.shape and out.dtype == ihc.dtype
    half = ihc.shape[1] // 2
    np.testing.assert_array_equal(out[:, :half], ihc[:, :half])
    assert focus_measure(out[:, half:], "tenengrad") < 0.5 * focus_measure(ihc[:, half:], "tenengrad")


def test_make_defocus_demo_bands(ihc):
    out, zmap = make_defocus_demo(ihc, pixel_size_um=0.5, z_list=(0, 1, 2, 4))
    assert out.shape == ihc.shape and out.dtype == np.uint8
    assert zmap.shape == ihc.shape[:2] and zmap.dtype == np.float32
    # 256 px is less than a tile row per band: four equal horizontal bands
    edges = band_edges(ihc.shape[0], 0.5, 4)
    assert list(edges) == [0, 64, 128, 192, 256]
    assert [float(zmap[a, 0]) for a in edges[:-1]] == [0, 1, 2, 4]
    assert all(np.all(zmap[a:b] == z) for z, a, b in zip((0, 1, 2, 4), edges[:-1], edges[1:]))
    np.testing.assert_array_equal(out[:edges[1]], ihc[:edges[1]])
    # sharpness relative to the same band in focus falls with the band's defocus
    rel = [focus_measure(out[a:b], "tenengrad") / focus_measure(ihc[a:b], "tenengrad")
           for a, b in zip(edges[:-1], edges[1:])]
    assert rel[0] == pytest.approx(1.0)
    assert rel[0] > rel[1] > rel[2] > rel[3]
    with pytest.raises(ValueError):
        make_defocus_demo(ihc, pixel_size_um=0.5, z_list=())


@pytest.mark.parametrize("height,px", [(2967, 0.499), (1280, 0.5), (3000, 0.25), (700, 1.0)])
def test_band_edges_are_tile_edges_with_whole_rows_in_every_band(height, px):
    from napari_focusq.scoring.grid import TileGrid

    grid = TileGrid((height, 1), px)
    tile_edges = {grid.tile_bounds(r, 0)[0] for r in range(grid.rows)} | {height}
    whole = [grid.tile_bounds(r, 0) for r in range(grid.rows)
             if grid.tile_bounds(r, 0)[2] - grid.tile_bounds(r, 0)[0] >= round(grid.tile_size_px) - 1]
    edges = band_edges(height, px, 4)
    assert edges[0] == 0 and edges[-1] == height and set(edges) <= tile_edges
    n_rows = [sum(1 for y0, _, y1, _ in whole if a <= y0 and y1 <= b) for a, b in zip(edges[:-1], edges[1:])]
    assert min(n_rows) >= len(whole) // 4 >= 1 and sum(n_rows) == len(whole), n_rows
    assert max(n_rows) - min(n_rows) <= 1  # shared out evenly


def test_write_tif_round_trips_dtype_and_pixel_size(tmp_path, ihc):
    g = (ihc[..., 0].astype(np.uint16) * 257)
    p = write_tif(tmp_path / "g.tif", g, pixel_size_um=0.325, description={"a": 1}, tiled=True)
    with open_image(p) as src:
        assert src.pixel_size_um == pytest.approx(0.325, rel=1e-6)
        np.testing.assert_array_equal(src.read_plane(), g)


def test_tissue_map_on_sample_crop():
    with open_image(DATA / "brightfield" / "CMU-1-Small-Region.svs") as src:
        img = src.read_region(0, 0, 1400, 1300)
        px = src.pixel_size_um
    fm, mask = tissue_map(img, pixel_size_um=px, modality="brightfield")
    assert fm.shape == (5, 5) and np.isnan(fm.defocus_um).all()
    assert 0 < float(fm.tissue_fraction.max()) <= 1 and float(fm.tissue_fraction.min()) < 0.5
    assert mask.dtype == bool and mask.shape == img.shape[:2]  # 0.499 µm is used as is (within 5 %)
    assert 0.1 < mask.mean() < 0.9
