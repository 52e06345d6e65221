"""Thick sections, round 3: loss weighting and specimen trials on cached features (validation only).

Making tiles is the slow part of training (the `fast` front end has no weights). This makes
the default recipe's own thin training and validation tiles ONCE (the same calls and seeds
as `focusq train --recipe default`, so the thin set IS the recipe's), the extra thick-section
tiles of each specimen kind (``training.data.iter_layered_extra``, the recipe's seed), and
caches only their features (.npy, never pickle); then it fits the heads as ``training.fit``
does (smooth L1, bootstrapped heads, AdamW + cosine, best epoch on the thin validation MAE)
with the extra tiles at a loss weight or behind a one-sided hinge.

Kinds of extra tiles (``layered_kind``): ``sections`` (1-3 faint layers of the split's
images, rounds 1-2) and ``one_faint`` (one faint layer of another image, the bulk the best
plane). A trial is ``KIND:SHARE:WEIGHT:HINGE`` (options ``:g=SHARE`` for soft in-focus specimens
with a sharp grain, ``training.grain``, at full weight; ``:e=EPOCHS``; ``:s=SEED``), SHARE the
extra tiles per image as a share of the recipe's 1000 (at most the cached share), e.g.
``one_faint:0.3:0.3:0.8:g=0.2``; ``:nc`` leaves a ``--coloc`` cache's co-location columns out
(round 4: the same tiles with and without them); ``thin`` is the recipe without extras (``thin:g=0.2`` with
soft specimens only), ``shipped`` the shipped weights read raw. With the same shares the
heads are those ``focusq train`` makes (same tiles, seeds and loop: ``thin`` (``thin:nc`` in a
``--coloc`` cache) gives the f1555ce weights' raw figures to the last digit, and with ``--coloc``
``sections:0.3:0.3:0`` is the recipe shipped since round 4; ``shipped`` needs a ``--coloc`` cache).

Figures, all on the validation images and the real stacks (DESIGN-NOTES, evidence rules):
thin validation tiles R² / slope / MAE 0-4 µm (raw heads, no calibration); bench_real's
layered set (read / truth median at OD weight 0.1 / 0.2 / 0.35 / 0.5, in-focus medians);
the smear and URJC through-focus stacks (Spearman, plane of the lowest reading).

    .venv/bin/python benchmarks/bench_thick_trials.py --cache /tmp/thick make --share 0.3
    .venv/bin/python benchmarks/bench_thick_trials.py --cache /tmp/thick fit shipped thin sections:0.3:0.3:0 one_faint:0.3:1:0.8
    .venv/bin/python benchmarks/bench_thick_trials.py --coloc --cache /tmp/thickc make --share 0.3 --kinds sections
    .venv/bin/python benchmarks/bench_thick_trials.py --coloc --cache /tmp/thickc fit thin thin:nc sections:0.3:0.3:0
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_real as br  # noqa: E402

from napari_focusq.models import load_model, new_model  # noqa: E402
from napari_focusq.progress import drive  # noqa: E402
from napari_focusq.training.data import iter_dataset, iter_layered_extra  # noqa: E402
from napari_focusq.training.fit import _tile_loss  # noqa: E402
from napari_focusq.training.metrics import regression_metrics  # noqa: E402
from napari_focusq.training.recipes import default_recipe, split_images  # noqa: E402

KINDS = ("sections", "one_faint", "grain")


def _features(module, prepare, X, bs=256):
    out = []
    with torch.inference_mode():
        for i in range(0, len(X), bs):
            out.append(module.features(prepare(np.asarray(X[i:i + bs]))).clone())
    return torch.cat(out).numpy()


def _arch(cfg, coloc: bool) -> dict:
    """The recipe's front end, with the co-location features (round 4) appended when asked."""
    plain = {k: v for k, v in cfg.arch.items() if k != "coloc"}
    return {**plain, "coloc": True} if coloc else plain


