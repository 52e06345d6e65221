"""Zeiss CZI backend (pylibCZIrw, Zeiss's own libCZI).

The whole mosaic (all scenes) is read as one plane per z; pyramid levels are libCZI's
zoomed reads at 1/2, 1/4, ... (served from the file's pyramid subblocks where the scanner
wrote them). Channels: one BGR24/BGRA32 channel is returned as RGB; several grey channels
are stacked channels-last. Time series and multi-position files without a mosaic layout
(T > 1) are refused, like every other backend.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from napari_focusq.errors import ImageReadError
from napari_focusq.io.extras import require_for_file
from napari_focusq.io.lazy import RegionLevel
from napari_focusq.io.source import fail_opening

#: smallest side a virtual pyramid level is made for
_MIN_LEVEL_SIDE = 1024
_GREY = {"Gray8": np.uint8, "Gray16": np.uint16, "Gray32Float": np.float32}
_COLOUR = {"Bgr24": np.uint8, "Bgra32": np.uint8, "Bgr48": np.uint16}


def open_czi(path: Path):
    """Open a CZI file as an :class:`~napari_focusq.io.source.ImageSource`."""
    from napari_focusq.io.source import ImageSource
    from napari_focusq.io.tiff import _um

    czi = require_for_file(path, "pylibCZIrw.czi", "czi", "Zeiss CZI")
    try:
        doc = czi.CziReader(str(path))
    except Exception as exc:
        raise ImageReadError(path, f"not a readable CZI ({type(exc).__name__}: {exc})") from exc
    try:
        box = doc.total_bounding_box
        rect = doc.total_bounding_rectangle
        nt = box.get("T", (0, 1))[1] - box.get("T", (0, 1))[0]
        if nt > 1:
            raise ImageReadError(path, f"has axes focusq cannot use (T={nt}): it reads 2-D images and "
                                       "z-stacks with optional channels; save a single time point")
        z0, z1 = box.get("Z", (0, 1))
        c0, c1 = box.get("C", (0, 1))
        types = [doc.pixel_types.get(c) for c in range(c0, c1)]
        if len(types) == 1 and types[0] in _COLOUR:
            dtype, nc, colour = _COLOUR[types[0]], 3, True
        elif types and all(t in _GREY for t in types) and len({_GREY[t] for t in types}) == 1:
            dtype, nc, colour = _GREY[types[0]], len(types), False
        else:
            raise ImageReadError(path, f"has channel pixel types focusq does not read together: {types}")
        nz = z1 - z0
        H, W = rect.h, rect.w
        ds_list = [1]
        while max(H, W) / (ds_list[-1] * 2) >= _MIN_LEVEL_SIDE:
            ds_list.append(ds_list[-1] * 2)
        levels = []
        lock = threading.Lock()
        for ds in ds_list:
            h, w = -(-H // ds), -(-W // ds)
            reader = _reader(path, doc, lock, rect, ds, z0, c0, nc, colour)
            shape = ((nz,) if nz > 1 else ()) + (h, w) + ((nc,) if nc > 1 else ())
            if nz > 1:
                levels.append(RegionLevel(shape, dtype, reader, stack=True))
            else:
                levels.append(RegionLevel(shape, dtype, lambda y, x, hh, ww, r=reader: r(0, y, x, hh, ww)))
        axes = ("Z" if nz > 1 else "") + "YX" + ("C" if nc > 1 else "")
        src = ImageSource(path, levels, axes, axes, backend="pylibCZIrw", closer=doc.close)
        src.downsamples = [float(d) for d in ds_list]
        px, dz = _czi_scaling(doc, _um)
        if px:
            src.pixel_size_um, src.pixel_size_source = px, "CZI Scaling"
        src.z_spacing_um = dz if nz > 1 else None
        return src
    except Exception as exc:
        fail_opening(path, doc, "the CZI structure", exc)


def _czi_scaling(doc, um) -> tuple[float | None, float | None]:
    """(pixel µm, z spacing µm) from the document's Scaling/Items/Distance (metres)."""
    try:
        items = doc.metadata["ImageDocument"]["Metadata"]["Scaling"]["Items"]["Distance"]
    except (KeyError, TypeError):
        return None, None
    items = items if isinstance(items, list) else [items]
    d = {i.get("@Id"): um(i.get("Value"), "m") for i in items if isinstance(i, dict)}
    xy = [v for v in (d.get("X"), d.get("Y")) if v]
    return (float(np.mean(xy)) if xy else None), d.get("Z")


def _reader(path: Path, doc, lock: threading.Lock, rect, ds: int, z0: int, c0: int, nc: int, colour: bool):
    """read(z, y0, x0, h, w) in this level's pixels (one read at a time per document)."""

    def read(z: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        # libCZI reads in level-0 coordinates and scales by `zoom`
        roi = (rect.x + x0 * ds, rect.y + y0 * ds, w * ds, h * ds)
        try:
            planes = []
            # the scorer decodes tiles in threads; libCZI's reader is not documented as thread-safe
            with lock:
                for c in range(nc if not colour else 1):
                    planes.append(doc.read(roi=roi, plane={"Z": z0 + z, "C": c0 + c, "T": 0},
                                           zoom=None if ds == 1 else 1.0 / ds))
        except Exception as exc:
            raise ImageReadError(path, f"cannot read pixels ({type(exc).__name__}: {exc}); "
                                       "the file may be truncated or corrupt") from exc
        if colour:
            out = planes[0][..., 2::-1]  # BGR(A) -> RGB
        else:
            out = np.concatenate([p[..., :1] for p in planes], axis=-1)
            out = out[..., 0] if nc == 1 else out
        return np.ascontiguousarray(out[:h, :w])

    return read
