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
    import napari_focusq._qt.workers as workers

    monkeypatch.setattr(workers, "_registry", None)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """A small model checkpoint (untrained unless shipped weights exist)."""
    import torch

    from napari_focusq.models import new_model

    torch.manual_seed(0)  # the same untrained weights on every run
    return new_model("fast").save(tmp_path_factory.mktemp("models") / "untrained.safetensors")


@pytest.fixture
def notes(monkeypatch):
    """Messages the widgets sent to napari's notifications, as {"error": [...], "info": [...]}."""
    import napari_focusq._qt.qc_widget as qc

    got = {"error": [], "info": []}
    monkeypatch.setattr(qc, "_notify_error", lambda m: got["error"].append(m))
    monkeypatch.setattr(qc, "_notify_info", lambda m: got["info"].append(m))
    try:
        import napari_focusq._qt.train_widget as tw

        monkeypatch.setattr(tw, "_notify_error", lambda m: got["error"].append(m))
        monkeypatch.setattr(tw, "_notify_info", lambda m: got["info"].append(m))
    except ImportError:
        pass
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
