"""Checkpoint files: safetensors for the tensors, JSON metadata in its header and beside it.

A model file never goes through pickle: safetensors holds raw tensors only, and
we refuse anything else (torch.save zips, bare pickles) before parsing it. A
SHA-256 in the metadata covers the tensor bytes *and* the metadata that shapes the
reading (:data:`READING_KEYS`: architecture, calibration, normalisation, optics...), so a
file whose calibration was zeroed or whose architecture was edited is refused by name
(issue 19). :func:`restamp_checkpoint` (``python -m napari_focusq.models.restamp FILE``)
records a new digest for a file one trusts, e.g. one written before the digest covered
the metadata.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from napari_focusq._atomic import atomic_path, write_text
from napari_focusq.errors import ModelFileError

FORMAT = "napari-focusq/1"
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_ZIP_MAGIC = b"PK\x03\x04"


#: Metadata that changes what a model reads from a tile: covered by the digest. Names,
#: metrics and training logs are not (they do not change a reading).
READING_KEYS = ("architecture", "arch_config", "modality", "tile_px", "working_pixel_um", "input",
                "normalisation", "calibration", "certainty", "optics", "blur")


def _tensor_digest(tensors: dict):
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(-1).view(__import__("torch").uint8).numpy().tobytes())
    return h


def _reading_meta(meta: dict) -> bytes:
    """Canonical bytes of the reading metadata (a JSON round trip first: tuples and lists,
    as saved and as loaded, must give the same bytes)."""
    sub = json.loads(json.dumps({k: meta.get(k) for k in READING_KEYS}, default=str))
    return json.dumps(sub, sort_keys=True, separators=(",", ":")).encode()


def _digest(tensors: dict, meta: dict) -> str:
    h = _tensor_digest(tensors)
    h.update(b"\0focusq-reading-metadata\0" + _reading_meta(meta))
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: dict, meta: dict) -> Path:
    """Write ``tensors`` + ``meta`` to ``path`` (.safetensors) and ``path``.json, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**meta, "format": FORMAT}
    meta["sha256"] = _digest(tensors, meta)
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


def _read_file(path: Path) -> tuple[dict, dict]:
    """(header metadata, tensors on CPU) of a safetensors file, after the refusal checks."""
    from safetensors import safe_open

    _check_kind(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise ModelFileError(path, f"corrupt safetensors file ({e})") from None
    return header, tensors


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a checkpoint: (tensors on CPU, metadata). Raises ModelFileError when anything is off."""
    path = Path(path)
    header, tensors = _read_file(path)
    if "focusq" not in header:
        raise ModelFileError(path, "safetensors file without napari-focusq metadata (not a focus model)")
    try:
        meta = json.loads(header["focusq"])
    except json.JSONDecodeError:
        raise ModelFileError(path, "model metadata is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(path, f"unknown model format {meta.get('format')!r}; expected {FORMAT}")
    if meta.get("sha256") != _digest(tensors, meta):
        if meta.get("sha256") == _tensor_digest(tensors).hexdigest():
            raise ModelFileError(path, "its checksum covers only the weights (an older focusq wrote it), so its "
                                       "calibration and architecture cannot be verified; if you trust the file, "
                                       f"re-stamp it: python -m napari_focusq.models.restamp {path}")
        raise ModelFileError(path, "weights or the metadata that shapes the reading (" + ", ".join(READING_KEYS[:2])
                             + ", calibration, normalisation, optics...) do not match the recorded checksum "
                               "(file modified or damaged)")
    return tensors, meta


def restamp_checkpoint(path: str | os.PathLike) -> Path:
    """Record a new digest in ``path`` (and its .json) for its tensors and metadata as they are.

    For a file one trusts: one from an older focusq, or shipped weights whose metadata was
    refitted by hand. Everything but the digest is kept. The .json beside the file is
    preferred as the metadata when it exists (it is what a person edits); otherwise the
    header's.
    """
    path = Path(path)
    header, tensors = _read_file(path)
    side = path.with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8")) if side.is_file() else json.loads(header["focusq"])
    except (KeyError, ValueError) as e:
        raise ModelFileError(path, f"no readable napari-focusq metadata to stamp ({e})") from None
    meta.pop("sha256", None)
    return save_checkpoint(path, tensors, meta)
