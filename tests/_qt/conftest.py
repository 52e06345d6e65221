"""Fixtures for the napari plugin tests (run under xvfb; see Makefile)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    """Keep QSettings (remembered widget values, user models) out of the real home folder."""
    from qtpy.QtCore import QSettings

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the default tile collection's home
    import napari_focusq.napari.widgets.workers as workers

    monkeypatch.setattr(workers, "_registry", None)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """A small model checkpoint (untrained unless shipped weights exist)."""
    import torch

    from napari_focusq.models import new_model

    torch.manual_seed(0)  # the same untrained weights on every run
    return new_model("fast").save(tmp_path_factory.mktemp("models") / "untrained.safetensors")


@pytest.fixture
def qc(make_napari_viewer_proxy, model_path):
    """A viewer with the defocus demo open and Focus QC docked, the session's model added."""
    viewer = make_napari_viewer_proxy()
    viewer.open_sample("napari-focusq", "defocus_demo")
    _, widget = viewer.window.add_plugin_dock_widget("napari-focusq", "Focus QC")
    widget.add_model(str(model_path))
    return viewer, widget


@pytest.fixture
def notes(monkeypatch):
    """Messages the widgets sent to napari's notifications, as {"error": [...], "info": [...]}."""
    import napari_focusq.napari.widgets.notify as notify

    got = {"error": [], "info": []}
    monkeypatch.setattr(notify, "error", lambda m: got["error"].append(m))
    monkeypatch.setattr(notify, "info", lambda m: got["info"].append(m))
    return got


def click(viewer, world_yx):
    """Simulate a left click (press + release, no drag) at a world position."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    real = getattr(viewer, "__wrapped__", viewer)
    common = dict(position=tuple(world_yx), button=1, buttons=[1], modifiers=(), is_dragging=False,
                  view_direction=None, dims_displayed=[0, 1], dims_point=tuple(world_yx), delta=(0, 0))
    mouse_press_callbacks(real, ReadOnlyWrapper(SimpleNamespace(type="mouse_press", **common)))
    mouse_release_callbacks(real, SimpleNamespace(type="mouse_release", **common))


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A folder nobody may write to (as root, where chmod does not stop writes, writes into it fail)."""
    import os
    import tempfile

    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:
        real = tempfile.mkstemp

        def mkstemp(*a, dir=None, **kw):
            if dir is not None and Path(dir).resolve() == ro.resolve():
                raise PermissionError(13, "Permission denied", str(ro))
            return real(*a, dir=dir, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        real_open = os.open

        def os_open(path, flags, *a, **kw):
            if Path(path).resolve().parent == ro.resolve() and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *a, **kw)

        monkeypatch.setattr(os, "open", os_open)
    yield ro
    ro.chmod(0o700)


def shot(viewer, name: str, tmp_path) -> Path:
    """Screenshot of the whole window (docks included) into $FOCUSQ_SCREENSHOTS (docs/ for the README), else tmp.

    The README's pictures are made by the tests themselves:
    ``FOCUSQ_SCREENSHOTS=docs xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest tests/_qt/test_review_widget.py``.
    """
    import os

    folder = Path(os.environ.get("FOCUSQ_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    real = getattr(viewer, "__wrapped__", viewer)
    real.window._qt_window.resize(1500, 950)
    from qtpy.QtWidgets import QApplication

    for _ in range(5):  # let the canvas lay its overlays out for the new size
        QApplication.processEvents()
    for layer in real.layers:  # re-place the colour bars (a dock added since may have narrowed the canvas)
        bar = getattr(layer, "colorbar", None)
        if bar is not None and bar.visible:
            bar.visible = False
            bar.visible = True
    QApplication.processEvents()
    path = folder / name
    real.screenshot(str(path), canvas_only=False, flash=False)
    assert path.stat().st_size > 10_000  # a real picture, not an empty window
    return path