def make(cache: Path, share: float, kinds=KINDS, coloc: bool = False):
    cache.mkdir(parents=True, exist_ok=True)
    cfg = default_recipe(cache / "unused")
    # With coloc the first columns are the recipe's front end's, the co-location ones last.
    model = new_model("fast", config=_arch(cfg, coloc), device="cpu")
    feat = lambda X: _features(model.module, model.prepare, X)  # noqa: E731
    train, val = split_images(cfg)
    if not (cache / "F_thin_train.npy").exists():
        # As training.fit: the recipe's seeds, the same calls.
        X, Z, _ = drive(iter_dataset(train, cfg.samples_per_image, cfg, cfg.seed, "data"))
        np.save(cache / "F_thin_train.npy", feat(X)), np.save(cache / "Z_thin_train.npy", Z)
        del X
        X, Z, _ = drive(iter_dataset(val, cfg.val_samples_per_image, cfg, cfg.seed + 1, "validation", magnify=False))
        np.save(cache / "F_thin_val.npy", feat(X)), np.save(cache / "Z_thin_val.npy", Z)
        print(f"thin: {len(np.load(cache / 'Z_thin_train.npy'))} training, {len(Z)} validation tiles", flush=True)
    if not (cache / "F_eval_layered.npy").exists():
        import tifffile

        X, T, W, K = br.layered_set(val, 6)
        np.save(cache / "F_eval_layered.npy", feat(X))
        np.savez(cache / "eval_layered.npz", T=T, W=W, K=K)
        for name in br.STACKS:
            st = tifffile.imread(br.project_data_dir() / "brightfield_through_focus" / name)
            S = np.stack([br._tiles_of(p) for p in st])
            np.save(cache / f"F_stack_{name}.npy", feat(S.reshape(-1, *S.shape[2:])).reshape(S.shape[0], S.shape[1], -1))
    for kind in kinds:
        if (cache / f"F_{kind}_train.npy").exists():
            continue
        if kind == "grain":  # as training.fit: soft specimens with a grain, their own seed
            kcfg = replace(cfg, grain_extra=share)
            X, Z, _ = drive(iter_layered_extra(train, cfg.samples_per_image, kcfg, cfg.seed + 7920, kind="grain"))
        else:
            kcfg = replace(cfg, layered_extra=share, layered_kind=kind)
            X, Z, _ = drive(iter_layered_extra(train, cfg.samples_per_image, kcfg, cfg.seed + 7919))
        np.save(cache / f"F_{kind}_train.npy", feat(X)), np.save(cache / f"Z_{kind}_train.npy", Z)
        print(f"{kind}: {len(Z)} training tiles", flush=True)


