"""Speed: tiles/s of each model on 320x320 tiles in memory, and whole-slide scoring
time against the pure decode time of the same file.

The whole-slide file is a JPEG-tiled pyramidal OME-TIFF the benchmark writes from
the bundled sample slide (mirrored into a larger mosaic), so it exercises the real
reader, tissue skipping, strip decoding ahead of inference and the model.

    .venv/bin/python benchmarks/bench_speed.py [--mosaic 4] [--model PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_focusq.io.formats import open_image, sample_slide_path
from napari_focusq.models import load_model, new_model
from napari_focusq.scoring.focus import variance_of_laplacian_batch
from napari_focusq.scoring.pipeline import score_slide


def real_tiles(n: int) -> np.ndarray:
    with open_image(sample_slide_path()) as src:
        img = src.read_plane()
    rng = np.random.default_rng(0)
    H, W = img.shape[:2]
    return np.stack([img[y:y + 320, x:x + 320] for y, x in
                     zip(rng.integers(0, H - 320, n), rng.integers(0, W - 320, n))])


def tiles_per_s(fn, tiles, batch, min_seconds=3.0):
    fn(tiles[:batch])  # warm-up (allocations, FFT plans)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        for i in range(0, len(tiles), batch):
            fn(tiles[i:i + batch])
            done += len(tiles[i:i + batch])
    return done / (time.perf_counter() - t0)


def write_mosaic(path: Path, k: int) -> tuple[int, int]:
    """A k x k mirrored mosaic of the sample slide as a JPEG-tiled OME-TIFF pyramid."""
    import tifffile

    with open_image(sample_slide_path()) as src:
        img = src.read_plane()
        px = src.pixel_size_um
    row = np.concatenate([img if j % 2 == 0 else img[:, ::-1] for j in range(k)], 1)
    big = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(k)], 0)
    levels = [big]
    while max(levels[-1].shape[:2]) > 2048:
        levels.append(levels[-1][::2, ::2])
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        opts = dict(tile=(256, 256), compression="jpeg", compressionargs={"level": 85}, photometric="rgb")
        tw.write(big, subifds=len(levels) - 1, metadata={"PhysicalSizeX": px, "PhysicalSizeY": px,
                                                         "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}, **opts)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, **opts)
    return big.shape[:2]


def decode_seconds(path: Path) -> float:
    """Read every pixel of the level the pipeline uses, in tile-row strips, one thread."""
    t0 = time.perf_counter()
    with open_image(path) as src:
        lvl = src.level_for(0.5)
        H, W = src.level_shapes[lvl][:2]
        for y in range(0, H, 320):
            src.read_region(y, 0, 320, W, level=lvl)
    return time.perf_counter() - t0


def model_load_seconds() -> dict:
    """A fresh interpreter's first ``load_model("default")``, split into importing torch and
    the load itself, and a second call (the per-process cache)."""
    import subprocess

    code = ("import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
            "from napari_focusq.models import load_model; t2 = time.perf_counter(); load_model('default'); "
            "t3 = time.perf_counter(); load_model('default'); t4 = time.perf_counter(); "
            "print(t1 - t0, t3 - t2, t4 - t3)")
    runs = [[float(v) for v in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout.split()] for _ in range(3)]
    best = [min(r[i] for r in runs) for i in range(3)]
    return {"import_torch_s": best[0], "load_s": best[1], "cached_s": best[2]}


def in_memory(model, repeats: int = 3) -> dict:
    """score_image end to end on a 6400 x 6400 RGB mosaic at 0.5 µm/px, against the model
    alone (predict_with_spread, batch 64, as the pipeline calls it) on the same tiles,
    alternating, fastest of each."""
    from napari_focusq.scoring.pipeline import score_image

    with open_image(sample_slide_path()) as src:
        img = src.read_plane()
    row = np.concatenate([img, img[:, ::-1]] * 2, 1)
    big = np.ascontiguousarray(np.concatenate([row, row[::-1]] * 2, 0)[:6400, :6400])
    fm = load_model(model if model is not None else "default")
    score_image(big[:1280, :1280], pixel_size_um=0.5, model=fm)  # warm-up
    e2e, alone, n = [], [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fmap = score_image(big, pixel_size_um=0.5, model=fm)
        e2e.append(time.perf_counter() - t0)
        n = int(fmap.scored.sum())
        H, W = fmap.shape
        tiles = np.stack([big[r * 320:(r + 1) * 320, c * 320:(c + 1) * 320] for r, c in zip(*np.nonzero(fmap.scored))])
        t0 = time.perf_counter()
        for i in range(0, len(tiles), 64):
            fm.predict_with_spread(tiles[i:i + 64])
        alone.append(time.perf_counter() - t0)
    return {"tiles": n, "end_to_end_s": min(e2e), "end_to_end_tiles_per_s": n / min(e2e),
            "model_only_tiles_per_s": n / min(alone)}


def model_alone_ms(fm, tiles, repeats: int = 5) -> float:
    """The model's CPU a tile on one torch thread, batches of the pipeline's size, nothing beside it."""
    from napari_focusq.models import torch_threads
    from napari_focusq.scoring.pipeline import BATCH_TILES

    best = float("inf")
    with torch_threads(to=1):
        fm.predict_with_spread(tiles[:BATCH_TILES])
        for _ in range(repeats):
            t0 = time.thread_time()
            for i in range(0, len(tiles), BATCH_TILES):
                fm.predict_with_spread(tiles[i:i + BATCH_TILES])
            best = min(best, time.thread_time() - t0)
    return 1e3 * best / len(tiles)


def resample_ms(repeats: int = 7) -> dict:
    """Best-of time of resample_to_working on a 1000² RGB region (was a timed test; ~15 ms
    on an idle laptop core)."""
    from napari_focusq.scoring.resample import resample_to_working

    img = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    out = {}
    for px in (0.25, 0.227):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            resample_to_working(img, px)
            times.append(time.perf_counter() - t)
        out[px] = 1000 * min(times)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mosaic", type=int, default=4, help="k x k copies of the sample slide (default 4)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--model", default="fast", help="the fast model to time: a shipped name or a checkpoint path")
    a = ap.parse_args(argv)
    res = {"model_load": model_load_seconds()}
    ml = res["model_load"]
    print(f"model loading, fresh process: import torch {ml['import_torch_s']:.2f} s, then load_model('default') "
          f"{ml['load_s']:.3f} s; again {1e3 * ml['cached_s']:.2f} ms (cached)")
    tiles = real_tiles(512)
    fast = load_model(a.model)
    res["fast"] = {b: tiles_per_s(fast.predict, tiles, b) for b in (64, 256)}
    inc = new_model("inception")  # speed does not depend on the weights
    res["inception"] = {8: tiles_per_s(inc.predict_raw, tiles[:16], 8, min_seconds=5.0)}
    res["variance of Laplacian"] = {256: tiles_per_s(variance_of_laplacian_batch, tiles, 256)}
    print("in-memory scoring, 320x320 RGB tiles, this machine's CPU:")
    for k, v in res.items():
        if k == "model_load":
            continue
        print(f"  {k:<24}" + "  ".join(f"batch {b}: {t:8.1f} tiles/s" for b, t in v.items()))
    m = res["in_memory"] = in_memory(None if a.model == "fast" else a.model)
    print(f"score_image end to end, 6400x6400 RGB at 0.5 µm/px ({m['tiles']} tissue tiles): "
          f"{m['end_to_end_tiles_per_s']:.0f} tiles/s ({m['end_to_end_s']:.2f} s); the model alone on the "
          f"same tiles {m['model_only_tiles_per_s']:.0f} tiles/s")
    res["resample_ms"] = resample_ms()
    print("resampling a 1000x1000 RGB region to 0.5 µm/px (best of 7): " +
          ", ".join(f"from {px} µm/px {ms:.1f} ms" for px, ms in res["resample_ms"].items()))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mosaic.ome.tif"
        shape = write_mosaic(path, a.mosaic)
        # Alternating, fastest of three each: the machine's load drifts.
        decs, runs = [], []
        for _ in range(3):
            decs.append(decode_seconds(path))
            t0, c0 = time.perf_counter(), time.process_time()
            fmap = score_slide(path, model=None if a.model == "fast" else a.model)
            runs.append((time.perf_counter() - t0, time.process_time() - c0, fmap.extra["cpu_s"]))
        dec, (sc, proc, cpu) = min(decs), min(runs, key=lambda r: r[0])
        n = int(np.isfinite(fmap.defocus_um).sum())
    alone = model_alone_ms(fast, tiles[:64])
    res["whole_slide"] = {"shape": shape, "megapixels": shape[0] * shape[1] / 1e6, "decode_s": dec,
                          "score_s": sc, "ratio": sc / dec, "tiles_scored": n, "tiles_total": fmap.defocus_um.size,
                          "process_cpu_s": proc, "workers_cpu_s": cpu, "model_alone_ms_per_tile": alone}
    w = res["whole_slide"]
    print(f"whole slide {shape[1]}x{shape[0]} px ({w['megapixels']:.0f} Mpx, JPEG tiles, "
          f"{n}/{w['tiles_total']} tiles with tissue): decode {dec:.2f} s, score_slide {sc:.2f} s "
          f"-> {w['ratio']:.2f}x decode time")
    # Where the time goes: scoring is CPU-bound, so the CPU its threads spent over the cores
    # is a floor under its wall time; the model's CPU a tile beside the decoders against alone.
    cores = len(os.sched_getaffinity(0))
    floor = (cpu["read"] + cpu["model"]) / cores
    print(f"  its CPU (fastest run): process {proc:.2f} s for {sc:.2f} s wall; decode workers (read, cut, "
          f"measures) {cpu['read']:.2f} s, model {cpu['model']:.2f} s = {1e3 * cpu['model'] / max(n, 1):.2f} ms a "
          f"tile (alone, one thread: {alone:.2f} ms); on {cores} cores these two alone take >= {floor:.2f} s "
          f"= {floor / dec:.2f}x decode")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
