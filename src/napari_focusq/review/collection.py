"""Tile collections: tiles gathered while reviewing, kept on disk for training.

A collection is a folder holding ``tiles/<id>.png`` (one lossless image per tile at the
working resolution, TILE_PX² at WORKING_PIXEL_UM) and ``collection.jsonl`` (one JSON
object per tile: source slide, level-0 position, pixel size, modality, the model's
reading when collected, and the label). The table is the truth: it is rewritten whole
and atomically on every change, so a crash mid-write leaves the previous table; a tile
image without a row is an orphan that the next change removes.

Labels: ``in-focus``, ``out-of-focus`` (a real defocused region, amount unknown) or a
defocus in µm when known (e.g. measured with a pair of captures), stored as a number.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from napari_focusq._atomic import atomic_path, write_bytes
from napari_focusq.config import TILE_PX, WORKING_PIXEL_UM
from napari_focusq.errors import CollectionError

TABLE = "collection.jsonl"
TILES = "tiles"
IN_FOCUS, OUT_OF_FOCUS = "in-focus", "out-of-focus"


def parse_label(label) -> str | float:
    """``in-focus`` / ``out-of-focus`` / a defocus in µm (>= 0) -> the stored label."""
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        v = float(label)
    else:
        s = str(label).strip().lower()
        if s in (IN_FOCUS, OUT_OF_FOCUS):
            return s
        try:
            v = float(s.removesuffix("um").removesuffix("µm"))
        except ValueError:
            raise CollectionError(f"label must be in-focus, out-of-focus or a defocus in µm; got {label!r}") from None
    if not (v >= 0 and v < 100):  # also rejects NaN
        raise CollectionError(f"a defocus label must be a number of µm in [0, 100); got {label!r}")
    return v


def label_kind(label) -> str:
    """``in-focus`` or ``out-of-focus`` for any label; a known defocus counts as in focus when
    under 0.5 µm (within the depth of field at the working resolution, DESIGN.md)."""
    if isinstance(label, str):
        return label
    return IN_FOCUS if float(label) < 0.5 else OUT_OF_FOCUS


def default_collection_dir() -> Path:
    """``collections/default`` beside the plugin's settings file.

    The settings are a QSettings INI file in the user scope (``_qt/workers.settings``):
    ``%APPDATA%/napari-focusq`` on Windows, ``$XDG_CONFIG_HOME`` (or ``~/.config``)
    ``/napari-focusq`` elsewhere. Computed here without Qt, so the CLI finds the same folder.
    """
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"])
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "napari-focusq" / "collections" / "default"


@dataclass
class TileRecord:
    """One row of the table (positions and sizes in the slide's level-0 pixels)."""

    slide: str
    y: int
    x: int
    height: int
    width: int
    pixel_size_um: float
    modality: str
    label: str | float
    reading_um: float | None = None
    model: str | None = None
    row: int | None = None
    col: int | None = None
    id: str = ""
    added: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.label = parse_label(self.label)
        if not self.id:
            self.id = tile_id(self.slide, self.y, self.x, self.height, self.width)

    @property
    def kind(self) -> str:
        return label_kind(self.label)


def tile_id(slide, y, x, height, width) -> str:
    """Same slide (by file name) and same level-0 rectangle -> same id: adding twice keeps one."""
    key = f"{Path(str(slide)).name}|{int(y)}|{int(x)}|{int(height)}|{int(width)}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _encode_png(tile: np.ndarray) -> bytes:
    from PIL import Image

    t = np.ascontiguousarray(tile)
    if t.ndim == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.dtype == np.uint8 and (t.ndim == 2 or t.shape[-1] in (3, 4)):
        img = Image.fromarray(t)
    elif t.dtype == np.uint16 and t.ndim == 2:
        img = Image.fromarray(t.astype("<u2", copy=False))  # PIL mode I;16
    else:
        raise CollectionError(f"cannot store a {t.dtype} tile of shape {t.shape} losslessly as PNG "
                              "(8-bit grey/RGB/RGBA or 16-bit grey)")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_tile(path) -> np.ndarray:
    """A stored tile image as an array (uint8 grey/RGB or uint16 grey)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im)
    return a.astype(np.uint16) if a.dtype.kind in "iu" and a.dtype.itemsize > 1 else a


class Collection:
    """A tile collection folder (created on first write)."""

    def __init__(self, folder=None):
        self.folder = Path(folder) if folder is not None else default_collection_dir()
        if self.folder.exists() and not self.folder.is_dir():
            raise CollectionError(f"{self.folder}: not a folder")
        self.records: list[TileRecord] = self._read()

    # ---------------------------------------------------------------- reading
    @property
    def table(self) -> Path:
        return self.folder / TABLE

    def tile_path(self, rec_or_id) -> Path:
        tid = rec_or_id.id if isinstance(rec_or_id, TileRecord) else str(rec_or_id)
        return self.folder / TILES / f"{tid}.png"

    def _read(self) -> list[TileRecord]:
        if not self.table.exists():
            return []
        out = []
        for n, line in enumerate(self.table.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.append(TileRecord(**d))
            except (ValueError, TypeError) as exc:
                raise CollectionError(f"{self.table}, line {n}: not a tile record ({exc})") from None
        return out

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __contains__(self, tid) -> bool:
        return any(r.id == tid for r in self.records)

    def counts(self) -> dict:
        """Tiles per kind (in-focus / out-of-focus), known-defocus labels counted by kind too."""
        c = {IN_FOCUS: 0, OUT_OF_FOCUS: 0}
        for r in self.records:
            c[r.kind] += 1
        return c

    def digest(self) -> str:
        """sha256 of the table's bytes: names this exact collection in a checkpoint's provenance."""
        data = self.table.read_bytes() if self.table.exists() else b""
        return hashlib.sha256(data).hexdigest()

    def load_tile(self, rec: TileRecord) -> np.ndarray:
        p = self.tile_path(rec)
        try:
            return read_tile(p)
        except (OSError, ValueError) as exc:
            raise CollectionError(f"{p}: cannot read collected tile ({exc})") from None

    def slides(self) -> list[str]:
        return list(dict.fromkeys(Path(r.slide).name for r in self.records))

    # ---------------------------------------------------------------- writing
    def _write_table(self, records: list[TileRecord]) -> None:
        text = "".join(json.dumps(asdict(r), ensure_ascii=False, allow_nan=False) + "\n" for r in records)
        with atomic_path(self.table) as tmp:
            _write_text(tmp, text)

    def add(self, records: Iterable[TileRecord], tiles: Iterable[np.ndarray]) -> list[str]:
        """Add tiles (working-resolution arrays, TILE_PX²) with their records; returns their ids.

        A tile already in the collection (same slide and rectangle) is replaced: its
        label and reading become the new ones, and it stays one row.
        """
        records, tiles = list(records), list(tiles)
        if len(records) != len(tiles):
            raise CollectionError(f"{len(records)} records but {len(tiles)} tiles")
        (self.folder / TILES).mkdir(parents=True, exist_ok=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        new = {}
        for rec, t in zip(records, tiles):
            t = np.asarray(t)
            if t.shape[:2] != (TILE_PX, TILE_PX):
                raise CollectionError(f"tile of {rec.slide} at ({rec.y}, {rec.x}) is {t.shape[:2]}; "
                                      f"expected {TILE_PX}x{TILE_PX} at {WORKING_PIXEL_UM} µm/px")
            rec.added = rec.added or now
            write_bytes(self.tile_path(rec), _encode_png(t))  # images first: a row never lacks its tile
            new[rec.id] = rec
        kept = [new.pop(r.id) if r.id in new else r for r in self.records]
        records_after = kept + list(new.values())
        self._write_table(records_after)
        self.records = records_after
        self._sweep()
        return [r.id for r in records]

    def remove(self, ids: Iterable[str]) -> int:
        """Remove tiles by id; returns how many were removed."""
        ids = set(ids)
        keep = [r for r in self.records if r.id not in ids]
        removed = len(self.records) - len(keep)
        if removed:
            self._write_table(keep)  # table first: a crash leaves orphan images, never missing ones
            self.records = keep
            self._sweep()
        return removed

    def snapshot(self, ids: Iterable[str]) -> list[tuple[TileRecord, np.ndarray]]:
        """(record, tile) of those of ``ids`` already in the collection: what an add of them
        would replace, kept so that the add can be undone (:meth:`revert`)."""
        ids = set(ids)
        return [(copy.deepcopy(r), self.load_tile(r)) for r in self.records if r.id in ids]

    def revert(self, ids: Iterable[str], previous: Iterable[tuple[TileRecord, np.ndarray]] = ()) -> int:
        """Undo an add: drop the rows ``ids`` and put back ``previous`` (its :meth:`snapshot`),
        in place and in one table write. Returns how many rows were dropped."""
        ids, prev = set(ids), {r.id: (r, t) for r, t in previous}
        for rec, t in prev.values():
            write_bytes(self.tile_path(rec), _encode_png(np.asarray(t)))  # images first, as in add
        after = [prev[r.id][0] if r.id in prev else r for r in self.records if r.id in prev or r.id not in ids]
        dropped = len(self.records) - len(after)
        self._write_table(after)
        self.records = after
        self._sweep()
        return dropped

    def _sweep(self) -> None:
        """Delete tile images no row refers to (left by a remove or a crash)."""
        d = self.folder / TILES
        if not d.is_dir():
            return
        live = {f"{r.id}.png" for r in self.records}
        for p in d.iterdir():
            if p.suffix == ".png" and p.name not in live:
                p.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    # A seam for the crash test: an exception here must leave the old table whole.
    Path(path).write_text(text, encoding="utf-8")
