"""What real scans add to a simulated tile: stain/brightness variation, sensor noise, JPEG at scanner
qualities (the stain model itself is :mod:`napari_focusq.training.stain`).
"""
from __future__ import annotations

import io as _io
import math

import numpy as np

#: Pixel sizes of the shared real images whose files do not record one (README of the data).


def _jpeg(tile: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(tile).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf))


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
