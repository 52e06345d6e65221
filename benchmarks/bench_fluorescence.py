"""Fluorescence benchmark: accuracy on held-out images, tilted-specimen best plane, certainty, exposure.

    .venv/bin/python benchmarks/bench_fluorescence.py [--model PATH] [--per-image 100] [--pixel-size NAME=UM]

Test images are the fluorescence recipe's FLUORESCENCE_TEST (never trained on, nor used
for validation): the sharpest plane of cells3d (when a user has put it in data/external)
and the confocal mitochondria of oiffile's test file (data/README.md). They are the
*development* test set: fluorescence rounds 6-9 were steered by them. The clean held-out
figure is benchmarks/bench_frozen.py, run once per round.
The BBBC022 Cell Painting crop is at its camera's ~0.656 µm/px, coarser than the 0.5 µm
working grid: its z = 0 is not sharp there (DESIGN §3), so it is no truth for µm and is
left out of the targets; it gets a ranking check only (does the reading grow with z).
Targets (issue "Fluorescence and z-stacks"): Spearman >= 0.98 and AUC(z <= 0.5 vs
z >= 1 µm) >= 0.99 on tiles defocused 0-6 µm; best plane exact on >= 95 % of tissue
tiles of a tilted specimen; the 10 % least certain tiles carry >= 2x the MAE of the rest.
Accuracy figures are means over three seeds of tiles with 95 % bootstrap intervals.
Also printed: the error at exposures from 100 photons to noise-free (processed data).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from napari_focusq.training.config import TrainConfig
from napari_focusq.training.data import load_training_image
from napari_focusq.training.recipes import FLUORESCENCE_TEST, data_image

sys.path.insert(0, str(Path(__file__).parent))
from _seeds import SEEDS, interval_rows, print_table, seeded_tiles  # noqa: E402

CROP = "bbbc022_IXMtest_A02_s9_crop.tif"
# The crop's camera pixel: ImageXpress 20x frames, 696 px wide with 2x2 binning, 0.656 µm
# (a published summary of Cell Painting on that instrument; the frame size and U2OS nuclei of
# ~18 µm agree). Scoring it at a finer guess (0.4, as before) would shrink its own blur
# and pass the soft image off as in-focus truth.
PIXEL_UM = {"cells3d_nuclei_zstack.tif": 0.26, CROP: 0.656}


def accuracy(fm, images, per_image, pixel_um=None, *, ranking_only=False):
    from napari_focusq.scoring.certainty import (
        certainty_report,
        format_certainty_report,
        model_certainty,
        noise_ratio,
    )
    from napari_focusq.scoring.focus import variance_of_laplacian_batch

    cfg = TrainConfig(images=images, modality="fluorescence", z_max_um=6.0, min_tissue=0.1,
                      pixel_sizes=pixel_um or PIXEL_UM)
    X, Z, S, K = seeded_tiles(images, per_image, cfg)
    pred, spread = [], []
    for i in range(0, len(X), 128):
        p, s = fm.predict_with_spread(X[i:i + 128])
        pred.append(p)
        spread.append(s)
    pred, spread = np.concatenate(pred), np.concatenate(spread)
    score_vol = -np.log(variance_of_laplacian_batch(X) + 1e-9)
    rows = {}
    subsets = [("model (all)", np.ones(len(Z), bool))] + [
        (f"model ({Path(images[k]).name[:24]})", S == k) for k in range(len(images))]
    for name, sel in (subsets if len(images) > 1 else subsets[:1]):
        rows[name] = interval_rows(pred[sel], Z[sel], K[sel], ranking_only=ranking_only)
        rows["  variance of Laplacian" + name[5:]] = interval_rows(score_vol[sel], Z[sel], K[sel], ranking_only=True)
    title = (f"{'ranking check' if ranking_only else 'accuracy'}: {len(Z)} tiles ({len(Z) // len(SEEDS)} per seed) "
             f"from {', '.join(Path(p).name for p in images)}, |z| 0-6 µm")
    print_table(title, rows, "mean over seeds [95 % bootstrap interval]")
    if ranking_only:
        return rows["model (all)"], None
    calib = model_certainty(fm)
    rep = certainty_report(pred, Z, spread, noise_ratio(X, "fluorescence"), calib, S)
    print(f"\n{format_certainty_report(rep, calib)}")
    return rows["model (all)"], rep["ratio"]


def tilted(fm, images, dz_list=(1.0, 0.5), pixel_um=None):
    from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM
    from napari_focusq.io.arrays import ArraySource
    from napari_focusq.scoring.focus import variance_of_laplacian
    from napari_focusq.scoring.pipeline import score_slide
    from napari_focusq.scoring.zstack import all_in_focus, tilted_stack

    print("\n== tilted specimen: in-focus plane k0(c) = 1 + c per tile column, 9 planes, 4 x 6 tiles ==")
    results = []
    for p in images:
        img = load_training_image(p, "fluorescence", pixel_um or PIXEL_UM)  # at 0.5 µm/px, sharpest plane of a stack
        rows, cols = 4, 6
        H, W = rows * TILE_PX, cols * TILE_PX
        big = np.pad(img, ((0, max(0, H - img.shape[0])), (0, max(0, W - img.shape[1]))), mode="symmetric")[:H, :W]
        k0 = 1 + np.arange(cols)
        for dz in dz_list:
            stack = tilted_stack(big, pixel_size_um=WORKING_PIXEL_UM, tile_px=TILE_PX, focus_plane=k0, n_planes=9,
                                 dz_um=dz)
            t = time.perf_counter()
            fmap = score_slide(ArraySource(stack, WORKING_PIXEL_UM, stack=True), modality="fluorescence",
                               model=fm, slice="per-tile")
            best = fmap.extra["best_plane"]
            scored = best >= 0
            truth = np.broadcast_to(k0, best.shape)
            exact = float((best == truth)[scored].mean())
            within1 = float((np.abs(best - truth) <= 1)[scored].mean())
            comp = all_in_focus(stack, fmap)
            vol_c = variance_of_laplacian(comp.astype(np.float32))
            vol_p = max(variance_of_laplacian(stack[k].astype(np.float32)) for k in range(len(stack)))
            print(f"{Path(p).name[:30]:<31} dz {dz:.1f} µm: exact {100 * exact:5.1f} % of {int(scored.sum())} tiles "
                  f"(within one plane {100 * within1:.1f} %), {time.perf_counter() - t:.1f} s; "
                  f"all-in-focus VoL {vol_c:.1f} vs best single plane {vol_p:.1f}")
            results.append(exact)
    return results


def exposure(fm, images, pixel_um=None, zs=(0.0, 1.0, 2.0, 3.0, 4.0, 6.0)):
    """MAE against the simulated z at exposures from dim to cleaner than any camera (denoised,
    deconvolved or heavily averaged data): one tile per image, photons at its bright end."""
    from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM
    from napari_focusq.optics.psf import simulate_defocus

    levels = (100, 1000, 10000, 100000, None)
    print("\n== exposure: MAE (µm) over z " + ", ".join(f"{z:g}" for z in zs) + " µm, one tile per image ==")
    print(f"{'image':<31}" + "".join(f"{'noise-free' if p is None else f'{p:g} ph':>12}" for p in levels))
    for path in images:
        img = load_training_image(path, "fluorescence", pixel_um or PIXEL_UM)
        pad = ((0, max(0, TILE_PX - img.shape[0])), (0, max(0, TILE_PX - img.shape[1])))
        tile = np.pad(img, pad, mode="reflect")[:TILE_PX, :TILE_PX]
        clean = np.stack([simulate_defocus(tile, z, pixel_size_um=WORKING_PIXEL_UM, modality="fluorescence")
                          for z in zs])
        row = []
        for photons in levels:
            x = clean
            if photons:
                scale = photons / np.percentile(clean, 99.5)
                x = np.random.default_rng(0).poisson(np.clip(clean * scale, 0, None)) / scale
            row.append(float(np.abs(fm.predict(x.astype(np.float32)) - np.asarray(zs)).mean()))
        print(f"{Path(path).name[:30]:<31}" + "".join(f"{m:>12.2f}" for m in row))


CELLS3D_MISSING = ("cells3d_nuclei_zstack.tif is not in the repository (its licence does not allow redistribution); "
                   "put it at data/external/cells3d_nuclei_zstack.tif to include it "
                   "(tifffile.imwrite(path, skimage.data.cells3d()[:, 1])) - skipped")


def cells3d_auto():
    from napari_focusq.scoring.pipeline import score_slide

    p = data_image("cells3d_nuclei_zstack.tif", "fluorescence")
    if not p.is_file():
        print(f"\n== {CELLS3D_MISSING} ==")
        return
    fmap = score_slide(p, pixel_size_um=0.26)
    print(f"\n== cells3d (60 planes, xy 0.26 µm): slice='auto' picks plane {fmap.extra['z']} (expected ~34); "
          f"modality {fmap.modality}, model {fmap.model} ==")


def main():
    from napari_focusq.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--per-image", type=int, default=100, help="tiles per image and seed (3 seeds)")
    ap.add_argument("--pixel-size", action="append", default=[], metavar="NAME=UM",
                    help="pixel size (µm) of a test image, overriding the recipe's; repeatable")
    args = ap.parse_args()
    pixel_um = dict(PIXEL_UM)
    for item in args.pixel_size:
        name, _, um = item.partition("=")
        pixel_um[name] = float(um)
    fm = load_model(args.model, modality="fluorescence")
    print(f"model {fm.label} ({fm.modality}); trained on {fm.meta.get('training', {}).get('train_images')}")
    images = [str(data_image(n, "fluorescence")) for n in FLUORESCENCE_TEST if n != CROP]
    if not all(Path(p).is_file() for p in images):
        print(CELLS3D_MISSING)
        images = [p for p in images if Path(p).is_file()]
    m, ratio = accuracy(fm, images, args.per_image, pixel_um=pixel_um)
    crop, _ = accuracy(fm, [str(data_image(CROP, "fluorescence"))], args.per_image, pixel_um=pixel_um,
                       ranking_only=True)
    print(f"(the Cell Painting crop at {pixel_um[CROP]} µm/px is coarser than the working grid: ranking only, "
          "not in the targets)")
    ex = tilted(fm, images, pixel_um=pixel_um)
    exposure(fm, images, pixel_um=pixel_um)
    cells3d_auto()
    sp, auc = m["spearman"]["mean"], m["auc"]["mean"]
    print("\n== targets (development test set, without the crop) ==")
    print(f"Spearman {sp:.4f} (>= 0.98: {'yes' if sp >= 0.98 else 'NO'}), "
          f"AUC {auc:.4f} (>= 0.99: {'yes' if auc >= 0.99 else 'NO'}), "
          f"tilted best plane exact min {100 * min(ex):.1f} % (>= 95 %: {'yes' if min(ex) >= 0.95 else 'NO'}), "
          f"certainty ratio {ratio:.2f} (>= 2: {'yes' if ratio >= 2 else 'NO'}); "
          f"crop ranking check: Spearman {crop['spearman']['mean']:.4f}, AUC {crop['auc']['mean']:.4f}")


if __name__ == "__main__":
    main()
