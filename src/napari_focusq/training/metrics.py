"""Accuracy figures used by training, `focusq evaluate` and the benchmarks."""
from __future__ import annotations

import numpy as np


def auc(scores_pos, scores_neg) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    p = np.asarray(scores_pos, float)
    n = np.asarray(scores_neg, float)
    if not len(p) or not len(n):
        return float("nan")
    allv = np.concatenate([p, n])
    from scipy.stats import rankdata

    ranks = rankdata(allv)
    return float((ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(n)))


def regression_metrics(pred, true) -> dict:
    """R², fit pred = intercept + slope·true, MAE over 0-4 µm, Spearman, AUC(z<=0.5 vs z>=1)."""

    pred = np.asarray(pred, float)
    true = np.asarray(true, float)
    ss_res = float(((pred - true) ** 2).sum())
    ss_tot = float(((true - true.mean()) ** 2).sum())
    slope, intercept = np.polyfit(true, pred, 1)
    in_range = true <= 4.0
    return {
        "n": int(len(true)),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "slope": float(slope),
        "intercept": float(intercept),
        "mae_0_4": float(np.abs(pred - true)[in_range].mean()) if in_range.any() else float("nan"),
        "within_1um": float((np.abs(pred - true) <= 1.0)[in_range].mean()) if in_range.any() else float("nan"),
        **ranking_metrics(pred, true),
    }


def ranking_metrics(score, true) -> dict:
    """For measures without units: Spearman with |z| and AUC separating z<=0.5 from z>=1 µm.

    ``score`` must grow with defocus (negate sharpness measures first).
    """
    from scipy.stats import spearmanr

    score = np.asarray(score, float)
    true = np.asarray(true, float)
    return {
        "spearman": float(spearmanr(score, true).statistic),
        "auc": auc(score[true >= 1.0], score[true <= 0.5]),
    }


def seed_intervals(pred, true, seed, metrics=regression_metrics, *, n_boot: int = 1000, level: float = 0.95,
                   rng: int = 0) -> dict:
    """Each figure of ``metrics`` as its mean over seeds of tiles, with a bootstrap interval.

    ``seed`` labels each tile with the draw it came from (a seed of the tile sampler: other
    crops, depths and degradations of the same images). The interval is the percentile
    bootstrap of the seed mean: tiles resampled with replacement within each seed, the
    figure computed per seed and averaged. It covers the sampling of tiles, not of images:
    a benchmark over three images says nothing about the spread over slides.

    Returns ``{name: {"mean", "lo", "hi", "seeds": [per-seed value]}}`` for every numeric
    figure but ``n``.
    """
    pred, true, seed = np.asarray(pred, float), np.asarray(true, float), np.asarray(seed)
    groups = [np.flatnonzero(seed == s) for s in np.unique(seed)]
    per_seed = [metrics(pred[g], true[g]) for g in groups]
    keys = [k for k, v in per_seed[0].items() if k != "n" and isinstance(v, (int, float))]
    gen = np.random.default_rng(rng)
    boot = {k: np.empty(n_boot) for k in keys}
    for b in range(n_boot):
        draws = [metrics(pred[i], true[i]) for i in (gen.choice(g, len(g)) for g in groups)]
        for k in keys:
            boot[k][b] = np.mean([d[k] for d in draws])
    a = (1 - level) / 2 * 100
    out = {}
    for k in keys:
        vals = [float(d[k]) for d in per_seed]
        lo, hi = np.nanpercentile(boot[k], [a, 100 - a])
        out[k] = {"mean": float(np.mean(vals)), "lo": float(lo), "hi": float(hi), "seeds": vals}
    return out


def format_interval(fig: dict, fmt: str = ".3f") -> str:
    """``mean [lo, hi]`` of one :func:`seed_intervals` figure."""
    return f"{fig['mean']:{fmt}} [{fig['lo']:{fmt}}, {fig['hi']:{fmt}}]"
