"""Stain re-composition for training: H&E tissue re-stained as an IHC section would look.

Most real in-focus images we can train on are H&E, but a large share of the slides
scored are IHC (DAB on a pale haematoxylin counterstain). The content differs where
the model looks: H&E fills the tile with eosin texture, an IHC section is sparse nuclei
on nearly white stroma with a few very dark DAB-positive nuclei, so its power spectrum
falls differently and a model trained on H&E alone reads it as sharper near focus and
blurrier far from it. Re-composing H&E in haematoxylin-eosin-DAB optical density space
(Ruifrok & Johnston colour deconvolution; stain augmentation in HED space after Tellez
et al. 2018) gives the model that kind of content without any new slide. It is applied
to the in-focus tile, before the simulated defocus, as a different stain would be.
"""
from __future__ import annotations

import numpy as np


def ihc_like(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An uint8 RGB H&E tile re-stained as IHC: no eosin, pale counterstain, some DAB nuclei."""
    from scipy import ndimage as ndi
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(tile)
    h = np.clip(hed[..., 0], 0, None)
    ref = float(np.percentile(h, 99)) + 1e-6
    # A power > 1 on the haematoxylin density keeps nuclei and fades the cytoplasm's
    # faint counterstain, as in IHC where there is no eosin to fill the stroma.
    h = (h / ref) ** rng.uniform(1.5, 3.0) * ref * rng.uniform(0.5, 1.2)
    # DAB-positive nuclei: whole nuclei (components of the smoothed counterstain), a
    # random share of them, stained darker than the counterstain.
    smooth = ndi.gaussian_filter(h, 1.5)
    labels, n = ndi.label(smooth > np.percentile(smooth, 80))
    positive = np.r_[False, rng.random(n) < rng.uniform(0.0, 0.5)]
    dab = ndi.gaussian_filter(positive[labels].astype(np.float64), 1.0)
    out = np.stack([h * (1 - dab), hed[..., 1] * rng.uniform(0.0, 0.15), h * dab * rng.uniform(1.0, 2.5)], -1)
    return (np.clip(hed2rgb(out), 0, 1) * 255).round().astype(np.uint8)
