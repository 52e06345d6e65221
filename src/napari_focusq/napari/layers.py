"""Grid geometry and layer settings for the heatmap and exclusion layers (pure; no Qt).

napari puts the centre of data pixel ``k`` at world ``k * scale + translate``, so pixel
``k`` covers data coordinates ``[k - 0.5, k + 0.5]``. A tile starting at level-0 pixel
edge ``origin + r * t`` therefore starts at data coordinate ``origin + r*t - 0.5`` of the
image layer, and its centre sits at ``origin + (r + 0.5) * t - 0.5``. The heatmap puts
one pixel per tile, so its pixel ``r`` must be centred there:

    heat_scale     = t * image_scale
    heat_translate = image_translate + (origin + t/2 - 1/2) * image_scale
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

HEATMAP_NAME = "Defocus (µm)"
EXCLUDED_NAME = "Excluded tiles"
CERTAINTY_NAME = "Certainty"
BEST_PLANE_NAME = "Best plane"
ALL_IN_FOCUS_NAME = "All in focus"
PREVIEW_NAME = "Deblurred preview (not data)"
ROI_NAME = "Region of interest"
#: metadata["focusq"] of layers the widget derives from a result; never offered for scoring.
DERIVED = ("heatmap", "excluded", "certainty", "best_plane", "preview", "hatch", "heatmap_edge")
#: Fixed colour range of the heatmap, µm (so colours mean the same on every slide).
CONTRAST_UM = (0.0, 6.0)
#: Defocus colour map: (µm, RGBA). Transparent at focus, so in-focus tissue stays unshaded,
#: growing through pale yellow and orange to a dark purple warning. Lightness falls
#: monotonically (like the upper half of "plasma"), so the order reads without hue: safe
#: for red-green colour blindness; no blue, which is kept for exclusions.
DEFOCUS_STOPS = (
    (0.0, (1.00, 0.95, 0.60, 0.00)),
    (0.5, (1.00, 0.92, 0.45, 0.05)),
    (1.0, (0.99, 0.85, 0.30, 0.30)),
    (2.0, (0.96, 0.58, 0.10, 0.55)),
    (3.5, (0.80, 0.22, 0.35, 0.72)),
    (6.0, (0.50, 0.02, 0.45, 0.85)),
)
COLORMAP_NAME = "defocus (clear at focus)"
EXCLUDED_LABEL = 1
#: Excluded tiles: Okabe-Ito sky blue outlines and hatching, a hue the defocus map never uses.
EXCLUDED_RGBA = (0.34, 0.71, 0.91, 1.0)
HATCH_NAME = "Excluded (hatched)"
#: Hatch pixels per tile side (outline 1 px, diagonal lines every HATCH_STEP px).
HATCH_PX, HATCH_STEP = 24, 7
#: Key that switches between the tissue alone and the overlay.
TOGGLE_KEY = "h"


def defocus_colormap():
    """The heatmap's napari Colormap (see :data:`DEFOCUS_STOPS`), over :data:`CONTRAST_UM`."""
    from napari.utils.colormaps import Colormap

    lo, hi = CONTRAST_UM
    return Colormap(colors=[c for _, c in DEFOCUS_STOPS],
                    controls=[(v - lo) / (hi - lo) for v, _ in DEFOCUS_STOPS], name=COLORMAP_NAME)


def grid_geometry(image_scale: Iterable[float], image_translate: Iterable[float],
                  tile_size_px: float, origin_px: Iterable[float] = (0.0, 0.0)) -> tuple[tuple, tuple]:
    """Scale and translate (y, x) of a one-pixel-per-tile layer over an image layer.

    Parameters
    ----------
    image_scale, image_translate
        The image layer's last two (y, x) scale and translate entries (world units per
        level-0 pixel, usually µm).
    tile_size_px
        Tile edge in level-0 pixels.
    origin_px
        Level-0 pixel edge (y, x) where tile (0, 0) starts.

    Returns
    -------
    (scale, translate)
        Tuples of two floats for the heatmap / labels layer.
    """
    s = [float(v) for v in list(image_scale)[-2:]]
    tr = [float(v) for v in list(image_translate)[-2:]]
    o = [float(v) for v in origin_px]
    t = float(tile_size_px)
    scale = tuple(t * si for si in s)
    translate = tuple(tri + (oi + t / 2 - 0.5) * si for si, tri, oi in zip(s, tr, o))
    return scale, translate


