"""H&E re-stained as IHC for training: eosin gone, glass still glass, used by the sampler."""
from __future__ import annotations

import numpy as np
from skimage.color import rgb2hed

from napari_focusq.training.config import TrainConfig
from napari_focusq.training.data import sample_tiles
from napari_focusq.training.stain import ihc_like


def _he_tile(slide_crop):
    return slide_crop(2000, 650, 320, 320)  # dense H&E tissue of the sample slide


def test_restained_tile_loses_eosin_keeps_nuclei_and_glass(slide_crop):
    tile = _he_tile(slide_crop)
    out = ihc_like(tile, np.random.default_rng(0))
    assert out.shape == tile.shape and out.dtype == np.uint8
    before, after = rgb2hed(tile), rgb2hed(out)
    # Eosin is what fills H&E stroma; IHC has none (at most 15 % of it is kept).
    assert np.clip(after[..., 1], 0, None).mean() < 0.2 * np.clip(before[..., 1], 0, None).mean()
    # Nuclei stay where they were: the darkest pixels of the counterstain overlap.
    h0, h1 = before[..., 0], after[..., 0] + after[..., 2]
    top0, top1 = h0 > np.percentile(h0, 95), h1 > np.percentile(h1, 95)
    assert (top0 & top1).sum() > 0.5 * top0.sum()
    # The section gets paler overall (IHC: near-white stroma), never darker than the H&E.
    assert out[..., 1].mean() > tile[..., 1].mean()
    # Glass stays glass: grey glass may take a faint counterstain tint, but the green
    # channel the brightfield model reads does not move.
    glass = ihc_like(np.full((64, 64, 3), 240, np.uint8), np.random.default_rng(1)).astype(int)
    assert np.abs(glass[..., 1] - 240).max() <= 2 and np.abs(glass - 240).max() <= 12


def test_restaining_is_random_but_seeded(slide_crop):
    tile = _he_tile(slide_crop)
    a = ihc_like(tile, np.random.default_rng(5))
    assert np.array_equal(a, ihc_like(tile, np.random.default_rng(5)))
    assert not np.array_equal(a, ihc_like(tile, np.random.default_rng(6)))


def test_sampler_restains_the_configured_share(slide_crop):
    img = slide_crop(1500, 500, 900, 900)
    eosin = lambda tiles: np.array([np.clip(rgb2hed(t)[..., 1], 0, None).mean() for t in tiles])
    kw = dict(images=[], z_max_um=0.01, jpeg=(95, 95), scale_jitter=0.0)
    plain, _ = sample_tiles(img, 12, np.random.default_rng(0), TrainConfig(**kw, ihc_like=0.0))
    restained, _ = sample_tiles(img, 12, np.random.default_rng(0), TrainConfig(**kw, ihc_like=1.0))
    assert np.median(eosin(restained)) < 0.3 * np.median(eosin(plain))
