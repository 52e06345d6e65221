"""Accuracy on tissue the model never saw, side by side with the baselines.

Tiles come from the default recipe's test images (held out of training AND of
validation/calibration), defocused 0-6 µm with the optical model and degraded as
scans are (stain variation, noise, JPEG 70-95). Prints one table: the shipped
`fast` model, the `inception` preset (when it has weights) and variance of the
Laplacian (ranking metrics only: it has no units). Then robustness: the same
tiles at JPEG quality 30 vs 95 and stained lighter vs darker.

    .venv/bin/python benchmarks/bench_accuracy.py [--per-image 300]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_focusq.certainty import certainty_report, format_certainty_report, model_certainty, noise_ratio
from napari_focusq.focus import variance_of_laplacian_batch
from napari_focusq.metrics import ranking_metrics, regression_metrics
from napari_focusq.models import available_models, load_model
from napari_focusq.optics import simulate_defocus
from napari_focusq.training import DEFAULT_TEST, TrainConfig, _jpeg, iter_dataset, load_training_image, project_data_dir
from napari_focusq.progress import drive


def held_out_tiles(per_image: int, seed: int = 2026):
    folder = project_data_dir() / "brightfield"
    cfg = TrainConfig(images=[str(folder / n) for n in DEFAULT_TEST], z_max_um=6.0, jpeg=(70, 95))
    # Uniform 0-6 µm (the training sampler's extra weight near focus is not wanted here).
    X, Z, S = drive(iter_dataset(cfg.images, per_image, cfg, seed, "test data"))
    return X, Z, S, cfg


def robustness(model, per_image: int = 40, seed: int = 7) -> dict:
    """Same tissue and defocus, different JPEG quality / stain strength: prediction spread."""
    rng = np.random.default_rng(seed)
    folder = project_data_dir() / "brightfield"
    d_jpeg, d_stain = [], []
    for name in DEFAULT_TEST:
        img = load_training_image(folder / name, "brightfield")
        H, W = img.shape[:2]
        for _ in range(per_image):
            y, x = rng.integers(0, max(1, H - 320)), rng.integers(0, max(1, W - 320))
            t = img[y:y + 320, x:x + 320]
            if t.shape[:2] != (320, 320) or t.mean() > 225:
                continue
            z = rng.uniform(0, 4)
            b = simulate_defocus(t, z, pixel_size_um=0.5)
            od = -np.log(np.clip(b.astype(np.float32), 1, 255) / 255)
            light = np.clip(255 * np.exp(-0.7 * od), 0, 255).astype(np.uint8)
            dark = np.clip(255 * np.exp(-1.3 * od), 0, 255).astype(np.uint8)
            p = model.predict(np.stack([_jpeg(b, 30), _jpeg(b, 95), light, dark]))
            d_jpeg.append(abs(p[0] - p[1]))
            d_stain.append(abs(p[2] - p[3]))
    f = lambda d: {"mean": float(np.mean(d)), "p95": float(np.percentile(d, 95)), "n": len(d)}
    return {"jpeg30_vs_95": f(d_jpeg), "stain_light_vs_dark": f(d_stain)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-image", type=int, default=300)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    X, Z, S, cfg = held_out_tiles(a.per_image)
    print(f"accuracy: {len(Z)} tiles from held-out images {', '.join(DEFAULT_TEST)}, |z| uniform 0-6 µm")
    rows = {}
    models = ["fast"] + (["inception"] if "inception" in available_models() else [])
    for name in models:
        m = load_model(name)
        t = time.perf_counter()
        pred = np.concatenate([m.predict(X[i:i + 128]) for i in range(0, len(X), 128)])
        rows[m.label] = {**regression_metrics(pred, Z), "tiles_per_s": len(X) / (time.perf_counter() - t)}
    t = time.perf_counter()
    vol = variance_of_laplacian_batch(X)
    rows["variance of Laplacian"] = {**ranking_metrics(-np.log(vol + 1e-9), Z), "tiles_per_s": len(X) / (time.perf_counter() - t)}
    if "inception" not in available_models():
        rows["inception (paper preset)"] = {"note": "no trained weights here (500 epochs x 33k tiles is GPU work)"}
    hdr = f"{'model':<26}{'R²':>8}{'slope':>8}{'icpt µm':>9}{'MAE0-4':>8}{'±1µm':>7}{'Spearman':>10}{'AUC':>8}{'tiles/s':>9}"
    print(hdr)
    fmt = lambda v, f: (f"{v:{f}}" if isinstance(v, (int, float)) else "-")
    for k, r in rows.items():
        if "note" in r:
            print(f"{k:<26}  {r['note']}")
            continue
        print(f"{k:<26}{fmt(r.get('r2'), '8.4f'):>8}{fmt(r.get('slope'), '8.3f'):>8}{fmt(r.get('intercept'), '9.3f'):>9}"
              f"{fmt(r.get('mae_0_4'), '8.3f'):>8}{fmt(r.get('within_1um'), '7.3f'):>7}{fmt(r.get('spearman'), '10.4f'):>10}"
              f"{fmt(r.get('auc'), '8.4f'):>8}{fmt(r.get('tiles_per_s'), '9.0f'):>9}")
    fast = load_model("fast")
    fast_pred, spread = fast.predict_with_spread(X)
    calib = model_certainty(fast)
    rep = certainty_report(fast_pred, Z, spread, noise_ratio(X, "brightfield"), calib, S)
    for k, path in enumerate(cfg.images):
        sel = S == k
        r = regression_metrics(fast_pred[sel], Z[sel])
        print(f"  fast on {Path(path).name:<38} R² {r['r2']:.4f}  slope {r['slope']:.3f}  "
              f"icpt {r['intercept']:+.3f}  MAE0-4 {r['mae_0_4']:.3f}  AUC {r['auc']:.4f}")
    print("founding paper (InceptionV3, its own test set): R² 0.9904, slope 1.157, intercept 0.59 µm, ±1 µm")
    print(format_certainty_report(rep, calib))
    rob = robustness(fast)
    print(f"robustness (fast): |Δ| JPEG 30 vs 95: mean {rob['jpeg30_vs_95']['mean']:.3f} µm, "
          f"p95 {rob['jpeg30_vs_95']['p95']:.3f} µm; stain lighter vs darker: mean "
          f"{rob['stain_light_vs_dark']['mean']:.3f} µm, p95 {rob['stain_light_vs_dark']['p95']:.3f} µm "
          f"({rob['jpeg30_vs_95']['n']} tiles)")
    if a.json:
        a.json.write_text(json.dumps({"accuracy": rows, "robustness": rob, "certainty": rep}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
