"""score_image / score_slide: read -> slice -> tissue -> tiles -> model -> FocusMap.

Every front end (CLI, napari widget, batch workers) drives the same generators
(`iter_score_*`), which yield Progress events and return the FocusMap. Tiles
stream from the reader in strips of a few tiles, and the next strip decodes in a
background thread while the model scores the current one, so memory stays flat
in slide size and decoding overlaps inference.
"""
from __future__ import annotations

import math
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Generator

import numpy as np

from napari_focusq.config import MIN_TISSUE_FRACTION, TILE_PX, WORKING_PIXEL_UM
from napari_focusq.errors import ScoringError
from napari_focusq.io import budget
from napari_focusq.io.arrays import ArraySource
from napari_focusq.progress import Progress, drive
from napari_focusq.scoring.focusmap import FocusMap
from napari_focusq.scoring.strips import STRIP_TILES, read_strip, strip_regions

#: Tiles a model batch holds. With the model's threads scoring batches side by side, smaller
#: batches share the work out evenly and the first tiles come sooner; per tile, 16-128 cost
#: the same (in memory, 6400² RGB, 2 cores: 64 -> 32 raised 373 -> 445 tiles/s, median of 3).
BATCH_TILES = 32

#: Fluorescence default minimum signal fraction: sparse nuclei leave most of a tile dark.
MIN_SIGNAL_FRACTION = 0.1


def _image_source(image, pixel_size_um):
    a = image if hasattr(image, "shape") else np.asarray(image)
    if len(a.shape) not in (2, 3):
        raise ScoringError(
            f"score_image expects (Y, X), (Y, X, C) or (Y, X, 3) RGB; got shape {tuple(a.shape)} "
            "(use score_slide or pass one plane of a z-stack)")
    if min(a.shape[:2]) < 1:
        raise ScoringError(f"empty image of shape {tuple(a.shape)}")
    return ArraySource(a, pixel_size_um)


def _check_pixel_size(src, pixel_size_um):
    px = pixel_size_um if pixel_size_um is not None else src.pixel_size_um
    if px is None:
        raise ScoringError(f"{src.path}: the pixel size is not in the file; pass it (--pixel-size UM, "
                           "pixel_size_um=...) to get defocus in µm")
    if not (isinstance(px, (int, float, np.floating)) and math.isfinite(px) and px > 0):
        raise ScoringError(f"{src.path}: pixel size must be a positive number of µm; got {px!r}")
    return float(px)


def _thumbnail(src, z, rows, cols):
    """Whole-slide overview with at least ~8 thumbnail px per tile (bounded at 4096 px)."""
    want = int(min(4096, max(1024, 8 * max(rows, cols))))
    if isinstance(src, ArraySource):
        return src.thumbnail(want, z=z)
    if "Z" in src.axes:
        # ImageSource.thumbnail takes the middle plane; read the chosen one at a coarse level.
        lvl = max(i for i, s in enumerate(src.level_shapes) if max(s[1], s[2]) >= min(want, max(s[1], s[2]))) \
            if len(src.level_shapes) > 1 else 0
        a = src.read_plane(z, level=lvl)
        f = max(1, math.ceil(max(a.shape[:2]) / want))
        return a[::f, ::f]
    return src.thumbnail(want)


def _tile_tissue(mask_thumb: np.ndarray, grid, thumb_scale: tuple[float, float]) -> np.ndarray:
    """Tissue fraction per tile from a thumbnail mask (full tile area as denominator)."""
    rows, cols = grid.shape
    sy, sx = thumb_scale
    H, W = mask_thumb.shape
    full = (grid.tile_size_px / sy) * (grid.tile_size_px / sx)
    ii = np.cumsum(np.cumsum(np.pad(mask_thumb.astype(np.float64), ((1, 0), (1, 0))), 0), 1)
    # Tile bounds are separable: rows depend on r only, columns on c only.
    ys = np.array([grid.tile_bounds(r, 0)[0::2] for r in range(rows)], float) / sy
    xs = np.array([grid.tile_bounds(0, c)[1::2] for c in range(cols)], float) / sx
    a = np.minimum(H, np.round(ys[:, 0])).astype(int)
    b = np.minimum(H, np.maximum(np.round(ys[:, 1]), a + 1)).astype(int)
    d = np.minimum(W, np.round(xs[:, 0])).astype(int)
    e = np.minimum(W, np.maximum(np.round(xs[:, 1]), d + 1)).astype(int)
    n = ii[np.ix_(b, e)] - ii[np.ix_(a, e)] - ii[np.ix_(b, d)] + ii[np.ix_(a, d)]
    return np.minimum(1.0, n / max(full, 1e-9)).astype(np.float32)


