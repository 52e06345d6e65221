"""Scoring what a viewer shows, through the same source machinery as ``score_slide``.

An image layer opened from a file by this plugin's reader records the file's path: it is
scored from the file (its own pyramid for tissue, JPEG tiles decoded ahead in strips that
skip glass). Any other multiscale layer is scored through its levels, and a plain array
through a strided view for tissue (:class:`~napari_focusq.array_source.LevelsSource`).
Everything here runs in the worker thread and imports neither Qt nor napari.
"""
from __future__ import annotations

from pathlib import Path
from typing import Generator

from .focusmap import FocusMap
from .progress import Progress

#: Decode threads feeding the model, as score_slide uses them.
DECODE_THREADS = 2


def layer_source(data, metadata: dict | None, *, multiscale: bool, pixel_size_um: float, name: str,
                 stack: bool = False):
    """(source, kind) for a layer's data: kind "file" (opened here: close it) or "levels".

    The file is used only when it still holds what the layer shows (same level-0 shape): a
    layer split by channel, or a file changed since it was opened, falls back to the data.
    """
    from .array_source import LevelsSource
    from .errors import FocusQError
    from .io import open_image

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


def iter_score_layer(data, metadata: dict | None, *, multiscale: bool, pixel_size_um: float, name: str,
                     z: int | None = None, modality: str = "auto", model=None,
                     threads: int = DECODE_THREADS) -> Generator[Progress, None, FocusMap]:
    """Score plane ``z`` (None: a 2-D layer) of a layer's data; see :func:`layer_source`.

    Yields the pipeline's Progress events (the "score" ones carry each batch's tiles) and
    returns the FocusMap, its ``extra["read_from"]`` saying which source was used.
    """
    from .pipeline import iter_score_source

    yield Progress("open", 0, 1, f"opening {name}")
    src, kind = layer_source(data, metadata, multiscale=multiscale, pixel_size_um=pixel_size_um, name=name,
                             stack=z is not None)
    try:
        fmap = yield from iter_score_source(src, pixel_size_um=pixel_size_um, modality=modality, model=model,
                                            z=z, threads=threads)
    finally:
        if kind == "file":
            src.close()
    fmap.extra["read_from"] = kind
    return fmap
