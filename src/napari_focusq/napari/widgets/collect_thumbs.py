"""The collect box's strip of thumbnails: the latest tiles collected, newest first."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QHBoxLayout, QLabel, QWidget

#: Thumbnails shown in the strip (the latest tiles collected).
N_THUMBS = 8
THUMB_PX = 56


def _pixmap(tile: np.ndarray, size: int) -> QPixmap:
    t = np.asarray(tile)
    if t.dtype != np.uint8:  # 16-bit grey: shown stretched to its own range
        lo, hi = float(t.min()), float(t.max())
        t = ((t - lo) / (hi - lo or 1) * 255).astype(np.uint8)
    if t.ndim == 3 and t.shape[-1] == 4:
        t = t[..., :3]
    t = np.ascontiguousarray(t)
    h, w = t.shape[:2]
    if t.ndim == 2:
        img = QImage(t.data, w, h, w, QImage.Format.Format_Grayscale8)
    else:
        img = QImage(t.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy()).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.SmoothTransformation)


class ThumbStrip(QWidget):
    """N_THUMBS labels side by side; :meth:`show_tiles` fills them from a collection."""

    def __init__(self, parent=None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        self.thumbs = []
        for _ in range(N_THUMBS):
            t = QLabel()
            t.setFixedSize(THUMB_PX, THUMB_PX)
            t.setAlignment(Qt.AlignmentFlag.AlignCenter)
            row.addWidget(t)
            self.thumbs.append(t)
        row.addStretch(1)
        self.setToolTip("The latest tiles collected (newest first), as stored: the model's working resolution.")

    def show_tiles(self, coll, ids) -> None:
        """Records ``ids`` of ``coll`` as thumbnails (None: a collection that cannot be read)."""
        by_id = {r.id: r for r in coll} if coll is not None else {}
        for k, lab in enumerate(self.thumbs):
            rec = by_id.get(ids[k]) if k < len(ids) else None
            if rec is None:
                lab.clear()
                lab.setToolTip("")
                continue
            try:
                lab.setPixmap(_pixmap(coll.load_tile(rec), THUMB_PX))
            except (OSError, ValueError):
                lab.setText("?")
            where = f"tile {rec.row}, {rec.col}" if rec.row is not None else f"y {rec.y}, x {rec.x}"
            lab.setToolTip(f"{Path(rec.slide).name}, {where}: {rec.label}"
                           + (f" (read {rec.reading_um:.2f} µm)" if rec.reading_um is not None else ""))
