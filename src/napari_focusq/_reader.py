"""npe2 reader: slides and z-stacks as lazy multiscale napari image layers in µm."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

SUFFIXES = (".svs", ".ndpi", ".ome.tif", ".ome.tiff", ".tif", ".tiff")

# Opened sources stay referenced while their lazy levels may still be read by napari.
_OPEN_SOURCES: dict[str, Any] = {}


def get_reader(path: str | list[str]) -> Callable | None:
    """Return :func:`read_layers` when every path is a file this plugin reads, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(SUFFIXES) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[tuple]:
    """Layer data tuples for one or more files (see :func:`layer_tuple`)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [layer_tuple(p) for p in paths]


def layer_tuple(path: str | Path, pixel_size_um: float | None = None) -> tuple:
    """(data, kwargs, "image") for one file, read lazily through :func:`napari_focusq.io.open_image`.

    Parameters
    ----------
    path
        A slide or stack that :func:`~napari_focusq.io.open_image` reads.
    pixel_size_um
        Overrides the file's level-0 pixel size.

    Returns
    -------
    tuple
        ``data`` is the list of pyramid levels (largest first) when the file has
        several, else the one lazy array. ``scale`` is in µm when the pixel size is
        known (``units`` "µm"), in pixels otherwise; ``metadata`` records the pixel
        size and where it came from so the Focus QC widget can pre-fill it.
    """
    from .io import open_image

    src = open_image(path, pixel_size_um=pixel_size_um)
    _OPEN_SOURCES[str(src.path)] = src
    levels = list(src.levels)
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
