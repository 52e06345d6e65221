"""The focusq command line, run in-process through main(argv) (one real console-script run)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focusq.cli import app as cli
from napari_focusq.cli.app import main
from napari_focusq.export.results import RESULTS_COLUMNS, read_results
from napari_focusq.io.formats import open_image
from napari_focusq.scoring.focusmap import CSV_COLUMNS

DATA = Path(__file__).parents[2] / "data"
SAMPLE = DATA / "brightfield" / "CMU-1-Small-Region.svs"
SUBCOMMANDS = ("score", "batch", "train", "evaluate", "simulate", "sharpest", "demo")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """An untrained fast model saved as a checkpoint: the files, not the values, are under test."""
    import torch

    from napari_focusq.models import new_model

    torch.manual_seed(0)  # the same weights, so the same tiles excluded, on every run
    return new_model("fast").save(tmp_path_factory.mktemp("model") / "fast_untrained.safetensors")


# ------------------------------------------------------------------------------ usage
@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_exits_0_and_shows_examples(command, capsys):
    assert main(([command] if command else []) + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "focusq" in out


@pytest.mark.parametrize("argv", [
    [],
    ["bogus"],
    ["score", "x.svs"],                                   # no --out
    ["score", "--out", "o"],                              # no input
    ["score", "x.svs", "--out", "o", "--threshold-um", "-1"],
    ["score", "x.svs", "--out", "o", "--slice", "middle"],
    ["score", "x.svs", "--out", "o", "--pixel-size", "zero"],
    ["score", "x.svs", "--out", "o", "--modality", "xray"],
    ["batch", "x", "--out", "o", "--workers", "2", "--scheduler", "tcp://h:1"],
    ["simulate", "x.tif", "--z-um", "1,a", "--out", "o"],
    ["simulate", "x.tif", "--out", "o"],
    ["sharpest", "x.tif", "--out", "o.json", "--measure", "entropy"],
    ["train", "--out", "m.safetensors", "--recipe", "bogus"],
    ["evaluate", "default"],
])
def test_bad_usage_exits_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_unknown_model_is_a_usage_error(tmp_path, capsys):
    assert main(["score", str(SAMPLE), "--out", str(tmp_path), "--model", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "results.tsv").exists()


# ------------------------------------------------------------------------------ score
@pytest.fixture(scope="module")
def scored(tmp_path_factory, model_path):
    """One run: the sample slide plus a missing file."""
    out = tmp_path_factory.mktemp("score")
    missing = out.parent / "missing_slide.svs"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as so:
        rc = main(["score", str(SAMPLE), str(missing), "--out", str(out), "--model", str(model_path)])
    return rc, out, missing, err.getvalue(), so.getvalue()


def _assert_geojson_covers_excluded_rows(gj, rows) -> int:
    """The GeoJSON's polygons cover exactly the CSV's excluded tiles (an empty feature list
    passes only when no tile is excluded); returns the number of excluded tiles."""
    from shapely.geometry import box, shape
    from shapely.ops import unary_union

    tiles = [box(int(r["x"]), int(r["y"]), int(r["x"]) + int(r["width"]), int(r["y"]) + int(r["height"]))
             for r in rows if r["excluded"] == "1"]
    polys = [shape(f["geometry"]) for f in gj["features"]]
    assert all(p.is_valid for p in polys)
    assert all(f["properties"]["classification"]["name"] == "Ignore*" for f in gj["features"])
    assert bool(polys) == bool(tiles)
    if tiles:
        assert unary_union(polys).symmetric_difference(unary_union(tiles)).area == 0
        assert sum(p.area for p in polys) == sum(t.area for t in tiles)
    return len(tiles)


def test_score_writes_every_output_and_they_parse(scored):
    rc, out, _, _, stdout = scored
    stem = "CMU-1-Small-Region"
    for suffix in (".tiles.csv", ".heatmap.tif", ".mask.png", ".geojson", ".overlay.png", ".tiles.geojson.gz"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    with open(out / f"{stem}.tiles.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    grid = tifffile.imread(out / f"{stem}.heatmap.tif")
    assert grid.dtype == np.float32
    with open_image(SAMPLE) as src:
        px, (H, W) = src.pixel_size_um, src.shape[:2]
    t = 320 * 0.5 / px
    assert grid.shape == (int(np.ceil(H / t - 1e-9)), int(np.ceil(W / t - 1e-9)))
    assert len(rows) == grid.size
    assert np.isfinite(grid).any() and np.isnan(grid).any()  # tissue and glass
    scored_csv = {(int(r["row"]), int(r["col"])) for r in rows if r["defocus_um"] != ""}
    assert scored_csv == {tuple(rc_) for rc_ in np.argwhere(np.isfinite(grid)).tolist()}
    gj = json.loads((out / f"{stem}.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    _assert_geojson_covers_excluded_rows(gj, rows)
    mask = Image.open(out / f"{stem}.mask.png")
    assert mask.size == (W, H) and mask.text["downsample"] == "1"
    overlay = Image.open(out / f"{stem}.overlay.png")
    overlay.load()
    assert overlay.size[0] >= 400
    assert str(out) in stdout


def test_missing_input_is_reported_recorded_and_skipped(scored):
    rc, out, missing, stderr, _ = scored
    assert rc == 1
    assert f"focusq: {missing}: file not found" in stderr
    rows = read_results(out / "results.tsv")
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert rows[0]["input"] == str(SAMPLE) and rows[1]["input"] == str(missing)
    assert rows[1]["error"] == "file not found"
    ok = rows[0]
    assert tuple(ok) == RESULTS_COLUMNS
    assert 20 < float(ok["tissue_pct"]) < 80
    assert ok["pass"] in ("yes", "no") and ok["modality"] == "brightfield"
    assert float(ok["p90_um"]) >= float(ok["median_um"]) >= 0
    assert float(ok["pixel_size_um"]) == pytest.approx(0.499, abs=1e-3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


def test_score_without_pixel_size_says_to_pass_it(tmp_path, model_path, capsys):
    png = DATA / "brightfield" / "ihc_skimage.png"
    assert main(["score", str(png), "--out", str(tmp_path), "--model", str(model_path)]) == 1
    err = capsys.readouterr().err
    assert "--pixel-size" in err and str(png) in err
    (row,) = read_results(tmp_path / "results.tsv")
    assert row["status"] == "error" and "--pixel-size" in row["error"]


def test_ctrl_c_exits_130_without_half_written_files(tmp_path, model_path, monkeypatch, capsys):
    import napari_focusq.export.outputs as outputs

    real = tifffile.imwrite

    def interrupted(path, data, **kw):
        real(path, data, **kw)  # the temporary file is complete, the rename has not happened
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", interrupted)
    assert outputs.write_heatmap_tif  # written through tifffile.imwrite
    rc = main(["score", str(SAMPLE), "--out", str(tmp_path), "--model", str(model_path)])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err
    names = {p.name for p in tmp_path.iterdir()}
    assert not any(n.startswith(".") for n in names), names
    assert "CMU-1-Small-Region.heatmap.tif" not in names
    assert read_results(tmp_path / "results.tsv") == []


# --------------------------------------------------------------------------- simulate
def test_simulate_stack_middle_plane_keeps_dtype(tmp_path, capsys, made_stack):
    assert main(["simulate", str(made_stack.path), "--z-um", "0,1,2.5", "--out", str(tmp_path),
                 "--pixel-size", "0.26"]) == 0
    stack = made_stack.data
    for z in ("0", "1", "2.5"):
        p = tmp_path / f"nuclei_zstack_z{z}um.tif"
        with open_image(p) as src:
            assert src.pixel_size_um == pytest.approx(0.26, rel=1e-6)
            a = src.read_plane()
        assert a.dtype == np.uint16 and a.shape == (256, 256)
        prev = Image.open(p.with_suffix(".png"))
        assert prev.size == (256, 256) and prev.mode == "L"
        if z == "0":
            np.testing.assert_array_equal(a, stack[20])  # the middle plane
        else:
            assert a.std() < stack[20].std()
    assert "z2.5um" in capsys.readouterr().out


def test_simulate_rgb_png_and_its_errors(tmp_path, monkeypatch, capsys):
    png = DATA / "brightfield" / "ihc_skimage.png"
    assert main(["simulate", str(png), "--z-um", "0,3", "--out", str(tmp_path)]) == 2
    assert "--pixel-size" in capsys.readouterr().err
    assert main(["simulate", str(png), "--z-um", "3", "--out", str(tmp_path), "--pixel-size", "0.5",
                 "--method", "gaussian", "--na", "0.5"]) == 0
    a = tifffile.imread(tmp_path / "ihc_skimage_z3um.tif")
    assert a.dtype == np.uint8 and a.shape == (512, 512, 3)
    assert main(["simulate", str(png), "--z-um", "1", "--out", str(tmp_path), "--pixel-size", "0.5",
                 "--na", "1.2"]) == 2  # NA above the refractive index
    monkeypatch.setattr("napari_focusq.demo.MAX_SIMULATE_SIDE", 300)
    capsys.readouterr()
    assert main(["simulate", str(png), "--z-um", "1", "--out", str(tmp_path), "--pixel-size", "0.5"]) == 1
    assert "crop" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "none.tif"), "--z-um", "1", "--out", str(tmp_path)]) == 1


# --------------------------------------------------------------------------- sharpest
def test_sharpest_json_and_csv(tmp_path, capsys, made_stack):
    out = tmp_path / "best.json"
    assert main(["sharpest", str(made_stack.path), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert abs(res["index"] - made_stack.best) <= 1  # 0.4 µm steps with photon noise
    assert res["measure"] == "std" and len(res["scores"]) == made_stack.planes
    assert capsys.readouterr().out.strip() == str(res["index"])
    csv_out = tmp_path / "scores.csv"
    assert main(["sharpest", str(made_stack.path), "--out", str(csv_out), "--measure", "tenengrad"]) == 0
    rows = list(csv.DictReader(open(csv_out)))
    assert len(rows) == made_stack.planes and sum(int(r["sharpest"]) for r in rows) == 1
    best = next(int(r["plane"]) for r in rows if r["sharpest"] == "1")
    assert abs(best - made_stack.best) <= 1


def test_sharpest_of_a_2d_image_fails_cleanly(tmp_path, capsys):
    assert main(["sharpest", str(DATA / "brightfield" / "ihc_skimage.png"), "--out", str(tmp_path / "o.json")]) == 1
    assert "not a z-stack" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_evaluate_the_shipped_model_on_a_held_out_image(tmp_path, capsys):
    """`focusq evaluate` end to end: the shipped brightfield model on HistoQC template 3 (never
    trained on), 200 tiles defocused 0-6 µm, metrics printed and written as JSON."""
    out = tmp_path / "eval.json"
    assert main(["evaluate", "default", str(DATA / "brightfield" / "histoqc_template3.png"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "200 tiles from 1 images" in printed and "variance of Laplacian" in printed
    res = json.loads(out.read_text())
    assert res["n_tiles"] == 200 and res["images"] == ["histoqc_template3.png"]
    m, v = res["metrics"], res["variance_of_laplacian"]
    assert m["r2"] > 0.98 and 0.9 < m["slope"] < 1.1 and m["mae_0_4"] < 0.3 and m["auc"] > 0.99
    assert m["spearman"] > v["spearman"]  # beats the baseline it prints beside it


# -------------------------------------------------------------- delegated subcommands
@pytest.mark.parametrize("command,module,func,argv", [
    ("batch", "batch", "main_batch", ["batch", "scans/*.svs", "--out", "o", "--workers", "3"]),
    ("train", "cli.train", "main_train", ["train", "d1", "d2", "--out", "m.safetensors", "--epochs", "2"]),
    ("evaluate", "cli.evaluate", "main_evaluate", ["evaluate", "default", "d1"]),
])
def test_delegated_commands_get_their_args(command, module, func, argv, monkeypatch):
    seen = {}
    fake = types.ModuleType(f"napari_focusq.{module}")
    setattr(fake, func, lambda args: seen.setdefault("args", args) and 0)
    monkeypatch.setitem(sys.modules, f"napari_focusq.{module}", fake)
    assert main(argv) == 0
    args = seen["args"]
    assert args.command == command
    if command == "batch":
        assert args.inputs == ["scans/*.svs"] and args.workers == 3 and args.scheduler is None
        assert args.threshold_um == 2.0 and args.modality == "auto"
    elif command == "train":
        assert args.data == ["d1", "d2"] and args.epochs == 2 and args.preset == "fast" and args.recipe == "default"
    else:
        assert args.model == "default" and args.data == ["d1"]


def test_demo_writes_data_and_scores_both_slides(tmp_path, capsys):
    """`focusq demo` end to end with the shipped model: nothing stubbed."""
    rc = main(["demo", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    for z in (0, 1, 2, 4):
        assert (tmp_path / "series" / f"sample_crop_z{z}um.tif").is_file()
        assert (tmp_path / "series" / f"sample_crop_z{z}um.png").is_file()
    assert tifffile.imread(tmp_path / "series" / "sample_crop_z4um.tif").shape == (1024, 1024, 3)
    assert Image.open(tmp_path / "sample.tissue.png").mode == "L"
    assert tuple(next(csv.reader(open(tmp_path / "sample.grid.csv")))) == CSV_COLUMNS
    half = tmp_path / "sample_half_defocused.tif"
    with tifffile.TiffFile(half) as tf:
        assert tf.pages[0].is_tiled
    with open_image(half) as src, open_image(SAMPLE) as ref:
        assert src.pixel_size_um == pytest.approx(ref.pixel_size_um, rel=1e-6)
        a, b = src.read_plane(), ref.read_plane()
    W = a.shape[1]
    np.testing.assert_array_equal(a[:, :W // 2], b[:, :W // 2])
    assert not np.array_equal(a[:, W // 2:], b[:, W // 2:])
    rows = read_results(tmp_path / "results.tsv")
    assert [r["stem"] for r in rows] == ["sample", "sample_half_defocused"]
    assert all(r["status"] == "ok" and r["model"].startswith("fast ") for r in rows)
    for stem in ("sample", "sample_half_defocused"):
        for suffix in (".tiles.csv", ".heatmap.tif", ".mask.png", ".geojson", ".overlay.png"):
            assert (tmp_path / f"{stem}{suffix}").is_file(), stem + suffix
    # The right half was defocused by 3 µm. CMU-1 is a training image of the shipped model,
    # so these are in-sample readings: the test checks that the demo scores for real, not
    # accuracy. 1 µm either side of the truth and of focus (the demo's own threshold is 2):
    # a stubbed or unscored demo has no readings, a wrong one cannot tell the halves apart.
    with open(tmp_path / "sample_half_defocused.tiles.csv", newline="") as fh:
        tiles = list(csv.DictReader(fh))
    read = [(int(r["x"]), int(r["x"]) + int(r["width"]), float(r["defocus_um"])) for r in tiles
            if r["defocus_um"] != ""]
    left = [d for x0, x1, d in read if x1 <= W // 2]  # tiles wholly in one half
    right = [d for x0, x1, d in read if x0 >= W // 2]
    assert len(left) >= 5 and len(right) >= 5
    assert np.median(left) < 1.0 and 2.0 < np.median(right) < 4.0, (np.median(left), np.median(right))
    gj = json.loads((tmp_path / "sample_half_defocused.geojson").read_text())
    assert _assert_geojson_covers_excluded_rows(gj, tiles) >= 5  # the blurred half is excluded, as polygons
    sample = {r["stem"]: r for r in rows}
    assert float(sample["sample_half_defocused"]["p90_um"]) > float(sample["sample"]["p90_um"]) + 1.0
    assert str(tmp_path) in out


def test_demo_without_a_model_still_writes_the_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("napari_focusq.demo.write_defocus_series", lambda *a, **k: [])  # keep it quick
    rc = main(["demo", "--out", str(tmp_path), "--model", str(tmp_path / "absent.safetensors")])
    assert rc == 1
    assert "scoring skipped" in capsys.readouterr().out
    assert (tmp_path / "sample_half_defocused.tif").is_file()
    assert not (tmp_path / "results.tsv").exists()


# --------------------------------------------------------------------- console script
def test_console_script(tmp_path, made_stack):
    exe = Path(sys.executable).parent / "focusq"
    assert exe.exists(), "install the package: pip install -e . --no-deps"
    r = subprocess.run([str(exe), "sharpest", str(made_stack.path), "--out", str(tmp_path / "s.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert abs(int(r.stdout.strip()) - made_stack.best) <= 1
    assert "sharpest" in r.stderr  # progress on stderr
    r = subprocess.run([str(exe), "score", "--out"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "usage" in r.stderr
    assert cli.EXIT_USAGE == 2


def test_simulate_layered_thick_section(tmp_path, capsys):
    png = DATA / "brightfield" / "ihc_skimage.png"
    other = DATA / "brightfield" / "histoqc_template1.png"
    assert main(["simulate", str(png), "--z-um", "0,2.5,-2.5", "--out", str(tmp_path), "--pixel-size", "0.5",
                 "--layers", f"2.5:0.3,4:0.2:{other}"]) == 0
    out = capsys.readouterr().out
    assert "ihc_skimage_layered_z+2.5um.tif" in out and "ihc_skimage_layered_z-2.5um.tif" in out
    src = np.asarray(Image.open(png))[..., :3]
    at0 = tifffile.imread(tmp_path / "ihc_skimage_layered_z+0um.tif")
    at25 = tifffile.imread(tmp_path / "ihc_skimage_layered_z+2.5um.tif")
    assert at0.shape == src.shape and at0.dtype == np.uint8
    # At the best plane (the bulk's) the image is sharper than 2.5 µm off it, and darker than
    # the bulk alone: the faint layers add optical density.
    lap = lambda a: np.abs(np.diff(a[..., 1].astype(float), axis=1)).mean()
    assert lap(at0) > 1.5 * lap(at25)
    assert at0.mean() < src.mean()
    with tifffile.TiffFile(tmp_path / "ihc_skimage_layered_z+2.5um.tif") as tf:
        desc = json.loads(tf.pages[0].description)
    assert desc["best_plane_um"] == 0.0 and desc["focal_plane_um"] == 2.5
    assert [L["depth_um"] for L in desc["layers"]] == [0.0, 2.5, 4.0]
    # Bad layer lists and layer images are clear errors.
    assert main(["simulate", str(png), "--z-um", "1", "--out", str(tmp_path), "--pixel-size", "0.5",
                 "--layers", "2.5"]) == 2
    assert "DEPTH:WEIGHT" in capsys.readouterr().err
    fl = DATA / "fluorescence" / "oiffile_mitoEGFP_ch1.tif"  # grey uint16: not a layer of an RGB image
    assert main(["simulate", str(png), "--z-um", "1", "--out", str(tmp_path), "--pixel-size", "0.5",
                 "--layers", f"1:0.2:{fl}"]) != 0
    assert "oiffile_mitoEGFP_ch1.tif" in capsys.readouterr().err
