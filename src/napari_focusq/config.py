"""Constants and validated settings shared by the CLI, the widgets and batch runs."""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

from napari_focusq.errors import ConfigError

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
        """Brightfield optics (RGB wavelengths), other fields as given."""
        return cls(**kw)

    @classmethod
    def fluorescence(cls, emission_um: float = 0.52, **kw) -> "Optics":
        """Fluorescence optics: one channel at the emission wavelength ``emission_um``."""
        return cls(wavelengths_um=(emission_um,), **kw)

    @classmethod
    def for_modality(cls, modality: str) -> "Optics":
        """The default optics of ``modality`` ("brightfield" or "fluorescence")."""
        if modality == "fluorescence":
            return cls.fluorescence()
        if modality == "brightfield":
            return cls.brightfield()
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")

    def to_dict(self) -> dict:
        """A JSON-ready dict (wavelengths as a list); :meth:`from_dict` reverses it."""
        d = asdict(self)
        d["wavelengths_um"] = list(self.wavelengths_um)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Optics":
        """The Optics of a dict made by :meth:`to_dict`."""
        d = dict(d)
        d["wavelengths_um"] = tuple(d["wavelengths_um"])
        return cls(**d)


@dataclass(frozen=True)
class ScoreConfig:
    """Settings of one scoring run, checked once and shared by every front end.

    ``focusq score``, ``focusq batch`` and the widgets build one (:meth:`from_options`,
    :meth:`from_args`) and hand it down to :func:`~napari_focusq.export.outputs.score_to_outputs`
    and the pipeline (:meth:`pipeline_kwargs`); batch records :meth:`resume_key` in its
    manifest, so a slide is redone exactly when a setting that changes its outputs changed.

    Parameters
    ----------
    pixel_size_um
        Level-0 pixel size in µm; None = from the file's metadata.
    modality
        "auto", "brightfield" or "fluorescence".
    model
        Shipped model name, checkpoint path, or a loaded model.
    threshold_um
        Tiles further from focus are excluded; a slide passes if its p90 is within it.
    slice
        z-stacks: "auto" (the sharpest plane), "per-tile", or a plane index.
    level
        Pyramid level to read; None = the one nearest the working resolution.
    min_tissue
        Tiles with less tissue (or signal) than this fraction are not scored; None = the
        modality's default (:data:`MIN_TISSUE_FRACTION` for brightfield).
    optics
        The user's objective: any of ``na``, ``immersion``, ``wavelength_um``; None = from
        each file or the model.

    Raises
    ------
    ConfigError
        A bad value; ``.field`` names the setting.
    """

    pixel_size_um: float | None = None
    modality: str = "auto"
    model: object = "default"
    threshold_um: float = DEFAULT_THRESHOLD_UM
    slice: str | int = "auto"
    level: int | None = None
    min_tissue: float | None = None
    optics: dict | None = None

    def __post_init__(self):
        def bad(name, why):
            raise ConfigError(name, f"{why}; got {getattr(self, name)!r}")

        if self.pixel_size_um is not None and not _finite_positive(self.pixel_size_um):
            bad("pixel_size_um", "pixel size must be a positive number of µm")
        if self.modality not in ("auto", *MODALITIES):
            bad("modality", "modality must be auto, brightfield or fluorescence")
        if not _finite_positive(self.threshold_um):
            bad("threshold_um", "threshold must be > 0 µm")
        if self.min_tissue is not None and not (isinstance(self.min_tissue, numbers.Real)
                                                and 0 <= self.min_tissue <= 1):
            bad("min_tissue", "minimum tissue fraction must be in [0, 1]")
        if self.level is not None and not (isinstance(self.level, numbers.Integral) and self.level >= 0):
            bad("level", "level must be a pyramid level index >= 0")
        sl = self.slice
        if isinstance(sl, str) and sl not in ("auto", "per-tile"):
            try:
                object.__setattr__(self, "slice", int(sl))
            except ValueError:
                bad("slice", "slice must be auto, per-tile or a plane index")
        elif not isinstance(sl, (str, numbers.Integral)) or isinstance(sl, bool):
            bad("slice", "slice must be auto, per-tile or a plane index")
        if self.optics is not None:
            if not isinstance(self.optics, dict) or set(self.optics) - set(OPTICS_KEYS):
                bad("optics", f"optics must be a dict with any of {', '.join(OPTICS_KEYS)}")
            # {} and all-None mean "from the file or the model", as None does: one form of it
            object.__setattr__(self, "optics", {k: v for k, v in self.optics.items() if v is not None} or None)

    @classmethod
    def from_options(cls, **options) -> "ScoreConfig":
        """A validated config from keyword options; an unknown option is a ConfigError naming it."""
        names = {f.name for f in fields(cls)}
        for k in options:
            if k not in names:
                raise ConfigError(k, f"unknown scoring option {k!r}; expected one of {', '.join(sorted(names))}")
        return cls(**options)

    @classmethod
    def from_args(cls, args) -> "ScoreConfig":
        """The config of parsed ``focusq score``/``batch`` arguments (argparse names)."""
        optics = {"na": getattr(args, "na", None), "immersion": getattr(args, "immersion", None),
                  "wavelength_um": getattr(args, "wavelength", None)}
        return cls(pixel_size_um=getattr(args, "pixel_size", None), modality=getattr(args, "modality", "auto"),
                   model=getattr(args, "model", "default"),
                   threshold_um=getattr(args, "threshold_um", DEFAULT_THRESHOLD_UM),
                   slice=getattr(args, "slice", "auto"), level=getattr(args, "level", None), optics=optics)

    def pipeline_kwargs(self) -> dict:
        """Keyword arguments of ``scoring.pipeline.iter_score_slide`` (all but ``threshold_um``)."""
        return {"pixel_size_um": self.pixel_size_um, "modality": self.modality, "model": self.model,
                "level": self.level, "slice": self.slice, "min_tissue": self.min_tissue, "optics": self.optics}

    def resume_key(self) -> dict:
        """What batch's manifest records of the settings (the model is recorded by its fingerprint).

        The keys and their order are those of earlier versions, so a run resumed after an
        upgrade still skips its finished slides; ``min_tissue`` appears only when set.
        """
        key = {"threshold_um": self.threshold_um, "pixel_size_um": self.pixel_size_um,
               "modality": self.modality, "level": self.level, "slice": self.slice, "optics": self.optics}
        if self.min_tissue is not None:
            key["min_tissue"] = self.min_tissue
        return key


#: The keys of :attr:`ScoreConfig.optics` (``--na``, ``--immersion``, ``--wavelength``).
OPTICS_KEYS = ("na", "immersion", "wavelength_um")


def _finite_positive(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < float("inf")
