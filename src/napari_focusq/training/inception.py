"""The founding paper's InceptionV3 preset at the paper's scale, with its data made on the device.

`focusq train --preset inception` (brightfield) runs this: the same code on a laptop CPU
(slowly: the tests train a toy run) and on a CUDA GPU with that hardware's habits:

- tiles made where the model trains (``device_tiles``: the optical PSF as an FFT with the
  OTFs of every 0.05 µm z bin computed once, JPEG's lossy steps in torch), so the host's
  cores only draw random numbers;
- bf16 autocast, channels-last tensors, cuDNN autotuning and TF32; ``torch.compile`` only
  where its start-up (about a minute for InceptionV3) is won back: runs of 20 minutes or more;
- a time budget (``minutes``) that ends the run with a finished, calibrated checkpoint,
  and a checkpoint every ``checkpoint_minutes`` (atomic, the same file), so a machine
  that is lost mid-run loses at most that much. ``resume`` goes on from a checkpoint:
  same tile order, same learning-rate schedule; the optimiser's moments start afresh
  (they would triple the file, which must travel back under 64 MiB).

Checkpoints hold fp16 weights (49 MB for the 24.6 M parameters; fp32 would be 98 MB),
are scored by ``load_model``/``score_image`` like any other, and carry their calibration.
The paper's recipe: ~33,000 tiles from the in-focus images (a fixed set, drawn once from
the seed, turned and mirrored; sensor noise is new every epoch), continuous |z| 0-6 µm,
lr 1e-5, batch 200, 500 epochs; the split by source image is `fast`'s default_recipe.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np

from napari_focusq.progress import Progress
from napari_focusq.training.config import TrainingError

#: Where a trained InceptionV3 checkpoint lives: the repository's data/models/ (49 MB, too
#: large for the wheel); `load_model("inception")` looks there after the package's weights.
DEFAULT_OUT = "data/models/inception.safetensors"
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class InceptionRun:
    """One (resumable) training run of the `inception` preset; checked on creation."""

    images: list = field(default_factory=list)
    val_images: list = field(default_factory=list)
    out: str = DEFAULT_OUT
    device: str = "auto"
    tiles_per_epoch: int = 33_000
    val_tiles_per_image: int = 400
    epochs: int = 500
    batch_size: int = 200
    lr: float = 1e-5
    z_max_um: float = 6.0
    #: Wall-clock budget of the whole run (data, training, the last checkpoint); None: no limit.
    minutes: float | None = None
    checkpoint_minutes: float = 3.0
    resume: str | None = None
    seed: int = 0
    #: "auto" (on CUDA, for runs of 20 minutes or more), "on" or "off".
    compile: str = "auto"
    #: "auto" (bf16 on CUDA, float32 on the CPU), "bf16" or "off".
    amp: str = "auto"
    #: Draw new tiles every epoch instead of the paper's fixed set.
    fresh_tiles: bool = False
    name: str = "inception"
    min_tissue: float = 0.5
    pixel_sizes: dict = field(default_factory=dict)
    jpeg: tuple = (30, 95)

    def __post_init__(self):
        if self.device not in DEVICES:
            raise TrainingError(f"device must be one of {', '.join(DEVICES)}; got {self.device!r}")
        if self.compile not in ("auto", "on", "off") or self.amp not in ("auto", "bf16", "off"):
            raise TrainingError(f"compile must be auto/on/off and amp auto/bf16/off; got {self.compile!r}, {self.amp!r}")
        for k in ("tiles_per_epoch", "val_tiles_per_image", "epochs", "batch_size"):
            if int(getattr(self, k)) < 1:
                raise TrainingError(f"{k} must be a positive integer; got {getattr(self, k)}")
        if not self.lr > 0 or not 0 < self.z_max_um <= 30 or not self.checkpoint_minutes > 0:
            raise TrainingError("learning rate, z_max_um (<= 30) and checkpoint_minutes must be positive")
        if self.minutes is not None and not self.minutes > 0:
            raise TrainingError(f"minutes must be positive; got {self.minutes}")
        self.images = [str(p) for p in self.images]
        self.val_images = [str(p) for p in self.val_images]
        if not self.images or not self.val_images:
            raise TrainingError("need training images and held-out validation images (split by source image)")


def stated_pixel_sizes(images) -> dict:
    """Pixel sizes a folder states for its images in ``pixel_sizes.json`` ({file name: µm}),
    e.g. the lossless PNG copies benchmarks/prepare_gpu_data.py makes of TIFFs."""
    import json

    out = {}
    for folder in {Path(p).parent for p in images}:
        f = folder / "pixel_sizes.json"
        if f.is_file():
            try:
                out.update({str(k): float(v) for k, v in json.loads(f.read_text()).items()})
            except (ValueError, AttributeError) as e:
                raise TrainingError(f"{f}: not a JSON object of file name -> µm per pixel ({e})") from None
    return out


def paper_recipe(out=DEFAULT_OUT, data=None, **overrides) -> InceptionRun:
    """The paper's recipe on the project's brightfield images, with `fast`'s source split."""
    from napari_focusq.training.recipes import default_recipe, split_images

    train, val = split_images(default_recipe(out, data))
    cfg = dict(images=train, val_images=val, out=str(out), pixel_sizes=stated_pixel_sizes(train + val))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return InceptionRun(**cfg)


