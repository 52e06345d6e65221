"""Fine-tuning a model on a tile collection (``focusq train --collection``).

In-focus tiles feed the simulated-defocus recipe (training.sample_tiles: optical defocus
at a known |z|, then the scanner degradations), as folders of images do. Real tiles enter
as real examples: a known defocus (µm) is regressed like a simulated one; a real
``out-of-focus`` tile, whose amount is unknown, through two hinge terms: its reading must
lie above the threshold, and above the readings of the in-focus tiles of its own slide.

The split is by slide: the tiles of held-out slides train nothing and report how well the
starting model and the fine-tuned one separate real in-focus from real out-of-focus tiles
(AUC, share of out-of-focus tiles over the threshold, share of in-focus tiles over it).
The fine-tuned model is selected only if it does no worse than its start on both the AUC
and the balanced accuracy at the threshold; otherwise the checkpoint written holds the
starting weights (with the report), unless keep_worse.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Generator

import numpy as np

from napari_focusq.progress import Progress
from napari_focusq.review.collection import IN_FOCUS, OUT_OF_FOCUS, Collection, CollectionError

#: Margin (µm) of the hinge terms: a real out-of-focus tile should read at least this much
#: above the threshold and above its slide's in-focus tiles.
MARGIN_UM = 0.5


def split_slides(coll: Collection, seed: int = 0, heldout_fraction: float = 0.34,
                 heldout=None) -> tuple[list, list]:
    """(training slides, held-out slides): the held-out ones hold both kinds of tile, the
    training ones some in-focus tiles (the simulation's material). Seeded; ``heldout``
    (slide file names) chooses them instead."""
    kinds: dict = {}
    for r in coll:
        kinds.setdefault(Path(r.slide).name, set()).add(r.kind)
    slides = sorted(kinds)
    if heldout:
        held = sorted({Path(h).name for h in heldout})
        unknown = [h for h in held if h not in kinds]
        if unknown:
            raise CollectionError(f"{coll.folder}: no tiles of held-out slide(s) {', '.join(unknown)}")
        train = [s for s in slides if s not in held]
        if not any(IN_FOCUS in kinds[s] for s in train):
            raise CollectionError(f"{coll.folder}: no in-focus tiles left to train on besides the held-out slides")
        return train, held
    if len(slides) < 2:
        raise CollectionError(f"{coll.folder}: tiles from {len(slides)} slide(s); training on a collection needs at "
                              "least two slides (one to train on, one held out to judge the result)")
    rng = np.random.default_rng(seed)
    k = max(1, round(len(slides) * heldout_fraction))
    for _ in range(500):
        held = set(rng.choice(slides, k, replace=False).tolist()) if _ else set(slides[-k:])
        train = [s for s in slides if s not in held]
        held_kinds = set().union(*(kinds[s] for s in held))
        if train and held_kinds == {IN_FOCUS, OUT_OF_FOCUS} and any(IN_FOCUS in kinds[s] for s in train):
            return train, sorted(held)
        if _ > 50:
            k = min(len(slides) - 1, k + (_ % 2))
    raise CollectionError(
        f"{coll.folder}: cannot split its {len(slides)} slides so that held-out slides have both in-focus and "
        "out-of-focus tiles and training slides have in-focus tiles; collect more slides")


def separation(pred_in, pred_out, threshold_um: float) -> dict:
    """How well readings separate real in-focus from real out-of-focus tiles."""
    from napari_focusq.training.metrics import auc

    pi, po = np.asarray(pred_in, float), np.asarray(pred_out, float)
    over_out = float((po > threshold_um).mean()) if len(po) else float("nan")
    over_in = float((pi > threshold_um).mean()) if len(pi) else float("nan")
    return {"auc": auc(po, pi), "out_of_focus_over_threshold": over_out, "in_focus_over_threshold": over_in,
            "balanced_accuracy": (over_out + 1 - over_in) / 2,
            "n_in_focus": int(len(pi)), "n_out_of_focus": int(len(po))}


def _not_worse(after: dict, before: dict) -> bool:
    def ok(a, b):
        return not (a == a and b == b and a < b - 1e-9)  # NaN (undefined) never vetoes

    return ok(after["auc"], before["auc"]) and ok(after["balanced_accuracy"], before["balanced_accuracy"])


def iter_train_collection(collection, out, *, init="default", threshold_um: float = 2.0, epochs: int = 40,
                          lr: float = 5e-4, batch_size: int = 256, seed: int = 0, sim_per_tile: int = 12,
                          keep_worse: bool = False, heldout_fraction: float = 0.34,
                          heldout=None) -> Generator[Progress, None, Path]:
    """Fine-tune ``init`` on ``collection``; yields Progress, returns the checkpoint path (see module doc)."""
    from napari_focusq.models import torch_threads

    with torch_threads():
        return (yield from _iter_train(collection, out, init=init, threshold_um=threshold_um, epochs=epochs, lr=lr,
                                       batch_size=batch_size, seed=seed, sim_per_tile=sim_per_tile,
                                       keep_worse=keep_worse, heldout_fraction=heldout_fraction,
                                       heldout=heldout))


def _iter_train(collection, out, *, init, threshold_um, epochs, lr, batch_size, seed, sim_per_tile, keep_worse,
                heldout_fraction, heldout):
    import torch

    from napari_focusq import __version__
    from napari_focusq.models import load_model
    from napari_focusq.models.calibration import apply_calibration, fit_isotonic
    from napari_focusq.training.config import TrainConfig, TrainingError
    from napari_focusq.training.data import sample_tiles
    from napari_focusq.training.metrics import regression_metrics

    t0 = time.perf_counter()
    coll = collection if isinstance(collection, Collection) else Collection(collection)
    if not len(coll):
        raise CollectionError(f"{coll.folder}: the collection is empty (collect tiles with `focusq collect`)")
    modalities = {r.modality for r in coll}
    if len(modalities) != 1:
        raise CollectionError(f"{coll.folder}: tiles of several modalities ({', '.join(sorted(modalities))}); "
                              "train one model per modality")
    modality = modalities.pop()
    start = load_model(init, modality=modality)
    if not getattr(start.module, "fixed_front_end", False):
        raise TrainingError(f"model {start.label}: fine-tuning on a collection needs a fast model "
                            f"(its front end is fixed); got a {start.architecture} model")
    model = copy.deepcopy(start)  # load_model caches: never change the shared instance
    module = model.module.cpu()
    model.device = torch.device("cpu")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_slides, held_slides = split_slides(coll, seed, heldout_fraction, heldout)
    digest = coll.digest()

    out = Path(out)
    if out.suffix != ".safetensors":
        out = out / "collection.safetensors" if (out.is_dir() or not out.suffix) else out.with_suffix(".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)

    # --- data: real tiles, and simulated defocus of the training slides' in-focus tiles
    recs = list(coll)
    yield Progress("data", 0, len(recs), "reading tiles")
    tiles = [coll.load_tile(r) for r in recs]
    slide = np.array([Path(r.slide).name for r in recs])
    kind = np.array([r.kind for r in recs])
    known = np.array([float(r.label) if not isinstance(r.label, str) else np.nan for r in recs])
    is_train = np.isin(slide, train_slides)
    cfg = TrainConfig(images=["-"], modality=modality, min_tissue=0.0, seed=seed)
    rng = np.random.default_rng(seed)
    sim_x, sim_z = [], []
    src_idx = [i for i in range(len(recs)) if is_train[i] and kind[i] == IN_FOCUS]
    for n, i in enumerate(src_idx):
        t, z = sample_tiles(tiles[i], sim_per_tile, np.random.default_rng(rng.integers(2**32)), cfg)
        sim_x.append(t)
        sim_z.append(z)
        yield Progress("data", n + 1, len(src_idx), "simulating defocus of in-focus tiles")
    Xs, Zs = np.concatenate(sim_x), np.concatenate(sim_z)
    cal_x, cal_z = [], []  # fresh draws (another seed) of the same tiles, for the calibration
    for i in src_idx:
        t, z = sample_tiles(tiles[i], max(2, sim_per_tile // 3), np.random.default_rng(rng.integers(2**32)), cfg)
        cal_x.append(t)
        cal_z.append(z)
    Xc, Zc = np.concatenate(cal_x), np.concatenate(cal_z)
    Sc = np.concatenate([np.full(len(z), slide[i]) for i, z in zip(src_idx, cal_z)])

    def feats(x, stage):
        f = []
        with torch.inference_mode():
            for i in range(0, len(x), 128):
                f.append(module.features(model.prepare(np.asarray(x[i:i + 128]))).clone())
                yield Progress(stage, min(i + 128, len(x)), len(x))
        return torch.cat(f)

    real = np.stack(tiles)
    Fs = yield from feats(Xs, "features")
    Fc = yield from feats(Xc, "features")
    Fr = yield from feats(real, "features")

    # --- before: the starting model on held-out slides
    def readings(m_module, calib, F):
        with torch.inference_mode():
            raw = m_module.forward_features(F).cpu().numpy()
        return apply_calibration(raw, calib)

    held = ~is_train
    held_in, held_out = held & (kind == IN_FOCUS), held & (kind == OUT_OF_FOCUS)
    start_module = copy.deepcopy(module).eval()
    r0 = readings(start_module, start.meta.get("calibration"), Fr)
    before = separation(r0[held_in], r0[held_out], threshold_um)

    # --- fine-tune the heads: simulated regression + real known defocus + hinge terms
    tr_known = np.nonzero(is_train & np.isfinite(known))[0]
    tr_oof = np.nonzero(is_train & (kind == OUT_OF_FOCUS) & ~np.isfinite(known))[0]
    tr_in = np.nonzero(is_train & (kind == IN_FOCUS))[0]
    same = torch.from_numpy(slide[tr_oof][:, None] == slide[tr_in][None, :]).float()
    zs = torch.from_numpy(Zs)
    zk = torch.from_numpy(known[tr_known]).float()
    params = [*module.weights.parameters(), *module.biases.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    torch.set_num_threads(1)  # the heads are tiny (see training._iter_fit)
    history = []
    for epoch in range(epochs):
        module.train()
        losses = []
        perm = torch.randperm(len(zs), generator=gen)
        for s in range(0, len(zs), batch_size):
            idx = perm[s:s + batch_size]
            pred = module.forward_heads(Fs[idx])
            loss = torch.nn.functional.smooth_l1_loss(pred, zs[idx, None].expand_as(pred), beta=0.2)
            if len(tr_known):
                pk = module.forward_heads(Fr[tr_known])
                loss = loss + torch.nn.functional.smooth_l1_loss(pk, zk[:, None].expand_as(pk), beta=0.2)
            if len(tr_oof):
                po = module.forward_heads(Fr[tr_oof])  # (n_oof, heads)
                loss = loss + torch.relu(threshold_um + MARGIN_UM - po).mean()
                if len(tr_in) and same.sum() > 0:
                    pi = module.forward_heads(Fr[tr_in])
                    gap = torch.relu(pi[None, :, :] + MARGIN_UM - po[:, None, :]).mean(2)  # (oof, in)
                    loss = loss + (gap * same).sum() / same.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        # Each epoch's figures, for the loss curve and the calibration plot: fresh simulated
        # draws of the training slides' tiles (not held out by slide; the calibration's tiles)
        # and the held-out slides' real tiles (AUC: ranks, so no calibration needed).
        module.eval()
        with torch.inference_mode():
            pc = module.forward_features(Fc).numpy()
            ph = module.forward_features(Fr[held]).numpy()
        m = regression_metrics(pc, Zc)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mae": float(np.abs(pc - Zc).mean()),
                        "val_r2": m["r2"], "heldout_auc": separation(ph[kind[held] == IN_FOCUS],
                                                                     ph[kind[held] == OUT_OF_FOCUS], threshold_um)["auc"]})
        yield Progress("train", epoch + 1, epochs,
                       f"loss {history[-1]['loss']:.4f} simulated MAE {history[-1]['val_mae']:.3f} µm "
                       f"held-out AUC {history[-1]['heldout_auc']:.3f}",
                       data={**history[-1], "val_pred": pc.tolist(), "val_true": Zc.tolist()})
    module.eval()

    # --- calibration: fresh simulated draws, real known defocus, and the real out-of-focus
    # tiles of training slides at no less than threshold + margin (their amount is unknown,
    # only that it is over the threshold: a censored point, imputed at the least it can be).
    with torch.inference_mode():
        raw_c = module.forward_features(Fc).numpy()
        raw_r = module.forward_features(Fr).numpy()
    prov = fit_isotonic(np.concatenate([raw_c, raw_r[tr_known]]), np.concatenate([Zc, known[tr_known]]))
    oof_z = np.maximum(apply_calibration(raw_r[tr_oof], prov), threshold_um + MARGIN_UM)
    calib = fit_isotonic(np.concatenate([raw_c, raw_r[tr_known], raw_r[tr_oof]]),
                         np.concatenate([Zc, known[tr_known], oof_z]))
    r1 = apply_calibration(raw_r, calib)
    after = separation(r1[held_in], r1[held_out], threshold_um)
    certainty = _refit_certainty(module, start, Fc, apply_calibration(raw_c, calib), Zc, Xc, Sc, modality)
    better = _not_worse(after, before)
    selected = "fine-tuned" if better or keep_worse else "start"

    def counts(mask):
        c = {IN_FOCUS: 0, OUT_OF_FOCUS: 0, "known_defocus": 0}
        for i in np.nonzero(mask)[0]:
            c["known_defocus" if np.isfinite(known[i]) else kind[i]] += 1
        return c

    report = {
        "folder": str(coll.folder), "digest": f"sha256:{digest}", "tiles": counts(np.ones(len(recs), bool)),
        "train_tiles": counts(is_train), "heldout_tiles": counts(held), "simulated_tiles": int(len(Zs)),
        "train_slides": train_slides, "heldout_slides": held_slides, "threshold_um": threshold_um,
        "init": start.label, "before": before, "after": after, "not_worse": bool(better), "selected": selected,
        "config": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "sim_per_tile": sim_per_tile,
                   "margin_um": MARGIN_UM},
        "history": history[-10:], "seconds": round(time.perf_counter() - t0, 1),
        "certainty": ("refitted on the fresh simulated draws" if certainty else
                      "the starting model's" if "certainty" in start.meta else "none (the pipeline's rule of thumb)"),
    }
    yield Progress("save", 0, 1, str(out))
    if selected == "fine-tuned":
        meta = {**start.meta, "name": f"{start.name}+collection", "version": __version__, "trained": True,
                "calibration": calib, **({"certainty": certainty} if certainty else {}), "collection": report,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path = model.save(out, **meta)
    else:
        # The starting model, unchanged, with the report of why it was kept.
        path = start.save(out, collection=report)
    yield Progress("save", 1, 1, str(path), data={"collection": report})
    return path


def _refit_certainty(module, start, F, cal, z, X, sources, modality) -> dict | None:
    """The fine-tuned heads' own certainty map (their spread moved with their weights), fitted
    as training.fit does on tiles the heads did not train on; None (the starting model's map
    is kept) for a single head or too few tiles."""
    import torch

    from napari_focusq.scoring.certainty import fit_certainty, noise_ratio

    if "certainty" not in start.meta or module.config.get("heads", 1) < 2 or len(z) < 10:
        return None
    with torch.inference_mode():
        spread = module.forward_heads(F).std(1).numpy()
    return fit_certainty(spread, cal, z, noise=noise_ratio(X, modality), sources=sources)


def _fmt(m: dict) -> str:
    return (f"AUC {m['auc']:.3f}, out-of-focus over threshold {100 * m['out_of_focus_over_threshold']:.0f}%, "
            f"in-focus over threshold {100 * m['in_focus_over_threshold']:.0f}%")


def main_train_collection(args) -> int:
    """``focusq train --collection COLLECTION [--init default] --out MODEL``."""
    from napari_focusq.progress import StderrBar, drive

    if getattr(args, "data", None):
        from napari_focusq.errors import UsageError

        raise UsageError("--collection trains on the collection's tiles: give no DATA with it")
    path = drive(iter_train_collection(
        args.collection, args.out, init=args.init or "default", threshold_um=args.threshold_um,
        epochs=args.epochs or 40, lr=args.lr or 5e-4, batch_size=args.batch_size or 256, seed=args.seed or 0,
        keep_worse=args.keep_worse, heldout=args.heldout), StderrBar())
    rep = json.loads(path.with_suffix(".json").read_text())["collection"]
    t = rep["tiles"]
    print(f"wrote {path}\ncollection {rep['folder']} ({rep['digest'][:19]}…): {t['in-focus']} in-focus, "
          f"{t['out-of-focus']} out-of-focus, {t['known_defocus']} of known defocus; "
          f"held out: {', '.join(rep['heldout_slides'])}")
    print(f"  before ({rep['init']}): {_fmt(rep['before'])}")
    print(f"  after  (fine-tuned): {_fmt(rep['after'])}")
    if rep["selected"] == "start":
        print(f"the fine-tuned model does WORSE than {rep['init']} on the held-out slides, so it was not selected: "
              f"{path} holds {rep['init']}'s weights unchanged (pass --keep-worse to write the fine-tuned one)")
    elif not rep["not_worse"]:
        print("the fine-tuned model does WORSE than its start on the held-out slides; written anyway (--keep-worse)")
    return 0
