"""Simulated-defocus brightfield tiles made in torch on the training device.

The same recipe as ``training.sample_tiles`` + ``_degrade`` (crop of an in-focus image at
the working resolution, optical defocus at a continuous |z|, stain/brightness/noise, JPEG
at scanner qualities), written as batched tensor work so a GPU makes the tiles it trains
on and the CPU cores are never the bottleneck:

- Defocus: the pupil-function PSFs of ``optics.py`` (one per 0.05 µm z bin and colour
  channel, computed once) become a bank of OTFs; a batch is one real FFT, one gathered
  multiply, one inverse FFT. Crops carry the real neighbouring tissue as margin, so the
  kept tile never sees padding or circular wrap.
- JPEG: libjpeg's lossy steps (YCbCr, 4:2:0 chroma, 8x8 DCT, quantisation by the
  quality-scaled standard tables, "fancy" chroma upsampling) in torch. Entropy coding is
  lossless, so this reproduces the encoder's artefacts without leaving the device; the
  tests hold it against Pillow's encoder.

Left out against the CPU recipe (they need per-tile resampling): content-scale jitter, the
IHC re-staining and magnified copies. The founding paper had none of them either.
"""
from __future__ import annotations

import math

import numpy as np

from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM, Optics
from napari_focusq.errors import DeviceDataError

#: libjpeg's standard quantisation tables (ITU T.81 Annex K), natural order.
_LUMA_Q = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float32).reshape(8, 8)
_CHROMA_Q = np.full((8, 8), 99, np.float32)
_CHROMA_Q[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])


def quant_tables(quality) -> np.ndarray:
    """(N,) JPEG qualities -> (N, 2, 8, 8) luma and chroma tables, as libjpeg scales them
    (jpeg_set_quality with force_baseline: entries clipped to 1..255)."""
    q = np.clip(np.asarray(quality, np.int64), 1, 100)
    scale = np.where(q < 50, 5000 // q, 200 - 2 * q)[:, None, None, None]
    base = np.stack([_LUMA_Q, _CHROMA_Q])[None]
    return np.clip((base * scale + 50) // 100, 1, 255).astype(np.float32)


def _dct_matrix(device):
    import torch

    k = torch.arange(8, dtype=torch.float64)[:, None]
    n = torch.arange(8, dtype=torch.float64)[None, :]
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=torch.float32)


def _blockwise(x, tables, d):
    """Quantise (B, C, H, W) level-shifted samples in 8x8 blocks; tables (B, 1, 1, 1, 8, 8)."""
    import torch

    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)
    coef = d @ blocks @ d.T
    coef = torch.round(coef / tables) * tables
    out = d.T @ coef @ d
    return out.permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def jpeg_torch(rgb, quality):
    """JPEG round trip of (B, 3, H, W) RGB samples 0..255 (H, W multiples of 16) at
    per-tile ``quality`` (B,), as libjpeg at 4:2:0 does it, up to its integer rounding."""
    import torch
    import torch.nn.functional as F

    dev = rgb.device
    t = torch.from_numpy(quant_tables(np.asarray(quality))).to(dev)[:, :, None, None]  # (B, 2, 1, 1, 8, 8)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = torch.round(0.299 * r + 0.587 * g + 0.114 * b)
    cb = torch.round(-0.168736 * r - 0.331264 * g + 0.5 * b + 128)
    cr = torch.round(0.5 * r - 0.418688 * g - 0.081312 * b + 128)
    # h2v2 downsampling: the mean of each 2x2 block, rounded.
    chroma = torch.round(F.avg_pool2d(torch.stack([cb, cr], 1), 2))
    d = _dct_matrix(dev)
    y = torch.clamp(torch.round(_blockwise(y[:, None] - 128, t[:, 0:1], d) + 128), 0, 255)
    chroma = torch.clamp(torch.round(_blockwise(chroma - 128, t[:, 1:2], d) + 128), 0, 255)
    # libjpeg's "fancy" h2v2 upsampling is the 3/4-1/4 triangle filter with edges
    # replicated: bilinear interpolation at scale 2 without corner alignment.
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False) - 128
    y = y[:, 0]
    cb, cr = chroma[:, 0], chroma[:, 1]
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return torch.clamp(torch.round(out), 0, 255)


def _tissue_positions(image: np.ndarray, tile_px: int, min_tissue: float, stride: int) -> np.ndarray:
    """(K, 2) top-left corners (on a ``stride`` grid) of tiles with at least ``min_tissue``
    tissue, judged against the whole image's white level (as sample_tiles does)."""
    from napari_focusq.scoring.tissue import estimate_white_level, tissue_mask

    mask = tissue_mask(image, "brightfield", white_level=estimate_white_level(image)).astype(np.float64)
    ii = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys = np.arange(0, image.shape[0] - tile_px + 1, stride)
    xs = np.arange(0, image.shape[1] - tile_px + 1, stride)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    frac = (ii[y0 + tile_px, x0 + tile_px] - ii[y0, x0 + tile_px] - ii[y0 + tile_px, x0] + ii[y0, x0]) / tile_px**2
    keep = frac >= min_tissue
    if not keep.any():  # as sample_tiles: an image without enough tissue still gives tiles
        keep = frac >= frac.max()
    return np.stack([y0[keep], x0[keep]], 1)


