"""The napari manifest: `npe2 validate` (with imports), suffixes, and the reader's claims."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "src" / "napari_focusq" / "napari.yaml"


def test_npe2_validate_with_imports():
    """The real `npe2 validate` command on this tree's manifest, importing every python_name."""
    pytest.importorskip("npe2")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-m", "npe2", "validate", str(MANIFEST), "--imports"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_manifest_lists_every_reader_suffix():
    from npe2 import PluginManifest

    from napari_focusq.napari.reader import SUFFIXES

    pm = PluginManifest.from_file(MANIFEST)
    patterns = set(pm.contributions.readers[0].filename_patterns)
    for s in SUFFIXES:
        assert {f"*{s}", f"*{s.upper()}"} <= patterns, s
    assert pm.contributions.readers[0].accepts_directories  # DICOM slides are folders


def test_reader_refuses_what_it_cannot_open(tmp_path):
    import tifffile

    from napari_focusq.napari.reader import get_reader

    timelapse = tmp_path / "timelapse.ome.tif"
    tifffile.imwrite(timelapse, np.zeros((4, 32, 32), np.uint16), metadata={"axes": "TYX"})
    assert get_reader(str(timelapse)) is None
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + bytes(20))
    assert get_reader(str(broken)) is None
    assert get_reader(str(tmp_path)) is None  # a folder that is not a DICOM slide
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(timelapse), str(REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs")]) is None


def test_reader_keeps_the_file_open_until_released():
    from napari_focusq.io.formats import sample_slide_path
    from napari_focusq.napari import reader as _reader

    p = str(sample_slide_path())
    data, kwargs, _ = _reader.read_layers(p)[0]
    token = kwargs["metadata"]["focusq_source"]
    src = _reader.open_sources()[token]
    assert not src.closed
    assert np.asarray(data[:4, :4]).shape == (4, 4, 3)
    _reader.release(token)
    assert src.closed and token not in _reader.open_sources()


def test_core_imports_without_qt_napari_or_torchvision():
    """`pip install napari-focusq` (no extras): the library and CLI must not need the viewer."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui',\n"
        "                                   'superqt', 'torchvision', 'openslide', 'wsidicom', 'pylibCZIrw'}:\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import napari_focusq, napari_focusq.io.formats, napari_focusq.scoring.pipeline, napari_focusq.cli.app, napari_focusq.batch\n"
        "import napari_focusq.models, napari_focusq.training.fit, napari_focusq.cli.train, napari_focusq.napari.reader, napari_focusq.napari.writer\n"
        "from napari_focusq.io.formats import open_image, sample_slide_path\n"
        "with open_image(sample_slide_path()) as s: assert s.read_region(0, 0, 8, 8).shape == (8, 8, 3)\n"
        "from napari_focusq.cli.app import main\n"
        "assert main(['score', '--help']) == 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'napari', 'qtpy', 'PyQt6', 'torchvision'})\n"
        "assert not bad, bad\n"
        "print('core ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "core ok" in proc.stdout


def test_manifest_patterns_are_the_formats_list_exactly():
    # napari.yaml cannot import Python: its patterns are a copy of io/formats.py's list, and
    # this keeps the copy whole both ways (a suffix added to one side only fails here)
    from npe2 import PluginManifest

    from napari_focusq.io.formats import IMAGE_SUFFIXES, PILLOW_SUFFIXES, READER_SUFFIXES

    pm = PluginManifest.from_file(MANIFEST)
    patterns = set(pm.contributions.readers[0].filename_patterns)
    assert patterns == {f"*{c(s)}" for s in READER_SUFFIXES for c in (str.lower, str.upper)}
    # the reader is offered every image file type but those napari's own reader opens
    assert {s for s in READER_SUFFIXES if s.count(".") == 1} - {".dcm"} == IMAGE_SUFFIXES - PILLOW_SUFFIXES
