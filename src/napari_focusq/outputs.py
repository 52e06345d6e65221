"""Per-input result files (DESIGN.md §1) and the run-wide ``results.tsv``.

Every file is written atomically (temporary name beside the target, then renamed), so
an interrupted run never leaves a half-written output behind.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ._atomic import atomic_path, write_bytes
from .config import DEFAULT_THRESHOLD_UM
from .errors import FocusQError
from .focusmap import FocusMap

#: Columns of ``results.tsv``, in order. New columns go at the end, so a table written by
#: an older version (whose header is a prefix of this one) can be upgraded in place.
#: ``tiles`` counts the whole tile grid, glass included; ``tissue_tiles`` the tiles with
#: enough tissue to be scored, over which the defocus figures and ``excluded_pct`` are
#: taken (``tissue_pct`` = 100 * tissue_tiles / tiles).
RESULTS_COLUMNS = (
    "input", "stem", "status", "tissue_pct", "excluded_pct", "median_um", "p90_um", "mean_um",
    "pass", "model", "modality", "pixel_size_um", "tiles", "seconds", "error",
    "pooled_um", "uncertain_pct", "tissue_tiles",
    "na", "immersion_n", "wavelength_um", "optics_source", "field_um",
    # the pathologist's review (Review slides widget): accepted/rejected, who, their comment
    "review", "reviewed_by", "review_comment",
)
#: The overlay's colour scale is fixed so overlays of different slides compare by eye.
OVERLAY_LIMITS_UM = (0.0, 6.0)
#: Longest side of the usable-tissue PNG; whole slides are rendered coarser than level 0.
MASK_MAX_PX = 4096

_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".ome.btf", ".ome.tf2", ".ome.tf8")


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
    stem = next((name[: -len(s)] for s in _MULTI_SUFFIXES if low.endswith(s)), None)
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
    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(
            tmp, np.ascontiguousarray(fmap.defocus_um, dtype=np.float32), ome=True,
            photometric="minisblack",
            resolution=(1e4 / tile_um, 1e4 / tile_um), resolutionunit="CENTIMETER",
            metadata={
                "axes": "YX", "Name": "defocus_um", "Description": desc,
                "PhysicalSizeX": tile_um, "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": tile_um, "PhysicalSizeYUnit": "µm",
            },
        )
    return Path(path)


def read_heatmap_description(path) -> dict:
    """The JSON geometry record of a ``.heatmap.tif`` written by :func:`write_heatmap_tif`."""
    import tifffile
    import xml.etree.ElementTree as ET

    with tifffile.TiffFile(path) as tf:
        xml = tf.ome_metadata
    if not xml:
        raise ValueError(f"{path}: not an OME-TIFF heatmap written by focusq")
    for e in ET.fromstring(xml).iter():
        if e.tag.rsplit("}", 1)[-1] == "Description" and e.text:
            return json.loads(e.text)
    raise ValueError(f"{path}: the heatmap has no focusq description")


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

    from ._polygons import grid_polygons

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
    from .qupath import write_qupath_tiles

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "tiles_csv": fmap.to_csv(out / f"{stem}.tiles.csv", threshold_um, excluded),
        "heatmap": write_heatmap_tif(fmap, out / f"{stem}.heatmap.tif", threshold_um=threshold_um),
        "mask": write_mask_png(fmap, out / f"{stem}.mask.png", threshold_um=threshold_um, excluded=excluded),
        "geojson": fmap.to_geojson(out / f"{stem}.geojson", threshold_um, excluded),
        "overlay": write_overlay_png(fmap, out / f"{stem}.overlay.png", stem=stem, threshold_um=threshold_um,
                                     excluded=excluded, thumbnail=thumbnail),
        # every tile as a QuPath object with measurements (qupath.py)
        **write_qupath_tiles(fmap, out, stem, threshold_um, excluded),  # .gz (contract) and .zip (QuPath opens)
    }
    return {k: Path(v) for k, v in paths.items()}


# ------------------------------------------------------------------------ results.tsv
def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.{digits}f}"
    return str(v)


def results_row(fmap: FocusMap | None, *, stem: str, input_path, seconds: float,
                threshold_um: float = DEFAULT_THRESHOLD_UM, status: str = "ok", error: str = "",
                excluded=None) -> dict:
    """One ``results.tsv`` row (strings keyed by :data:`RESULTS_COLUMNS`).

    ``fmap`` may be None for a failed input: the figures are then empty and ``status`` /
    ``error`` say what happened. ``pass`` is "yes" when the 90th percentile of scored
    tiles is within ``threshold_um``. ``tiles`` is the whole grid (glass included),
    ``tissue_tiles`` the scored tiles the figures are computed over.
    """
    row = dict.fromkeys(RESULTS_COLUMNS, "")
    row.update(input=str(input_path), stem=stem, status=status, seconds=f"{seconds:.2f}", error=str(error))
    if fmap is not None:
        s = fmap.summary(threshold_um, excluded)
        row.update(
            tissue_pct=_fmt(s["tissue_pct"], 2), excluded_pct=_fmt(s["excluded_pct"], 2),
            median_um=_fmt(s["median_um"]), p90_um=_fmt(s["p90_um"]), mean_um=_fmt(s["mean_um"]),
            model=fmap.model, modality=fmap.modality,
            pixel_size_um=_fmt(fmap.pixel_size_um, 4), tiles=str(s["tiles"]),
            pooled_um=_fmt(s["pooled_um"]), uncertain_pct=_fmt(s["uncertain_pct"], 2),
            tissue_tiles=str(s["tissue_tiles"]),
        )
        row["pass"] = _fmt(bool(s["pass"]))
        o = fmap.extra.get("optics")
        if o:
            w = o["wavelengths_um"]
            row.update(na=_fmt(o["na"]), immersion_n=_fmt(o["immersion_n"]),
                       wavelength_um=_fmt(w[len(w) // 2]), optics_source=o["source"]["na"])
        if "field_um" in fmap.extra:  # fluorescence: the whole field's reading (sparse_scoring.py)
            row["field_um"] = _fmt(fmap.extra["field_um"])
    return row


def _clean(v) -> str:
    # one row must stay one line of tab-separated fields, whatever an error message holds
    return re.sub(r"[\t\r\n]+", " ", "" if v is None else str(v)).strip()


def _line(values) -> bytes:
    return ("\t".join(_clean(v) for v in values) + "\n").encode("utf-8")


def append_results(tsv_path, row: dict) -> None:
    """Append one row to ``results.tsv``, creating it with a header if missing.

    The file appears complete with its header (written to a temporary file and linked
    into place, which fails rather than overwrites if another process was first), and
    each row is one ``write`` of one whole line to a descriptor opened with ``O_APPEND``.
    That is chosen over rewrite-and-rename because several processes (batch workers) may
    append to the same file: rewriting would race and drop rows, while appends of one
    short line do not interleave on a local file system and a reader never sees a
    partial file (a crash can at worst cut the last line short).
    """
    path = Path(tsv_path)
    unknown = set(row) - set(RESULTS_COLUMNS)
    if unknown:
        raise ValueError(f"{path}: unknown results columns {sorted(unknown)}")
    if not path.exists():
        _create_with_header(path)
    with open(path, "rb") as fh:
        header = fh.readline().decode("utf-8").rstrip("\n").split("\t")
    if tuple(header) != RESULTS_COLUMNS:
        if not _is_older_header(header):
            raise ValueError(f"{path}: not a focusq results table (header {header[:4]}...); "
                             "choose another output folder or move the file away")
        _upgrade_table(path)
    line = _line(row.get(c, "") for c in RESULTS_COLUMNS)
    with open(path, "rb") as fh:  # a crash may have cut the last line: end it, not glue onto it
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = b"\n" + line
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:  # disk full, read-only: say which file
        from ._atomic import _named

        raise _named(exc, path) from None


def upsert_results(tsv_path, row: dict, key: str = "stem") -> None:
    """Put ``row`` into ``results.tsv``, replacing any row with the same ``key`` (one row per slide).

    Unlike :func:`append_results` this rewrites the table (atomically: temporary file,
    then rename); it is for single writers such as the widgets, never for batch workers.
    Columns of ``row`` left out keep the old row's values (a review keeps the scores).
    """
    from ._atomic import write_text

    path = Path(tsv_path)
    unknown = set(row) - set(RESULTS_COLUMNS)
    if unknown:
        raise ValueError(f"{path}: unknown results columns {sorted(unknown)}")
    if path.exists():
        with open(path, "rb") as fh:
            header = fh.readline().decode("utf-8").rstrip("\n").split("\t")
        if tuple(header) != RESULTS_COLUMNS and not _is_older_header(header):
            raise ValueError(f"{path}: not a focusq results table (header {header[:4]}...); "
                             "choose another output folder or move the file away")
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: output folder {path.parent} does not exist")
    rows, placed = [], False
    for old in read_results(path):
        if old.get(key) == row.get(key):
            if not placed:
                rows.append({**old, **row})
                placed = True
            continue
        rows.append(old)
    if not placed:
        rows.append(dict(row))
    lines = [_line(RESULTS_COLUMNS)] + [_line(r.get(c, "") for c in RESULTS_COLUMNS) for r in rows]
    write_text(path, b"".join(lines).decode("utf-8"))


def _is_older_header(header) -> bool:
    """A header written by an older focusq: a shorter prefix of :data:`RESULTS_COLUMNS`.

    The first tables ended at ``error``; anything shorter is not ours.
    """
    n = len(header)
    return RESULTS_COLUMNS.index("error") < n < len(RESULTS_COLUMNS) and tuple(header) == RESULTS_COLUMNS[:n]


def _upgrade_table(path: Path) -> None:
    """Rewrite an older ``results.tsv`` with today's header, its rows kept (new columns empty).

    Atomic (temporary file, then rename). Done once, when the first row of a newer
    version is appended to an older table; unlike appends it is not safe against another
    process appending at the very same moment, which an upgrade between runs never meets.
    """
    from ._atomic import write_text

    lines = [_line(RESULTS_COLUMNS)] + [_line(r.get(c, "") for c in RESULTS_COLUMNS) for r in read_results(path)]
    write_text(path, b"".join(lines).decode("utf-8"))


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once at import: os.umask is process-wide, so toggling it later could race other threads
_UMASK = _read_umask()


def _create_with_header(path: Path) -> None:
    if not path.parent.exists():
        raise FileNotFoundError(f"{path}: output folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_line(RESULTS_COLUMNS))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a results table is for sharing
        try:
            os.link(tmp, path)  # never replaces: if another writer was first, keep theirs
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links: exclusive create, one write
            try:
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return
            with os.fdopen(fd2, "wb") as fh:
                fh.write(_line(RESULTS_COLUMNS))
    finally:
        os.unlink(tmp)


def read_results(tsv_path) -> list[dict]:
    """Rows of a ``results.tsv`` as dicts of strings (an empty list if the file is missing)."""
    path = Path(tsv_path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    # a row with fewer fields than the header is one a crash cut short: not a result
    return [dict(zip(header, f)) for f in (ln.split("\t") for ln in lines[1:] if ln.strip())
            if len(f) >= len(header)]


# ------------------------------------------------------------------- one whole input
class MissingPixelSizeError(FocusQError, ValueError):
    """The input's pixel size is neither in its metadata nor given by the user."""


