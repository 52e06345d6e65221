"""The reader inside a real viewer: what a user sees on opening, and files closed when layers go."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"


def _source(layer):
    """The open file behind a layer (None once released)."""
    from napari_focusq.napari import reader as _reader

    return _reader.open_sources().get(layer.metadata["focusq_source"])


def test_file_closes_when_its_layer_is_removed(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(SVS), plugin="napari-focusq")
    assert layer.metadata["backend"] == "tifffile" and layer.rgb
    src = _source(layer)
    assert not src.closed
    viewer.layers.remove(layer)
    assert src.closed and _source(layer) is None


def test_multichannel_file_closes_with_its_last_channel_layer(make_napari_viewer, tmp_path):
    import tifffile

    path = tmp_path / "two_channels.ome.tif"
    rng = np.random.default_rng(3)
    tifffile.imwrite(path, rng.integers(0, 4000, (2, 64, 80), dtype=np.uint16),
                     metadata={"axes": "CYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65})
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-focusq")
    assert len(layers) == 2
    src = _source(layers[0])
    assert _source(layers[1]) is src
    viewer.layers.remove(layers[0])
    assert not src.closed  # the other channel still reads from it
    viewer.layers.remove(layers[1])
    assert src.closed


def test_dicom_folder_opens_in_the_viewer(make_napari_viewer, tmp_path):
    pytest.importorskip("wsidicom")
    from format_files import make_dicom_wsi
    from napari_focusq.io.formats import open_image

    with open_image(SVS) as s:
        rgb = s.read_region(0, 0, 1200, 1000)
    folder = make_dicom_wsi(rgb, tmp_path / "slide_dicom", 0.499)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(folder), plugin="napari-focusq")
    assert layer.multiscale and layer.metadata["backend"] == "wsidicom"
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    viewer.reset_view()
    shot = viewer.screenshot(str(tmp_path / "dicom.png"), canvas_only=False)
    assert shot.shape[0] > 100
    src = _source(layer)
    viewer.layers.remove(layer)
    assert src.closed