def resolve_device(name: str):
    """``auto``: CUDA when torch sees a GPU, else the CPU. ``cuda`` without one is an error."""
    import torch

    if name not in DEVICES:
        raise TrainingError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError(f"--device cuda: torch {torch.__version__} sees no CUDA GPU "
                                f"(built for CUDA {torch.version.cuda}); use --device cpu or auto")
        return torch.device("cuda")
    return torch.device("cpu")


def speed_habits(device, *, amp: str = "auto", compile: str = "auto", minutes: float | None = None) -> dict:
    """What the run does for speed on ``device``; on CUDA also sets cuDNN/TF32 flags.

    Setting the backend flags needs no GPU, so this runs (and is tested) anywhere.
    """
    import torch

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune each convolution once
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in float32
    # bf16 autocast on CPUs without AMX is several times slower than float32 (measured
    # here: 336 s against 48-64 s for a batch of 8), so the CPU trains in float32.
    bf16 = amp == "bf16" or (amp == "auto" and cuda)
    return {
        "device": str(device), "amp": "bf16" if bf16 else "off", "channels_last": cuda,
        "compile": compile == "on" or (compile == "auto" and cuda and (minutes is None or minutes >= 20)),
        "fused_adamw": cuda,
    }


def _half_state(module) -> dict:
    """state_dict with floating tensors in fp16 (those beyond fp16's range kept in fp32)."""
    import torch

    out = {}
    for k, v in module.state_dict().items():
        v = v.detach()
        if v.is_floating_point():
            h = v.to(torch.float16)
            out[k] = h if bool(torch.isfinite(h).all()) else v.float()
        else:
            out[k] = v
    return out


def _load_sources(paths, run: InceptionRun, stage: str):
    from napari_focusq.training.data import load_training_image

    images = []
    for k, p in enumerate(paths):
        yield Progress(stage, k, len(paths), f"loading {Path(p).name}")
        images.append(load_training_image(p, "brightfield", run.pixel_sizes))
    yield Progress(stage, len(paths), len(paths), "done")
    return images


def iter_train_inception(run: InceptionRun) -> Generator[Progress, None, Path]:
    """Train as configured, yielding Progress; returns the checkpoint path.

    Events: "data" / "validation data" (sources loaded), "train step" (loss), "checkpoint"
    (validation metrics of the file just written), "train" (one per finished epoch),
    "save". Closing the generator cancels; the file on disk is then the last checkpoint
    (or none), never a half-written one. Torch's thread count is as before afterwards.
    """
    from napari_focusq.models import torch_threads

    with torch_threads():
        return (yield from _train(run))


