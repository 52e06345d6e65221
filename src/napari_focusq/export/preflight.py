"""Checks of an output folder before the first input is scored.

A run of many slides must not score the first one and only then find that it cannot
write: a read-only folder, a ``results.tsv`` that is a folder or another program's file,
a path that is a file. Each problem is reported with the folder (or file) named.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from napari_focusq.errors import OutputFolderError


def check_output_folder(out, results_name: str = "results.tsv") -> Path:
    """Create ``out`` if needed and prove that a run can write there; return it.

    Raises
    ------
    OutputFolderError
        ``out`` is a file, cannot be created or written, or holds a ``results.tsv``
        that is not a file or not a focusq results table.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output folder {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    try:  # what every output does: a temporary file beside the target, written, then removed
        fd, probe = tempfile.mkstemp(prefix=".focusq-probe.", dir=out)
        try:
            os.write(fd, b"focusq")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputFolderError(f"cannot write in output folder {out}: {exc.strerror or exc}") from None
    tsv = out / results_name
    if os.path.lexists(tsv):
        if not tsv.is_file():
            raise OutputFolderError(f"{tsv} is not a file (a folder or a broken link); "
                                    "move it away or choose another output folder")
        from napari_focusq.export.results import RESULTS_COLUMNS, _is_older_header

        try:
            with open(tsv, "rb") as fh:
                first = fh.readline().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OutputFolderError(f"{tsv}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
        header = first.rstrip("\n").split("\t")
        if tuple(header) != RESULTS_COLUMNS and not _is_older_header(header):
            raise OutputFolderError(f"{tsv} is not a focusq results table (it starts {first[:40]!r}); "
                                    "move it away or choose another output folder")
        if not os.access(tsv, os.W_OK):
            raise OutputFolderError(f"{tsv} is read-only; focusq appends a row per input to it")
    return out


def check_model_out(out) -> Path:
    """Refuse, before training, a model path that cannot be written: one under a file, or
    a folder that cannot be created or written (it used to fail after the training)."""
    out = Path(out)
    folder = out.parent if out.suffix == ".safetensors" else out
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise OutputFolderError(f"cannot write the model to {out}: {p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputFolderError(f"cannot write the model to {out}: folder {p} is not writable")
            break
    if out.is_dir() and out.suffix == ".safetensors":
        raise OutputFolderError(f"cannot write the model to {out}: it is a folder")
    return out
