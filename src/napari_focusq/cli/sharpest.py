"""``focusq sharpest``: the sharpest plane of a z-stack."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from napari_focusq.cli.parser import EXIT_OK, UsageError, _bar


def cmd_sharpest(args) -> int:
    from napari_focusq._atomic import write_text
    from napari_focusq.io.formats import open_image
    from napari_focusq.progress import drive
    from napari_focusq.scoring.focus import iter_sharpest_slice

    out = Path(args.out)
    if not out.parent.exists():
        raise UsageError(f"output folder {out.parent} does not exist")
    with open_image(args.stack) as src:
        gen = iter_sharpest_slice(src, args.measure)
        try:
            index, scores = drive(gen, _bar())
        finally:
            gen.close()
    if out.suffix.lower() == ".csv":
        lines = ["plane,score,sharpest"] + [f"{i},{s:.6g},{int(i == index)}" for i, s in enumerate(scores)]
        write_text(out, "\n".join(lines) + "\n")
    else:
        write_text(out, json.dumps({"input": str(args.stack), "index": index, "measure": args.measure,
                                    "scores": [float(s) if s == s and abs(s) != float("inf") else None
                                               for s in scores]}, indent=1))
    print(index)
    print(f"sharpest plane {index} of {len(scores)} ({args.measure}); scores in {out}", file=sys.stderr)
    return EXIT_OK
