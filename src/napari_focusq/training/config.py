"""What a training run is: TrainConfig (checked on creation, stored in the checkpoint), the presets' defaults,
and TrainingError.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from napari_focusq.config import MODALITIES
from napari_focusq.errors import TrainingError
from napari_focusq.models.registry import ARCHITECTURES, PRESETS

#: Pixel sizes of the shared real images whose files do not record one (README of the data).


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
    scale_jitter: float = 1.6
    #: Options of the preset's architecture (models.build_module), e.g. {"quadrants": True}.
    arch: dict = field(default_factory=dict)
    ihc_like: float = 0.0
    #: Fluorescence: photons at a tile's bright end (99.5th percentile), log-uniform in this range.
    photons: tuple[float, float] = (20.0, 20000.0)
    #: Fluorescence: share of tiles left without noise (denoised, deconvolved, heavily averaged data).
    noise_free: float = 0.0
    #: Share of tiles simulated as thick sections (layered.random_specimen): the tile is the
    #: bulk, 1-3 in-focus crops of the same split's images are faint layers at other depths.
    layered: float = 0.0
    #: Thick sections as extra training tiles, beside (not instead of) the thin ones: this many
    #: per source image, as a share of samples_per_image, made after the thin tiles from a
    #: stream of their own, so the thin tiles, the validation tiles (thin: best epoch,
    #: calibration and certainty) and every other recipe's draws are unchanged (0 = off;
    #: DESIGN-NOTES "Thick sections, round 3").
    layered_extra: float = 0.0
    #: Loss weight of each extra thick-section tile (the thin tiles weigh 1).
    layered_weight: float = 1.0
    #: > 0: an extra thick-section tile is penalised only where it reads below this share of its
    #: truth (a one-sided hinge), so it pushes a faint sharp layer's reading up and nothing else.
    layered_hinge: float = 0.0
    #: With the hinge: an extra tile is also penalised where it reads more than this many µm
    #: above its truth (None = never), so an in-focus bulk under a faint blurred layer keeps
    #: a near-zero reading (round 5; the hinge alone leaves it free). Off in the recipe: on
    #: validation it cost the layered readings and did not move that miss (DESIGN-NOTES).
    layered_over: float | None = None
    #: The extra tiles' specimen: "sections" (layered.random_specimen, 1-3 faint layers of the
    #: split's images) or "one_faint" (layered.one_faint_specimen: one faint layer of another
    #: image of the split, the bulk stays the best plane).
    layered_kind: str = "sections"
    #: A thick section is stained as one: where its bulk is re-stained as IHC (ihc_like), its
    #: faint layers are re-stained with the same stain draw (round 6). False: the layers keep
    #: their own (H&E) stain over an IHC bulk, as rounds 1-5 trained.
    layered_one_stain: bool = False
    #: Soft in-focus specimens with a sharp grain (training.grain) as extra thin tiles, per
    #: source image as a share of samples_per_image, at full weight (0 = off).
    grain_extra: float = 0.0

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise TrainingError(f"preset must be {' or '.join(PRESETS)}; got {self.preset!r}")
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
        if not (0 <= self.layered_extra <= 2 and 0 <= self.layered_weight <= 10 and 0 <= self.layered_hinge <= 1.5):
            raise TrainingError(f"layered_extra must be in [0, 2], layered_weight in [0, 10] and layered_hinge in "
                                f"[0, 1.5]; got {self.layered_extra}, {self.layered_weight}, {self.layered_hinge}")
        if self.layered_over is not None and not 0 <= self.layered_over <= 5:
            raise TrainingError(f"layered_over must be None or in [0, 5] µm; got {self.layered_over}")
        if not 0 <= self.grain_extra <= 2:
            raise TrainingError(f"grain_extra must be in [0, 2]; got {self.grain_extra}")
        if self.layered_kind not in ("sections", "one_faint"):
            raise TrainingError(f"layered_kind must be sections or one_faint; got {self.layered_kind!r}")
        if not 0 < self.z_max_um <= 30:
            raise TrainingError(f"z_max_um must be in (0, 30]; got {self.z_max_um}")
        self.images = [str(p) for p in self.images]
        self.val_images = [str(p) for p in self.val_images]


#: preset -> its training defaults (``epochs``, ``lr``, ``batch_size``), from the registry's table.
PRESET_DEFAULTS = {name: dict(a.training) for name, a in ARCHITECTURES.items()}
