"""Every slide format the project can make, opened lazily through each backend, the CLI and napari's reader.

The files are written here from the bundled sample slide (CMU-1-Small-Region.svs, 0.499 µm):
DICOM WSI through wsidicom's writer, CZI through pylibCZIrw's, generic and Philips-style
tiled TIFF through tifffile. Formats that only OpenSlide reads and that nothing here can
write (MRXS, SCN, BIF, VMS/VMU) are listed in the README as not tested here.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from format_files import linear_rgb_icc, make_czi, make_dicom_wsi, make_generic_tiff, make_philips_tiff
from napari_focusq.errors import ImageReadError
from napari_focusq.io.formats import open_image

REPO = Path(__file__).resolve().parents[2]
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"
PX = 0.499
#: a tissue tile of the sample slide (level-0 y, x) and the tile side read from it
TILE_YX, TILE = (1024, 768), 256

pytest.importorskip("openslide")
pytest.importorskip("wsidicom")
pytest.importorskip("pylibCZIrw")


@pytest.fixture(scope="module")
def rgb(slide_plane) -> np.ndarray:
    return slide_plane


@pytest.fixture(scope="module")
def files(tmp_path_factory, rgb) -> dict[str, Path]:
    """name -> a file (or DICOM folder) of each format, written once for the module."""
    d = tmp_path_factory.mktemp("formats")
    with open_image(SVS) as src:
        label = src.associated_images()["label"]
    grey = rgb[..., 1][None].repeat(3, axis=0).astype(np.uint16) * 257  # 3 planes, 16-bit
    grey[1] = grey[1] // 2  # planes differ, so a wrong z would show
    grey[2] = grey[2] // 3
    return {
        "generic_tiff": make_generic_tiff(rgb, d / "generic.tif", PX),
        "philips_tiff": make_philips_tiff(rgb, d / "philips.tiff", PX),
        "dicom": make_dicom_wsi(rgb, d / "dicom_slide", PX, label=label, icc_profile=linear_rgb_icc()),
        "icc_tiff": make_generic_tiff(rgb[:600, :500], d / "icc.tif", PX, icc_profile=linear_rgb_icc()),
        "czi_rgb": make_czi(rgb, d / "slide.czi", PX),
        "czi_stack": make_czi(grey, d / "stack.czi", PX, z_spacing_um=1.5),
    }


#: name -> (backend, level-0 shape, number of levels, side pictures)
EXPECT = {
    "generic_tiff": ("tifffile", (2967, 2220, 3), 3, []),
    "philips_tiff": ("openslide", (2967, 2220, 3), 3, []),
    "dicom": ("wsidicom", (2967, 2220, 3), 5, ["label", "thumbnail"]),
    "czi_rgb": ("pylibCZIrw", (2967, 2220, 3), 2, []),
    "czi_stack": ("pylibCZIrw", (3, 2967, 2220), 2, []),
}


def _rchar() -> int:
    """Bytes this process has read through read()/pread() so far (Linux)."""
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar")).split()[1])


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.iterdir()) if p.is_dir() else p.stat().st_size


@pytest.mark.parametrize("name", list(EXPECT))
def test_opens_lazily_with_pixel_size_and_levels(files, rgb, name):
    backend, shape, n_levels, side = EXPECT[name]
    path = files[name]
    with open_image(path) as src:
        assert src.backend == backend
        assert src.shape == shape
        assert len(src.level_shapes) == n_levels
        assert src.pixel_size_um == pytest.approx(PX, abs=1e-6)
        assert src.associated_names == side
        # each level halves the one above; sizes are rounded by the writers, and the smallest
        # level here is >= 139 px, so a size-derived factor is within 1/139 < 1 % of 2**i
        for i, ds in enumerate(src.downsamples):
            assert ds == pytest.approx(2 ** i, rel=0.01), (i, src.downsamples)
        y, x = TILE_YX
        z = 1 if "Z" in src.axes else None
        src.read_region(0, 0, 4, 4, z=z)  # first decode loads codecs and caches headers
        before = _rchar()
        tile = src.read_region(y, x, TILE, TILE, z=z)
        read = _rchar() - before
        # one tile is ~0.2-1 MB of a 10-30 MB file; reading all of it would be ~100 %
        if Path("/proc/self/io").exists():
            assert read < 0.1 * _size(path), (read, _size(path))
        want = rgb[y:y + TILE, x:x + TILE]
        if name == "czi_stack":
            want = (want[..., 1].astype(np.uint16) * 257) // 2
        np.testing.assert_array_equal(tile, want)
        # coarser levels hold the same picture (averaged by each writer its own way)
        lvl = len(src.level_shapes) - 1
        coarse = src.read_region(0, 0, *src.level_shapes[lvl][-3:-1] if "Z" not in src.axes
                                 else src.level_shapes[lvl][1:3], level=lvl, z=z)
        assert coarse.shape[:2] == tuple(src.level_shapes[lvl][-3:-1] if "Z" not in src.axes
                                         else src.level_shapes[lvl][1:3])
        assert abs(float(coarse.mean()) - float(src.read_plane(z=z, level=0).mean())) < 0.02 * float(
            np.iinfo(src.dtype).max)  # means agree within 2 % of full scale (edge rounding, averaging)


def test_czi_stack_axes_and_z_spacing(files):
    with open_image(files["czi_stack"]) as src:
        assert src.axes == "ZYX" and src.n_z == 3 and src.z_spacing_um == pytest.approx(1.5)
        planes = src.read_region(100, 100, 8, 8)  # every plane when z is None
        assert planes.shape == (3, 8, 8)
        assert planes[0].mean() > planes[1].mean() > planes[2].mean()


def test_dicom_opens_from_any_file_of_the_slide(files):
    folder = files["dicom"]
    for f in sorted(folder.glob("*.dcm")):
        with open_image(f) as src:
            assert src.shape == (2967, 2220, 3) and len(src.level_shapes) == 5


def test_dicom_label_is_the_slides_label(files):
    with open_image(SVS) as svs, open_image(files["dicom"]) as dcm:
        np.testing.assert_array_equal(dcm.associated_images()["label"], svs.associated_images()["label"])


def test_openslide_reads_what_tifffile_and_wsidicom_read(files, rgb):
    """The OpenSlide backend on the SVS, the generic TIFF and the DICOM slide gives the same pixels."""
    from napari_focusq.io.openslide import open_openslide

    for path in (SVS, files["generic_tiff"], next(files["dicom"].glob("*.dcm"))):
        with open_openslide(path) as src:
            assert src.backend == "openslide" and src.pixel_size_um == pytest.approx(PX)
            y, x = TILE_YX
            np.testing.assert_array_equal(src.read_region(y, x, TILE, TILE), rgb[y:y + TILE, x:x + TILE])
    with open_openslide(SVS) as src:
        assert src.associated_names == ["label", "macro", "thumbnail"]
        assert src.associated_images()["label"].shape == (463, 387, 3)


@pytest.mark.parametrize("name", ["icc_tiff", "dicom"])
def test_icc_profile_applied_for_display_not_for_scoring(files, rgb, name):
    from napari_focusq.napari import reader as _reader

    path = files[name]
    with open_image(path) as src:
        assert src.icc_profile == linear_rgb_icc()
        stored = src.read_region(0, 0, 64, 64)  # what scoring reads: the file's own values
    np.testing.assert_array_equal(stored, rgb[:64, :64])
    data, kwargs, _ = _reader.layer_tuple(path)
    assert kwargs["metadata"]["icc_applied"] is True
    shown = np.asarray((data[0] if kwargs["multiscale"] else data)[:64, :64])
    # linear light -> sRGB brightens every mid-tone: 128 becomes ~188 (checked on a grey patch)
    mid = (stored > 40) & (stored < 200)
    assert (shown[mid].astype(int) - stored[mid]).mean() > 20
    grey = np.full((1, 1, 3), 128, np.uint8)
    from napari_focusq.io.icc import to_srgb

    assert abs(int(to_srgb(grey, linear_rgb_icc())[0, 0, 0]) - 188) <= 1  # sRGB encode of 0.502
    _reader.close_path(path)


def test_sample_slide_without_profile_is_shown_as_stored():
    from napari_focusq.napari import reader as _reader

    data, kwargs, _ = _reader.layer_tuple(SVS)
    assert kwargs["metadata"]["icc_applied"] is False
    _reader.close_path(SVS)


def test_slideio_backend_reads_levels_labels_and_stacks(files, rgb):
    """VSI goes through slideio; no VSI file can be made here, so its code runs on formats slideio
    also reads: the SVS (pixels, pixel size, side pictures) and the CZI z-stack (planes, z spacing)."""
    pytest.importorskip("slideio")
    from napari_focusq.io.slideio import open_slideio

    with open_slideio(SVS, "SVS") as src, open_image(SVS) as ref:
        assert src.backend == "slideio" and src.shape == ref.shape and src.pixel_size_um == pytest.approx(PX)
        assert src.associated_names == ["label", "macro", "thumbnail"]
        np.testing.assert_array_equal(src.associated_images()["label"], ref.associated_images()["label"])
        y, x = TILE_YX
        np.testing.assert_array_equal(src.read_region(y, x, TILE, TILE), rgb[y:y + TILE, x:x + TILE])
    with open_slideio(files["czi_stack"], "CZI") as src, open_image(files["czi_stack"]) as ref:
        assert src.axes == "ZYX" and src.n_z == 3 and src.z_spacing_um == pytest.approx(1.5)
        np.testing.assert_array_equal(src.read_region(500, 400, 64, 64, z=2), ref.read_region(500, 400, 64, 64, z=2))


# ------------------------------------------------------------------------------ napari reader
@pytest.mark.parametrize("name", list(EXPECT))
def test_napari_reader_opens_each_format(files, name):
    from napari_focusq.napari import reader as _reader

    path = str(files[name])
    reader = _reader.get_reader(path)
    assert reader is not None
    layers = reader(path)
    data, kwargs, kind = layers[0]
    assert kind == "image"
    assert kwargs["metadata"]["pixel_size_um"] == pytest.approx(PX)
    assert kwargs["scale"][-1] == pytest.approx(PX) and kwargs["units"][-1] == "µm"
    levels = data if kwargs["multiscale"] else [data]
    assert len(levels) == EXPECT[name][2]
    assert tuple(levels[0].shape) == EXPECT[name][1]
    y, x = TILE_YX
    window = levels[0][y:y + 16, x:x + 16] if kwargs.get("rgb") else levels[0][1, y:y + 16, x:x + 16]
    assert np.asarray(window).shape[:2] == (16, 16)
    _reader.close_path(path)
    assert not [t for t, src in _reader.open_sources().items() if str(src.path) == path]


def test_npe2_reads_each_format_through_the_manifest(files):
    """napari's own lookup: this tree's manifest patterns must route each file to this plugin."""
    from npe2 import PluginManager, PluginManifest
    from npe2.io_utils import _read

    pm = PluginManager()
    pm.register(PluginManifest.from_file(REPO / "src" / "napari_focusq" / "napari.yaml"))
    pm.activate("napari-focusq")
    for name in ("generic_tiff", "philips_tiff", "czi_rgb", "czi_stack", "dicom"):
        path = files[name] if name != "dicom" else next(files["dicom"].glob("*.dcm"))
        layers = _read([str(path)], stack=False, plugin_name="napari-focusq", _pm=pm)
        assert layers[0][1]["metadata"]["pixel_size_um"] == pytest.approx(PX)
        from napari_focusq.napari import reader as _reader

        _reader.release(layers[0][1]["metadata"]["focusq_source"])
    layers = _read([str(files["dicom"])], stack=False, plugin_name="napari-focusq", _pm=pm)  # the folder
    assert layers[0][1]["metadata"]["backend"] == "wsidicom"


# ------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("name", ["generic_tiff", "philips_tiff", "dicom", "czi_rgb", "czi_stack"])
def test_cli_scores_each_format(files, tmp_path, name, capsys):
    import torch

    from napari_focusq.cli.app import main
    from napari_focusq.export.results import read_results
    from napari_focusq.models import new_model

    torch.manual_seed(0)
    model = new_model("fast").save(tmp_path / "untrained.safetensors")
    out = tmp_path / "out"
    assert main(["score", str(files[name]), "--out", str(out), "--model", str(model)]) == 0
    row = read_results(out / "results.tsv")[0]
    assert row["status"] == "ok"
    assert float(row["pixel_size_um"]) == pytest.approx(PX, abs=1e-3)


@pytest.mark.slow
def test_score_dicom_made_from_the_sample_slide_matches_the_svs(tmp_path, rgb, capsys):
    """Acceptance: `focusq score` on a DICOM WSI of the sample slide writes the SVS's readings (±0.05 µm)."""
    from napari_focusq.cli.app import main

    folder = make_dicom_wsi(rgb, tmp_path / "CMU-1-Small-Region-dicom", PX, pyramid=False)
    assert main(["score", str(SVS), "--out", str(tmp_path / "svs")]) == 0
    assert main(["score", str(folder), "--out", str(tmp_path / "dcm")]) == 0

    def readings(p: Path) -> dict:
        with open(p, newline="") as fh:
            return {(r["row"], r["col"]): r["defocus_um"] for r in csv.DictReader(fh)}

    a = readings(tmp_path / "svs" / "CMU-1-Small-Region.tiles.csv")
    b = readings(tmp_path / "dcm" / "CMU-1-Small-Region-dicom.tiles.csv")
    assert a.keys() == b.keys()
    assert {k for k, v in a.items() if v} == {k for k, v in b.items() if v}  # the same tiles scored
    scored = [k for k, v in a.items() if v]
    assert len(scored) >= 20
    diffs = [abs(float(a[k]) - float(b[k])) for k in scored]
    assert max(diffs) <= 0.05  # the acceptance tolerance; same pixels give 0.0 here


