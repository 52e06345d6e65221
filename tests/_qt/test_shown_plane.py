"""The shown plane of a z-stack: Focus QC and the training panel take the same one (issue 17).

The training panel took the slider's step number, which is not the stack's plane when
the stack is translated in z beside another stack (failed before at 2001dc4: it wrote
plane 3 where Focus QC scores plane 1).
"""
from __future__ import annotations

import numpy as np


def _two_stacks(viewer):
    """A reference stack at z 0..4 µm and a stack translated 2 µm up, whose plane k holds the value k."""
    ref = np.zeros((5, 64, 64), np.uint8)
    stack = np.stack([np.full((64, 64), k, np.uint8) for k in range(5)])
    md = {"pixel_size_um": 0.5}
    viewer.add_image(ref, name="reference", scale=(1.0, 0.5, 0.5), metadata=dict(md))
    return viewer.add_image(stack, name="translated", scale=(1.0, 0.5, 0.5), translate=(2.0, 0.0, 0.0),
                            metadata=dict(md))


def test_both_widgets_take_the_plane_shown_on_a_translated_stack(make_napari_viewer_proxy):
    import tifffile

    from napari_focusq.napari import layers as L

    viewer = make_napari_viewer_proxy()
    layer = _two_stacks(viewer)
    viewer.dims.set_point(0, 3.0)  # world z 3 µm: plane 1 of the stack translated by 2 µm
    assert L.shown_plane(viewer, layer) == 1

    _, qc = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    qc.layer_combo.setCurrentText("translated")
    from napari_focusq.napari.widgets.qc_jobs import checked_input

    _layer, plane, z, _px = checked_input(qc)
    assert z == 1 and int(plane[0, 0]) == 1

    _, tw = viewer.window.add_plugin_dock_widget("napari-focusq", "Train focus model")
    tw.layer_combo.setCurrentText("translated")
    path, px = tw._layer_image()
    assert px == 0.5
    assert int(np.unique(tifffile.imread(path))[0]) == 1  # the same plane, not the slider's step 3

    L.show_plane(viewer, layer, 4)  # the inverse: the slider moves to the stack's plane 4
    assert L.shown_plane(viewer, layer) == 4 and viewer.dims.point[0] == 6.0
