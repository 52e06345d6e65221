"""Lay out the inception recipe's images for a GPU machine without imagecodecs or zarr.

    .venv/bin/python benchmarks/prepare_gpu_data.py .gpu_data

The GPU machines have PyTorch, tifffile, Pillow and scikit-image but neither imagecodecs
(which tifffile needs for the JPEG-compressed SVS slide and Hamamatsu OME-TIFF) nor zarr
(which focusq's TIFF reader uses for every TIFF); their wheels would take the travelling
tree over 64 MiB. So this writes the recipe's training and validation TIFFs once,
losslessly, as PNGs, states their pixel sizes in ``pixel_sizes.json`` beside them (which
the inception trainer reads), and links every other image of data/brightfield/. Point
``FOCUSQ_DATA`` at the folder there and the recipe, its split by source image included,
is unchanged (test and excluded images are left out of the folder: renamed, they would
be trained on). Ignore the folder in git (``echo /.gpu_data/ >> .git/info/exclude`` in
the repository that calls the device tool) and carry it with the run.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def needs_rewrite(path: Path) -> bool:
    """A TIFF (focusq reads those through zarr, and JPEG ones through imagecodecs)."""
    return path.suffix.lower() in (".tif", ".tiff", ".svs")


def main(argv=None) -> int:
    from napari_focusq.io.formats import open_image

    out = Path((argv or sys.argv[1:] or [".gpu_data"])[0]).resolve()
    src_dir = ROOT / "data" / "brightfield"
    dst = out / "brightfield"
    dst.mkdir(parents=True, exist_ok=True)
    from napari_focusq.training.recipes import DEFAULT_EXCLUDE, DEFAULT_TEST

    pixel_sizes = {}
    for p in sorted(src_dir.iterdir()):
        # Only what the recipe trains and validates on: a renamed test image would be trained on.
        if not p.is_file() or p.name in DEFAULT_TEST + DEFAULT_EXCLUDE:
            continue
        if needs_rewrite(p):
            from PIL import Image

            with open_image(p) as src:
                img, px = src.read_plane(), src.pixel_size_um
            target = dst / (p.name.split(".")[0] + ".png")
            Image.fromarray(img[..., :3]).save(target, optimize=False, compress_level=6)
            pixel_sizes[target.name] = px
            print(f"{p.name}: written losslessly as {target.name} ({px} µm/px, {target.stat().st_size / 2**20:.1f} MiB)")
        else:
            link = dst / p.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.relpath(p, dst))
    (dst / "pixel_sizes.json").write_text(json.dumps(pixel_sizes, indent=1))
    print(f"wrote {dst}; on the GPU machine: export FOCUSQ_DATA=$PWD/{out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
