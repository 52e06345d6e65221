"""Atomic file output: write to a temporary name beside the target, flush it to disk, then rename.

Every file the package writes goes through :func:`atomic_path` (or :func:`write_text` /
:func:`write_bytes` over it); ``results.tsv``'s first write (``export.results``) is the one
exception, a hard link that must never replace, and it shares :data:`UMASK`.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process's umask, read once at import: ``os.umask`` can only be read by setting it,
#: and it is process-wide, so reading it per write would race other threads' file creation.
UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path in the target's folder; rename it over ``path`` on success.

    On any error the temporary file is removed and the target is left as it was,
    so a reader never sees a half-written file.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"{path}: output folder {path.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    except OSError as exc:  # name the output, not the hidden temporary name
        raise _named(exc, path) from None
    os.close(fd)
    # mkstemp creates 0600 files; outputs should get the usual permissions (0666 - umask).
    os.chmod(tmp, 0o666 & ~UMASK)
    try:
        yield Path(tmp)
        _fsync(tmp)  # the data on disk before the name: a crash after the rename leaves no empty file
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _named(exc, path) from None
        raise


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a file system that cannot sync (some FUSE mounts)
            raise
    finally:
        os.close(fd)


# Errors of the disk or folder rather than of the data: the message must say which output.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _named(exc: OSError, path: Path) -> OSError:
    new = type(exc)(f"cannot write {path}: {exc.strerror or exc}")  # one argument: str() is the message
    new.errno = exc.errno
    return new


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)
