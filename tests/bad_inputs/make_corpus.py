"""Write the bad-input corpus of issue 19 into a folder (run at test time; nothing is stored).

    python tests/bad_inputs/make_corpus.py OUT_DIR      # writes the files and OUT_DIR/cases.json

Each case is what a hostile but realistic user hands ``focusq score`` / ``focusq batch``:
files that lie about their size, are cut short, corrupt, empty, not images, loops of
links, FIFOs, float images with NaN/inf, absurd pixel sizes, tampered or foreign model
files, output folders that cannot take the run. Each case says how the run must end
(see CASES below); tests/cli/test_bad_inputs.py runs every case through both commands.

The good input beside each bad one is a 640 x 640 crop of the bundled sample slide
(CC0, OpenSlide test data) saved as a TIFF with its pixel size.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"
PX = 0.499
GOOD_YX = (2000, 650)  # dense tissue in the sample slide


#: Every case, in the order make_corpus writes them (the test parametrises over these).
CASE_NAMES = (
    "huge_header_tiled", "huge_header_one_strip", "truncated_10pct", "truncated_50pct", "corrupt_tile",
    "empty_file", "random_bytes", "directory", "missing", "text_as_png", "symlink_loop", "fifo", "one_pixel",
    "all_nan", "five_d", "absurd_pixel_small", "absurd_pixel_large", "one_inf_pixel", "nan_patch",
    "stem_collision", "results_tsv_cut_line", "model_tampered_calibration", "model_weights_not_fitting",
    "model_foreign_safetensors", "model_pickled", "out_is_file", "results_tsv_is_folder",
    "results_tsv_not_ours",
)


@dataclass
class Case:
    """One bad input (or bad run) and what focusq must do with it.

    expect
        "input": this input fails (exit 1) with a one-line message naming it and ``reason``;
        the good input beside it is scored. "scored": every input is scored (exit 0).
        "run": the whole run is refused before any input (exit 2), message naming ``names``.
    """

    name: str
    bad: list[str]  # paths relative to the corpus folder (inputs put before the good one)
    expect: str
    reason: str
    options: list[str] = field(default_factory=list)  # extra CLI options ({dir} = corpus folder)
    names: str = ""  # what the message must name for "run" cases ({dir}, {out})
    out: str = ""  # a prepared output folder, relative to the corpus folder
    batch: bool = True  # False where batch gives the argument another meaning (a folder)


# --------------------------------------------------------------------------- writers
def huge_header_tiff(path: Path, side: int = 10**6, tile: int = 1024, px_um: float = 0.25,
                     rows_per_strip: int | None = None) -> Path:
    """A classic TIFF that claims ``side`` x ``side`` RGB px (3 TB) in ~7.6 MB.

    Tiled: every tile entry points at one deflated tile of zeros. With ``rows_per_strip``
    it is stripped instead, and each strip points at a small deflated stream (its
    declared strips are what a reader would have to decode).
    """
    spp = 3
    if rows_per_strip is None:
        n = (-(-side // tile)) ** 2
        data = zlib.compress(bytes(tile * tile * spp), 9)
    else:
        n = -(-side // rows_per_strip)
        data = zlib.compress(bytes(1 << 20), 9)
    pos = 8
    data_off = pos
    pos += len(data)
    bps_off = pos
    pos += 2 * spp
    offs_off = pos
    pos += 4 * n
    cnts_off = pos
    pos += 4 * n
    res_off = pos
    pos += 16
    ifd_off = pos + pos % 2
    per_cm = round(1e4 / px_um)
    one = n == 1  # a single offset / count is stored in the entry itself
    tags = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, spp, bps_off), (259, 3, 1, 8), (262, 3, 1, 2),
            (277, 3, 1, spp), (282, 5, 1, res_off), (283, 5, 1, res_off + 8), (284, 3, 1, 1), (296, 3, 1, 3)]
    if rows_per_strip is None:
        tags += [(322, 3, 1, tile), (323, 3, 1, tile), (324, 4, n, offs_off), (325, 4, n, cnts_off)]
    else:
        tags += [(273, 4, n, data_off if one else offs_off), (278, 4, 1, rows_per_strip),
                 (279, 4, n, len(data) if one else cnts_off)]
    tags.sort()
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<I", ifd_off))
        f.write(data)
        f.write(struct.pack(f"<{spp}H", *([8] * spp)))
        f.write(np.full(n, data_off, "<u4").tobytes())
        f.write(np.full(n, len(data), "<u4").tobytes())
        f.write(struct.pack("<IIII", per_cm, 1, per_cm, 1))
        if pos % 2:
            f.write(b"\0")
        f.write(struct.pack("<H", len(tags)))
        for tag, typ, cnt, val in tags:
            if typ == 3 and cnt == 1:
                f.write(struct.pack("<HHIHH", tag, typ, cnt, val, 0))
            else:
                f.write(struct.pack("<HHII", tag, typ, cnt, val))
        f.write(struct.pack("<I", 0))
    return path


def _tif(path: Path, img: np.ndarray, px: float | None = PX, **kw) -> Path:
    import tifffile

    extra = dict(resolution=(1e4 / px, 1e4 / px), resolutionunit="CENTIMETER") if px else {}
    if img.ndim == 3 and img.shape[-1] == 3 and img.dtype == np.uint8:
        kw.setdefault("photometric", "rgb")
    else:
        kw.setdefault("photometric", "minisblack")
    tifffile.imwrite(path, img, **extra, **kw)
    return path


def _ome(path: Path, img: np.ndarray, px_um: float) -> Path:
    import tifffile

    tifffile.imwrite(path, img, ome=True, photometric="rgb",
                     metadata={"axes": "YXS", "PhysicalSizeX": px_um, "PhysicalSizeY": px_um})
    return path


def good_crop() -> np.ndarray:
    from napari_focusq.io.formats import open_image

    y, x = GOOD_YX
    with open_image(SVS) as src:
        return np.ascontiguousarray(src.read_region(y, x, 640, 640))


# ----------------------------------------------------------------------------- corpus
def make_corpus(d: Path) -> list[Case]:
    """Write every case's files under ``d`` (created) and return the cases."""
    import tifffile

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    crop = good_crop()
    _tif(d / "good.tif", crop)
    cases: list[Case] = []

    def case(*a, **k):
        cases.append(Case(*a, **k))

    # -- memory: headers that claim more than any budget (fixed by budget.py)
    huge_header_tiff(d / "huge_tiled.tif")
    case("huge_header_tiled", ["huge_tiled.tif"], "input", "memory")
    huge_header_tiff(d / "huge_strip.tif", side=200_000, rows_per_strip=200_000)
    case("huge_header_one_strip", ["huge_strip.tif"], "input", "memory")

    # -- cut short, corrupt, empty, not an image
    sv = SVS.read_bytes()
    for pct in (10, 50):
        (d / f"truncated_{pct}.svs").write_bytes(sv[: len(sv) * pct // 100])
        case(f"truncated_{pct}pct", [f"truncated_{pct}.svs"], "input", "truncated")
    tile = d / "corrupt_tile.tif"
    _tif(tile, crop, tile=(256, 256), compression="zlib")
    with tifffile.TiffFile(tile) as tf:
        off, n = tf.pages[0].dataoffsets[4], tf.pages[0].databytecounts[4]
    raw = bytearray(tile.read_bytes())
    raw[off:off + n] = np.random.default_rng(19).integers(0, 256, n, dtype=np.uint8).tobytes()
    tile.write_bytes(bytes(raw))
    case("corrupt_tile", ["corrupt_tile.tif"], "input", "corrupt")
    (d / "empty.tif").write_bytes(b"")
    case("empty_file", ["empty.tif"], "input", "empty")
    (d / "random.tif").write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    case("random_bytes", ["random.tif"], "input", "not a valid TIFF")
    (d / "folder.tif").mkdir(exist_ok=True)
    case("directory", ["folder.tif"], "input", "directory", batch=False)  # batch: a folder holds inputs
    case("missing", ["missing.tif"], "input", "no")  # "file not found" / "no such file"
    (d / "notes.txt.png").write_text("not a picture")
    case("text_as_png", ["notes.txt.png"], "input", "not a valid PNG")

    # -- links and special files
    for a, b in (("loop_a.tif", "loop_b.tif"), ("loop_b.tif", "loop_a.tif")):
        if not os.path.lexists(d / a):
            os.symlink(d / b, d / a)
    case("symlink_loop", ["loop_a.tif"], "input", "symbolic link")
    if not os.path.lexists(d / "fifo.tif"):
        os.mkfifo(d / "fifo.tif")
    case("fifo", ["fifo.tif"], "input", "not a regular file")

    # -- degenerate images
    _tif(d / "one_px.tif", crop[:1, :1])
    case("one_pixel", ["one_px.tif"], "scored", "")  # scored: no tissue in it, so it does not pass
    _tif(d / "all_nan.tif", np.full((640, 640), np.nan, np.float32))
    case("all_nan", ["all_nan.tif"], "input", "no finite pixel")
    five = np.zeros((2, 2, 3, 64, 64), np.uint8)
    tifffile.imwrite(d / "five_d.tif", five, metadata={"axes": "TZCYX"}, imagej=False)
    case("five_d", ["five_d.tif"], "input", "axes focusq cannot use")
    _ome(d / "tiny_px.ome.tif", crop, 1e-6)
    case("absurd_pixel_small", ["tiny_px.ome.tif"], "input", "memory")
    _ome(d / "huge_px.ome.tif", crop, 1e6)
    case("absurd_pixel_large", ["huge_px.ome.tif"], "input", "pixel size")

    # -- non-finite pixels: scored, masked and counted per tile (never a silent wrong answer)
    f = crop.astype(np.float32) / 255
    f[100, 100, 1] = np.inf
    _tif(d / "one_inf.tif", f, photometric="rgb")
    case("one_inf_pixel", ["one_inf.tif"], "scored", "nonfinite_px")
    f = crop.astype(np.float32) / 255
    f[300:340, 300:340] = np.nan
    _tif(d / "nan_patch.tif", f, photometric="rgb")
    case("nan_patch", ["nan_patch.tif"], "scored", "nonfinite_px")

    # -- stems that collide: two inputs named alike in two folders both get outputs
    for sub in ("a", "b"):
        (d / sub).mkdir(exist_ok=True)
        _tif(d / sub / "slide.tif", crop)
    case("stem_collision", ["a/slide.tif", "b/slide.tif"], "scored", "")

    # -- results.tsv whose last line a crash cut short: new rows start on a line of their own
    from napari_focusq.export.results import RESULTS_COLUMNS

    cut = d / "out_cut"
    cut.mkdir(exist_ok=True)
    (cut / "results.tsv").write_text("\t".join(RESULTS_COLUMNS) + "\n/old/slide.svs\tslide\tok\t12.5")
    case("results_tsv_cut_line", [], "scored", "", out="out_cut")

    # -- model files: the whole run is refused, naming the model file
    models = _models(d)
    for name, reason in (("tampered_calibration", "checksum"), ("weights_not_fitting", "do not fit"),
                         ("foreign_safetensors", "napari-focusq metadata"), ("pickled", "pickle")):
        case(f"model_{name}", [], "run", reason, options=["--model", str(models[name])],
             names=str(models[name]))

    # -- output folders that cannot take the run: refused before the first input
    (d / "out_is_file").write_text("x")
    case("out_is_file", [], "run", "is a file", out="out_is_file", names="{out}")
    (d / "out_tsv_dir" / "results.tsv").mkdir(parents=True, exist_ok=True)
    case("results_tsv_is_folder", [], "run", "not a file", out="out_tsv_dir", names="{out}")
    (d / "out_foreign").mkdir(exist_ok=True)
    (d / "out_foreign" / "results.tsv").write_text("patient\tdiagnosis\n1\tbenign\n")
    case("results_tsv_not_ours", [], "run", "not a focusq results table", out="out_foreign", names="{out}")

    (d / "cases.json").write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return cases


def _models(d: Path) -> dict[str, Path]:
    """Bad model files made from the shipped fast model."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_focusq.models import weights_dir

    src = weights_dir() / "fast.safetensors"
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["focusq"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    out = {}
    # calibration zeroed, checksum left as it was: read 0.000 µm, pass, before issue 19
    m = dict(meta, calibration={**meta["calibration"], "y": [0.0] * len(meta["calibration"]["y"])})
    out["tampered_calibration"] = d / "tampered.safetensors"
    save_file(tensors, str(out["tampered_calibration"]), metadata={"focusq": json.dumps(m)})
    # a consistent file (checksum re-stamped) whose tensors do not fit its architecture
    from napari_focusq.models.checkpoint import save_checkpoint

    wrong = dict(tensors)
    k = max(sorted(wrong), key=lambda k: wrong[k].ndim)  # a weight matrix or kernel
    wrong[k] = torch.zeros((wrong[k].shape[0] + 1,) + tuple(wrong[k].shape[1:]))
    out["weights_not_fitting"] = save_checkpoint(d / "misfit.safetensors", wrong, meta)
    out["foreign_safetensors"] = d / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(out["foreign_safetensors"]))
    out["pickled"] = d / "model.pt"
    import pickle

    out["pickled"].write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/bad_inputs/make_corpus.py OUT_DIR")
    for c in make_corpus(Path(sys.argv[1])):
        print(f"{c.name:28s} {c.expect:7s} {c.reason}")
