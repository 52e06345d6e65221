"""Constants and validated settings shared by the CLI, the widgets and batch runs."""
from __future__ import annotations

from dataclasses import dataclass, field, asdict

#: The model's working resolution: the founding paper's 20x, 0.5 µm per pixel.
WORKING_PIXEL_UM = 0.5
#: Tile edge, in working-resolution pixels (the founding paper's 320 x 320 patches).
TILE_PX = 320
#: Tiles with less tissue than this are not scored (NaN in the map).
MIN_TISSUE_FRACTION = 0.25
#: Default QC threshold: tiles predicted further than this from focus are excluded.
DEFAULT_THRESHOLD_UM = 2.0

MODALITIES = ("brightfield", "fluorescence")


@dataclass(frozen=True)
class Optics:
    """Widefield imaging optics used to simulate defocus.

    Parameters
    ----------
    na
        Numerical aperture of the objective.
    n
        Refractive index of the immersion medium (1.0 for a dry objective).
    wavelengths_um
        One wavelength per image channel, in µm. Brightfield RGB defaults to
        0.61/0.54/0.47 µm; fluorescence to the emission wavelength.
    oversample
        How much finer than the pixels the PSF is computed before it is
        integrated over each pixel.
    """

    na: float = 0.75
    n: float = 1.0
    wavelengths_um: tuple[float, ...] = (0.61, 0.54, 0.47)
    oversample: int = 5

    def __post_init__(self):
        if not 0 < self.na < self.n:
            raise ValueError(f"NA must be in (0, n={self.n}); got {self.na}")
        if not self.wavelengths_um or any(w <= 0 for w in self.wavelengths_um):
            raise ValueError(f"wavelengths must be positive µm values; got {self.wavelengths_um}")
        if self.oversample < 1:
            raise ValueError(f"oversample must be >= 1; got {self.oversample}")

    @classmethod
    def brightfield(cls, **kw) -> "Optics":
        return cls(**kw)

    @classmethod
    def fluorescence(cls, emission_um: float = 0.52, **kw) -> "Optics":
        return cls(wavelengths_um=(emission_um,), **kw)

    @classmethod
    def for_modality(cls, modality: str) -> "Optics":
        if modality == "fluorescence":
            return cls.fluorescence()
        if modality == "brightfield":
            return cls.brightfield()
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["wavelengths_um"] = list(self.wavelengths_um)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Optics":
        d = dict(d)
        d["wavelengths_um"] = tuple(d["wavelengths_um"])
        return cls(**d)


@dataclass
class ScoreConfig:
    """Settings of one scoring run, checked once and shared by every front end."""

    pixel_size_um: float | None = None
    modality: str = "auto"
    model: str = "default"
    threshold_um: float = DEFAULT_THRESHOLD_UM
    slice: str | int = "auto"
    level: int | None = None
    min_tissue: float = MIN_TISSUE_FRACTION
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.pixel_size_um is not None and not (self.pixel_size_um > 0):
            raise ValueError(f"pixel size must be a positive number of µm; got {self.pixel_size_um}")
        if self.modality not in ("auto", *MODALITIES):
            raise ValueError(f"modality must be auto, brightfield or fluorescence; got {self.modality!r}")
        if not self.threshold_um > 0:
            raise ValueError(f"threshold must be > 0 µm; got {self.threshold_um}")
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"minimum tissue fraction must be in [0, 1]; got {self.min_tissue}")
        if isinstance(self.slice, str) and self.slice not in ("auto", "per-tile"):
            try:
                self.slice = int(self.slice)
            except ValueError:
                raise ValueError(f"slice must be auto, per-tile or an index; got {self.slice!r}") from None
