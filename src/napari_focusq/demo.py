"""Demonstration data made from real in-focus images with simulated defocus.

Used by ``focusq simulate`` / ``focusq demo`` and by the napari sample data: a defocus
series of one image, a slide whose right half is out of focus, and an image with
horizontal bands at known defocus, laid along the working tile grid.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from napari_focusq._atomic import atomic_path, write_bytes
from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM, Optics
from napari_focusq.progress import Progress

#: ``focusq simulate`` refuses larger planes (the optical blur works on the whole plane).
MAX_SIMULATE_SIDE = 8000


def _modality(image, modality: str) -> str:
    if modality != "auto":
        return modality
    from napari_focusq.scoring.tissue import detect_modality

    return detect_modality(image)[0]


def _margin_px(z_um: float, pixel_size_um: float, optics: Optics | None) -> int:
    from napari_focusq.optics.psf import blur_radius_um

    # the PSF's rings reach past the geometric radius; 2x plus a few µm is ample
    return int(math.ceil((2 * blur_radius_um(z_um, optics) + 3.0) / pixel_size_um)) + 8


def _blur_span(image: np.ndarray, a: int, b: int, z_um: float, *, axis: int, pixel_size_um: float,
               modality: str, optics: Optics | None, method: str) -> np.ndarray:
    """Rows (axis 0) or columns (axis 1) a:b of ``image`` defocused by ``z_um``.

    The blur sees real neighbours on both sides (a margin past the span), so the span's
    edge looks like the inside of a defocused region rather than a padded border.
    """
    from napari_focusq.optics.psf import simulate_defocus

    take = (lambda lo, hi: image[lo:hi]) if axis == 0 else (lambda lo, hi: image[:, lo:hi])
    if z_um == 0:
        return take(a, b)
    m = _margin_px(z_um, pixel_size_um, optics)
    lo, hi = max(0, a - m), min(image.shape[axis], b + m)
    out = simulate_defocus(take(lo, hi), z_um, pixel_size_um=pixel_size_um, modality=modality,
                           optics=optics, method=method)
    return out[a - lo:b - lo] if axis == 0 else out[:, a - lo:b - lo]


def make_half_defocused(image, *, pixel_size_um: float, z_um: float = 3.0, modality: str = "auto",
                        optics: Optics | None = None, method: str = "optical") -> np.ndarray:
    """A copy of ``image`` whose left half is untouched and right half defocused by ``z_um``.

    Parameters
    ----------
    image
        (Y, X[, C]) in-focus image, any dtype.
    pixel_size_um
        Its pixel size in µm.
    z_um
        Defocus of the right half.
    modality, optics, method
        As for :func:`napari_focusq.optics.psf.simulate_defocus`; "auto" guesses the modality.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``image``.
    """
    img = np.asarray(image)
    mod = _modality(img, modality)
    half = img.shape[1] // 2
    out = img.copy()
    out[:, half:] = _blur_span(img, half, img.shape[1], z_um, axis=1, pixel_size_um=pixel_size_um,
                               modality=mod, optics=optics, method=method)
    return out


def band_edges(height: int, pixel_size_um: float, n_bands: int) -> np.ndarray:
    """Row edges (level-0 pixels) of ``n_bands`` horizontal bands on the working tile grid.

    Every edge is a tile edge of :class:`~napari_focusq.scoring.grid.TileGrid` (same rounding),
    so each band holds whole tiles; the whole tile rows are shared out as evenly as
    possible (the last band also takes a partial last row). With fewer whole rows than
    bands, the bands are simply equal in height.

    Returns
    -------
    numpy.ndarray
        ``n_bands + 1`` int edges from 0 to ``height``.
    """
    from napari_focusq.scoring.grid import TileGrid, TilingError

    try:
        grid = TileGrid((height, 1), pixel_size_um)
    except TilingError:  # pixels too coarse for a tile: no grid to follow
        grid = None
    # whole rows: those whose (rounded, unclipped) bottom edge is inside the image
    whole = 0 if grid is None else sum(1 for r in range(grid.rows) if round((r + 1) * grid.tile_size_px) <= height)
    if whole < n_bands:
        return np.linspace(0, height, n_bands + 1).round().astype(int)
    rows = np.floor(np.arange(n_bands) * whole / n_bands + 0.5).astype(int)
    return np.array([grid.tile_bounds(int(r), 0)[0] for r in rows] + [height])


def make_defocus_demo(image, *, pixel_size_um: float, z_list: Sequence[float] = (0, 1, 2, 4),
                      modality: str = "auto", optics: Optics | None = None,
                      method: str = "optical") -> tuple[np.ndarray, np.ndarray]:
    """Split ``image`` into horizontal bands, band ``i`` (from the top) defocused by ``z_list[i]`` µm.

    Band edges are tile edges of the working grid (:func:`band_edges`), so every band
    holds whole tiles and, on a tall enough image, at least ``floor(rows / len(z_list))``
    tile rows: tissue running down the slide then crosses every band.

    Returns
    -------
    image, region_z_map
        The banded image (same shape and dtype) and a float32 (Y, X) map of the
        simulated defocus of every pixel, in µm (the ground truth).
    """
    img = np.asarray(image)
    if not len(z_list):
        raise ValueError("z_list must hold at least one defocus value")
    mod = _modality(img, modality)
    edges = band_edges(img.shape[0], pixel_size_um, len(z_list))
    out = np.empty_like(img)
    zmap = np.empty(img.shape[:2], np.float32)
    for z, a, b in zip(z_list, edges[:-1], edges[1:]):
        out[a:b] = _blur_span(img, a, b, float(z), axis=0, pixel_size_um=pixel_size_um, modality=mod,
                              optics=optics, method=method)
        zmap[a:b] = abs(float(z))
    return out, zmap


# ------------------------------------------------------------------------- writing
def write_tif(path, image: np.ndarray, *, pixel_size_um: float | None, description: dict | None = None,
              tiled: bool = False) -> Path:
    """Write a (Y, X[, C]) image as TIFF, atomically, keeping its dtype.

    The pixel size goes into the resolution tags (pixels per cm), which
    :func:`napari_focusq.io.formats.open_image` reads back; ``description`` is stored as JSON.
    """
    import tifffile

    img = np.asarray(image)
    rgb = img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    kw = {}
    if pixel_size_um:
        kw.update(resolution=(1e4 / pixel_size_um, 1e4 / pixel_size_um), resolutionunit="CENTIMETER")
    if tiled:
        kw.update(tile=(256, 256))
    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, img, photometric="rgb" if rgb else "minisblack",
                         planarconfig="contig" if img.ndim == 3 else None, compression="zlib",
                         description=json.dumps(description or {}, ensure_ascii=True), metadata=None, **kw)
    return Path(path)


def preview_u8(image: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
    """A uint8 grey or RGB view for a PNG preview; non-uint8 data are scaled by ``limits``."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] != 3:
        a = a[..., 0]  # a multichannel fluorescence preview shows the first channel
    if a.dtype == np.uint8:
        return a
    lo, hi = limits if limits is not None else preview_limits(a)
    f = np.clip((a.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.nan_to_num(f * 255 + 0.5).astype(np.uint8)


def preview_limits(image: np.ndarray) -> tuple[float, float]:
    """Display limits (0.5 and 99.8 percentiles of the finite pixels)."""
    a = np.asarray(image, dtype=np.float32)
    a = a[np.isfinite(a)]
    if not a.size:
        return 0.0, 1.0
    lo, hi = np.percentile(a[:: max(1, a.size // 1_000_000)], (0.5, 99.8))
    return float(lo), float(hi if hi > lo else lo + 1)


def write_png(path, image_u8: np.ndarray, text: dict | None = None) -> Path:
    """Write a uint8 grey/RGB array as PNG, atomically, with optional text chunks."""
    from io import BytesIO

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(str(k), str(v))
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(image_u8)).save(buf, format="PNG", pnginfo=info)
    return write_bytes(path, buf.getvalue())


def z_label(z: float) -> str:
    """``1`` -> ``"1"``, ``0.5`` -> ``"0.5"`` (file names of a defocus series)."""
    return f"{abs(float(z)):g}"


def write_defocus_series(image, z_list: Sequence[float], out_dir, stem: str, *, pixel_size_um: float,
                         modality: str = "auto", optics: Optics | None = None, method: str = "optical",
                         progress: Callable[[Progress], object] | None = None, layers=None) -> list[Path]:
    """Write ``<stem>_z<z>um.tif`` (same dtype, pixel size in the tags) and a ``.png`` preview per z.

    Previews share one display range (from the input) so blur, not contrast, differs.
    With ``layers`` (thick section, see :func:`~napari_focusq.optics.psf.simulate_defocus`) z is
    signed, from the specimen's best plane, and the files are ``<stem>_layered_z<+z>um``.

    Returns
    -------
    list of Path
        The TIFFs, in the order of ``z_list``.
    """
    from napari_focusq.optics.psf import simulate_defocus

    img = np.asarray(image)
    mod = _modality(img, modality)
    check_simulate_budget(img, z_list, pixel_size_um, mod, optics, method, layers=layers or ())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    limits = None if img.dtype == np.uint8 else preview_limits(img)
    paths = []
    for i, z in enumerate(z_list):
        if progress is not None:
            progress(Progress("simulate", i, len(z_list), f"z = {z:g} µm"))
        sim = img if z == 0 and not layers else simulate_defocus(
            img, float(z), pixel_size_um=pixel_size_um, modality=mod, optics=optics, method=method, layers=layers)
        name = f"{stem}_layered_z{float(z):+g}um" if layers else f"{stem}_z{z_label(z)}um"
        desc = {"software": "napari-focusq", "simulated_defocus_um": abs(float(z)), "modality": mod,
                "method": method, "pixel_size_um": pixel_size_um,
                "optics": (optics or Optics.for_modality(mod)).to_dict()}
        if layers:
            from napari_focusq.optics.layered import Layer, _content, best_plane

            every = [Layer(img, 0.0, 1.0), *layers]
            best = best_plane([L.depth_um for L in every], _content(every, mod, 255.0))
            desc["layers"] = [{"depth_um": L.depth_um, "weight": L.weight} for L in every]
            desc["best_plane_um"] = best
            desc["focal_plane_um"] = best + float(z)
        paths.append(write_tif(out / f"{name}.tif", sim, pixel_size_um=pixel_size_um, description=desc))
        write_png(out / f"{name}.png", preview_u8(sim, limits), {"simulated_defocus_um": f"{abs(z):g}"})
    if progress is not None:
        progress(Progress("simulate", len(z_list), len(z_list), "done"))
    return paths


def check_simulate_budget(img, z_list, pixel_size_um, modality, optics=None, method="optical",
                          name="image", layers=()) -> None:
    """Refuse, before the first z, a series whose PSF field or padded FFT would not fit the
    memory budget (issue 19: --z-um 300 grew past 8 GB, 1e6 raised MemoryError).

    ``layers`` (thick sections: :class:`~napari_focusq.optics.layered.Layer` objects or
    ``(depth_um, weight, ...)`` tuples, the image itself not among them) are counted too, before
    their images are read: each is blurred by its own distance to the focal plane, at most
    the largest |z| plus the section's depth span (the best plane lies inside it), and each is
    held in memory beside a float accumulator and one layer's transmission.
    """
    from napari_focusq.io import budget
    from napari_focusq.optics.psf import blur_radius_um

    if method != "optical" or not len(z_list):
        return
    o = optics or Optics.for_modality(modality)
    z = max(abs(float(v)) for v in z_list)
    depths = [0.0] + [float(L.depth_um if hasattr(L, "depth_um") else L[0]) for L in layers]
    z += max(depths) - min(depths)
    h, w = img.shape[:2]
    c = img.shape[2] if img.ndim == 3 else 1
    need = budget.simulate_need(h, w, c, z, pixel_size_um, o.na, o.n, min(o.wavelengths_um), o.oversample)
    what = f"simulating {z:g} µm of defocus on {h:,} x {w:,} px (a blur disc {2 * blur_radius_um(z, o):.4g} µm wide)"
    if layers:
        float_bytes = 8 if img.dtype == np.float64 else 4
        need += len(layers) * img.nbytes + 2 * budget.nbytes(h, w, c, itemsize=float_bytes)
        what += f" with {len(layers)} more layer{'s' * (len(layers) > 1)} (section {max(depths) - min(depths):g} µm deep)"
    budget.require(name, what, need, hint="or simulate smaller defocus values (--z-um)"
                   + (" or fewer, nearer layers (--layers)" if layers else ""))


def tissue_map(image, *, pixel_size_um: float, modality: str = "auto", source: str | None = None):
    """A :class:`~napari_focusq.scoring.focusmap.FocusMap` of tissue only (defocus NaN), and the mask.

    Lets the demo show the tile grid and tissue detection without a model.

    Returns
    -------
    fmap, mask
        The map on the working tile grid and the bool tissue mask at the working resolution.
    """
    import warnings

    from napari_focusq.scoring.focusmap import FocusMap
    from napari_focusq.scoring.grid import TileGrid
    from napari_focusq.scoring.resample import resample_to_working
    from napari_focusq.scoring.tissue import tissue_mask

    img = np.asarray(image)
    mod = _modality(img, modality)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coarse input: the tissue mask does not care
        work = resample_to_working(img, pixel_size_um)
    mask = tissue_mask(work, mod)
    grid = TileGrid(img.shape[:2], pixel_size_um)
    rows, cols = grid.shape
    padded = np.zeros((rows * TILE_PX, cols * TILE_PX), np.float32)
    h, w = min(mask.shape[0], padded.shape[0]), min(mask.shape[1], padded.shape[1])
    padded[:h, :w] = mask[:h, :w]
    frac = padded.reshape(rows, TILE_PX, cols, TILE_PX).mean(axis=(1, 3))
    fmap = FocusMap(np.full((rows, cols), np.nan, np.float32), frac, tile_size_px=grid.tile_size_px,
                    image_shape=img.shape[:2], pixel_size_um=pixel_size_um, modality=mod,
                    model="none (tissue only)", source=source,
                    extra={"working_pixel_um": WORKING_PIXEL_UM})
    return fmap, mask


# ---------------------------------------------------------------------------- focusq demo
def run_demo(out_dir, *, model="default", progress=None, crop_px: int = 1024, log=print) -> int:
    """``focusq demo``: demo data from the bundled sample slide, scored if a model is available.

    Writes into ``out_dir``: a defocus series of a central ``crop_px`` crop (0, 1, 2, 4 µm),
    the sample's tissue mask and tile grid, ``sample_half_defocused.tif`` (right half at
    3 µm), and, when scoring is available, the outputs of both slides and ``results.tsv``.

    Returns
    -------
    int
        0, or 1 when the scoring part could not run (the rest is still written).
    """
    from napari_focusq.export.outputs import score_to_outputs
    from napari_focusq.io.formats import open_image, sample_slide_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sample = sample_slide_path()
    with open_image(sample) as src:
        image = src.read_plane()
        px = src.pixel_size_um
    H, W = image.shape[:2]
    c = min(crop_px, H, W)
    y0, x0 = (H - c) // 2, (W - c) // 2
    crop = image[y0:y0 + c, x0:x0 + c]
    log(f"sample slide: {sample.name}, {H}x{W} px at {px:g} µm/px")

    write_defocus_series(crop, (0, 1, 2, 4), out / "series", "sample_crop", pixel_size_um=px,
                         modality="brightfield", progress=progress)
    fmap, mask = tissue_map(image, pixel_size_um=px, modality="brightfield", source=str(sample))
    write_png(out / "sample.tissue.png", (mask * 255).astype(np.uint8),
              {"pixel_size_um": WORKING_PIXEL_UM, "downsample": px and WORKING_PIXEL_UM / px})
    fmap.to_csv(out / "sample.grid.csv")
    log(f"tile grid {fmap.shape[0]}x{fmap.shape[1]} (320 px at {WORKING_PIXEL_UM} µm/px), "
        f"{100 * float((fmap.tissue_fraction >= 0.25).mean()):.0f}% of tiles with tissue")

    if progress is not None:
        progress(Progress("simulate", 0, 1, "right half at 3 µm"))
    half = make_half_defocused(image, pixel_size_um=px, z_um=3.0, modality="brightfield")
    half_path = write_tif(out / "sample_half_defocused.tif", half, pixel_size_um=px, tiled=True,
                          description={"software": "napari-focusq", "source": sample.name,
                                       "simulated_defocus_um": {"left half": 0.0, "right half": 3.0}})
    if progress is not None:
        progress(Progress("simulate", 1, 1, "done"))

    written = [out / "series", out / "sample.tissue.png", out / "sample.grid.csv", half_path]
    rc = 0
    try:
        from napari_focusq.models import load_model

        mdl = load_model(model)
        import importlib

        importlib.import_module("napari_focusq.scoring.pipeline")
    except Exception as exc:  # the demo data above is still useful without a model
        log(f"scoring skipped: no model/pipeline available ({type(exc).__name__}: {exc})")
        rc = 1
    else:
        tsv = out / "results.tsv"
        for path, stem in ((sample, "sample"), (half_path, "sample_half_defocused")):
            row, paths = score_to_outputs(path, out, stem, model=mdl, progress=progress, results_tsv=tsv)
            if row["status"] != "ok":
                log(f"{path}: {row['error']}")
                rc = 1
                continue
            log(f"{stem}: median {row['median_um']} µm, p90 {row['p90_um']} µm, "
                f"excluded {row['excluded_pct']}% -> {'pass' if row['pass'] == 'yes' else 'FAIL'}")
        written.append(tsv)
    log("outputs in " + str(out) + ":\n" + "\n".join(f"  {p.relative_to(out)}" for p in written))
    return rc
