"""Scoring what a viewer shows, through the same source machinery as ``score_slide``.

An image layer opened from a file by this plugin's reader records the file's path: it is
scored from the file (its own pyramid for tissue, JPEG tiles decoded ahead in strips that
skip glass). Any other multiscale layer is scored through its levels, and a plain array
through a strided view for tissue (:class:`~napari_focusq.io.arrays.LevelsSource`).
Everything here runs in the worker thread and imports neither Qt nor napari.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Generator

from napari_focusq.progress import Cancelled, Progress
from napari_focusq.scoring.focusmap import FocusMap

#: Decode threads feeding the model, as score_slide uses them.
DECODE_THREADS = 2


def layer_source(data, metadata: dict | None, *, multiscale: bool, pixel_size_um: float, name: str,
                 stack: bool = False):
    """(source, kind) for a layer's data: kind "file" (opened here: close it) or "levels".

    The file is used only when it still holds what the layer shows (same level-0 shape): a
    layer split by channel, or a file changed since it was opened, falls back to the data.
    """
    from napari_focusq.errors import FocusQError
    from napari_focusq.io.arrays import LevelsSource
    from napari_focusq.io.formats import open_image

    levels = list(data) if multiscale else [data]
    path = (metadata or {}).get("path")
    if path and Path(path).is_file():
        try:
            src = open_image(path, pixel_size_um=pixel_size_um)
        except (FocusQError, OSError, ValueError):
            src = None
        if src is not None:
            if tuple(src.shape) == tuple(int(n) for n in levels[0].shape):
                return src, "file"
            src.close()
    return LevelsSource(levels, pixel_size_um, name=name, stack=stack), "levels"


class ScoringJob:
    """One scoring run of a layer: :meth:`events` is the generator a worker drains, and
    :meth:`cancel` (from any thread) stops it where the work is, not at its next event.

    A generator can only be stopped between two of its events, and one event is a whole
    batch: the decode threads would go on reading the strips queued ahead of the model.
    Cancelling makes every later read of the source raise :class:`~napari_focusq.progress.Cancelled`
    instead, so decoding stops with the strips already being read.
    """

    def __init__(self, data, metadata: dict | None, *, multiscale: bool, pixel_size_um: float, name: str,
                 z: int | None = None, modality: str = "auto", model=None, threads: int = DECODE_THREADS,
                 optics=None):
        self._args = dict(data=data, metadata=metadata, multiscale=multiscale, pixel_size_um=pixel_size_um,
                          name=name, z=z, modality=modality, model=model, threads=threads, optics=optics)
        self._stop = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def cancel(self) -> None:
        self._stop.set()

    def events(self) -> Generator[Progress, None, FocusMap]:
        return iter_score_layer(**self._args, stop=self._stop)


def iter_score_layer(data, metadata: dict | None, *, multiscale: bool, pixel_size_um: float, name: str,
                     z: int | None = None, modality: str = "auto", model=None,
                     threads: int = DECODE_THREADS, stop: threading.Event | None = None, optics=None,
                     ) -> Generator[Progress, None, FocusMap]:
    """Score plane ``z`` (None: a 2-D layer) of a layer's data; see :func:`layer_source`.

    Once ``stop`` is set, reads of the source raise :class:`~napari_focusq.progress.Cancelled`.
    ``optics``: the user's objective, as :func:`~napari_focusq.scoring.pipeline.iter_score_source` takes it.

    Yields the pipeline's Progress events (the "score" ones carry each batch's tiles) and
    returns the FocusMap, its ``extra["read_from"]`` saying which source was used.
    """
    from napari_focusq.scoring.pipeline import iter_score_source

    yield Progress("open", 0, 1, f"opening {name}")
    src, kind = layer_source(data, metadata, multiscale=multiscale, pixel_size_um=pixel_size_um, name=name,
                             stack=z is not None)
    if stop is not None:
        _stop_reads(src, stop, name)
    try:
        fmap = yield from iter_score_source(src, pixel_size_um=pixel_size_um, modality=modality, model=model,
                                            z=z, threads=threads, optics=optics)
    finally:
        if kind == "file":
            src.close()
    fmap.extra["read_from"] = kind
    return fmap


def _stop_reads(src, stop: threading.Event, name: str) -> None:
    """Make ``src.read_region`` raise Cancelled once ``stop`` is set (an instance attribute,
    so the source keeps its class: the pipeline tells array sources from files by it)."""
    read = src.read_region

    def read_region(*args, **kwargs):
        if stop.is_set():
            raise Cancelled(f"{name}: cancelled")
        return read(*args, **kwargs)

    src.read_region = read_region
