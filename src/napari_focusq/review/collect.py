"""Collecting tiles of scored slides into a collection (``focusq collect`` and the QC dock).

Slides are scored with the same function ``focusq score`` uses (pipeline.iter_score_slide);
the chosen tiles are then re-read at the working resolution, exactly as the model saw them,
and added to the collection with the model's reading.
"""
from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Generator

import numpy as np

from napari_focusq.progress import Progress
from napari_focusq.review.collection import Collection, CollectionError, TileRecord, parse_label

#: Per-tile fields a --where condition can test (FocusMap arrays, and the grid position).
WHERE_FIELDS = ("defocus_um", "certainty", "expected_error_um", "spread_um", "tissue_fraction", "row", "col")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
        "=": operator.eq, "!=": operator.ne}
_COND = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|==|!=|<|>|=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_where(text: str) -> list[tuple[str, str, float]]:
    """``"defocus_um<0.5 and certainty>=0.8"`` -> [(field, op, number), ...] (all must hold).

    A small grammar (field, comparison, number, joined by ``and`` or ``,``), parsed, never
    evaluated: a condition is data from the shell, not code.
    """
    parts = [p for p in re.split(r"\s+and\s+|,", text.strip()) if p.strip()]
    if not parts:
        raise CollectionError(f"--where: empty condition {text!r}")
    out = []
    for p in parts:
        m = _COND.match(p)
        if not m:
            raise CollectionError(f"--where: cannot read {p.strip()!r}; expected FIELD OP NUMBER, "
                                  f"e.g. defocus_um<0.5 (fields: {', '.join(WHERE_FIELDS)}; ops: < <= > >= == !=)")
        name, op, num = m.groups()
        if name not in WHERE_FIELDS:
            raise CollectionError(f"--where: unknown field {name!r}; known: {', '.join(WHERE_FIELDS)}")
        out.append((name, op, float(num)))
    return out


def parse_tiles(specs) -> list[tuple[int, int]]:
    """``["3,4", "5,6"]`` -> [(3, 4), (5, 6)]."""
    out = []
    for s in specs or []:
        m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", str(s))
        if not m:
            raise CollectionError(f"--tiles: expected ROW,COL (grid indices, from 0); got {s!r}")
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def _field(fmap, name: str) -> np.ndarray:
    rows, cols = fmap.shape
    if name == "row":
        return np.broadcast_to(np.arange(rows)[:, None], (rows, cols)).astype(float)
    if name == "col":
        return np.broadcast_to(np.arange(cols)[None, :], (rows, cols)).astype(float)
    if name in ("defocus_um", "tissue_fraction"):
        return np.asarray(getattr(fmap, name), float)
    if name not in fmap.extra:
        raise CollectionError(f"--where: {fmap.source}: the model gives no {name} for this slide")
    return np.asarray(fmap.extra[name], float)


def select_tiles(fmap, *, where=None, tiles=None, max_n: int | None = None,
                 seed: int = 0) -> list[tuple[int, int]]:
    """Scored tiles meeting every condition of ``where`` (and in ``tiles`` when given).

    With ``max_n``, an even random sample (seeded) rather than the first rows: tiles of
    one slide region look alike, and a spread trains better.
    """
    ok = fmap.scored.copy()
    if tiles:
        chosen = np.zeros_like(ok)
        for r, c in tiles:
            if not (0 <= r < ok.shape[0] and 0 <= c < ok.shape[1]):
                raise CollectionError(f"{fmap.source}: tile {r},{c} is outside the {ok.shape[0]}x{ok.shape[1]} grid")
            chosen[r, c] = True
        ok &= chosen
    for name, op, v in where or []:
        with np.errstate(invalid="ignore"):
            ok &= _OPS[op](_field(fmap, name), v)
    idx = [(int(r), int(c)) for r, c in zip(*np.nonzero(ok))]
    if max_n is not None and len(idx) > max_n:
        pick = np.random.default_rng(seed).choice(len(idx), max_n, replace=False)
        idx = [idx[i] for i in sorted(pick)]
    return idx


def read_working_tiles(path, fmap, cells, *, pixel_size_um=None) -> list[np.ndarray]:
    """The working-resolution tiles (TILE_PX²) of ``cells`` of a scored slide, read as the
    pipeline reads them for the model (same level, plane and resampling)."""
    from napari_focusq.io.formats import open_image
    from napari_focusq.scoring.grid import TileGrid
    from napari_focusq.scoring.strips import read_strip

    # a path is opened (and closed) here; a source (the QC dock's layer) is read as it is
    owned = isinstance(path, (str, os.PathLike))
    src = open_image(path, pixel_size_um=pixel_size_um) if owned else path
    try:
        grid = TileGrid(tuple(fmap.image_shape), fmap.pixel_size_um)
        level = int(fmap.extra.get("level", src.level_for(fmap.pixel_size_um)))
        z = fmap.extra.get("z")
        best = fmap.extra.get("best_plane")
        out = {}
        for r, c in cells:
            zi = int(best[r, c]) if z == "per-tile" and best is not None else z
            tiles, *_ = read_strip(src, grid, level, zi, r, [c], fmap.modality)
            out[(r, c)] = tiles[0]
        return [out[rc] for rc in cells]
    finally:
        if owned:
            src.close()


