"""FocusMap: the per-tile defocus of one image, and its writers (CSV, GeoJSON, masks)."""
from __future__ import annotations

import csv
import io
import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_focusq._atomic import write_text
from napari_focusq.config import DEFAULT_THRESHOLD_UM
from napari_focusq.export.polygons import grid_polygons

#: Namespace of the GeoJSON features' ids (uuid5 of it and what the feature is).
_ID_NAMESPACE = uuid.UUID("5b0e6c1e-4f0a-4a4e-9d6f-6e6170617269")


def feature_id(*parts) -> str:
    """A GeoJSON feature's id from what the feature is (its slide, kind and geometry): the
    same map written twice gives the same bytes (reproducible outputs, diffable reruns),
    and two slides' features never share one."""
    return str(uuid.uuid5(_ID_NAMESPACE, "|".join(map(str, parts))))

CSV_COLUMNS = ("row", "col", "y", "x", "height", "width", "tissue_fraction", "defocus_um", "excluded",
               "certainty", "uncertain", "na", "immersion_n", "wavelength_um", "nonfinite_px")


@dataclass
class FocusMap:
    """Defocus per tile of one image.

    Attributes
    ----------
    defocus_um
        (rows, cols) float32, predicted distance from focus |z| in µm; NaN where a
        tile has too little tissue to score.
    tissue_fraction
        (rows, cols) float32 in [0, 1].
    tile_size_px
        Tile edge in the input's level-0 pixels (may be fractional).
    origin_px
        (y, x) of the top-left corner of tile (0, 0), level-0 pixels.
    image_shape
        (height, width) of the input's level 0, pixels.
    pixel_size_um, modality, model
        Level-0 pixel size, modality used ("brightfield"/"fluorescence") and the
        model's "name version".
    source
        The scored file's path (None for an in-memory image).
    extra
        Optional per-tile layers (e.g. "certainty", "best_plane") and notes.
    """

    defocus_um: np.ndarray
    tissue_fraction: np.ndarray
    tile_size_px: float
    image_shape: tuple[int, int]
    pixel_size_um: float
    modality: str
    model: str
    origin_px: tuple[float, float] = (0.0, 0.0)
    source: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.defocus_um = np.asarray(self.defocus_um, dtype=np.float32)
        self.tissue_fraction = np.asarray(self.tissue_fraction, dtype=np.float32)
        if self.defocus_um.ndim != 2 or self.defocus_um.shape != self.tissue_fraction.shape:
            raise ValueError(
                f"defocus_um {self.defocus_um.shape} and tissue_fraction "
                f"{self.tissue_fraction.shape} must be the same 2-D grid"
            )
        self.image_shape = tuple(int(v) for v in self.image_shape)
        self.origin_px = tuple(float(v) for v in self.origin_px)

    # --- geometry -----------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """The tile grid's (rows, cols)."""
        return self.defocus_um.shape

    @property
    def scored(self) -> np.ndarray:
        """Tiles that carry a defocus value (enough tissue)."""
        return np.isfinite(self.defocus_um)

    def tile_bounds(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of a tile in level-0 pixels, clipped to the image."""
        oy, ox = self.origin_px
        t = self.tile_size_px
        h, w = self.image_shape
        y0, x0 = round(oy + row * t), round(ox + col * t)
        y1, x1 = round(oy + (row + 1) * t), round(ox + (col + 1) * t)
        return max(0, y0), max(0, x0), min(h, y1), min(w, x1)

    def tile_at(self, y: float, x: float) -> tuple[int, int] | None:
        """The (row, col) of the tile holding level-0 pixel (y, x), or None outside."""
        oy, ox = self.origin_px
        t = self.tile_size_px
        # Same rounding as tile_bounds, so a pixel is in the tile whose bounds hold it.
        r = math.floor((y - oy) / t)
        r += (y >= round(oy + (r + 1) * t)) - (y < round(oy + r * t))
        c = math.floor((x - ox) / t)
        c += (x >= round(ox + (c + 1) * t)) - (x < round(ox + c * t))
        rows, cols = self.shape
        return (r, c) if 0 <= r < rows and 0 <= c < cols else None

    # --- QC -----------------------------------------------------------------
    def excluded(self, threshold_um: float = DEFAULT_THRESHOLD_UM) -> np.ndarray:
        """Scored tiles further from focus than ``threshold_um``."""
        with np.errstate(invalid="ignore"):
            return self.scored & (self.defocus_um > threshold_um)

    def mask(self, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded: np.ndarray | None = None) -> np.ndarray:
        """Usable tissue per tile: scored and not excluded (by threshold or by hand)."""
        ex = self.excluded(threshold_um) if excluded is None else np.asarray(excluded, bool)
        return self.scored & ~ex

    def pixel_mask(self, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None, downsample: float = 1.0) -> np.ndarray:
        """The tile mask rendered at level-0 pixels / ``downsample`` (uint8, 255 = usable)."""
        grid = self.mask(threshold_um, excluded)
        h, w = self.image_shape
        oh, ow = max(1, round(h / downsample)), max(1, round(w / downsample))
        ys = ((np.arange(oh) + 0.5) * downsample - self.origin_px[0]) / self.tile_size_px
        xs = ((np.arange(ow) + 0.5) * downsample - self.origin_px[1]) / self.tile_size_px
        ri = np.clip(np.floor(ys).astype(int), 0, grid.shape[0] - 1)
        ci = np.clip(np.floor(xs).astype(int), 0, grid.shape[1] - 1)
        return (grid[np.ix_(ri, ci)] * 255).astype(np.uint8)

    def summary(self, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None) -> dict:
        """Slide-level figures: tissue %, excluded %, median, p90, mean and pooled defocus, pass/fail.

        ``pooled_um`` is the weighted spatial pooling of :mod:`napari_focusq.scoring.pooling`;
        ``uncertain_pct`` the share of scored tiles marked uncertain (NaN without certainty).
        """
        scored = self.scored
        n_tiles = scored.size
        n_scored = int(scored.sum())
        ex = self.excluded(threshold_um) if excluded is None else (np.asarray(excluded, bool) & scored)
        vals = self.defocus_um[scored]
        w = self.tissue_fraction[scored]
        median = float(np.median(vals)) if n_scored else float("nan")
        p90 = float(np.percentile(vals, 90)) if n_scored else float("nan")
        mean_w = float(np.sum(vals * w) / np.sum(w)) if n_scored and np.sum(w) > 0 else float("nan")
        excluded_pct = 100.0 * ex.sum() / n_scored if n_scored else float("nan")
        from napari_focusq.scoring.pooling import pooled_from_map

        unc = self.extra.get("uncertain")
        uncertain_pct = (100.0 * float((np.asarray(unc, bool) & scored).sum()) / n_scored
                         if unc is not None and n_scored and np.shape(unc) == scored.shape else float("nan"))
        return {
            "tiles": n_tiles,
            "tissue_tiles": n_scored,
            "tissue_pct": 100.0 * n_scored / n_tiles if n_tiles else 0.0,
            "excluded_pct": excluded_pct,
            "median_um": median,
            "p90_um": p90,
            "mean_um": mean_w,
            "pass": bool(n_scored) and p90 <= threshold_um,
            # Weighted spatial pooling (tissue x information, worst 10 % emphasised): pooling.py.
            "pooled_um": pooled_from_map(self),
            "uncertain_pct": uncertain_pct,
        }

    # --- writers ------------------------------------------------------------
    def rows(self, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None):
        """One dict per tile, with the columns of :data:`CSV_COLUMNS`."""
        ex = self.excluded(threshold_um) if excluded is None else np.asarray(excluded, bool)
        rows, cols = self.shape
        # Certainty layers (certainty.py) when the model has an ensemble; empty cells otherwise.
        cert, unc = self.extra.get("certainty"), self.extra.get("uncertain")
        if cert is not None and np.shape(cert) != self.shape:
            cert = unc = None
        if unc is not None and np.shape(unc) != self.shape:
            unc = None
        # NaN/inf working pixels masked before scoring (pipeline); such a tile is uncertain
        bad = self.extra.get("nonfinite_px")
        if bad is not None and np.shape(bad) != self.shape:
            bad = None
        # The objective the µm are for (user_optics), on every row: a CSV has no header block.
        o = self.extra.get("optics") or {}
        w = o.get("wavelengths_um") or [""]
        optics = {"na": o.get("na", ""), "immersion_n": o.get("immersion_n", ""), "wavelength_um": w[len(w) // 2]}
        for r in range(rows):
            for c in range(cols):
                y0, x0, y1, x1 = self.tile_bounds(r, c)
                d = self.defocus_um[r, c]
                k = np.nan if cert is None else float(cert[r, c])
                yield {
                    "row": r, "col": c, "y": y0, "x": x0, "height": y1 - y0, "width": x1 - x0,
                    "tissue_fraction": round(float(self.tissue_fraction[r, c]), 4),
                    "defocus_um": "" if not np.isfinite(d) else round(float(d), 4),
                    "excluded": int(bool(ex[r, c])),
                    "certainty": "" if not (np.isfinite(d) and np.isfinite(k)) else round(k, 4),
                    "uncertain": int(bool(unc[r, c])) if unc is not None and np.isfinite(d)
                    and (np.isfinite(k) or (bad is not None and bad[r, c] > 0)) else "",
                    **optics,
                    "nonfinite_px": "" if bad is None else int(bad[r, c]),
                }

    def to_csv(self, path, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None) -> Path:
        """Write one row per tile (level-0 pixel bounds, tissue, µm, excluded), atomically."""
        buf = io.StringIO()
        wr = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        wr.writeheader()
        wr.writerows(self.rows(threshold_um, excluded))
        return write_text(path, buf.getvalue())

    def geojson(self, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None) -> dict:
        """Excluded regions as QuPath annotations (merged polygons, level-0 pixel x/y)."""
        ex = self.excluded(threshold_um) if excluded is None else np.asarray(excluded, bool)
        h, w = self.image_shape
        oy, ox = self.origin_px
        t = self.tile_size_px

        def to_px(r, c):  # grid vertex -> [x, y] in level-0 pixels, clipped to the image
            return [float(min(w, max(0, round(ox + c * t)))), float(min(h, max(0, round(oy + r * t))))]

        features = []
        for rings in grid_polygons(ex):
            coords = [[to_px(r, c) for r, c in ring] for ring in rings]
            features.append({
                "type": "Feature",
                "id": feature_id(self.source, "excluded", coords),
                "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {
                    "objectType": "annotation",
                    "name": f"out of focus (> {threshold_um:g} µm)" if excluded is None else "excluded",
                    "classification": {"name": "Ignore*", "color": [180, 180, 180]},
                    "isLocked": False,
                },
            })
        out = {"type": "FeatureCollection", "features": features}
        if self.extra.get("optics"):
            # A GeoJSON foreign member: QuPath reads the features and ignores it.
            out["focusq"] = {"optics": self.extra["optics"], "model": self.model, "units": "um"}
        return out

    def to_geojson(self, path, threshold_um: float = DEFAULT_THRESHOLD_UM, excluded=None) -> Path:
        """Write :meth:`geojson` to ``path`` atomically."""
        return write_text(path, json.dumps(self.geojson(threshold_um, excluded), indent=1))
