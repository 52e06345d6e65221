"""Thick sections, round 4: do co-location features separate a faint sharp layer over a blurred
bulk from an in-focus specimen, given the same band profile? (No training loop.)

    .venv/bin/python benchmarks/bench_colocation.py --cache /tmp/coloc make
    .venv/bin/python benchmarks/bench_colocation.py --cache /tmp/coloc report
    .venv/bin/python benchmarks/bench_colocation.py --cache /tmp/coloc cost

``make`` builds the tiles once (validation images and the real stacks; the development test's
pale Ki67 scans as a check only, DESIGN-NOTES "Evidence") and caches them (.npy); ``report``
computes the readings of the weights before round 4 (``--previous``, from git), their front
end's features and the co-location features
(``models.colocation``), and prints:

1. per group, each feature's median and interquartile range, and the shipped reading;
2. AUC of "layered, out of focus (OD weight <= 0.35)" against "in focus (thin z <= 0.5 µm)"
   for each feature alone; then a logistic regression (L2, standardised features) held out
   by source image (fit on one validation image, scored on the other, both ways) with the
   band profile alone and with the co-location features added; the "band profile" is (a) the
   shipped model's reading and (b) the front end's full 164 features;
3. the classifiers fitted on both validation images applied to groups they never saw: the
   smear stack near focus (planes 7-11) and far (0-3, 15-18), the URJC stack, the pale Ki67
   in focus (the share called "layered out of focus": should be low for the in-focus ones);
4. among tiles the shipped model reads <= 1 µm (the confusion itself), the AUC per feature.
Groups:
- ``thin z``: crops of the validation images, one layer at z = 0 / 0.5 / 1 / 2 / 3 / 4 µm, JPEG 85;
- ``layered out w``: bench_real's layered set (bulk 1.5-4 µm out, a faint crop of the other
  image 0 / 0.75 µm from focus, weight w), ``layered in focus``: bulk in focus, faint layer
  1.5 / 4 µm out;
- the two real stacks (grey, read as given) and ``ki67 z`` (test images, check only).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_real as br  # noqa: E402

from napari_focusq.models import load_model  # noqa: E402
from napari_focusq.models.colocation import FEATURES, colocation_features  # noqa: E402
from napari_focusq.optics.layered import Layer, simulate_layered  # noqa: E402
from napari_focusq.training.data import load_training_image  # noqa: E402
from napari_focusq.training.recipes import DEFAULT_TEST, DEFAULT_VAL, project_data_dir  # noqa: E402

THIN_Z = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
KI67 = tuple(n for n in DEFAULT_TEST if "Ki67" in n)


def _thin(paths, per_image, zs, seed):
    rng = np.random.default_rng(seed)
    X, Z, S = [], [], []
    for k, p in enumerate(paths):
        for c in br._crops(load_training_image(p, "brightfield"), per_image, rng, "brightfield"):
            for z in zs:
                img, _ = simulate_layered([Layer(c, z)], 0.0, pixel_size_um=0.5)
                X.append(br._jpeg(img, 85)), Z.append(z), S.append(k)
    return np.stack(X), np.array(Z), np.array(S)


def make(cache: Path, per_image: int):
    import tifffile

    cache.mkdir(parents=True, exist_ok=True)
    folder = project_data_dir() / "brightfield"
    val = [folder / n for n in DEFAULT_VAL]
    t0 = time.time()
    X, Z, S = _thin(val, per_image, THIN_Z, 404)
    np.save(cache / "X_thin.npy", X), np.savez(cache / "thin.npz", Z=Z, S=S)
    print(f"thin: {len(X)} tiles, {time.time() - t0:.0f} s", flush=True)
    X, T, W, K = br.layered_set(val, max(1, per_image // 4))
    # layered_set: per image, per bulk crop, per weight, 8 cases; the source is the bulk's image.
    S = np.repeat(np.arange(len(val)), len(X) // len(val))
    np.save(cache / "X_layered.npy", X), np.savez(cache / "layered.npz", T=T, W=W, K=K, S=S)
    print(f"layered: {len(X)} tiles, {time.time() - t0:.0f} s", flush=True)
    for name in br.STACKS:
        st = tifffile.imread(project_data_dir() / "brightfield_through_focus" / name)
        np.save(cache / f"X_stack_{name}.npy", np.stack([br._tiles_of(p) for p in st]))
    X, Z, S = _thin([folder / n for n in KI67], max(1, per_image // 2), (0.0, 0.5), 405)
    np.save(cache / "X_ki67.npy", X), np.savez(cache / "ki67.npz", Z=Z, S=S)
    print(f"ki67: {len(X)} tiles, {time.time() - t0:.0f} s", flush=True)


# --------------------------------------------------------------------------- statistics
def auc(pos, neg) -> float:
    """P(a positive scores above a negative), ties half (Mann-Whitney)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):  # average ranks of ties
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r = ranks[:len(pos)].sum()
    return float((r - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def logistic(Xtr, ytr, l2=1e-2, seed=0):
    """L2 logistic regression on standardised features (LBFGS); returns a scorer."""
    torch.manual_seed(seed)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    x = torch.from_numpy(((Xtr - mu) / sd).astype(np.float64))
    y = torch.from_numpy(ytr.astype(np.float64))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    wd, bd = w.detach().numpy(), float(b.detach())
    return lambda X: 1 / (1 + np.exp(-(((X - mu) / sd) @ wd + bd)))


def _q(v):
    v = np.asarray(v, float)
    return f"{np.median(v):6.2f} [{np.percentile(v, 25):5.2f},{np.percentile(v, 75):5.2f}]"


def report(cache: Path, args):
    import tempfile

    torch.set_num_threads(1)
    # The reading and band profile of the weights whose confusion this measures (before round
    # 4: without the co-location features), from git.
    prev = br.previous_weights(args.previous, Path(tempfile.mkdtemp(prefix="focusq-coloc-")))
    if prev is None:
        raise SystemExit(f"weights at git revision {args.previous} not found (git or that revision missing)")
    fm = load_model(prev)
    fm.module.to("cpu")
    if fm.meta["arch_config"].get("coloc"):
        raise SystemExit(f"the weights at {args.previous} already have the co-location features; pass --previous")

    def feats(X):
        P, B, C = [], [], []
        with torch.inference_mode():
            for i in range(0, len(X), 32):
                x = fm.prepare(X[i:i + 32])
                B.append(fm.module.features(x).numpy())
                C.append(colocation_features(x[:, 0], grid=args.grid, pool=args.pool, coarse=args.coarse).numpy())
                P.append(fm.predict(X[i:i + 32]))
        return np.concatenate(P), np.concatenate(B), np.concatenate(C)

    groups = {}  # name -> (reading, band, coloc, source)
    X = np.load(cache / "X_thin.npy")
    d = np.load(cache / "thin.npz")
    P, B, C = feats(X)
    for z in THIN_Z:
        m = d["Z"] == z
        groups[f"thin z {z:g}"] = (P[m], B[m], C[m], d["S"][m])
    X = np.load(cache / "X_layered.npy")
    d = np.load(cache / "layered.npz")
    P, B, C = feats(X)
    for w in br.WEIGHTS:
        m = (d["K"] == "defocused") & (d["W"] == w)
        groups[f"layered out w{w:g}"] = (P[m], B[m], C[m], d["S"][m])
    m = d["K"] == "in focus"
    groups["layered in focus"] = (P[m], B[m], C[m], d["S"][m])
    for name, best in br.STACKS.items():
        S = np.load(cache / f"X_stack_{name}.npy")
        n_pl, n_t = S.shape[:2]
        P, B, C = feats(S.reshape(-1, *S.shape[2:]))
        plane = np.repeat(np.arange(n_pl), n_t)
        short = name.split("_")[0]
        for label, sel in (("near", np.abs(plane - best) <= 2), ("far", np.abs(plane - best) >= 6)):
            groups[f"{short} {label}"] = (P[sel], B[sel], C[sel], np.full(int(sel.sum()), -1))
    X = np.load(cache / "X_ki67.npy")
    d = np.load(cache / "ki67.npz")
    P, B, C = feats(X)
    for z in (0.0, 0.5):
        m = d["Z"] == z
        groups[f"ki67 z {z:g} (test)"] = (P[m], B[m], C[m], d["S"][m])

    print(f"co-location features: grid {args.grid}, pool {args.pool}, coarse {args.coarse}")
    print(f"\n{'group':<22}{'n':>5}{'reading µm':>22}" + "".join(f"{f:>22}" for f in FEATURES))
    for g, (P, _, C, _) in groups.items():
        print(f"{g:<22}{len(P):>5}{_q(P):>22}" + "".join(f"{_q(C[:, i]):>22}" for i in range(C.shape[1])))

    pos_names = [f"layered out w{w:g}" for w in br.WEIGHTS if w <= 0.35]
    neg_names = ["thin z 0", "thin z 0.5"]
    pos = {k: np.concatenate([groups[g][k] for g in pos_names]) for k in range(4)}
    neg = {k: np.concatenate([groups[g][k] for g in neg_names]) for k in range(4)}
    print(f"\nAUC, one number alone: {'+'.join(pos_names)} vs {'+'.join(neg_names)} "
          f"(n {len(pos[0])} / {len(neg[0])}; 0.5 = no separation, 0 or 1 = perfect)")
    print(f"  shipped reading: {auc(pos[0], neg[0]):.3f}")
    for i, f in enumerate(FEATURES):
        print(f"  {f:<10}: {auc(pos[2][:, i], neg[2][:, i]):.3f}")
    low_p = pos[0] <= 1.0
    low_n = neg[0] <= 1.0
    print(f"\nthe confusion itself: tiles read <= 1 µm (layered out of focus {int(low_p.sum())}, in focus {int(low_n.sum())})")
    for i, f in enumerate(FEATURES):
        per = [auc(pos[2][low_p & (pos[3] == s), i], neg[2][low_n & (neg[3] == s), i]) for s in np.unique(neg[3])]
        print(f"  {f:<10}: AUC {auc(pos[2][low_p, i], neg[2][low_n, i]):.3f}  (per validation image "
              + " / ".join(f"{a:.3f}" for a in per) + ")")

    # Held out by source image: fit on one validation image, score the other.
    yp, yn = np.ones(len(pos[0])), np.zeros(len(neg[0]))
    y = np.concatenate([yp, yn])
    src = np.concatenate([pos[3], neg[3]])
    reading = np.concatenate([pos[0], neg[0]])[:, None]
    band = np.concatenate([pos[1], neg[1]])
    col = np.concatenate([pos[2], neg[2]])
    designs = {
        "reading": (reading, lambda g: g[0][:, None]),
        "reading + coloc": (np.hstack([reading, col]), lambda g: np.hstack([g[0][:, None], g[2]])),
        "band 164": (band, lambda g: g[1]),
        "band 164 + coloc": (np.hstack([band, col]), lambda g: np.hstack([g[1], g[2]])),
        "coloc only": (col, lambda g: g[2]),
        "reading + r_pix": (np.hstack([reading, col[:, [3]]]), lambda g: np.hstack([g[0][:, None], g[2][:, [3]]])),
        "reading + r_hg,r_pix": (np.hstack([reading, col[:, [1, 3]]]),
                                 lambda g: np.hstack([g[0][:, None], g[2][:, [1, 3]]])),
    }
    print("\nlogistic, held out by source image (fit on one validation image, AUC on the other; both ways)")
    for name, (Xd, _) in designs.items():
        aucs = []
        for s in np.unique(src):
            f = logistic(Xd[src != s], y[src != s], l2=args.l2)
            sc = f(Xd[src == s])
            aucs.append(auc(sc[y[src == s] == 1], sc[y[src == s] == 0]))
        print(f"  {name:<18}: " + " / ".join(f"{a:.3f}" for a in aucs))
    print("\nfitted on both validation images, applied elsewhere: share called 'layered out of focus' (p > 0.5)")
    others = [g for g in groups if g not in pos_names + neg_names]
    print(f"  {'group':<22}" + "".join(f"{n[:19]:>20}" for n in designs))
    fits = {n: (logistic(Xd, y, l2=args.l2), mk) for n, (Xd, mk) in designs.items()}
    for g in pos_names + neg_names + others:
        row = "".join(f"{float(np.mean(f(mk(groups[g])) > 0.5)):>20.2f}" for f, mk in fits.values())
        print(f"  {g:<22}{row}")


def cost(cache: Path, repeats: int = 7):
    """ms per tile on one torch thread, batch 32 of the cached thin tiles: the `fast` model
    (front end + heads) without and with the co-location features (``arch_config["coloc"]``:
    every pixel, round 4; every second pixel, round 5), and the features alone, alternated so a
    load change hits all alike."""
    import time

    from napari_focusq.models import new_model

    torch.set_num_threads(1)
    arch = {k: v for k, v in load_model("fast").meta["arch_config"].items() if k != "coloc"}
    plain = new_model("fast", config=arch, device="cpu")
    with_c = new_model("fast", config={**arch, "coloc": True}, device="cpu")
    with_c2 = new_model("fast", config={**arch, "coloc": 2}, device="cpu")
    x = plain.prepare(np.load(cache / "X_thin.npy")[:32])
    runs = {"model without coloc": lambda: plain.module(x), "co-location features": lambda: colocation_features(x[:, 0]),
            "model with coloc": lambda: with_c.module(x),
            "co-location features, step 2": lambda: colocation_features(x[:, 0], step=2),
            "model with coloc, step 2": lambda: with_c2.module(x)}
    times = {k: [] for k in runs}
    with torch.inference_mode():
        for f in runs.values():
            f()
        for _ in range(repeats):
            for k, f in runs.items():
                t0 = time.perf_counter()
                f()
                times[k].append(1000 * (time.perf_counter() - t0) / len(x))
    for k, v in times.items():
        print(f"{k:<30} {np.median(v):6.2f} ms/tile (min {np.min(v):.2f}, max {np.max(v):.2f}; {repeats} runs of 32)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("what", choices=("make", "report", "cost"))
    ap.add_argument("--per-image", type=int, default=24, help="crops per validation image for the thin set")
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--coarse", type=int, default=4)
    ap.add_argument("--previous", default="f1555ce", help="report: git revision of the weights read (before round 4)")
    ap.add_argument("--l2", type=float, default=1e-2)
    a = ap.parse_args(argv)
    if a.what == "make":
        make(a.cache, a.per_image)
    elif a.what == "cost":
        cost(a.cache)
    else:
        report(a.cache, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
