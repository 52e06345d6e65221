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
    from scipy.stats import spearmanr

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
