"""Soft specimens with a sharp grain, in focus: the thin case a thick-section model confuses.

A model taught that a faint sharp trace over a soft bulk is a defocused thick section reads
the real smear through-focus stack (``data/brightfield_through_focus``) as defocused near its
best plane: there its cells are soft at its own (magnified, unknown) pixel scale and a fine
grain (glass, mounting medium) is sharp over them, in the same plane (the grain blurs with
the cells away from focus). :func:`soft_with_grain` makes such specimens from training
tiles: the content magnified 2-4x (soft, as a magnified scan is), a fine grain of optical
density in the same plane, and half of them grey (luminance as RGB, as the smear is). They
are thin specimens: the whole plane is defocused by the tile's |z| afterwards, and the label
is that |z| (DESIGN-NOTES "Thick sections, round 3").
"""
from __future__ import annotations

import numpy as np


def soft_with_grain(tile: np.ndarray, rng: np.random.Generator, *, magnify: tuple[float, float] = (2.0, 4.0),
                    grain_od: tuple[float, float] = (0.01, 0.06), grey: float = 0.5) -> np.ndarray:
    """An uint8 RGB in-focus tile -> the same size: its centre magnified ``magnify`` times
    (bilinear), times a grain of optical density (white noise smoothed by 0.5-1 px, its
    standard deviation uniform in ``grain_od``), grey with probability ``grey``."""
    from scipy import ndimage as ndi

    h, w = tile.shape[:2]
    f = rng.uniform(*magnify)
    ch, cw = max(2, int(round(h / f))), max(2, int(round(w / f)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = tile[y:y + ch, x:x + cw].astype(np.float32)
    soft = ndi.zoom(crop, (h / ch, w / cw, 1), order=1, mode="nearest")[:h, :w]
    od = -np.log(np.clip(soft, 1.0, 255.0) / 255.0)
    g = ndi.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), rng.uniform(0.5, 1.0))
    g *= rng.uniform(*grain_od) / max(float(g.std()), 1e-6)
    od = od + g[..., None]
    if rng.random() < grey:
        od = np.repeat((od @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=-1)
    return np.clip(255.0 * np.exp(-od), 0, 255).round().astype(np.uint8)
