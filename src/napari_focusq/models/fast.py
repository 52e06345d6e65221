"""The `fast` model: a fixed spectral front end and a small learned head.

Defocus is a low-pass filter whose transfer function depends on |z|, so the
radial profile of a tile's power spectrum carries most of what there is to know.
The front end (window, FFT, radial bands, log) has no weights; only the head
learns, which keeps the model tiny (70-150k parameters) and lets it score a
320x320 tile in about 1 ms on one CPU core. Features are normalised by the
tile's own low-frequency power so stain strength and brightness cancel out.

Three options of the front end, all on in the shipped brightfield weights and off by
default (DESIGN-NOTES, rounds 5 and 6): ``quadrants`` adds the same profile's band-wise
maximum and minimum over the tile's four quarters (defocus is nearly the same across a
tile, content is not: where the quarters disagree, the whole tile's shape is content);
``axis_gap`` leaves the spectrum's axes out of the upper bands (row and column patterns
of line sensors, seams and separable resampling put power there, by an amount that
differs from scanner to scanner); ``blue`` adds the blue channel's whole-tile profile
beside green's. Held-out brightfield R² 0.987 -> 0.991, JPEG 30 vs 95 p95 0.37 -> 0.30
µm, for three FFTs per tile instead of one (whole-slide scoring ~1.6x the decode time).
A fourth, ``coloc`` (thick sections, round 4; on in the shipped brightfield weights since then),
appends four numbers on where the green channel's fine detail sits relative to its coarse
structure (``models/colocation.py``); ``coloc: 2`` (round 5, shipped) reads them from every
second pixel, at half their cost and the same accuracy on validation.
"""
from __future__ import annotations

import torch
from torch import nn


