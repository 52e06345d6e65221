"""slideio backend: Olympus/Evident VSI (cellSens), the one common format no other backend here reads.

A VSI slide is a small .vsi file plus a folder of .ets files beside it; slideio reads both.
The largest scene is the scan (VSI files also hold overview scenes); its zoom levels are the
pyramid, its z slices a stack, its auxiliary images the side pictures. slideio reads other
formats too (SVS, CZI, DICOM...), which is how the tests exercise this code without a VSI file.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from napari_focusq.errors import ImageReadError
from napari_focusq.io.extras import require_for_file
from napari_focusq.io.lazy import RegionLevel
from napari_focusq.io.source import fail_opening

#: the driver slideio should use for a suffix (others: its AUTO detection)
_DRIVERS = {".vsi": "VSI"}


def open_slideio(path: Path, driver: str | None = None):
    """Open ``path`` with slideio as an :class:`~napari_focusq.io.source.ImageSource`."""
    from napari_focusq.io.source import ImageSource

    slideio = require_for_file(path, "slideio", "slideio", "Olympus VSI")
    driver = driver or _DRIVERS.get(path.suffix.lower(), "AUTO")
    ets = path.parent / f"_{path.stem}_"
    if driver == "VSI" and not ets.is_dir():
        # cellSens keeps the scan in _<name>_/stack*/frame_t.ets; the .vsi alone is an overview
        raise ImageReadError(path, f"the scan's .ets files are missing: copy the folder {ets.name}/ "
                                   "that cellSens saved beside the .vsi together with it")
    try:
        slide = slideio.open_slide(str(path), driver)
    except Exception as exc:
        raise ImageReadError(path, f"slideio cannot read it ({type(exc).__name__}: {exc}); a VSI "
                                   "slide needs the folder of .ets files saved beside it") from exc
    try:
        scenes = [slide.get_scene(i) for i in range(slide.num_scenes)]
        if not scenes:
            raise ImageReadError(path, "contains no image scene")
        scene = max(scenes, key=lambda s: s.rect[2] * s.rect[3])
        if scene.num_t_frames > 1:
            raise ImageReadError(path, f"has axes focusq cannot use (T={scene.num_t_frames}): it reads "
                                       "2-D images and z-stacks with optional channels")
        nc, nz = scene.num_channels, scene.num_z_slices
        dtypes = {np.dtype(scene.get_channel_data_type(c)) for c in range(nc)}
        if len(dtypes) != 1:
            raise ImageReadError(path, f"has channels of different types ({sorted(map(str, dtypes))})")
        dtype = dtypes.pop()
        levels, downsamples = [], []
        lock = threading.Lock()  # slideio does not document concurrent reads of one scene
        for i in range(scene.num_zoom_levels):
            info = scene.get_zoom_level_info(i)
            w, h = info.size.width, info.size.height
            tile = info.tile_size
            shape = ((nz,) if nz > 1 else ()) + (h, w) + ((nc,) if nc > 1 else ())
            read = _reader(path, scene, lock, i, nc)
            if nz > 1:
                levels.append(RegionLevel(shape, dtype, read, chunks=(tile.height, tile.width), stack=True))
            else:
                levels.append(RegionLevel(shape, dtype, lambda y, x, hh, ww, r=read: r(0, y, x, hh, ww),
                                          chunks=(tile.height or 512, tile.width or 512)))
            downsamples.append(1.0 / info.scale if info.scale else scene.rect[2] / w)
        axes = ("Z" if nz > 1 else "") + "YX" + ("C" if nc > 1 else "")
        names = list(slide.get_aux_image_names())
        src = ImageSource(path, levels, axes, axes, backend="slideio", closer=slide.close,
                          associated=lambda: {n.lower(): (lambda n=n: slide.get_aux_image_raster(n))
                                              for n in names})
        src.downsamples = [float(d) for d in downsamples]
        res = [r * 1e6 for r in scene.resolution if r and np.isfinite(r) and r > 0]
        if res:
            src.pixel_size_um, src.pixel_size_source = float(np.mean(res)), "slideio resolution"
        if nz > 1 and scene.z_resolution and scene.z_resolution > 0:
            src.z_spacing_um = float(scene.z_resolution) * 1e6
        profile = scene.get_color_profile()
        src.icc_profile = bytes(profile) if profile else None
        return src
    except Exception as exc:
        fail_opening(path, slide, "the slide's structure", exc)


def _reader(path: Path, scene, lock: threading.Lock, level: int, nc: int):
    def read(z: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        try:
            with lock:
                a = scene.read_block_from_level(level, (x0, y0, w, h), slices=(z, z + 1))
        except Exception as exc:
            raise ImageReadError(path, f"cannot read pixels ({type(exc).__name__}: {exc}); "
                                       "the file may be truncated or corrupt") from exc
        a = np.asarray(a)
        if nc > 1 and a.ndim == 2:
            a = a[..., None]
        return np.ascontiguousarray(a[..., :nc] if nc > 1 else (a[..., 0] if a.ndim == 3 else a))

    return read
