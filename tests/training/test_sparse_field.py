"""Sparse fields for fluorescence training: whole objects kept or removed, background kept."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_focusq.training.sparse_field import sparse_field
from napari_focusq.training.config import TrainConfig
from napari_focusq.training.data import sample_tiles


def _nuclei(n=60, side=320, seed=0):
    """Bright round nuclei (radius 6 px) with texture on a dim, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    img = np.full((side, side), 100.0, np.float32)
    placed = 0
    while placed < n:
        y, x = rng.integers(10, side - 10, 2)
        d = np.hypot(yy - y, xx - x)
        if (img[d < 9] > 100).any():
            continue
        img[d < 6] += 1000 + 300 * rng.random()
        placed += 1
    return img + rng.normal(0, 5, img.shape).astype(np.float32)


def _count(img):
    return ndi.label(img > 400)[1]


def test_keeps_a_share_of_whole_objects_on_the_background_level():
    img = _nuclei()
    out = sparse_field(img, np.random.default_rng(1))
    before, after = _count(img), _count(out)
    assert before == 60 and 0 < after <= 0.5 * before, (before, after)
    # Removed objects become background, kept ones keep their core intensity.
    assert abs(np.median(out) - np.median(img)) < 10
    kept = (out > 400) & (img > 400)
    assert np.allclose(out[kept], img[kept], rtol=0.02)
    # Seeded, and different seeds keep different objects.
    assert np.array_equal(out, sparse_field(img, np.random.default_rng(1)))
    assert not np.array_equal(out, sparse_field(img, np.random.default_rng(2)))


def test_flat_or_empty_tiles_pass_through():
    flat = np.full((64, 64), 50.0, np.float32)
    assert np.array_equal(sparse_field(flat, np.random.default_rng(0)), flat)


def test_sampler_makes_sparse_tiles_when_asked():
    img = _nuclei(n=120, side=640, seed=3)
    kw = dict(images=[], modality="fluorescence", z_max_um=0.01, min_tissue=0.0, scale_jitter=0.0)
    dense, _ = sample_tiles(img, 6, np.random.default_rng(0), TrainConfig(**kw, sparse=0.0))
    sparse, _ = sample_tiles(img, 6, np.random.default_rng(0), TrainConfig(**kw, sparse=1.0))
    bright = lambda tiles: np.mean([(t > 600).mean() for t in tiles])
    assert bright(sparse) < 0.5 * bright(dense)
