"""What a user names as inputs: files, folders, globs and list files, expanded to the slides.

``focusq batch`` and the review queue's "add slides" take the same specs; a folder
contributes the images :func:`napari_focusq.io.formats.find_images` finds in it.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

#: A file argument with one of these suffixes is a list of inputs, one per line.
LIST_SUFFIXES = {".txt", ".lst", ".list"}


def _has_magic(s: str) -> bool:
    return glob.has_magic(s)


def _list_file(path: Path) -> list[str]:
    items = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        line = line.split(" #", 1)[0].strip()  # a trailing comment needs a space before "#"
        if line:
            p = Path(line).expanduser()
            items.append(str(p if p.is_absolute() else path.parent / p))
    return items


def expand_inputs(specs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Slides named by globs, list files (one path per line, ``#`` comments), folders or paths.

    Folders contribute the slide files under them (recursively); relative paths in a list
    file are relative to the list file's folder; ``**`` in a glob spans folders.

    Returns
    -------
    found, missing
        Existing files in order without duplicates, and literal paths that do not exist
        (reported as failed inputs, so a typo in a list is not silently lost).
    """
    found: dict[str, Path] = {}
    missing: dict[str, Path] = {}

    def add(p: Path) -> None:
        key = os.path.realpath(p)  # realpath, unlike resolve(), never raises on a link loop
        found.setdefault(key, Path(key))

    def visit(spec: str, from_list: bool) -> None:
        p = Path(spec).expanduser()
        if p.is_dir():  # its images (io/formats.py's list), a DICOM slide's folder as one
            from napari_focusq.io.formats import find_images

            for f in find_images(p, recursive=True):
                add(f)
        elif p.is_file():
            if p.suffix.lower() in LIST_SUFFIXES and not from_list:
                for item in _list_file(p):
                    visit(item, True)
            else:
                add(p)
        elif os.path.lexists(p) and not p.is_symlink():  # a FIFO, socket or device: let the reader say so
            add(p)
        elif _has_magic(spec):
            for m in sorted(glob.glob(str(p), recursive=True)):
                if Path(m).is_file():
                    add(Path(m))
        else:
            missing.setdefault(str(p.absolute()), p.absolute())

    for s in specs:
        visit(str(s), False)
    return list(found.values()), list(missing.values())
