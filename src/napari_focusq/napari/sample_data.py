"""npe2 sample data: the bundled CMU-1 slide region and a defocus demo made from it."""
from __future__ import annotations

import numpy as np

#: Known defocus of the demo's regions, µm.
DEMO_Z_UM = (0, 1, 2, 4)


def sample_slide() -> list[tuple]:
    """The bundled CC0 CMU-1 slide region (Aperio SVS, H&E, 0.499 µm/px) as read by the reader."""
    from napari_focusq.io.formats import sample_slide_path
    from napari_focusq.napari.reader import layer_tuple

    return [layer_tuple(sample_slide_path())]


def defocus_demo() -> list[tuple]:
    """The sample slide with regions simulated at known defocus (0, 1, 2, 4 µm).

    Returns the simulated image (µm scale, RGB) and a hidden "True defocus (µm)" layer in
    the heatmap's colours, so the Focus QC result can be read against the truth.
    """
    from napari_focusq.demo import make_defocus_demo
    from napari_focusq.io.formats import open_image, sample_slide_path
    from napari_focusq.napari.layers import CONTRAST_UM, defocus_colormap

    with open_image(sample_slide_path()) as src:
        image = src.read_plane()
        px = float(src.pixel_size_um)
    demo, zmap = make_defocus_demo(image, pixel_size_um=px, z_list=DEMO_Z_UM)
    zmap = np.asarray(zmap, dtype=np.float32)
    # no "path": the demo is simulated in memory, not the file on disk
    meta = {"pixel_size_um": px, "pixel_size_source": "Aperio MPP",
            "axes": "YXC", "demo_z_um": list(DEMO_Z_UM), "region_z_map": zmap}
    # the truth map may be per pixel or coarser: stretch it over the image either way
    zs = (image.shape[0] * px / zmap.shape[0], image.shape[1] * px / zmap.shape[1])
    zt = tuple(s / 2 - px / 2 for s in zs)
    return [
        (demo, {"name": "Defocus demo (0, 1, 2, 4 µm)", "rgb": True, "scale": (px, px),
                "units": ("µm", "µm"), "metadata": meta}, "image"),
        (zmap, {"name": "True defocus (µm)", "scale": zs, "translate": zt, "units": ("µm", "µm"),
                "colormap": defocus_colormap(), "contrast_limits": CONTRAST_UM, "opacity": 1.0,
                "visible": False, "interpolation2d": "nearest"}, "image"),
    ]
