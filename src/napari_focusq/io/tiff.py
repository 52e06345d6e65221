"""The tifffile backend: TIFF, BigTIFF, OME-TIFF, Aperio SVS, Hamamatsu NDPI.

Read through tifffile's zarr store, so a region reads only the tiles it touches (regions of
a tiled 2-D level are decoded straight from the file, tiff_tiles.py); axes are
mapped to the canonical ones and the pixel size is taken from OME, Philips, ImageJ or
resolution-tag metadata.
"""
from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from napari_focusq.errors import ImageReadError
from napari_focusq.io.source import ImageSource, fail_opening
from napari_focusq.io.tiff_tiles import tile_reader

# Series that hold a slide's overview pictures rather than the scan itself.
_SIDE_SERIES = {"thumbnail", "label", "macro"}
# Factors from a length unit to µm (OME UnitsLength spellings and ImageJ's).
_UM_PER_UNIT = {
    "m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0,
    "\\u00b5m": 1.0, "nm": 1e-3, "pm": 1e-6, "å": 1e-4, "Å": 1e-4, "angstrom": 1e-4,
}
# TIFF resolution tags are often a program's default rather than a calibration: 72 and 96 dpi
# are image-editor defaults and give pixels of hundreds of µm. Nothing a focus model can use
# is coarser than this, so larger values from resolution tags are treated as unknown.
_MAX_TAG_PIXEL_UM = 20.0
_MIN_TAG_PIXEL_UM = 0.01


def _canonical_axes(path: Path, axes: str, shape: tuple) -> tuple[str, str]:
    """Map a file's axes to canonical ones: (one letter per stored axis, canonical axes)."""
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(path, f"has no Y and X axes (axes {axes!r}, shape {shape})")
    # positions, not letters: unnamed axes ("Q") can repeat
    big = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    letters = [axes[i] for i in big]
    if "C" in letters and "S" in letters:
        raise ImageReadError(path, f"has both channels and samples per pixel (axes {axes!r}, "
                                   f"shape {shape}); save one channel layout")
    unknown = [i for i in big if axes[i] not in "ZCS"]
    zpos = [i for i in big if axes[i] == "Z"]
    if not zpos and len(unknown) == 1 and axes[unknown[0]] in "QI":
        # plain multi-page TIFFs (and tifffile's "shaped" files) stack planes without naming
        # the axis; a stack of same-size planes is read as z
        zpos, unknown = unknown, []
    if unknown:
        names = ", ".join(f"{axes[i]}={shape[i]}" for i in unknown)
        raise ImageReadError(path, f"has axes focusq cannot use ({names}; axes {axes!r}, shape {shape}): "
                                   "it reads 2-D images and z-stacks with optional channels; "
                                   "save a single time point / position")
    raw = "".join(
        a if a in "YX" else "Z" if i in zpos else "C" if i in big else "-"
        for i, a in enumerate(axes)
    )
    canon = ("Z" if "Z" in raw else "") + "YX" + ("C" if "C" in raw else "")
    return raw, canon


