"""Tiles drawn over several seeds, and tables of figures with their bootstrap intervals.

A benchmark figure from one draw of tiles moves by ~0.001-0.005 in R² from seed to seed,
as much as most recipe differences; so every accuracy table is printed as the mean over
>= 3 seeds of tiles with a 95 % bootstrap interval (napari_focusq.training.metrics.seed_intervals).
"""
from __future__ import annotations

import numpy as np

from napari_focusq.progress import drive
from napari_focusq.training.data import iter_dataset
from napari_focusq.training.metrics import (
    format_interval,
    ranking_metrics,
    regression_metrics,
    seed_intervals,
)

SEEDS = (2026, 2027, 2028)


def seeded_tiles(images, per_image: int, cfg, seeds=SEEDS):
    """Defocused tiles of ``images`` for each seed: (tiles, |z|, source index, seed index)."""
    xs, zs, ss, ks = [], [], [], []
    for k, seed in enumerate(seeds):
        X, Z, S = drive(iter_dataset(list(images), per_image, cfg, seed, f"test data, seed {seed}"))
        xs.append(X)
        zs.append(Z)
        ss.append(S)
        ks.append(np.full(len(Z), k))
    return np.concatenate(xs), np.concatenate(zs), np.concatenate(ss), np.concatenate(ks)


def predict(model, X, batch: int = 128):
    return np.concatenate([model.predict(X[i:i + batch]) for i in range(0, len(X), batch)])


COLUMNS = (("r2", "R²", ".4f"), ("slope", "slope", ".3f"), ("intercept", "icpt µm", "+.3f"),
           ("mae_0_4", "MAE 0-4 µm", ".3f"), ("spearman", "Spearman", ".4f"), ("auc", "AUC", ".4f"))


def interval_rows(pred, Z, K, *, ranking_only: bool = False, n_boot: int = 300) -> dict:
    return seed_intervals(pred, Z, K, ranking_metrics if ranking_only else regression_metrics, n_boot=n_boot)


def print_table(title: str, rows: dict, note: str = "") -> None:
    """One row per model/subset, each figure as ``mean [95 % interval]`` over the seeds."""
    print(f"\n== {title} ==")
    if note:
        print(note)
    for name, figs in rows.items():
        cells = [f"{label} {format_interval(figs[key], fmt)}" for key, label, fmt in COLUMNS if key in figs]
        print(f"{name:<34} " + "  ".join(cells))
