"""Co-location features: does a tile's sharp fine trace sit on its coarse structure?

Thick sections, round 4 (DESIGN-NOTES). To band-power features an in-focus specimen whose
fine detail is faint (a pale section, a smear's grain) and a faint sharp layer of other
tissue over a blurred bulk are one pattern: sharp fine structure over soft structure. What
differs is *where* the fine trace sits. In one plane the fine detail belongs to the same
objects as the coarse structure, so it sits on their edges and grows with their contrast;
a faint layer of other tissue puts its fine detail wherever that tissue is, independent of
the blurred bulk's structure.

The features, from a tile's log intensity (``log(I + 1)``: optical density up to sign and a
constant, so a stain's strength scales every band alike), split by Laplacians into a high
band (the tile's, ~0.2-0.5 cycles/px) and a mid band (that of the tile mean-pooled ``coarse``
times, ~0.04-0.12 cycles/px), with the pooled tile's gradient magnitude for the coarse edges;
energies are pooled over ``pool`` px, then over a ``grid`` x ``grid`` set of windows:

- ``r_hm``: Pearson correlation, over a ``grid`` x ``grid`` set of windows, of log high-band
  energy with log mid-band energy;
- ``r_hg``: the same with the windows' mean gradient magnitude of the coarse image;
- ``slope_hm``: the least-squares slope of log high-band energy on log mid-band energy over
  the windows (1 when fine detail scales with the coarse content, 0 when independent of it);
- ``r_pix``: the correlation at ``pool``-px resolution of log high-band energy with the log
  gradient magnitude of the coarse image (where the edges are, not how strong a window is);
- ``disp``: the spread (standard deviation) over windows of log(high / mid) energy: one plane
  blurred by one distance keeps the ratio nearly constant, a faint layer's share varies;
- ``rho_hm``: Spearman's version of ``r_hm`` (ranks are robust to a few bright windows).

Torch, batched, no weights; the core never imports Qt or napari.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: Names of the features, in the order :func:`colocation_features` returns them.
FEATURES = ("r_hm", "r_hg", "slope_hm", "r_pix", "disp", "rho_hm")


def _laplacian(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """5-point Laplacian of (..., H, W) on the interior (..., H-2, W-2), into ``out`` if given."""
    # In place, in the order of 4c - up - down - left - right (the same floats, fewer buffers).
    out = torch.mul(x[..., 1:-1, 1:-1], 4, out=out)
    return out.sub_(x[..., :-2, 1:-1]).sub_(x[..., 2:, 1:-1]).sub_(x[..., 1:-1, :-2]).sub_(x[..., 1:-1, 2:])


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of (N, K) tensors (0 where either row is constant)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    return torch.where(den > 1e-12, (a * b).sum(1) / den.clamp(min=1e-12), torch.zeros_like(den))


def _ranks(a: torch.Tensor) -> torch.Tensor:
    return a.argsort(1).argsort(1).to(a.dtype)


def _log_energy(e: torch.Tensor) -> torch.Tensor:
    """log of (N, K) energies with a floor at 1e-3 of the tile's mean, so empty glass windows
    do not dominate by their log of almost nothing."""
    floor = 1e-3 * e.mean(1, keepdim=True) + 1e-12
    return torch.log(e + floor)


def colocation_features(x: torch.Tensor, *, grid: int = 8, pool: int = 8, coarse: int = 4, step: int = 1,
                        names: tuple[str, ...] = FEATURES) -> torch.Tensor:
    """(N, H, W) intensities (0..255 scale, any float) -> (N, len(names)) features, in the order
    of ``names`` (a subset of :data:`FEATURES`; the others are not computed).

    H and W must be multiples of ``grid * pool``, and ``pool`` of ``coarse`` (320 px: grid 8,
    pool 8, coarse 4). ``step`` > 1 reads every ``step``-th pixel of each row and column and
    divides ``pool`` and ``coarse`` by it: the same windows and coarse scale for a quarter of
    the work at step 2, the fine band's energy above the decimated grid's Nyquist folded into
    its high band rather than lost (thick sections, round 5). See the module's docstring.
    """
    if x.ndim != 3:
        raise ValueError(f"colocation features need (N, H, W) tiles; got {tuple(x.shape)}")
    if step > 1:
        if pool % step or coarse % step:
            raise ValueError(f"step {step} must divide pool ({pool}) and coarse ({coarse})")
        x, pool, coarse = x[:, ::step, ::step], pool // step, coarse // step
    unknown = set(names) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown co-location features {sorted(unknown)}; known: {FEATURES}")
    n, h, w = x.shape
    if pool % coarse or any(s % pool or (s // pool) % grid for s in (h, w)):
        raise ValueError(f"tile {h}x{w} px is not divisible by the grid ({grid}), pool ({pool}) and coarse ({coarse})")
    g = x.float().clamp(min=0).log1p_().unsqueeze(1)
    # High band at full resolution: the 5-point Laplacian (gain 4 sin²(πf) per axis: 0.38 at
    # 0.1 cycles/px, 1.4 at 0.2, 4 at 0.5), squared; slicing, not convolution (5x cheaper on
    # one thread). The one-pixel rim has no Laplacian and counts as zero in every tile: the
    # Laplacian is written into the interior of a zeroed buffer (no padded copy of it).
    high = g.new_zeros(g.shape)
    _laplacian(g, out=high[..., 1:-1, 1:-1]).square_()
    # Mid band and the coarse edges on a grid ``coarse`` times coarser (cheap): the Laplacian
    # of the mean-pooled image (~0.04-0.12 cycles/px of the tile) and its central-difference
    # gradient magnitude.
    d = F.avg_pool2d(g, coarse)
    mid = F.pad(_laplacian(d).square_(), (1, 1, 1, 1))
    gy = d[..., 2:, 1:-1] - d[..., :-2, 1:-1]
    gx = d[..., 1:-1, 2:] - d[..., 1:-1, :-2]
    grad = F.pad(torch.sqrt(gy * gy + gx * gx), (1, 1, 1, 1))
    # Everything onto the pool grid (h / pool), then the windows (grid x grid).
    hp = F.avg_pool2d(high, pool)
    up = pool // coarse
    mp, gp = (F.avg_pool2d(mid, up), F.avg_pool2d(grad, up)) if up > 1 else (mid, grad)
    k = hp.shape[-1] // grid
    eh = _log_energy(F.avg_pool2d(hp, k).reshape(n, -1))
    em = _log_energy(F.avg_pool2d(mp, k).reshape(n, -1))
    eg = _log_energy(F.avg_pool2d(gp, k).reshape(n, -1))

    def slope():
        emc = em - em.mean(1, keepdim=True)
        return ((eh - eh.mean(1, keepdim=True)) * emc).sum(1) / (emc * emc).sum(1).clamp(min=1e-6)

    make = {"r_hm": lambda: _pearson(eh, em), "r_hg": lambda: _pearson(eh, eg), "slope_hm": slope,
            "r_pix": lambda: _pearson(_log_energy(hp.reshape(n, -1)), _log_energy(gp.reshape(n, -1))),
            "disp": lambda: (eh - em).std(1), "rho_hm": lambda: _pearson(_ranks(eh), _ranks(em))}
    return torch.stack([make[f]() for f in names], 1)


#: The features the `fast` front end's ``coloc`` option appends (validation, DESIGN-NOTES round
#: 4: ``disp`` and ``rho_hm`` changed direction between the two validation images).
FRONT_END_FEATURES = ("r_hm", "r_hg", "slope_hm", "r_pix")


class ColocationFrontEnd(torch.nn.Module):
    """A `fast` front end with the co-location features of its first (green) channel appended,
    read at ``step`` (1: round 4's weights; 2: every second pixel, round 5)."""

    def __init__(self, inner: torch.nn.Module, step: int = 1):
        super().__init__()
        self.inner, self.step = inner, int(step)
        self.n_features = inner.n_features + len(FRONT_END_FEATURES)
        self.level_features = list(inner.level_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, H, W) or (N, C, H, W) (green first), as the inner front end takes it."""
        green = x[:, 0] if x.ndim == 4 else x
        return torch.cat([self.inner(x), colocation_features(green, step=self.step, names=FRONT_END_FEATURES)], 1)