def tile_centre_world(row: float, col: float, scale, translate) -> tuple[float, float]:
    """World (y, x) of tile (row, col)'s centre on a grid layer."""
    return (translate[0] + row * scale[0], translate[1] + col * scale[1])


def world_to_tile(world_yx: Iterable[float], scale, translate, grid_shape) -> tuple[int, int] | None:
    """The (row, col) of the grid cell under a world (y, x) position, or None outside the grid."""
    y, x = [float(v) for v in list(world_yx)[-2:]]
    r = math.floor((y - translate[0]) / scale[0] + 0.5)
    c = math.floor((x - translate[1]) / scale[1] + 0.5)
    rows, cols = grid_shape
    return (r, c) if 0 <= r < rows and 0 <= c < cols else None


def fill_tiles(grid: np.ndarray, tiles: Iterable, tissue: np.ndarray | None = None) -> tuple[slice, slice] | None:
    """Write ``(row, col, defocus_um, tissue_fraction)`` events into ``grid`` in place.

    Returns the bounding (rows, cols) slices that changed (None if nothing did), so a
    caller can refresh only that part.
    """
    rr, cc = [], []
    for r, c, d, *rest in tiles:
        grid[r, c] = np.nan if d is None else d
        if tissue is not None and rest:
            tissue[r, c] = rest[0]
        rr.append(r)
        cc.append(c)
    if not rr:
        return None
    return slice(min(rr), max(rr) + 1), slice(min(cc), max(cc) + 1)


def heatmap_kwargs(scale, translate) -> dict:
    """Layer keyword arguments of the heatmap (Image layer, µm, fixed limits)."""
    return {
        "name": HEATMAP_NAME,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "colormap": defocus_colormap(),
        "contrast_limits": CONTRAST_UM,
        "opacity": 1.0,  # the colour map carries the transparency
        "blending": "translucent",
        "interpolation2d": "nearest",
        "units": ("µm", "µm"),
        "metadata": {"focusq": "heatmap"},
    }


def excluded_kwargs(scale, translate) -> dict:
    """Layer keyword arguments of the exclusion Labels layer on the same grid."""
    from napari.utils.colormaps import DirectLabelColormap

    return {
        "name": EXCLUDED_NAME,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "colormap": DirectLabelColormap(color_dict={None: "transparent", 0: "transparent",
                                                    EXCLUDED_LABEL: EXCLUDED_RGBA}),
        # the state of the review (clicks, undo); what is seen is the hatch layer over it
        "opacity": 0.0,
        "units": ("µm", "µm"),
        "metadata": {"focusq": "excluded"},
    }


def hatch_rgba(excluded: np.ndarray, fmap=None, k: int = HATCH_PX, step: int = HATCH_STEP,
               rgba=EXCLUDED_RGBA) -> np.ndarray:
    """Excluded tiles drawn as outlines plus diagonal hatching, ``k`` pixels per tile (RGBA uint8).

    Only the outline of each excluded region is drawn (no line between two excluded
    tiles), and with ``fmap`` nothing beyond the image's edge: partial edge tiles are
    drawn only over the slide.
    """
    ex = np.asarray(excluded, bool)
    rows, cols = ex.shape
    big = np.repeat(np.repeat(ex, k, 0), k, 1)
    yy, xx = np.mgrid[0:rows * k, 0:cols * k]
    hatch = ((yy + xx) % step) == 0
    pad = np.pad(ex, 1)
    edge = np.zeros((rows * k, cols * k), bool)
    iy, ix = yy % k, xx % k
    r, c = yy // k + 1, xx // k + 1
    edge |= (iy == 0) & ~pad[r - 1, c]
    edge |= (iy == k - 1) & ~pad[r + 1, c]
    edge |= (ix == 0) & ~pad[r, c - 1]
    edge |= (ix == k - 1) & ~pad[r, c + 1]
    on = big & (hatch | edge)
    if fmap is not None:  # clip to the image: only hatch pixels wholly on it (never beyond the edge)
        oy, ox = fmap.origin_px
        t = float(fmap.tile_size_px)
        H, W = fmap.image_shape
        py = oy + np.arange(rows * k + 1) * t / k  # pixel edges, level-0
        px = ox + np.arange(cols * k + 1) * t / k
        on &= ((py[:-1] >= 0) & (py[1:] <= H))[:, None] & ((px[:-1] >= 0) & (px[1:] <= W))[None, :]
    out = np.zeros((rows * k, cols * k, 4), np.uint8)
    out[on] = (np.asarray(rgba) * 255).astype(np.uint8)
    return out


