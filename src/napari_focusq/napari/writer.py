"""npe2 writers for the "Excluded tiles" layer: a usable-tissue mask (TIFF/PNG) and QuPath GeoJSON."""
from __future__ import annotations

from typing import Any

import numpy as np

from napari_focusq.errors import ExportError

# the one mask writer and downsample rule (export/masks.py); save_mask is the widget's export
from napari_focusq.export.masks import export_tissue_mask, save_mask

__all__ = ["ExportError", "save_mask", "write_mask", "write_geojson", "focusmap_for_layer", "is_exclusion_layer"]


def focusmap_for_layer(data: Any, meta: dict):
    """(FocusMap, excluded grid) for a labels layer written by the Focus QC widget.

    A labels layer from elsewhere is treated as a grid of one-pixel tiles in its own
    data pixels, so the writers still produce exact outlines of its non-zero cells.
    """
    from napari_focusq.scoring.focusmap import FocusMap

    excluded = np.asarray(data) > 0
    if excluded.ndim != 2:
        raise ValueError(f"the exclusion layer must be 2-D (rows x cols); got shape {excluded.shape}")
    fmap = (meta.get("metadata") or {}).get("focusmap")
    if fmap is not None and tuple(fmap.shape) == excluded.shape:
        return fmap, excluded
    scale = meta.get("scale") or (1.0, 1.0)
    return FocusMap(
        defocus_um=np.zeros(excluded.shape, np.float32),
        tissue_fraction=np.ones(excluded.shape, np.float32),
        tile_size_px=1.0, image_shape=excluded.shape, pixel_size_um=float(scale[-1]),
        modality="unknown", model="",
    ), excluded


#: metadata["focusq"] of the Focus QC widget's exclusion layer (see _qt/layers.py)
EXCLUSION_LAYER_KIND = "excluded"


def is_exclusion_layer(meta: dict) -> bool:
    """True for the Focus QC exclusion layer: marked by the widget and carrying its FocusMap."""
    from napari_focusq.scoring.focusmap import FocusMap

    md = meta.get("metadata") or {}
    return md.get("focusq") == EXCLUSION_LAYER_KIND and isinstance(md.get("focusmap"), FocusMap)


def write_mask(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: the usable-tissue mask (255 = scored and not excluded) as TIFF/PNG.

    Only the Focus QC exclusion layer is written: a user's own labels layer is refused
    (napari's built-in writer saves it with its label values intact), never flattened to 0/255.
    """
    if not is_exclusion_layer(meta):
        name = meta.get("name") or "this labels layer"
        raise ExportError(f"{path}: {name!r} is not a Focus QC exclusion layer; the usable-tissue mask "
                          "is written only from the 'Excluded tiles' layer that Focus QC makes "
                          "(save other labels with napari's own TIFF writer)")
    fmap = meta["metadata"]["focusmap"]
    excluded = np.asarray(data) > 0
    if tuple(fmap.defocus_um.shape) != excluded.shape:
        raise ExportError(f"{path}: the exclusion layer's grid {excluded.shape} no longer matches its "
                          f"focus map {tuple(fmap.defocus_um.shape)}; score the slide again")
    # the downsample rule and the metadata of focusq score's .mask.png (export/masks.py)
    return [str(export_tissue_mask(fmap, path, excluded=excluded))]


def write_geojson(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: excluded tiles as merged QuPath annotation polygons (level-0 pixels)."""
    fmap, excluded = focusmap_for_layer(data, meta)
    try:
        fmap.to_geojson(path, excluded=excluded)
    except PermissionError as exc:
        raise ExportError(f"{path}: cannot write here (permission denied: the folder may be read-only)") from exc
    return [str(path)]
