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
``sections:0.3:0.3:0`` is round 4's recipe, ``sections:0.3:0.4:0.8:c=d2`` round 5's,
``sections:0.3:0.4:0.8:c=d2:h=15`` round 7's (shipped; ``h=`` the ensemble's size);
``shipped`` reads a ``--coloc`` cache with the columns of the shipped step: ``variant d2`` first).

Round 5: ``make --tiles`` also keeps the tiles' green channel (uint8), so ``variant NAME...``
computes co-location variants (``coloc_variants.py``) without remaking tiles, and ``:c=NAME``
fits with a variant's columns in place of the cached ones; ``:o=OVER`` bounds the hinge from
above (``TrainConfig.layered_over``); ``:wd=`` / ``:fn=`` set the heads' weight decay and a
Gaussian jitter of the features (in their standard deviations); ``:cv`` holds each training image out in turn (its thin
tiles read by heads fitted without its tiles: thin accuracy on an unseen image, from the
training images alone); ``make --dev`` adds the development test's tiles and ``:dev`` prints
them (a look at where an error is, never a choice).

Figures, all on the validation images and the real stacks (DESIGN-NOTES, evidence rules):
thin validation tiles R² / slope / MAE 0-4 µm (raw heads, no calibration); bench_real's
layered set (read / truth median at OD weight 0.1 / 0.2 / 0.35 / 0.5, in-focus medians);
the smear and URJC through-focus stacks (Spearman, plane of the lowest reading).

    .venv/bin/python benchmarks/bench_thick_trials.py --cache /tmp/thick make --share 0.3
    .venv/bin/python benchmarks/bench_thick_trials.py --cache /tmp/thick fit shipped thin sections:0.3:0.3:0 one_faint:0.3:1:0.8
    .venv/bin/python benchmarks/bench_thick_trials.py --coloc --cache /tmp/thickc make --share 0.3 --kinds sections
    .venv/bin/python benchmarks/bench_thick_trials.py --coloc --cache /tmp/thickc fit thin thin:nc sections:0.3:0.3:0
    .venv/bin/python benchmarks/bench_thick_trials.py --coloc --tiles --dev --cache /tmp/r5 make --share 0.3 --kinds sections
    .venv/bin/python benchmarks/bench_thick_trials.py --cache /tmp/r5 variant v0 d2
    .venv/bin/python benchmarks/bench_thick_trials.py --coloc --cache /tmp/r5 fit shipped sections:0.3:0.4:0.8:c=d2:dev
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

KINDS = ("sections", "one_faint", "grain", "sections1", "sections0", "sections6")
#: Kinds that are another kind with options: ``sections1`` is ``sections`` with one stain a
#: section (``TrainConfig.layered_one_stain``, round 6: an IHC bulk's layers are IHC too);
#: ``sections0`` without IHC-like bulks (every bulk keeps its own stain), ``sections6`` with 60 %.
KIND_OPTIONS = {"sections1": ("sections", {"layered_one_stain": True}), "sections0": ("sections", {"ihc_like": 0.0}),
                "sections6": ("sections", {"ihc_like": 0.6})}


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


