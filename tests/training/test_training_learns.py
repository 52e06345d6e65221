"""Training learns: a few CPU epochs on real tissue rank held-out defocus far above chance.

The other training tests check the machinery (files, cancel, resume); this one checks the
result. Two crops of the sample slide train a `fast` head; the third crop (another part of
the slide, not trained on) is the validation image.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from napari_focusq.training.config import TrainConfig
from napari_focusq.training.fit import iter_fit


@pytest.mark.slow
def test_a_few_epochs_rank_held_out_defocus(tmp_path, train_images):
    paths, px = train_images
    cfg = TrainConfig(images=paths[:2], val_images=paths[2:], out=str(tmp_path / "m.safetensors"), epochs=15, batch_size=16,
                      samples_per_image=64, val_samples_per_image=48, z_max_um=6.0, pixel_sizes=px, seed=0)
    gen, first, last = iter_fit(cfg), None, None
    try:
        while True:
            ev = next(gen)
            if ev.stage == "train":
                first = first or ev.data
                last = ev.data
    except StopIteration:
        pass
    rho_last = spearmanr(last["val_pred"], last["val_true"]).statistic
    rho_first = spearmanr(first["val_pred"], first["val_true"]).statistic
    # Floor 0.9: the spectral front end makes |z| nearly monotone in the features (the
    # shipped recipe reaches 0.99 on validation), so a head that learned anything ranks 48
    # held-out tiles far above 0.9; a head that learned nothing ranks at chance (|rho| ~
    # 1/sqrt(47) ~ 0.15) and a constant output has no ranking at all (NaN fails too).
    assert rho_last > 0.9, (rho_first, rho_last)
    # And the validation error fell with training (measured: 1.32 -> 0.19 µm MAE, Spearman
    # 0.77 -> 0.99 over the 15 epochs): the last epoch beats the first.
    assert last["val_mae"] < first["val_mae"], (first["val_mae"], last["val_mae"])
    assert np.isfinite(last["loss"])
