"""One runner for the docks' long jobs: the worker thread, the activity-dock bar, Cancel, errors, stop on close.

A widget owns a :class:`JobRunner` and hands it :class:`Job` objects: each job knows its
generator of Progress events and what its events and result mean for the widget; the
runner does what every job shares (one job at a time, the napari activity bar, the
window's task list, the error message, "cancelled", stopping the thread when the dock
is closed).
"""
from __future__ import annotations

from typing import Callable

from napari_focusq.napari.widgets import notify
from napari_focusq.napari.widgets.workers import ActivityBar, progress_worker


def show_progress(bar, ev, label: str | None = None) -> None:
    """A dock's own progress bar follows a Progress event that has a total ("score 12/40")."""
    if ev.total:
        bar.setRange(0, int(ev.total))
        bar.setValue(int(ev.done))
        bar.setFormat(f"{label or ev.stage} %v/%m")


class Job:
    """A long job of a dock; subclasses give :meth:`events` and react to its events and result."""

    #: what the user reads in the activity dock and in messages ("Focus QC", "Training")
    title = ""
    #: the line in napari's task list (None: not listed there)
    description: str | None = None
    #: told when the user cancelled (None: nothing is said)
    cancelled_text: str | None = None
    #: the activity-dock bar's name (None: no bar)
    bar: str | None = None

    def events(self):
        """The generator of Progress events the worker drains; its return value is the result."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Reach what the worker's quit does not (e.g. decoder threads); most jobs have nothing to do."""

    @property
    def cancelled(self) -> bool:
        return False

    def on_event(self, ev) -> None:
        """A Progress event, in the GUI thread (before the activity bar takes it)."""

    def on_result(self, result) -> None:
        """The generator's return value, in the GUI thread."""

    def on_finished(self, aborted: bool) -> None:
        """The job is over (done, failed or cancelled): clean up what it left."""

    def failure_text(self, exc: BaseException) -> str:
        return f"{self.title} failed: {notify.failure_text(exc)}"


class JobRunner:
    """Runs one :class:`Job` at a time for ``owner`` (a dock widget).

    ``on_started`` / ``on_finished`` let the widget disable and enable its buttons;
    ``viewer`` lists the job in the window's task list (napari then asks before
    closing a window with a job running and cancels it through the runner).
    """

    def __init__(self, owner, *, viewer=None, on_started: Callable | None = None,
                 on_finished: Callable | None = None):
        self.viewer = viewer
        self.job: Job | None = None
        self.worker = None
        self._bar = None
        self._task_id = None
        self._on_started = on_started
        self._on_finished = on_finished
        owner.destroyed.connect(_stop_later(self))

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(self, job: Job):
        """Start ``job`` in a worker thread (returns the worker)."""
        self.job = job
        self.worker = progress_worker(job.events(), on_started=self._started, on_event=self._event,
                                      on_result=job.on_result, on_error=self._error, on_finished=self._finished)
        self._register_task(job.description)
        self.worker.start()
        return self.worker

    def cancel(self, *_) -> None:
        """Ask the running job to stop at its next progress event."""
        if self.job is not None:
            self.job.cancel()  # e.g. stops the decoders now, not after the batch in hand
        if self.worker is not None:
            self.worker.quit()

    def stop(self) -> None:
        """Stop the worker (the dock is closing); a worker already gone is left alone."""
        if self.worker is not None:
            try:
                self.worker.quit()
            except RuntimeError:
                pass

    # ------------------------------------------------------------------ worker signals
    def _started(self) -> None:
        if self._on_started is not None:
            self._on_started()
        if self.job is not None and self.job.bar:
            self._bar = ActivityBar(self.job.bar)

    def _event(self, ev) -> None:
        # the activity bar processes events while updating: the job's own state first, the bar last
        if self.job is not None:
            self.job.on_event(ev)
        if self._bar is not None:
            self._bar.update(ev)

    def _error(self, exc) -> None:
        from napari_focusq.progress import Cancelled

        job = self.job
        if isinstance(exc, Cancelled) or (job is not None and job.cancelled):
            return  # the user's cancel, surfacing from a decode thread; _finished reports it
        notify.error(job.failure_text(exc) if job is not None else notify.failure_text(exc))
        self._end_task("FAILED")

    def _finished(self) -> None:
        job = self.job
        aborted = (self.worker is not None and self.worker.abort_requested) or (job is not None and job.cancelled)
        if job is not None:
            job.on_finished(aborted)
            if aborted and job.cancelled_text:
                notify.info(job.cancelled_text)
        self._end_task("CANCELLED" if aborted else "COMPLETED")
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        self.job = None
        if self._on_finished is not None:
            self._on_finished()

    # ------------------------------------------------------------------ the window's task list
    def _task_manager(self):
        # napari asks before closing a window with busy tasks and cancels them through
        # their callback; the manager is private, so fall back to `destroyed` without it
        import warnings

        if self.viewer is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return getattr(getattr(self.viewer, "window", None), "_task_status_manager", None)

    def _register_task(self, description: str | None) -> None:
        mgr = self._task_manager() if description else None
        if mgr is None:
            return
        from napari.utils.task_status import Status

        worker = self.worker
        self._task_id = mgr.register_task_status("napari-focusq", Status.BUSY, description,
                                                 cancel_callback=lambda: worker.quit() or True)

    def _end_task(self, status_name: str) -> None:
        mgr = self._task_manager()
        if mgr is not None and self._task_id is not None:
            from napari.utils.task_status import Status

            mgr.update_task_status(self._task_id, getattr(Status, status_name))
        self._task_id = None


def _stop_later(runner: JobRunner):
    """A ``destroyed`` callback that stops the runner's worker without touching the deleted widget."""
    holder = {"r": runner}

    def stop(*_):
        r = holder.pop("r", None)
        if r is not None:
            r.stop()

    return stop
