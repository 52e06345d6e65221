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

    added = Signal(str)

    def paths(self) -> list[str]:
        from pathlib import Path

        stored = settings().value("models/user", [], type=list) or []
        return [p for p in dict.fromkeys(str(s) for s in stored) if Path(p).is_file()]

    def add(self, path: str) -> None:
        path = str(path)
        s = settings()
        stored = [p for p in (s.value("models/user", [], type=list) or []) if p != path]
        s.setValue("models/user", [path, *stored][:20])
        s.sync()
        self.added.emit(path)


_registry: _ModelRegistry | None = None


def model_registry() -> _ModelRegistry:
    """The session's :class:`_ModelRegistry` (created on first use, in the GUI thread)."""
    global _registry
    if _registry is None:
        _registry = _ModelRegistry()
    return _registry
