"""Classical focus measures and the sharpest slice of a z-stack.

Every measure is computed on one grey plane: RGB(A) uint8 is reduced to luminance
(Rec. 601 weights, alpha dropped), any other multichannel plane to the channel mean.
Measures are size-independent means, and NaN/inf pixels are ignored (a derivative
touching one is ignored too). A plane without finite pixels (or too few for the
measure's stencil) scores ``-inf``, so it is never the sharpest.

- ``std``: standard deviation of the intensities.
- ``normvar``: variance / mean (Groen et al. 1985), insensitive to overall brightness.
- ``laplacian``: variance of the 4-neighbour Laplacian (Pech-Pacheco et al. 2000).
- ``tenengrad``: mean squared Sobel gradient magnitude (Tenenbaum 1970).
- ``brenner``: mean squared difference between pixels two apart (Brenner et al. 1976),
  averaged over rows and columns so it does not favour one direction.
"""
from __future__ import annotations

from typing import Any, Callable, Generator

import numpy as np

from napari_focusq.errors import FocusMeasureError
from napari_focusq.progress import Progress, drive

__all__ = [
    "MEASURES",
    "FocusMeasureError",
    "focus_measure",
    "focus_measures_batch",
    "variance_of_laplacian",
    "variance_of_laplacian_batch",
    "sharpest_slice",
    "iter_sharpest_slice",
]

MEASURES = ("std", "normvar", "laplacian", "tenengrad", "brenner")
_LUMA = np.array([0.299, 0.587, 0.114])


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise FocusMeasureError(f"unknown focus measure {measure!r}; expected one of {MEASURES}")


