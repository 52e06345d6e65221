"""The training panel's plain-words verdict on a model fine-tuned on a collection."""
from __future__ import annotations

from napari_focusq.models.verdict import collection_verdict


def _rep(after_auc, not_worse, selected="fine-tuned"):
    fig = {"auc": 0.9, "out_of_focus_over_threshold": 0.75, "in_focus_over_threshold": 0.1,
           "n_in_focus": 8, "n_out_of_focus": 4}
    return {"collection": {"heldout_slides": ["b.svs"], "threshold_um": 2.0, "init": "fast 0.1.0",
                           "before": fig, "after": {**fig, "auc": after_auc}, "not_worse": not_worse,
                           "selected": selected}}


def test_no_worse_is_put_into_use_with_the_figures():
    ok, text = collection_verdict(_rep(0.95, True))
    assert ok
    assert "held-out slides (b.svs: 8 in-focus, 4 out-of-focus" in text
    assert "AUC 0.950 (start: 0.900)" in text and "75 % of the out-of-focus" in text
    assert "2 µm threshold" in text and text.endswith("It does no worse than fast 0.1.0.")


def test_worse_is_said_plainly_and_not_put_into_use():
    ok, text = collection_verdict(_rep(0.7, False))
    assert not ok and "does WORSE than fast 0.1.0" in text
    ok, text = collection_verdict(_rep(0.7, False, selected="start"))  # the CLI's default: start's weights kept
    assert not ok and "holds fast 0.1.0's weights unchanged" in text


def test_undefined_figures_and_missing_report():
    ok, text = collection_verdict(_rep(float("nan"), True))
    assert ok and "AUC n/a" in text
    assert collection_verdict({})[0] is False
