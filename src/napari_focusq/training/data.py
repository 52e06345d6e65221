"""Simulated-defocus datasets from in-focus images.

Tiles come from in-focus images, resampled to the working resolution, and are
defocused by the optical model (or the founding paper's Gaussian levels) at a
continuous |z|, then degraded as real scans are (:mod:`napari_focusq.training.augment`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM, Optics
from napari_focusq.progress import Progress

#: Pixel sizes of the shared real images whose files do not record one (README of the data).
from napari_focusq.training.augment import _degrade
from napari_focusq.training.config import TrainConfig, TrainingError

#: Pixel sizes of the shared real images whose files do not record one (README of the data).
KNOWN_PIXEL_UM = {
    "histolytics_hgsc_nest_HE.jpg": 0.33, "histolytics_hgsc_stroma_HE.jpg": 0.38,
    "histoprep_prostate_HE.jpeg": 0.55, "liverquant_tile02_picrosiriusred.jpg": 1.012,
    "torchstain_source_HE.png": 0.85, "torchstain_target_HE.png": 0.93,
    "histoqc_template1.png": 0.5, "histoqc_template2.png": 0.5, "histoqc_template3.png": 0.5,
    "histoqc_template4.png": 0.5, "ihc_skimage.png": 0.5,
    "cellprofiler_ExampleHuman_D03f00d0_DNA.tif": 0.9, "cellprofiler_ExampleHuman_D03f00d2_actin.tif": 0.9,
    "cellprofiler_ExampleFly_01_POS002_D_DNA.tif": 0.36, "nuclei_dsb2018.tif": 0.5,
    "mahotas_nuclear.png": 0.14, "bbbc022_IXMtest_A02_s9_crop.tif": 0.4, "ndev_neocortex-3Ch.ome.tiff": 0.46,
    "cellprofiler_ExampleSpeckles_1-162hrhoe2_Hoechst.tif": 0.07,
    "cellprofiler_ExampleSpeckles_1-162hrh2ax2_gH2AX.tif": 0.07,
    # The project's own images (data/README.md); the oiffile test image records its own.
    "spotiflow_terra_2d.tif": 0.08, "spotiflow_hybiss_2d.tif": 0.18, "bbbc007_A9_p10d.tif": 0.36,
    "bbbc007_20P1_POS0007_D_1UL.tif": 0.36, "bbbc007_17P1_POS0007_D_1UL.tif": 0.36,
}
#: Least side (working px) of an image that training / evaluation samples tiles from.
MIN_IMAGE_PX = TILE_PX // 4


# ---------------------------------------------------------------------------- data
def load_training_image(path, modality: str, pixel_sizes: dict | None = None) -> np.ndarray:
    """An in-focus image at the working resolution (uint8 RGB brightfield; float32 fluorescence plane).

    Fluorescence: a multichannel image gives the maximum over its channels.
    """
    return load_training_planes(path, modality, pixel_sizes)[0]


def _pixel_um(path: Path, src, pixel_sizes: dict | None) -> float | None:
    """µm per pixel: the user's value wins over the file's, as --pixel-size does when
    scoring; the file's over our estimates (KNOWN_PIXEL_UM)."""
    given = (pixel_sizes or {}).get(path.name)
    if given:
        return float(given)
    if src.pixel_size_um is not None and path.name not in KNOWN_PIXEL_UM:
        return float(src.pixel_size_um)
    return KNOWN_PIXEL_UM.get(path.name)


def zoom_in_factors(zoom_in: float) -> tuple[float, ...]:
    """Magnifications at which every source is also sampled (content zoom-in). One: a
    second copy at sqrt(zoom_in) measured no better (DESIGN-NOTES, round 4)."""
    return (zoom_in,) if zoom_in and zoom_in >= 1.2 else ()


