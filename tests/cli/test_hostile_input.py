"""Issue 19, one test per defect at its cause (the corpus test runs the whole commands)."""
from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_focusq.cli.app import main
from napari_focusq.export.outputs import unique_stem
from napari_focusq.export.results import RESULTS_COLUMNS, append_results, read_results, results_row
from napari_focusq.io import budget
from napari_focusq.io.formats import open_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bad_inputs"))
from make_corpus import _tif, huge_header_tiff  # noqa: E402

PX = 0.499


@pytest.fixture
def good(tmp_path, slide_crop) -> Path:
    return _tif(tmp_path / "good.tif", slide_crop(2000, 650, 640, 640))


# ------------------------------------------------------------------------- memory budget
def test_budget_figures_and_settings(monkeypatch):
    monkeypatch.delenv(budget.ENV_VAR, raising=False)
    assert budget.max_memory_bytes() == budget.DEFAULT_MAX_MEMORY_MB * 10**6
    monkeypatch.setenv(budget.ENV_VAR, "512")
    assert budget.max_memory_bytes() == 512 * 10**6
    with budget.max_memory_mb(3):
        assert budget.max_memory_bytes() == 3 * 10**6
        with pytest.raises(budget.MemoryBudgetError) as e:
            budget.require("x.tif", "reading it", 4 * 10**6, hint="try less")
    msg = str(e.value)
    assert msg.startswith("x.tif: reading it needs 4.0 MB") and "--max-memory MB" in msg and "try less" in msg
    assert budget.max_memory_bytes() == 512 * 10**6  # the context restored the environment's
    monkeypatch.setenv(budget.ENV_VAR, "lots")
    with pytest.raises(budget.FocusQError, match=budget.ENV_VAR):
        budget.max_memory_bytes()
    # exact integers: a claimed 10^6 x 10^6 RGB float64 plane does not wrap around
    assert budget.plane_need(10**6, 10**6, 3, 8) == 3 * 10**12 * 16


def test_overview_of_a_huge_level_refused_before_reading(tmp_path):
    path = huge_header_tiff(tmp_path / "huge.tif", px_um=0.05)
    with open_image(path) as src:
        with pytest.raises(budget.MemoryBudgetError, match="overview of a 1,000,000 x 1,000,000 px level"):
            src.thumbnail(4096)


def test_one_strip_file_counts_the_whole_strip(tmp_path):
    """A region read decodes whole chunks: one pixel of a one-strip file is the whole strip."""
    path = huge_header_tiff(tmp_path / "strip.tif", side=200_000, rows_per_strip=200_000)
    with open_image(path) as src:
        with pytest.raises(budget.MemoryBudgetError, match="200,000 x 200,000 px to decode"):
            src.read_region(0, 0, 1, 1)


def test_absurd_pixel_size_refused_by_the_tile_budget(good, tmp_path):
    from napari_focusq.scoring.pipeline import score_slide

    with pytest.raises(budget.MemoryBudgetError, match="reading tiles of"):
        score_slide(good, pixel_size_um=1e-5)


def test_simulate_refuses_huge_defocus_before_writing(good, tmp_path, capsys):
    for z in ("300", "1e6"):
        rc = main(["simulate", str(good), "--z-um", f"0,{z}", "--out", str(tmp_path / "s")])
        err = capsys.readouterr().err
        assert rc == 1 and "Traceback" not in err
        assert f"focusq: {good}: simulating" in err and "--max-memory" in err, err
        assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


