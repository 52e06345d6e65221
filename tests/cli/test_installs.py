"""Optional extras: each missing one is a clear message naming the pip install that adds it."""
from __future__ import annotations

import sys

import pytest

from napari_focusq.io.extras import MissingExtraError


@pytest.fixture
def no_torchvision(monkeypatch):
    for m in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as if not installed


def test_inception_preset_without_torchvision_names_the_extra(no_torchvision):
    from napari_focusq.models import new_model

    with pytest.raises(MissingExtraError, match=r'pip install "napari-focusq\[inception\]"'):
        new_model("inception")
    assert new_model("fast").architecture == "fast"  # the default preset needs no torchvision


def test_cli_train_inception_without_torchvision_fails_at_once(no_torchvision, tmp_path, capsys):
    from napari_focusq.cli.app import main

    rc = main(["train", "--preset", "inception", "--out", str(tmp_path / "m.safetensors"), "--epochs", "1"])
    assert rc == 1
    err = capsys.readouterr().err
    assert 'pip install "napari-focusq[inception]"' in err and "torchvision" in err
    assert not list(tmp_path.iterdir())  # nothing half-written
