"""The heatmap's redraw throttle: the first request at once, a burst merged into one later call."""
from __future__ import annotations


def test_throttle_runs_first_at_once_and_merges_a_burst(qtbot, monkeypatch):
    import napari_focusq.napari.widgets.redraw as R

    now = {"t": 100.0}
    monkeypatch.setattr(R.time, "monotonic", lambda: now["t"])  # a clock the test moves
    calls = []
    th = R.Throttle(lambda: calls.append(now["t"]), min_interval=0.5)
    th.request()
    assert calls == [100.0]  # the first tiles show without waiting
    for _ in range(20):  # a burst of batches inside the interval: one deferred call
        th.request()
    assert calls == [100.0] and th._timer.isActive()
    th.flush()
    assert calls == [100.0, 100.0] and not th._timer.isActive()
    now["t"] = 101.0  # past the interval: at once again
    th.request()
    assert len(calls) == 3 and th.calls == 3
    th.request()
    th.cancel()
    assert not th._timer.isActive() and len(calls) == 3


def test_throttle_waits_longer_after_a_costly_redraw(qtbot, monkeypatch):
    import napari_focusq.napari.widgets.redraw as R

    now = {"t": 0.0}
    monkeypatch.setattr(R.time, "monotonic", lambda: now["t"])

    def costly():
        now["t"] += 0.2  # a redraw that takes 0.2 s of this thread

    th = R.Throttle(costly, min_interval=0.5, max_share=0.1)
    th.request()
    # 0.2 s at most a tenth of the time: the next redraw not before 2 s after it ended.
    now["t"] += 1.0
    th.request()
    assert th.calls == 1 and th._timer.isActive() and 700 <= th._timer.interval() <= 1000
    th.cancel()
    now["t"] += 1.0
    th.request()
    assert th.calls == 2