def make(cache: Path, share: float, kinds=KINDS, coloc: bool = False, tiles: bool = False, dev: bool = False):
    cache.mkdir(parents=True, exist_ok=True)
    cfg = default_recipe(cache / "unused")
    # With coloc the first columns are the recipe's front end's, the co-location ones last.
    model = new_model("fast", config=_arch(cfg, coloc), device="cpu")

    def save(name, X, shape=None):
        """F_name (features); with ``tiles`` also G_name, the green channel as uint8 (what the
        co-location features read), so feature variants need no tiles remade."""
        F = _features(model.module, model.prepare, X)
        np.save(cache / f"F_{name}.npy", F if shape is None else F.reshape(*shape, -1))
        if tiles:
            np.save(cache / f"G_{name}.npy", np.ascontiguousarray(np.asarray(X)[..., 1] if X.ndim == 4 else X))
            # Round 6: the blue channel too (DAB absorbs there), for variants that read both.
            np.save(cache / f"B_{name}.npy", np.ascontiguousarray(np.asarray(X)[..., 2] if X.ndim == 4 else X))

    train, val = split_images(cfg)
    if not (cache / "F_thin_train.npy").exists():
        # As training.fit: the recipe's seeds, the same calls.
        X, Z, S = drive(iter_dataset(train, cfg.samples_per_image, cfg, cfg.seed, "data"))
        save("thin_train", X), np.save(cache / "Z_thin_train.npy", Z), np.save(cache / "S_thin_train.npy", S)
        del X
        X, Z, _ = drive(iter_dataset(val, cfg.val_samples_per_image, cfg, cfg.seed + 1, "validation", magnify=False))
        save("thin_val", X), np.save(cache / "Z_thin_val.npy", Z)
        print(f"thin: {len(np.load(cache / 'Z_thin_train.npy'))} training, {len(Z)} validation tiles", flush=True)
    if not (cache / "F_eval_layered.npy").exists():
        import tifffile

        X, T, W, K = br.layered_set(val, 6)
        save("eval_layered", X)
        np.savez(cache / "eval_layered.npz", T=T, W=W, K=K)
        for name in br.STACKS:
            st = tifffile.imread(br.project_data_dir() / "brightfield_through_focus" / name)
            S = np.stack([br._tiles_of(p) for p in st])
            save(f"stack_{name}", S.reshape(-1, *S.shape[2:]), S.shape[:2])
    if dev and not (cache / "F_dev_thin.npy").exists():
        # The development test, as bench_real.py --split test makes it: looked at to find where
        # an error is, never to choose (DESIGN-NOTES, evidence rules).
        from napari_focusq.training.config import TrainConfig

        folder = br.project_data_dir() / "brightfield"
        names = [str(folder / n) for n in br.DEFAULT_TEST]
        tcfg = TrainConfig(images=names, z_max_um=6.0, jpeg=(70, 95))
        X, Z, _ = drive(iter_dataset(names, 100, tcfg, 2026, "test data"))
        save("dev_thin", X), np.save(cache / "Z_dev_thin.npy", Z)
        X, T, W, K = br.layered_set(names, 6)
        save("dev_layered", X)
        np.savez(cache / "dev_layered.npz", T=T, W=W, K=K)
    for kind in kinds:
        if (cache / f"F_{kind}_train.npy").exists():
            continue
        if kind == "grain":  # as training.fit: soft specimens with a grain, their own seed
            kcfg = replace(cfg, grain_extra=share)
            X, Z, S = drive(iter_layered_extra(train, cfg.samples_per_image, kcfg, cfg.seed + 7920, kind="grain"))
        else:
            base, more = KIND_OPTIONS.get(kind, (kind, {}))
            kcfg = replace(cfg, layered_extra=share, layered_kind=base, **more)
            X, Z, S = drive(iter_layered_extra(train, cfg.samples_per_image, kcfg, cfg.seed + 7919))
        save(f"{kind}_train", X), np.save(cache / f"Z_{kind}_train.npy", Z), np.save(cache / f"S_{kind}_train.npy", S)
        print(f"{kind}: {len(Z)} training tiles", flush=True)


def fit_heads(module, Ft, Zt, extra, Fv, Zv, *, weight=1.0, hinge=0.0, over=None, epochs=200, seed=0, lr=2e-3,
              batch=256, wd=1e-4, noise=0.0, thin_margin=None):
    """training.fit's head training on cached features: the thin tiles' feature scale, each
    head on its bootstrap, the extra tiles at ``weight`` (behind ``hinge``), best epoch on the
    thin validation MAE. With ``thin_margin`` (µm) this is the thick head of a ``:max`` trial:
    thin tiles count only where it reads more than the margin above their truth, and the
    last epoch is kept (the thin validation MAE says nothing about a head that may read low)."""
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
    opt = torch.optim.AdamW([*module.weights.parameters(), *module.biases.parameters()], lr=lr, weight_decay=wd)
    scale = module.feat_std * noise  # ``noise``: Gaussian jitter of the features, in their standard deviations
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    best = (math.inf, None)
    for _ in range(epochs):
        module.train()
        perm = torch.randperm(len(Zt), generator=gen)
        for i in range(0, len(Zt), batch):
            idx = perm[i:i + batch]
            f = Ft[idx]
            pred = module.forward_heads(f + torch.randn(f.shape, generator=gen) * scale if noise else f)
            err = _tile_loss(pred, zt[idx, None].expand_as(pred), ex[idx, None], hinge, over)
            if thin_margin is not None:
                above = torch.clamp(pred - zt[idx, None] - thin_margin, min=0)
                err = torch.where(ex[idx, None].expand_as(err), err, torch.nn.functional.smooth_l1_loss(
                    above, torch.zeros_like(above), beta=0.2, reduction="none"))
            w = boot[idx] * sw[idx, None]
            loss = (err * w).sum() / w.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if thin_margin is not None:
            continue
        module.eval()
        with torch.inference_mode():
            mae = float(np.abs(module.forward_features(Fv).numpy() - Zv).mean())
        if mae < best[0]:
            best = (mae, {k: v.detach().clone() for k, v in module.state_dict().items()})
    if best[1] is not None:
        module.load_state_dict(best[1])
    module.eval()
    return module


