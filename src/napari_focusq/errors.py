"""Every exception the package raises on purpose, all deriving from :class:`FocusQError`
(grouped below by the module that raises them).

Each keeps the standard base class callers relied on before (``ValueError`` for bad input,
``OSError`` for an export, ``ImportError`` for a missing optional package), and each is
still importable from the module that raises it. ``progress.Cancelled`` is not here: a
cancel asked for by the user is not an error.
"""
from __future__ import annotations

import os
from pathlib import Path


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


#: What a bad *input* raises, as opposed to a bug or a fault of the machine: a slide that
#: raises one of these gets an "error" row and is not retried (it would fail the same way
#: again). ``MemoryError``: the slide is too big for this process. Other ``OSError`` s (an
#: I/O error on a network share, a full disk) are not here: batch retries them, and
#: ``focusq score`` records them through its catch-all.
INPUT_ERRORS = (FocusQError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError, MemoryError)


# config
class ConfigError(FocusQError, ValueError):
    """A scoring setting that cannot be used; ``field`` names it (a widget can point at it)."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(reason)


# io.extras
class MissingExtraError(FocusQError, ImportError):
    """An optional dependency is not installed; the message says how to add it."""

    def __init__(self, extra: str, module: str, what: str):
        self.extra = extra
        package = module.split(".")[0]
        ImportError.__init__(self, f"{what} needs the optional package {package!r}, which is not "
                                   f'installed: pip install "napari-focusq[{extra}]"', name=module)


# io.budget
class MemoryBudgetError(FocusQError, ValueError):
    """A read that would exceed the memory budget; the message names the file and the option."""

    def __init__(self, path, what: str, need: int, limit: int, hint: str = ""):
        self.path, self.need, self.limit = str(path), int(need), int(limit)
        from napari_focusq.io.budget import ENV_VAR, OPTION, human_bytes  # budget imports this module

        self.reason = (f"{what} needs {human_bytes(need)} of memory at once, more than the "
                       f"{human_bytes(limit)} budget; raise it with {OPTION} (or {ENV_VAR}) "
                       f"if this machine has the memory{'; ' + hint if hint else ''}")
        super().__init__(f"{self.path}: {self.reason}")


# models.checkpoint
class ModelFileError(FocusQError, ValueError):
    """A model file that is missing, corrupt, tampered with or of the wrong kind."""

    def __init__(self, path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


# scoring.grid
class TilingError(FocusQError, ValueError):
    """Bad geometry or image passed to the tiling functions."""


# scoring.pipeline
class ScoringError(FocusQError, ValueError):
    """Input that cannot be scored, with the reason."""


# scoring.zstack
class ZStackError(FocusQError, ValueError):
    """A stack and a focus map that do not belong together."""


# scoring.focus
class FocusMeasureError(FocusQError, ValueError):
    """Bad input to a focus measure or to :func:`sharpest_slice`."""


# optics.psf
class OpticsError(FocusQError, ValueError):
    """Bad parameters for a PSF or a defocus simulation."""


# optics.user
class OpticsOptionError(FocusQError, ValueError):
    """An NA, immersion or wavelength that cannot be used."""


# optics.pairfit
class PairError(FocusQError, ValueError):
    """Two captures that cannot give a physical defocus (different sizes, misregistered...)."""


# optics.deblur
class DeblurError(FocusQError, ValueError):
    """Bad input or options for the de-blurring preview."""


# training.config
class TrainingError(FocusQError, ValueError):
    """Training that cannot start or go on, with the reason."""


# training.device_tiles
class DeviceDataError(FocusQError, ValueError):
    """Source images the device tile maker cannot use."""


# training.heldout
class FrozenSetError(FocusQError, ValueError):
    """The frozen test set on disk is not the one that was frozen."""


# export.outputs
class MissingPixelSizeError(FocusQError, ValueError):
    """The input's pixel size is neither in its metadata nor given by the user."""


# export.preflight
class OutputFolderError(FocusQError, ValueError):
    """The output folder cannot take a run's outputs; the message names it."""


# export.qupath
class QuPathImportError(FocusQError, ValueError):
    """A file that is not QuPath GeoJSON (names the file and the problem)."""


# napari.writer
class ExportError(FocusQError, OSError):
    """An export could not be written; the message names the file and why."""


# review.collection
class CollectionError(FocusQError, ValueError):
    """A collection that cannot be read or changed, with the file and the reason."""


# review.queue
class ReviewError(FocusQError, ValueError):
    """A review folder or file that cannot be used (the message names the file and the problem)."""


# batch
class BatchUsageError(FocusQError, ValueError):
    """Bad batch options or inputs (exit status 2)."""


# cli.parser
class UsageError(FocusQError):
    """Bad options found after parsing (exit 2)."""


# cli.pair
class PairInputError(FocusQError, ValueError):
    """A pair that cannot be read (missing file, unknown pixel size, bad pairs list)."""