# ------------------------------------------------------------------------------ missing extras
@pytest.mark.parametrize("module, extra, suffix", [
    ("openslide", "openslide", ".mrxs"),
    ("pylibCZIrw", "czi", ".czi"),
    ("slideio", "slideio", ".vsi"),
])
def test_missing_extra_names_its_pip_install(files, tmp_path, monkeypatch, module, extra, suffix):
    for m in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    path = files["czi_rgb"] if suffix == ".czi" else tmp_path / f"slide{suffix}"
    if suffix in (".mrxs", ".vsi"):
        path.write_bytes(b"[GENERAL]\n" if suffix == ".mrxs" else b"\x49\x49\x2a\x00")
    with pytest.raises(ImageReadError) as info:
        open_image(path)
    assert f'pip install "napari-focusq[{extra}]"' in str(info.value)
    assert str(info.value).startswith(str(path))


def test_missing_dicom_reader_names_its_pip_install(files, monkeypatch):
    for module in ("wsidicom", "openslide"):
        for m in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            monkeypatch.delitem(sys.modules, m)
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImageReadError, match=r'pip install "napari-focusq\[dicom\]"'):
        open_image(files["dicom"])


def test_vsi_without_its_ets_folder_is_a_clear_error(tmp_path):
    """A .vsi is a TIFF holding only the overview; opened alone it must not pass for the scan."""
    pytest.importorskip("slideio")
    import tifffile

    path = tmp_path / "scan.vsi"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    with pytest.raises(ImageReadError) as info:
        open_image(path)
    assert str(info.value).startswith(str(path)) and ".ets" in str(info.value)


