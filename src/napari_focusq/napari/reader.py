"""npe2 reader: slides and z-stacks as lazy multiscale napari image layers in µm.

The reader claims a path only when :func:`napari_focusq.io.formats.open_image` really opens it
(a time-lapse TIFF, a corrupt file or a folder that is not a DICOM slide gets None, so
napari can offer another reader). The file stays open while its layers read from it and
is closed when the last of them leaves the viewer.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable

from napari_focusq.io.formats import READER_SUFFIXES as SUFFIXES  # napari.yaml lists the same

# token -> opened source, while layers made from it may still read it
_OPEN_SOURCES: dict[str, Any] = {}
_TOKENS = itertools.count()
_WATCHED_VIEWERS: set[int] = set()


def _claims(path) -> bool:
    p = Path(path)
    if p.is_dir():
        from napari_focusq.io.dicom import is_dicom_folder

        return is_dicom_folder(p)
    return str(p).lower().endswith(SUFFIXES)


def get_reader(path: str | list[str]) -> Callable | None:
    """:func:`read_layers` when every path is a file (or DICOM folder) that opens, else None."""
    from napari_focusq.errors import ImageReadError
    from napari_focusq.io.formats import open_image

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_claims(p) for p in paths):
        return None
    for p in paths:
        try:
            open_image(p).close()  # opening is lazy: headers only
        except (ImageReadError, OSError):
            return None
    return read_layers


def read_layers(path: str | list[str]) -> list[tuple]:
    """Layer data tuples for one or more files (see :func:`layer_tuple`)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [layer_tuple(p) for p in paths]


def layer_tuple(path: str | Path, pixel_size_um: float | None = None) -> tuple:
    """(data, kwargs, "image") for one file, read lazily through :func:`napari_focusq.io.formats.open_image`.

    Parameters
    ----------
    path
        A slide or stack that :func:`~napari_focusq.io.formats.open_image` reads.
    pixel_size_um
        Overrides the file's level-0 pixel size.

    Returns
    -------
    tuple
        ``data`` is the list of pyramid levels (largest first) when the file has
        several, else the one lazy array. ``scale`` is in µm when the pixel size is
        known (``units`` "µm"), in pixels otherwise; ``metadata`` records the pixel
        size and where it came from so the Focus QC widget can pre-fill it, and the
        token under which the open file is kept until its layers are removed.
    """
    from napari_focusq.io.formats import open_image

    src = open_image(path, pixel_size_um=pixel_size_um)
    token = f"{src.path}#{next(_TOKENS)}"
    _OPEN_SOURCES[token] = src
    _watch_current_viewer()
    levels = list(src.levels)
    if src.icc_profile and src.is_rgb:
        from napari_focusq.io.icc import display_levels

        levels = display_levels(levels, src.icc_profile)
    px = src.pixel_size_um
    unit = "µm" if px else "pixel"
    yx = [px or 1.0] * 2
    spatial = src.axes.replace("C", "")
    scale = ([src.z_spacing_um or (px or 1.0)] if "Z" in spatial else []) + yx
    kwargs: dict[str, Any] = {
        "name": Path(path).name,
        "scale": scale,
        "units": [unit] * len(scale),
        "axis_labels": [a.lower() for a in spatial],
        "multiscale": len(levels) > 1,
        "metadata": {
            "pixel_size_um": px,
            "objective": getattr(src, "objective", None),
            "pixel_size_source": src.pixel_size_source,
            "z_spacing_um": src.z_spacing_um,
            "path": str(src.path),
            "axes": src.axes,
            "downsamples": list(src.downsamples),
            "backend": src.backend,
            "icc_applied": bool(src.icc_profile and src.is_rgb),
            "focusq_source": token,
        },
    }
    if "C" in src.axes:
        if src.is_rgb:
            kwargs["rgb"] = True
        else:
            kwargs["channel_axis"] = len(src.axes) - 1
            kwargs["name"] = [f"{Path(path).name} [{i}]" for i in range(src.shape[-1])]
            kwargs["blending"] = "additive"
    data = levels if len(levels) > 1 else levels[0]
    return data, kwargs, "image"


def open_sources() -> dict[str, Any]:
    """The files the reader holds open now (token -> ImageSource); for tests and diagnostics."""
    return dict(_OPEN_SOURCES)


def release(token: str) -> None:
    """Close the file behind ``token`` (no-op when already closed)."""
    src = _OPEN_SOURCES.pop(token, None)
    if src is not None:
        src.close()


def close_path(path: str | Path) -> None:
    """Close every source the reader opened for ``path``."""
    key = str(Path(path))
    for token in [t for t, s in _OPEN_SOURCES.items() if str(s.path) == key]:
        release(token)


def _watch_current_viewer() -> None:
    """Close a source when the last layer reading from it leaves the viewer that opened it."""
    try:
        import napari
    except ImportError:  # library use without napari: callers close with release()/close_path()
        return
    viewer = napari.current_viewer()
    if viewer is None or id(viewer) in _WATCHED_VIEWERS:
        return
    _WATCHED_VIEWERS.add(id(viewer))

    def on_removed(event) -> None:
        token = (getattr(event.value, "metadata", None) or {}).get("focusq_source")
        if token is None:
            return
        if not any((lyr.metadata or {}).get("focusq_source") == token for lyr in viewer.layers):
            release(token)

    viewer.layers.events.removed.connect(on_removed)
