"""Reading slides, pyramids and z-stacks lazily, their pixel sizes, and bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focusq.errors import ImageReadError
from napari_focusq.io.formats import open_image, sample_slide_path
from napari_focusq.io.source import finite_fraction

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"


# -- real files -------------------------------------------------------------------------
def test_bundled_svs_geometry_pixel_size_and_lazy_region():
    assert sample_slide_path().samefile(SVS)
    with open_image(SVS) as src:
        assert src.shape == (2967, 2220, 3) and src.axes == "YXC"
        assert src.dtype == np.uint8 and src.is_rgb and src.n_z == 1
        assert src.pixel_size_um == pytest.approx(0.499)
        assert src.pixel_size_source == "Aperio MPP"
        assert not isinstance(src.levels[0], np.ndarray)  # lazy, not loaded
        full = src.read_plane()
        assert full.shape == src.shape
        win = src.read_region(1000, 700, 320, 320)
        np.testing.assert_array_equal(win, full[1000:1320, 700:1020])
        # windows past the edge are clipped to the image
        edge = src.read_region(2900, -50, 320, 320)
        np.testing.assert_array_equal(edge, full[2900:, :270])
        thumb = src.thumbnail(512)
        assert max(thumb.shape[:2]) <= 512 and thumb.shape[2] == 3 and thumb.dtype == np.uint8
        assert abs(float(thumb.mean()) - float(full.mean())) < 2.0


@pytest.mark.parametrize("name", ["openslide_OS-1_HE_hamamatsu.ome.tif", "openslide_OS-2_Ki67_hamamatsu.ome.tif"])
def test_hamamatsu_ome_pixel_size(name):
    with open_image(DATA / "brightfield" / name) as src:
        assert src.pixel_size_um == pytest.approx(0.227, abs=5e-4)
        assert src.pixel_size_source == "OME"
        assert src.axes == "YXC" and src.is_rgb
        np.testing.assert_array_equal(src.read_region(100, 200, 64, 48),
                                      tifffile.imread(src.path)[100:164, 200:248])


def test_zstack_planes_and_regions(made_stack):
    path, ref = made_stack.path, made_stack.data
    n = made_stack.planes
    with open_image(path) as src:
        assert src.shape == (n, 256, 256) and src.axes == "ZYX" and src.n_z == n
        assert src.dtype == np.uint16
        np.testing.assert_array_equal(src.read_region(10, 20, 30, 40, z=34), ref[34, 10:40, 20:60])
        np.testing.assert_array_equal(src.read_region(10, 20, 30, 40), ref[:, 10:40, 20:60])
        np.testing.assert_array_equal(src.read_plane(z=-1), ref[-1])
        with pytest.raises(ValueError, match=f"z={n}"):
            src.read_region(0, 0, 8, 8, z=n)


def test_ndev_four_channel_ome_channels_last():
    path = DATA / "fluorescence" / "ndev_neuron-4Ch.ome.tiff"
    with open_image(path) as src:
        assert src.axes == "YXC" and src.shape == (623, 502, 4)
        assert src.pixel_size_um == pytest.approx(0.124, abs=5e-4) and src.pixel_size_source == "OME"
        assert not src.is_rgb and src.z_spacing_um is None  # PhysicalSizeZ of a 2-D image means nothing
        ref = np.moveaxis(tifffile.imread(path), 0, -1)
        np.testing.assert_array_equal(src.read_plane(), ref)
        np.testing.assert_array_equal(np.asarray(src.levels[0][5:9, 7:10]), ref[5:9, 7:10])


# -- files the tests write --------------------------------------------------------------
def _write_ome_pyramid(path: Path, base: np.ndarray, px_um: float, n_levels: int = 3) -> list[np.ndarray]:
    levels = [base]
    for _ in range(n_levels - 1):
        b = levels[-1]
        levels.append(b.reshape(b.shape[0] // 2, 2, b.shape[1] // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8))
    opts = dict(tile=(128, 128), compression="zlib", photometric="rgb")
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(levels[0], subifds=n_levels - 1, metadata={"axes": "YXS", "PhysicalSizeX": px_um,
                                                            "PhysicalSizeY": px_um}, **opts)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, **opts)
    return levels


def test_ome_subifd_pyramid_levels_and_level_for(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1024, 768, 3), dtype=np.uint8)
    path = tmp_path / "pyr.ome.tif"
    levels = _write_ome_pyramid(path, base, px_um=0.25)
    with open_image(path) as src:
        assert src.level_shapes == [(1024, 768, 3), (512, 384, 3), (256, 192, 3)]
        assert src.downsamples == pytest.approx([1.0, 2.0, 4.0])
        assert src.pixel_size_um == pytest.approx(0.25) and src.pixel_size_source == "OME"
        assert src.level_for(0.5) == 1
        assert src.level_for(0.25) == 0 and src.level_for(0.1) == 0
        assert src.level_for(0.99) == 1 and src.level_for(1.0) == 2 and src.level_for(50) == 2
        np.testing.assert_array_equal(src.read_region(100, 50, 200, 100, level=1), levels[1][100:300, 50:150])
        np.testing.assert_array_equal(src.read_plane(level=2), levels[2])
        thumb = src.thumbnail(300)  # level 1 (512 px) is the smallest >= 300 px, halved
        assert thumb.shape == (256, 192, 3)
        assert np.abs(thumb.astype(int) - levels[2].astype(int)).max() <= 1
        with pytest.raises(ValueError, match="level 3"):
            src.read_region(0, 0, 4, 4, level=3)
    with open_image(path, pixel_size_um=0.5) as src:
        assert src.pixel_size_source == "user" and src.level_for(1.0) == 1


def test_ome_zstack_zcyx_comes_back_zyxc(tmp_path):
    data = np.random.default_rng(1).integers(0, 4000, (5, 2, 64, 48), dtype=np.uint16)
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZCYX", "PhysicalSizeX": 300,
                                                      "PhysicalSizeXUnit": "nm", "PhysicalSizeZ": 1.5})
    ref = np.moveaxis(data, 1, -1)
    with open_image(path) as src:
        assert src.axes == "ZYXC" and src.shape == (5, 64, 48, 2) and src.n_z == 5
        assert src.pixel_size_um == pytest.approx(0.3) and src.z_spacing_um == pytest.approx(1.5)
        np.testing.assert_array_equal(src.read_region(3, 4, 10, 20, z=2), ref[2, 3:13, 4:24])
        np.testing.assert_array_equal(src.read_region(3, 4, 10, 20), ref[:, 3:13, 4:24])
        assert src.levels[0].shape == ref.shape
        np.testing.assert_array_equal(np.asarray(src.levels[0][1:3, 5:9]), ref[1:3, 5:9])
        assert src.thumbnail().shape == (64, 48, 2)  # middle plane


@pytest.mark.parametrize(
    "kw, expect",
    [
        (dict(resolution=(1e4 / 0.4, 1e4 / 0.4), resolutionunit="CENTIMETER"), 0.4),
        (dict(resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH"), 0.5),
        (dict(resolution=(72, 72), resolutionunit="INCH"), None),  # editor default
        (dict(resolution=(1, 100), resolutionunit="CENTIMETER"), None),  # 100 cm pixels: nonsense
        (dict(resolution=(4, 4), resolutionunit="NONE"), None),  # dimensionless
        (dict(), None),
    ],
)
def test_tiff_resolution_tags(tmp_path, kw, expect):
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), **kw)
    with open_image(path) as src:
        if expect is None:
            assert src.pixel_size_um is None and src.pixel_size_source == "unknown"
        else:
            assert src.pixel_size_um == pytest.approx(expect) and src.pixel_size_source == "TIFF resolution"


def test_imagej_stack_spacing_and_unit(tmp_path):
    path = tmp_path / "ij.tif"
    data = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    tifffile.imwrite(path, data, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "spacing": 2.0, "unit": "micron"})
    with open_image(path) as src:
        assert src.axes == "ZYX" and src.dtype == np.float32
        assert src.pixel_size_um == pytest.approx(0.25) and src.z_spacing_um == pytest.approx(2.0)


def test_float_with_nan_opens_and_rgba_tiff_drops_alpha(tmp_path):
    f = np.ones((8, 8), np.float32)
    f[0, :4] = np.nan
    f[1, 0] = np.inf
    tifffile.imwrite(tmp_path / "nan.tif", f)
    with open_image(tmp_path / "nan.tif") as src:
        assert finite_fraction(src.read_plane()) == pytest.approx(59 / 64)
    rgba = np.random.default_rng(2).integers(0, 255, (10, 12, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    with open_image(tmp_path / "rgba.tif") as src:
        assert src.shape == (10, 12, 3) and src.is_rgb
        np.testing.assert_array_equal(src.read_plane(), rgba[..., :3])
        np.testing.assert_array_equal(np.asarray(src.levels[0]), rgba[..., :3])


def test_png_jpeg_and_one_pixel_images(tmp_path):
    rgba = np.random.default_rng(3).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with open_image(tmp_path / "a.png") as src:
        assert src.axes == "YXC" and src.shape == (20, 30, 3) and src.is_rgb
        np.testing.assert_array_equal(src.read_region(2, 3, 5, 6), rgba[2:7, 3:9, :3])
        assert src.pixel_size_um is None
    g16 = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 50
    Image.fromarray(g16).save(tmp_path / "g16.png")
    with open_image(tmp_path / "g16.png") as src:
        assert src.axes == "YX" and src.dtype == np.uint16
        np.testing.assert_array_equal(src.read_plane(), g16)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "c.jpg", quality=95)
    with open_image(tmp_path / "c.jpg", pixel_size_um=0.8) as src:
        assert src.shape == (20, 30, 3) and src.pixel_size_um == 0.8 and src.pixel_size_source == "user"
    tifffile.imwrite(tmp_path / "one.tif", np.array([[7]], np.uint8))
    Image.fromarray(np.array([[9]], np.uint8)).save(tmp_path / "one.png")
    for name, v in [("one.tif", 7), ("one.png", 9)]:
        with open_image(tmp_path / name) as src:
            assert src.shape == (1, 1) and src.read_region(0, 0, 320, 320).tolist() == [[v]]
            assert src.thumbnail().shape == (1, 1)


def test_svs_with_jpeg2000_tiles_pyramid_and_side_images(tmp_path):
    """An Aperio layout: baseline, thumbnail, reduced levels, label, macro; JPEG 2000 tiles."""
    rng = np.random.default_rng(6)
    base = np.empty((1024, 768, 3), np.uint8)
    base[:] = rng.integers(0, 255, 3, dtype=np.uint8)
    base[100:400, 200:500] = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    head = "Aperio Image Library v12.0.15 \r\n768x1024 [0,0 768x1024] (256x256) J2K/KDU Q=70"
    tiled = dict(tile=(256, 256), compression=33005, photometric="rgb", metadata=None)  # Aperio JP2000 RGB
    plain = dict(photometric="rgb", metadata=None)
    path = tmp_path / "j2k.svs"
    with tifffile.TiffWriter(path) as tw:
        tw.write(base, description=head + "|AppMag = 20|MPP = 0.2520", **tiled)
        tw.write(base[::8, ::8].copy(), compression="jpeg", description=head + " -> 96x128", **plain)
        tw.write(base[::4, ::4].copy(), description=head + " -> 192x256", **tiled)
        tw.write(base[::16, ::16].copy(), description=head + " -> 48x64", **tiled)
        tw.write(base[:50, :60].copy(), subfiletype=1, description="Aperio\r\nlabel 60x50", **plain)
        tw.write(base[:40, :90].copy(), subfiletype=9, description="Aperio\r\nmacro 90x40", **plain)
    with open_image(path) as src:
        assert src.level_shapes == [(1024, 768, 3), (256, 192, 3), (64, 48, 3)]
        assert src.downsamples == pytest.approx([1.0, 4.0, 16.0])
        assert src.pixel_size_um == pytest.approx(0.252) and src.pixel_size_source == "Aperio MPP"
        assert src.level_for(1.0) == 0 and src.level_for(1.01) == 1  # 4 x 0.252 = 1.008 µm
        np.testing.assert_array_equal(src.read_region(90, 190, 320, 320), base[90:410, 190:510])
        np.testing.assert_array_equal(src.read_plane(level=2), base[::16, ::16])


def test_singleton_and_channel_first_axes_are_reordered():
    from napari_focusq.io.source import ImageSource

    raw = np.arange(2 * 1 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 1, 3, 4, 5)  # C, T=1, Z, Y, X
    src = ImageSource(Path("mem.tif"), [raw], "C-ZYX", "ZYXC")
    ref = np.moveaxis(raw[:, 0], 0, -1)
    assert src.shape == (3, 4, 5, 2) and src.n_z == 3 and not src.is_rgb
    np.testing.assert_array_equal(src.read_region(1, 2, 2, 2, z=1), ref[1, 1:3, 2:4])
    np.testing.assert_array_equal(src.read_region(1, 2, 2, 2), ref[:, 1:3, 2:4])
    np.testing.assert_array_equal(np.asarray(src.levels[0]), ref)


# -- one tile of a file far larger than memory --------------------------------------------
def test_region_of_huge_tiled_bigtiff_reads_only_its_tiles(tmp_path):
    H = W = 30000  # 2.7 GB decoded
    T = 1024
    # pre-encoded constant tiles: the writer needs neither the image nor time to compress it
    enc = {v: zlib.compress(np.full((T, T, 3), v, np.uint8).tobytes(), 1) for v in range(0, 256, 16)}

    def value(ty: int, tx: int) -> int:
        return ((ty * 7 + tx * 13) % 16) * 16

    tiles = (enc[value(ty, tx)] for ty in range(-(-H // T)) for tx in range(-(-W // T)))
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, tiles, shape=(H, W, 3), dtype=np.uint8, tile=(T, T), compression="zlib",
                     bigtiff=True, photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    assert path.stat().st_size < 50e6
    y0, x0 = 20 * T - 100, 7 * T - 200  # straddles four tiles
    expect = np.empty((320, 320), np.uint8)
    for y in range(320):
        for x in range(320):
            expect[y, x] = value((y0 + y) // T, (x0 + x) // T)
    # Peak resident memory, not an address-space cap: RLIMIT_AS counts every thread's stack
    # and malloc arena, so whether a cap fits depended on how many threads the libraries
    # started. The resident peak is what reading the whole 2.7 GB image would raise.
    script = textwrap.dedent(f"""
        import resource, sys
        import numpy as np
        from napari_focusq.io.budget import MemoryBudgetError
        from napari_focusq.io.formats import open_image
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux: kB)
        base = peak()
        with open_image({str(path)!r}) as src:
            assert src.shape == ({H}, {W}, 3), src.shape
            assert abs(src.pixel_size_um - 0.5) < 1e-9, src.pixel_size_um
            r = src.read_region({y0}, {x0}, 320, 320)
            np.save(sys.argv[1], r)
            try:  # the whole image is refused by the memory budget before anything is decoded
                src.read_plane()
            except MemoryBudgetError:
                print("full read refused")
        print(f"peak growth {{peak() - base:.0f}} MB")
    """)
    out = tmp_path / "region.npy"
    env = dict(os.environ, MALLOC_ARENA_MAX="2", PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Four 3 MB tiles decoded (and the file's tile index): 200 MB leaves room for allocator
    # slack and lazy imports; a read that decoded the image would need 2.7 GB.
    growth = float(proc.stdout.split("peak growth ")[1].split()[0])
    assert growth < 200, proc.stdout
    assert "full read refused" in proc.stdout  # the memory budget, before a byte is decoded
    region = np.load(out)
    assert region.shape == (320, 320, 3)
    np.testing.assert_array_equal(region, np.repeat(expect[..., None], 3, axis=2))


# -- bad input ---------------------------------------------------------------------------
def _expect_error(path: Path, reason: str) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        open_image(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    assert reason in msg, msg
    assert isinstance(info.value, ValueError)
    return info.value


def test_missing_directory_empty_and_unsupported(tmp_path):
    _expect_error(tmp_path / "nope.svs", "not found")
    _expect_error(tmp_path, "directory")
    (tmp_path / "empty.tif").write_bytes(b"")
    _expect_error(tmp_path / "empty.tif", "empty")
    (tmp_path / "slide.lif").write_bytes(b"\x70\x00\x00\x00" + bytes(100))  # Leica LIF: not read
    _expect_error(tmp_path / "slide.lif", "unsupported format '.lif'")
    (tmp_path / "slide.czi").write_bytes(b"ZISRAWFILE" + bytes(100))  # a CZI header cut short
    _expect_error(tmp_path / "slide.czi", "not a readable CZI")
    (tmp_path / "notes.tif").write_text("hello, not an image")
    _expect_error(tmp_path / "notes.tif", "not a valid TIFF")


@pytest.mark.parametrize("kind", ["tiled", "imagej", "pages"])
@pytest.mark.parametrize("keep", [0.01, 0.5, 0.98])
def test_truncated_tiff(tmp_path, kind, keep):
    path = tmp_path / "cut.tif"
    rng = np.random.default_rng(4)
    if kind == "tiled":
        tifffile.imwrite(path, rng.integers(0, 255, (512, 512), dtype=np.uint8), tile=(128, 128),
                         compression="zlib")
    else:  # a stack whose later pages are lost, which must not open as a shorter stack
        tifffile.imwrite(path, rng.integers(0, 255, (20, 64, 64), dtype=np.uint16),
                         imagej=kind == "imagej", metadata={} if kind == "imagej" else None)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    _expect_error(path, "truncated")


def test_corrupt_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    _expect_error(path, "cannot decode")


def test_five_d_without_usable_axes(tmp_path):
    path = tmp_path / "tzcyx.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 2, 2, 8, 8), np.uint8), ome=True, metadata={"axes": "TZCYX"})
    err = _expect_error(path, "T=3")
    assert "time point" in str(err)
    path = tmp_path / "shaped5d.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 2, 8, 8), np.uint8))
    _expect_error(path, "cannot use (Q=2, Q=3, Q=2;")


def test_bad_pixel_size_argument():
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="pixel_size_um"):
            open_image(SVS, pixel_size_um=bad)