def _choose_modality(modality, thumb, src) -> tuple[str, str]:
    from napari_focusq.scoring.tissue import detect_modality

    if modality in ("brightfield", "fluorescence"):
        return modality, "as requested"
    if modality != "auto":
        raise ScoringError(f"modality must be auto, brightfield or fluorescence; got {modality!r}")
    return detect_modality(thumb)


def iter_score_source(src, *, pixel_size_um=None, modality="auto", model=None, level=None, z=None,
                      min_tissue: float | None = None, batch_size: int = BATCH_TILES,
                      threads: int = 1, optics=None) -> Generator[Progress, None, FocusMap]:
    """Score one plane of an opened source (io.ImageSource or ArraySource), streaming tiles.

    ``optics``: the user's objective (user_optics.parse_optics: an Optics or a dict of na,
    immersion, wavelength_um); parts not given come from the file's OME metadata, then the
    model's own optics. Readings are in µm of defocus through that objective."""
    from napari_focusq.models import load_model, model_workers, torch_threads
    from napari_focusq.scoring.certainty import model_certainty, uses_noise
    from napari_focusq.scoring.grid import TileGrid
    from napari_focusq.scoring.tissue import estimate_white_level, tissue_mask

    t0 = time.perf_counter()
    px = _check_pixel_size(src, pixel_size_um)
    if "torch" not in sys.modules:
        from napari_focusq.models import preload

        preload(())  # torch imports (seconds, cold) while tissue is found, not after
    yax = src.axes.index("Y")
    H, W = src.shape[yax], src.shape[yax + 1]
    grid = TileGrid((H, W), px)
    rows, cols = grid.shape
    budget.require(src.path, f"holding the results of its {rows:,} x {cols:,} tile grid ({H:,} x {W:,} px at {px:g} µm/px)",
                   budget.grid_need(rows * cols), hint="check the pixel size (--pixel-size UM)")
    yield Progress("tissue", 0, 1, "finding tissue")
    thumb = np.asarray(_thumbnail(src, z, rows, cols))
    finite = np.isfinite(thumb) if thumb.dtype.kind == "f" else None
    if finite is not None and not finite.any():
        raise ScoringError(f"{src.path}: no finite pixel values (all NaN/inf)")
    mod, why = _choose_modality(modality, thumb, src)
    if min_tissue is None:
        min_tissue = MIN_SIGNAL_FRACTION if mod == "fluorescence" else MIN_TISSUE_FRACTION
    white = estimate_white_level(thumb) if mod == "brightfield" else None
    tmask = tissue_mask(thumb, mod, white_level=white)
    tissue = _tile_tissue(tmask, grid, (H / thumb.shape[0], W / thumb.shape[1]))
    fm = load_model(model if model is not None else "default", modality=mod)
    from napari_focusq.optics.user import scoring_optics

    user_optics = scoring_optics(optics, mod, fm, getattr(src, "objective", None))
    notes = [f"modality {mod}: {why}"]
    if fm.modality != mod:
        notes.append(f"model {fm.label} was trained for {fm.modality}, the image looks {mod}")
    if src.dtype != np.uint8 and mod == "brightfield":
        notes.append(f"{src.dtype} brightfield data scaled to 8 bits for the model")
    if px > WORKING_PIXEL_UM * 1.05:
        notes.append(f"pixel size {px:g} µm is coarser than {WORKING_PIXEL_UM} µm: sub-micrometre defocus is beyond it")
    yield Progress("tissue", 1, 1, f"{int((tissue >= min_tissue).sum())} of {rows * cols} tiles have tissue")
    # (fluorescence tiles holding whole objects are added below, sparse_scoring.py)

    lvl = src.level_for(WORKING_PIXEL_UM) if level is None else int(level)
    if not 0 <= lvl < len(src.downsamples):
        raise ScoringError(f"{src.path}: level {lvl} does not exist (0..{len(src.downsamples) - 1})")
    ch = src.shape[-1] if src.axes.endswith("C") else 1
    workers = model_workers(fm)
    budget.require(src.path, f"reading tiles of {grid.tile_size_px / src.downsamples[lvl]:,.0f} px at level {lvl}",
                   budget.strips_need(grid.tile_size_px / src.downsamples[lvl], STRIP_TILES, ch,
                                      src.dtype.itemsize, in_flight=max(1, threads) + 1,
                                      queued_tiles=(workers + 3) * batch_size, tile_px=TILE_PX),
                   hint="check the pixel size (--pixel-size UM) or pick a coarser --level")
    defocus = np.full((rows, cols), np.nan, np.float32)
    spread = np.full((rows, cols), np.nan, np.float32)  # the model ensemble's disagreement, µm
    information = np.full((rows, cols), np.nan, np.float32)  # for pooling (see pooling.py)
    noise = np.full((rows, cols), np.nan, np.float32)  # for certainty maps fitted on it (certainty.py)
    nonfinite = np.zeros((rows, cols), np.int32)  # NaN/inf working pixels per tile, masked before scoring
    want_noise = uses_noise(model_certainty(fm))
    scorable = tissue >= min_tissue
    objects = None
    if mod == "fluorescence":
        # Sparse fields: a tile holding a whole object is scored too (sparse_scoring.py).
        from napari_focusq.scoring.sparse import object_counts

        objects = object_counts(tmask, grid, (H / thumb.shape[0], W / thumb.shape[1]), px)
        scorable |= objects >= 1
    todo = [(r, [c for c in range(cols) if scorable[r, c]]) for r in range(rows)]
    todo = [(r, cs) for r, cs in todo if cs]
    total = sum(len(cs) for _, cs in todo)
    units = list(strip_regions(todo))
    done = 0
    yield Progress("score", 0, total, "scoring", data={"grid_shape": (rows, cols), "tiles": []})
    pending_tiles, pending_idx, pending_info = [], [], []
    # CPU seconds of the decode workers (read, cut, pooling and noise measures) and the model's
    cpu = {"read": 0.0, "model": 0.0}
    in_model = deque()  # batches handed to the model threads, in order: (future, tile indices, info)

    def submit(mpool):
        idx = [i for chunk in pending_idx for i in chunk]
        info = np.concatenate(pending_info)  # (n, 3): information, noise ratio, non-finite pixels
        in_model.append((mpool.submit(_thread_cpu, _predict_parts, fm, list(pending_tiles)), idx, info))
        pending_tiles.clear()
        pending_idx.clear()
        pending_info.clear()

    def collect():
        """The oldest batch's readings into the maps; the tiles it filled, for the progress event."""
        nonlocal done
        future, idx, info = in_model.popleft()
        (pred, sd), spent = future.result()
        cpu["model"] += spent
        out = []
        for (r, c), p, q, (i, nr, nb) in zip(idx, pred, sd, info):
            defocus[r, c] = p
            spread[r, c] = q
            information[r, c] = i
            noise[r, c] = nr
            nonfinite[r, c] = int(nb)
            out.append((r, c, float(p), float(tissue[r, c])))
        done += len(idx)
        return out

    # Decode ahead in background threads while the model scores (numpy, codecs and
    # torch release the GIL in their heavy parts). The model runs whole batches side by
    # side in its own threads, one torch thread each, rather than one batch split over
    # the cores: torch's intra-op split of the small FFTs scaled 1.4x on 2 cores and idled
    # while it synchronised; independent batches keep every core busy whatever the
    # decoders leave (DESIGN-NOTES, "Speed around the model"). On a GPU one batch at a time.
    queue = deque()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="focusq-model") as mpool, \
            torch_threads(to=1), _dropping(queue, 1), _dropping(in_model, 0):
        # Two batches of tiles in flight, counted in tiles (strips vary from 1 to
        # STRIP_TILES): fewer, and the decoders idle while the model scores a batch.
        later = iter(units)
        queued = 0

        def top_up():
            nonlocal queued
            while queued < 2 * batch_size and (unit := next(later, None)) is not None:
                queue.append((unit, pool.submit(_thread_cpu, read_strip, src, grid, lvl, z, *unit, mod, want_noise)))
                queued += len(unit[1])

        top_up()
        while queue:
            (r, cs), future = queue.popleft()
            (tiles, _valid, info, nr, bad), spent = future.result()
            cpu["read"] += spent
            queued -= len(cs)
            top_up()
            pending_tiles.append(tiles)
            pending_idx.append([(r, c) for c in cs])
            pending_info.append(np.stack([info, nr, bad], 1).astype(np.float64))
            if sum(len(t) for t in pending_tiles) >= batch_size or not queue:
                submit(mpool)
            # one batch waiting beside each busy model thread; the oldest is reported first
            while in_model and (len(in_model) > workers or not queue):
                finished = collect()
                yield Progress("score", done, total, f"{done}/{total} tiles",
                               data={"grid_shape": (rows, cols), "tiles": finished})
    if objects is not None and not np.isfinite(defocus).any():
        # Nothing passed either rule: one whole-field reading where the field holds weak signal.
        from napari_focusq.scoring.sparse import whole_field_reading

        got = whole_field_reading(src, grid, lvl, z, thumb, fm, mod, want_noise)
        if got is not None:
            rc, defocus[rc], spread[rc], information[rc], noise[rc] = got
            objects[rc] = max(int(objects[rc]), 1)
            notes.append("no tile held enough signal: one whole-field reading around the brightest region")
    fmap = FocusMap(
        defocus_um=defocus, tissue_fraction=tissue, tile_size_px=grid.tile_size_px, image_shape=(H, W),
        pixel_size_um=px, modality=mod, model=fm.label, origin_px=grid.origin_px,
        source=str(src.path),
        extra={"thumbnail": _overview(thumb), "notes": notes, "seconds": time.perf_counter() - t0, "cpu_s": cpu, "level": lvl,
               "z": z, "spread_um": spread, "information": information, "nonfinite_px": nonfinite,
               **({"noise_ratio": noise} if want_noise else {})},
    )
    _add_certainty(fmap, fm)
    if objects is not None:
        from napari_focusq.scoring.sparse import mark_low_signal

        mark_low_signal(fmap, objects)
    from napari_focusq.optics.user import apply_optics

    apply_optics(fmap, user_optics)
    _flag_nonfinite(fmap)
    return fmap


