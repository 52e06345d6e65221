"""Accuracy on held-out images defocused at known |z|: the model's and the variance-of-Laplacian baseline's."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_focusq.progress import Progress

#: Pixel sizes of the shared real images whose files do not record one (README of the data).
from napari_focusq.training.config import TrainConfig
from napari_focusq.training.data import iter_dataset


# ---------------------------------------------------------------------------- evaluation
def iter_evaluate(model, images, *, modality="brightfield", per_image=200, z_max_um=6.0, seed=123,
                  blur="optical", pixel_sizes=None):
    """Defocus held-out images at known |z| (0..z_max), score them; return metrics of model and baseline."""
    from napari_focusq.models import load_model
    from napari_focusq.scoring.focus import variance_of_laplacian_batch
    from napari_focusq.training.metrics import ranking_metrics, regression_metrics

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