class DeviceTileMaker:
    """Makes batches of (tiles (B, 3, T, T) float 0..1, |z| µm (B,)) on ``device``.

    ``images``: in-focus uint8 RGB images at the working resolution (the output of
    ``training.load_training_planes``), ``names`` for error messages. Every image gets the
    same share of each batch's tiles, as ``samples_per_image`` gives them in the CPU recipe.
    """

    def __init__(self, images, device, *, names=None, z_max_um: float = 6.0, min_tissue: float = 0.5,
                 jpeg=(30, 95), jpeg_share: float = 0.85, tile_px: int = TILE_PX, optics: Optics | None = None,
                 position_stride: int = 8):
        import torch

        from napari_focusq.optics.psf import Z_STEP_UM

        self.device = torch.device(device)
        self.tile_px, self.z_max_um, self.jpeg, self.jpeg_share = tile_px, float(z_max_um), tuple(jpeg), jpeg_share
        self.optics = optics or Optics.for_modality("brightfield")
        names = list(names or [f"image {i}" for i in range(len(images))])
        if not images:
            raise DeviceDataError("no training images")
        self.z_bins = np.round(np.arange(0.0, self.z_max_um + 1e-9, Z_STEP_UM), 6)
        self.margin, self.side = self._geometry()
        self.sources, self.positions = [], []
        for img, name in zip(images, names):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
                raise DeviceDataError(f"{name}: the device tile maker wants uint8 RGB; got {img.dtype} {img.shape}")
            h, w = img.shape[:2]
            if h < tile_px or w < tile_px:  # as sample_tiles: mirror small images up to a tile
                img = np.pad(img, ((0, max(0, tile_px - h)), (0, max(0, tile_px - w)), (0, 0)), mode="reflect")
            self.positions.append(_tissue_positions(img, tile_px, min_tissue, position_stride))
            m, after = self.margin, self.side - tile_px - self.margin
            padded = np.pad(img, ((m, after), (m, after), (0, 0)), mode="reflect")
            self.sources.append(torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1))).to(self.device))
        self.names = names
        self.otf = self._otf_bank()

    # ------------------------------------------------------------------ set-up
    def _psf_keys(self, z):
        from napari_focusq.optics.psf import _key

        o = self.optics
        return [(_key(z), _key(WORKING_PIXEL_UM), _key(lam), _key(o.na), _key(o.n), int(o.oversample), None)
                for lam in o.wavelengths_um]

    def _geometry(self) -> tuple[int, int]:
        """Margin of real tissue around a tile (the widest PSF's radius) and the FFT side."""
        from napari_focusq.optics.psf import _psf_cached

        r = max(_psf_cached(*k).shape[0] // 2 for k in self._psf_keys(self.z_bins[-1]))
        side = 32 * math.ceil((self.tile_px + 2 * r) / 32)  # 2^a 3^b sizes for cuFFT/pocketfft
        return r, side

    def _otf_bank(self):
        """(n_z, 3, S, S//2+1) complex64: each z bin's PSF per channel, centred at (0, 0)."""
        import torch

        from napari_focusq.optics.psf import _psf_cached

        s = self.side
        bank = np.empty((len(self.z_bins), 3, s, s // 2 + 1), np.complex64)
        for i, z in enumerate(self.z_bins):
            for c, k in enumerate(self._psf_keys(z)):
                psf = _psf_cached(*k)
                r = psf.shape[0] // 2
                buf = np.zeros((s, s), np.float64)
                buf[: 2 * r + 1, : 2 * r + 1] = psf
                bank[i, c] = np.fft.rfft2(np.roll(buf, (-r, -r), axis=(0, 1)))
        return torch.from_numpy(bank).to(self.device)

    # ------------------------------------------------------------------ batches
    def draw(self, n: int, rng: np.random.Generator) -> dict:
        """The random choices for ``n`` tiles (cheap, on the CPU; the pixels are made on the device)."""
        k = len(self.sources)
        src = rng.permutation(np.arange(n) % k)  # equal shares per image
        pos = np.empty((n, 2), np.int64)
        for i in range(k):
            sel = src == i
            pos[sel] = self.positions[i][rng.integers(0, len(self.positions[i]), sel.sum())]
        # Mostly uniform over the range, with extra weight near focus where QC decisions are
        # made; on the 0.05 µm grid the PSFs are cached on (sample_tiles' draw).
        z = np.where(rng.random(n) < 0.8, rng.uniform(0, self.z_max_um, n), rng.uniform(0, min(1.5, self.z_max_um), n))
        zbin = np.clip(np.round(z / (self.z_bins[1] - self.z_bins[0] if len(self.z_bins) > 1 else 1)), 0,
                       len(self.z_bins) - 1).astype(np.int64)
        return {
            "src": src, "pos": pos, "zbin": zbin, "rot": rng.integers(0, 4, n), "flip": rng.random(n) < 0.5,
            "stain": rng.uniform(0.4, 1.4, (n, 1)) * rng.uniform(0.85, 1.15, (n, 3)),
            "bright": rng.uniform(0.9, 1.05, n), "noise": rng.uniform(0, 2.5, n),
            "jpeg": rng.random(n) < self.jpeg_share, "quality": rng.integers(self.jpeg[0], self.jpeg[1] + 1, n),
            "seed": int(rng.integers(2**62)),
        }

    def make(self, n: int, rng: np.random.Generator):
        """``n`` new tiles (B, 3, T, T) float32 in [0, 1] on the device, and their |z| (B,) float32."""
        return self.render(self.draw(n, rng))

    @staticmethod
    def subset(p: dict, idx, seed: int) -> dict:
        """The choices of tiles ``idx`` of a drawn set, with a new seed for their sensor noise."""
        return {**{k: v[idx] for k, v in p.items() if k != "seed"}, "seed": int(seed)}

    def render(self, p: dict):
        """Pixels of drawn tiles: crop, defocus, turn, degrade. Returns (tiles, |z|) on the device."""
        import torch

        b = self.defocus(self.crops(p), p["zbin"])
        # The PSF is symmetric under quarter turns and mirrors: turning after blurring is the same.
        b = _rotate_flip(b, p["rot"], p["flip"])
        b = self._degrade(b, p)
        z = torch.from_numpy(self.z_bins[p["zbin"]].astype(np.float32)).to(self.device)
        return b / 255.0, z

    def crops(self, p: dict):
        """(B, 3, S, S) float32 crops: each tile with ``margin`` pixels of real tissue around it."""
        import torch

        dev, s = self.device, self.side
        crops = torch.empty((len(p["src"]), 3, s, s), dtype=torch.float32, device=dev)
        ar = torch.arange(s, device=dev)
        for i, img in enumerate(self.sources):
            sel = np.flatnonzero(p["src"] == i)
            if not len(sel):
                continue
            y = torch.from_numpy(p["pos"][sel, 0]).to(dev)[:, None] + ar
            x = torch.from_numpy(p["pos"][sel, 1]).to(dev)[:, None] + ar
            crops[torch.from_numpy(sel).to(dev)] = img[:, y[:, :, None], x[:, None, :]].permute(1, 0, 2, 3).float()
        return crops

    def defocus(self, crops, zbin):
        """Crops (B, 3, S, S) -> defocused tiles (B, 3, T, T): one FFT, the z bins' OTFs, one inverse."""
        import torch

        m, t = self.margin, self.tile_px
        spec = torch.fft.rfft2(crops)
        spec *= self.otf[torch.from_numpy(np.asarray(zbin)).to(self.device)]
        return torch.fft.irfft2(spec, s=crops.shape[-2:])[:, :, m:m + t, m:m + t]

    def _degrade(self, b, p):
        """training._degrade for brightfield, batched: stain and brightness in optical
        density, sensor noise, 8-bit rounding, JPEG for a share of the tiles."""
        import torch

        dev = b.device
        gen = torch.Generator(device=dev).manual_seed(p["seed"])
        od = -torch.log(torch.clamp(b, 1, 255) / 255.0)
        od = od * torch.from_numpy(p["stain"].astype(np.float32)).to(dev)[:, :, None, None]
        b = 255.0 * torch.exp(-od) * torch.from_numpy(p["bright"].astype(np.float32)).to(dev)[:, None, None, None]
        sigma = torch.from_numpy(p["noise"].astype(np.float32)).to(dev)[:, None, None, None]
        b = torch.clamp(torch.round(b + sigma * torch.randn(b.shape, generator=gen, device=dev)), 0, 255)
        sel = np.flatnonzero(p["jpeg"])
        if len(sel) and self.tile_px % 16 == 0:
            idx = torch.from_numpy(sel).to(dev)
            b[idx] = jpeg_torch(b[idx], p["quality"][sel])
        return b


def _rotate_flip(b, rot, flip):
    import torch

    out = torch.empty_like(b)
    dev = b.device
    for k in range(4):
        for f in (False, True):
            sel = np.flatnonzero((rot == k) & (flip == f))
            if not len(sel):
                continue
            idx = torch.from_numpy(sel).to(dev)
            x = torch.rot90(b[idx], k, dims=(2, 3))
            out[idx] = torch.flip(x, dims=(2,)) if f else x
    return out
