"""fit(): train a model as configured, as a generator of Progress events; validation images are whole
source images held out from training.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Generator

import numpy as np

from napari_focusq.config import Optics
from napari_focusq.progress import Progress

#: Pixel sizes of the shared real images whose files do not record one (README of the data).
from napari_focusq.training.config import TrainConfig, TrainingError
from napari_focusq.training.data import iter_dataset, iter_layered_extra
from napari_focusq.training.recipes import split_images


def _batches(n, size, gen):
    import torch

    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, size):
        yield perm[i:i + size]


def iter_fit(cfg: TrainConfig) -> Generator[Progress, None, Path]:
    """Train a model as configured, yielding Progress events; returns the checkpoint path.

    Events: data building ("data"), feature caching ("features", fast preset), one
    "train" event per epoch with data {epoch, loss, val_mae, val_r2, val_pred, val_true}
    (and per step for the slow inception preset). Closing the generator cancels the
    run; the checkpoint is written only at the end, atomically, so a cancelled or
    failed run leaves no file behind. Torch's thread count is as before afterwards
    (the fast head trains on one thread; a GUI session scores on after training).
    """
    from napari_focusq.models import torch_threads

    with torch_threads():
        return (yield from _iter_fit(cfg))


def _iter_fit(cfg: TrainConfig) -> Generator[Progress, None, Path]:
    import torch

    from napari_focusq import __version__
    from napari_focusq.models import choose_device, model_from_file, new_model
    from napari_focusq.models.calibration import apply_calibration, fit_isotonic
    from napari_focusq.training.metrics import regression_metrics

    if cfg.preset == "inception":  # fail before minutes of data preparation, not after
        from napari_focusq.io.extras import require

        require("torchvision.models", "inception", "the inception model preset")
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    if out.suffix != ".safetensors":
        out = out / f"{cfg.name or cfg.preset}.safetensors" if (out.is_dir() or not out.suffix) else out.with_suffix(".safetensors")
    if not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    train_paths, val_paths = split_images(cfg)
    Xt, Zt, St = yield from iter_dataset(train_paths, cfg.samples_per_image, cfg, cfg.seed, "data")
    Xv, Zv, Sv = yield from iter_dataset(val_paths, cfg.val_samples_per_image, cfg, cfg.seed + 1, "validation data",
                                         magnify=False)
    n_thin = len(Zt)
    if cfg.layered_extra:
        # Thick sections beside the thin tiles, weighted in the loss (layered_weight / _hinge);
        # validation stays thin, so the best epoch, calibration and certainty are as before.
        XL, ZL, SL = yield from iter_layered_extra(train_paths, cfg.samples_per_image, cfg, cfg.seed + 7919)
        if len(ZL):
            Xt, Zt, St = np.concatenate([Xt, XL]), np.concatenate([Zt, ZL]), np.concatenate([St, SL])
        del XL
    n_layered = len(Zt) - n_thin
    if cfg.grain_extra:
        # Soft in-focus specimens with a sharp grain: thin labels, full weight (training.grain).
        XG, ZG, SG = yield from iter_layered_extra(train_paths, cfg.samples_per_image, cfg, cfg.seed + 7920,
                                                   "soft specimens", kind="grain")
        if len(ZG):
            Xt, Zt, St = np.concatenate([Xt, XG]), np.concatenate([Zt, ZG]), np.concatenate([St, SG])
        del XG

    device = choose_device()
    prev_epochs = 0
    if cfg.resume:
        model = model_from_file(cfg.resume)
        if model.architecture != cfg.preset:
            raise TrainingError(f"{cfg.resume}: a {model.architecture} model cannot resume a {cfg.preset} run")
        prev_epochs = int(model.meta.get("training", {}).get("epochs_done", 0))
        model.meta.pop("calibration", None)
    else:
        model = new_model(cfg.preset, modality=cfg.modality, config=cfg.arch, name=cfg.name or cfg.preset,
                          device=device)
    module = model.module.to(device)

    def prep(x):
        return model.prepare(x).to(device)

    fixed = getattr(module, "fixed_front_end", False)
    if fixed:
        # The front end has no weights: compute features once, train the head on them.
        feats = []
        for X, stage in ((Xt, "features"), (Xv, "features")):
            f = []
            with torch.inference_mode():
                for i in range(0, len(X), 256):
                    f.append(module.features(prep(X[i:i + 256])).clone())
                    yield Progress(stage, min(i + 256, len(X)), len(X))
            feats.append(torch.cat(f))
        Ft, Fv = feats
        if not cfg.resume:
            # The thin tiles' scale (the extra thick sections, if any, do not move it).
            module.feat_mean.copy_(Ft[:n_thin].mean(0))
            module.feat_std.copy_(Ft[:n_thin].std(0) + 1e-6)
        params = [*module.weights.parameters(), *module.biases.parameters()]
        # The head is tiny: more threads only add synchronisation (10x slower on a busy 2-core machine).
        torch.set_num_threads(1)
    else:
        params = module.parameters()
    zt = torch.from_numpy(Zt).to(device)
    pos = torch.arange(len(Zt), device=device)
    extra = (pos >= n_thin) & (pos < n_thin + n_layered)  # the thick-section tiles: weighted, hinged
    sample_w = torch.where(extra, torch.tensor(float(cfg.layered_weight)), torch.tensor(1.0)).to(device)
    n_heads = module.config.get("heads", 1) if fixed and hasattr(module, "forward_heads") else 1
    boot = (torch.rand(len(Zt), n_heads, generator=gen) < 0.8).float().to(device)
    if cfg.head_split == "sources" and n_heads > 1:
        # Each source (image or channel plane) is left out by one head: their spread then
        # also measures how much the answer depends on which specimens were seen.
        _, s_idx = np.unique(St, return_inverse=True)
        grp = np.random.default_rng(cfg.seed).permutation(s_idx.max() + 1) % n_heads
        boot *= torch.from_numpy(grp[s_idx][:, None] != np.arange(n_heads)[None, :]).float().to(device)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)

    def predict_val():
        module.eval()
        with torch.inference_mode():
            if fixed:
                return module.forward_features(Fv).cpu().numpy()
            return np.concatenate([module(prep(Xv[i:i + 32])).cpu().numpy() for i in range(0, len(Xv), 32)])

    best = (math.inf, None, None)
    history = []
    n = len(Zt)
    for epoch in range(cfg.epochs):
        module.train()
        losses = []
        steps = math.ceil(n / cfg.batch_size)
        for s, idx in enumerate(_batches(n, cfg.batch_size, gen)):
            if fixed and hasattr(module, "forward_heads"):
                # Each head of the ensemble learns from its own bootstrap subset.
                pred = module.forward_heads(Ft[idx])
                err = _tile_loss(pred, zt[idx, None].expand_as(pred), extra[idx, None], cfg.layered_hinge, cfg.layered_over)
                w = boot[idx] * sample_w[idx, None]
                loss = (err * w).sum() / w.sum().clamp(min=1)
            else:
                pred = module.forward_features(Ft[idx]) if fixed else module(prep(Xt[idx.numpy()]))
                err = _tile_loss(pred, zt[idx], extra[idx], cfg.layered_hinge, cfg.layered_over)
                loss = (err * sample_w[idx]).sum() / sample_w[idx].sum().clamp(min=1e-6)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if not fixed:
                yield Progress("train step", s + 1, steps, f"epoch {epoch + 1} loss {losses[-1]:.3f}",
                               data={"epoch": epoch + 1, "step": s + 1, "loss": losses[-1]})
        sched.step()
        pv = predict_val()
        m = regression_metrics(pv, Zv)
        val_mae = float(np.abs(pv - Zv).mean())
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mae": val_mae, "val_r2": m["r2"]})
        if val_mae < best[0]:
            best = (val_mae, {k: v.detach().clone() for k, v in module.state_dict().items()}, epoch + 1)
        yield Progress("train", epoch + 1, cfg.epochs,
                       f"loss {history[-1]['loss']:.4f} val MAE {val_mae:.3f} µm R² {m['r2']:.4f}",
                       data={**history[-1], "val_pred": pv.tolist(), "val_true": Zv.tolist()})
    module.load_state_dict(best[1])
    raw = predict_val()
    calib = fit_isotonic(raw, Zv)
    cal = apply_calibration(raw, calib)
    certainty = None
    # Too few validation tiles to fit a certainty map: the pipeline falls back to its rule of thumb.
    if fixed and hasattr(module, "forward_heads") and n_heads > 1 and len(Zv) >= 10:
        from napari_focusq.scoring.certainty import fit_certainty, noise_ratio

        # Map the ensemble's spread, or the tiles' noise ratio, whichever ranks the error
        # better, on held-out tiles to the error it comes with.
        with torch.inference_mode():
            spread_v = module.forward_heads(Fv).std(1).cpu().numpy()
        readings, how = certainty_readings(raw, cal, Zv, Sv)
        certainty = {**fit_certainty(spread_v, readings, Zv, noise=noise_ratio(Xv, cfg.modality), sources=Sv),
                     "readings": how}
    meta = {
        **model.meta, "name": cfg.name or model.meta.get("name", cfg.preset), "version": __version__, "trained": True,
        "optics": Optics.for_modality(cfg.modality).to_dict(), "blur": cfg.blur,
        "normalisation": _normalisation(model),
        "calibration": calib, **({"certainty": certainty} if certainty else {}),
        "metrics": _validation_metrics(raw, cal, Zv, Sv),
        "training": {
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("images", "val_images")},
            "train_images": [Path(p).name for p in train_paths], "val_images": [Path(p).name for p in val_paths],
            "train_tiles": int(len(Zt)), "val_tiles": int(len(Zv)), "best_epoch": best[2] + prev_epochs,
            "epochs_done": cfg.epochs + prev_epochs, "seconds": round(time.perf_counter() - t_start, 1),
            "history": history[-20:],
            # Only where there are any: checkpoints without extra tiles read as before.
            **({"train_thick_section_tiles": int(n_layered)} if n_layered else {}),
            **({"train_grain_tiles": int(len(Zt) - n_thin - n_layered)} if len(Zt) > n_thin + n_layered else {}),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    yield Progress("save", 0, 1, str(out))
    path = model.save(out, **meta)
    model.meta = meta
    yield Progress("save", 1, 1, str(path), data={"metrics": meta["metrics"]})
    return path


def _tile_loss(pred, z, extra, hinge: float, over: float | None = None):
    """Smooth L1 per tile (beta 0.2 µm); with ``hinge`` > 0 the extra thick-section tiles
    (``extra``) only count where they read below ``hinge`` x their truth: their labels
    (the best plane's distance) decide how far a faint sharp layer may pull a reading down,
    not where the reading must sit. With ``over`` (µm) they also count where they read more
    than ``over`` above their truth (round 5): without it an in-focus bulk under a faint
    blurred layer (truth ~0) costs nothing at any reading."""
    import torch

    err = torch.nn.functional.smooth_l1_loss(pred, z, beta=0.2, reduction="none")
    if hinge > 0:
        off = torch.clamp(hinge * z - pred, min=0)
        if over is not None:
            off = off + torch.clamp(pred - z - over, min=0)
        short = torch.nn.functional.smooth_l1_loss(off, torch.zeros_like(pred), beta=0.2, reduction="none")
        err = torch.where(extra.expand_as(err), short, err)
    return err


def certainty_readings(raw, cal, Zv, Sv) -> tuple:
    """The calibrated readings the certainty map learns its errors from, and what they are.

    The calibration is fitted on these validation tiles, so their calibrated errors are
    in-sample and too small: a map fitted to them under-states the error of every tile
    scored later. With two or more validation images each image's readings are calibrated
    by the map fitted on the others (``crossfit``), out of sample; with one, the in-sample
    readings are all there is (``in-sample``)."""
    from napari_focusq.models.calibration import crossfit_calibration

    cross = crossfit_calibration(raw, Zv, Sv)
    return (cal, "in-sample") if cross is None else (cross, "crossfit")


def _validation_metrics(raw, cal, Zv, Sv) -> dict:
    """Validation figures, with what they are in-sample for: the best epoch is chosen on
    these tiles and the calibration fitted on them, so neither is a held-out figure;
    ``validation_calibrated_crossfit`` calibrates each validation image by a map fitted on
    the others (out of sample for the calibration)."""
    from napari_focusq.models.calibration import crossfit_calibration
    from napari_focusq.training.metrics import regression_metrics

    out = {"validation_raw": regression_metrics(raw, Zv), "validation_calibrated": regression_metrics(cal, Zv)}
    cross = crossfit_calibration(raw, Zv, Sv)
    if cross is not None:
        out["validation_calibrated_crossfit"] = regression_metrics(cross, Zv)
    out["in_sample"] = {"validation_raw": "best epoch chosen on these tiles",
                        "validation_calibrated": "calibration fitted on these tiles"}
    return out


def _normalisation(model) -> str:
    """What the model's input is, in words (from the model, not the config: --init keeps the file's)."""
    kind = model.input_kind
    if kind == "rgb01":
        return "RGB, 0-1 (the data type's range)"
    if model.modality == "fluorescence":
        return "per-tile 0.5-99.5 percentile"
    return "green and blue channels, 0-255" if kind == "green+blue" else "green channel, 0-255"


def fit(cfg: TrainConfig, progress=None) -> Path:
    """Train as configured (see :func:`iter_fit`) and return the checkpoint path."""
    from napari_focusq.progress import drive

    return drive(iter_fit(cfg), progress)
