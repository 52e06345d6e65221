"""Z-stacks: an all-in-focus composite from the per-tile best planes.

``score_slide(stack, slice="per-tile")`` scores every plane and keeps, per tile, the
plane with the least defocus (``fmap.extra["best_plane"]``), located by fitting the V
of predicted |z| across planes (:func:`focus_plane_fit`), not by the smallest reading.
The composite copies each tile's pixels from its best plane; tiles without a best plane
(no tissue in any plane) take the plane chosen most often, weighted by tissue. Seams are
hard tile edges on purpose: each pixel is a real measured value of one plane.
"""
from __future__ import annotations

import numpy as np

from napari_focusq.errors import ZStackError


def focus_plane_fit(stack: np.ndarray, *, half: int = 4, step: float = 0.05) -> np.ndarray:
    """Per tile, the fractional plane where the predicted defocus has its vertex.

    Through focus, |z| grows linearly on both sides: d_k = a |k - k0| + c. Near focus a
    model's readings flatten (smooth content reads a little defocused at z = 0, and
    neighbouring planes then read alike), so the smallest reading can be a plane off
    (the benchmark's tilted Cell Painting specimen at 0.5 µm spacing: 2-3 of 24 tiles).
    The arms, where readings are steep and reliable, pin the vertex. The fit uses the
    planes within ``half`` of the smallest reading, tries k0 within one plane of it in
    ``step`` steps, and solves a > 0 and c by least squares for each; tiles with fewer
    than three finite planes keep the smallest reading.

    stack: (planes, ...) predicted |z| (NaN where not scored). Returns stack.shape[1:]
    (NaN where no plane was scored).
    """
    d = np.asarray(stack, np.float64)
    K = d.shape[0]
    flat = d.reshape(K, -1)
    finite = np.isfinite(flat)
    out = np.full(flat.shape[1], np.nan)
    any_ = finite.any(0)
    if not any_.any():
        return out.reshape(d.shape[1:])
    ks = np.nanargmin(np.where(finite, flat, np.inf), axis=0)
    out[any_] = ks[any_]
    # Each tile's window of planes around its smallest reading: (T, 2 half + 1), so the
    # work does not grow with the stack's depth.
    kk = ks[:, None] + np.arange(-half, half + 1)[None, :]
    inside = (kk >= 0) & (kk < K)
    kc = np.clip(kk, 0, K - 1)
    cols = np.arange(flat.shape[1])[:, None]
    use = inside & finite[kc, cols]
    fit = any_ & (use.sum(1) >= 3)
    if not fit.any():
        return out.reshape(d.shape[1:])
    y = np.where(use, flat[kc, cols], 0.0)[fit][:, None, :]  # (T, 1, W)
    w = use[fit][:, None, :].astype(np.float64)
    k0 = np.clip(ks[fit][:, None] + np.arange(-1, 1 + 1e-9, step)[None, :], 0, K - 1)  # (T, G)
    x = np.abs(kk[fit][:, None, :] - k0[:, :, None])  # (T, G, W)
    n = w.sum(-1)
    xm, ym = (w * x).sum(-1) / n, (w * y).sum(-1) / n
    sxx = (w * (x - xm[..., None]) ** 2).sum(-1)
    sxy = (w * (x - xm[..., None]) * (y - ym[..., None])).sum(-1)
    a = np.where(sxx > 1e-12, sxy / np.maximum(sxx, 1e-12), 0.0)
    c = ym - a * xm
    rss = (w * (a[..., None] * x + c[..., None] - y) ** 2).sum(-1)
    rss = np.where(a > 0, rss, np.inf)
    g = np.argmin(rss, axis=1)
    ok = np.isfinite(rss[np.arange(len(g)), g])
    out[np.flatnonzero(fit)[ok]] = k0[np.arange(len(g)), g][ok]
    return out.reshape(d.shape[1:])


def _planes_reader(source_or_stack):
    """(n_z, shape (Y, X[, C]), read(z, y0, x0, y1, x1)) for an array, an ImageSource or a path."""
    src = source_or_stack
    if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__"):
        from napari_focusq.io.formats import open_image

        src = open_image(src)
    if hasattr(src, "read_region") and hasattr(src, "axes"):
        if "Z" not in src.axes:
            raise ZStackError(f"{src.path}: not a z-stack (axes {src.axes})")
        shape = tuple(s for s, a in zip(src.shape, src.axes) if a != "Z")

        def read(z, y0, x0, y1, x1):
            return np.asarray(src.read_region(y0, x0, y1 - y0, x1 - x0, level=0, z=z))

        return src.n_z, shape, read, getattr(src, "path", "stack")
    a = src if hasattr(src, "shape") else np.asarray(src)
    if len(a.shape) not in (3, 4):
        raise ZStackError(f"expected a (Z, Y, X[, C]) stack; got shape {tuple(a.shape)}")

    def read(z, y0, x0, y1, x1):
        return np.asarray(a[z, y0:y1, x0:x1])

    return a.shape[0], tuple(a.shape[1:]), read, "stack"


