"""``focusq evaluate MODEL DATA...``: accuracy of a model on defocused held-out images."""
from __future__ import annotations

import json

#: Pixel sizes of the shared real images whose files do not record one (README of the data).
from napari_focusq.cli.train import _user_images
from napari_focusq.training.evaluate import iter_evaluate


def main_evaluate(args) -> int:
    """`focusq evaluate MODEL DATA...`: print accuracy on defocused held-out images."""
    from napari_focusq.progress import StderrBar, drive

    images, modality, pixel_sizes = _user_images(args, args.data)
    res = drive(iter_evaluate(args.model, images, modality=modality, seed=getattr(args, "seed", None) or 123,
                              pixel_sizes=pixel_sizes), StderrBar())
    if getattr(args, "out", None):
        from napari_focusq._atomic import write_text

        write_text(args.out, json.dumps(res, indent=1))
    m, v = res["metrics"], res["variance_of_laplacian"]
    print(f"{res['n_tiles']} tiles from {len(images)} images, defocused 0-6 µm")
    print(f"{'measure':<24}{'R²':>8}{'slope':>8}{'icpt':>8}{'MAE0-4':>8}{'Spearman':>10}{'AUC':>8}")
    print(f"{res['model']:<24}{m['r2']:>8.4f}{m['slope']:>8.3f}{m['intercept']:>8.3f}{m['mae_0_4']:>8.3f}"
          f"{m['spearman']:>10.4f}{m['auc']:>8.4f}")
    print(f"{'variance of Laplacian':<24}{'-':>8}{'-':>8}{'-':>8}{'-':>8}{v['spearman']:>10.4f}{v['auc']:>8.4f}")
    return 0
