"""Throttled redraws: a layer refreshed at most every so often while a job fills it.

Each refresh re-renders the canvas (the slide under the heatmap included) on the same cores
the scoring uses, so a run that yields a batch every few tens of milliseconds must not
redraw at that rate. The first request redraws at once (the first tiles show as soon as
they exist); later ones wait until ``min_interval`` has passed, or ``1 / max_share`` times
the last redraw's own cost if that is longer, and requests in between merge into one.
"""
from __future__ import annotations

import time
from typing import Callable

from qtpy.QtCore import QTimer


class Throttle:
    """Call ``fn`` on :meth:`request`, at most once per interval; a deferred call is never lost."""

    def __init__(self, fn: Callable[[], object], min_interval: float = 0.5, max_share: float = 0.1):
        self.fn = fn
        self.min_interval = min_interval
        self.max_share = max_share
        self.calls = 0
        self.seconds = 0.0  # spent in fn, in this thread
        self._next = 0.0
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._run)

    def request(self) -> None:
        if self._timer.isActive():
            return  # a redraw is already due; it will show this change too
        wait = self._next - time.monotonic()
        if wait <= 0:
            self._run()
        else:
            self._timer.start(max(1, int(wait * 1000)))

    def flush(self) -> None:
        """Run a deferred call now."""
        if self._timer.isActive():
            self._timer.stop()
            self._run()

    def cancel(self) -> None:
        self._timer.stop()

    def _run(self) -> None:
        t0 = time.monotonic()
        self.fn()
        cost = time.monotonic() - t0
        self.calls += 1
        self.seconds += cost
        self._next = time.monotonic() + max(self.min_interval, cost / self.max_share)
