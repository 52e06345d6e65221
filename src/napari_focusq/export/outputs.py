"""Per-input result files (DESIGN.md §1): the heatmap, the overlay, and score_to_outputs, which writes them all.

Every file is written atomically (temporary name beside the target, then renamed), so
an interrupted run never leaves a half-written output behind. The usable-tissue mask is
:mod:`napari_focusq.export.masks`, the run-wide table :mod:`napari_focusq.export.results`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Generator

import numpy as np

from napari_focusq._atomic import atomic_path, write_bytes
from napari_focusq.config import DEFAULT_THRESHOLD_UM, ScoreConfig
from napari_focusq.errors import FocusQError, MissingPixelSizeError

#: Columns of ``results.tsv``, in order. New columns go at the end, so a table written by
#: an older version (whose header is a prefix of this one) can be upgraded in place.
#: ``tiles`` counts the whole tile grid, glass included; ``tissue_tiles`` the tiles with
#: enough tissue to be scored, over which the defocus figures and ``excluded_pct`` are
#: taken (``tissue_pct`` = 100 * tissue_tiles / tiles).
from napari_focusq.export.masks import write_tissue_mask
from napari_focusq.export.results import _clean, append_results, results_row
from napari_focusq.io.formats import MULTI_SUFFIXES
from napari_focusq.progress import Progress
from napari_focusq.scoring.focusmap import FocusMap, feature_id

#: The overlay's colour scale is fixed so overlays of different slides compare by eye.
OVERLAY_LIMITS_UM = (0.0, 6.0)


# ------------------------------------------------------------------------------ names
def unique_stem(path: str | os.PathLike, taken: set) -> str:
    """A file stem for an input's outputs, distinct from every stem in ``taken``.

    ``slide.ome.tif`` and ``slide.svs`` both give ``slide``; a second ``slide`` from a
    different folder becomes ``<folder>_slide`` and, failing that, ``slide_2``, ``slide_3``...
    The chosen stem is added to ``taken``, so a loop over inputs needs nothing else.

    Parameters
    ----------
    path
        The input file.
    taken
        Stems already in use (updated in place).

    Returns
    -------
    str
    """
    p = Path(path)
    name = p.name
    low = name.lower()
    stem = next((name[: -len(s)] for s in MULTI_SUFFIXES if low.endswith(s)), None)
    if stem is None:
        stem = p.stem if p.suffix else name
    stem = re.sub(r"[^\w.+-]+", "_", stem).strip("._") or "input"
    candidates = [stem]
    # abspath, not resolve(): no symlink is followed, so a link loop among the inputs cannot
    # raise here, outside the per-input error handling (issue 19)
    parent = re.sub(r"[^\w.+-]+", "_", Path(os.path.abspath(p)).parent.name).strip("._")
    if parent:
        candidates.append(f"{parent}_{stem}")
    for cand in candidates:
        if cand not in taken:
            taken.add(cand)
            return cand
    k = 2
    while f"{stem}_{k}" in taken:
        k += 1
    taken.add(f"{stem}_{k}")
    return f"{stem}_{k}"


# ---------------------------------------------------------------------------- writers
def _describe(fmap: FocusMap, threshold_um: float) -> dict:
    t = float(fmap.tile_size_px)
    return {
        "software": "napari-focusq",
        "quantity": "defocus",
        "units": "um",
        "tile_size_px": t,
        "tile_um": t * fmap.pixel_size_um,
        "pixel_size_um": fmap.pixel_size_um,
        "origin_px": list(fmap.origin_px),
        "origin_um": [o * fmap.pixel_size_um for o in fmap.origin_px],
        "image_shape": list(fmap.image_shape),
        "grid_shape": list(fmap.shape),
        "model": fmap.model,
        "modality": fmap.modality,
        "threshold_um": threshold_um,
        "source": fmap.source,
        "optics": fmap.extra.get("optics"),
    }


def write_heatmap_tif(fmap: FocusMap, path, *, threshold_um: float = DEFAULT_THRESHOLD_UM) -> Path:
    """Write the tile grid as a float32 OME-TIFF, one pixel per tile, in µm (NaN = no tissue).

    The scale (tile edge in µm) is in the OME ``PhysicalSizeX/Y`` and in the resolution
    tags (pixels per cm); the OME ``Description`` holds a JSON record of the geometry
    (origin, tile size in input pixels, model, modality) needed to map tiles back.
    """
    import tifffile

    tile_um = float(fmap.tile_size_px) * float(fmap.pixel_size_um)
    desc = json.dumps(_describe(fmap, threshold_um), ensure_ascii=True)
    data = np.ascontiguousarray(fmap.defocus_um, dtype=np.float32)
    # The OME UUID from the content, not tifffile's clock-based default: the same map gives the same bytes.
    uid = feature_id(desc, hashlib.sha256(data.tobytes()).hexdigest())
    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(
            tmp, data, ome=True,
            photometric="minisblack",
            resolution=(1e4 / tile_um, 1e4 / tile_um), resolutionunit="CENTIMETER",
            metadata={
                "axes": "YX", "Name": "defocus_um", "Description": desc, "UUID": f"urn:uuid:{uid}",
                "PhysicalSizeX": tile_um, "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": tile_um, "PhysicalSizeYUnit": "µm",
            },
        )
    return Path(path)


def read_heatmap_description(path) -> dict:
    """The JSON geometry record of a ``.heatmap.tif`` written by :func:`write_heatmap_tif`."""
    import xml.etree.ElementTree as ET

    import tifffile

    with tifffile.TiffFile(path) as tf:
        xml = tf.ome_metadata
    if not xml:
        raise ValueError(f"{path}: not an OME-TIFF heatmap written by focusq")
    for e in ET.fromstring(xml).iter():
        if e.tag.rsplit("}", 1)[-1] == "Description" and e.text:
            return json.loads(e.text)
    raise ValueError(f"{path}: the heatmap has no focusq description")


def _to_rgb8(thumb: np.ndarray) -> np.ndarray:
    """A displayable uint8 RGB (or grey) view of any thumbnail (percentile-stretched if needed)."""
    a = np.asarray(thumb)
    if a.ndim == 3 and a.shape[2] not in (3,):
        a = a[..., :3] if a.shape[2] >= 3 else a[..., 0]
    if a.dtype == np.uint8:
        return a
    f = a.astype(np.float32)
    finite = f[np.isfinite(f)]
    lo, hi = (np.percentile(finite, (0.5, 99.8)) if finite.size else (0.0, 1.0))
    f = np.clip((f - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.nan_to_num(f * 255).astype(np.uint8)


def write_overlay_png(fmap: FocusMap, path, *, stem: str, threshold_um: float = DEFAULT_THRESHOLD_UM,
                      excluded=None, thumbnail=None, dpi: int = 100) -> Path:
    """Thumbnail + semi-transparent defocus heatmap + colour bar, excluded tiles hatched.

    The colour scale is fixed (0..6 µm, viridis) so overlays compare across slides; tiles
    without tissue are transparent.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    from napari_focusq.export.polygons import grid_polygons

    H, W = fmap.image_shape
    oy, ox = fmap.origin_px
    t = fmap.tile_size_px
    rows, cols = fmap.shape
    thumb = thumbnail if thumbnail is not None else fmap.extra.get("thumbnail")
    s = fmap.summary(threshold_um, excluded)

    aspect = H / W if W else 1.0
    fig_w = 8.0
    fig = Figure(figsize=(fig_w, min(14.0, max(3.0, fig_w * 0.85 * aspect + 1.2))), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    if thumb is not None:
        ax.imshow(_to_rgb8(thumb), extent=(0, W, H, 0), cmap="gray", interpolation="antialiased")
    else:
        ax.add_patch(matplotlib.patches.Rectangle((0, 0), W, H, color="0.85"))
    grid = np.ma.masked_invalid(fmap.defocus_um)
    im = ax.imshow(grid, extent=(ox, ox + cols * t, oy + rows * t, oy), cmap="viridis",
                   vmin=OVERLAY_LIMITS_UM[0], vmax=OVERLAY_LIMITS_UM[1], alpha=0.55,
                   interpolation="nearest")
    ex = fmap.excluded(threshold_um) if excluded is None else (np.asarray(excluded, bool) & fmap.scored)
    for rings in grid_polygons(ex):
        verts, codes = [], []
        for ring in rings:
            pts = [(ox + c * t, oy + r * t) for r, c in ring]
            verts += pts + [pts[0]]
            codes += [MPath.MOVETO] + [MPath.LINETO] * (len(pts) - 1) + [MPath.CLOSEPOLY]
        ax.add_patch(PathPatch(MPath(verts, codes), facecolor="none", edgecolor="red",
                               hatch="///", linewidth=1.2))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, extend="max")
    cb.set_label("defocus (µm)")
    cb.solids.set_alpha(1.0)  # the bar shows the colour scale, not the blend
    verdict = "pass" if s["pass"] else "fail"
    fmt = (lambda v: "n/a" if not np.isfinite(v) else f"{v:.2f} µm")
    ax.set_title(f"{stem} — {fmap.model}\nmedian {fmt(s['median_um'])}, p90 {fmt(s['p90_um'])}, "
                 f"excluded {s['excluded_pct']:.1f}% (> {threshold_um:g} µm, hatched): {verdict}"
                 if np.isfinite(s["excluded_pct"]) else
                 f"{stem} — {fmap.model}\nno tissue scored", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return write_bytes(path, buf.getvalue())


def write_outputs(fmap: FocusMap, out_dir, stem: str, *, threshold_um: float = DEFAULT_THRESHOLD_UM,
                  excluded=None, thumbnail=None) -> dict[str, Path]:
    """Write every per-input output of ``focusq score`` into ``out_dir``.

    Parameters
    ----------
    fmap
        The scored map.
    out_dir
        Existing or new folder.
    stem
        File stem (see :func:`unique_stem`).
    threshold_um
        Tiles further from focus are excluded (unless ``excluded`` is given).
    excluded
        Optional (rows, cols) bool grid of tiles excluded by hand; overrides the threshold.
    thumbnail
        Image under the overlay; defaults to ``fmap.extra["thumbnail"]``.

    Returns
    -------
    dict
        ``{"tiles_csv", "heatmap", "mask", "geojson", "overlay", "tiles_geojson", "tiles_qupath"}`` -> paths.
    """
    from napari_focusq.export.qupath import write_qupath_tiles

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "tiles_csv": fmap.to_csv(out / f"{stem}.tiles.csv", threshold_um, excluded),
        "heatmap": write_heatmap_tif(fmap, out / f"{stem}.heatmap.tif", threshold_um=threshold_um),
        "mask": write_tissue_mask(fmap, out / f"{stem}.mask.png", threshold_um=threshold_um, excluded=excluded),
        "geojson": fmap.to_geojson(out / f"{stem}.geojson", threshold_um, excluded),
        "overlay": write_overlay_png(fmap, out / f"{stem}.overlay.png", stem=stem, threshold_um=threshold_um,
                                     excluded=excluded, thumbnail=thumbnail),
        # every tile as a QuPath object with measurements (qupath.py)
        **write_qupath_tiles(fmap, out, stem, threshold_um, excluded),  # .gz (contract) and .zip (QuPath opens)
    }
    return {k: Path(v) for k, v in paths.items()}


