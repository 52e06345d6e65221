"""The usable-tissue mask: the one downsample rule and the one writer, for ``focusq score``,
``focusq batch``, the review folder and the napari writer.

A mask is 255 where the tissue is usable (scored and not excluded), 0 elsewhere, at an
integer ``downsample`` of level 0 chosen so the longer side is at most :data:`MASK_MAX_PX`.
A PNG records ``downsample``, ``pixel_size_um`` (of its own pixels), ``image_shape``
(level 0) and ``software`` in text chunks, so it can be laid back on the slide; a TIFF
records its pixel size in resolution tags (pixels per cm, ImageJ µm).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np

from napari_focusq._atomic import atomic_path
from napari_focusq.config import DEFAULT_THRESHOLD_UM
from napari_focusq.errors import ExportError
from napari_focusq.scoring.focusmap import FocusMap

#: Longest side of a usable-tissue mask; whole slides are rendered coarser than level 0.
MASK_MAX_PX = 4096
#: The file types a mask can be written as.
MASK_SUFFIXES = (".png", ".tif", ".tiff")


def mask_downsample(image_shape, max_px: int = MASK_MAX_PX) -> int:
    """Smallest integer downsample that keeps the longer side within ``max_px``."""
    return max(1, math.ceil(max(image_shape) / max_px))


def fmap_mask(fmap: FocusMap, *, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None,
              downsample: int | None = None) -> tuple[np.ndarray, int]:
    """The usable-tissue mask of ``fmap`` (255 = usable) and its downsample (default: the rule)."""
    ds = mask_downsample(fmap.image_shape) if downsample is None else downsample
    return fmap.pixel_mask(threshold_um, excluded, downsample=ds), ds


def write_tissue_mask(fmap: FocusMap, path, *, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None,
                      downsample: int | None = None, png_dpi: bool = False) -> Path:
    """Write ``fmap``'s usable-tissue mask (255 = usable) as PNG or TIFF, by ``path``'s suffix.

    Parameters
    ----------
    threshold_um
        Tiles further from focus are excluded (unless ``excluded`` is given).
    excluded
        Optional (rows, cols) bool grid of tiles excluded by hand; overrides the threshold.
    downsample
        Level-0 pixels per mask pixel; default :func:`mask_downsample`.
    png_dpi
        Also record the pixel size as a PNG pHYs chunk (see :func:`save_mask`).
    """
    mask, ds = fmap_mask(fmap, threshold_um=threshold_um, excluded=excluded, downsample=downsample)
    return _write(Path(path), mask, fmap.pixel_size_um * ds, downsample=ds, image_shape=fmap.image_shape,
                  png_dpi=png_dpi)


def save_mask(path, mask: np.ndarray, pixel_size_um: float | None, *, downsample: float | None = None,
              image_shape=None, png_dpi: bool = True) -> Path:
    """Write a uint8 mask as TIFF or PNG atomically, with its pixel size recorded.

    The writer of the viewer's exports: every failure is an :class:`ExportError` naming the
    file. ``downsample`` (level-0 pixels per mask pixel) and ``image_shape`` (level 0) are
    recorded in a PNG's text chunks when given. ``png_dpi`` adds a pHYs chunk to a PNG, which the viewer's masks have always had
    (image viewers and Fiji read it as the scale); ``focusq score``'s ``.mask.png`` has
    none, and stays byte for byte what it was.
    """
    path = _export_path(path)
    with _as_export_error(path):
        return _write(path, mask, pixel_size_um, downsample=downsample, image_shape=image_shape, png_dpi=png_dpi)


def export_tissue_mask(fmap: FocusMap, path, *, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None,
                       downsample: int | None = None) -> Path:
    """:func:`write_tissue_mask` for the viewer: failures are :class:`ExportError`, a PNG has pHYs too."""
    path = _export_path(path)
    with _as_export_error(path):
        return write_tissue_mask(fmap, path, threshold_um=threshold_um, excluded=excluded, downsample=downsample,
                                 png_dpi=True)


def _export_path(path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise ExportError(f"{path}: a mask is written as .tif, .tiff or .png, not {suffix or 'no extension'!r}")
    return path


@contextlib.contextmanager
def _as_export_error(path: Path):
    try:
        yield
    except PermissionError as exc:
        raise ExportError(f"{path}: cannot write here (permission denied: the folder may be read-only)") from exc
    except FileNotFoundError as exc:
        raise ExportError(f"{path}: {exc}") from exc


def _write(path: Path, mask: np.ndarray, pixel_size_um: float | None, *, downsample, image_shape,
           png_dpi: bool) -> Path:
    mask = np.ascontiguousarray(mask)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        kw = {}
        if pixel_size_um:
            kw = {"resolution": (1e4 / pixel_size_um, 1e4 / pixel_size_um), "resolutionunit": "CENTIMETER",
                  "metadata": {"unit": "um", "axes": "YX"}, "imagej": True}
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, mask, compression="zlib" if not kw else None, **kw)
        return path
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if downsample is not None:  # a chunk only for what is known: a caller may give just the pixel size
        info.add_text("downsample", str(downsample))
    if pixel_size_um:
        info.add_text("pixel_size_um", repr(pixel_size_um))
    if image_shape is not None:
        info.add_text("image_shape", json.dumps([int(v) for v in image_shape]))
    info.add_text("software", "napari-focusq")
    kw = {"dpi": (25400.0 / pixel_size_um,) * 2} if png_dpi and pixel_size_um else {}
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG", pnginfo=info, optimize=True, **kw)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path