class MaxOfHeads(torch.nn.Module):
    """A ``:max`` trial's reading: the thin heads' and the thick heads' mean, the larger (the
    thick head may only raise a reading; on a thin tile it was trained to stay at or below it)."""

    def __init__(self, thin, thick):
        super().__init__()
        self.thin, self.thick = thin, thick

    def forward_features(self, f):
        return torch.maximum(self.thin.forward_features(f), self.thick.forward_features(f))


def _read(module, F):
    with torch.inference_mode():
        return module.forward_features(torch.from_numpy(np.ascontiguousarray(F, dtype=np.float32))).numpy()


class Columns:
    """The feature columns a trial reads from the cache: all of them, the front end's without
    the co-location ones (``:nc``), or a variant's (``:c=NAME``, coloc_variants.py) in their place."""

    def __init__(self, cache: Path, base: int, coloc: bool, variant: str | None = None):
        self.cache, self.base, self.coloc, self.variant = cache, base, coloc, variant

    def __call__(self, group: str) -> np.ndarray:
        F = np.load(self.cache / f"F_{group}.npy")
        if self.variant:
            C = np.load(self.cache / f"C_{self.variant}_{group}.npy")
            return np.concatenate([F[..., :self.base], C.reshape(*F.shape[:-1], -1)], -1)
        return F if self.coloc else F[..., :self.base]


def heads_for(cfg, n_features: int, heads: int | None = None):
    """A `fast` module of the recipe whose heads take ``n_features`` columns (a variant may add
    or drop some; only the heads are trained and read here), with ``heads`` heads if given."""
    arch = _arch(cfg, False)
    module = new_model("fast", config={**arch, "heads": heads} if heads else arch, device="cpu").module
    if n_features != module.front.n_features:
        module.feat_mean = torch.zeros(n_features)
        module.feat_std = torch.ones(n_features)
        module.weights[0] = torch.nn.Parameter(torch.empty(module.config["heads"], n_features,
                                                           module.weights[0].shape[2]))
    return module


def _layered_line(readings, ev) -> str:
    rep = br.layered_report(readings, ev["T"], ev["W"], ev["K"])
    return ("layered " + "/".join(f"{r['ratio_median']:.2f}" for r in rep.values()) + "  in-focus "
            + "/".join(f"{r['in_focus_median_um']:.2f}" for r in rep.values())), rep


def report(module, cols: Columns, label: str, dev: bool = False) -> dict:
    from scipy.stats import spearmanr

    cache = cols.cache
    m = regression_metrics(_read(module, cols("thin_val")), np.load(cache / "Z_thin_val.npy"))
    line, rep = _layered_line(_read(module, cols("eval_layered")), np.load(cache / "eval_layered.npz"))
    stacks = {}
    for s, best in br.STACKS.items():
        S = cols(f"stack_{s}")
        r = np.array([np.median(_read(module, S[p])) for p in range(len(S))])
        stacks[s] = (float(spearmanr(r, np.abs(np.arange(len(S)) - best)).statistic), int(np.argmin(r)))
        if s.startswith("smear"):
            smear = " ".join(f"{v:.1f}" for v in r)
    print(f"{label:<30} thin {m['r2']:.4f}/{m['slope']:.3f}/{m['mae_0_4']:.3f}  {line}  | "
          + "  ".join(f"{s[:5]} {rho:.3f} @{am}" for s, (rho, am) in stacks.items()) + f"\n{'':<30} smear planes: {smear}",
          flush=True)
    out = {"thin": m, "layered": rep, "stacks": stacks}
    if dev and (cache / "F_dev_thin.npy").exists():
        rd, zd = _read(module, cols("dev_thin")), np.load(cache / "Z_dev_thin.npy")
        d = regression_metrics(rd, zd)
        dline, _ = _layered_line(_read(module, cols("dev_layered")), np.load(cache / "dev_layered.npz"))
        # The development images' tiles come one image after another, as many each.
        per = [regression_metrics(r, z) for r, z in zip(np.split(rd, len(br.DEFAULT_TEST)), np.split(zd, len(br.DEFAULT_TEST)))]
        print(f"{'':<30} DEV (look only): thin {d['r2']:.4f}/{d['slope']:.3f}/{d['intercept']:+.3f}/{d['mae_0_4']:.3f}"
              f"  {dline}\n{'':<30} DEV by image (R²/intercept): "
              + "  ".join(f"{m['r2']:.3f}/{m['intercept']:+.2f}" for m in per), flush=True)
        out["dev"] = d
    return out


