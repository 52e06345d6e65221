"""The usable-tissue mask PNG of ``focusq score`` and its downsample rule.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

from napari_focusq._atomic import write_bytes
from napari_focusq.config import DEFAULT_THRESHOLD_UM
from napari_focusq.scoring.focusmap import FocusMap

#: Columns of ``results.tsv``, in order. New columns go at the end, so a table written by
#: an older version (whose header is a prefix of this one) can be upgraded in place.
#: ``tiles`` counts the whole tile grid, glass included; ``tissue_tiles`` the tiles with
#: enough tissue to be scored, over which the defocus figures and ``excluded_pct`` are
#: taken (``tissue_pct`` = 100 * tissue_tiles / tiles).


#: Longest side of the usable-tissue PNG; whole slides are rendered coarser than level 0.
MASK_MAX_PX = 4096


def mask_downsample(image_shape, max_px: int = MASK_MAX_PX) -> int:
    """Smallest integer downsample that keeps the longer side within ``max_px``."""
    return max(1, math.ceil(max(image_shape) / max_px))


def write_mask_png(fmap: FocusMap, path, *, threshold_um: float = DEFAULT_THRESHOLD_UM,
                   excluded=None, max_px: int = MASK_MAX_PX) -> Path:
    """Write the usable-tissue mask (255 = usable) as a PNG of at most ``max_px`` a side.

    The downsample from level-0 pixels is recorded in the PNG text chunk ``downsample``
    (with ``pixel_size_um`` of the PNG's pixels), so the mask can be laid back on the slide.
    """
    from PIL import Image, PngImagePlugin

    ds = mask_downsample(fmap.image_shape, max_px)
    m = fmap.pixel_mask(threshold_um, excluded, downsample=ds)
    info = PngImagePlugin.PngInfo()
    info.add_text("downsample", str(ds))
    info.add_text("pixel_size_um", repr(fmap.pixel_size_um * ds))
    info.add_text("image_shape", json.dumps(list(fmap.image_shape)))
    info.add_text("software", "napari-focusq")
    buf = io.BytesIO()
    Image.fromarray(m, mode="L").save(buf, format="PNG", pnginfo=info, optimize=True)
    return write_bytes(path, buf.getvalue())
