"""Throughput of the inception preset's training: tiles made per second, tiles trained per second.

    .venv/bin/python benchmarks/bench_inception_train.py              # CPU (this machine)
    python3 benchmarks/bench_inception_train.py --device cuda         # on a GPU, before a run

Prints, for the device:
- data: tiles/s of the device tile maker (crop, PSF as FFT, stain, noise, JPEG in torch) and,
  on the CPU, of the numpy recipe (training.sample_tiles, one core) for comparison;
- train: tiles/s of a full InceptionV3 training step (forward, backward, AdamW) on
  320 px tiles, with the run's habits (bf16 autocast, channels-last on CUDA; float32 on CPU),
  and with torch.compile on CUDA when --compile is given;
- the estimate of the paper-scale run (33,000 tiles x 500 epochs) and of what one
  10-minute command gets through, from the measured or the estimated GPU rate.

CPU-seconds per tile (process time) are printed beside wall time: on a shared machine
the wall figures move with the load, the CPU-seconds much less.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

#: Published training throughput the H100 estimate is built from (DESIGN-NOTES, issue 21):
#: TensorFlow's benchmarks put InceptionV3 (299 px) at 0.65x ResNet-50's (224 px) images/s
#: on the same GPU (P100: 142 vs 219); NVIDIA's ResNet-50 PyTorch AMP + channels-last
#: training runs at ~2,600 img/s on an A100 (timm issue 1491) and an H100 does 1.5-2x an
#: A100 on convnets; 320 px tiles cost (320/299)^2 = 1.15x a 299 px image.
RESNET50_A100_AMP = 2600.0
INCEPTION_PER_RESNET50 = 142 / 219
H100_PER_A100 = (1.5, 2.0)
PIXELS_320_PER_299 = (320 / 299) ** 2


def h100_estimate() -> tuple[float, float]:
    lo, hi = (RESNET50_A100_AMP * INCEPTION_PER_RESNET50 * f / PIXELS_320_PER_299 for f in H100_PER_A100)
    return lo, hi


def _timed(fn, repeats: int, sync) -> tuple[float, float]:
    """(wall s, process CPU s) per call, after one warm-up."""
    fn()
    sync()
    w, c = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - w) / repeats, (time.process_time() - c) / repeats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batch", type=int, default=None, help="training batch (default: 8 on CPU, 200 on CUDA)")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps (default: 2 on CPU, 20 on CUDA)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA)")
    args = ap.parse_args(argv)

    import torch

    from napari_focusq.config import Optics
    from napari_focusq.models.inception import InceptionFocusNet
    from napari_focusq.training.config import TrainConfig
    from napari_focusq.training.data import load_training_image, sample_tiles
    from napari_focusq.training.device_tiles import DeviceTileMaker
    from napari_focusq.training.inception import speed_habits
    from napari_focusq.training.recipes import project_data_dir

    cuda = args.device == "cuda"
    batch = args.batch or (200 if cuda else 8)
    repeats = args.repeats or (20 if cuda else 2)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    habits = speed_habits(dev, minutes=None if args.compile else 10)
    print(f"device {dev} ({torch.cuda.get_device_name() if cuda else 'CPU, ' + str(torch.get_num_threads()) + ' threads'}), "
          f"torch {torch.__version__}, batch {batch}, habits {habits}")

    bf = project_data_dir() / "brightfield"
    img = load_training_image(bf / "histoqc_template1.png", "brightfield", {"histoqc_template1.png": 0.5})
    t = time.perf_counter()
    maker = DeviceTileMaker([img], dev, z_max_um=6.0)
    sync()
    print(f"set-up: OTF bank of {len(maker.z_bins)} z bins x 3 colours ({maker.otf.numel() * 8 / 2**20:.0f} MiB, "
          f"FFT side {maker.side}) in {time.perf_counter() - t:.1f} s")
    rng = np.random.default_rng(0)
    n_data = batch if cuda else 32
    w, c = _timed(lambda: maker.make(n_data, rng), repeats, sync)
    print(f"data, device maker: {n_data / w:,.1f} tiles/s ({w / n_data * 1e3:.1f} ms/tile wall, "
          f"{c / n_data * 1e3:.1f} ms/tile CPU)")
    if not cuda:
        cfg = TrainConfig(images=["-"], z_max_um=6.0, scale_jitter=0, jpeg=(30, 95))
        w, c = _timed(lambda: sample_tiles(img, 16, np.random.default_rng(1), cfg), 1, sync)
        print(f"data, numpy recipe (sample_tiles, one process): {16 / w:,.1f} tiles/s "
              f"({w / 16 * 1e3:.1f} ms/tile wall, {c / 16 * 1e3:.1f} ms/tile CPU)")

    torch.manual_seed(0)
    net = InceptionFocusNet().to(dev)
    if habits["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5, **({"fused": True} if cuda else {}))
    x, z = maker.make(batch, rng)
    if habits["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.bfloat16 if habits["amp"] == "bf16" else None

    def step(f):
        def run():
            with torch.autocast(dev.type, dtype=amp) if amp else torch.autocast(dev.type, enabled=False):
                pred = f(x)
            loss = torch.nn.functional.smooth_l1_loss(pred.float(), z, beta=0.2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    net.train()
    w, c = _timed(step(net), repeats, sync)
    rate = batch / w
    print(f"train step ({'bf16, channels-last' if cuda else 'float32'}): {rate:,.1f} tiles/s "
          f"({w / batch:.3f} s/tile wall, {c / batch:.2f} CPU-s/tile)")
    if cuda and args.compile:
        t = time.perf_counter()
        comp = torch.compile(net)
        step(comp)()
        sync()
        print(f"torch.compile: first step {time.perf_counter() - t:.0f} s")
        w, _ = _timed(step(comp), repeats, sync)
        print(f"train step compiled: {batch / w:,.1f} tiles/s")
    lo, hi = h100_estimate()
    paper = 33_000 * 500
    print(f"H100 estimate from published throughput: {lo:,.0f}-{hi:,.0f} tiles/s")
    for label, r in (("measured here", rate), ("H100 low", lo), ("H100 high", hi)):
        print(f"  {label:>14}: paper scale (33,000 x 500 epochs) {paper / r / 3600:,.1f} h; "
              f"8 minutes of training = {480 * r:,.0f} tiles = {480 * r / 33_000:.1f} epochs")
    print(f"optics: {Optics.for_modality('brightfield').to_dict()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
