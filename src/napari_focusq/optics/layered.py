"""Thick sections: a specimen of several layers at different depths, imaged at one focal plane.

A real section is 2-6 µm thick and its content sits at many depths; a scan focused at
height ``f`` blurs the content at depth ``d`` by the PSF of ``|f - d|`` (DESIGN.md §3).
Thin-specimen simulation (:func:`napari_focusq.optics.psf.simulate_defocus`) blurs all of a
tile by one distance; here each layer is an in-focus image of its own, blurred by its own
distance, and the layers are combined as light combines:

- brightfield: transmission multiplies, so **optical density adds**. Each layer's
  transmission ``T_k = (I_k / white) ** w_k`` (its optical density scaled by the weight
  ``w_k``) is blurred by its PSF, and the image is ``white · Π_k (PSF_k ⊗ T_k)``. A single
  layer of weight 1 is exactly today's thin simulation (it blurs transmitted intensity).
  Blurring each layer's transmission rather than its optical density keeps a blurred
  layer's mean absorbance (what a defocused scan keeps) and never goes below zero.
- fluorescence: **emission adds**: ``Σ_k PSF_k ⊗ (w_k · I_k)``.

The **best plane** of a specimen is the optical-density-weighted (fluorescence:
emission-weighted) median depth of its layers, and the label of a simulated tile is the
focal plane's distance to it (:func:`best_plane`): a faint sharp layer over a blurred bulk
is out of focus; an in-focus bulk under faint blurred layers is in focus.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from napari_focusq.config import Optics
from napari_focusq.optics.psf import OpticsError, simulate_defocus

__all__ = ["Layer", "best_plane", "layer_weights", "one_faint_specimen", "random_specimen", "simulate_layered", "thick_section",
           "optical_density"]

#: The transmission floor (8-bit scale: 1 of 255) below which optical density is not defined.
_MIN_T = 1.0 / 255.0


@dataclass(frozen=True)
class Layer:
    """One layer of a thick specimen: an in-focus image, its depth (µm) and its weight
    (brightfield: a factor on its optical density; fluorescence: on its emission)."""

    image: np.ndarray
    depth_um: float
    weight: float = 1.0


def optical_density(image, white: float = 255.0) -> np.ndarray:
    """Optical density ``-ln(I / white)`` (natural log, as the project's stain code uses),
    with transmission floored at 1/255 and capped at 1 (brighter than glass is no absorbance).
    float64 for float64 input, else float32."""
    img = np.asarray(image)
    if img.dtype == np.uint8 and white == 255.0:
        return _OD_LUT[img]
    ftype = np.float64 if img.dtype == np.float64 else np.float32
    t = np.clip(img.astype(ftype) / ftype(white), _MIN_T, 1.0)
    return -np.log(t)


#: uint8 optical densities by table: training makes thousands of layered tiles.
_OD_LUT = -np.log(np.clip(np.arange(256, dtype=np.float64) / 255.0, _MIN_T, 1.0)).astype(np.float32)


def _mean_od(image, white: float) -> float:
    img = np.asarray(image)
    if img.dtype == np.uint8 and white == 255.0:
        return float(np.bincount(img.ravel(), minlength=256) @ _OD_LUT.astype(np.float64)) / img.size
    return float(optical_density(img, white).mean(dtype=np.float64))


def _transmission(image, weight: float, white: float) -> np.ndarray:
    """``(I / white) ** weight``: the layer's transmission with its optical density scaled."""
    img = np.asarray(image)
    if img.dtype == np.uint8 and white == 255.0:
        return np.exp(-np.float32(weight) * _OD_LUT)[img]
    return np.exp(-weight * optical_density(img, white))


def _fluor_signal(image) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    return np.clip(img - np.percentile(img, 1), 0, None)  # above the camera offset / dark level


def layer_weights(layers: Sequence[Layer], modality: str = "brightfield", white: float = 255.0) -> np.ndarray:
    """How much of the specimen each layer holds: its weight times its mean optical density
    (brightfield) or mean emission above the dark level (fluorescence)."""
    if modality == "brightfield":
        return np.array([L.weight * _mean_od(L.image, white) for L in layers])
    if modality == "fluorescence":
        return np.array([L.weight * float(_fluor_signal(L.image).mean()) for L in layers])
    raise OpticsError(f"modality must be 'brightfield' or 'fluorescence'; got {modality!r}")


def _content(layers, modality, white) -> np.ndarray:
    w = layer_weights(layers, modality, white)
    # Blank layers (glass, a dark field) hold nothing: then only the weights say where it is.
    return w if w.sum() > 0 else np.array([L.weight for L in layers], float)


def best_plane(depths_um: Sequence[float], weights: Sequence[float]) -> float:
    """The weighted median of ``depths_um``: the depth with half the weight on either side.

    Where the cumulative weight reaches exactly one half at a layer boundary (two equal
    halves), the median is the midpoint between the two layers, as for an even count.
    """
    d = np.asarray(depths_um, dtype=float)
    w = np.asarray(weights, dtype=float)
    if d.ndim != 1 or d.shape != w.shape or d.size == 0:
        raise OpticsError(f"need one weight per depth and at least one layer; got {d.shape} and {w.shape}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(w)) and np.all(w >= 0)) or w.sum() <= 0:
        raise OpticsError("depths must be finite and weights finite, non-negative and not all zero")
    order = np.argsort(d, kind="stable")
    d, w = d[order], w[order]
    c = np.cumsum(w) / w.sum()
    k = int(np.searchsorted(c, 0.5 - 1e-9))
    if abs(c[k] - 0.5) <= 1e-9 and k + 1 < len(d):
        return float((d[k] + d[k + 1]) / 2)
    return float(d[k])


def simulate_layered(
    layers: Sequence[Layer],
    focus_um: float,
    *,
    pixel_size_um: float,
    modality: str = "brightfield",
    optics: Optics | None = None,
    method: str = "optical",
    white: float = 255.0,
) -> tuple[np.ndarray, float]:
    """The image of a layered specimen with the focal plane at ``focus_um``, and its label.

    Parameters
    ----------
    layers
        One or more :class:`Layer`, images of one shape and dtype (brightfield RGB or grey
        with ``white`` as the light through empty glass; fluorescence any intensities).
    focus_um
        Height of the focal plane on the same axis as the layers' depths.
    pixel_size_um, modality, optics, method
        As :func:`~napari_focusq.optics.psf.simulate_defocus`, which blurs each layer.

    Returns
    -------
    image, defocus_um
        The image (same shape and dtype as the layers; integers rounded and clipped) and
        ``|focus_um - best plane|`` (:func:`best_plane` of :func:`layer_weights`).
    """
    if not layers:
        raise OpticsError("a layered specimen needs at least one layer")
    shape, dtype = np.shape(layers[0].image), np.asarray(layers[0].image).dtype
    for L in layers:
        if np.shape(L.image) != shape:
            raise OpticsError(f"layers must share one shape; got {shape} and {np.shape(L.image)}")
        if not (np.isfinite(L.depth_um) and np.isfinite(L.weight) and L.weight >= 0):
            raise OpticsError(f"layer depth must be finite and weight non-negative; got {L.depth_um}, {L.weight}")
    if not np.isfinite(focus_um):
        raise OpticsError(f"focal plane must be a finite number of µm; got {focus_um}")
    best = best_plane([L.depth_um for L in layers], _content(layers, modality, white))
    # float32 is plenty for 8/16-bit data (as the thin simulator); float64 input stays float64.
    ftype = np.float64 if dtype == np.float64 else np.float32
    if modality == "brightfield":
        acc = None
        for L in layers:
            t = _transmission(L.image, L.weight, white).astype(ftype, copy=False)
            b = simulate_defocus(t, focus_um - L.depth_um, pixel_size_um=pixel_size_um, modality=modality,
                                 optics=optics, method=method)
            acc = b if acc is None else np.multiply(acc, b, out=acc)
        out = acc * ftype(white)
    else:
        out = np.zeros(shape, ftype)
        for L in layers:
            out += simulate_defocus(ftype(L.weight) * np.asarray(L.image, dtype=ftype), focus_um - L.depth_um,
                                    pixel_size_um=pixel_size_um, modality=modality, optics=optics, method=method)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(dtype)
    else:
        out = out.astype(dtype, copy=False)
    return out, abs(float(focus_um) - best)


def thick_section(image, z_um: float, layers: Sequence[Layer], *, pixel_size_um: float,
                  modality: str = "brightfield", optics: Optics | None = None, method: str = "optical",
                  white: float = 255.0) -> np.ndarray:
    """``image`` (the bulk, depth 0, weight 1) with further ``layers``, focused ``z_um`` from the
    specimen's best plane (signed: positive towards greater depths). The layered mode of
    :func:`~napari_focusq.optics.psf.simulate_defocus`."""
    img = np.asarray(image)
    if modality == "brightfield" and img.ndim == 3 and img.shape[-1] == 4:
        raise OpticsError("layered brightfield works on RGB or grey images; drop the alpha channel first")
    all_layers = [Layer(img, 0.0, 1.0), *layers]
    for L in all_layers[1:]:
        if not isinstance(L, Layer):
            raise OpticsError(f"layers must be napari_focusq.optics.layered.Layer objects; got {type(L).__name__}")
        if np.shape(L.image) != img.shape:
            raise OpticsError(f"every layer must have the image's shape {img.shape}; got {np.shape(L.image)}")
    if not np.isfinite(z_um):
        raise OpticsError(f"defocus z must be a finite number of µm; got {z_um}")
    best = best_plane([L.depth_um for L in all_layers], _content(all_layers, modality, white))
    return simulate_layered(all_layers, best + float(z_um), pixel_size_um=pixel_size_um, modality=modality,
                            optics=optics, method=method, white=white)[0]


def random_specimen(bulk: np.ndarray, extras: Sequence[np.ndarray], z_um: float, rng: np.random.Generator, *,
                    modality: str = "brightfield", thickness_um: tuple[float, float] = (2.0, 6.0),
                    weight: tuple[float, float] = (0.05, 0.45), near: float = 0.7,
                    white: float = 255.0) -> tuple[list[Layer], float]:
    """A thick specimen for training: ``bulk`` (weight 1) and ``extras`` (faint layers), and
    a focal plane ``z_um`` from its best plane.

    The section is ``thickness_um`` thick (uniform); every layer sits at a uniform depth in
    it; each extra gets a weight uniform in ``weight`` (fluorescence: first scaled to the
    bulk's bright end, so the weight is a share of the bulk's emission). With probability
    ``near`` the focal plane is on the side of the best plane where the extras lie, so they
    are nearer focus than the bulk: the case that fools a model into reading focus from the
    sharpest trace. Returns (layers, focal plane height); :func:`simulate_layered` of them
    reports ``z_um``.
    """
    t = rng.uniform(*thickness_um)
    z = abs(float(z_um))
    depths = rng.uniform(0, t, 1 + len(extras))
    weights = [1.0] + [float(rng.uniform(*weight)) for _ in extras]
    ref = float(np.percentile(bulk, 99.5)) if modality == "fluorescence" else None
    images = [bulk]
    for e in extras:
        if modality == "fluorescence":
            e = np.asarray(e, np.float32) * np.float32(ref / max(float(np.percentile(e, 99.5)), 1e-6))
        images.append(e)
    content = _content([Layer(i, 0.0, w) for i, w in zip(images, weights)], modality, white)
    best = best_plane(depths, content)
    side = 1.0 if rng.random() < 0.5 else -1.0
    if extras and rng.random() < near:
        # The faint layers between the best plane and twice the defocus beyond it, on the side
        # with more of the section: nearer the focal plane than the bulk (while they stay faint).
        side = 1.0 if t - best > best else -1.0
        depths[1:] = np.clip(best + side * z * rng.uniform(0.25, 1.75, len(extras)), 0, t)
        best = best_plane(depths, content)
    layers = [Layer(i, float(d), w) for i, d, w in zip(images, depths, weights)]
    return layers, best + side * z


def one_faint_specimen(bulk: np.ndarray, faint: np.ndarray, z_um: float, rng: np.random.Generator, *,
                       modality: str = "brightfield", weight: tuple[float, float] = (0.05, 0.45),
                       near: float = 0.7, beyond_um: tuple[float, float] = (0.5, 4.0),
                       white: float = 255.0) -> tuple[list[Layer], float]:
    """The simplest thick specimen: ``bulk`` (weight 1, depth 0) and ONE faint layer ``faint``
    (in training, a crop of another image), with the focal plane ``z_um`` from the bulk.

    The faint layer's weight is uniform in ``weight`` and then capped so that it holds at most
    0.95 of the bulk's content: the bulk stays the best plane and the label is the bulk's own
    distance ``|z_um|``. With probability ``near`` the faint layer is nearer the focal plane
    than the bulk (distance uniform in [0, |z|)), else it is ``beyond_um`` farther than the
    bulk, on either side (an in-focus bulk under blurred haze). Returns (layers, focal plane);
    :func:`simulate_layered` of them reports ``|z_um|``.
    """
    z = abs(float(z_um))
    f = np.asarray(faint)
    if modality == "fluorescence":
        ref = float(np.percentile(bulk, 99.5))
        f = np.asarray(f, np.float32) * np.float32(ref / max(float(np.percentile(f, 99.5)), 1e-6))
    c_bulk, c_faint = layer_weights([Layer(bulk, 0.0), Layer(f, 0.0)], modality, white)
    w = float(rng.uniform(*weight))
    if c_faint > 0:
        w = min(w, 0.95 * c_bulk / c_faint)
    side = 1.0 if rng.random() < 0.5 else -1.0
    focus = side * z
    if z > 0 and rng.random() < near:
        depth = focus - side * z * rng.uniform(0.0, 1.0)  # between the focal plane and the bulk...
        if rng.random() < 0.5:
            depth = 2 * focus - depth  # ...or as near it on the far side
    else:
        depth = focus + (1.0 if rng.random() < 0.5 else -1.0) * (z + rng.uniform(*beyond_um))
    return [Layer(bulk, 0.0, 1.0), Layer(f, float(depth), w)], focus