def test_simulate_counts_its_layers_before_reading_them(good, tmp_path, capsys):
    # A layer 300 µm deep is blurred by ~300 µm at any focus: refused like --z-um 300, before
    # the layer image (here: IMAGE's own content) is made or anything is written.
    rc = main(["simulate", str(good), "--z-um", "0", "--layers", "300:0.2", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"focusq: {good}: simulating 300 µm" in err and "1 more layer" in err and "--layers" in err, err
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


def test_simulate_budget_adds_the_layers_depth_span_and_their_memory():
    from napari_focusq.config import Optics
    from napari_focusq.demo import check_simulate_budget
    from napari_focusq.optics.layered import Layer

    img = np.zeros((500, 400, 3), np.uint8)
    o = Optics.for_modality("brightfield")

    def need(z):
        return budget.simulate_need(500, 400, 3, z, PX, o.na, o.n, min(o.wavelengths_um), o.oversample)

    layers = [Layer(img, 2.0, 0.3), Layer(img, -1.0, 0.2)]
    extra = 2 * img.nbytes + 2 * img.size * 4  # the layers' images, a float accumulator and a transmission
    with budget.max_memory_mb((need(1.0) + 2) / 1e6):  # +-2 bytes: MB -> bytes rounds
        check_simulate_budget(img, [0, 1], PX, "brightfield")  # a thin series fits
        with pytest.raises(budget.MemoryBudgetError, match="simulating 4 µm .* 2 more layers"):
            check_simulate_budget(img, [0, 1], PX, "brightfield", layers=layers)  # 1 µm + a 3 µm deep section
    with budget.max_memory_mb((need(4.0) + extra + 2) / 1e6):
        check_simulate_budget(img, [0, 1], PX, "brightfield", layers=layers)
        check_simulate_budget(img, [-1], PX, "brightfield", layers=[(2.0, 0.3, None), (-1.0, 0.2, None)])
    with budget.max_memory_mb((need(4.0) + extra - 2) / 1e6), pytest.raises(budget.MemoryBudgetError):
        check_simulate_budget(img, [0, 1], PX, "brightfield", layers=layers)


def test_sharpest_refuses_planes_over_the_budget(tmp_path, capsys):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((3, 600, 600), np.uint16), metadata={"axes": "ZYX"})
    rc = main(["sharpest", str(stack), "--out", str(tmp_path / "s.json"), "--max-memory", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and f"focusq: {stack}:" in err and "--max-memory" in err, err
    assert not (tmp_path / "s.json").exists()


# ------------------------------------------------------------- one bad input never stops a run
def test_memory_error_on_one_input_is_recorded_and_the_run_goes_on(good, tmp_path, capsys, monkeypatch):
    import napari_focusq.export.outputs as outputs

    real = outputs.score_to_outputs

    def flaky(path, *a, **k):
        if Path(path).name == "first.tif":
            raise MemoryError("Unable to allocate 7.00 GiB for an array")
        return real(path, *a, **k)

    first = _tif(tmp_path / "first.tif", np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setattr(outputs, "score_to_outputs", flaky)
    rc = main(["score", str(first), str(good), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    rows = {Path(r["input"]).name: r for r in read_results(tmp_path / "out" / "results.tsv")}
    assert rows["good.tif"]["status"] == "ok"
    assert rows["first.tif"]["status"] == "error" and "out of memory" in rows["first.tif"]["error"]


def test_memory_error_outside_an_input_is_a_message(tmp_path, capsys, monkeypatch):
    import napari_focusq.cli.app as cli

    def boom(args):
        raise MemoryError()

    monkeypatch.setitem(cli.COMMANDS, "sharpest", boom)
    rc = main(["sharpest", "x.tif", "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("focusq: out of memory") and "Traceback" not in err


def test_symlink_loop_gets_a_stem_and_a_reason(tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    os.symlink(b, a)
    os.symlink(a, b)
    assert unique_stem(a, set()) == "a"  # resolve() raised "Symlink loop" here
    with pytest.raises(ValueError, match="leads nowhere"):
        open_image(a)


def test_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "in.tif"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        open_image(fifo)  # opening it for reading would wait for a writer forever


def test_slice_index_on_a_2d_image_is_refused(good):
    from napari_focusq.scoring.pipeline import ScoringError, score_slide

    with pytest.raises(ScoringError, match="--slice 3 .* 2-D image"):
        score_slide(good, slice=3)


def test_truncated_before_its_first_directory(tmp_path):
    svs = Path(__file__).resolve().parents[2] / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"
    cut = tmp_path / "cut.svs"
    cut.write_bytes(svs.read_bytes()[: svs.stat().st_size // 10])
    with pytest.raises(ValueError, match="file is truncated: its first image directory"):
        open_image(cut)


# ---------------------------------------------------------------- results.tsv and output folder
def test_append_after_a_cut_last_line_starts_a_new_line(tmp_path):
    tsv = tmp_path / "results.tsv"
    tsv.write_text("\t".join(RESULTS_COLUMNS) + "\n/a.svs\ta\tok\t1")  # a crash cut this row
    append_results(tsv, results_row(None, stem="b", input_path="/b.svs", seconds=1.0, status="error", error="x"))
    lines = tsv.read_text().splitlines()
    assert lines[1] == "/a.svs\ta\tok\t1" and lines[2].startswith("/b.svs\tb\terror")
    assert [r["stem"] for r in read_results(tsv)] == ["b"]  # the cut row is not a result


def test_output_folder_checked_before_the_first_input(good, tmp_path, capsys, monkeypatch):
    import tempfile

    import napari_focusq.export.outputs as outputs
    import napari_focusq.export.preflight as preflight

    monkeypatch.setattr(outputs, "score_to_outputs", lambda *a, **k: pytest.fail("an input was scored"))
    out = tmp_path / "ro"
    out.mkdir()

    def denied(*a, **k):  # what a read-only folder does (root ignores chmod, so simulate it)
        raise PermissionError(errno.EACCES, "Permission denied", str(out / ".focusq-probe.x"))

    monkeypatch.setattr(preflight.tempfile, "mkstemp", denied)
    rc = main(["score", str(good), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot write in output folder {out}: Permission denied" in err
    assert ".focusq-probe" not in err  # the folder is named, not a hidden temporary file
    monkeypatch.setattr(preflight.tempfile, "mkstemp", tempfile.mkstemp)


def test_disk_full_names_the_file(tmp_path, monkeypatch):
    from napari_focusq import _atomic

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_atomic.os, "replace", full)
    with pytest.raises(OSError) as e:
        _atomic.write_text(tmp_path / "x.tiles.csv", "a")
    assert str(e.value) == f"cannot write {tmp_path / 'x.tiles.csv'}: No space left on device"
    assert e.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())  # no temporary file left


def test_train_out_under_a_file_fails_before_training(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    rc = main(["train", "--out", str(tmp_path / "f" / "m.safetensors"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "is a file, not a folder" in err and "Traceback" not in err


def test_evaluate_refuses_a_one_pixel_image(tmp_path, capsys):
    one = _tif(tmp_path / "one.tif", np.full((1, 1, 3), 200, np.uint8))
    rc = main(["evaluate", "default", str(one), "--modality", "brightfield"])
    out = capsys.readouterr()
    assert rc == 1 and "quarter tile" in out.err and "R²" not in out.out


# ------------------------------------------------------------------------ non-finite pixels
def test_one_inf_pixel_does_not_rescale_the_other_tiles(slide_crop):
    from napari_focusq.models import prepare_input

    clean = slide_crop(2000, 650, 320, 320).astype(np.float32) / 255
    dirty = clean.copy()
    dirty[10, 10, 1] = np.inf
    alone = prepare_input(clean[None], "green+blue", "brightfield")
    both = prepare_input(np.stack([dirty, clean]), "green+blue", "brightfield")
    np.testing.assert_array_equal(both[1], alone[0])  # was scaled by 1/255 (one +inf in the batch)
    assert np.isfinite(both).all()
    # the masked pixel takes its tile's median, not 0 or 255
    assert both[0, 0, 10, 10] == pytest.approx(np.median(clean[..., 1]) * 255, rel=1e-4)


# ------------------------------------------------------------------------------ model files
def test_legacy_tensor_only_digest_is_refused_with_the_restamp_hint(fast_model_file, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_focusq.models import ModelFileError, model_from_file
    from napari_focusq.models.checkpoint import _tensor_digest
    from napari_focusq.models.restamp import main as restamp

    with safe_open(str(fast_model_file), framework="pt") as f:
        meta = json.loads(f.metadata()["focusq"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"focusq": json.dumps({**meta, "sha256": _tensor_digest(tensors).hexdigest()})})
    with pytest.raises(ModelFileError, match="re-stamp it") as e:
        model_from_file(old)
    assert str(old) in str(e.value)
    assert restamp([str(old)]) == 0
    assert model_from_file(old).meta.get("calibration") == meta.get("calibration")


def test_digest_covers_the_reading_metadata(fast_model_file, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_focusq.models import ModelFileError, model_from_file

    with safe_open(str(fast_model_file), framework="pt") as f:
        meta = json.loads(f.metadata()["focusq"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edits = {"calibration": {"x": [0, 1], "y": [0, 0]}, "normalisation": "something else",
             "optics": {"na": 0.3}, "arch_config": {**meta["arch_config"], "heads": 4}}
    for key, value in edits.items():
        bad = tmp_path / f"{key}.safetensors"
        save_file(tensors, str(bad), metadata={"focusq": json.dumps({**meta, key: value})})
        with pytest.raises(ModelFileError, match="do not match the recorded checksum"):
            model_from_file(bad)
    # metadata that does not shape the reading may change freely
    ok = tmp_path / "renamed.safetensors"
    save_file(tensors, str(ok), metadata={"focusq": json.dumps({**meta, "name": "renamed", "created": "x"})})
    assert model_from_file(ok).name == "renamed"


def test_arch_config_the_builder_refuses_is_a_model_file_error(fast_model_file, tmp_path):
    from napari_focusq.models import ModelFileError, load_checkpoint, model_from_file, save_checkpoint

    tensors, meta = load_checkpoint(fast_model_file)
    bad = save_checkpoint(tmp_path / "odd.safetensors", tensors, {**meta, "arch_config": {"bogus": 1}})
    with pytest.raises(ModelFileError, match="do not build a 'fast' model") as e:  # was a TypeError
        model_from_file(bad)
    assert str(bad) in str(e.value)


def test_corrupt_jpeg_tiles_give_one_line_and_no_asyncio_tracebacks(tmp_path):
    """zarr decodes a plane's tiles as gathered tasks; the siblings of the failed one used
    to print dozens of "Task exception was never retrieved" tracebacks at exit."""
    import subprocess

    rng = np.random.default_rng(19)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, rng.integers(0, 255, (3, 2048, 2048, 3), np.uint8), photometric="rgb",
                     tile=(256, 256), compression="jpeg", metadata={"axes": "ZYXS"})
    with tifffile.TiffFile(stack) as tf:
        chunks = list(zip(tf.pages[0].dataoffsets, tf.pages[0].databytecounts))
    raw = bytearray(stack.read_bytes())
    for off, n in chunks[::2]:  # every other tile of the first plane is garbage (64 tiles: many in flight)
        raw[off:off + n] = rng.integers(0, 255, n, np.uint8).tobytes()
    stack.write_bytes(bytes(raw))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    r = subprocess.run([sys.executable, "-m", "napari_focusq.cli", "sharpest", str(stack), "--out",
                        str(tmp_path / "s.json")], capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("sharpest ")]  # progress bar lines
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"focusq: {stack}: cannot read pixels") and "corrupt" in lines[0]
