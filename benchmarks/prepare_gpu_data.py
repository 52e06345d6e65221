"""Lay out the inception recipe's images for a GPU machine without imagecodecs.

    .venv/bin/python benchmarks/prepare_gpu_data.py .gpu_data

The GPU machines have PyTorch, tifffile, Pillow and scikit-image but not imagecodecs,
which tifffile needs for JPEG-compressed TIFFs (the SVS slide and the Hamamatsu OME-TIFF
in data/brightfield/). Its wheel (28 MB) would take the travelling tree over 64 MiB, so
this writes those of the recipe's training and validation images once, losslessly, as zlib OME-TIFFs with their pixel size (zlib
decodes without imagecodecs), and links every other file of data/brightfield/. Point
``FOCUSQ_DATA`` at the folder there and the recipe (its split by source image too) is
unchanged. Ignore the folder in git (``echo /.gpu_data/ >> .git/info/exclude`` in the
repository that calls the device tool) and carry it with the run.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def needs_codecs(path: Path) -> bool:
    """A TIFF whose first page is compressed with anything but zlib/none (tifffile needs imagecodecs)."""
    import tifffile

    if path.suffix.lower() not in (".tif", ".tiff", ".svs"):
        return False
    with tifffile.TiffFile(path) as t:
        return int(t.pages[0].compression) not in (1, 8, 32946)


def main(argv=None) -> int:
    import tifffile

    from napari_focusq.io import open_image

    out = Path((argv or sys.argv[1:] or [".gpu_data"])[0]).resolve()
    src_dir = ROOT / "data" / "brightfield"
    dst = out / "brightfield"
    dst.mkdir(parents=True, exist_ok=True)
    from napari_focusq.training import DEFAULT_EXCLUDE, DEFAULT_TEST

    for p in sorted(src_dir.iterdir()):
        # Only what the recipe trains and validates on: a renamed test image would be trained on.
        if not p.is_file() or p.name in DEFAULT_TEST + DEFAULT_EXCLUDE:
            continue
        if needs_codecs(p):
            with open_image(p) as src:
                img, px = src.read_plane(), src.pixel_size_um
            target = dst / (p.name.split(".")[0] + ".zlib.ome.tif")
            tifffile.imwrite(target, img, compression="zlib", photometric="rgb",
                             metadata={"axes": "YXS", "PhysicalSizeX": px, "PhysicalSizeY": px})
            print(f"{p.name}: re-encoded losslessly as {target.name} ({px} µm/px, "
                  f"{target.stat().st_size / 2**20:.1f} MiB)")
        else:
            link = dst / p.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.relpath(p, dst))
    print(f"wrote {dst}; on the GPU machine: export FOCUSQ_DATA=$PWD/{out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
