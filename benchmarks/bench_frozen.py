"""Accuracy on the frozen test set: images that no recipe, benchmark or decision has seen.

Run it ONCE per round, at the end, after the round's recipes and weights are final; its
figures go into the README's accuracy table and decide nothing in that round (decisions
use validation; DESIGN-NOTES "Evidence"). The set is data/frozen_test (napari_focusq.training.heldout):
the script refuses to run if its files differ from the frozen digest.

Tiles are defocused 0-6 µm with the optical model, as in bench_accuracy.py (brightfield:
stain variation, noise, JPEG 70-95; fluorescence: Poisson noise), drawn for three seeds;
every figure is the mean over the seeds with a 95 % bootstrap interval over tiles.

    .venv/bin/python benchmarks/bench_frozen.py [--per-image 300] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _seeds import SEEDS, interval_rows, predict, print_table, seeded_tiles  # noqa: E402

from napari_focusq.models import load_model  # noqa: E402
from napari_focusq.scoring.focus import variance_of_laplacian_batch  # noqa: E402
from napari_focusq.training.config import TrainConfig  # noqa: E402
from napari_focusq.training.heldout import check_frozen_set, frozen_images, frozen_pixel_sizes  # noqa: E402


def run(modality: str, per_image: int) -> dict:
    images = [str(p) for p in frozen_images(modality)]
    if modality == "brightfield":
        cfg = TrainConfig(images=images, z_max_um=6.0, jpeg=(70, 95), pixel_sizes=frozen_pixel_sizes())
    else:
        cfg = TrainConfig(images=images, modality="fluorescence", z_max_um=6.0, min_tissue=0.1,
                          pixel_sizes=frozen_pixel_sizes())
    X, Z, S, K = seeded_tiles(images, per_image, cfg)
    model = load_model("default", modality=modality)
    pred = predict(model, X)
    rows = {model.label: interval_rows(pred, Z, K),
            "variance of Laplacian": interval_rows(-np.log(variance_of_laplacian_batch(X) + 1e-9), Z, K,
                                                   ranking_only=True)}
    names = ", ".join(Path(p).name for p in images)
    print_table(f"frozen test, {modality}: {len(Z)} tiles ({len(Z) // len(SEEDS)} per seed, seeds "
                f"{', '.join(map(str, SEEDS))}) from {len(images)} image(s), |z| 0-6 µm", rows, f"images: {names}")
    return {"images": [Path(p).name for p in images], "tiles": int(len(Z)), "seeds": list(SEEDS), "figures": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-image", type=int, default=300, help="brightfield tiles per image and seed")
    ap.add_argument("--per-image-fluorescence", type=int, default=30,
                    help="fluorescence tiles per image and seed (eleven small fields: 330 a seed)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    digest = check_frozen_set()
    print(f"frozen test set data/frozen_test, digest {digest[:16]}… (read once per round, at its end)")
    res = {"digest": digest, "brightfield": run("brightfield", a.per_image),
           "fluorescence": run("fluorescence", a.per_image_fluorescence)}
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