def variant(cache: Path, names):
    """C_NAME_group.npy for every kept tile set (G_*.npy) of the cache, and the variant's cost."""
    import time

    import coloc_variants

    for name in names:
        fn = coloc_variants.VARIANTS[name]
        t, n = 0.0, 0
        both = getattr(fn, "blue", False)  # reads the green and the blue channel (B_*.npy, round 6)
        for g in sorted(cache.glob("G_*.npy")):
            G = np.load(g, mmap_mode="r")
            flat = G.reshape(-1, *G.shape[-2:])
            if both:
                blue = np.load(g.with_name("B_" + g.name[2:]), mmap_mode="r").reshape(flat.shape)
            out = []
            with torch.inference_mode():
                for i in range(0, len(flat), 64):
                    x = torch.from_numpy(np.asarray(flat[i:i + 64], dtype=np.float32))
                    args = (x, torch.from_numpy(np.asarray(blue[i:i + 64], dtype=np.float32))) if both else (x,)
                    t0 = time.perf_counter()
                    out.append(fn(*args))
                    t += time.perf_counter() - t0
                    n += len(x)
            np.save(cache / f"C_{name}_{g.stem[2:]}.npy", torch.cat(out).numpy().reshape(*G.shape[:-2], -1))
        print(f"variant {name}: {n} tiles, {1e3 * t / max(n, 1):.3f} ms a tile (one thread)", flush=True)


def _base_features(cfg) -> int:
    """How many columns the recipe's front end has without the co-location features."""
    return new_model("fast", config=_arch(cfg, False), device="cpu").module.front.n_features


def shipped(cache: Path) -> None:
    """The shipped weights read raw, on the cached columns of their co-location step (step 2:
    the ``d2`` variant's, which ``variant d2`` computes from the kept tiles)."""
    module = load_model("fast").module
    step = getattr(module.front, "step", 1)
    name = {1: None, 2: "d2"}[step]
    if name and not (cache / f"C_{name}_thin_val.npy").exists():
        raise SystemExit(f"the shipped weights read co-location features at step {step}: run "
                         f"'--cache {cache} variant {name}' first (needs a 'make --tiles' cache)")
    report(module, Columns(cache, _base_features(default_recipe(cache / "unused")), True, name), "shipped (raw)",
           dev=True)


