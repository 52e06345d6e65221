"""Exceptions the package raises for bad input, so callers can catch one family."""
from __future__ import annotations

import os


class FocusQError(Exception):
    """Base class of the errors napari-focusq raises on purpose."""


class ImageReadError(FocusQError, ValueError):
    """An input image cannot be opened or read; the message starts with its path.

    Parameters
    ----------
    path
        The file that failed.
    reason
        What is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