def _predict_parts(fm, parts: list):
    """The model on one batch given as its strips' tile arrays, joined here in the model's
    thread: the copy (~8 ms a batch of 32 RGB tiles) is then not the coordinating thread's,
    which hands out the strips and batches."""
    return fm.predict_with_spread(parts[0] if len(parts) == 1 else np.concatenate(parts))


def _thread_cpu(fn, *args):
    """``(fn(*args), CPU seconds its thread spent)``: where a run's CPU went (``extra["cpu_s"]``),
    counted in each worker, so a thread waiting for a core or a lock adds nothing."""
    t0 = time.thread_time()
    out = fn(*args)
    return out, time.thread_time() - t0


def _flag_nonfinite(fmap: FocusMap) -> None:
    """Tiles whose reading rests on masked NaN/inf pixels are uncertain, whatever the model
    says; a note counts them (issue 19: no silent wrong answer)."""
    bad = np.asarray(fmap.extra.get("nonfinite_px", 0)) > 0
    bad &= np.isfinite(fmap.defocus_um)
    if not bad.any():
        return
    unc = fmap.extra.get("uncertain")
    fmap.extra["uncertain"] = bad if unc is None or np.shape(unc) != bad.shape else (np.asarray(unc, bool) | bad)
    n = int(bad.sum())
    fmap.extra.setdefault("notes", []).append(
        f"{n} scored tile{'s' if n != 1 else ''} hold NaN/inf pixels: masked before scoring, counted in the "
        "tiles CSV (nonfinite_px) and marked uncertain")


