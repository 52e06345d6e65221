"""Exact outlines of regions on a boolean grid, as polygons with holes.

Grid cell (r, c) covers vertices (r, c)-(r+1, c+1). Boundary edges are directed so
the region is on their right-hand side (in row/col space drawn with rows down),
chained into closed rings, and each 4-connected component gives one polygon:
its outer ring plus any holes.

Where the boundary meets itself at a grid corner (two holes, or a hole and the outside,
touching diagonally), a traced walk passes that vertex twice. A ring that touches itself
is invalid in the OGC simple-features model that shapely, GIS tools and QuPath's JTS
follow, so every walk is cut at its repeated vertices into simple rings; rings touching
each other at one point are valid, and the polygon's interior stays connected because
the component is 4-connected.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _rings(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    m = np.pad(mask.astype(bool), 1)
    nxt: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(a, b):
        nxt.setdefault(a, []).append(b)

    rr, cc = np.nonzero(m)
    for r, c in zip(rr.tolist(), cc.tolist()):
        R, C = r - 1, c - 1  # back to unpadded vertex coordinates
        if not m[r - 1, c]:
            add((R, C), (R, C + 1))          # top edge, left to right
        if not m[r, c + 1]:
            add((R, C + 1), (R + 1, C + 1))  # right edge, downwards
        if not m[r + 1, c]:
            add((R + 1, C + 1), (R + 1, C))  # bottom edge, right to left
        if not m[r, c - 1]:
            add((R + 1, C), (R, C))          # left edge, upwards
    rings = []
    while nxt:
        start = next(iter(nxt))
        ring = [start]
        prev, cur = None, start
        while True:
            outs = nxt[cur]
            if len(outs) == 1 or prev is None:
                nb = outs.pop(0)
            else:
                # Pinch vertex (cells touching only at a corner): turn right, so that
                # the diagonal cells stay separate rings.
                din = (cur[0] - prev[0], cur[1] - prev[1])
                right = (din[1], -din[0])
                want = (cur[0] + right[0], cur[1] + right[1])
                nb = want if want in outs else outs[0]
                outs.remove(nb)
            if not outs:
                del nxt[cur]
            prev, cur = cur, nb
            if cur == start:
                break
            ring.append(cur)
        rings.extend(_simplify(r) for r in _simple_loops(ring))
    return rings


def _simple_loops(walk: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Cut a closed walk (first vertex not repeated at the end) into loops that visit no
    vertex twice: each time the walk returns to a vertex on the current path, the part
    since that visit is a closed loop of its own."""
    loops, path, at = [], [], {}
    for v in walk:
        if v in at:
            j = at[v]
            loops.append(path[j:])
            for u in path[j + 1:]:
                del at[u]
            del path[j + 1:]
        else:
            at[v] = len(path)
            path.append(v)
    loops.append(path)
    return loops


def _simplify(ring):
    """Drop vertices that lie on a straight run, keep corners; close the ring."""
    out = []
    n = len(ring)
    for i in range(n):
        a, b, c = ring[i - 1], ring[i], ring[(i + 1) % n]
        if (b[0] - a[0]) * (c[1] - b[1]) != (b[1] - a[1]) * (c[0] - b[0]):
            out.append(b)
    out.append(out[0])
    return out


def _area(ring) -> float:
    a = 0.0
    for (r0, c0), (r1, c1) in zip(ring[:-1], ring[1:]):
        a += c0 * r1 - c1 * r0
    return a / 2.0


def grid_polygons(mask: np.ndarray) -> list[list[list[tuple[int, int]]]]:
    """Polygons (outer ring first, then holes) of the 4-connected regions of ``mask``.

    Vertices are (row, col) grid corners; rings are closed (first == last).
    """
    mask = np.asarray(mask, bool)
    labels, n = ndimage.label(mask)
    polys = []
    for k in range(1, n + 1):
        rings = _rings(labels == k)
        rings.sort(key=lambda r: -abs(_area(r)))
        polys.append(rings)
    return polys
