"""Issue 20 follow-ups (brief R20): each test failed on main at f6ad43f."""
from __future__ import annotations

import numpy as np
import pytest

TIMEOUT_MS = 120_000


def test_overlay_key_is_unbound_when_the_dock_closes(make_napari_viewer_proxy):
    from napari_focusq._qt.layers import TOGGLE_KEY

    viewer = make_napari_viewer_proxy()
    real = getattr(viewer, "__wrapped__", viewer)
    dock, w = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    assert TOGGLE_KEY in {str(k).lower() for k in real.keymap}
    viewer.window.remove_dock_widget(dock)  # what the dock's close button does
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    assert TOGGLE_KEY not in {str(k).lower() for k in real.keymap}
    # its clicks and hover go with it: a closed panel must not toggle tiles
    assert w._on_click not in real.mouse_drag_callbacks and w._on_hover not in real.mouse_move_callbacks
