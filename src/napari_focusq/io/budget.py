"""Memory budgets of the read paths: what a read will allocate, checked before it allocates.

Every path that decodes pixels (the tissue overview, the strips of tiles, z-stack planes,
``simulate``'s FFT fields, ``sharpest``'s planes) states here, from the file's *declared*
geometry, the bytes it will hold at once, and asks :func:`require` before it reads. A
file whose header claims a size that cannot be read within the budget is refused with a
clear message naming the option that raises the budget, instead of swapping the machine
to death or dying with a MemoryError half-way through a run (issue 19).

The budget is one figure per process: ``--max-memory MB`` on the command line, the
``FOCUSQ_MAX_MEMORY_MB`` environment variable (what batch workers inherit), or
:data:`DEFAULT_MAX_MEMORY_MB`. Python ints throughout: a declared 10^6 x 10^6 RGB plane is
3 TB, which numpy's fixed-width integers would wrap.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager

from napari_focusq.errors import FocusQError, MemoryBudgetError

#: Default budget (decimal MB, as the messages print it). The estimates below are upper
#: bounds: for a 100k x 100k px scan at 0.25 µm/px they are 0.53 GB (strips), 0.20 GB
#: (grid) and 0.47 GB (overview without a pyramid), each well inside 2 GB, while a header
#: claiming terabytes is refused at once. Larger layouts need --max-memory.
DEFAULT_MAX_MEMORY_MB = 2000
ENV_VAR = "FOCUSQ_MAX_MEMORY_MB"
OPTION = "--max-memory MB"
#: Bytes held per tile of the grid from scoring to the written outputs: ~12 float32 layers
#: of the FocusMap, the CSV row and GeoJSON text built in memory, Python objects on the way
#: (tracemalloc peak of write_outputs: 0.95 kB/tile on a 400 x 400 grid of random defocus,
#: the worst case for the GeoJSON polygons, besides ~100 MB fixed for the overlay figure).
BYTES_PER_GRID_TILE = 2048

_override: int | None = None


def human_bytes(n: int) -> str:
    """1536 -> '1.5 kB', in powers of 1000 as file managers show sizes."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def max_memory_bytes() -> int:
    """The budget now in force, in bytes."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            mb = float(env)
        except ValueError:
            raise FocusQError(f"{ENV_VAR}={env!r} is not a number of megabytes") from None
        if not (math.isfinite(mb) and mb > 0):
            raise FocusQError(f"{ENV_VAR}={env!r} must be a positive number of megabytes")
        return int(mb * 1e6)
    return DEFAULT_MAX_MEMORY_MB * 1_000_000


def set_max_memory_mb(mb: float | None) -> None:
    """Set the process-wide budget (None: back to the environment / default)."""
    global _override
    if mb is not None and not (math.isfinite(mb) and mb > 0):
        raise ValueError(f"the memory budget must be a positive number of MB; got {mb!r}")
    _override = None if mb is None else int(mb * 1e6)


@contextmanager
def max_memory_mb(mb: float | None):
    """Run a block under another budget (tests, benchmarks)."""
    global _override
    before = _override
    set_max_memory_mb(mb)
    try:
        yield
    finally:
        _override = before


def require(path, what: str, need: int, hint: str = "") -> None:
    """Raise :class:`MemoryBudgetError` when ``need`` bytes exceed the budget."""
    limit = max_memory_bytes()
    if need > limit:
        raise MemoryBudgetError(path, what, need, limit, hint)


def nbytes(*dims, itemsize: int = 1) -> int:
    """Product of dims times itemsize, as an exact Python int."""
    n = int(itemsize)
    for d in dims:
        n *= int(d)
    return n


# --------------------------------------------------------------------- per read path
def overview_need(rows: int, width: int, channels: int, itemsize: int, out_pixels: int) -> int:
    """One strip of ``rows`` full-width rows, its float64 block-mean copy and the overview."""
    strip = nbytes(rows, width, channels, itemsize=itemsize)
    return strip + nbytes(rows, width, channels, itemsize=8) + nbytes(out_pixels, channels, itemsize=8)


def strips_need(tile_level_px: float, strip_tiles: int, channels: int, itemsize: int, *,
                in_flight: int, queued_tiles: int, tile_px: int) -> int:
    """``in_flight`` strips of ``strip_tiles`` tiles read at once (source dtype plus a float32
    resampling copy), and ``queued_tiles`` working tiles waiting for the model (float32)."""
    side = int(math.ceil(tile_level_px)) + 2
    strip = nbytes(side, side * strip_tiles, channels, itemsize=itemsize + 4)
    return in_flight * strip + nbytes(queued_tiles, tile_px, tile_px, channels, itemsize=4)


def grid_need(n_tiles: int) -> int:
    """Per-tile results of a grid of ``n_tiles`` held until the outputs are written."""
    return nbytes(n_tiles, itemsize=BYTES_PER_GRID_TILE)


def plane_need(height: int, width: int, channels: int, itemsize: int, copies: float = 1.0) -> int:
    """One whole plane in the source dtype plus ``copies`` float64 working copies."""
    px = nbytes(height, width, channels)
    return px * itemsize + int(px * 8 * copies)


def simulate_need(height: int, width: int, channels: int, z_um: float, pixel_size_um: float,
                  na: float, n: float, wavelength_um: float, oversample: int) -> int:
    """Peak of :func:`napari_focusq.optics.psf.simulate_defocus` (optical method) for one z.

    Mirrors optics._psf_cached / _optical_blur: the PSF is computed on a fine complex
    field of side ~ (4 r_geo + 8 µm) x oversample, and the image is padded by the PSF
    radius on every side for the FFT convolution (input copy, spectrum, output).
    """
    tan = math.tan(math.asin(min(na / n, 0.999999)))
    r_geo = abs(z_um) * tan
    s = max(int(oversample), int(math.ceil(pixel_size_um * 4 * na / wavelength_um)))
    r_px = math.ceil((1.25 * r_geo + max(3.0, 6 * 0.61 * wavelength_um / na)) / pixel_size_um)
    field_px = math.ceil(max(2 * (2 * r_geo + 4.0), 2 * (r_px + 1) * pixel_size_um * 1.5, 16.0) / pixel_size_um)
    fine = nbytes(field_px * s, field_px * s, itemsize=16) * 3  # pupil, its inverse FFT, intensity
    padded = nbytes(height + 2 * r_px, width + 2 * r_px, channels, itemsize=8) * 3
    return fine + padded
