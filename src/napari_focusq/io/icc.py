"""ICC colour profiles: convert a slide's stored RGB to sRGB for display.

Scanners embed a profile describing their camera's colours; a viewer that ignores it shows
the slide too dull or too saturated. Only what napari displays is converted: scoring reads
the stored pixels, which is what the focus models were trained on.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _transform(icc: bytes):
    from io import BytesIO

    from PIL import ImageCms

    src = ImageCms.ImageCmsProfile(BytesIO(icc))
    dst = ImageCms.createProfile("sRGB")
    return ImageCms.buildTransform(src, dst, "RGB", "RGB",
                                   renderingIntent=ImageCms.Intent.PERCEPTUAL)


def to_srgb(rgb: np.ndarray, icc: bytes) -> np.ndarray:
    """(…, H, W, 3) uint8 in the profile's colour space -> the same in sRGB."""
    from PIL import Image, ImageCms

    a = np.ascontiguousarray(rgb)
    if a.size == 0:
        return a
    flat = a.reshape(-1, a.shape[-2], 3)  # stacks: planes one under another
    out = np.asarray(ImageCms.applyTransform(Image.fromarray(flat, "RGB"), _transform(icc)))
    return out.reshape(a.shape)


def display_levels(levels: list, icc: bytes) -> list:
    """Lazy sRGB views of RGB pyramid levels (each chunk converted when napari reads it).

    A profile Pillow/LittleCMS cannot parse leaves the levels as stored: an unreadable
    profile must not make the slide unreadable.
    """
    try:
        _transform(icc)
    except Exception:
        return levels
    import dask.array as da

    out = []
    for lvl in levels:
        lazy = lvl if isinstance(lvl, da.Array) else da.from_array(lvl, chunks=getattr(lvl, "chunks", None) or "auto")
        out.append(lazy.map_blocks(to_srgb, icc, dtype=np.uint8))
    return out
