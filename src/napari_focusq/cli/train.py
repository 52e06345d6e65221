"""``focusq train``: the command's arguments -> the TrainConfig it runs, and the run."""
from __future__ import annotations

import json
from pathlib import Path

#: Pixel sizes of the shared real images whose files do not record one (README of the data).
from napari_focusq.io.formats import find_images
from napari_focusq.training.config import TrainConfig, TrainingError
from napari_focusq.training.fit import iter_fit
from napari_focusq.training.recipes import BRIGHTFIELD_ARCH, RECIPES


def _expand(paths) -> list[str]:
    out = []
    for d in paths:
        p = Path(d)
        out += [str(q) for q in find_images(p)] if p.is_dir() else [str(p)]
    return out


def _guess_modality(path) -> str:
    from napari_focusq.io.formats import open_image
    from napari_focusq.scoring.tissue import detect_modality

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
        from napari_focusq.training.inception import main

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
