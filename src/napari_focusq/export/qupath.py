"""QuPath round trip: every tile as a QuPath object with measurements, and QuPath annotations back.

The format follows QuPath's own GeoJSON reader (``qupath.lib.io.PathObjectTypeAdapters``,
v0.4 and later): a ``FeatureCollection`` whose features carry ``properties.objectType``
("tile" makes a ``PathTileObject``, a detection, so *Measure > Show measurement maps*
colours the slide by any measurement), ``properties.measurements`` as an object of
name -> number (the v0.4 layout; missing names read as NaN in QuPath, so tiles without
tissue simply leave the defocus out, JSON having no NaN) and ``properties.classification``
as ``{"name", "color"}``. Coordinates are level-0 pixels, origin at the image's top left.

One caveat found in that same code: QuPath's ``PathIO.readObjects`` opens ``.geojson``,
``.json``, ``.qpdata`` and ``.zip`` files, not ``.gz``. So every slide gets both
``<stem>.tiles.geojson.gz`` (the name the design contract fixes) and
``<stem>.tiles.geojson.zip`` (the same bytes deflated in a zip: QuPath opens it as it
is); :func:`read_geojson` here reads all of those.

Import: ``Ignore*`` annotations (QuPath's class for regions to leave out) become
exclusions; any other annotation is a region of interest, and the summary then uses
only the tiles whose centre lies inside it.
"""
from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from napari_focusq._atomic import write_bytes
from napari_focusq.config import DEFAULT_THRESHOLD_UM
from napari_focusq.errors import QuPathImportError
from napari_focusq.scoring.focusmap import FocusMap, feature_id

#: Measurement names (shown in QuPath's measurement table and maps).
DEFOCUS = "Defocus (µm)"
EXPECTED_ERROR = "Expected error (µm)"
TISSUE = "Tissue fraction"
EXCLUDED = "Excluded"
ROW, COL = "Tile row", "Tile column"
#: QuPath's built-in class for regions to ignore (its trailing * marks an "ignored" class).
IGNORE_CLASS = "Ignore*"
#: Class of tiles the QC excluded, so they stand out in QuPath without a measurement map.
EXCLUDED_CLASS = "Out of focus"
SOFTWARE = "napari-focusq"


def _ring(x0: float, y0: float, x1: float, y1: float) -> list:
    # closed, counter-clockwise in x/y with y down is clockwise on screen; QuPath accepts either
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _number(v) -> float | None:
    v = float(v)
    return round(v, 4) if np.isfinite(v) else None


def tile_features(fmap: FocusMap, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None,
                  roi=None) -> dict:
    """Every tile as a QuPath tile object, plus the exclusions (and ROI) as annotations.

    Parameters
    ----------
    fmap
        The scored map.
    threshold_um, excluded
        Exclusions: by threshold, or the (rows, cols) bool grid of the review.
    roi
        Optional list of region-of-interest polygons (level-0 pixel rings, x/y) to carry along.

    Returns
    -------
    dict
        A GeoJSON FeatureCollection QuPath imports (tiles with measurements first).
    """
    ex = fmap.excluded(threshold_um) if excluded is None else (np.asarray(excluded, bool) & fmap.scored)
    err = fmap.extra.get("expected_error_um")
    if err is not None and np.shape(err) != fmap.shape:
        err = None
    feats = []
    rows, cols = fmap.shape
    for r in range(rows):
        for c in range(cols):
            y0, x0, y1, x1 = fmap.tile_bounds(r, c)
            if y1 <= y0 or x1 <= x0:
                continue  # a grid cell wholly off the image
            m = {ROW: r, COL: c, TISSUE: round(float(fmap.tissue_fraction[r, c]), 4), EXCLUDED: int(ex[r, c])}
            d = _number(fmap.defocus_um[r, c])
            if d is not None:
                m[DEFOCUS] = d
                e = None if err is None else _number(err[r, c])
                if e is not None:
                    m[EXPECTED_ERROR] = e
            props = {"objectType": "tile", "name": f"tile {r},{c}", "measurements": m}
            if ex[r, c]:
                props["classification"] = {"name": EXCLUDED_CLASS, "color": [230, 159, 0]}
            feats.append({"type": "Feature", "id": feature_id(fmap.source, "tile", r, c),
                          "geometry": {"type": "Polygon", "coordinates": [_ring(x0, y0, x1, y1)]},
                          "properties": props})
    for f in fmap.geojson(threshold_um, ex)["features"]:
        f["properties"]["name"] = "excluded tiles"
        feats.append(f)
    for i, ring in enumerate(roi or []):
        feats.append({"type": "Feature", "id": feature_id(fmap.source, "roi", i, ring),
                      "geometry": {"type": "Polygon", "coordinates": [[list(map(float, p)) for p in ring]]},
                      "properties": {"objectType": "annotation", "name": "region of interest"}})
    return {"type": "FeatureCollection", "features": feats,
            "focusq": {"software": SOFTWARE, "source": fmap.source, "model": fmap.model,
                       "threshold_um": threshold_um, "grid_shape": list(fmap.shape)}}


