"""DICOM WSI backend (wsidicom): a slide is a folder of .dcm files, one per pyramid level.

Opening any one file of the slide, or its folder, opens the whole slide: the files of the
same series beside it are gathered by their headers (pixel data are not read). The default
focal plane and optical path are read; pixel size, levels, label / overview / thumbnail
and the optical path's ICC profile come from the DICOM attributes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_focusq.errors import ImageReadError
from napari_focusq.io.extras import require_for_file
from napari_focusq.io.lazy import RegionLevel
from napari_focusq.io.source import fail_opening

#: the SOP class of whole-slide microscopy images
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def _is_dicom_file(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    """True when ``path`` is a folder holding at least one DICOM file."""
    return path.is_dir() and any(f.is_file() and _is_dicom_file(f) for f in path.iterdir())


def _slide_files(path: Path, pydicom) -> list[Path]:
    """The files of the WSI series ``path`` belongs to (``path`` a .dcm file or a folder)."""
    folder = path if path.is_dir() else path.parent
    candidates = sorted(f for f in folder.iterdir() if f.is_file() and _is_dicom_file(f))
    headers = {}
    for f in candidates:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True,
                                 specific_tags=["SOPClassUID", "SeriesInstanceUID"])
        except Exception:  # not parseable: not part of a slide we can read
            continue
        if str(getattr(ds, "SOPClassUID", "")) == WSI_SOP_CLASS:
            headers[f] = str(getattr(ds, "SeriesInstanceUID", ""))
    if not headers:
        raise ImageReadError(path, "holds no DICOM whole-slide image (VL Whole Slide Microscopy) files")
    if path.is_dir():
        series = set(headers.values())
        if len(series) > 1:
            raise ImageReadError(path, f"holds {len(series)} different DICOM slides; open one of "
                                       "their .dcm files instead of the folder")
        return list(headers)
    if path not in headers:
        raise ImageReadError(path, "is DICOM but not a whole-slide image (VL Whole Slide Microscopy)")
    return [f for f, s in headers.items() if s == headers[path]]


def open_dicom(path: Path):
    """Open a DICOM WSI (one of its files or its folder) as an :class:`~napari_focusq.io.source.ImageSource`."""
    from napari_focusq.io.source import ImageSource

    wsidicom = require_for_file(path, "wsidicom", "dicom", "DICOM WSI")
    import pydicom

    files = _slide_files(path, pydicom)
    try:
        wsi = wsidicom.WsiDicom.open(files)
    except Exception as exc:
        raise ImageReadError(path, f"wsidicom cannot open the slide ({type(exc).__name__}: {exc})") from exc
    try:
        levels = []
        for lvl in wsi.levels:
            tile = lvl.tile_size
            levels.append(RegionLevel((lvl.size.height, lvl.size.width, 3), np.uint8,
                                      _reader(path, wsi, lvl.level), chunks=(tile.height, tile.width)))
        src = ImageSource(path, levels, "YXC", "YXC", backend="wsidicom", closer=wsi.close,
                          associated=lambda: _associated(wsi))
        # DICOM pyramid levels are exact powers of two (sizes rounded up), as wsidicom numbers them
        src.downsamples = [float(2 ** lvl.level) for lvl in wsi.levels]
        mpp = wsi.levels.base_level.mpp  # µm per pixel (wsidicom names the type SizeMm)
        if mpp is not None and mpp.width and mpp.height:
            src.pixel_size_um = float(np.mean([float(mpp.width), float(mpp.height)]))
            src.pixel_size_source = "DICOM PixelSpacing"
        try:
            src.icc_profile = wsi.metadata.pyramid.optical_paths[0].icc_profile or None
        except (AttributeError, IndexError):
            src.icc_profile = None
        return src
    except Exception as exc:
        fail_opening(path, wsi, "the DICOM slide's structure", exc)


def _reader(path: Path, wsi, level: int):
    def read(y0: int, x0: int, h: int, w: int) -> np.ndarray:
        try:
            a = wsi.read_region((x0, y0), level, (w, h), as_array=True)
        except Exception as exc:
            raise ImageReadError(path, f"cannot read pixels ({type(exc).__name__}: {exc}); "
                                       "the file may be truncated or corrupt") from exc
        return np.ascontiguousarray(np.asarray(a)[..., :3])

    return read


def _associated(wsi) -> dict:
    out = {}
    if wsi.labels:
        out["label"] = lambda: np.asarray(wsi.read_label().convert("RGB"))
    if wsi.overviews:
        out["macro"] = lambda: np.asarray(wsi.read_overview().convert("RGB"))
    # a stored thumbnail is optional in DICOM; wsidicom builds one from the pyramid otherwise
    out["thumbnail"] = lambda: np.asarray(wsi.read_thumbnail((512, 512)).convert("RGB"))
    return out