def _to_grey(tiles: np.ndarray, has_channels: bool) -> np.ndarray:
    """(N, H, W[, C]) -> float64 (N, H, W) with NaN where a pixel is not finite."""
    if tiles.dtype.kind not in "uifb":
        raise FocusMeasureError(f"image must be numeric; got dtype {tiles.dtype}")
    if has_channels:
        c = tiles.shape[-1]
        if tiles.dtype == np.uint8 and c in (3, 4):
            grey = tiles[..., :3].astype(np.float64) @ _LUMA
        else:
            grey = tiles.astype(np.float64).mean(axis=-1)
    else:
        grey = tiles.astype(np.float64)
    if tiles.dtype.kind == "f":
        grey[~np.isfinite(grey)] = np.nan  # inf counts as missing, like NaN
    return grey


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Mean over the last two axes; -inf where nothing is finite (no warnings)."""
    ok = np.isfinite(a)
    n = ok.sum(axis=(-2, -1))
    s = np.where(ok, a, 0.0).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), -np.inf)


def _nanvar(a: np.ndarray) -> np.ndarray:
    m = _nanmean(a)
    mm = np.where(np.isfinite(m), m, 0.0)[..., None, None]
    v = _nanmean((a - mm) ** 2)
    return np.where(np.isfinite(m), v, -np.inf)


def _measure_grey(g: np.ndarray, measure: str) -> np.ndarray:
    """The measure of each plane of g (N, H, W), float64 (N,)."""
    if measure == "std":
        v = _nanvar(g)
        return np.where(np.isfinite(v), np.sqrt(np.maximum(v, 0.0)), -np.inf)
    if measure == "normvar":
        v, m = _nanvar(g), _nanmean(g)
        with np.errstate(invalid="ignore", divide="ignore"):
            # A plane of zeros has no contrast: 0, not 0/0.
            nv = np.where(v > 0, v / np.maximum(np.abs(m), np.finfo(float).tiny), 0.0)
        return np.where(np.isfinite(m), nv, -np.inf)
    if measure == "laplacian":
        # Valid interior only: padding would invent edges at the border.
        lap = (g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:]
               - 4 * g[:, 1:-1, 1:-1])
        return _nanvar(lap)
    if measure == "tenengrad":
        gx = (g[:, :-2, 2:] + 2 * g[:, 1:-1, 2:] + g[:, 2:, 2:]
              - g[:, :-2, :-2] - 2 * g[:, 1:-1, :-2] - g[:, 2:, :-2])
        gy = (g[:, 2:, :-2] + 2 * g[:, 2:, 1:-1] + g[:, 2:, 2:]
              - g[:, :-2, :-2] - 2 * g[:, :-2, 1:-1] - g[:, :-2, 2:])
        return _nanmean(gx**2 + gy**2)
    if measure == "brenner":
        bx = _nanmean((g[:, :, 2:] - g[:, :, :-2]) ** 2)
        by = _nanmean((g[:, 2:, :] - g[:, :-2, :]) ** 2)
        return 0.5 * (bx + by)
    raise AssertionError(measure)


def focus_measures_batch(tiles, measure: str = "std") -> np.ndarray:
    """One focus score per tile of a batch.

    Parameters
    ----------
    tiles
        (N, H, W) grey or (N, H, W, C) multichannel tiles, any numeric dtype.
    measure
        One of :data:`MEASURES`; higher means sharper.

    Returns
    -------
    numpy.ndarray
        float64 (N,); ``-inf`` for a tile without finite pixels.
    """
    _check_measure(measure)
    t = np.asarray(tiles)
    if t.ndim not in (3, 4):
        raise FocusMeasureError(f"tiles must be (N, H, W) or (N, H, W, C); got shape {t.shape}")
    return _measure_grey(_to_grey(t, t.ndim == 4), measure)


def focus_measure(image2d, measure: str = "std") -> float:
    """Focus score of one (Y, X) or (Y, X, C) plane; higher means sharper.

    See the module docstring for the measures and how channels and NaN are handled.
    """
    _check_measure(measure)
    img = np.asarray(image2d)
    if img.ndim not in (2, 3):
        raise FocusMeasureError(f"a plane must be (Y, X) or (Y, X, C); got shape {img.shape}")
    return float(focus_measures_batch(img[None], measure)[0])


def variance_of_laplacian(tile) -> float:
    """Variance of the 4-neighbour Laplacian of a (Y, X[, C]) tile: the classical baseline."""
    return focus_measure(tile, "laplacian")


def variance_of_laplacian_batch(tiles) -> np.ndarray:
    """:func:`variance_of_laplacian` of every tile of (N, H, W[, C]), float64 (N,)."""
    return focus_measures_batch(tiles, "laplacian")


# ---------------------------------------------------------------- z-stacks
def _stack_reader(stack) -> tuple[int, bool, Callable[[int], np.ndarray]]:
    """Number of planes, whether planes have channels, and a reader of one plane."""
    if hasattr(stack, "read_plane") and hasattr(stack, "axes"):  # io.ImageSource
        axes = stack.axes
        if "Z" not in axes:
            raise FocusMeasureError(
                f"{getattr(stack, 'path', 'image')}: not a z-stack (axes {axes}); "
                "sharpest_slice expects (Z, Y, X[, C])")
        from napari_focusq.io import budget

        h, w = stack.shape[axes.index("Y")], stack.shape[axes.index("X")]
        c = stack.shape[-1] if "C" in axes else 1
        # a plane at a time, and its float64 grey copies (_to_grey: one per channel, then two)
        budget.require(getattr(stack, "path", "stack"), f"measuring focus on {h:,} x {w:,} px planes",
                       budget.plane_need(h, w, c, np.dtype(stack.dtype).itemsize, copies=1 + 2 / c))
        return int(stack.shape[0]), "C" in axes, lambda z: np.asarray(stack.read_plane(z))
    shape = tuple(getattr(stack, "shape", ()))
    if not shape:
        stack = np.asarray(stack)
        shape = stack.shape
    if len(shape) == 2:
        raise FocusMeasureError(
            f"got a single 2-D plane of shape {shape}; sharpest_slice expects a stack (Z, Y, X[, C])")
    if len(shape) not in (3, 4):
        raise FocusMeasureError(f"got shape {shape} ({len(shape)}-D); sharpest_slice expects (Z, Y, X[, C])")
    if len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) >= 16:
        raise FocusMeasureError(
            f"shape {shape} looks like one RGB image (Y, X, C), not a stack; "
            "sharpest_slice expects (Z, Y, X[, C]) (add a Z axis for a single plane)")
    if shape[0] < 1:
        raise FocusMeasureError(f"the stack has no planes: shape {shape}")

    def read(z: int) -> np.ndarray:
        plane = stack[z]
        # dask and zarr hand back lazy or chunked planes; materialise one plane only.
        if hasattr(plane, "compute"):
            plane = plane.compute()
        return np.asarray(plane)

    return int(shape[0]), len(shape) == 4, read


def iter_sharpest_slice(stack, measure: str = "std") -> Generator[Progress, None, tuple[int, np.ndarray]]:
    """Score a z-stack plane by plane, yielding a :class:`Progress` per plane.

    Returns (as the generator's ``StopIteration`` value) ``(index, scores)``; see
    :func:`sharpest_slice`. Input is checked before the first event.
    """
    _check_measure(measure)
    nz, has_c, read = _stack_reader(stack)
    return _iter(nz, has_c, read, measure)


def _iter(nz, has_c, read, measure):
    scores = np.empty(nz, dtype=np.float64)
    yield Progress("sharpest", 0, nz, f"scoring {nz} planes ({measure})")
    for z in range(nz):
        plane = read(z)
        if plane.ndim != 2 + has_c:
            raise FocusMeasureError(f"plane {z} has shape {plane.shape}; expected {2 + has_c}-D")
        scores[z] = _measure_grey(_to_grey(plane[None], has_c), measure)[0]
        yield Progress("sharpest", z + 1, nz, f"plane {z}: {scores[z]:.4g}")
    if not np.isfinite(scores).any():
        raise FocusMeasureError("no plane of the stack has finite pixels to measure focus on")
    return int(np.argmax(scores)), scores


def sharpest_slice(stack, measure: str = "std",
                   progress: Callable[[Progress], Any] | None = None) -> tuple[int, np.ndarray]:
    """Index of the sharpest plane of a z-stack and every plane's score.

    Parameters
    ----------
    stack
        (Z, Y, X) or (Z, Y, X, C): numpy, zarr, dask or an :class:`~napari_focusq.io.source.ImageSource`
        of a stack. It is read one plane at a time, never whole.
    measure
        One of :data:`MEASURES`.
    progress
        Called with a :class:`Progress` after each plane; return ``False`` to cancel.

    Returns
    -------
    index, scores
        ``argmax`` of the scores (first one on ties) and float64 scores, one per plane
        (``-inf`` for a plane without finite pixels). A one-plane stack gives ``(0, [s])``.

    Raises
    ------
    FocusMeasureError
        Unknown measure, a 2-D / 5-D array, or no plane with finite pixels.
    """
    return drive(iter_sharpest_slice(stack, measure), progress)
