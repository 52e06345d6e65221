"""Real defocus and thick sections: what the simulated benchmarks cannot show.

    .venv/bin/python benchmarks/bench_real.py [--model PATH ...] [--split test|val] [--previous REV]

1. The two real through-focus stacks in data/brightfield_through_focus/ (grey planes,
   pixel size not stated: read as given, tiles of 320 px, median per plane). Ordering only:
   Spearman of the reading against |plane - best| and the plane of the lowest reading.
   Targets: Spearman >= 0.98 each, lowest reading on the best plane +- 1.
2. Thick sections (layered.simulate_layered) from images held out of training (--split
   test: the default recipe's test images; val: its validation images, for decisions). A
   bulk defocused 1.5 / 2.5 / 4 µm under a faint layer of other tissue 0 or 0.75 µm from the
   focal plane, at optical-density weights 0.1-0.5, JPEG 85; and in-focus bulks under
   faint layers 1.5-4 µm away. The truth is the focal plane's distance to the specimen's
   best plane (the OD-weighted median depth). Targets: median reading >= 0.8 of the truth
   at every weight up to 0.35; in-focus layered tiles read <= 0.6 µm (median).
3. Simulated thin tiles of the same images, |z| uniform 0-6 µm (bench_accuracy's set): R²,
   slope, MAE(0-4 µm).

Baselines in the same run: variance of the Laplacian (ranking only) and the previous
shipped weights (``--previous REV``, read from git at that revision; default 922a9a7,
the weights before thick-section training).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from napari_focusq.config import TILE_PX
from napari_focusq.models import load_model
from napari_focusq.optics.layered import Layer, simulate_layered
from napari_focusq.progress import drive
from napari_focusq.scoring.focus import variance_of_laplacian_batch
from napari_focusq.scoring.tissue import estimate_white_level, tissue_fraction
from napari_focusq.training.augment import _jpeg
from napari_focusq.training.config import TrainConfig
from napari_focusq.training.data import iter_dataset, load_training_image
from napari_focusq.training.metrics import regression_metrics
from napari_focusq.training.recipes import (
    DEFAULT_TEST,
    DEFAULT_VAL,
    FLUORESCENCE_TEST,
    FLUORESCENCE_VAL,
    data_image,
    project_data_dir,
)

STACKS = {"smear_through_focus_19planes.tif": 9, "urjc_tissue_S1_17planes.tif": 9}
MAIN_Z = (1.5, 2.5, 4.0)
FAINT_OFFSET = (0.0, 0.75)
WEIGHTS = (0.1, 0.2, 0.35, 0.5)
PREVIOUS = "922a9a7"


# ----------------------------------------------------------------- through-focus stacks
def _tiles_of(plane: np.ndarray) -> np.ndarray:
    """A grey plane as RGB tiles of TILE_PX (reflect-padded up to one tile where smaller)."""
    p = np.pad(plane, [(0, max(0, TILE_PX - plane.shape[0])), (0, max(0, TILE_PX - plane.shape[1]))], mode="reflect")
    ny, nx = p.shape[0] // TILE_PX, p.shape[1] // TILE_PX
    oy, ox = (p.shape[0] - ny * TILE_PX) // 2, (p.shape[1] - nx * TILE_PX) // 2
    t = [p[oy + i * TILE_PX:oy + (i + 1) * TILE_PX, ox + j * TILE_PX:ox + (j + 1) * TILE_PX]
         for i in range(ny) for j in range(nx)]
    return np.repeat(np.stack(t)[..., None], 3, axis=-1)


def through_focus(readers: dict) -> dict:
    import tifffile
    from scipy.stats import spearmanr

    out = {}
    for name, best in STACKS.items():
        stack = tifffile.imread(project_data_dir() / "brightfield_through_focus" / name)
        dist = np.abs(np.arange(len(stack)) - best)
        tiles = [_tiles_of(p) for p in stack]
        res = {}
        for label, read in readers.items():
            r = np.array([float(np.median(read(t))) for t in tiles])
            res[label] = {"spearman": float(spearmanr(r, dist).statistic), "argmin": int(np.argmin(r)),
                          "readings": [round(float(v), 3) for v in r]}
        out[name] = {"best": best, **res}
    return out


# ----------------------------------------------------------------------- thick sections
def _crops(img, n, rng, modality):
    white = estimate_white_level(img) if modality == "brightfield" else None
    min_tissue = 0.5 if modality == "brightfield" else 0.1
    H, W = img.shape[:2]
    out, tries = [], 0
    while len(out) < n and tries < 200 * n:
        tries += 1
        y, x = rng.integers(0, H - TILE_PX + 1), rng.integers(0, W - TILE_PX + 1)
        c = img[y:y + TILE_PX, x:x + TILE_PX]
        # As the training sampler: past 100 tries a tile, take what comes (small, sparse images).
        if tries > 100 * n or tissue_fraction(c, modality, white_level=white) >= min_tissue:
            out.append(np.array(c))
    return out


def _finish(img, modality, rng):
    """What a scan adds: JPEG 85 (brightfield); photon noise at 2000 photons at the bright end."""
    if modality == "brightfield":
        return _jpeg(img, 85)
    scale = 2000.0 / max(float(np.percentile(img, 99.5)), 1e-6)
    return (rng.poisson(np.clip(img * scale, 0, None)) / scale).astype(np.float32)


def layered_set(paths, per_image: int = 12, seed: int = 2027, modality: str = "brightfield"):
    """(tiles, truth, weight, kind) of thick-section cases from the images at ``paths``; a bulk
    crop of one image, its faint layer a crop of the next image (of another tissue);
    fluorescence: the faint layer first scaled to the bulk's bright end."""
    rng = np.random.default_rng(seed)
    crops = [_crops(load_training_image(p, modality), per_image, rng, modality) for p in paths]
    X, T, Wt, K = [], [], [], []
    for i, bulks in enumerate(crops):
        others = crops[(i + 1) % len(crops)]
        for j, bulk in enumerate(bulks):
            faint = others[j % len(others)]
            if modality == "fluorescence":
                faint = faint * np.float32(np.percentile(bulk, 99.5) / max(np.percentile(faint, 99.5), 1e-6))
            for w in WEIGHTS:
                cases = [(z, off, "defocused") for z in MAIN_Z for off in FAINT_OFFSET]
                # In focus: the bulk on the focal plane, the faint layer 1.5 or 4 µm off.
                cases += [(0.0, far, "in focus") for far in (1.5, 4.0)]
                for z, off, kind in cases:
                    # Bulk at depth z below the focal plane (0); the faint layer at `off`.
                    img, truth = simulate_layered([Layer(bulk, z), Layer(faint, off, w)], 0.0, pixel_size_um=0.5,
                                                  modality=modality)
                    X.append(_finish(img, modality, rng)), T.append(truth), Wt.append(w), K.append(kind)
    return np.stack(X), np.array(T), np.array(Wt), np.array(K)