def trial(spec: str, cache: Path, coloc: bool):
    """Fit the heads of one trial (see the module's docstring) and report it."""
    cfg = default_recipe(cache / "unused")
    base = _base_features(cfg)
    Zt0, St0 = np.load(cache / "Z_thin_train.npy"), np.load(cache / "S_thin_train.npy")
    Zv = np.load(cache / "Z_thin_val.npy")
    n_img = len(split_images(cfg)[0])
    parts = spec.split(":")
    # g=GRAIN, e=EPOCHS, s=SEED, c=VARIANT, o=OVER, wd=WEIGHT_DECAY, fn=FEATURE_NOISE (in feature SDs),
    # h=HEADS (the ensemble's size; the recipe's 5)
    opts = dict(p.split("=") for p in parts if "=" in p)
    # nc: the same cache without the co-location columns; c=NAME: a variant's in their place.
    cols = Columns(cache, base, coloc and "nc" not in parts, opts.get("c"))
    flags = {p for p in parts[1:] if p in ("nc", "cv", "dev", "max")}
    parts = [p for p in parts if "=" not in p and p not in flags]
    kind, share, weight, hinge = (parts + ["0", "1", "0"])[:4] if parts[0] == "thin" else parts[:4]
    epochs, seed = int(opts.get("e", cfg.epochs)), int(opts.get("s", 0))

    def first(kind, share):
        # The cache holds the images' tiles one image after another: the first of each
        # image's block are the tiles a recipe with this share would make (one stream an image).
        F, Z, S = cols(f"{kind}_train"), np.load(cache / f"Z_{kind}_train.npy"), np.load(cache / f"S_{kind}_train.npy")
        per = len(Z) // n_img
        take = np.concatenate([np.arange(i, i + int(round(share * 1000))) for i in range(0, len(Z), per)])
        take = take[take < len(Z)]
        return F[take], Z[take], S[take]

    Fs, Zs, Ss = [cols("thin_train")], [Zt0], [St0]
    if parts[0] != "thin" and float(share) > 0:
        for x, y in zip((Fs, Zs, Ss), first(kind, float(share))):
            x.append(y)
    n_layered = sum(map(len, Zs[1:]))
    if float(opts.get("g", 0)) > 0:
        for x, y in zip((Fs, Zs, Ss), first("grain", float(opts["g"]))):
            x.append(y)
    Ft, Zt, St = np.concatenate(Fs), np.concatenate(Zs), np.concatenate(Ss)
    extra = (np.arange(len(Zt)) >= len(Zt0)) & (np.arange(len(Zt)) < len(Zt0) + n_layered)
    Fv = cols("thin_val")

    def fit(keep):
        module = heads_for(cfg, Ft.shape[1], int(opts["h"]) if "h" in opts else None)
        kw = dict(epochs=epochs, seed=seed, wd=float(opts.get("wd", 1e-4)), noise=float(opts.get("fn", 0)))
        over = float(opts["o"]) if "o" in opts else None
        if "max" not in flags:
            return fit_heads(module, np.ascontiguousarray(Ft[keep]), Zt[keep], extra[keep], Fv, Zv,
                             weight=float(weight), hinge=float(hinge), over=over, **kw)
        # :max — thin heads on the thin tiles alone, thick heads that may only raise a reading
        # (thin tiles count where they read more than m µm above the truth; the thick-section
        # tiles as the trial's weight, hinge and over say); the reading is the larger.
        thin = keep & ~extra
        thin_mod = fit_heads(module, np.ascontiguousarray(Ft[thin]), Zt[thin], extra[thin], Fv, Zv, **kw)
        thick_mod = fit_heads(heads_for(cfg, Ft.shape[1]), np.ascontiguousarray(Ft[keep]), Zt[keep], extra[keep],
                              Fv, Zv, weight=float(weight), hinge=float(hinge), over=over,
                              thin_margin=float(opts.get("m", 0.0)), **kw)
        return MaxOfHeads(thin_mod, thick_mod)

    report(fit(np.ones(len(Zt), bool)), cols, spec, dev="dev" in flags)
    if "cv" in flags:
        # Each training image held out in turn (its thin and extra tiles), read on its thin
        # tiles: how the thin accuracy carries to an image the heads never saw, from the
        # training images alone (validation still picks the epoch).
        rows = []
        for k in range(n_img):
            mod = fit(St != k)
            held = (St == k) & ~extra & (np.arange(len(Zt)) < len(Zt0))
            rows.append(regression_metrics(_read(mod, Ft[held]), Zt[held]))
        print(f"{'':<30} CV by image (R²/slope/intercept/MAE): "
              + "  ".join(f"{r['r2']:.3f}/{r['slope']:.2f}/{r['intercept']:+.2f}/{r['mae_0_4']:.2f}" for r in rows)
              + f"\n{'':<30} CV mean R² {np.mean([r['r2'] for r in rows]):.4f}, |intercept| "
              f"{np.mean([abs(r['intercept']) for r in rows]):.3f}, MAE {np.mean([r['mae_0_4'] for r in rows]):.3f},"
              f" worst R² {min(r['r2'] for r in rows):.4f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--share", type=float, default=0.3, help="make: extra thick-section tiles per image / 1000")
    ap.add_argument("--kinds", default=",".join(KINDS), help="make: the specimen kinds, comma-separated")
    ap.add_argument("--coloc", action="store_true", help="make: append the co-location features (round 4); "
                    "fit: trials use them unless ':nc'")
    ap.add_argument("--tiles", action="store_true", help="make: also keep the tiles' green channel (uint8), "
                    "for co-location variants ('variant', ':c=NAME') without remaking tiles")
    ap.add_argument("--dev", action="store_true", help="make: also the development test's thin and layered tiles "
                    "(fit ':dev' prints them: a look, never a choice)")
    ap.add_argument("step", choices=("make", "fit", "variant"))
    ap.add_argument("trials", nargs="*", help="'shipped', 'thin' or KIND:SHARE:WEIGHT:HINGE, each with optional "
                    "':g=SHARE' (soft specimens with a grain), ':e=EPOCHS', ':s=SEED', ':c=VARIANT' (coloc_variants.py), "
                    "':cv' (each training image held out in turn), ':dev' (the development test, a look); "
                    "variant: the variants' names")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.step == "make":
        make(a.cache, a.share, a.kinds.split(","), a.coloc, a.tiles, a.dev)
        return 0
    if a.step == "variant":
        variant(a.cache, a.trials)
        return 0
    for spec in a.trials or ["shipped"]:
        if spec == "shipped":
            shipped(a.cache)
        else:
            trial(spec, a.cache, a.coloc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
