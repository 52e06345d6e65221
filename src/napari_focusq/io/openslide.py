"""OpenSlide backend: MRXS, SCN, BIF, VMS/VMU, Philips TIFF, DICOM and any TIFF OpenSlide reads.

Pixels come back as OpenSlide gives them (premultiplied RGBA) composited onto white, so
areas a scanner did not image read as empty glass rather than black; the pyramid, the
pixel size (``openslide.mpp-x/y``), the side pictures and the ICC profile come from the
slide's properties.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_focusq.errors import ImageReadError
from napari_focusq.io.extras import require_for_file
from napari_focusq.io.lazy import RegionLevel


def open_openslide(path: Path):
    """Open ``path`` with OpenSlide as an :class:`~napari_focusq.io.source.ImageSource`."""
    from napari_focusq.io.source import ImageSource
    from napari_focusq.io.tiff import _um

    openslide = require_for_file(path, "openslide", "openslide", "this format through OpenSlide")
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise ImageReadError(path, "OpenSlide does not recognise this file as a slide") from exc
    except Exception as exc:  # OpenSlideError: a file it knows but cannot parse
        raise ImageReadError(path, f"OpenSlide cannot read it ({type(exc).__name__}: {exc})") from exc
    try:
        levels = []
        tile = _tile_size(slide)
        true_sizes = _philips_sizes(slide.properties)
        for i, (w, h) in enumerate(slide.level_dimensions):
            if i < len(true_sizes):  # Philips pads each level to whole tiles; the XML has the real size
                h, w = min(h, true_sizes[i][0]), min(w, true_sizes[i][1])
            levels.append(RegionLevel((h, w, 3), np.uint8, _reader(path, slide, i), chunks=tile))
        src = ImageSource(path, levels, "YXC", "YXC", backend="openslide", closer=slide.close,
                          associated=lambda: {k: (lambda k=k: _rgb(slide.associated_images[k]))
                                              for k in slide.associated_images})
        # OpenSlide's own downsamples are exact where sizes were rounded
        src.downsamples = [float(d) for d in slide.level_downsamples]
        props = slide.properties
        mpp = [_um(props.get(k), "µm") for k in ("openslide.mpp-x", "openslide.mpp-y")]
        mpp = [m for m in mpp if m]
        if mpp:
            src.pixel_size_um, src.pixel_size_source = float(np.mean(mpp)), "OpenSlide MPP"
        elif (px := _philips_spacing_um(props)) is not None:
            src.pixel_size_um, src.pixel_size_source = px, "Philips DICOM_PIXEL_SPACING"
        profile = slide.color_profile
        if profile is not None:
            src.icc_profile = profile.tobytes()
        return src
    except Exception:
        slide.close()
        raise


_PHILIPS_REP = "philips.PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE[{}].{}"


def _philips_sizes(props) -> list[tuple[int, int]]:
    """(rows, columns) of each level as Philips' XML states them (empty for other vendors)."""
    out = []
    while True:
        i = len(out)
        try:
            out.append((int(props[_PHILIPS_REP.format(i, "PIIM_PIXEL_DATA_REPRESENTATION_ROWS")]),
                        int(props[_PHILIPS_REP.format(i, "PIIM_PIXEL_DATA_REPRESENTATION_COLUMNS")])))
        except (KeyError, ValueError):
            return out


def _philips_spacing_um(props) -> float | None:
    """Level-0 pixel size from Philips' DICOM_PIXEL_SPACING ('"row mm" "col mm"')."""
    raw = props.get(_PHILIPS_REP.format(0, "DICOM_PIXEL_SPACING")) or props.get("philips.DICOM_PIXEL_SPACING")
    if not raw:
        return None
    try:
        vals = [float(v.strip('"')) * 1e3 for v in raw.split()]
    except ValueError:
        return None
    vals = [v for v in vals if np.isfinite(v) and v > 0]
    return float(np.mean(vals)) if vals else None


def _tile_size(slide) -> tuple[int, int]:
    p = slide.properties
    try:
        return int(p["openslide.level[0].tile-height"]), int(p["openslide.level[0].tile-width"])
    except (KeyError, ValueError):
        return 512, 512


def _reader(path: Path, slide, level: int):
    ds = float(slide.level_downsamples[level])

    def read(y0: int, x0: int, h: int, w: int) -> np.ndarray:
        try:
            # OpenSlide places a region by its level-0 corner
            im = slide.read_region((int(round(x0 * ds)), int(round(y0 * ds))), level, (w, h))
        except Exception as exc:
            raise ImageReadError(path, f"cannot read pixels ({type(exc).__name__}: {exc}); "
                                       "the file may be truncated or corrupt") from exc
        return _onto_white(np.asarray(im))

    return read


def _onto_white(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA -> RGB over white (unscanned areas are transparent)."""
    rgb = rgba[..., :3]
    a = rgba[..., 3]
    if a.min() == 255:
        return np.ascontiguousarray(rgb)
    out = rgb.astype(np.uint16) + (255 - a[..., None]).astype(np.uint16)
    return np.minimum(out, 255).astype(np.uint8)


def _rgb(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"))
