"""Accuracy on the development test set, side by side with the baselines.

Tiles come from the default recipe's test images (held out of training AND of
validation/calibration), defocused 0-6 µm with the optical model and degraded as
scans are (stain variation, noise, JPEG 70-95), drawn for three seeds; every figure
is the mean over the seeds with a 95 % bootstrap interval over tiles. These images
steered recipe rounds 2-6 (DESIGN-NOTES), so the figures are a *development* set's,
not a clean held-out estimate: that is benchmarks/bench_frozen.py, run once per round.
The checkpoint's own validation figures are printed too, marked in-sample (its best
epoch and calibration were chosen on them).

Prints one table: the shipped `fast` model, the `inception` preset (when it has
weights) and variance of the Laplacian (ranking metrics only: it has no units). Then
robustness (one seed): the same tiles at JPEG quality 30 vs 95 and stained lighter vs darker.

    .venv/bin/python benchmarks/bench_accuracy.py [--per-image 100] [--model OTHER.safetensors ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_focusq.models import available_models, load_model
from napari_focusq.optics.psf import simulate_defocus
from napari_focusq.scoring.certainty import (
    certainty_report,
    format_certainty_report,
    model_certainty,
    noise_ratio,
)
from napari_focusq.scoring.focus import variance_of_laplacian_batch
from napari_focusq.training.augment import _jpeg
from napari_focusq.training.config import TrainConfig
from napari_focusq.training.data import load_training_image
from napari_focusq.training.recipes import DEFAULT_TEST, project_data_dir

sys.path.insert(0, str(Path(__file__).parent))
from _seeds import SEEDS, interval_rows, predict, print_table, seeded_tiles  # noqa: E402


def held_out_tiles(per_image: int, seeds=SEEDS):
    """Development test tiles over ``seeds``: (tiles, |z|, source index, seed index, config)."""
    folder = project_data_dir() / "brightfield"
    cfg = TrainConfig(images=[str(folder / n) for n in DEFAULT_TEST], z_max_um=6.0, jpeg=(70, 95))
    # Uniform 0-6 µm (the training sampler's extra weight near focus is not wanted here).
    X, Z, S, K = seeded_tiles(cfg.images, per_image, cfg, seeds)
    return X, Z, S, K, cfg


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
    ap.add_argument("--per-image", type=int, default=100,
                    help="tiles per image and seed (3 seeds x 100 = the 300 per image one seed used to give)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--model", action="append", default=[], metavar="PATH",
                    help="also score these checkpoints in the table (e.g. the previous weights; repeatable)")
    a = ap.parse_args(argv)
    X, Z, S, K, cfg = held_out_tiles(a.per_image)
    print(f"accuracy: {len(Z)} tiles ({len(Z) // len(SEEDS)} per seed, seeds {', '.join(map(str, SEEDS))}) from the "
          f"development test images {', '.join(DEFAULT_TEST)}, |z| uniform 0-6 µm")
    rows, speed = {}, {}
    models = ["fast"] + (["inception"] if "inception" in available_models() else []) + list(a.model)
    for name in models:
        m = load_model(name)
        label = Path(name).stem if name in a.model else m.label
        t = time.perf_counter()
        pred = predict(m, X)
        speed[label] = len(X) / (time.perf_counter() - t)
        rows[label] = interval_rows(pred, Z, K)
    t = time.perf_counter()
    vol = variance_of_laplacian_batch(X)
    speed["variance of Laplacian"] = len(X) / (time.perf_counter() - t)
    rows["variance of Laplacian"] = interval_rows(-np.log(vol + 1e-9), Z, K, ranking_only=True)
    note = ("development test set (recipe rounds 2-6 were steered by it: not a clean held-out figure); "
            "mean over seeds [95 % bootstrap interval]")
    if "inception" not in available_models():
        note += "\ninception (paper preset): no trained weights here (500 epochs x 33k tiles is GPU work)"
    print_table("development test set", rows, note)
    print("tiles/s: " + ", ".join(f"{k} {v:.0f}" for k, v in speed.items()) + " (one run; timings here are noisy)")
    fast = load_model("fast")
    fast_pred, spread = fast.predict_with_spread(X)
    per_image = {Path(p).name: interval_rows(fast_pred[S == k], Z[S == k], K[S == k])
                 for k, p in enumerate(cfg.images)}
    print_table("fast, per development test image", per_image)
    val = fast.meta.get("metrics", {})
    for key in ("validation_raw", "validation_calibrated"):
        if key in val:
            r = val[key]
            print(f"IN-SAMPLE {key} ({', '.join(fast.meta.get('training', {}).get('val_images', []))}; best epoch "
                  f"and calibration chosen on these tiles): R² {r['r2']:.4f}, MAE0-4 {r['mae_0_4']:.3f} µm")
    print("founding paper (InceptionV3, its own test set): R² 0.9904, slope 1.157, intercept 0.59 µm, ±1 µm")
    calib = model_certainty(fast)
    rep = certainty_report(fast_pred, Z, spread, noise_ratio(X, "brightfield"), calib, S)
    print(format_certainty_report(rep, calib) + "  (tiles of all seeds pooled)")
    rob = robustness(fast)
    print(f"robustness (fast, one seed): |Δ| JPEG 30 vs 95: mean {rob['jpeg30_vs_95']['mean']:.3f} µm, "
          f"p95 {rob['jpeg30_vs_95']['p95']:.3f} µm; stain lighter vs darker: mean "
          f"{rob['stain_light_vs_dark']['mean']:.3f} µm, p95 {rob['stain_light_vs_dark']['p95']:.3f} µm "
          f"({rob['jpeg30_vs_95']['n']} tiles)")
    if a.json:
        a.json.write_text(json.dumps({"set": "development", "seeds": list(SEEDS), "accuracy": rows,
                                      "per_image": per_image, "tiles_per_s": speed, "robustness": rob,
                                      "certainty": rep}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