@contextmanager
def _dropping(queue, at: int):
    """On leaving (closed early by a cancel, or an error), cancel the queued strips (model
    batches) that no worker has started: decoding stops with the strips in hand, not two
    batches on."""
    try:
        yield
    finally:
        for item in queue:
            item[at].cancel()  # the future's place in the queue's entries


def _add_certainty(fmap: FocusMap, fm) -> None:
    """extra["expected_error_um"], ["certainty"] in [0, 1] and ["uncertain"] from the model's
    certainty map (ensemble spread or noise ratio, certainty.py)."""
    from napari_focusq.scoring.certainty import certainty_layers, model_certainty

    spread = fmap.extra.get("spread_um")
    if spread is None or not np.isfinite(spread).any():
        return  # single-head models have no spread
    calib = model_certainty(fm)
    fmap.extra.update(certainty_layers(spread, fmap.defocus_um, calib, noise=fmap.extra.get("noise_ratio")))
    note = f"certainty uncalibrated: model {fm.label} has no certainty map (3 x ensemble spread used)"
    notes = fmap.extra.setdefault("notes", [])
    if calib is None and note not in notes:
        notes.append(note)


def iter_score_image(image, *, pixel_size_um, modality="auto", model=None, min_tissue=None,
                     batch_size: int = BATCH_TILES, optics=None) -> Generator[Progress, None, FocusMap]:
    """Generator form of :func:`score_image`."""
    src = _image_source(image, pixel_size_um)
    return (yield from iter_score_source(src, pixel_size_um=pixel_size_um, modality=modality, model=model,
                                         min_tissue=min_tissue, batch_size=batch_size, optics=optics))