#: Suffixes of the two tiles files: the contract's gzip (DESIGN §1) and the zip QuPath opens.
TILES_GZ, TILES_ZIP = ".tiles.geojson.gz", ".tiles.geojson.zip"


def _tiles_json(fmap: FocusMap, threshold_um, excluded, roi) -> bytes:
    return json.dumps(tile_features(fmap, threshold_um, excluded, roi), separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0: the same map gives the same bytes (reproducible outputs)
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _zip(data: bytes, entry: str) -> bytes:
    buf = io.BytesIO()
    info = zipfile.ZipInfo(entry, date_time=(1980, 1, 1, 0, 0, 0))  # no clock in the bytes, like the gzip
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, data, compresslevel=9)
    return buf.getvalue()


def write_tiles_geojson(fmap: FocusMap, path, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None,
                        roi=None) -> Path:
    """Write :func:`tile_features` atomically, compressed by the name: ``.zip``, ``.gz``, else plain GeoJSON.

    A ``.zip`` holds one entry, the name less ``.zip`` (``<stem>.tiles.geojson``): QuPath
    reads each entry of a zip by its own name, so the entry must end in ``.geojson``.
    """
    path = Path(path)
    data = _tiles_json(fmap, threshold_um, excluded, roi)
    if path.name.lower().endswith(".zip"):
        return write_bytes(path, _zip(data, path.name[:-4]))
    if path.name.lower().endswith(".gz"):
        return write_bytes(path, _gzip(data))
    return write_bytes(path, data)


def write_qupath_tiles(fmap: FocusMap, folder, stem: str, threshold_um: float = DEFAULT_THRESHOLD_UM,
                       excluded=None, roi=None) -> dict[str, Path]:
    """Both tiles files of a slide, from one serialisation: ``{"tiles_geojson": .gz, "tiles_qupath": .zip}``.

    ``<stem>.tiles.geojson.gz`` is the name the design contract fixes (tools read it);
    QuPath opens only ``.geojson``/``.json``/``.qpdata``/``.zip`` (``PathIO.readObjects``),
    so ``<stem>.tiles.geojson.zip`` is the one to drop on QuPath. Both deflate the same
    bytes: the zip costs one more compression and a few hundred bytes of headers.
    """
    folder = Path(folder)
    data = _tiles_json(fmap, threshold_um, excluded, roi)
    return {"tiles_geojson": write_bytes(folder / f"{stem}{TILES_GZ}", _gzip(data)),
            "tiles_qupath": write_bytes(folder / f"{stem}{TILES_ZIP}", _zip(data, f"{stem}.tiles.geojson"))}