def test_time_lapse_czi_is_refused_and_not_claimed_by_the_reader(tmp_path):
    from pylibCZIrw import czi as pyczi

    from napari_focusq.napari.reader import get_reader

    path = tmp_path / "timelapse.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as w:
        for t in range(2):
            w.write(data=np.full((32, 48, 1), t, np.uint16), plane={"T": t, "Z": 0, "C": 0}, location=(0, 0))
    with pytest.raises(ImageReadError, match="T=2"):
        open_image(path)
    assert get_reader(str(path)) is None


def test_batch_inputs_take_a_dicom_folder_as_one_slide(files, tmp_path):
    """`focusq batch scans/` must score a DICOM slide once, not once per .dcm level file."""
    import shutil

    from napari_focusq.batch import expand_inputs

    scans = tmp_path / "scans"
    shutil.copytree(files["dicom"], scans / "case1_dicom")
    shutil.copy(files["czi_rgb"], scans / "case2.czi")
    shutil.copy(SVS, scans / "case3.svs")
    found, missing = expand_inputs([str(scans)])
    assert missing == []
    assert sorted(p.name for p in found) == ["case1_dicom", "case2.czi", "case3.svs"]
    found, _ = expand_inputs([str(scans / "case1_dicom")])  # the slide folder itself
    assert [p.name for p in found] == ["case1_dicom"]


def test_philips_tiff_without_openslide_falls_back_to_tifffile(files, rgb, monkeypatch):
    """Without the [openslide] extra a Philips TIFF still opens (padded levels, pixel size from its XML)."""
    for m in [m for m in sys.modules if m == "openslide" or m.startswith("openslide.")]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, "openslide", None)
    with open_image(files["philips_tiff"]) as src:
        assert src.backend == "tifffile"
        assert src.pixel_size_um == pytest.approx(PX) and src.pixel_size_source == "Philips DICOM_PIXEL_SPACING"
        assert src.shape == (3072, 2304, 3)  # stored sizes, padded to whole 256-px tiles
        y, x = TILE_YX
        np.testing.assert_array_equal(src.read_region(y, x, TILE, TILE), rgb[y:y + TILE, x:x + TILE])
