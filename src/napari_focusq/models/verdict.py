"""A trained model's validation figures in plain words, and whether it is fit to use.

Used by the training widget after training (a model that fails is saved, listed, but not
put into use) and by anyone reading a checkpoint's metadata.
"""
from __future__ import annotations

import math

#: Validation R² below this: the model explains less than half the variation of the true
#: defocus; its errors are then about 70 % (sqrt(0.5)) of the spread of defocus itself,
#: too coarse to tell a sharp tile from a 2 µm one reliably.
MIN_R2 = 0.5
#: Mean error over 0-4 µm above this: larger than the steps (1 µm) users threshold on.
MAX_MAE_UM = 1.0


def validation_verdict(meta: dict) -> tuple[bool, str]:
    """(usable, one or two plain sentences) from a checkpoint's metadata.

    Reads ``meta["metrics"]["validation_calibrated"]`` (written by training): R² and the
    mean absolute error over 0-4 µm on the held-out images.
    """
    m = ((meta or {}).get("metrics") or {}).get("validation_calibrated") or {}
    r2, mae = m.get("r2"), m.get("mae_0_4")
    r2 = float(r2) if r2 is not None else math.nan
    mae = float(mae) if mae is not None else math.nan
    if not math.isfinite(r2):
        return False, ("The model has no validation result (too few held-out tiles?), so there is no evidence "
                       "it measures defocus; it is not put into use.")
    err = f"about ±{mae:.2f} µm" if math.isfinite(mae) else "an unknown error"
    if r2 >= MIN_R2 and (not math.isfinite(mae) or mae <= MAX_MAE_UM):
        quality = "good" if r2 >= 0.85 and mae <= 0.5 else "usable"
        return True, (f"Passed validation ({quality}): on images it never saw, it reads defocus to {err} "
                      f"(R² {r2:.2f}).")
    why = ("it does worse than always guessing the average defocus" if r2 < 0 else
           "it explains too little of the true defocus" if r2 < MIN_R2 else
           f"its error is larger than {MAX_MAE_UM:g} µm")
    return False, (f"Failed validation: on images it never saw, {why} (R² {r2:.2f}, error {err}). "
                   "Train longer, with more images or a wider defocus range.")


def _pct(v) -> str:
    return f"{100 * float(v):.0f} %" if v is not None and math.isfinite(float(v)) else "n/a"


def _auc(v) -> str:
    return f"{float(v):.3f}" if v is not None and math.isfinite(float(v)) else "n/a"


def collection_verdict(meta: dict) -> tuple[bool, str]:
    """(put into use, plain sentences) for a model fine-tuned on a tile collection.

    Reads ``meta["collection"]`` (collection_train's report): the held-out slides' figures
    before (the starting model) and after, and whether the fine-tuned one is no worse.
    """
    rep = (meta or {}).get("collection") or {}
    if not rep:
        return False, "The model has no report of its training on a collection; it is not put into use."
    b, a = rep.get("before") or {}, rep.get("after") or {}
    held = ", ".join(rep.get("heldout_slides") or []) or "none"
    figures = (f"On the held-out slides ({held}: {a.get('n_in_focus', 0)} in-focus, {a.get('n_out_of_focus', 0)} "
               f"out-of-focus tiles), real in-focus and out-of-focus tiles separate with AUC {_auc(a.get('auc'))} "
               f"(start: {_auc(b.get('auc'))}); {_pct(a.get('out_of_focus_over_threshold'))} of the out-of-focus "
               f"tiles read over the {rep.get('threshold_um', 0):g} µm threshold (start: "
               f"{_pct(b.get('out_of_focus_over_threshold'))}), {_pct(a.get('in_focus_over_threshold'))} of the "
               f"in-focus ones (start: {_pct(b.get('in_focus_over_threshold'))}).")
    start = rep.get("init") or "the starting model"
    if rep.get("selected") == "start":
        return False, (f"{figures} The fine-tuned model does WORSE than {start}, so the file holds {start}'s "
                       "weights unchanged.")
    if rep.get("not_worse"):
        return True, f"{figures} It does no worse than {start}."
    return False, f"{figures} The fine-tuned model does WORSE than {start} on these slides."
