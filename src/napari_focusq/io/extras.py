"""Optional readers: import them with a message that names the install that adds them."""
from __future__ import annotations

import importlib
from pathlib import Path

from napari_focusq.errors import ImageReadError, MissingExtraError

#: extra name -> what it adds (for messages and the README)
EXTRAS = {
    "openslide": "OpenSlide (MRXS, SCN, BIF, VMS/VMU, Philips TIFF, DICOM, generic tiled TIFF)",
    "dicom": "wsidicom (DICOM WSI)",
    "czi": "pylibCZIrw (Zeiss CZI)",
    "slideio": "slideio (Olympus/Evident VSI)",
    "inception": "torchvision (the inception model preset)",
}


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise :class:`MissingExtraError` naming ``napari-focusq[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # a broken install of the package itself (e.g. openslide without its library) says so too
        raise MissingExtraError(extra, module, what) from exc


def require_for_file(path: Path, module: str, extra: str, fmt: str):
    """:func:`require` for opening a file: failures are :class:`ImageReadError` naming the file."""
    try:
        return require(module, extra, f"reading {fmt}")
    except MissingExtraError as exc:
        raise ImageReadError(path, str(exc)) from exc
