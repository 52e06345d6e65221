"""The user's optics: does mapping the shipped model's readings by matched blur give the
user's µm? (issue 18, `--na/--immersion/--wavelength`)

Held-out in-focus tiles (the default recipe's test images, brightfield; the fluorescence
recipe's test images) are defocused through other objectives (NA 0.3 / 0.45 / 0.95 dry,
1.4 oil; 0.75 dry is the model's own, as a check) at z uniform in 0-6 µm, JPEG 80
(brightfield) or Poisson noise (fluorescence), and read by the shipped model. Printed per
objective: the unmapped reading and the mapped one (user_optics.optics_map) against the
truth: MAE over 0-4 and 0-6 µm, slope / intercept of reading on truth, Spearman, the median
reading at z < 0.5 µm, and the AUC of z < 1 µm against z > 3 µm.

    .venv/bin/python benchmarks/bench_optics.py [--per-image 60] [--modality brightfield|fluorescence|both]
"""
from __future__ import annotations

import argparse

import numpy as np

from napari_focusq.config import Optics
from napari_focusq.models import load_model
from napari_focusq.optics.psf import simulate_defocus
from napari_focusq.optics.user import optics_map, resolve_optics
from napari_focusq.training.augment import _jpeg
from napari_focusq.training.data import load_training_image
from napari_focusq.training.recipes import DEFAULT_TEST, FLUORESCENCE_TEST, project_data_dir

OBJECTIVES = (("NA 0.3 dry", 0.3, "air"), ("NA 0.45 dry", 0.45, "air"), ("NA 0.75 dry (model's)", 0.75, "air"),
              ("NA 0.95 dry", 0.95, "air"), ("NA 1.4 oil", 1.4, "oil"))


def _tiles(modality, per_image, rng):
    folder = project_data_dir() / modality
    names = DEFAULT_TEST if modality == "brightfield" else FLUORESCENCE_TEST
    out = []
    for name in names:
        if not (folder / name).exists():
            print(f"  ({name} not in data/: skipped)")
            continue
        img = load_training_image(folder / name, modality)
        if min(img.shape[:2]) < 400:  # small held-out images mirrored up to a tile, as training does
            py, px_ = max(0, 400 - img.shape[0]), max(0, 400 - img.shape[1])
            img = np.pad(img, [(0, py), (0, px_)] + [(0, 0)] * (img.ndim - 2), mode="symmetric")
        H, W = img.shape[:2]
        n = tries = 0
        while n < per_image and tries < 50 * per_image:
            tries += 1
            y, x = rng.integers(0, max(1, H - 320 - 64) + 1), rng.integers(0, max(1, W - 320 - 64) + 1)
            t = img[y:y + 384, x:x + 384]
            if t.shape[:2] != (384, 384):
                continue
            if modality == "brightfield" and t[..., 1].mean() > 215:
                continue
            if modality == "fluorescence" and np.percentile(t, 99) <= 2 * np.percentile(t, 10) + 1e-6:
                continue
            out.append(t)
            n += 1
    return out


def _stats(pred, z):
    from scipy.stats import spearmanr

    pred, z = np.asarray(pred), np.asarray(z)
    m4, m6 = z <= 4, z <= 6
    slope, icpt = np.polyfit(z, pred, 1)
    near = float(np.median(pred[z < 0.5])) if (z < 0.5).any() else float("nan")
    a, b = pred[z < 1], pred[z > 3]
    auc = (float(((b[:, None] > a[None, :]).mean() + 0.5 * (b[:, None] == a[None, :]).mean()))
           if a.size and b.size else float("nan"))
    return (float(np.mean(np.abs(pred[m4] - z[m4]))), float(np.mean(np.abs(pred[m6] - z[m6]))), slope, icpt,
            float(spearmanr(z, pred).correlation), near, auc)


def run(modality, per_image, seed=2026, save=None):
    rng = np.random.default_rng(seed)
    model = load_model("default", modality=modality)
    tiles = _tiles(modality, per_image, rng)
    print(f"\n{modality}: {len(tiles)} held-out tiles, z uniform 0-6 µm, shipped model {model.label}")
    print(f"{'objective':<24}{'reading':<9}{'MAE0-4':>8}{'MAE0-6':>8}{'slope':>7}{'icpt':>7}{'Spearman':>9}"
          f"{'z<0.5 med':>10}{'AUC<1v>3':>9}{'blind µm':>9}")
    base = Optics.for_modality(modality)
    for label, na, imm in OBJECTIVES:
        user, _ = resolve_optics(modality, na=na, immersion=imm)
        m = optics_map(base, user)
        zs = rng.uniform(0, 6, len(tiles))
        batch = []
        for t, z in zip(tiles, zs):
            b = simulate_defocus(t, z, pixel_size_um=0.5, modality=modality, optics=user)[32:352, 32:352]
            if modality == "brightfield":
                b = _jpeg(np.ascontiguousarray(b), 80)
            else:
                top = max(float(np.percentile(t, 99.9)), 1e-6)
                b = rng.poisson(np.clip(b, 0, None) / top * rng.uniform(300, 3000)).astype(np.float32)
            batch.append(b)
        raw = model.predict(np.stack(batch))
        mapped = m.to_user(raw)
        if save is not None:
            save[f"{modality}/{label}/z"], save[f"{modality}/{label}/raw"] = zs, raw
        for name, p in (("raw", raw), ("mapped", mapped)):
            s = _stats(p, zs)
            print(f"{label if name == 'raw' else '':<24}{name:<9}{s[0]:>8.3f}{s[1]:>8.3f}{s[2]:>7.3f}{s[3]:>7.2f}"
                  f"{s[4]:>9.3f}{s[5]:>10.2f}{s[6]:>9.3f}" + (f"{m.blind_um:>9.2f}" if name == "mapped" else ""))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-image", type=int, default=60)
    ap.add_argument("--modality", default="both", choices=("brightfield", "fluorescence", "both"))
    ap.add_argument("--save", metavar="NPZ", help="also save z and the raw readings per objective")
    args = ap.parse_args(argv)
    saved = {}
    for mod in (("brightfield", "fluorescence") if args.modality == "both" else (args.modality,)):
        run(mod, args.per_image, save=saved)
    if args.save:
        np.savez(args.save, **saved)


if __name__ == "__main__":
    main()
