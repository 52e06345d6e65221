"""The training panel's "Folder" source: in-focus images of a folder (and the shown plane of a layer)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_focusq.napari import layers as L

IMAGE_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".png", ".jpg", ".jpeg")


def folder_images(folder) -> list[str]:
    """Image files directly in ``folder`` that the reader understands, sorted."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def layer_image(viewer, name: str, tmpdir) -> tuple[str, float]:
    """Layer ``name``'s shown plane (a stack's: the one Focus QC would score) as a TIFF in ``tmpdir``.

    Returns (path, pixel size in µm); raises ValueError for a missing layer or pixel size.
    """
    from napari_focusq.demo import write_tif

    if name not in viewer.layers:
        raise ValueError("choose an image layer to add, or untick “also the image layer”")
    layer = viewer.layers[name]
    px = L.layer_pixel_size_um(layer)
    if not px:
        raise ValueError(f"layer {name!r} has no pixel size in µm; open it with the napari-focusq reader "
                         "or set its scale in µm")
    data = L.level0(layer)
    if L.is_stack(layer):
        data = data[L.shown_plane(viewer, layer)]
    path = Path(tmpdir) / f"layer_{''.join(ch if ch.isalnum() else '_' for ch in name)}.tif"
    write_tif(path, np.asarray(data), pixel_size_um=px)
    return str(path), px
