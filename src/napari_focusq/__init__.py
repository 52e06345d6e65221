"""napari-focusq: how far out of focus each tile of a slide or z-stack is, in µm.

The public API is importable from here without importing Qt or napari; heavy
modules (torch, tifffile) load on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "score_image": "scoring.pipeline",
    "score_slide": "scoring.pipeline",
    "sharpest_slice": "scoring.focus",
    "simulate_defocus": "optics.psf",
    "load_model": "models",
    "FocusModel": "models",
    "FocusMap": "scoring.focusmap",
    "Optics": "config",
    "ScoreConfig": "config",
    "Progress": "progress",
    "open_image": "io.formats",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        mod = importlib.import_module(f".{_API[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