# ------------------------------------------------------------------- one whole input
def error_reason(exc: BaseException, path=None) -> str:
    """A one-line reason for a failed input, without repeating the path the message starts with."""
    if isinstance(exc, MemoryError):  # numpy's message ("Unable to allocate 7 GiB ...") or none
        from napari_focusq.io.budget import OPTION

        detail = f" ({_clean(exc)})" if str(exc) else ""
        return (f"out of memory while reading or scoring it{detail}; this machine cannot hold it "
                f"(the budget, {OPTION}, may be set above what it has)")
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    if path is not None:
        for p in {str(path), str(Path(path))}:
            if reason.startswith(p + ": "):
                reason = reason[len(p) + 2:]
    if not isinstance(exc, (FocusQError, ValueError, OSError)):
        reason = f"unexpected {type(exc).__name__}: {reason}"
    return _clean(reason)


#: What to do about a slide whose pixel size is not in the file, told by the command line.
PIXEL_SIZE_HINT = "pass it with --pixel-size UM (µm per pixel at full resolution)"


def iter_score_checked(path, config: ScoreConfig, *, threads: int = 2,
                       pixel_size_hint: str = PIXEL_SIZE_HINT) -> Generator[Progress, None, FocusMap]:
    """Score one slide with ``config`` as progress events (the pipeline's), after checking that
    its pixel size is known: the step every slide -> outputs path shares (``focusq score``,
    batch's workers, the review queue). Closing the generator cancels the scoring."""
    from napari_focusq.scoring.pipeline import iter_score_slide

    if config.pixel_size_um is None:
        from napari_focusq.io.formats import open_image

        with open_image(path) as src:
            if src.pixel_size_um is None:
                raise MissingPixelSizeError(f"{path}: pixel size unknown (not in the file's metadata); "
                                            f"{pixel_size_hint}")
    gen = iter_score_slide(path, threads=threads, **config.pipeline_kwargs())
    try:
        return (yield from gen)
    finally:
        gen.close()