def all_in_focus(source_or_stack, fmap) -> np.ndarray:
    """Compose each tile from its best plane (``fmap.extra["best_plane"]``).

    Parameters
    ----------
    source_or_stack
        The scored stack: a (Z, Y, X[, C]) array, an opened ImageSource / ArraySource,
        or a file path.
    fmap
        Its FocusMap from ``score_slide(..., slice="per-tile")``.

    Returns
    -------
    numpy.ndarray
        (Y, X[, C]) of the stack's dtype, a new array.
    """
    best = fmap.extra.get("best_plane")
    if best is None:
        raise ZStackError("the focus map has no best_plane layer: score the stack with slice='per-tile'")
    best = np.asarray(best)
    n_z, shape, read, name = _planes_reader(source_or_stack)
    if tuple(shape[:2]) != tuple(fmap.image_shape):
        raise ZStackError(f"{name}: planes are {shape[:2]} but the focus map is of a {fmap.image_shape} image")
    if best.shape != fmap.shape or best.max(initial=-1) >= n_z:
        raise ZStackError(f"{name}: best planes {best.shape} (max {best.max(initial=-1)}) do not fit "
                          f"a {n_z}-plane stack and a {fmap.shape} grid")
    chosen = best >= 0
    if chosen.any():
        w = np.bincount(best[chosen], weights=fmap.tissue_fraction[chosen] + 1e-6, minlength=n_z)
        fallback = int(np.argmax(w))
    else:
        fallback = n_z // 2
    # Pixels outside every tile (if the grid does not cover the image) keep the fallback plane.
    out = np.array(read(fallback, 0, 0, shape[0], shape[1]))
    rows, cols = fmap.shape
    for r in range(rows):
        for c in range(cols):
            y0, x0, y1, x1 = fmap.tile_bounds(r, c)
            if y1 <= y0 or x1 <= x0:
                continue
            z = int(best[r, c]) if best[r, c] >= 0 else fallback
            out[y0:y1, x0:x1] = read(z, y0, x0, y1, x1)
    return out


def tilted_stack(image, *, pixel_size_um: float, tile_px: int, focus_plane, n_planes: int, dz_um: float,
                 modality: str = "fluorescence", optics=None, photons: float | None = 1000.0,
                 seed: int = 0) -> np.ndarray:
    """A simulated z-stack of a tilted specimen, for tests and benchmarks.

    Plane ``k`` of tile column ``c`` is ``image`` defocused by ``(k - focus_plane[c]) * dz_um``
    (widefield optics of :func:`napari_focusq.optics.psf.simulate_defocus`), so the in-focus
    plane changes from one tile column to the next.

    Parameters
    ----------
    image
        An in-focus (Y, X[, C]) image whose width is ``len(focus_plane) * tile_px``.
    pixel_size_um, modality, optics
        As for ``simulate_defocus``.
    tile_px
        Column width in pixels (the scoring grid's tile size in the image's pixels).
    focus_plane
        The in-focus plane index of each tile column.
    n_planes, dz_um
        Number of planes and their spacing (µm).
    photons
        Photon count at the image's 99.5th percentile for Poisson noise, as a camera
        records (the fluorescence model reads defocus against the noise floor and is
        not meant for noise-free renderings); None = no noise.
    seed
        Seed of the noise.

    Returns
    -------
    numpy.ndarray
        (n_planes, Y, X[, C]) of the image's dtype.
    """
    from napari_focusq.optics.psf import simulate_defocus

    img = np.asarray(image)
    k0 = np.asarray(focus_plane, int)
    if img.shape[1] != len(k0) * tile_px:
        raise ZStackError(f"image width {img.shape[1]} is not {len(k0)} columns of {tile_px} px")
    cache: dict = {}
    out = np.empty((n_planes,) + img.shape, img.dtype)
    for k in range(n_planes):
        for c, kc in enumerate(k0):
            z = round(abs(k - int(kc)) * dz_um, 6)
            if z not in cache:  # blur the whole image once per |z|: no seams from edge effects
                cache[z] = simulate_defocus(img, z, pixel_size_um=pixel_size_um, modality=modality, optics=optics)
            out[k, :, c * tile_px:(c + 1) * tile_px] = cache[z][:, c * tile_px:(c + 1) * tile_px]
    if photons:
        rng = np.random.default_rng(seed)
        scale = float(photons) / max(float(np.percentile(img, 99.5)), 1e-12)
        noisy = rng.poisson(np.clip(out.astype(np.float64) * scale, 0, None)) / scale
        if out.dtype.kind in "ui":
            noisy = np.clip(np.rint(noisy), np.iinfo(out.dtype).min, np.iinfo(out.dtype).max)
        out = noisy.astype(out.dtype)
    return out


__all__ = ["all_in_focus", "focus_plane_fit", "tilted_stack", "ZStackError"]