def magnified_min_z(magnification: float, optics: Optics, pixel_um: float = WORKING_PIXEL_UM) -> float:
    """The least defocus (µm) a source magnified ``magnification`` times is used at.

    Magnifying a scan magnifies its own blur too: its diffraction (FWHM 0.51 λ/NA, longest
    wavelength) and its pixels, which add roughly in quadrature. Beyond what an in-focus
    image at the working pixel size has, the extra blur makes a magnified copy look
    defocused: the previous model read OS-1 (0.227 µm) magnified 2.2x +0.67 µm at z < 0.5
    (1.48x: +0.38; unmagnified +0.06). Labelled 0, such tiles teach "soft is in focus". A
    magnified copy therefore only gets a defocus whose geometric blur diameter
    (2 z tan(asin(NA/n))) is at least four times that extra blur: with the brightfield
    optics 1.4 µm for OS-1 (0.227 µm) at 2.2x, 2.0 / 3.2 µm for a 0.5 µm scan at 2x / 3x.
    """
    if magnification <= 1:
        return 0.0
    d = 0.51 * max(optics.wavelengths_um) / optics.na
    extra = math.sqrt(max(0.0, (magnification * math.hypot(d, pixel_um)) ** 2 - d * d - WORKING_PIXEL_UM ** 2))
    return 4 * extra / (2 * math.tan(math.asin(optics.na / optics.n)))


def _distinct_channels(img: np.ndarray) -> list[np.ndarray]:
    """The channel planes of (H, W, C), leaving out copies: a grey image saved as RGB is one
    specimen, not three (it would triple that image's share of tiles)."""
    planes: list[np.ndarray] = []
    for c in range(img.shape[-1]):
        if not any(np.array_equal(img[..., c], q) for q in planes):
            planes.append(img[..., c])
    return planes


def load_training_planes(path, modality: str, pixel_sizes: dict | None = None, *,
                         split_channels: bool = False, zoom_in: float = 0.0, with_scales: bool = False) -> list:
    """:func:`load_training_image`, or with ``split_channels`` (fluorescence) one plane per
    channel of a multichannel image: the file is read once either way. With ``zoom_in``
    the planes are followed by magnified copies (:func:`zoom_in_factors`); ``with_scales``
    gives (magnification, native µm per pixel, plane) triples."""
    import warnings

    from napari_focusq.io.formats import open_image
    from napari_focusq.scoring.resample import resample_to_working

    path = Path(path)
    with open_image(path) as src:
        px = _pixel_um(path, src, pixel_sizes)
        if px is None:
            raise TrainingError(f"{path}: pixel size unknown; give it in pixel_sizes / --pixel-size")
        if src.n_z > 1:
            from napari_focusq.scoring.focus import sharpest_slice

            z, _ = sharpest_slice(src)
            img = src.read_plane(z)
        else:
            img = src.read_plane()
    if modality == "brightfield":
        if img.ndim != 3 or img.shape[-1] < 3:
            raise TrainingError(f"{path}: brightfield training wants RGB images; got shape {img.shape}")
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = np.clip(img.astype(np.float32) / (np.iinfo(img.dtype).max if img.dtype.kind in "ui" else 1) * 255,
                          0, 255).astype(np.uint8)
        planes = [img]
    else:
        img = img.astype(np.float32)
        if img.ndim == 3 and img.shape[-1] <= 4:
            planes = _distinct_channels(img) if split_channels else [img.max(-1)]
        else:
            planes = [img.mean(-1) if img.ndim == 3 else img]
    # Magnified by f, a native pixel stands for f times its size and the content grows.
    scales = (1.0, *zoom_in_factors(zoom_in))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = [(f, px, resample_to_working(p, px * f)) for f in scales for p in planes]
    small = min(out[0][2].shape[:2])
    if small < MIN_IMAGE_PX:  # a 1 x 1 image gave metrics for tiles mirrored from one pixel
        raise TrainingError(f"{path}: {out[0][2].shape[0]} x {out[0][2].shape[1]} px at the working "
                            f"{WORKING_PIXEL_UM} µm/px; training and evaluation need at least "
                            f"{MIN_IMAGE_PX} x {MIN_IMAGE_PX} (a quarter tile) of real image")
    return out if with_scales else [p for _, _, p in out]


def _shrink_to_tile(crop: np.ndarray, tile_px: int) -> np.ndarray:
    """A square in-focus crop larger than a tile, area-averaged down to one tile: still in
    focus, with finer structure than the source (content-scale jitter and zoom-out)."""
    from napari_focusq.scoring.resample import resample_to_working

    return resample_to_working(crop, WORKING_PIXEL_UM * tile_px / len(crop), out_shape=(tile_px, tile_px))