def records_for(fmap, cells, label, *, slide=None) -> list[TileRecord]:
    """Table rows for ``cells`` of a scored slide, with the model's reading."""
    label = parse_label(label)
    slide = str(slide or fmap.source)
    recs = []
    cert = fmap.extra.get("certainty")
    for r, c in cells:
        y0, x0, y1, x1 = fmap.tile_bounds(r, c)
        d = float(fmap.defocus_um[r, c])
        recs.append(TileRecord(
            slide=slide, y=y0, x=x0, height=y1 - y0, width=x1 - x0, pixel_size_um=float(fmap.pixel_size_um),
            modality=fmap.modality, label=label, reading_um=round(d, 4) if np.isfinite(d) else None,
            model=fmap.model, row=r, col=c,
            extra={"certainty": round(float(cert[r, c]), 4)} if cert is not None and np.isfinite(cert[r, c]) else {}))
    return recs


def add_from_map(collection: Collection, path, fmap, cells, label, *, pixel_size_um=None) -> list[str]:
    """Add ``cells`` of slide ``path`` (scored as ``fmap``) with ``label``; returns their ids."""
    if not cells:
        return []
    tiles = read_working_tiles(path, fmap, cells, pixel_size_um=pixel_size_um)
    return collection.add(records_for(fmap, cells, label, slide=getattr(path, "path", path)), tiles)


@dataclass
class AddedTiles:
    """What one add did to a collection: enough to undo it (:meth:`undo`)."""

    folder: Path
    ids: list
    previous: list  # (record, tile) of rows the add replaced (same tile collected before)
    label: str | float = ""

    def undo(self) -> int:
        """Remove what the add added and put back what it replaced; returns rows removed."""
        return Collection(self.folder).revert(self.ids, self.previous)


def iter_add_cells(folder, open_source, fmap, cells, label, *, chunk: int = 16,
                   ) -> Generator[Progress, None, AddedTiles]:
    """Read ``cells`` of a scored image and add them to the collection in ``folder``.

    ``open_source()`` gives ``(source, close_it)``: the file or layer the map was scored
    from (the QC dock passes layer_scoring.layer_source, so a file-backed layer is read
    from its file, as the pipeline read it). Tiles are read in chunks with a Progress
    event (a cancel point) after each; the collection changes only at the end, in one
    atomic write, so a cancelled add leaves it as it was.
    """
    label = parse_label(label)
    cells = [(int(r), int(c)) for r, c in cells]
    recs = records_for(fmap, cells, label)
    yield Progress("collect", 0, len(cells), "reading tiles")
    tiles: list = []
    src, close_it = open_source()
    try:
        for i in range(0, len(cells), chunk):
            tiles += read_working_tiles(src, fmap, cells[i:i + chunk])
            yield Progress("collect", min(i + chunk, len(cells)), len(cells), "reading tiles")
    finally:
        if close_it:
            src.close()
    coll = Collection(folder)
    previous = coll.snapshot(r.id for r in recs)
    ids = coll.add(recs, tiles)
    return AddedTiles(coll.folder, ids, previous, label)


def iter_collect(paths, collection: Collection, label, *, where=None, tiles=None, max_n=None,
                 model="default", pixel_size_um=None, modality="auto", level=None, slice="auto",
                 failed: dict | None = None) -> Generator[Progress, None, dict]:
    """Score each slide and add the selected tiles; returns {slide: number of tiles added}.

    A slide that cannot be scored or read (unreadable, no pixel size, a --where field its
    model lacks, a bug) is skipped: its reason goes into ``failed`` ({slide: reason}) and the
    run goes on, as ``focusq score`` does. A collection that cannot be written stops the run
    (every later slide would fail the same way).
    """
    from napari_focusq.export.outputs import error_reason
    from napari_focusq.scoring.pipeline import iter_score_slide

    label = parse_label(label)
    added = {}
    failed = {} if failed is None else failed
    for i, p in enumerate(paths):
        yield Progress("collect", i, len(paths), f"scoring {Path(p).name}")
        try:
            fmap = yield from iter_score_slide(p, pixel_size_um=pixel_size_um, modality=modality, model=model,
                                               level=level, slice=slice)
            cells = select_tiles(fmap, where=where, tiles=tiles, max_n=max_n, seed=i)
            read = read_working_tiles(p, fmap, cells, pixel_size_um=pixel_size_um) if cells else []
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # one bad slide never stops the others
            failed[str(p)] = error_reason(exc, p)
            yield Progress("collect", i + 1, len(paths), f"{Path(p).name}: failed", data={"failed": str(p)})
            continue
        ids = collection.add(records_for(fmap, cells, label, slide=p), read) if cells else []
        added[str(p)] = len(ids)
    yield Progress("collect", len(paths), len(paths), "done")
    return added


def main_collect(args) -> int:
    """``focusq collect``: argparse namespace -> tiles added to the collection. Returns an exit
    code: 0, or 1 when some slide failed (reported, skipped; the others are collected)."""
    import sys

    from napari_focusq.progress import StderrBar, drive

    where = parse_where(args.where) if args.where else None
    tiles = parse_tiles(args.tiles)
    coll = Collection(args.out)
    before = len(coll)
    failed: dict = {}
    added = drive(iter_collect(args.inputs, coll, args.label, where=where, tiles=tiles, max_n=args.max,
                               model=args.model, pixel_size_um=args.pixel_size, modality=args.modality,
                               level=args.level, slice=args.slice, failed=failed), StderrBar())
    for p, n in added.items():
        print(f"{p}: {n} tiles labelled {args.label}")
    for p, why in failed.items():
        print(f"focusq: {p}: {why} (skipped)", file=sys.stderr)  # as focusq score reports a failed input
    c = coll.counts()
    print(f"collection {coll.folder}: {len(coll)} tiles ({len(coll) - before} new; "
          f"{c['in-focus']} in-focus, {c['out-of-focus']} out-of-focus)"
          + (f"  ({len(failed)} of {len(args.inputs)} slides failed)" if failed else ""))
    return 1 if failed else 0
