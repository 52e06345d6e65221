"""``python -m napari_focusq.models.restamp FILE...``: record a new digest in model files.

The digest covers the tensors and the metadata that shapes the reading (checkpoint.py).
Run it on a file you trust after editing its metadata by hand (e.g. a refitted
calibration in the .json beside it), or on a file from a focusq whose digest covered the
tensors only. ``make restamp-weights`` does it for the shipped weights.
"""
from __future__ import annotations

import sys

from napari_focusq.models.checkpoint import ModelFileError, restamp_checkpoint


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or any(a.startswith("-") for a in args):
        print("usage: python -m napari_focusq.models.restamp MODEL.safetensors...", file=sys.stderr)
        return 2
    rc = 0
    for a in args:
        try:
            print(f"re-stamped {restamp_checkpoint(a)}")
        except (ModelFileError, OSError) as exc:
            print(f"restamp: {exc}", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