def _open_tiff(path: Path) -> ImageSource:
    import tifffile
    import zarr

    warnings = _Collect()
    logging.getLogger("tifffile").addHandler(warnings)
    try:
        tf = tifffile.TiffFile(path)
    except Exception as exc:
        logging.getLogger("tifffile").removeHandler(warnings)
        raise ImageReadError(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    try:
        try:
            series = _pick_series(path, tf)
        except ImageReadError:
            _raise_if_truncated(path, tf, warnings.messages)
            raise
        finally:
            logging.getLogger("tifffile").removeHandler(warnings)
        # tifffile reads a broken chain of IFDs as a shorter file and only logs it
        _raise_if_truncated(path, tf, warnings.messages)
        raw, canon = _canonical_axes(path, series.axes, series.shape)
        _check_not_truncated(path, tf, series)
        raw_levels, readers = [], []
        # tifffile decodes a region's tiles on zarr's one I/O thread unless it has more than
        # two workers, which it gives itself only on 6+ cores: on 2 cores every JPEG tile of
        # a strip was decoded in turn. Compressed tiles get at least two, which tifffile
        # decodes through threads (uncompressed ones are left as tifffile sets them) (A/B, 105 Mpx
        # pyramid, loaded machine: decode 6.16/3.83 -> 3.58/2.60 s, score_slide
        # 10.38/7.96 -> 6.43/5.01 s).
        kf = series.keyframe
        workers = max(2, kf.maxworkers) if kf.compression != 1 and kf.maxworkers else None
        for i in range(len(series.levels)):
            arr = zarr.open(series.aszarr(level=i, maxworkers=workers), mode="r")
            if not hasattr(arr, "shape"):  # a group: should not happen for one level
                raise ImageReadError(path, f"level {i} did not open as an array")
            raw_levels.append(arr)
            readers.append(tile_reader(tf, series.levels[i]) if raw in ("YX", "YXC") else None)
        page = series.keyframe
        drop_alpha = (
            "S" in series.axes and raw[series.axes.index("S")] == "C"
            and raw_levels[0].shape[series.axes.index("S")] == 4
            and page.photometric == tifffile.PHOTOMETRIC.RGB
        )
        src = ImageSource(path, raw_levels, raw, canon, drop_alpha=drop_alpha, tiff=tf,
                          associated=lambda: _tiff_associated(tf),
                          region_readers=[r.region if r is not None else None for r in readers])
        icc = page.tags.get(34675)  # InterColorProfile
        src.icc_profile = bytes(icc.value) if icc is not None and icc.value else None
        src.pixel_size_um, src.pixel_size_source, src.z_spacing_um = _tiff_pixel_size(tf, series)
        if tf.is_ome and tf.ome_metadata:
            from napari_focusq.optics.user import ome_objective

            src.objective = ome_objective(tf.ome_metadata, tf.series.index(series))
        if src.n_z == 1:
            src.z_spacing_um = None
        return src
    except Exception as exc:
        fail_opening(path, tf, "TIFF structure", exc)


def _raise_if_truncated(path: Path, tf, messages: list[str]) -> None:
    # tifffile logs "invalid page offset N" for a later directory and "invalid offset to
    # first page N" when even the first lies past the end (a file cut before its IFDs, as
    # writers that put the directories last leave it)
    for msg in messages:
        m = re.search(r"invalid (?:page offset|offset to first page) (\d+)", msg)
        if m and int(m.group(1)) >= tf.filehandle.size:
            raise ImageReadError(path, f"file is truncated: its {'first' if 'first' in msg else 'next'} "
                                       f"image directory is at byte {int(m.group(1)):,} but the file "
                                       f"has only {tf.filehandle.size:,} bytes")


class _Collect(logging.Handler):
    """Keeps the messages tifffile logs while a file is opened."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _pick_series(path: Path, tf):
    """The scan itself: the largest series by plane area, skipping overview pictures."""
    best, best_area = None, -1
    for s in tf.series:
        if (s.name or "").strip().lower() in _SIDE_SERIES:
            continue
        sizes = dict(zip(s.axes, s.shape))
        area = sizes.get("Y", 0) * sizes.get("X", 0)
        if area > best_area:
            best, best_area = s, area
    if best is None:
        raise ImageReadError(path, "contains no image series")
    return best


def _tiff_associated(tf) -> dict:
    """{name: reader} for the label / macro / thumbnail series of a slide TIFF."""
    out = {}
    for s in tf.series:
        name = (s.name or "").strip().lower()
        if name in _SIDE_SERIES and name not in out:
            out[name] = s.asarray
    return out


def _check_not_truncated(path: Path, tf, series) -> None:
    """Fail at open time, not mid-run, when image data lie beyond the end of the file."""
    size = tf.filehandle.size
    n = len(series.pages)
    pages = [series.pages[i] for i in (range(n) if n <= 2000 else (0, n - 1))]
    for lvl in series.levels[1:]:
        pages += [lvl.pages[0], lvl.pages[-1]]
    end = 0
    for p in pages:
        if p is None:
            continue
        for off, nbytes in zip(p.dataoffsets, p.databytecounts):
            if nbytes:
                end = max(end, off + nbytes)
    if series.dataoffset is not None:  # contiguous, uncompressed (ImageJ, tifffile "shaped")
        end = max(end, series.dataoffset + series.nbytes)
    if end > size:
        raise ImageReadError(path, f"file is truncated: image data run to byte {end:,} "
                                   f"but the file has only {size:,} bytes")


def _um(value: Any, unit: str | None) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    f = _UM_PER_UNIT.get((unit or "µm").strip(), _UM_PER_UNIT.get((unit or "").strip().lower()))
    if f is None or not math.isfinite(v) or v <= 0:
        return None
    return v * f


def _tiff_pixel_size(tf, series) -> tuple[float | None, str, float | None]:
    """(pixel µm, source, z spacing µm) from OME, Aperio, ImageJ or resolution tags."""
    if tf.is_ome and tf.ome_metadata:
        px, dz = _ome_pixel_size(tf.ome_metadata, tf.series.index(series))
        if px is not None:
            return px, "OME", dz
    page = tf.pages[0]
    desc = page.description or ""
    if tf.is_philips and (px := _philips_pixel_size(tf.philips_metadata)):
        return px, "Philips DICOM_PIXEL_SPACING", None
    if tf.is_svs or desc.startswith("Aperio"):
        m = re.search(r"\bMPP\s*=\s*([0-9.eE+-]+)", desc)
        if m and (px := _um(m.group(1), "µm")):
            return px, "Aperio MPP", None
    dz = None
    ij = tf.imagej_metadata or {}
    ij_unit = str(ij.get("unit", "")).strip()
    if ij_unit and _um(1, ij_unit) and ij.get("spacing"):
        dz = _um(ij["spacing"], ij_unit)
    px = _resolution_um(series.keyframe, ij_unit if ij else None)
    if px is not None:
        return px, "TIFF resolution", dz
    return None, "unknown", dz


def _philips_pixel_size(xml: str | None) -> float | None:
    """Level-0 µm from a Philips TIFF's first DICOM_PIXEL_SPACING ('"row mm" "col mm"')."""
    m = re.search(r'Name="DICOM_PIXEL_SPACING"[^>]*>([^<]+)<', xml or "")
    if not m:
        return None
    vals = [_um(v.strip('"'), "mm") for v in m.group(1).replace("&quot;", '"').split()]
    vals = [v for v in vals if v]
    return float(np.mean(vals)) if vals else None


def _ome_pixel_size(xml: str, index: int) -> tuple[float | None, float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    images = [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Image"]
    if not images:
        return None, None
    image = images[index] if index < len(images) else images[0]
    pixels = next((e for e in image if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None, None
    a = pixels.attrib
    sizes = [_um(a[k], a.get(k + "Unit")) for k in ("PhysicalSizeX", "PhysicalSizeY") if k in a]
    sizes = [s for s in sizes if s]
    px = float(np.mean(sizes)) if sizes else None
    dz = _um(a["PhysicalSizeZ"], a.get("PhysicalSizeZUnit")) if "PhysicalSizeZ" in a else None
    return px, dz


def _resolution_um(page, ij_unit: str | None) -> float | None:
    tags = page.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if not num or not den:
        return None
    per_unit = num / den
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    if unit == 2:
        if per_unit in (1, 72, 96):  # "no resolution" and screen defaults
            return None
        px = 25400.0 / per_unit
    elif unit == 3:
        px = 10000.0 / per_unit
    elif ij_unit and _um(1, ij_unit):  # ImageJ: unit in the description, tag unit "none"
        px = _um(1.0 / per_unit, ij_unit)
    else:
        return None  # dimensionless
    if px is None or not _MIN_TAG_PIXEL_UM <= px <= _MAX_TAG_PIXEL_UM:
        return None
    return px
