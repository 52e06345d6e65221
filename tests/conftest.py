"""Shared fixtures: real sample-slide crops, a freshly built model file, tiny training sets.

Everything expensive is session-scoped and built once; tests copy what they mutate.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"
DATA = REPO / "data"
SVS_PIXEL_UM = 0.499

#: (y, x) of dense tissue in CMU-1-Small-Region (checked on its thumbnail).
TISSUE_YX = ((2000, 650), (2300, 1100), (1500, 800))


# Every model in the tests runs on the CPU (models.choose_device): figures compared bit for
# bit, and seeded training, differ on CUDA, which a machine with a GPU would pick.
os.environ["FOCUSQ_DEVICE"] = "cpu"

# Hypothesis draws the same examples on every run and machine: a property test that fails
# fails again, and CI never goes red on an example no one can reproduce.
try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("focusq", derandomize=True, deadline=None, print_blob=True)
    _hsettings.load_profile("focusq")
except ImportError:  # hypothesis is in the testing extra; tests that need it import it
    pass


def pytest_configure(config):
    # Registered so `-m "not slow"` works locally; CI runs everything, slow tests included.
    config.addinivalue_line("markers", "slow: takes more than a few seconds on a CPU (still run in CI)")


@pytest.fixture(scope="session")
def slide_plane() -> np.ndarray:
    """The whole level 0 of the bundled sample slide, (2967, 2220, 3) uint8, read once."""
    from napari_focusq.io import open_image

    with open_image(SVS) as src:
        plane = np.asarray(src.read_plane())
    plane.setflags(write=False)
    return plane


@pytest.fixture(scope="session")
def slide_crop(slide_plane):
    """``slide_crop(y, x, h, w)``: a writable copy of a region of the sample slide."""

    def crop(y: int, x: int, h: int, w: int) -> np.ndarray:
        return np.array(slide_plane[y:y + h, x:x + w])

    return crop


@pytest.fixture(scope="session")
def fast_model_file(tmp_path_factory) -> Path:
    """An untrained (randomly initialised, seeded) fast model saved as a checkpoint."""
    import torch

    from napari_focusq.models import new_model

    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("model") / "untrained-fast.safetensors"
    new_model("fast", name="untrained-fast").save(path)
    return path


@pytest.fixture(scope="session")
def train_images(tmp_path_factory, slide_plane) -> tuple[list[str], dict]:
    """Three in-focus RGB crops of the sample slide (two PNG, one TIFF) and their pixel sizes."""
    import tifffile
    from PIL import Image

    d = tmp_path_factory.mktemp("train_images")
    paths = []
    for i, (y, x) in enumerate(TISSUE_YX):
        crop = np.ascontiguousarray(slide_plane[y:y + 420, x:x + 420])
        if i < 2:
            p = d / f"crop{i}.png"
            Image.fromarray(crop).save(p)
        else:
            p = d / f"crop{i}.tif"
            tifffile.imwrite(p, crop, photometric="rgb")
        paths.append(str(p))
    return paths, {Path(p).name: SVS_PIXEL_UM for p in paths}
