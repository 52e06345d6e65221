"""Large test slides for the speed benchmarks, written from the bundled sample slide.

A mirrored mosaic of the sample (CMU-1-Small-Region, 2220 x 2967 px) as a JPEG-tiled
pyramidal OME-TIFF. Level 0 is streamed to the file tile by tile, so a 400 Mpx slide never
sits in memory whole; each coarser level is the mosaic of the sample's own downsampled copy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_focusq.io.formats import open_image, sample_slide_path

TILE = 256


def _mosaic(img: np.ndarray, ky: int, kx: int) -> np.ndarray:
    row = np.concatenate([img if j % 2 == 0 else img[:, ::-1] for j in range(kx)], 1)
    return np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(ky)], 0)


def _tiles(img: np.ndarray, ky: int, kx: int):
    """Level-0 tiles of the mosaic, row by row, without building the mosaic."""
    h, w = img.shape[:2]
    H, W = h * ky, w * kx
    ys = np.arange(H)
    ys = np.where((ys // h) % 2 == 0, ys % h, h - 1 - ys % h)
    xs = np.arange(W)
    xs = np.where((xs // w) % 2 == 0, xs % w, w - 1 - xs % w)
    for y in range(0, H, TILE):
        band = img[ys[y:y + TILE]]
        for x in range(0, W, TILE):
            t = band[:, xs[x:x + TILE]]
            if t.shape[:2] != (TILE, TILE):
                t = np.pad(t, ((0, TILE - t.shape[0]), (0, TILE - t.shape[1]), (0, 0)))
            yield t


def write_pyramid(path: Path, ky: int, kx: int, pixel_size_um: float | None = None, quality: int = 85):
    """Write a ky x kx mirrored mosaic of the sample slide; returns (level-0 shape, pixel size µm).

    ``pixel_size_um`` overrides the sample's 0.499 µm (0.25 makes it a "40x" scan).
    """
    import tifffile

    with open_image(sample_slide_path()) as src:
        img = src.read_plane()
        px = float(pixel_size_um or src.pixel_size_um)
    H, W = img.shape[0] * ky, img.shape[1] * kx
    levels = []
    f = 2
    while max(H, W) // f > 1024:
        levels.append(_mosaic(img[::f, ::f], ky, kx))
        f *= 2
    opts = dict(tile=(TILE, TILE), compression="jpeg", compressionargs={"level": quality}, photometric="rgb")
    meta = {"PhysicalSizeX": px, "PhysicalSizeY": px, "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(_tiles(img, ky, kx), shape=(H, W, 3), dtype=np.uint8, subifds=len(levels), metadata=meta, **opts)
        for lv in levels:
            tw.write(lv, subfiletype=1, **opts)
    return (H, W), px
