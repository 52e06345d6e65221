"""Glue between progress generators and napari's thread workers, plus shared settings."""
from __future__ import annotations

from typing import Callable, Generator

from qtpy.QtCore import QObject, QSettings, Signal


def progress_worker(gen: Generator, *, on_started: Callable, on_event: Callable, on_result: Callable,
                    on_error: Callable, on_finished: Callable):
    """A napari ``GeneratorWorker`` draining ``gen`` (a generator of Progress events).

    Every Progress is re-emitted in the GUI thread through ``yielded``; the
    generator's return value arrives through ``returned``. ``worker.quit()`` stops it at
    the next event, and the generator is closed in ``finished`` (from the GUI thread,
    once the worker thread is done with it) so its ``finally`` blocks run.
    Handlers are connected before the thread starts, so none of its signals is missed.
    """
    from napari.qt.threading import create_worker

    def drain():
        return (yield from gen)

    worker = create_worker(drain, _start_thread=False, _ignore_errors=True)
    worker.started.connect(on_started)
    worker.yielded.connect(on_event)
    worker.returned.connect(on_result)
    worker.errored.connect(on_error)
    worker.finished.connect(gen.close)
    worker.finished.connect(on_finished)
    return worker


def settings() -> QSettings:
    """The plugin's settings store (an INI file in the user's config folder)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "napari-focusq", "napari-focusq")


class _ModelRegistry(QObject):
    """User-trained checkpoints, shared by every widget of the session and remembered."""

    added = Signal(str)  # a model to list and select
    listed = Signal(str)  # a model to list only (e.g. one that failed validation)

    def paths(self) -> list[str]:
        from pathlib import Path

        stored = settings().value("models/user", [], type=list) or []
        return [p for p in dict.fromkeys(str(s) for s in stored) if Path(p).is_file()]

    def add(self, path: str, select: bool = True) -> None:
        path = str(path)
        s = settings()
        stored = [p for p in (s.value("models/user", [], type=list) or []) if p != path]
        s.setValue("models/user", [path, *stored][:20])
        s.sync()
        (self.added if select else self.listed).emit(path)


_registry: _ModelRegistry | None = None


def model_registry() -> _ModelRegistry:
    """The session's :class:`_ModelRegistry` (created on first use, in the GUI thread)."""
    global _registry
    if _registry is None:
        _registry = _ModelRegistry()
    return _registry


class ActivityBar:
    """A napari ``progress`` bar (activity dock) fed with Progress events.

    napari's progress widgets call ``processEvents`` on every update, so queued events
    are handled *inside* an update; without a guard a fast stream recurses once per
    event. Nested updates are skipped and updates are throttled; callers update their
    own state before calling :meth:`update`.
    """

    def __init__(self, desc: str, min_interval: float = 0.1):
        from napari.utils import progress

        self._busy = True  # creating the bar processes events too
        self.desc = desc
        self.min_interval = min_interval
        self._last = 0.0
        self._stage = None
        self._bar = progress(total=0, desc=desc)
        self._busy = False

    def update(self, ev) -> None:
        import time

        now = time.monotonic()
        final = ev.total is not None and ev.done >= ev.total
        if self._busy or self._bar is None or (
                ev.stage == self._stage and not final and now - self._last < self.min_interval):
            return
        self._busy = True
        try:
            self._last, self._stage = now, ev.stage
            bar = self._bar  # the updates below process events, which may close the bar
            if ev.total and bar.total != ev.total:
                bar.total = ev.total
            # update() (not assigning n) is what emits the event the dock's bar listens to
            bar.update(ev.done - bar.n)
            bar.set_description(f"{self.desc}: {ev.stage}")
        finally:
            self._busy = False

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()