def score_image(image, *, pixel_size_um: float, modality: str = "auto", model=None, progress=None,
                optics=None) -> FocusMap:
    """Predict the defocus (µm) of every tissue tile of an in-memory image.

    Parameters
    ----------
    image
        (Y, X, 3) uint8 RGB brightfield, or (Y, X) / (Y, X, C) fluorescence of any dtype.
    pixel_size_um
        Size of one pixel in µm; the image is resampled to 0.5 µm/px for the model.
    modality
        "auto" (decided from the data; the choice is in ``fmap.modality`` and the
        reason in ``fmap.extra["notes"]``), "brightfield" or "fluorescence".
    model
        A FocusModel, a shipped model name or a checkpoint path; the default model
        for the modality when None.
    progress
        Callable receiving Progress events; return False from it to cancel.
    optics
        The objective the image was taken with: an ``Optics`` or a dict with any of
        ``na``, ``immersion`` (index or medium name) and ``wavelength_um``; readings are
        then µm of defocus through it (``fmap.extra["optics"]`` records it). Default:
        the model's own optics (20x/0.75 dry).
    """
    return drive(iter_score_image(image, pixel_size_um=pixel_size_um, modality=modality, model=model,
                                  optics=optics), progress)


def iter_score_slide(path, *, pixel_size_um=None, modality="auto", model=None, level=None, slice="auto",
                     min_tissue=None, batch_size: int = BATCH_TILES,
                     threads: int = 2, optics=None) -> Generator[Progress, None, FocusMap]:
    """Generator form of :func:`score_slide` (``threads``: decode threads feeding the model)."""
    from napari_focusq.io.formats import open_image

    src = open_image(path, pixel_size_um=pixel_size_um) if not isinstance(path, ArraySource) else path
    try:
        z = None
        if "Z" not in src.axes and isinstance(slice, int) and not isinstance(slice, bool) and slice != 0:
            # a plane index on a 2-D image used to be ignored without a word
            raise ScoringError(f"{src.path}: --slice {slice} asks for a plane of a z-stack, but this is a "
                               "2-D image (one plane, index 0)")
        if src.n_z > 1 or "Z" in src.axes:
            if slice == "per-tile":
                return (yield from _iter_per_tile(src, pixel_size_um, modality, model, level, min_tissue, batch_size,
                                                  optics))
            if slice == "auto":
                from napari_focusq.scoring.focus import iter_sharpest_slice

                z, _scores = yield from iter_sharpest_slice(src, "std")
            else:
                z = int(slice)
                if not -src.n_z <= z < src.n_z:
                    raise ScoringError(f"{src.path}: slice {z} out of range (stack has {src.n_z} planes)")
                z %= src.n_z
        fmap = yield from iter_score_source(src, pixel_size_um=pixel_size_um, modality=modality, model=model,
                                            level=level, z=z, min_tissue=min_tissue, batch_size=batch_size,
                                            threads=threads, optics=optics)
        return fmap
    finally:
        src.close()


