"""The training panel's job, and the time-left estimate it shows."""
from __future__ import annotations

from napari_focusq.napari.widgets.jobs import Job


class TrainJob(Job):
    """A training run (simulated defocus, or fine-tuning on a collection) of the training panel."""

    title = bar = "Training"
    cancelled_text = "Training cancelled; no model was saved."

    def __init__(self, panel, gen):
        self.panel, self.gen = panel, gen

    def events(self):
        return self.gen

    def on_event(self, ev) -> None:
        self.panel._on_event(ev)

    def on_result(self, path) -> None:
        self.panel._on_result(path)

    def on_finished(self, aborted: bool) -> None:
        self.panel._job_over(aborted)


def judge_model(path) -> tuple[bool, str]:
    """(passed, verdict in words) of a checkpoint just trained; lists it in every model picker.

    A failed model is listed (the user may choose it anyway) but never selected for them.
    """
    from napari_focusq.errors import FocusQError
    from napari_focusq.models.checkpoint import load_checkpoint
    from napari_focusq.models.verdict import collection_verdict, validation_verdict
    from napari_focusq.napari.widgets import notify
    from napari_focusq.napari.widgets.workers import model_registry

    try:
        meta = load_checkpoint(path)[1]
    except (FocusQError, OSError, ValueError):
        meta = {}
    ok, text = (collection_verdict if "collection" in meta else validation_verdict)(meta)
    model_registry().add(str(path), select=ok)
    if ok:
        notify.info(f"Trained model saved to {path}. {text} It is now selected in Focus QC.")
    else:
        notify.info(f"Trained model saved to {path}. {text} It is listed in Focus QC's Model list but not "
                    "selected; choose it there to use it anyway.")
    return ok, text


def time_left(first_epoch, ev, now: float):
    """(text, first_epoch): " · about 12 min left", measured from the epochs after the first.

    ``first_epoch`` is the (epoch, time) the estimate counts from (None before training).
    """
    if ev.stage != "train" or not ev.total:
        return "", first_epoch
    if first_epoch is None or ev.done <= first_epoch[0]:
        return "", (ev.done, now)  # the first epoch also pays for start-up: measure after it
    done0, t0 = first_epoch
    left = (now - t0) / (ev.done - done0) * (ev.total - ev.done)
    return (f" · about {_duration(left)} left" if ev.done < ev.total else ""), first_epoch


def _duration(seconds: float) -> str:
    """12 s, 4 min, 1 h 20 min."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _guard_triton() -> None:
    """Keep torch from importing triton inside napari.

    torch's optimisers import torch._dynamo on first use, which imports triton if it is
    installed; triton's bundled LLVM clashes with the LLVM of Mesa's OpenGL drivers that
    napari has already loaded, and the process segfaults. Training here never compiles
    GPU kernels, so triton is hidden (unless something imported it already).
    """
    import sys

    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
    import torch._dynamo  # noqa: F401  (import once, in the GUI thread)
