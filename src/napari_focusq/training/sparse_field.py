"""Sparse fluorescence fields made of real nuclei: what ``benchmarks/bench_sparse.py`` and the
sparse-scoring tests score (issue 18).

A high-content screening field holds a few whole objects on a dark background; these
fields place whole nuclei cut from a real in-focus image at random on such a field and
capture it through the optics, defocused, with camera noise. (The training augmentation
that once lived here, ``TrainConfig(sparse=p)``, was measured and left off: DESIGN-NOTES,
"Fluorescence: sparse fields"; git has it.)
"""
from __future__ import annotations

import numpy as np

#: A high-content screening field: ImageXpress-like 20x with 2x2 binning (issue 18).
FIELD_SHAPE = (520, 696)
FIELD_PIXEL_UM = 0.65


def nuclei_crops(image: np.ndarray, pixel_size_um: float, *, field_pixel_um: float = FIELD_PIXEL_UM,
                 min_um2: float = 20.0, max_um2: float = 600.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole objects of a real in-focus image, resampled to ``field_pixel_um``: (crop above
    the image's background level, soft mask) pairs, objects touching the border left out.

    The image must be finer than ``field_pixel_um``: area-averaging keeps it in focus there
    (DESIGN §3); a coarser one is refused.
    """
    from scipy import ndimage as ndi

    from napari_focusq.scoring.resample import resample_to_working

    if pixel_size_um > field_pixel_um * 1.02:
        raise ValueError(f"source pixel {pixel_size_um} µm is coarser than the field's {field_pixel_um} µm: "
                         "it would not be in focus there")
    a = resample_to_working(np.asarray(image, np.float32), pixel_size_um, field_pixel_um)
    bg = float(np.percentile(a, 10))
    smooth = ndi.gaussian_filter(a, 1.0)
    top = float(np.percentile(smooth, 99.5))
    if top <= bg:
        return []
    fg = smooth > bg + 0.25 * (top - bg)
    labels, n = ndi.label(fg)
    px2 = field_pixel_um ** 2
    out = []
    for i, sl in enumerate(ndi.find_objects(labels), 1):
        if sl is None:
            continue
        obj = labels[sl] == i
        area = obj.sum() * px2
        if not min_um2 <= area <= max_um2:
            continue
        y0, y1, x0, x1 = sl[0].start - 4, sl[0].stop + 4, sl[1].start - 4, sl[1].stop + 4
        if y0 < 0 or x0 < 0 or y1 > a.shape[0] or x1 > a.shape[1]:
            continue  # cut by the image border: not a whole object
        m = ndi.binary_dilation(labels[y0:y1, x0:x1] == i, iterations=2)
        soft = ndi.gaussian_filter(m.astype(np.float32), 1.0)
        out.append((np.clip(a[y0:y1, x0:x1] - bg, 0, None) * soft, soft))
    return out


def make_sparse_field(crops, rng: np.random.Generator, *, n_objects=(5, 20), shape=FIELD_SHAPE,
                      signal=(400.0, 3000.0)) -> np.ndarray:
    """A dark field (float32, signal units above background) holding ``n_objects`` whole
    objects from ``crops`` at random, non-overlapping places; brightest object ~``signal``."""
    if not crops:
        raise ValueError("no objects to place")
    k = int(rng.integers(n_objects[0], n_objects[1] + 1))
    field = np.zeros(shape, np.float32)
    taken = np.zeros(shape, bool)
    scale = float(rng.uniform(*signal)) / max(max(float(c.max()) for c, _ in crops), 1e-6)
    placed = tries = 0
    while placed < k and tries < 200 * k:
        tries += 1
        c, m = crops[int(rng.integers(len(crops)))]
        if rng.random() < 0.5:
            c, m = c[:, ::-1], m[:, ::-1]
        if rng.random() < 0.5:
            c, m = c.T, m.T
        h, w = c.shape
        if h >= shape[0] or w >= shape[1]:
            continue
        y, x = int(rng.integers(0, shape[0] - h)), int(rng.integers(0, shape[1] - w))
        if taken[y:y + h, x:x + w].any():
            continue
        field[y:y + h, x:x + w] += c * scale
        taken[y:y + h, x:x + w] |= m > 0.05
        placed += 1
    return field


def capture_field(field: np.ndarray, z_um: float, rng: np.random.Generator, *, optics=None,
                  pixel_size_um: float = FIELD_PIXEL_UM, offset: float = 100.0) -> np.ndarray:
    """The field seen defocused by ``z_um`` through ``optics``: camera offset, Poisson noise, uint16."""
    from napari_focusq.optics.psf import simulate_defocus

    b = simulate_defocus(field, z_um, pixel_size_um=pixel_size_um, modality="fluorescence", optics=optics)
    cam = rng.poisson(np.clip(b, 0, None) + 20.0) + offset - 20.0 + rng.normal(0, 2.0, b.shape)
    return np.clip(np.rint(cam), 0, 65535).astype(np.uint16)
