"""Regions of tiled TIFF levels decoded straight from the file equal tifffile's zarr path."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_focusq.errors import ImageReadError
from napari_focusq.io.formats import open_image


def _both(src, level, y0, x0, h, w):
    """The same region through the direct tile path and through the zarr store."""
    fast = src.read_region(y0, x0, h, w, level=level)
    keep, src._region_readers[level] = src._region_readers[level], None
    try:
        slow = src.read_region(y0, x0, h, w, level=level)
    finally:
        src._region_readers[level] = keep
    return fast, slow


def _regions(shape, n=25, seed=0):
    rng = np.random.default_rng(seed)
    H, W = shape[:2]
    yield 0, 0, H, W  # the whole level
    yield H - 5, W - 7, 40, 40  # over the far corner (clipped)
    yield -10, -10, 30, 30  # over the near corner
    for _ in range(n):
        yield int(rng.integers(-20, H)), int(rng.integers(-20, W)), int(rng.integers(1, 300)), int(rng.integers(1, 300))


@pytest.mark.parametrize("kind", ["jpeg-rgb-pyramid", "deflate-uint16-grey", "rgba-lzw"])
def test_direct_tiles_equal_the_zarr_path(tmp_path, slide_crop, kind):
    path = tmp_path / f"{kind}.ome.tif"
    rgb = slide_crop(1500, 500, 700, 900)  # not a multiple of the 128-px tiles either way
    if kind == "jpeg-rgb-pyramid":
        with tifffile.TiffWriter(path, ome=True) as tw:
            opts = dict(tile=(128, 128), compression="jpeg", photometric="rgb")
            tw.write(rgb, subifds=1, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}, **opts)
            tw.write(rgb[::2, ::2], subfiletype=1, **opts)
    elif kind == "deflate-uint16-grey":
        grey = (rgb[..., 1].astype(np.uint16) * 257)
        tifffile.imwrite(path, grey, tile=(128, 128), compression="zlib", predictor=True,
                         metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    else:
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], 2)
        tifffile.imwrite(path, rgba, tile=(128, 128), compression="lzw", photometric="rgb", extrasamples=[2],
                         metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    with open_image(path) as src:
        assert all(r is not None for r in src._region_readers), "every level here is one tiled page"
        for level, shape in enumerate(src.level_shapes):
            for region in _regions(shape):
                fast, slow = _both(src, level, *region)
                assert fast.shape == slow.shape and fast.dtype == slow.dtype, region
                np.testing.assert_array_equal(fast, slow, err_msg=str(region))
        if kind == "rgba-lzw":
            assert src.read_region(0, 0, 10, 10).shape == (10, 10, 3)  # alpha dropped on both paths


def test_stacks_and_strips_keep_the_zarr_path(tmp_path, slide_crop):
    rgb = slide_crop(1500, 500, 300, 300)
    striped = tmp_path / "striped.tif"
    tifffile.imwrite(striped, rgb, rowsperstrip=16, photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    stack = tmp_path / "stack.ome.tif"
    tifffile.imwrite(stack, np.stack([rgb[..., 1]] * 3), tile=(128, 128), metadata={"axes": "ZYX"})
    for path in (striped, stack):
        with open_image(path) as src:
            assert src._region_readers == [None] * len(src.level_shapes)
            assert src.read_region(10, 10, 50, 50, **({"z": 1} if src.n_z > 1 else {})).shape[:2] == (50, 50)


def test_missing_tiles_read_as_zeros_and_a_short_file_is_an_error(tmp_path, slide_crop):
    rgb = slide_crop(1500, 500, 256, 256)
    path = tmp_path / "sparse.tif"
    tifffile.imwrite(path, rgb, tile=(128, 128), photometric="rgb", compression="zlib")
    # The writer left tile 3 out (offset and byte count 0): tifffile reads it as zeros.
    with tifffile.TiffFile(path, mode="r+") as tf:
        tf.pages[0].tags["TileOffsets"].overwrite([*tf.pages[0].dataoffsets[:3], 0])
        tf.pages[0].tags["TileByteCounts"].overwrite([*tf.pages[0].databytecounts[:3], 0])
    with open_image(path) as src:
        fast, slow = _both(src, 0, 0, 0, 256, 256)
        np.testing.assert_array_equal(fast, slow)
        assert not fast[128:, 128:].any() and fast[:128, :128].any()
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, rgb, tile=(128, 128), photometric="rgb", compression="zlib")
    data = cut.read_bytes()
    with tifffile.TiffFile(cut) as tf:
        last = max(tf.pages[0].dataoffsets)
    cut.write_bytes(data[:last + 10])  # the last tile's bytes cut short; the IFD comes first
    try:
        src = open_image(cut)
    except ImageReadError:
        return  # refused when opened: as good
    with src, pytest.raises(ImageReadError, match="cut.tif"):
        src.read_region(128, 128, 128, 128)


def test_each_tile_is_decoded_once_across_threads_and_the_cache_stays_bounded(tmp_path, slide_crop):
    from concurrent.futures import ThreadPoolExecutor

    from napari_focusq.io.tiff_tiles import TileRegions

    rgb = slide_crop(1500, 500, 640, 640)
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, rgb, tile=(128, 128), photometric="rgb", compression="jpeg")
    # strips of 160 rows over 128-row tiles, read by two threads: neighbours share a tile row
    strips = [(y, min(y + 160, 640)) for y in range(0, 640, 160)]
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        whole = page.asarray()
        shared = TileRegions(tf.filehandle.fileno(), page)
        with ThreadPoolExecutor(2) as ex:
            parts = list(ex.map(lambda s: shared.region(s[0], s[1], 0, 640), strips))
        np.testing.assert_array_equal(np.concatenate(parts), whole)
        assert shared.decoded == 25  # 5 x 5 tiles, each once
        small = TileRegions(tf.filehandle.fileno(), page, cache_bytes=3 * 128 * 128 * 3)
        for y0, y1 in strips:
            np.testing.assert_array_equal(small.region(y0, y1, 0, 640), whole[y0:y1])
        assert small._cached <= 3 * 128 * 128 * 3 and small.decoded > 25  # evicted, decoded again


def test_without_positioned_reads_the_zarr_path_reads(tmp_path, slide_crop, monkeypatch):
    """Windows has no os.pread: levels keep tifffile's zarr store and read the same pixels."""
    import os

    path = tmp_path / "tiled.tif"
    rgb = slide_crop(1500, 500, 300, 300)
    tifffile.imwrite(path, rgb, tile=(128, 128), photometric="rgb", compression="zlib")
    monkeypatch.delattr(os, "pread")
    with open_image(path) as src:
        assert src._region_readers == [None]
        np.testing.assert_array_equal(src.read_region(0, 0, 300, 300), rgb)