def _train(run: InceptionRun) -> Generator[Progress, None, Path]:
    import torch

    from napari_focusq import __version__
    from napari_focusq.config import Optics
    from napari_focusq.models import model_from_file, new_model
    from napari_focusq.models.calibration import apply_calibration, fit_isotonic
    from napari_focusq.training.device_tiles import DeviceTileMaker
    from napari_focusq.training.metrics import regression_metrics

    t0 = time.perf_counter()
    deadline = t0 + run.minutes * 60 if run.minutes else math.inf
    device = resolve_device(run.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                  else os.cpu_count() or 1))
    habits = speed_habits(device, amp=run.amp, compile=run.compile, minutes=run.minutes)
    out = Path(run.out)
    if out.suffix != ".safetensors":
        out = out / f"{run.name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(run.seed)

    start_epoch, start_step, tiles_before, history = 0, 0, 0, []
    if run.resume:
        model = model_from_file(run.resume)
        if model.architecture != "inception":
            raise TrainingError(f"{run.resume}: a {model.architecture} model cannot resume an inception run")
        st = model.meta.get("training", {})
        start_epoch, start_step = int(st.get("epochs_done", 0)), int(st.get("step_in_epoch", 0))
        tiles_before, history = int(st.get("tiles_seen", 0)), list(st.get("history", []))
        if start_epoch >= run.epochs:
            raise TrainingError(f"{run.resume}: already trained {start_epoch} of {run.epochs} epochs")
        model.meta.pop("calibration", None)
    else:
        model = new_model("inception", name=run.name, device=device)
    train_imgs = yield from _load_sources(run.images, run, "data")
    val_imgs = yield from _load_sources(run.val_images, run, "validation data")
    common = dict(z_max_um=run.z_max_um, min_tissue=run.min_tissue, jpeg=run.jpeg)
    maker = DeviceTileMaker(train_imgs, device, names=[Path(p).name for p in run.images], **common)
    val_maker = DeviceTileMaker(val_imgs, device, names=[Path(p).name for p in run.val_images], **common)
    # A fixed validation set, kept as 8-bit (what it is) to spare device memory.
    n_val = run.val_tiles_per_image * len(val_imgs)
    xv, zv = [], []
    vrng = np.random.default_rng([run.seed, 1])
    for i in range(0, n_val, run.batch_size):
        x, z = val_maker.make(min(run.batch_size, n_val - i), vrng)
        xv.append(torch.round(x * 255).to(torch.uint8))
        zv.append(z.cpu().numpy())
    zv = np.concatenate(zv)
    del val_maker

    module = model.module.to(device)
    model.device = device
    if habits["channels_last"]:
        module = module.to(memory_format=torch.channels_last)
    fwd = torch.compile(module) if habits["compile"] else module
    amp_dtype = torch.bfloat16 if habits["amp"] == "bf16" else None

    steps_per_epoch = math.ceil(run.tiles_per_epoch / run.batch_size)
    total_steps = steps_per_epoch * run.epochs
    opt = torch.optim.AdamW(module.parameters(), lr=run.lr, weight_decay=1e-4,
                            **({"fused": True} if habits["fused_adamw"] else {}))
    # Cosine over the whole planned run, indexed by the global step so a resumed run
    # continues the same curve.
    step0 = start_epoch * steps_per_epoch + start_step
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, (s + step0) / total_steps))))

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    def as_input(x):
        return x.contiguous(memory_format=torch.channels_last) if habits["channels_last"] else x

    def predict_val() -> np.ndarray:
        module.eval()
        preds = []
        with torch.inference_mode(), autocast():
            for x in xv:
                preds.append(fwd(as_input(x.float() / 255.0)).float().cpu().numpy())
        module.train()
        return np.concatenate(preds)

    stats = {"tiles": 0, "train_s": 0.0}

    def refresh_bn_stats(n_batches: int = 8):
        """Re-estimate BatchNorm's running statistics with the current weights (precise BN)
        on training tiles: after few steps (a short or toy run) the running averages still
        hold their initial values and eval-mode outputs run away (10^6 µm measured after 3
        steps); on a long run this costs 8 forward passes per checkpoint."""
        bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        brng = np.random.default_rng([run.seed, 3, len(history)])
        src = maker.draw(n_batches * run.batch_size, brng) if fixed is None else fixed
        pick = brng.permutation(len(src["src"]))[:n_batches * run.batch_size]
        with torch.no_grad(), autocast():
            for i in range(0, len(pick), run.batch_size):
                x, _ = maker.render(maker.subset(src, pick[i:i + run.batch_size], brng.integers(2**62)))
                module(as_input(x))
        for m, mom in zip(bns, saved):
            m.momentum = mom

    def checkpoint(epochs_done: int, step_in_epoch: int, complete: bool) -> tuple[Path, dict]:
        refresh_bn_stats()
        raw = predict_val()
        calib = fit_isotonic(raw, zv)
        cal = apply_calibration(raw, calib)
        metrics = {"validation_raw": regression_metrics(raw, zv), "validation_calibrated": regression_metrics(cal, zv)}
        meta = {
            **model.meta, "name": run.name, "version": __version__, "trained": True,
            "optics": Optics.for_modality("brightfield").to_dict(), "blur": "optical",
            "normalisation": "RGB, 0-1 (the data type's range)", "calibration": calib, "metrics": metrics,
            "weights_dtype": "float16",
            "training": {
                "trainer": "inception_training", "config": {k: v for k, v in asdict(run).items()
                                                          if k not in ("images", "val_images")},
                "train_images": [Path(p).name for p in run.images], "val_images": [Path(p).name for p in run.val_images],
                "train_tiles": run.tiles_per_epoch, "val_tiles": int(len(zv)), "epochs_done": epochs_done,
                "step_in_epoch": step_in_epoch, "complete": complete, "tiles_seen": tiles_before + stats["tiles"],
                "habits": habits, "tiles_per_s": round(stats["tiles"] / max(stats["train_s"], 1e-9), 2),
                "seconds": round(time.perf_counter() - t0, 1), "history": history[-50:],
                "optimizer_state": "not kept (starts afresh on resume)",
            },
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        from napari_focusq.models.checkpoint import save_checkpoint

        path = save_checkpoint(out, _half_state(module), meta)
        model.meta = meta
        return path, metrics

    module.train()
    last_ckpt, reserve = time.perf_counter(), None
    path, stopped = None, False
    draw_rng = np.random.default_rng([run.seed, 0])
    fixed = None if run.fresh_tiles else maker.draw(run.tiles_per_epoch, draw_rng)
    if not run.resume:
        # Start the output at the training set's mean |z| rather than softplus(0) = 0.69 µm.
        zs = maker.z_bins[(fixed or maker.draw(4096, np.random.default_rng([run.seed, 4])))["zbin"]]
        module.start_at(float(zs.mean()))
    epoch, s = start_epoch, start_step
    for epoch in range(start_epoch, run.epochs):
        erng = np.random.default_rng([run.seed, 2, epoch])
        tiles = maker.draw(run.tiles_per_epoch, erng) if fixed is None else fixed
        order = erng.permutation(run.tiles_per_epoch)
        # Drawn up front so a run resumed mid-epoch gets the same sensor noise as an unbroken one.
        noise_seeds = erng.integers(2**62, size=steps_per_epoch)
        losses = []
        first = start_step if epoch == start_epoch else 0
        for s in range(first, steps_per_epoch):
            t_step = time.perf_counter()
            idx = order[s * run.batch_size:(s + 1) * run.batch_size]
            with torch.no_grad():
                x, z = maker.render(maker.subset(tiles, idx, noise_seeds[s]))
            with autocast():
                pred = fwd(as_input(x))
            loss = torch.nn.functional.smooth_l1_loss(pred.float(), z, beta=0.2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.detach())
            stats["tiles"] += len(idx)
            # Reading the loss waits for the GPU: only every 20th step there.
            if device.type == "cpu" or s % 20 == 0 or s == steps_per_epoch - 1:
                lv = float(losses[-1])
                stats["train_s"] += time.perf_counter() - t_step
                yield Progress("train step", s + 1, steps_per_epoch, f"epoch {epoch + 1} loss {lv:.3f}",
                               data={"epoch": epoch + 1, "step": s + 1, "loss": lv})
            else:
                stats["train_s"] += time.perf_counter() - t_step
            now = time.perf_counter()
            if reserve is None:
                # Until a checkpoint has been timed: a validation pass costs about a third
                # of training on as many tiles, plus the file.
                reserve = 15.0 + n_val * (stats["train_s"] / max(stats["tiles"], 1)) / 3
            if now + reserve > deadline:
                stopped = True
                break
            if now - last_ckpt >= run.checkpoint_minutes * 60 and s + 1 < steps_per_epoch:
                t_c = time.perf_counter()
                path, m = checkpoint(epoch, s + 1, False)
                reserve = 1.5 * (time.perf_counter() - t_c) + 5.0
                last_ckpt = time.perf_counter()
                yield Progress("checkpoint", epoch, run.epochs, f"{path.name}: val MAE(0-4 µm) {m['validation_calibrated']['mae_0_4']:.3f} µm",
                               data={"metrics": m, "epoch": epoch, "step": s + 1})
        if stopped:
            break
        history.append({"epoch": epoch + 1, "loss": float(torch.stack(losses).float().mean()) if losses else None,
                        "lr": float(sched.get_last_lr()[0]), "tiles_seen": tiles_before + stats["tiles"]})
        yield Progress("train", epoch + 1, run.epochs, f"loss {history[-1]['loss']:.4f}", data=dict(history[-1]))
        if time.perf_counter() - last_ckpt >= run.checkpoint_minutes * 60 and epoch + 1 < run.epochs:
            t_c = time.perf_counter()
            path, m = checkpoint(epoch + 1, 0, False)
            reserve = 1.5 * (time.perf_counter() - t_c) + 5.0
            last_ckpt = time.perf_counter()
            yield Progress("checkpoint", epoch + 1, run.epochs, f"{path.name}: val MAE(0-4 µm) {m['validation_calibrated']['mae_0_4']:.3f} µm",
                           data={"metrics": m, "epoch": epoch + 1, "step": 0})
    if stopped:
        done_epochs, step_in = epoch, s + 1
        if step_in >= steps_per_epoch:
            done_epochs, step_in = epoch + 1, 0
    else:
        done_epochs, step_in = run.epochs, 0
    yield Progress("save", 0, 1, str(out))
    path, m = checkpoint(done_epochs, step_in, not stopped)
    yield Progress("save", 1, 1, str(path), data={"metrics": m, "stopped_by_budget": stopped})
    return path


def train_inception(run: InceptionRun, progress=None) -> Path:
    """Run :func:`iter_train_inception` to the end; returns the checkpoint path."""
    from napari_focusq.progress import drive

    return drive(iter_train_inception(run), progress)


def run_from_args(args, cfg=None) -> InceptionRun:
    """`focusq train --preset inception ...` -> the run. ``cfg``: ``training.train_config(args)``,
    whose split by source image it keeps (without DATA: `fast`'s default_recipe split)."""
    from napari_focusq.cli.train import train_config
    from napari_focusq.training.recipes import split_images

    cfg = cfg or train_config(args)
    train, val = split_images(cfg)
    extra = {k: getattr(args, k, None) for k in ("device", "minutes", "checkpoint_minutes", "tiles_per_epoch")}
    # The user's --pixel-size wins over what a folder states.
    pixel_sizes = {**stated_pixel_sizes(train + val), **cfg.pixel_sizes}
    return InceptionRun(images=train, val_images=val, out=cfg.out, epochs=cfg.epochs, lr=cfg.lr,
                        batch_size=cfg.batch_size, seed=cfg.seed, resume=cfg.resume, pixel_sizes=pixel_sizes,
                        **{k: v for k, v in extra.items() if v is not None})


def main(args, cfg=None) -> int:
    """`focusq train --preset inception`: train, then print where the file is and how it did."""
    import json

    from napari_focusq.progress import StderrBar, drive

    run = run_from_args(args, cfg)
    path = drive(iter_train_inception(run), StderrBar())
    meta = json.loads(path.with_suffix(".json").read_text())
    st, m = meta["training"], meta["metrics"]["validation_calibrated"]
    state = "finished" if st["complete"] else f"stopped by the time budget at epoch {st['epochs_done']} step {st['step_in_epoch']} (resume with --init {path})"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, fp16): {state}\n"
          f"device {st['habits']['device']} (amp {st['habits']['amp']}, channels-last {st['habits']['channels_last']}, "
          f"compile {st['habits']['compile']}): {st['tiles_per_s']} tiles/s over {st['tiles_seen']} tiles, {st['seconds']} s\n"
          f"validation (held-out images {', '.join(st['val_images'])}): R² {m['r2']:.4f}, slope {m['slope']:.3f}, "
          f"MAE(0-4 µm) {m['mae_0_4']:.3f} µm, AUC {m['auc']:.4f}\n"
          f"score with: focusq score SLIDE --out qc/ --model {path}")
    return 0