def layered_report(readings: np.ndarray, T, Wt, K) -> dict:
    rows = {}
    for w in WEIGHTS:
        d = (K == "defocused") & (Wt == w) & (T > 0.5)
        f = (K == "in focus") & (Wt == w) & (T == 0)
        rows[f"{w:g}"] = {"ratio_median": float(np.median(readings[d] / T[d])) if d.any() else float("nan"),
                          "ratio_p10": float(np.percentile(readings[d] / T[d], 10)) if d.any() else float("nan"),
                          "in_focus_median_um": float(np.median(readings[f])) if f.any() else float("nan"),
                          "n": int(d.sum() + f.sum())}
    return rows


def _print_layered(models, readers, X, T, Wt, K) -> dict:
    out = {}
    print(f"{'model':<28}{'weight':>7}{'read/true med':>15}{'p10':>7}{'in-focus med µm':>17}")
    for k in models:
        rep = out[k] = layered_report(readers[k](X), T, Wt, K)
        for w, r in rep.items():
            print(f"{k:<28}{w:>7}{r['ratio_median']:>15.2f}{r['ratio_p10']:>7.2f}{r['in_focus_median_um']:>17.2f}")
    return out


# ------------------------------------------------------------------------------- main
def previous_weights(rev: str, tmp: Path, name: str = "fast") -> Path | None:
    """The shipped weights ``name`` at git revision ``rev`` (None without git or that revision)."""
    root = Path(__file__).resolve().parents[1]
    try:
        for ext in (".safetensors", ".json"):
            data = subprocess.run(["git", "-C", str(root), "show", f"{rev}:src/napari_focusq/weights/{name}{ext}"],
                                  capture_output=True, check=True).stdout
            (tmp / f"{name}-{rev}{ext}").write_bytes(data)
    except (OSError, subprocess.CalledProcessError):
        return None
    path = tmp / f"{name}-{rev}.safetensors"
    from napari_focusq.models.checkpoint import ModelFileError, restamp_checkpoint

    try:
        # The project's own history is trusted; older files' digests covered the tensors only.
        restamp_checkpoint(path)
    except ModelFileError:
        pass  # already in the current format
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="model file or name (repeatable; default: fast)")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--previous", default=PREVIOUS, help="git revision of the previous weights ('' = none)")
    ap.add_argument("--per-image", type=int, default=12, help="bulk crops per image for the layered set")
    ap.add_argument("--thin-per-image", type=int, default=150)
    ap.add_argument("--fluorescence", action="append", metavar="MODEL",
                    help="also the fluorescence layered set, read by MODEL (repeatable; e.g. fast-fluorescence)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="focusq-bench-real-"))
    models = {}
    for m in a.model or ["fast"]:
        fm = load_model(m)
        models[f"{fm.label}" if m == "fast" else Path(m).stem] = fm
    if a.previous:
        prev = previous_weights(a.previous, tmp)
        if prev is None:
            print(f"(previous weights at {a.previous} not found: git or that revision missing)")
        else:
            models[f"previous ({a.previous})"] = load_model(prev)

    def reader(fm):
        return lambda t: np.concatenate([fm.predict(t[i:i + 128]) for i in range(0, len(t), 128)])

    readers = {k: reader(fm) for k, fm in models.items()}
    readers["variance of Laplacian"] = lambda t: -np.log(variance_of_laplacian_batch(t) + 1e-9)
    names = DEFAULT_TEST if a.split == "test" else DEFAULT_VAL
    res = {"split": a.split, "images": list(names)}

    print("== real through-focus stacks (ordering; targets: Spearman >= 0.98, lowest reading on best +- 1) ==")
    res["through_focus"] = tf = through_focus(readers)
    print(f"{'reader':<28}" + "".join(f"{n[:22]:>26}" for n in STACKS))
    for k in readers:
        print(f"{k:<28}" + "".join(f"{'ρ %.3f  min@%d (best %d)' % (tf[n][k]['spearman'], tf[n][k]['argmin'], b):>26}"
                                   for n, b in STACKS.items()))

    print(f"\n== thick sections from {', '.join(names)} ({a.split}; targets: median reading/truth >= 0.8 "
          "for weight <= 0.35, in-focus <= 0.6 µm) ==")
    folder = project_data_dir() / "brightfield"
    X, T, Wt, K = layered_set([folder / n for n in names], a.per_image)
    res["layered"] = _print_layered(models, readers, X, T, Wt, K)
    if a.fluorescence:
        fnames = FLUORESCENCE_TEST if a.split == "test" else FLUORESCENCE_VAL
        paths = [data_image(n, "fluorescence") for n in fnames]
        paths = [p for p in paths if p.exists()]
        print(f"\n== fluorescence thick sections from {', '.join(p.name for p in paths)} ({a.split}; 2000 photons) ==")
        fl = {Path(m).stem: load_model(m) for m in a.fluorescence}
        if a.previous:
            prev = previous_weights(a.previous, tmp, "fast-fluorescence")
            if prev is not None:
                fl[f"previous ({a.previous})"] = load_model(prev)
        Xf, Tf, Wf, Kf = layered_set(paths, a.per_image, modality="fluorescence")
        res["layered_fluorescence"] = _print_layered(fl, {k: reader(m) for k, m in fl.items()}, Xf, Tf, Wf, Kf)

    print("\n== simulated thin tiles of the same images, |z| 0-6 µm (targets: R² >= 0.99, slope 0.95-1.05, "
          "MAE0-4 <= 0.2 µm) ==")
    cfg = TrainConfig(images=[str(folder / n) for n in names], z_max_um=6.0, jpeg=(70, 95))
    Xs, Zs, _ = drive(iter_dataset(cfg.images, a.thin_per_image, cfg, 2026, "test data"))
    res["simulated"] = {}
    print(f"{'model':<28}{'R²':>8}{'slope':>8}{'MAE0-4':>8}{'Spearman':>10}{'AUC':>8}")
    for k in models:
        m = res["simulated"][k] = regression_metrics(readers[k](Xs), Zs)
        print(f"{k:<28}{m['r2']:>8.4f}{m['slope']:>8.3f}{m['mae_0_4']:>8.3f}{m['spearman']:>10.4f}{m['auc']:>8.4f}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
