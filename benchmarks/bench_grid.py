"""Does a finer working grid (0.25 µm/px) separate 0-1 µm of defocus better than
area-averaging a fine scan to the model's 0.5 µm/px? (issue 18, `--grid fine`)

Fine scans (<= 0.3 µm/px) are resampled to 0.25 µm/px, defocused there with the
brightfield optics (20x/0.75 equivalent, RGB), JPEG-compressed as a scanner would (Q 80),
then read two ways by the shipped `fast` model:
  coarse: area-averaged to 0.5 µm/px, 320 px tiles (160 µm) - today's pipeline;
  fine:   320 px tiles of the 0.25 µm/px image (80 µm), the model told nothing;
          per area, the median of the four fine tiles inside each coarse tile.
Prints, per image and pooled, the AUC of z = 0 against z = 0.5 / 1 µm and the Spearman
correlation of the reading with z over 0-1 µm, and the time per 160 µm of tissue.

    .venv/bin/python benchmarks/bench_grid.py [--tiles 40]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from napari_focusq.models import load_model
from napari_focusq.optics.psf import simulate_defocus
from napari_focusq.scoring.resample import resample_to_working
from napari_focusq.training.augment import _jpeg
from napari_focusq.training.recipes import project_data_dir

#: Fine scans: the held-out Hamamatsu Ki67 scan, and OS-1 (trained on, at 0.5 µm/px only).
IMAGES = (("openslide_OS-2_Ki67_hamamatsu.ome.tif", 0.227, "held out"),
          ("openslide_OS-1_HE_hamamatsu.ome.tif", 0.227, "trained on at 0.5 µm/px"))
ZS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _auc(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(((b[:, None] > a[None, :]).mean() + 0.5 * (b[:, None] == a[None, :]).mean()))


def _spearman(x, y):
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).correlation)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiles", type=int, default=40, help="coarse (160 µm) tiles per image")
    args = ap.parse_args(argv)
    import tifffile

    model = load_model("fast")
    rng = np.random.default_rng(2026)
    pooled = {"coarse": [], "fine": [], "fine_area": []}
    cost = {"coarse": 0.0, "fine": 0.0}
    for name, px, note in IMAGES:
        img = tifffile.imread(project_data_dir() / "brightfield" / name)
        fine = resample_to_working(img, px, 0.25)
        H, W = fine.shape[:2]
        rows = {"coarse": [], "fine": [], "fine_area": []}
        n = 0
        while n < args.tiles:
            y, x = rng.integers(0, H - 640 - 64), rng.integers(0, W - 640 - 64)
            crop = fine[y:y + 704, x:x + 704]
            if crop[..., 1].mean() > 215:  # mostly glass
                continue
            n += 1
            for z in ZS:
                b = simulate_defocus(crop, z, pixel_size_um=0.25)[32:672, 32:672]
                b = _jpeg(np.ascontiguousarray(b), 80)
                t0 = time.perf_counter()
                c = resample_to_working(b, 0.25, 0.5)
                pc = float(model.predict(c[None])[0])
                t1 = time.perf_counter()
                quads = np.stack([b[i:i + 320, j:j + 320] for i in (0, 320) for j in (0, 320)])
                pf = model.predict(quads)
                t2 = time.perf_counter()
                cost["coarse"] += t1 - t0
                cost["fine"] += t2 - t1
                rows["coarse"].append((z, pc))
                rows["fine"].extend((z, float(p)) for p in pf)
                rows["fine_area"].append((z, float(np.median(pf))))
        print(f"\n{name} ({px} µm/px, {note}), {args.tiles} areas of 160 µm")
        _table(rows)
        for k in pooled:
            pooled[k].extend(rows[k])
    print("\npooled")
    _table(pooled)
    print(f"\nmodel time per 160 µm area (noisy, shared 2-core machine): coarse "
          f"{1e3 * cost['coarse'] / len(pooled['coarse']):.1f} ms (incl. resampling), fine "
          f"{1e3 * cost['fine'] / len(pooled['coarse']):.1f} ms (4 tiles)")


def _table(rows):
    print(f"{'read':<12}{'median reading at z = ' + ', '.join(f'{z:g}' for z in ZS):<52}"
          f"{'AUC 0v0.5':>10}{'AUC 0v1':>9}{'Spearman 0-1':>14}")
    for k, v in rows.items():
        v = np.asarray(v)
        med = [np.median(v[v[:, 0] == z, 1]) for z in ZS]
        a05 = _auc(v[v[:, 0] == 0, 1], v[v[:, 0] == 0.5, 1])
        a1 = _auc(v[v[:, 0] == 0, 1], v[v[:, 0] == 1.0, 1])
        sp = _spearman(v[:, 0], v[:, 1])
        print(f"{k:<12}{'  '.join(f'{m:5.2f}' for m in med):<52}{a05:>10.3f}{a1:>9.3f}{sp:>14.3f}")


if __name__ == "__main__":
    main()
