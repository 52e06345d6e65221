"""The inception preset's trainer: device-made tiles, a toy CPU run, resume, the device choice.

InceptionV3 on 320 px tiles costs 2.5 CPU-s per tile and training step (17 s of wall time
on this shared, loaded 2-core machine), so the toy runs train on a handful of tiles (the toy
run took 11 minutes here, about one on two idle cores); the data test makes a few hundred
tiles the way a GPU makes them, on the CPU.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_focusq.progress import drive
from napari_focusq.training.config import TrainingError
from napari_focusq.training.data import load_training_image
from napari_focusq.training.device_tiles import DeviceTileMaker, jpeg_torch, quant_tables
from napari_focusq.training.inception import (
    InceptionRun,
    iter_train_inception,
    paper_recipe,
    resolve_device,
    run_from_args,
    speed_habits,
)
from napari_focusq.training.recipes import project_data_dir

BF = project_data_dir() / "brightfield"
PX = {f"histoqc_template{i}.png": 0.5 for i in range(1, 5)}


@pytest.fixture(scope="module")
def template1() -> np.ndarray:
    return load_training_image(BF / "histoqc_template1.png", "brightfield", PX)


@pytest.fixture(scope="module")
def maker(template1) -> DeviceTileMaker:
    return DeviceTileMaker([template1], "cpu", names=["histoqc_template1.png"], z_max_um=6.0)


def _drain(gen):
    """(the generator's result, its progress events)."""
    events = []
    return drive(gen, events.append), events


# ---------------------------------------------------------------------------- data on the device
def test_quant_tables_follow_libjpeg():
    t = quant_tables([50, 95, 10])
    assert t[0, 0, 0, 0] == 16 and t[0, 1, 0, 0] == 17  # quality 50 = the standard tables
    assert t[1, 0, 0, 0] == 2 and t[2, 0, 0, 0] == 80  # scale 10 % and 500 %, rounded
    assert t.max() <= 255 and t.min() >= 1


@pytest.mark.parametrize("quality", [30, 60, 95])
def test_jpeg_in_torch_matches_pillow(template1, quality):
    from PIL import Image

    tiles = np.stack([template1[y:y + 320, x:x + 320] for y, x in ((0, 0), (100, 150), (180, 180))])
    pil = []
    for t in tiles:
        buf = io.BytesIO()
        Image.fromarray(t).save(buf, "JPEG", quality=quality)
        pil.append(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    pil = np.stack(pil).astype(np.float32)
    ours = jpeg_torch(torch.from_numpy(tiles.transpose(0, 3, 1, 2).astype(np.float32)),
                      np.full(3, quality)).numpy().transpose(0, 2, 3, 1)
    artefact = np.abs(pil - tiles).mean()  # 4.4 (q95) to 10.5 (q30) grey levels
    # libjpeg's fixed-point DCT and colour conversion round differently: measured 0.66-1.03.
    assert np.abs(ours - pil).mean() < 1.5
    # The artefacts have the size Pillow's have (measured within 0.2 %).
    assert np.abs(ours - tiles).mean() == pytest.approx(artefact, rel=0.05)


@pytest.mark.parametrize("zbin", [0, 20, 120])
def test_device_defocus_is_the_optical_simulation(template1, maker, zbin):
    """The FFT with the OTF bank gives optics.simulate_defocus's pixels (away from the
    tile's border, where simulate_defocus mirrors and the maker has real tissue)."""
    from napari_focusq.optics.psf import simulate_defocus

    y, x = maker.positions[0][5]
    p = {"src": np.array([0]), "pos": np.array([[y, x]])}
    ours = maker.defocus(maker.crops(p), [zbin])[0].numpy().transpose(1, 2, 0)
    ref = simulate_defocus(template1[y:y + 320, x:x + 320].astype(np.float32), maker.z_bins[zbin], pixel_size_um=0.5)
    c = slice(40, 280)
    assert np.abs(ours[c, c] - ref[c, c]).max() < 0.01  # float32 FFT rounding (measured 1.7e-4 on 0..255)


@pytest.mark.slow
def test_a_few_hundred_tiles_made_on_the_device(template1):
    """200 tiles from two images as a GPU makes them: labels on the 0.05 µm grid over 0-6 µm,
    pixels in range, blur growing with |z|."""
    two = DeviceTileMaker([template1, load_training_image(BF / "histoqc_template2.png", "brightfield", PX)], "cpu")
    x, z = two.make(200, np.random.default_rng(0))
    assert x.shape == (200, 3, 320, 320) and x.dtype == torch.float32 and z.shape == (200,)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    z = z.numpy()
    assert np.allclose(np.round(z / 0.05) * 0.05, z, atol=1e-6) and z.min() >= 0 and z.max() <= 6.0
    assert z.max() > 5 and (z <= 1.5).mean() > 0.25  # the near-focus extra weight (expected 0.38)
    # Sharpness (mean squared gradient of the green channel) falls with defocus.
    g = x[:, 1].numpy()
    sharp = (np.diff(g, axis=1) ** 2).mean((1, 2))
    assert np.median(sharp[z <= 0.5]) > 3 * np.median(sharp[z >= 3])
    # The same generator state gives the same tiles (resume depends on it).
    x2, z2 = two.make(200, np.random.default_rng(0))
    assert torch.equal(x, x2) and np.array_equal(z, z2.numpy())


def test_bad_source_image_is_named():
    from napari_focusq.training.device_tiles import DeviceDataError

    with pytest.raises(DeviceDataError, match="grey.tif: the device tile maker wants uint8 RGB"):
        DeviceTileMaker([np.zeros((400, 400), np.uint8)], "cpu", names=["grey.tif"], z_max_um=1.0)


# ---------------------------------------------------------------------------- device choice
def test_device_choice_is_explicit():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(TrainingError, match="--device cuda: torch .* sees no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(TrainingError, match="device must be one of auto, cpu, cuda"):
        resolve_device("mps")
    with pytest.raises(TrainingError, match="device must be one of"):
        InceptionRun(images=["a"], val_images=["b"], device="gpu")


def test_cuda_habits_decided_without_a_gpu(monkeypatch):
    """The CUDA path's choices (and the flags it sets) run on any machine; compile and
    the CUDA-only modules it needs import here."""
    import torch._inductor  # noqa: F401  (torch.compile's backend)

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    before = torch.get_float32_matmul_precision()
    try:
        cuda = speed_habits(torch.device("cuda"), minutes=9)
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    assert cuda == {"device": "cuda", "amp": "bf16", "channels_last": True, "compile": False, "fused_adamw": True}
    assert speed_habits(torch.device("cuda"), minutes=None)["compile"]  # pays off on long runs only
    cpu = speed_habits(torch.device("cpu"), minutes=None)
    assert cpu["amp"] == "off" and not cpu["channels_last"] and not cpu["compile"]
    assert speed_habits(torch.device("cpu"), amp="bf16", compile="on")["compile"]
    assert callable(torch.compile)


def test_cli_routes_inception_to_the_device_trainer(monkeypatch, tmp_path, capsys):
    """`focusq train --preset inception` runs the paper's recipe here, with `fast`'s split."""
    import napari_focusq.training.inception as it
    from napari_focusq.cli import app as cli
    from napari_focusq.training.recipes import DEFAULT_TEST, DEFAULT_VAL

    seen = {}
    monkeypatch.setattr(it, "main", lambda args, cfg=None: seen.setdefault("run", run_from_args(args, cfg)) and 0)
    assert cli.main(["train", "--preset", "inception", "--device", "cpu", "--minutes", "9", "--out",
                     str(tmp_path / "inc.safetensors")]) == 0
    run = seen["run"]
    assert run.device == "cpu" and run.minutes == 9 and run.tiles_per_epoch == 33_000
    assert (run.epochs, run.batch_size, run.lr, run.z_max_um) == (500, 200, 1e-5, 6.0)  # the paper
    assert sorted(Path(p).name for p in run.val_images) == sorted(DEFAULT_VAL)
    assert not {Path(p).name for p in run.images} & set(DEFAULT_TEST + DEFAULT_VAL)
    assert paper_recipe(tmp_path / "x.safetensors").images == run.images
    assert cli.main(["train", "--preset", "inception", "--device", "tpu", "--out", str(tmp_path / "y")]) == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- toy runs
def _toy(tmp_path, **kw) -> InceptionRun:
    base = dict(images=[BF / "histoqc_template1.png", BF / "histoqc_template2.png"],
                val_images=[BF / "histoqc_template4.png"], out=str(tmp_path / "inc.safetensors"), device="cpu",
                tiles_per_epoch=4, batch_size=4, val_tiles_per_image=4, epochs=4, lr=1e-3, pixel_sizes=PX, seed=0,
                checkpoint_minutes=1e3)
    return InceptionRun(**{**base, **kw})


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    return _drain(iter_train_inception(_toy(tmp)))


@pytest.mark.slow
def test_toy_run_learns_and_its_checkpoint_scores(toy_run):
    """Four epochs over a fixed set of four tiles (the paper's fixed set, in small): the loss
    falls, and the fp16 checkpoint loads and scores through load_model / score_image."""
    from safetensors import safe_open

    from napari_focusq import score_image
    from napari_focusq.models import load_model

    path, events = toy_run
    assert path.name == "inc.safetensors" and sorted(p.name for p in path.parent.iterdir()) == ["inc.json",
                                                                                                 "inc.safetensors"]
    losses = [e.data["loss"] for e in events if e.stage == "train"]
    assert len(losses) == 4 and all(np.isfinite(losses))
    # Fitting four tiles: measured 1.598, 1.230, 1.033, 0.682 (seeded). 0.8 leaves room for other
    # CPUs' rounding; a net that cannot learn stays within 1 % (torch's default init: 1.437 -> 1.429).
    assert losses[-1] < 0.8 * losses[0]
    assert path.stat().st_size < 64 * 2**20  # travels back from a GPU machine (49 MB measured)
    with safe_open(str(path), "pt") as f:
        assert f.get_tensor("backbone.Mixed_7c.branch1x1.conv.weight").dtype == torch.float16
    meta = json.loads(path.with_suffix(".json").read_text())
    st = meta["training"]
    assert st["complete"] and st["epochs_done"] == 4 and st["tiles_seen"] == 16 and st["habits"]["device"] == "cpu"
    assert meta["calibration"] and np.isfinite(meta["metrics"]["validation_raw"]["mae_0_4"])
    model = load_model(path)
    assert model.architecture == "inception" and model.trained
    img = load_training_image(BF / "histoqc_template3.png", "brightfield", {"histoqc_template3.png": 0.5})
    fmap = score_image(img, pixel_size_um=0.5, modality="brightfield", model=model)
    vals = fmap.defocus_um[np.isfinite(fmap.defocus_um)]
    assert vals.size >= 1 and (vals >= 0).all() and fmap.model.startswith("inception")


@pytest.mark.slow
def test_time_budget_stops_with_a_checkpoint_that_resumes(tmp_path):
    """A budget too short for an epoch ends after one step with a finished, resumable file;
    resuming goes on at the next step of the same epoch and completes it."""
    first, events = _drain(iter_train_inception(_toy(tmp_path, tiles_per_epoch=8, epochs=1, minutes=0.01)))
    st = json.loads(first.with_suffix(".json").read_text())["training"]
    assert not st["complete"] and (st["epochs_done"], st["step_in_epoch"], st["tiles_seen"]) == (0, 1, 4)
    assert events[-1].data["stopped_by_budget"]
    again, events = _drain(iter_train_inception(_toy(tmp_path, tiles_per_epoch=8, epochs=1, resume=str(first))))
    st = json.loads(again.with_suffix(".json").read_text())["training"]
    assert st["complete"] and (st["epochs_done"], st["step_in_epoch"], st["tiles_seen"]) == (1, 0, 8)
    assert [e.data["step"] for e in events if e.stage == "train step"] == [2]
    with pytest.raises(TrainingError, match="already trained 1 of 1 epochs"):
        _drain(iter_train_inception(_toy(tmp_path, tiles_per_epoch=8, epochs=1, resume=str(again))))


def test_folder_states_pixel_sizes(tmp_path):
    """pixel_sizes.json beside the images (prepare_gpu_data.py's PNG copies of TIFFs) reaches
    the run; the user's --pixel-size wins; a broken file is named."""
    from napari_focusq.training.inception import stated_pixel_sizes

    (tmp_path / "pixel_sizes.json").write_text('{"slide.png": 0.499}')
    assert stated_pixel_sizes([tmp_path / "slide.png", tmp_path / "b.png"]) == {"slide.png": 0.499}
    (tmp_path / "pixel_sizes.json").write_text('["not", "a", "map"]')
    with pytest.raises(TrainingError, match="pixel_sizes.json: not a JSON object"):
        stated_pixel_sizes([tmp_path / "slide.png"])