def hatch_geometry(scale, translate, k: int = HATCH_PX) -> tuple[tuple, tuple]:
    """Scale and translate of the hatch layer (``k`` pixels per tile) over a tile-grid layer."""
    s = tuple(float(v) / k for v in scale)
    tr = tuple(float(t) - float(v) / 2 + float(v) / (2 * k) for t, v in zip(translate, scale))
    return s, tr


def certainty_kwargs(scale, translate) -> dict:
    """Per-tile certainty in [0, 1] on the heatmap's grid (hidden until asked for)."""
    return {"name": CERTAINTY_NAME, "scale": tuple(scale), "translate": tuple(translate), "colormap": "viridis",
            "contrast_limits": (0.0, 1.0), "opacity": 0.6, "interpolation2d": "nearest", "visible": False,
            "units": ("µm", "µm"), "metadata": {"focusq": "certainty"}}


def best_plane_kwargs(scale, translate, n_planes: int) -> dict:
    """Per-tile index of the sharpest plane of a z-stack (NaN where no plane has tissue).

    "magma" (black through purple and orange to pale yellow) has no blue, so no plane
    looks like the sky-blue exclusions; its colour bar, shown with the layer, is the legend.
    """
    return {"name": BEST_PLANE_NAME, "scale": tuple(scale), "translate": tuple(translate), "colormap": "magma",
            "contrast_limits": (0.0, float(max(n_planes - 1, 1))), "opacity": 0.6, "interpolation2d": "nearest",
            "visible": False, "units": ("µm", "µm"), "metadata": {"focusq": "best_plane"}}


def region_translate(image_scale, image_translate, y0: int, x0: int) -> tuple[float, float]:
    """Translate (y, x) that puts pixel (0, 0) of a crop at level-0 pixel (y0, x0) of the image layer."""
    s = [float(v) for v in list(image_scale)[-2:]]
    tr = [float(v) for v in list(image_translate)[-2:]]
    return (tr[0] + y0 * s[0], tr[1] + x0 * s[1])


def threshold_mask(defocus_um: np.ndarray, threshold_um: float) -> np.ndarray:
    """Labels (uint8) of scored tiles further from focus than the threshold."""
    with np.errstate(invalid="ignore"):
        ex = np.isfinite(defocus_um) & (defocus_um > threshold_um)
    return ex.astype(np.uint8) * EXCLUDED_LABEL


def no_result_reason(fmap) -> str:
    """Why a map has no scored tile, in words a user can act on."""
    h, w = fmap.image_shape
    px, t = float(fmap.pixel_size_um), float(fmap.tile_size_px)
    if h < t or w < t:
        return (f"the image ({w * px:.0f} × {h * px:.0f} µm) is smaller than one {t * px:.0f} µm tile; "
                "the model needs whole tiles at its working resolution, so nothing could be scored")
    return "no tile has enough tissue to score (is this glass, or the wrong modality?)"