def error_reason(exc: BaseException, path=None) -> str:
    """A one-line reason for a failed input, without repeating the path the message starts with."""
    if isinstance(exc, MemoryError):  # numpy's message ("Unable to allocate 7 GiB ...") or none
        from .budget import OPTION

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


def score_to_outputs(path, out_dir, stem: str, *, pixel_size_um: float | None = None, modality: str = "auto",
                     model=None, level: int | None = None, slice="auto",
                     threshold_um: float = DEFAULT_THRESHOLD_UM, progress=None,
                     results_tsv=None, optics=None) -> tuple[dict, dict[str, Path]]:
    """Score one slide, write its outputs and (optionally) append its ``results.tsv`` row.

    Expected failures (unreadable file, unknown pixel size, bad options: ``FocusQError``,
    ``ValueError``, ``OSError``) do not raise: they give a row with status "error" and the
    reason, and no paths. Anything else (a bug, ``KeyboardInterrupt``) propagates.

    Returns
    -------
    row, paths
        The results row (see :func:`results_row`) and the written files.
    """
    import time

    from .progress import drive

    t0 = time.perf_counter()
    try:
        if pixel_size_um is None:
            from .io import open_image

            with open_image(path) as src:
                if src.pixel_size_um is None:
                    raise MissingPixelSizeError(
                        f"{path}: pixel size unknown (not in the file's metadata); "
                        "pass it with --pixel-size UM (µm per pixel at full resolution)")
        from .pipeline import iter_score_slide

        gen = iter_score_slide(path, pixel_size_um=pixel_size_um, modality=modality, model=model,
                               level=level, slice=slice, optics=optics)
        try:
            fmap = drive(gen, progress)
        finally:
            gen.close()
        paths = write_outputs(fmap, out_dir, stem, threshold_um=threshold_um)
        row = results_row(fmap, stem=stem, input_path=path, seconds=time.perf_counter() - t0,
                          threshold_um=threshold_um)
    except (FocusQError, ValueError, OSError) as exc:
        row = results_row(None, stem=stem, input_path=path, seconds=time.perf_counter() - t0,
                          status="error", error=error_reason(exc, path))
        paths = {}
    if results_tsv is not None:
        append_results(results_tsv, row)
    return row, paths