class SpectralFrontEnd(nn.Module):
    """Log power in radial frequency bands of one channel, normalised per tile."""

    def __init__(self, tile_px: int = 320, band_width: int = 4, ref_bands: tuple[int, int] = (1, 5),
                 axis_gap: int = 0):
        super().__init__()
        self.tile_px = tile_px
        self.ref_bands = ref_bands
        w = torch.hann_window(tile_px, periodic=False)
        self.register_buffer("window", w[:, None] * w[None, :], persistent=False)
        fy = torch.fft.fftfreq(tile_px)[:, None]
        fx = torch.fft.rfftfreq(tile_px)[None, :]
        radius = (torch.sqrt(fy**2 + fx**2) * tile_px).flatten()  # in units of 1/tile cycles per px
        n_bands = tile_px // 2 // band_width
        idx = torch.floor(radius / band_width).long()
        m = torch.zeros(radius.numel(), n_bands)
        keep = idx < n_bands
        keep[0] = False  # DC carries brightness, not focus
        if axis_gap:
            # Horizontal and vertical patterns (line sensors, seams, tile edges) put their power
            # on the spectrum's axes, within the window's main lobe of them. Only above the
            # reference bands: there the axes are few bins of many, below they would empty bands.
            near_axis = (fy.abs() * tile_px <= axis_gap) | (fx.abs() * tile_px <= axis_gap)
            keep &= ~(near_axis.flatten() & (idx >= ref_bands[1]))
        m[torch.nonzero(keep).squeeze(1), idx[keep]] = 1.0
        m /= m.sum(0, keepdim=True).clamp(min=1)
        # Rows +ky and -ky of the spectrum lie at the same radius and are kept or gapped
        # alike, so forward() adds each mirrored row onto its twin and sums only rows
        # 0..H//2: half the matmul, and half the band matrix to stream from memory (it was
        # the front end's largest read: 16 MB a channel). Same features to float rounding.
        folded = m.reshape(tile_px, -1, n_bands)[:tile_px // 2 + 1]
        # Real and imaginary parts are squared in place and summed by the same matmul.
        self.register_buffer("bands", folded.reshape(-1, n_bands).repeat_interleave(2, 0), persistent=False)
        self.n_features = n_bands + 1
        #: Features that carry the tile's absolute level (all others are relative to it).
        self.level_features = [n_bands]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., H, W) float intensities (any scale; any strides). Returns (N, n_features),
        N the product of the leading dimensions."""
        # One contiguous buffer, windowed in place: scoring is memory-bound, and a strided
        # view (QuadrantFrontEnd's quarters) is gathered by the same pass.
        centred = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        torch.sub(x, x.mean((-1, -2), keepdim=True), out=centred)
        x = centred.mul_(self.window).reshape(-1, *x.shape[-2:])
        spec = torch.view_as_real(torch.fft.rfft2(x))
        spec.square_()
        h = x.shape[-2]
        pairs = (h - 1) // 2  # rows 1..pairs have their mirrors (-ky) at rows h - 1..h - pairs
        spec[:, 1:1 + pairs] += spec[:, h - pairs:].flip(1)
        power = spec.reshape(len(x), -1)[:, :len(self.bands)] @ self.bands  # rows 0..h//2 of each tile
        logp = torch.log(power + 1e-4)
        a, b = self.ref_bands
        ref = logp[:, a:b].mean(1, keepdim=True)
        return torch.cat([logp - ref, ref / 10.0], 1)


class QuadrantFrontEnd(nn.Module):
    """The whole tile's spectral profile, then its quarters' band-wise max and min."""

    def __init__(self, tile_px: int = 320, band_width: int = 4, axis_gap: int = 0):
        super().__init__()
        if tile_px % 2 or band_width % 2:
            raise ValueError("quadrant features need an even tile size and band width")
        self.whole = SpectralFrontEnd(tile_px, band_width, axis_gap=axis_gap)
        # Half the tile at half the band width (and gap): the quarters' bands are the whole
        # tile's frequencies (cycles per pixel), so max/min compare like with like.
        self.quarter = SpectralFrontEnd(tile_px // 2, band_width // 2, axis_gap=axis_gap // 2)
        n, q = self.whole.n_features, self.quarter.n_features
        self.n_features = n + 2 * q
        self.level_features = [n - 1, n + q - 1, n + 2 * q - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h = len(x), x.shape[-1] // 2
        quarters = x.reshape(n, 2, h, 2, h).transpose(2, 3)  # (N, 2, 2, h, h), a view when x is contiguous
        fq = self.quarter(quarters).reshape(n, 4, -1)
        return torch.cat([self.whole(x), fq.amax(1), fq.amin(1)], 1)


class GreenBlueFrontEnd(nn.Module):
    """Brightfield: green through the main front end, and the blue channel's whole-tile
    profile beside it. Blue carries DAB (immunohistochemistry's brown absorbs there) and is
    defocused at its own wavelength, so the pair tells content from blur where green alone
    cannot (DESIGN-NOTES, round 6)."""

    def __init__(self, green: nn.Module, blue: SpectralFrontEnd):
        super().__init__()
        self.green, self.blue = green, blue
        n = green.n_features
        self.n_features = n + blue.n_features
        self.level_features = list(green.level_features) + [n + i for i in blue.level_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 2, H, W), green then blue."""
        return torch.cat([self.green(x[:, 0]), self.blue(x[:, 1])], 1)


class FastFocusNet(nn.Module):
    """Spectral front end -> standardise -> an ensemble of small MLPs -> softplus (|z| in µm).

    The heads share the front end (the costly part) and are trained on different
    bootstrap subsets; their mean is the prediction and their spread the
    per-tile uncertainty.
    """

    def __init__(self, tile_px: int = 320, band_width: int = 4, hidden: tuple[int, ...] = (128, 64), heads: int = 5,
                 quadrants: bool = False, axis_gap: int = 0, blue: bool = False, coloc: bool | int = False):
        super().__init__()
        self.front = (QuadrantFrontEnd(tile_px, band_width, axis_gap) if quadrants
                      else SpectralFrontEnd(tile_px, band_width, axis_gap=axis_gap))
        if blue:
            self.front = GreenBlueFrontEnd(self.front, SpectralFrontEnd(tile_px, band_width, axis_gap=axis_gap))
        if coloc:  # thick sections, round 4 (models/colocation.py); on in the shipped brightfield weights
            from napari_focusq.models.colocation import ColocationFrontEnd

            # True (round 4's files) reads every pixel; an int n every n-th (models/colocation.py).
            self.front = ColocationFrontEnd(self.front, step=1 if coloc is True else int(coloc))
        n = self.front.n_features
        self.register_buffer("feat_mean", torch.zeros(n))
        self.register_buffer("feat_std", torch.ones(n))

        # The heads are stacked weight tensors evaluated with batched matmuls: one
        # kernel per layer for the whole ensemble instead of one per head.
        dims = [n, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            w = torch.empty(heads, a, b)
            for k in range(heads):
                nn.init.kaiming_uniform_(w[k].T, a=5 ** 0.5)  # nn.Linear's default init
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(heads, 1, b).uniform_(-a ** -0.5, a ** -0.5)))
        self.config = {"tile_px": tile_px, "band_width": band_width, "hidden": list(hidden), "heads": heads,
                       "quadrants": quadrants, "axis_gap": axis_gap, "blue": blue}
        if coloc:  # only when on: files without it build the front end they were trained with
            self.config["coloc"] = True if coloc is True or coloc == 1 else int(coloc)

    # The trainer caches features (the front end has no weights) and trains the heads alone.
    fixed_front_end = True

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.front(x)

    def forward_heads(self, f: torch.Tensor) -> torch.Tensor:
        """(N, n_features) -> (N, heads) predictions in µm."""
        h = ((f - self.feat_mean) / self.feat_std).unsqueeze(0).expand(len(self.weights[0]), -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = nn.functional.gelu(h)
        return nn.functional.softplus(h.squeeze(2).T)

    def forward_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.forward_heads(f).mean(1)

    def forward_with_spread(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.forward_heads(self.features(x))
        return p.mean(1), p.std(1) if p.shape[1] > 1 else torch.zeros_like(p[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.features(x))
