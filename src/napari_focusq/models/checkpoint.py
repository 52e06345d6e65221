"""Checkpoint files: safetensors for the tensors, JSON metadata in its header and beside it.

A model file never goes through pickle: safetensors holds raw tensors only, and
we refuse anything else (torch.save zips, bare pickles) before parsing it. A
SHA-256 of the tensor bytes in the metadata catches files edited after saving.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .._atomic import atomic_path, write_text
from ..errors import FocusQError

FORMAT = "napari-focusq/1"
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_ZIP_MAGIC = b"PK\x03\x04"


class ModelFileError(FocusQError, ValueError):
    """A model file that is missing, corrupt, tampered with or of the wrong kind."""

    def __init__(self, path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(-1).view(__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: dict, meta: dict) -> Path:
    """Write ``tensors`` + ``meta`` to ``path`` (.safetensors) and ``path``.json, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**meta, "format": FORMAT, "sha256": _digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"focusq": json.dumps(meta)})
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=1, default=str))
    return path


def _check_kind(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(path, "no such model file")
    if path.is_dir():
        raise ModelFileError(path, "is a folder, not a model file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise ModelFileError(path, "empty or truncated model file")
    if head[:2] in _PICKLE_MAGIC or head[:4] == _ZIP_MAGIC or path.suffix in (".pt", ".pth", ".pkl", ".ckpt"):
        raise ModelFileError(
            path, "is a pickle/torch.save file; refusing to load it (unpickling can run arbitrary code). "
            "Use a .safetensors checkpoint written by `focusq train`.")
    n = int.from_bytes(head, "little")
    if n <= 0 or n > min(100_000_000, path.stat().st_size - 8):
        raise ModelFileError(path, "not a safetensors file (bad header length)")


def read_tensors(path: str | os.PathLike) -> dict:
    """Tensors of a safetensors file, after the same refusal checks as a checkpoint."""
    from safetensors.torch import load_file

    path = Path(path)
    _check_kind(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise ModelFileError(path, f"corrupt safetensors file ({e})") from None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a checkpoint: (tensors on CPU, metadata). Raises ModelFileError when anything is off."""
    from safetensors import safe_open

    path = Path(path)
    _check_kind(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ModelFileError(path, f"corrupt safetensors file ({e})") from None
    if "focusq" not in header:
        raise ModelFileError(path, "safetensors file without napari-focusq metadata (not a focus model)")
    try:
        meta = json.loads(header["focusq"])
    except json.JSONDecodeError:
        raise ModelFileError(path, "model metadata is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(path, f"unknown model format {meta.get('format')!r}; expected {FORMAT}")
    if meta.get("sha256") != _digest(tensors):
        raise ModelFileError(path, "weights do not match their recorded checksum (file modified or damaged)")
    return tensors, meta