# ------------------------------------------------------------------------------ import
def read_geojson(path) -> list[dict]:
    """The features of a QuPath GeoJSON file (``.geojson``, ``.json``, ``.geojson.gz`` or ``.zip``).

    Accepts what QuPath writes and reads: a FeatureCollection, a list of Features or one
    Feature. Raises :class:`QuPathImportError` naming the file otherwise.
    """
    path = Path(path)
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                feats = []
                for name in zf.namelist():
                    if name.lower().endswith((".geojson", ".json")):
                        feats += _features(json.loads(zf.read(name).decode("utf-8")), path)
                return feats
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise QuPathImportError(f"{path}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile) as exc:
        raise QuPathImportError(f"{path}: not readable GeoJSON ({exc})") from None
    return _features(data, path)


def _features(data, path) -> list[dict]:
    if isinstance(data, list):
        return [f for d in data for f in _features(d, path)]
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return [f for f in data.get("features") or [] if isinstance(f, dict)]
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    raise QuPathImportError(f"{path}: not GeoJSON features (expected a FeatureCollection or Features)")


def class_name(feature: dict) -> str:
    """The QuPath classification of a feature ("" when unclassified)."""
    cls = (feature.get("properties") or {}).get("classification")
    if isinstance(cls, str):
        return cls
    if isinstance(cls, dict):
        if cls.get("name"):
            return str(cls["name"])
        if cls.get("names"):
            return ": ".join(str(n) for n in cls["names"])
    return ""


def object_type(feature: dict) -> str:
    props = feature.get("properties") or {}
    # QuPath reads objectType, then the old object_type, then type; no type means annotation
    return str(props.get("objectType") or props.get("object_type") or props.get("type") or "annotation")


def polygons(feature: dict) -> list[list[np.ndarray]]:
    """Polygons of a feature's geometry as lists of rings (outer first, then holes), (N, 2) x/y arrays."""
    geom = feature.get("geometry") or {}
    kind, coords = geom.get("type"), geom.get("coordinates")
    if kind == "Polygon":
        parts = [coords]
    elif kind == "MultiPolygon":
        parts = coords
    elif kind == "GeometryCollection":
        return [p for g in geom.get("geometries") or [] for p in polygons({"geometry": g})]
    else:
        return []  # points and lines cover no tile
    return [[np.asarray(r, float)[:, :2] for r in poly if len(r) >= 3] for poly in parts or [] if poly]


def tiles_inside(fmap: FocusMap, features: list[dict]) -> np.ndarray:
    """(rows, cols) bool: tiles whose centre lies inside any of the features' polygons (holes respected)."""
    from matplotlib.path import Path as MPath

    rows, cols = fmap.shape
    oy, ox = fmap.origin_px
    t = fmap.tile_size_px
    H, W = fmap.image_shape
    # centres of the visible part of each tile (edge tiles are cut by the image border)
    yc = np.array([(max(oy + r * t, 0) + min(oy + (r + 1) * t, H)) / 2 for r in range(rows)])
    xc = np.array([(max(ox + c * t, 0) + min(ox + (c + 1) * t, W)) / 2 for c in range(cols)])
    pts = np.stack(np.meshgrid(xc, yc), -1).reshape(-1, 2)
    inside = np.zeros(len(pts), bool)
    for f in features:
        for rings in polygons(f):
            if not rings:
                continue
            hit = MPath(rings[0]).contains_points(pts)
            for hole in rings[1:]:
                hit &= ~MPath(hole).contains_points(pts)
            inside |= hit
    return inside.reshape(rows, cols)


def _tile_exclusions(fmap: FocusMap, features: list[dict]) -> np.ndarray | None:
    """The ``Excluded`` measurement of this map's own tile objects, when the file carries all of them."""
    grid = np.zeros(fmap.shape, bool)
    seen = np.zeros(fmap.shape, bool)
    for f in features:
        if object_type(f) not in ("tile", "detection"):
            continue
        m = (f.get("properties") or {}).get("measurements") or {}
        if isinstance(m, list):  # QuPath before v0.4: [{"name", "value"}]
            m = {d.get("name"): d.get("value") for d in m if isinstance(d, dict)}
        try:
            r, c, e = int(m[ROW]), int(m[COL]), m[EXCLUDED]
        except (KeyError, TypeError, ValueError):
            continue
        if 0 <= r < fmap.shape[0] and 0 <= c < fmap.shape[1]:
            grid[r, c], seen[r, c] = bool(e), True
    H, W = fmap.image_shape
    on_image = np.array([[fmap.tile_bounds(r, c)[2] > fmap.tile_bounds(r, c)[0]
                          and fmap.tile_bounds(r, c)[3] > fmap.tile_bounds(r, c)[1]
                          for c in range(fmap.shape[1])] for r in range(fmap.shape[0])])
    return grid if seen[on_image].all() and seen.any() else None


def import_annotations(fmap: FocusMap, features: list[dict], current_excluded=None) -> dict:
    """What a QuPath file says about this map's tiles.

    Parameters
    ----------
    fmap
        The map the file is laid over (same level-0 pixel frame).
    features
        From :func:`read_geojson`.
    current_excluded
        The exclusions in use now ((rows, cols) bool), the base the file's ``Ignore*``
        regions are added to, unless the file carries this map's own tile objects, whose
        ``Excluded`` measurement then is the base (so an export comes back unchanged).

    Returns
    -------
    dict
        ``{"excluded": bool grid (scored tiles only), "roi": bool grid or None,
        "roi_rings": [x/y rings], "ignore_regions": int, "roi_regions": int}``.
    """
    annotations = [f for f in features if object_type(f) == "annotation"]
    ignore = [f for f in annotations if class_name(f).startswith("Ignore")]
    # points and lines (QuPath's point annotations, measuring lines) enclose no tile: not a region
    rois = [f for f in annotations if not class_name(f).startswith("Ignore") and polygons(f)]
    base = _tile_exclusions(fmap, features)
    if base is None:
        base = (np.zeros(fmap.shape, bool) if current_excluded is None else np.asarray(current_excluded, bool))
    excluded = (base | tiles_inside(fmap, ignore)) & fmap.scored
    roi = tiles_inside(fmap, rois) if rois else None
    rings = [ring.tolist() for f in rois for poly in polygons(f) for ring in poly[:1]]
    return {"excluded": excluded, "roi": roi, "roi_rings": rings, "ignore_regions": len(ignore),
            "roi_regions": len(rois)}


def restrict_to_roi(fmap: FocusMap, roi) -> FocusMap:
    """A copy of ``fmap`` that scores only tiles inside ``roi`` (others read as no tissue)."""
    import copy

    if roi is None:
        return fmap
    roi = np.asarray(roi, bool)
    out = copy.copy(fmap)
    out.defocus_um = np.where(roi, fmap.defocus_um, np.nan).astype(np.float32)
    out.extra = dict(fmap.extra)
    for k, v in fmap.extra.items():  # per-tile layers follow (pooling and certainty read them)
        if isinstance(v, np.ndarray) and v.shape == roi.shape:
            out.extra[k] = np.where(roi, v, np.nan if v.dtype.kind == "f" else 0).astype(v.dtype)
    return out
