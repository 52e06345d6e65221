"""The training panel's plots: the loss curve and the validation calibration, drawn live."""
from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QVBoxLayout, QWidget


class TrainPlots(QWidget):
    """Loss curve and validation calibration (predicted vs true µm, fitted line, R²)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.2, 2.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.ax_loss, self.ax_cal = self.figure.subplots(1, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self.source = "folder"
        self.clear()

    #: Titles of the second plot and of its MAE line, by what the run validates on.
    LABELS = {"folder": ("validation", "val MAE (µm)"),
              # A collection: fresh simulated draws of the training slides' tiles; the held-out
              # slides' real tiles give the AUC line instead (no µm truth for them).
              "collection": ("simulated draws (training slides)", "simulated MAE (µm)")}

    def set_source(self, source: str):
        """``"folder"`` or ``"collection"``: what the plots' titles and lines say."""
        self.source = source
        self.clear()

    def clear(self):
        self.history: list[dict] = []
        for ax in (self.ax_loss, self.ax_cal):
            ax.clear()
        self._style()
        self.canvas.draw_idle()

    def _style(self):
        self.ax_loss.set_title("training", fontsize=8)
        self.ax_loss.set_xlabel("epoch", fontsize=7)
        self.ax_cal.set_title(self.LABELS[self.source][0], fontsize=8)
        self.ax_cal.set_xlabel("true |z| (µm)", fontsize=7)
        self.ax_cal.set_ylabel("predicted (µm)", fontsize=7)
        for ax in (self.ax_loss, self.ax_cal):
            ax.tick_params(labelsize=6)

    def update_epoch(self, d: dict, last: bool = True, min_interval: float = 0.3):
        """Add one epoch's ``{"epoch", "loss", "val_mae", "val_r2", "val_pred", "val_true"}``.

        Redraws at most every ``min_interval`` s (fast epochs would swamp the GUI), and
        always for the ``last`` epoch.
        """
        import time

        from matplotlib.ticker import MaxNLocator

        self.history.append({k: d.get(k) for k in ("epoch", "loss", "val_mae", "val_r2", "heldout_auc")})
        now = time.monotonic()
        if not last and now - getattr(self, "_drawn", 0.0) < min_interval:
            return
        self._drawn = now
        ep = [h["epoch"] for h in self.history]
        self.ax_loss.clear()
        self.ax_loss.plot(ep, [h["loss"] for h in self.history], "o-", ms=2, label="loss")
        self.ax_loss.plot(ep, [h["val_mae"] for h in self.history], "s-", ms=2,
                          label=self.LABELS[self.source][1])
        if self.history[-1]["heldout_auc"] is not None:
            self.ax_loss.plot(ep, [h["heldout_auc"] for h in self.history], "^-", ms=2, label="held-out AUC")
        self.ax_loss.legend(fontsize=6)
        self.ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: no 1.25
        self.ax_cal.clear()
        pred, true = np.asarray(d.get("val_pred", []), float), np.asarray(d.get("val_true", []), float)
        if pred.size:
            self.ax_cal.scatter(true, pred, s=3, alpha=0.4)
            hi = float(max(true.max(), pred.max(), 1.0))
            self.ax_cal.plot([0, hi], [0, hi], "k:", lw=0.8)
            if np.ptp(true) > 0:
                slope, icpt = np.polyfit(true, pred, 1)
                self.ax_cal.plot([0, hi], [icpt, icpt + slope * hi], "r-", lw=1,
                                 label=f"fit {slope:.2f}x{icpt:+.2f}")
            self.ax_cal.text(0.03, 0.92, f"R² {d.get('val_r2', float('nan')):.3f}  MAE {d.get('val_mae', 0):.2f} µm",
                             transform=self.ax_cal.transAxes, fontsize=6)
            self.ax_cal.legend(fontsize=6, loc="lower right")
        self._style()
        self.canvas.draw_idle()