def fit_heads(module, Ft, Zt, extra, Fv, Zv, *, weight=1.0, hinge=0.0, epochs=200, seed=0, lr=2e-3, batch=256):
    """training.fit's head training on cached features: the thin tiles' feature scale, each
    head on its bootstrap, the extra tiles at ``weight`` (behind ``hinge``), best epoch on the
    thin validation MAE."""
    Ft, Fv, zt = torch.from_numpy(Ft), torch.from_numpy(Fv), torch.from_numpy(Zt)
    ex = torch.from_numpy(extra)
    n_thin = int((~ex).sum())
    module.feat_mean.copy_(Ft[:n_thin].mean(0))
    module.feat_std.copy_(Ft[:n_thin].std(0) + 1e-6)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    for w, b in zip(module.weights, module.biases):
        for k in range(w.shape[0]):
            torch.nn.init.kaiming_uniform_(w.data[k].T, a=5 ** 0.5)
        b.data.uniform_(-w.shape[1] ** -0.5, w.shape[1] ** -0.5)
    boot = (torch.rand(len(Zt), module.config["heads"], generator=gen) < 0.8).float()
    sw = torch.where(ex, torch.tensor(float(weight)), torch.tensor(1.0))
    opt = torch.optim.AdamW([*module.weights.parameters(), *module.biases.parameters()], lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    best = (math.inf, None)
    for _ in range(epochs):
        module.train()
        perm = torch.randperm(len(Zt), generator=gen)
        for i in range(0, len(Zt), batch):
            idx = perm[i:i + batch]
            pred = module.forward_heads(Ft[idx])
            err = _tile_loss(pred, zt[idx, None].expand_as(pred), ex[idx, None], hinge)
            w = boot[idx] * sw[idx, None]
            loss = (err * w).sum() / w.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        module.eval()
        with torch.inference_mode():
            mae = float(np.abs(module.forward_features(Fv).numpy() - Zv).mean())
        if mae < best[0]:
            best = (mae, {k: v.detach().clone() for k, v in module.state_dict().items()})
    module.load_state_dict(best[1])
    return module


def _read(module, F):
    F = F[..., :module.front.n_features]  # a cache with co-location columns read by a model without
    with torch.inference_mode():
        return module.forward_features(torch.from_numpy(np.ascontiguousarray(F, dtype=np.float32))).numpy()


def report(module, cache: Path, label: str) -> dict:
    from scipy.stats import spearmanr

    m = regression_metrics(_read(module, np.load(cache / "F_thin_val.npy")), np.load(cache / "Z_thin_val.npy"))
    ev = np.load(cache / "eval_layered.npz")
    rep = br.layered_report(_read(module, np.load(cache / "F_eval_layered.npy")), ev["T"], ev["W"], ev["K"])
    stacks = {}
    for s, best in br.STACKS.items():
        S = np.load(cache / f"F_stack_{s}.npy")
        r = np.array([np.median(_read(module, S[p])) for p in range(len(S))])
        stacks[s] = (float(spearmanr(r, np.abs(np.arange(len(S)) - best)).statistic), int(np.argmin(r)))
        if s.startswith("smear"):
            smear = " ".join(f"{v:.1f}" for v in r)
    print(f"{label:<30} thin {m['r2']:.4f}/{m['slope']:.3f}/{m['mae_0_4']:.3f}  layered "
          + "/".join(f"{r['ratio_median']:.2f}" for r in rep.values()) + "  in-focus "
          + "/".join(f"{r['in_focus_median_um']:.2f}" for r in rep.values()) + "  | "
          + "  ".join(f"{s[:5]} {rho:.3f} @{am}" for s, (rho, am) in stacks.items()) + f"\n{'':<30} smear planes: {smear}",
          flush=True)
    return {"thin": m, "layered": rep, "stacks": stacks}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--share", type=float, default=0.3, help="make: extra thick-section tiles per image / 1000")
    ap.add_argument("--kinds", default=",".join(KINDS), help="make: the specimen kinds, comma-separated")
    ap.add_argument("--coloc", action="store_true", help="make: append the co-location features (round 4); "
                    "fit: trials use them unless ':nc'")
    ap.add_argument("step", choices=("make", "fit"))
    ap.add_argument("trials", nargs="*", help="'shipped', 'thin' or KIND:SHARE:WEIGHT:HINGE, each with optional "
                    "':g=SHARE' (soft specimens with a grain), ':e=EPOCHS', ':s=SEED'")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.step == "make":
        make(a.cache, a.share, a.kinds.split(","), a.coloc)
        return 0
    cfg = default_recipe(a.cache / "unused")
    Ft0, Zt0 = np.load(a.cache / "F_thin_train.npy"), np.load(a.cache / "Z_thin_train.npy")
    Fv, Zv = np.load(a.cache / "F_thin_val.npy"), np.load(a.cache / "Z_thin_val.npy")
    for spec in a.trials or ["shipped"]:
        if spec == "shipped":
            report(load_model("fast").module, a.cache, "shipped (raw)")
            continue
        parts = spec.split(":")
        opts = dict(p.split("=") for p in parts if "=" in p)  # g=GRAIN share, e=EPOCHS, s=SEED
        coloc = a.coloc and "nc" not in parts  # nc: the same cache, without the co-location columns
        parts = [p for p in parts if "=" not in p and p != "nc"]
        kind, share, weight, hinge = (parts + ["0", "1", "0"])[:4] if parts[0] == "thin" else parts[:4]
        epochs, seed = int(opts.get("e", cfg.epochs)), int(opts.get("s", 0))
        n_img = len(split_images(cfg)[0])

        def first(kind, share, n_img=n_img):
            # The cache holds the images' tiles one image after another: the first of each
            # image's block are the tiles a recipe with this share would make (one stream an image).
            F, Z = np.load(a.cache / f"F_{kind}_train.npy"), np.load(a.cache / f"Z_{kind}_train.npy")
            per = len(Z) // n_img
            take = np.concatenate([np.arange(i, i + int(round(share * 1000))) for i in range(0, len(Z), per)])
            return F[take[take < len(Z)]], Z[take[take < len(Z)]]

        Fs, Zs = [Ft0], [Zt0]
        if parts[0] != "thin" and float(share) > 0:
            f, z = first(kind, float(share))
            Fs.append(f), Zs.append(z)
        n_layered = sum(map(len, Zs[1:]))
        if float(opts.get("g", 0)) > 0:
            f, z = first("grain", float(opts["g"]))
            Fs.append(f), Zs.append(z)
        Ft, Zt = np.concatenate(Fs), np.concatenate(Zs)
        extra = (np.arange(len(Zt)) >= len(Zt0)) & (np.arange(len(Zt)) < len(Zt0) + n_layered)
        module = new_model("fast", config=_arch(cfg, coloc), device="cpu").module
        nf = module.front.n_features
        fit_heads(module, np.ascontiguousarray(Ft[:, :nf]), Zt, extra, np.ascontiguousarray(Fv[:, :nf]), Zv,
                  weight=float(weight), hinge=float(hinge), epochs=epochs, seed=seed)
        report(module, a.cache, spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
