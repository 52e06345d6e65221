"""Batch throughput (1 vs 2 local workers) and worker peak memory on gigapixel slides.

    python benchmarks/bench_batch.py [--copies 8] [--model PATH] [--skip-10gpx] [--dense-1gpx]

Prints slides/s on 1 and 2 worker processes for N copies of a small crop of the bundled
sample slide, then the peak RSS of the worker process that scored a 1-gigapixel and a
10-gigapixel slide. Those slides are written lazily (``write_lazy_slide``): a tiled,
JPEG-compressed pyramidal BigTIFF whose tiles are JPEG-encoded once and then repeated
from an iterator, so neither writing nor reading ever holds the image. The 10 Gpx
slide (100,000 x 100,000 px) is mostly glass with tissue in a band, which the
thumbnail-based tissue detection skips; the 1 Gpx one has a wider band (or is all
tissue with --dense-1gpx).
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 512


def _sample_rgb() -> np.ndarray:
    from napari_focusq.io.formats import open_image, sample_slide_path

    with open_image(sample_slide_path()) as s:
        return np.asarray(s.read_plane())


def _encode_tiles(tiles: list[np.ndarray], quality: int = 80) -> list[bytes]:
    """Each (512, 512, 3) tile as the bytes tifffile itself stores for a JPEG tile."""
    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf, bigtiff=True) as tw:
        for t in tiles:
            tw.write(t, tile=(TILE, TILE), compression="jpeg", compressionargs={"level": quality}, photometric="rgb")
    buf.seek(0)
    out = []
    with tifffile.TiffFile(buf) as tf:
        for page in tf.pages:
            assert len(page.dataoffsets) == 1 and page.jpegtables is None
            buf.seek(page.dataoffsets[0])
            out.append(buf.read(page.databytecounts[0]))
    return out


def write_lazy_slide(path, size: int, *, pixel_size_um: float = 0.5, band: tuple[float, float] | None = (0.45, 0.55),
                     band_x: tuple[float, float] = (0.0, 1.0), quality: int = 80) -> Path:
    """Write a ``size`` x ``size`` RGB pyramidal BigTIFF without ever holding the image.

    Tiles inside the tissue band (fractions of the height ``band`` and width ``band_x``;
    ``band=None`` for tissue everywhere) repeat 512 px crops of the bundled sample slide;
    the rest is glass (near-white). Every distinct tile is JPEG-encoded once and its bytes
    are repeated, so a 10-gigapixel slide takes seconds and little disk.
    Levels halve down to <= 1024 px; the pixel size is in the resolution tags.
    """
    import tifffile

    rgb = _sample_rgb()
    # tissue crops: the 512 px windows of the sample with the least white
    cands = []
    for y in range(0, rgb.shape[0] - TILE + 1, TILE // 2):
        for x in range(0, rgb.shape[1] - TILE + 1, TILE // 2):
            t = rgb[y:y + TILE, x:x + TILE]
            cands.append(((t.mean(-1) > 215).mean(), y, x))
    cands.sort()
    tissue_arrays = [rgb[y:y + TILE, x:x + TILE] for _, y, x in cands[:6]]
    glass = np.full((TILE, TILE, 3), 238, np.uint8)  # flat glass: ~1 kB a JPEG tile
    encoded = _encode_tiles([glass, *tissue_arrays], quality)
    glass_b, tissue_b = encoded[0], encoded[1:]

    partial: dict = {}

    def edge_tile(k: int, y0: int, y1: int, x0: int, x1: int) -> bytes:
        # a tile the band edge crosses: tissue only in [y0:y1, x0:x1] (few distinct ones)
        key = (k, y0, y1, x0, x1)
        if key not in partial:
            t = glass.copy()
            t[y0:y1, x0:x1] = tissue_arrays[k][y0:y1, x0:x1]
            partial[key] = _encode_tiles([t], quality)[0]
        return partial[key]

    def level_tiles(h: int, w: int):
        ny, nx = math.ceil(h / TILE), math.ceil(w / TILE)
        by0, by1 = (0, h) if band is None else (round(band[0] * h), round(band[1] * h))
        bx0, bx1 = (0, w) if band is None else (round(band_x[0] * w), round(band_x[1] * w))
        for i in range(ny):
            ty0, ty1 = max(by0 - i * TILE, 0), min(by1 - i * TILE, TILE)
            for j in range(nx):
                tx0, tx1 = max(bx0 - j * TILE, 0), min(bx1 - j * TILE, TILE)
                k = (i * 7 + j * 3) % len(tissue_b)
                if ty1 <= ty0 or tx1 <= tx0:
                    yield glass_b
                elif (ty0, ty1, tx0, tx1) == (0, TILE, 0, TILE):
                    yield tissue_b[k]
                else:
                    yield edge_tile(k, ty0, ty1, tx0, tx1)

    shapes = [(size, size)]
    while max(shapes[-1]) > 1024:
        shapes.append(tuple(math.ceil(s / 2) for s in shapes[-1]))
    path = Path(path)
    res = 1e4 / pixel_size_um
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k, (h, w) in enumerate(shapes):
            tw.write(level_tiles(h, w), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE),
                     compression="jpeg", photometric="rgb",
                     resolution=(res / 2 ** k, res / 2 ** k), resolutionunit="CENTIMETER",
                     subifds=len(shapes) - 1 if k == 0 else None, subfiletype=1 if k else 0)
    return path


def _crop_slides(folder: Path, n: int, side: int = 1280) -> list[Path]:
    import tifffile

    rgb = _sample_rgb()
    y, x = max(0, min(1000, rgb.shape[0] - side)), max(0, min(600, rgb.shape[1] - side))
    crop = rgb[y:y + side, x:x + side]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"copy{i:03d}.tif"
        tifffile.imwrite(p, crop, photometric="rgb", tile=(256, 256), compression="jpeg",
                         resolution=(1e4 / 0.499, 1e4 / 0.499), resolutionunit="CENTIMETER")
        paths.append(p)
    return paths


def _peak_of_run(slide: Path, out: Path, model) -> tuple[float, float, int]:
    """Score one slide on a fresh 1-worker cluster; (seconds, worker peak RSS MB, tiles)."""
    from napari_focusq.batch import iter_batch
    from napari_focusq.progress import drive

    peaks = []

    def grab(ev):
        if ev.data.get("peak_rss_mb"):
            peaks.append(ev.data["peak_rss_mb"])
            row = ev.data["row"]
            if row["status"] != "ok":
                raise SystemExit(f"{slide}: {row['error']}")

    t = time.perf_counter()
    drive(iter_batch([str(slide)], out, model=model, workers=1), grab)
    import csv

    from napari_focusq.export.results import read_results

    stem = read_results(out / "results.tsv")[0]["stem"]
    with open(out / f"{stem}.tiles.csv", newline="") as fh:
        tiles = sum(1 for r in csv.DictReader(fh) if r["defocus_um"])  # scored, not the whole grid
    return time.perf_counter() - t, max(peaks), tiles


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--side", type=int, default=2048, help="edge of each copied slide, px (<= 2220)")
    ap.add_argument("--model", default=None, help="checkpoint (default: shipped model, else an untrained fast one)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--skip-10gpx", action="store_true")
    ap.add_argument("--dense-1gpx", action="store_true", help="1 Gpx slide all tissue (slow: ~10k tiles)")
    a = ap.parse_args(argv)
    from napari_focusq.batch import run_batch
    from napari_focusq.models import available_models, new_model

    work = Path(a.workdir or tempfile.mkdtemp(prefix="focusq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = a.model
    if model is None:
        model = "default" if "fast" in available_models() else str(new_model("fast").save(work / "untrained.safetensors"))
    print(f"model: {model}\nworkdir: {work}\ncores: {os.cpu_count()}")

    slides = _crop_slides(work / "copies", a.copies, a.side)
    rates = {}
    for n in (1, 2):
        import logging

        from distributed import Client, LocalCluster

        # steady-state throughput: the cluster is started and warmed up (imports, model
        # load) first, as a long batch amortises both
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            address = client.scheduler.address
            run_batch([str(p) for p in slides[:n]], work / f"warm_w{n}", model=model, scheduler=address)
            t = time.perf_counter()
            s = run_batch([str(p) for p in slides], work / f"out_w{n}", model=model, scheduler=address)
            dt = time.perf_counter() - t
        assert s.n_ok == len(slides), s
        rates[n] = len(slides) / dt
        print(f"{n} worker(s): {len(slides)} slides ({slides[0].stat().st_size / 1e6:.1f} MB, {a.side} px each) "
              f"in {dt:.1f} s = {rates[n]:.2f} slides/s", flush=True)
    print(f"speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x (target >= 1.6x)", flush=True)

    sizes = [("1 Gpx", 31623, None if a.dense_1gpx else (0.3, 0.7), (0.0, 1.0))]
    if not a.skip_10gpx:
        sizes.append(("10 Gpx", 100_000, (0.49, 0.51), (0.0, 1.0)))
    for label, side, band, band_x in sizes:
        p = work / f"lazy_{side}.tif"
        t = time.perf_counter()
        write_lazy_slide(p, side, band=band, band_x=band_x)
        wt = time.perf_counter() - t
        secs, peak, tiles = _peak_of_run(p, work / f"out_{side}", model)
        what = "all tissue" if band is None else f"tissue in rows {band[0]:.0%}-{band[1]:.0%}, rest glass"
        print(f"{label} ({side} x {side} px, {what}; file {p.stat().st_size / 1e6:.0f} MB written in {wt:.1f} s): "
              f"{tiles} tiles scored in {secs:.1f} s, worker peak RSS {peak:.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
