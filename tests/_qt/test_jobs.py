"""The docks' JobRunner: a job's result, failure and cancel, and the worker stopped with its dock."""
from __future__ import annotations

import threading

import pytest

TIMEOUT_MS = 30_000


def _job(n=3, fail=None, gate=None):
    """A job whose generator yields ``n`` events (each after ``gate``, if given), then fails or returns "done";
    it records what it is told."""
    from napari_focusq.napari.widgets.jobs import Job
    from napari_focusq.progress import Progress

    class Recording(Job):
        title = bar = "Demo"
        cancelled_text = "Demo: cancelled."

        def __init__(self):
            self.seen, self.result, self.finished = [], None, None

        def events(self):
            for i in range(n):
                if gate is not None:
                    gate.wait(10)  # held here until the test has pressed Cancel
                yield Progress("demo", i + 1, n, "")
            if fail is not None:
                raise fail
            return "done"

        def on_event(self, ev):
            self.seen.append(ev.done)

        def on_result(self, result):
            self.result = result

        def on_finished(self, aborted):
            self.finished = aborted

    return Recording()


@pytest.fixture
def owner(qtbot):
    from qtpy.QtWidgets import QWidget

    w = QWidget()
    qtbot.addWidget(w)
    return w


def _runner(owner, calls):
    from napari_focusq.napari.widgets.jobs import JobRunner

    return JobRunner(owner, on_started=lambda: calls.append("started"), on_finished=lambda: calls.append("finished"))


def test_a_job_runs_to_its_result(owner, qtbot, notes):
    calls = []
    runner = _runner(owner, calls)
    job = _job()
    runner.start(job)
    assert runner.busy
    qtbot.waitUntil(lambda: not runner.busy, timeout=TIMEOUT_MS)
    assert job.seen == [1, 2, 3] and job.result == "done" and job.finished is False
    assert calls == ["started", "finished"] and runner.job is None and runner._bar is None  # bar closed
    assert notes == {"error": [], "info": []}


def test_a_failure_is_reported_once_with_the_job_title(owner, qtbot, notes):
    calls = []
    runner = _runner(owner, calls)
    job = _job(fail=ValueError("bad input"))
    runner.start(job)
    qtbot.waitUntil(lambda: not runner.busy, timeout=TIMEOUT_MS)
    assert notes["error"] == ["Demo failed: bad input"]  # our own errors by their message
    assert job.result is None and job.finished is False and calls[-1] == "finished"
    job = _job(fail=KeyError("x"))
    runner.start(job)
    qtbot.waitUntil(lambda: not runner.busy, timeout=TIMEOUT_MS)
    assert notes["error"][-1] == "Demo failed: KeyError: 'x'"  # anything else with its type


def test_cancel_stops_at_the_next_event_and_says_so(owner, qtbot, notes):
    calls = []
    runner = _runner(owner, calls)
    gate = threading.Event()
    job = _job(n=50, gate=gate)
    runner.start(job)
    qtbot.waitUntil(lambda: "started" in calls, timeout=TIMEOUT_MS)
    runner.cancel()
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy, timeout=TIMEOUT_MS)
    assert job.finished is True and job.result is None and len(job.seen) < 50
    assert notes["info"] == ["Demo: cancelled."] and not notes["error"]


def test_closing_the_dock_stops_its_worker(qtbot, notes):
    from qtpy.QtWidgets import QWidget

    from napari_focusq.napari.widgets.jobs import JobRunner

    owner = QWidget()
    runner = JobRunner(owner)
    gate = threading.Event()
    job = _job(n=50, gate=gate)
    worker = runner.start(job)
    owner.deleteLater()  # the dock goes: its `destroyed` quits the worker
    qtbot.waitUntil(lambda: worker.abort_requested, timeout=TIMEOUT_MS)
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy, timeout=TIMEOUT_MS)
    assert job.finished is True and len(job.seen) < 50
