"""Progress events: long work is a generator of these, drained by every front end.

A consumer cancels by simply not asking for the next event (``gen.close()``), so
every ``yield`` is a cancel point and no work runs after it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One step of long work: ``done`` of ``total`` units of ``stage``.

    Attributes
    ----------
    stage
        What is being done ("tissue", "score", "batch"...).
    done, total
        Units done and in all (``total`` None when unknown).
    message
        A line for the user.
    data
        Results a front end may use as they come (a batch row, a finished plane...).
    """

    stage: str
    done: int
    total: int | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        """Share of the stage done, in [0, 1]; None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


class Cancelled(Exception):
    """Raised by :func:`drive` when the progress callback asks to stop."""


def drive(gen: Generator[Progress, None, T], progress: Callable[[Progress], Any] | None = None) -> T:
    """Run a progress generator to the end and return its result.

    ``progress`` is called with every event; if it returns ``False`` the work is
    cancelled (the generator is closed) and :class:`Cancelled` is raised.
    """
    try:
        while True:
            event = next(gen)
            if progress is not None and progress(event) is False:
                gen.close()
                raise Cancelled(f"cancelled during {event.stage}")
    except StopIteration as stop:
        return stop.value


class StderrBar:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream=None, width: int = 30, min_interval: float = 0.2):
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval
        self._last = 0.0
        self._stage = None
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, ev: Progress) -> None:
        """Show ``ev`` (at most every ``min_interval`` s within a stage)."""
        now = time.monotonic()
        finished = ev.total is not None and ev.done >= ev.total
        if ev.stage == self._stage and not finished and now - self._last < self.min_interval:
            return
        self._last, self._stage = now, ev.stage
        if ev.total:
            f = ev.fraction or 0.0
            bar = "#" * int(f * self.width)
            line = f"{ev.stage:<12} [{bar:<{self.width}}] {ev.done}/{ev.total} {ev.message}"
        else:
            line = f"{ev.stage:<12} {ev.done} {ev.message}"
        if self._tty:
            self.stream.write("\r" + line[:120].ljust(120) + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
