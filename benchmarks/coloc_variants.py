"""Co-location feature variants for ``bench_thick_trials.py variant`` (thick sections, round 5).

Each variant maps a batch of green tiles, (N, 320, 320) float on the 0..255 scale (with
``blue = True`` also the blue channel's, round 6), to (N, k) features that replace the
shipped front end's four co-location columns in a trial (``:c=NAME``). ``v0`` is the shipped
computation (a check: it must equal the cached columns).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_focusq.models.colocation import FEATURES, FRONT_END_FEATURES, _log_energy, _pearson, colocation_features

PICK = [FEATURES.index(f) for f in FRONT_END_FEATURES]


def v0(x):
    """The shipped features (full resolution: high band 0.2-0.5 cycles/px of the 0.5 µm grid)."""
    return colocation_features(x)[:, PICK]


def p2(x):
    """The same four on the 2x mean-pooled tile (grid 8, pool 4, coarse 2): the high band moves
    to ~0.1-0.25 cycles/px of the working grid (2-5 µm periods) and the cost falls ~4x."""
    return colocation_features(F.avg_pool2d(x.unsqueeze(1), 2).squeeze(1), grid=8, pool=4, coarse=2)[:, PICK]


def d2(x):
    """The same four on every second pixel of the tile (no pooling: the fine band's energy
    above 0.25 cycles/px folds into the decimated high band instead of being averaged away);
    a strided copy, so about a quarter of v0's cost."""
    return colocation_features(x[:, ::2, ::2].contiguous(), grid=8, pool=4, coarse=2)[:, PICK]


def _rpix_quarters(x, pool=8, coarse=4):
    """r_pix in each quarter of the tile: (N, 4). A faint layer may cover part of a tile."""
    n, h, _ = x.shape
    q = x.reshape(n, 2, h // 2, 2, h // 2).transpose(2, 3).reshape(n * 4, h // 2, h // 2)
    g = q.float().clamp(min=0).log1p().unsqueeze(1)
    high = F.pad((4 * g[..., 1:-1, 1:-1] - g[..., :-2, 1:-1] - g[..., 2:, 1:-1] - g[..., 1:-1, :-2]
                  - g[..., 1:-1, 2:]).square(), (1, 1, 1, 1))
    d = F.avg_pool2d(g, coarse)
    gy = d[..., 2:, 1:-1] - d[..., :-2, 1:-1]
    gx = d[..., 1:-1, 2:] - d[..., 1:-1, :-2]
    grad = F.pad(torch.sqrt(gy * gy + gx * gx), (1, 1, 1, 1))
    hp = F.avg_pool2d(high, pool)
    gp = F.avg_pool2d(grad, pool // coarse)
    return _pearson(_log_energy(hp.reshape(n * 4, -1)), _log_energy(gp.reshape(n * 4, -1))).reshape(n, 4)


def v0q(x):
    """The shipped four plus the quarters' r_pix, lowest and highest (where a layer covers part)."""
    rq = _rpix_quarters(x)
    return torch.cat([v0(x), rq.amin(1, keepdim=True), rq.amax(1, keepdim=True)], 1)


def p2q(x):
    """p2 plus the quarters' r_pix (on the pooled tile), lowest and highest."""
    rq = _rpix_quarters(F.avg_pool2d(x.unsqueeze(1), 2).squeeze(1), pool=4, coarse=2)
    return torch.cat([p2(x), rq.amin(1, keepdim=True), rq.amax(1, keepdim=True)], 1)


def d2q(x):
    """d2 plus the quarters' r_pix (on the decimated tile), lowest and highest."""
    rq = _rpix_quarters(x[:, ::2, ::2].contiguous(), pool=4, coarse=2)
    return torch.cat([d2(x), rq.amin(1, keepdim=True), rq.amax(1, keepdim=True)], 1)


def both(x):
    """Full-resolution and pooled features side by side (two scales of 'where the trace sits')."""
    return torch.cat([v0(x), p2(x)], 1)


def d2b(g, b):
    """d2 on green and on blue side by side (round 6): DAB absorbs most in blue, so on a pale
    IHC section blue holds the coarse structure and its fine trace at higher contrast."""
    return torch.cat([d2(g), d2(b)], 1)


def d2m(g, b):
    """d2 on the darker of green and blue at each pixel (whichever stain absorbs most there)."""
    return d2(torch.minimum(g, b))


d2b.blue = d2m.blue = True  # variant() hands these the blue channel too

VARIANTS = {f.__name__: f for f in (v0, p2, d2, v0q, p2q, d2q, both, d2b, d2m)}