def score_to_outputs(path, out_dir, stem: str, config: ScoreConfig | None = None, *, progress=None,
                     results_tsv=None, threads: int = 2, **options) -> tuple[dict, dict[str, Path]]:
    """Score one slide, write its outputs and (optionally) append its ``results.tsv`` row.

    The one path from a slide to its outputs, for ``focusq score``, ``focusq batch``'s
    workers and the demo. Expected failures of the input (:data:`~napari_focusq.errors.INPUT_ERRORS`:
    unreadable file, unknown pixel size, too big for this machine) do not raise: they give a
    row with status "error" and the reason, and no paths. Anything else (a bug, a disk
    fault, ``KeyboardInterrupt``) propagates, which is what lets batch retry it.

    Parameters
    ----------
    config
        The scoring settings; or give them as keyword ``options`` (:meth:`ScoreConfig.from_options`).
    threads
        Decode threads feeding the model.

    Returns
    -------
    row, paths
        The results row (see :func:`results_row`) and the written files.
    """
    import time

    from napari_focusq.errors import INPUT_ERRORS
    from napari_focusq.progress import drive
    from napari_focusq.review.queue import review_exclusions

    if config is None:
        config = ScoreConfig.from_options(**options)
    elif options:
        raise TypeError(f"give the settings in config or as options, not both ({', '.join(options)})")
    t0 = time.perf_counter()
    try:
        fmap = drive(iter_score_checked(path, config, threads=threads), progress)
        # A slide reviewed in this folder keeps the reviewer's exclusions when scored again.
        excluded = review_exclusions(out_dir, stem, fmap)
        paths = write_outputs(fmap, out_dir, stem, threshold_um=config.threshold_um, excluded=excluded)
        row = results_row(fmap, stem=stem, input_path=path, seconds=time.perf_counter() - t0,
                          threshold_um=config.threshold_um, excluded=excluded)
    except INPUT_ERRORS as exc:
        row = results_row(None, stem=stem, input_path=path, seconds=time.perf_counter() - t0,
                          status="error", error=error_reason(exc, path))
        paths = {}
    if results_tsv is not None:
        append_results(results_tsv, row)
    return row, paths
