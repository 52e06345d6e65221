"""``focusq demo``: writes the demo data and scores it (:mod:`napari_focusq.demo`)."""
from __future__ import annotations

from napari_focusq.cli.parser import _bar


def cmd_demo(args) -> int:
    from napari_focusq.demo import run_demo

    return run_demo(args.out, model=args.model, progress=_bar())