def summary_text(s: dict, threshold_um: float, reason: str | None = None) -> str:
    """One short paragraph of :meth:`FocusMap.summary` figures for the widget.

    The pooled score (tissue- and information-weighted, worst tiles emphasised) is shown
    beside the plain tissue-weighted mean; uncertain tiles are counted but not excluded.
    With no scored tile there is no verdict ("no result", never FAIL) and ``reason`` says why.
    """
    if "tissue_tiles" in s and not s["tissue_tiles"]:
        return "No result: " + (reason or "no tile has enough tissue to score") + "."
    def um(v):
        return "–" if v is None or not np.isfinite(v) else f"{v:.2f} µm"

    def pct(v):
        return "–" if v is None or not np.isfinite(v) else f"{v:.1f} %"

    verdict = "PASS" if s.get("pass") else "FAIL"
    line1 = f"Tissue {s.get('tissue_pct', 0):.1f} % of {s.get('tiles', 0)} tiles · excluded {pct(s.get('excluded_pct'))}"
    unc = s.get("uncertain_pct")
    if unc is not None and np.isfinite(unc):
        line1 += f" · uncertain {pct(unc)} (kept)"
    lines = [line1, f"median {um(s.get('median_um'))} · 90th pct {um(s.get('p90_um'))} · "
                    f"slide {verdict} (90th pct ≤ {threshold_um:g} µm)"]
    if "pooled_um" in s or "mean_um" in s:
        lines.append(f"pooled {um(s.get('pooled_um'))} · mean {um(s.get('mean_um'))}")
    return "\n".join(lines)


def layer_pixel_size_um(layer) -> float | None:
    """Level-0 pixel size of an image layer in µm, from its metadata or its µm scale."""
    md = getattr(layer, "metadata", {}) or {}
    px = md.get("pixel_size_um")
    if px:
        return float(px)
    units = getattr(layer, "units", None)
    if units is not None and len(units) and str(units[-1]) in ("micrometer", "µm", "um"):
        return float(layer.scale[-1])
    return None


def set_layer_pixel_size(layer, px_um: float) -> None:
    """Record a typed pixel size on an image layer: metadata, (y, x) scale and units in µm.

    Kept on the layer itself, so it survives the widget's list being rebuilt and every
    layer keeps its own.
    """
    md = dict(layer.metadata or {})
    md["pixel_size_um"] = float(px_um)
    layer.metadata = md
    scale = list(layer.scale)
    scale[-2:] = [float(px_um), float(px_um)]
    layer.scale = scale
    units = [str(u) for u in layer.units]
    units[-2:] = ["µm", "µm"]
    try:
        layer.units = units
    except (ValueError, TypeError):  # older napari without units: the scale still says µm
        pass


def grid_units(image_layer) -> tuple:
    """(y, x) units of the result layers: the image's own, so napari sees one unit everywhere."""
    units = getattr(image_layer, "units", None)
    return tuple(str(u) for u in units[-2:]) if units is not None and len(units) >= 2 else ("µm", "µm")


def spatial_ndim(layer) -> int:
    """Number of non-channel axes of an image layer."""
    return layer.ndim


def level0(layer):
    """Level-0 array of an image layer (``data[0]`` when multiscale)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def is_stack(layer) -> bool:
    """True for an image layer with a z (or any leading) axis before (y, x)."""
    return layer.ndim >= 3


def shown_plane(viewer, layer) -> int:
    """Index of the plane of stack ``layer`` shown on the viewer's z slider.

    The slider holds a world position; the layer's plane is found through its own
    translate and scale (the slider's step number is not a plane of a stack translated
    in z, or of one beside another stack). Clipped to the stack.
    """
    world_axis = viewer.dims.ndim - layer.ndim
    z = round((viewer.dims.point[world_axis] - layer.translate[0]) / layer.scale[0])
    return int(min(max(z, 0), level0(layer).shape[0] - 1))


def show_plane(viewer, layer, z: int) -> None:
    """Move the viewer's z slider to plane ``z`` of stack ``layer`` (the inverse of :func:`shown_plane`)."""
    world_axis = viewer.dims.ndim - layer.ndim
    viewer.dims.set_point(world_axis, layer.translate[0] + z * layer.scale[0])
