"""What the accuracy figures rest on: the frozen test set, the splits of the shipped weights,
seed intervals, out-of-sample calibration figures and the device the tests pin."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_focusq.training.heldout import (
    FROZEN_IMAGES,
    FrozenSetError,
    check_frozen_set,
    frozen_dir,
    frozen_images,
    frozen_pixel_sizes,
)
from napari_focusq.training.recipes import (
    DEFAULT_TEST,
    DEFAULT_VAL,
    FLUORESCENCE_TEST,
    FLUORESCENCE_VAL,
    default_recipe,
    fluorescence_recipe,
    project_data_dir,
)

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "napari_focusq" / "weights"


def test_frozen_set_is_the_one_frozen():
    digest = check_frozen_set()
    assert len(digest) == 64
    assert [p.name for p in frozen_images("brightfield")] == ["tiatoolbox_target_HE.png"]
    assert len(frozen_images("fluorescence")) == 11
    assert all(p.is_file() for m in ("brightfield", "fluorescence") for p in frozen_images(m))
    assert set(frozen_pixel_sizes()) == set(FROZEN_IMAGES)


def test_a_changed_or_extra_file_is_refused(tmp_path):
    copy = tmp_path / "frozen_test"
    shutil.copytree(frozen_dir(), copy)
    assert check_frozen_set(copy) == check_frozen_set()
    (copy / "brightfield" / "extra.png").write_bytes(b"x")
    with pytest.raises(FrozenSetError, match=r"frozen_test: frozen test set differs: .*extra.png"):
        check_frozen_set(copy)
    (copy / "brightfield" / "extra.png").unlink()
    victim = copy / "fluorescence" / "bbbc007_A9_p5d.tif"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(FrozenSetError, match="frozen test set changed"):
        check_frozen_set(copy)


def test_frozen_images_are_in_no_recipe_and_no_other_folder(tmp_path):
    """No recipe lists them (by name or by content), and data/'s other images are not copies."""
    names = set(FROZEN_IMAGES)
    for cfg in (default_recipe(tmp_path / "a"), fluorescence_recipe(tmp_path / "b")):
        assert not {Path(p).name for p in cfg.images + cfg.val_images} & names
        assert not any("frozen_test" in p for p in cfg.images + cfg.val_images)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    frozen = {digest(p) for m in ("brightfield", "fluorescence") for p in frozen_images(m)}
    others = [p for p in project_data_dir().rglob("*") if p.is_file() and "frozen_test" not in p.parts
              and p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".svs")]
    assert len(others) > 20 and not frozen & {digest(p) for p in others}


@pytest.mark.parametrize("weights, test, val", [("fast.json", DEFAULT_TEST, DEFAULT_VAL),
                                                ("fast-fluorescence.json", FLUORESCENCE_TEST, FLUORESCENCE_VAL)])
def test_shipped_weights_never_saw_the_test_images(weights, test, val):
    """The training summary in the shipped JSON: neither test set was trained or validated on."""
    t = json.loads((WEIGHTS / weights).read_text())["training"]
    seen = set(t["train_images"]) | set(t["val_images"])
    assert len(t["train_images"]) >= 5 and set(t["val_images"]) == set(val)
    assert not seen & set(test), seen & set(test)
    assert not seen & set(FROZEN_IMAGES)
    assert not set(t["train_images"]) & set(t["val_images"])


def test_seed_intervals_mean_over_seeds_and_cover_it():
    from napari_focusq.training.metrics import format_interval, regression_metrics, seed_intervals

    rng = np.random.default_rng(0)
    z = rng.uniform(0, 6, 600)
    seed = np.repeat([0, 1, 2], 200)
    noise = rng.normal(0, 0.3, 600) * (1 + seed)  # seeds of different quality: their mean is not any one
    pred = z + noise
    figs = seed_intervals(pred, z, seed, n_boot=200)
    per = [regression_metrics(pred[seed == s], z[seed == s])["mae_0_4"] for s in range(3)]
    mae = figs["mae_0_4"]
    assert mae["seeds"] == pytest.approx(per) and mae["mean"] == pytest.approx(np.mean(per))
    assert mae["lo"] < mae["mean"] < mae["hi"]
    # The interval is of the mean of three seeds of 200 tiles: its half-width is about
    # 2 x sd/sqrt(n) of the seeds' pooled errors, ~0.03 µm here; far narrower than the
    # spread between the seeds (0.24 -> 0.72 µm), far wider than zero.
    assert 0.01 < mae["hi"] - mae["lo"] < 0.15 and max(per) - min(per) > 0.4
    assert "n" not in figs and format_interval(mae).startswith(f"{mae['mean']:.3f} [")
    exact = seed_intervals(z, z, seed, n_boot=50)
    assert exact["r2"]["lo"] == exact["r2"]["hi"] == 1.0


def test_crossfit_calibration_is_out_of_sample():
    from napari_focusq.models.calibration import apply_calibration, crossfit_calibration, fit_isotonic

    rng = np.random.default_rng(1)
    z = rng.uniform(0, 6, 400)
    src = np.repeat([0, 1], 200)
    # Source 0 reads 1 µm high, source 1 reads true: a map fitted on both tiles corrects each
    # in-sample better than a map that never saw that source can.
    pred = z + np.where(src == 0, 1.0, 0.0) + rng.normal(0, 0.1, 400)
    in_sample = apply_calibration(pred, fit_isotonic(pred, z))
    cross = crossfit_calibration(pred, z, src)
    # Out of sample, source 1 is mapped by source 0's fit (shifted down by ~1 µm) and reads
    # ~1 µm low; in sample its error is about the mix of the two (~0.5 µm).
    err = lambda p, s: float(np.abs(p - z)[src == s].mean())
    assert err(cross, 1) > 0.8 and err(cross, 0) > 0.8
    assert err(in_sample, 1) < 0.7
    assert crossfit_calibration(pred, z, np.zeros(400)) is None


def test_tests_run_models_on_the_cpu(monkeypatch):
    import torch

    from napari_focusq.models import choose_device, load_model

    assert choose_device() == torch.device("cpu")  # conftest pins FOCUSQ_DEVICE=cpu
    assert load_model("fast").device == torch.device("cpu")
    monkeypatch.setenv("FOCUSQ_DEVICE", "tpu")
    with pytest.raises(ValueError, match="FOCUSQ_DEVICE must be cpu, cuda or mps"):
        choose_device()


def test_checkpoint_metrics_say_what_is_in_sample():
    from napari_focusq.models.calibration import apply_calibration, fit_isotonic
    from napari_focusq.training.fit import _validation_metrics

    rng = np.random.default_rng(2)
    z = rng.uniform(0, 6, 300)
    src = np.repeat([0, 1, 2], 100)
    raw = z * np.array([0.8, 1.0, 1.2])[src] + rng.normal(0, 0.1, 300)  # each image its own slope
    cal = apply_calibration(raw, fit_isotonic(raw, z))
    m = _validation_metrics(raw, cal, z, src)
    assert set(m) == {"validation_raw", "validation_calibrated", "validation_calibrated_crossfit", "in_sample"}
    assert set(m["in_sample"]) == {"validation_raw", "validation_calibrated"}
    # Fitted on the tiles it is scored on, the calibration looks better than it is on an
    # image it never saw: the cross-fitted error is the larger.
    assert m["validation_calibrated_crossfit"]["mae_0_4"] > m["validation_calibrated"]["mae_0_4"]
    assert "validation_calibrated_crossfit" not in _validation_metrics(raw, cal, z, np.zeros(300))