def sample_tiles(image: np.ndarray, n: int, rng: np.random.Generator, cfg: TrainConfig,
                 tile_px: int = TILE_PX, *, z_min: float = 0.0, pool=None,
                 transform=None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` defocused, degraded tiles of one in-focus image, with their |z| (µm) in
    [z_min, cfg.z_max_um] (z_min: see :func:`magnified_min_z`). With ``cfg.layered`` and a
    ``pool`` of in-focus crops (:func:`layer_pool`), that share of tiles are thick sections:
    |z| is then the focal plane's distance to the specimen's best plane. ``transform(tile, rng)``
    (e.g. :func:`~napari_focusq.training.grain.soft_with_grain`) remakes each in-focus crop
    before its defocus."""
    from napari_focusq.optics.layered import one_faint_specimen, random_specimen, simulate_layered
    from napari_focusq.optics.psf import simulate_defocus
    from napari_focusq.scoring.tissue import estimate_white_level, tissue_fraction
    from napari_focusq.training.stain import ihc_like

    H, W = image.shape[:2]
    if H < tile_px or W < tile_px:
        pad = [(0, max(0, tile_px - H)), (0, max(0, tile_px - W))] + [(0, 0)] * (image.ndim - 2)
        image = np.pad(image, pad, mode="reflect")
        H, W = image.shape[:2]
    white = estimate_white_level(image) if cfg.modality == "brightfield" else None
    optics = Optics.for_modality(cfg.modality)
    zoom_src = None
    if cfg.zoom_out and cfg.zoom_out > 1:
        # Content zoom-out (fluorescence recipe): a crop up to zoom_out tiles wide, mirrored
        # where the image is smaller, area-averaged down to the tile. Still in focus, but
        # with finer and denser structure than the source, so the model cannot read a
        # specimen rich in fine detail as sharper than it is.
        side_max = int(tile_px * cfg.zoom_out) + 1
        h0, w0 = image.shape[:2]
        zpad = [(0, max(0, side_max - h0)), (0, max(0, side_max - w0))] + [(0, 0)] * (image.ndim - 2)
        zoom_src = np.pad(image, zpad, mode="symmetric")
    tiles = np.empty((n, tile_px, tile_px) + image.shape[2:], image.dtype)
    zs = np.empty(n, np.float32)
    i, tries = 0, 0
    # A crop's tissue fraction depends only on its position: small images (one or a few
    # positions) would otherwise recompute it for every rejected try.
    seen: dict = {}
    while i < n:
        tries += 1
        zoomed = zoom_src is not None and rng.random() < 0.6
        if zoomed:
            side = int(tile_px * rng.uniform(1.0, cfg.zoom_out))
            y = rng.integers(0, zoom_src.shape[0] - side + 1)
            x = rng.integers(0, zoom_src.shape[1] - side + 1)
            t = _shrink_to_tile(zoom_src[y:y + side, x:x + side], tile_px)
            if tries < 50 * n and tissue_fraction(t, cfg.modality, white_level=white) < cfg.min_tissue:
                continue
        else:
            y, x = rng.integers(0, H - tile_px + 1), rng.integers(0, W - tile_px + 1)
            t = image[y:y + tile_px, x:x + tile_px]
            if tries < 50 * n:
                if (y, x) not in seen:
                    seen[(y, x)] = tissue_fraction(t, cfg.modality, white_level=white)
                if seen[(y, x)] < cfg.min_tissue:
                    continue
        if cfg.scale_jitter and not zoomed and rng.random() < 0.5:
            # Content-scale jitter: a larger crop area-averaged down to the tile is still in
            # focus but has finer structure, so the model cannot learn "small = sharp".
            f = rng.uniform(1.0, cfg.scale_jitter)
            side = min(H - y, W - x, int(tile_px * f))
            if side > tile_px:
                t = _shrink_to_tile(image[y:y + side, x:x + side], tile_px)
        stain = None  # the stain draw a thick section's layers share with its bulk (layered_one_stain)
        if cfg.modality == "brightfield" and cfg.ihc_like and rng.random() < cfg.ihc_like:
            if cfg.layered_one_stain and cfg.layered and pool is not None:
                stain = int(rng.integers(2**32))
                t = ihc_like(np.ascontiguousarray(t), np.random.default_rng(stain))
            else:
                t = ihc_like(np.ascontiguousarray(t), rng)
        if transform is not None:
            t = transform(np.ascontiguousarray(t), rng)
        t = np.rot90(t, rng.integers(4))
        if rng.random() < 0.5:
            t = t[::-1]
        # Mostly uniform over the range, with extra weight near focus where QC decisions are made.
        z = rng.uniform(0, cfg.z_max_um) if rng.random() < 0.8 else rng.uniform(0, 1.5)
        if z_min:
            z = z_min + z * (1 - z_min / cfg.z_max_um)  # the same shape of draw, squeezed above z_min
        z = round(z / 0.05) * 0.05
        if cfg.layered and pool is not None and len(pool) and rng.random() < cfg.layered:
            def as_bulk(layer, stain=stain):  # the bulk's stain, when it was re-stained (layered_one_stain)
                return layer if stain is None else ihc_like(layer, np.random.default_rng(stain))

            if cfg.layered_kind == "one_faint":
                faint = as_bulk(_orient(pool[rng.integers(0, len(pool))], rng))
                layers, focus = one_faint_specimen(np.ascontiguousarray(t), faint, z, rng, modality=cfg.modality)
            else:
                extras = [as_bulk(_orient(pool[j], rng)) for j in rng.integers(0, len(pool), rng.integers(1, 4))]
                layers, focus = random_specimen(np.ascontiguousarray(t), extras, z, rng, modality=cfg.modality)
            b = simulate_layered(layers, focus, pixel_size_um=WORKING_PIXEL_UM, modality=cfg.modality,
                                 optics=optics, method=cfg.blur)[0].astype(np.float32)
        else:
            b = simulate_defocus(np.ascontiguousarray(t), z, pixel_size_um=WORKING_PIXEL_UM, modality=cfg.modality,
                                 optics=optics, method=cfg.blur).astype(np.float32)
        tiles[i] = _degrade(b, rng, cfg)
        zs[i] = z
        i += 1
    return tiles, zs


def _orient(t: np.ndarray, rng) -> np.ndarray:
    t = np.rot90(t, rng.integers(4))
    return np.ascontiguousarray(t[::-1] if rng.random() < 0.5 else t)


def layer_pool(planes, rng: np.random.Generator, cfg: TrainConfig, per_plane: int = 48,
               tile_px: int = TILE_PX, *, with_sources: bool = False):
    """In-focus crops (tiles with at least cfg.min_tissue of tissue) of every plane: the faint
    layers of thick-section tiles, drawn from the same split's images (never across it).
    ``with_sources`` also gives each crop's plane index (None, None when there are none)."""
    from napari_focusq.scoring.tissue import estimate_white_level, tissue_fraction

    crops, srcs = [], []
    for k, img in enumerate(planes):
        H, W = img.shape[:2]
        if H < tile_px or W < tile_px:
            continue
        white = estimate_white_level(img) if cfg.modality == "brightfield" else None
        got = 0
        for _ in range(per_plane * 10):
            y, x = rng.integers(0, H - tile_px + 1), rng.integers(0, W - tile_px + 1)
            c = img[y:y + tile_px, x:x + tile_px]
            if tissue_fraction(c, cfg.modality, white_level=white) >= cfg.min_tissue:
                crops.append(np.array(c))
                srcs.append(k)
                got += 1
                if got == per_plane:
                    break
    stack = np.stack(crops) if crops else None
    if with_sources:
        return stack, (np.array(srcs) if crops else None)
    return stack


def iter_layered_extra(paths, per_image: int, cfg: TrainConfig, seed: int, stage: str = "thick sections",
                       kind: str = "layered"):
    """Yield Progress while making cfg.layered_extra's thick-section tiles; return (tiles, z,
    source index) as :func:`iter_dataset`. ``kind="grain"``: cfg.grain_extra's thin tiles of
    soft specimens with a sharp grain (:mod:`napari_focusq.training.grain`) instead.

    ``round(cfg.layered_extra * per_image)`` tiles an image, from the images as they are (no
    magnified copies: a magnified bulk under faint layers cut at the working scale would mix
    two magnifications in one section). Their faint layers come from this split's images
    only; with ``layered_kind="one_faint"`` from another image than the bulk's. Its own random
    stream (``seed``): the thin tiles of a run are the same with or without these.
    """
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    n = int(round((cfg.grain_extra if kind == "grain" else cfg.layered_extra) * per_image))
    if n < 1 or not paths:
        return (np.empty((0, TILE_PX, TILE_PX, 3), np.uint8), np.empty(0, np.float32), np.empty(0, int))
    planes = []
    for k, p in enumerate(paths):
        yield Progress(stage, k, 2 * len(paths), f"layers from {Path(p).name}")
        planes.append(load_training_planes(p, cfg.modality, cfg.pixel_sizes)[0])
    transform = None
    if kind == "grain":
        from napari_focusq.training.grain import soft_with_grain as transform

        pool, psrc, lcfg = None, None, replace(cfg, layered=0.0)
    else:
        pool, psrc = layer_pool(planes, np.random.default_rng(rng.integers(2**32)), cfg, with_sources=True)
        lcfg = replace(cfg, layered=1.0)
    xs, zs, src = [], [], []
    for k, img in enumerate(planes):
        yield Progress(stage, len(paths) + k, 2 * len(paths), f"thick sections of {Path(paths[k]).name}")
        own = pool if cfg.layered_kind == "sections" or pool is None else pool[psrc != k]
        t, z = sample_tiles(img, n, np.random.default_rng(rng.integers(2**32)), lcfg,
                            pool=own if own is not None and len(own) else pool, transform=transform)
        xs.append(t), zs.append(z), src.append(np.full(len(z), k))
    yield Progress(stage, 2 * len(paths), 2 * len(paths), "done")
    return np.concatenate(xs), np.concatenate(zs), np.concatenate(src)


def iter_dataset(paths, per_image: int, cfg: TrainConfig, seed: int, stage: str, *, magnify: bool = True):
    """Yield Progress while building tiles from ``paths``; return (tiles, z, source index).

    ``magnify=False`` leaves out cfg.zoom_in's magnified copies (validation is scored on
    the images as they are)."""
    rng = np.random.default_rng(seed)
    optics = Optics.for_modality(cfg.modality)
    xs, zs, src = [], [], []
    plane = 0
    split = cfg.split_channels and cfg.modality == "fluorescence"
    pool = None
    if cfg.layered:
        # Thick-section layers come from every image of this split: one pass first.
        prng = np.random.default_rng(rng.integers(2**32))
        planes_all = []
        for k, p in enumerate(paths):
            yield Progress(stage, k, len(paths), f"layers from {Path(p).name}")
            planes_all += load_training_planes(p, cfg.modality, cfg.pixel_sizes, split_channels=split)
        pool = layer_pool(planes_all, prng, cfg)
        del planes_all
    for k, p in enumerate(paths):
        yield Progress(stage, k, len(paths), f"tiles from {Path(p).name}")
        # With split_channels each channel is a specimen of its own (nuclei, actin,
        # neurites...); a multichannel image gets up to twice the tiles of a single-channel one.
        planes = load_training_planes(p, cfg.modality, cfg.pixel_sizes, split_channels=split,
                                      zoom_in=cfg.zoom_in if magnify else 0.0, with_scales=True)
        # Split channels share one image's budget; a magnified copy (zoom_in) is a source with
        # cfg.zoom_in_share of its plane's tiles.
        n_chan = sum(f == 1.0 for f, _, _ in planes)
        n_tiles = per_image if n_chan == 1 else max(per_image // n_chan, per_image // 2)
        for i, (f, px, img) in enumerate(planes):
            n = n_tiles if f == 1.0 else max(1, int(n_tiles * cfg.zoom_in_share))
            t, z = sample_tiles(img, n, np.random.default_rng(rng.integers(2**32)), cfg,
                                z_min=magnified_min_z(f, optics, px), pool=pool)
            xs.append(t)
            zs.append(z)
            # The source index is the image's, or the channel's when channels are split; a
            # magnified copy keeps its specimen's (planes come scale by scale, channels within).
            src.append(np.full(len(z), plane + i % n_chan if cfg.split_channels else k))
        plane += n_chan
    yield Progress(stage, len(paths), len(paths), "done")
    return np.concatenate(xs), np.concatenate(zs), np.concatenate(src)
