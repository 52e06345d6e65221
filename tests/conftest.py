"""Shared fixtures: real sample-slide crops, a freshly built model file, tiny training sets.

Everything expensive is session-scoped and built once; tests copy what they mutate.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"
DATA = REPO / "data"
SVS_PIXEL_UM = 0.499

#: (y, x) of dense tissue in CMU-1-Small-Region (checked on its thumbnail).
TISSUE_YX = ((2000, 650), (2300, 1100), (1500, 800))


# torch's optimisers import torch._dynamo, which imports triton when it is installed, and
# triton's bundled LLVM segfaults the process when Mesa's (the GUI tests' software OpenGL) was
# loaded first. The training panel hides triton for that reason (napari/widgets/train_job.
# _guard_triton); hidden here too, any selection of tests is safe, not only one that happened
# to run a training panel before its first optimiser. Nothing here compiles GPU kernels.
sys.modules.setdefault("triton", None)

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
    from napari_focusq.io.formats import open_image

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


class MadeStack:
    """A fluorescence z-stack the project makes (the cells3d volume may not be redistributed).

    Real widefield nuclei (DSB 2018, CC0) defocused plane by plane with the project's own
    widefield PSF at 0.4 µm steps, sharpest at plane ``best`` (off-centre, so a method that
    picks the middle plane fails), with seeded photon noise. Written as a plain ZYX uint16
    TIFF without a pixel size, as cells3d is (tests pass ``pixel_um``).
    """

    planes, best, step_um, pixel_um, size = 41, 23, 0.4, 0.26, 256

    def __init__(self, folder: Path):
        import tifffile

        from napari_focusq.optics.psf import simulate_defocus

        nuclei = tifffile.imread(DATA / "fluorescence" / "nuclei_dsb2018.tif")[128:128 + self.size, 128:128 + self.size]
        img = nuclei.astype(np.float32)
        rng = np.random.default_rng(34)
        scale = 4000.0 / np.percentile(img, 99.5)  # ~4000 photons at the bright end: a camera's noise
        stack = []
        for k in range(self.planes):
            blurred = simulate_defocus(img, (k - self.best) * self.step_um, pixel_size_um=self.pixel_um,
                                       modality="fluorescence")
            stack.append(np.clip(rng.poisson(np.clip(blurred * scale, 0, None)) + 100, 0, 65535))
        self.data = np.stack(stack).astype(np.uint16)
        self.path = folder / "nuclei_zstack.tif"
        tifffile.imwrite(self.path, self.data)


@pytest.fixture(scope="session")
def made_stack(tmp_path_factory) -> MadeStack:
    """The made fluorescence z-stack (``.path``, ``.data``, ``.best``, ``.pixel_um``), built once."""
    return MadeStack(tmp_path_factory.mktemp("stack"))