def _overview(t: np.ndarray, max_size: int = 1024) -> np.ndarray:
    """A display thumbnail (uint8, RGB or grey, <= max_size) from the tissue thumbnail."""
    f = max(1, math.ceil(max(t.shape[:2]) / max_size))
    t = t[::f, ::f]
    if t.dtype != np.uint8:
        t = t.astype(np.float32)
        # Limits from finite pixels only: one inf would make every pixel NaN.
        fin = t[np.isfinite(t)]
        lo, hi = (float(np.percentile(fin, 0.5)), float(np.percentile(fin, 99.5))) if fin.size else (0.0, 1.0)
        t = np.nan_to_num(np.clip((t - lo) / max(hi - lo, 1e-9) * 255, 0, 255), nan=0.0).astype(np.uint8)
    if t.ndim == 3 and t.shape[-1] not in (3, 4):
        t = t.max(-1)
    return t


def _iter_per_tile(src, pixel_size_um, modality, model, level, min_tissue, batch_size, optics=None):
    """Score every plane; per tile keep the plane with the least defocus (DESIGN: slice="per-tile")."""
    from napari_focusq.models import load_model

    maps, layers = [], {"spread_um": [], "information": [], "noise_ratio": [], "nonfinite_px": []}
    for zi in range(src.n_z):
        m = yield from iter_score_source(src, pixel_size_um=pixel_size_um, modality=modality, model=model,
                                         level=level, z=zi, min_tissue=min_tissue, batch_size=batch_size,
                                         optics=optics)
        maps.append(m.defocus_um)
        for key, planes in layers.items():
            if key in m.extra:
                planes.append(m.extra[key])
        yield Progress("planes", zi + 1, src.n_z, f"plane {zi + 1}/{src.n_z}")
    from napari_focusq.scoring.zstack import focus_plane_fit

    stack = np.stack(maps)
    valid = np.isfinite(stack).any(0)
    focus = focus_plane_fit(stack)
    best = np.where(valid, np.rint(np.nan_to_num(focus, nan=0.0)), -1).astype(np.int64)
    # Defocus, spread, information and certainty of the chosen plane of each tile.
    pick = np.clip(best, 0, None)[None]
    m.defocus_um = np.where(valid, np.take_along_axis(stack, pick, 0)[0], np.nan).astype(np.float32)
    m.extra["focus_plane"] = focus.astype(np.float32)
    for key, planes in layers.items():
        if planes:
            m.extra[key] = np.where(valid, np.take_along_axis(np.stack(planes), pick, 0)[0], np.nan).astype(np.float32)
    # (field_um, low_signal and the unmapped readings were the last plane's: not this map's)
    for key in ("expected_error_um", "certainty", "uncertain", "field_um", "low_signal",
                "defocus_model_optics_um"):
        m.extra.pop(key, None)
    _add_certainty(m, load_model(model if model is not None else "default", modality=m.modality))
    _flag_nonfinite(m)
    m.extra.update({"best_plane": best.astype(np.int32), "defocus_per_plane": stack, "z": "per-tile",
                    "thumbnail": _overview(np.asarray(_thumbnail(src, src.n_z // 2, 1, 1)))})
    return m


def score_slide(path, *, pixel_size_um: float | None = None, modality: str = "auto", model=None,
                level: int | None = None, slice="auto", progress=None, optics=None) -> FocusMap:
    """Predict the defocus (µm) of every tissue tile of a slide or z-stack file, streaming tiles.

    Parameters
    ----------
    path
        SVS, (OME-)TIFF, NDPI (where tifffile reads it), PNG or JPEG.
    pixel_size_um
        Overrides the pixel size in the file; required when the file has none.
    modality, model
        As for :func:`score_image`.
    level
        Pyramid level to read; by default the coarsest one at least as fine as 0.5 µm/px.
    slice
        For z-stacks: "auto" (sharpest plane by standard deviation, the founding
        method), "per-tile" (best plane per tile) or a plane index.
    progress
        Callable receiving Progress events; return False from it to cancel.
    optics
        The objective (see :func:`score_image`); parts not given are read from the
        file's OME ``Objective`` (LensNA, Immersion) where it has them.
    """
    return drive(iter_score_slide(path, pixel_size_um=pixel_size_um, modality=modality, model=model,
                                  level=level, slice=slice, optics=optics), progress)
