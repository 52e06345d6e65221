"""Train focus model dock widget: simulated-defocus training from in-focus images, or
fine-tuning on a tile collection (the "Collection" source, train_collection.py).

Drives :func:`napari_focusq.training.fit.iter_fit` (or ``training.collection.iter_train_collection``)
in a worker; draws the loss curve and a validation calibration plot live; the saved
checkpoint is listed in Focus QC at once, and selected there only if it passed its checks.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                            QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from napari_focusq.napari import layers as L
from napari_focusq.napari.widgets import notify
from napari_focusq.napari.widgets.workers import ActivityBar, model_registry, progress_worker, settings

IMAGE_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".png", ".jpg", ".jpeg")



def folder_images(folder) -> list[str]:
    """Image files directly in ``folder`` that the reader understands, sorted."""
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


class _Plots(QWidget):
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
        self.ax_cal.set_title("validation", fontsize=8)
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

        self.history.append({k: d.get(k) for k in ("epoch", "loss", "val_mae", "val_r2")})
        now = time.monotonic()
        if not last and now - getattr(self, "_drawn", 0.0) < min_interval:
            return
        self._drawn = now
        ep = [h["epoch"] for h in self.history]
        self.ax_loss.clear()
        self.ax_loss.plot(ep, [h["loss"] for h in self.history], "o-", ms=2, label="loss")
        self.ax_loss.plot(ep, [h["val_mae"] for h in self.history], "s-", ms=2, label="val MAE (µm)")
        self.ax_loss.legend(fontsize=6)
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


class TrainWidget(QWidget):
    """Train a defocus model on in-focus images (a folder and/or the current image)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._worker = None
        self._pbar = None
        self._tmpdir = None
        self.checkpoint: str | None = None
        self._first_epoch = None  # (epoch, time) the time-left estimate counts from
        self._build()
        self._wire()
        self._restore()
        self._refresh_layers()

    def _build(self):
        form = QFormLayout()
        self.form = form
        self.source = QComboBox()
        self.source.addItems(["Folder", "Collection"])
        self.source.setToolTip("Folder: in-focus images, defocus simulated from them. Collection: tiles collected "
                               "while reviewing (Focus QC's “Collect tiles”), fine-tuning a model you have.")
        form.addRow("Source", self.source)
        from napari_focusq.napari.widgets.train_collection import CollectionSource

        self.collection = CollectionSource()
        form.addRow(self.collection)
        row = QHBoxLayout()
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder of in-focus images")
        self.folder.setToolTip("Folder of sharp, in-focus images (SVS, TIFF, PNG, JPEG); defocus is simulated "
                               "from them. At least two source images: one is held out for validation.")
        self.folder_btn = QPushButton("Browse…")
        self.folder_btn.setToolTip("Choose the folder of in-focus images.")
        row.addWidget(self.folder, 1)
        row.addWidget(self.folder_btn)
        form.addRow("Images", row)
        self.use_layer = QCheckBox("also the image layer")
        self.use_layer.setToolTip("Add the chosen image layer (its shown plane) to the training images.")
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer to add (must be in focus and have a pixel size).")
        lr = QHBoxLayout()
        lr.addWidget(self.use_layer)
        lr.addWidget(self.layer_combo, 1)
        form.addRow("", lr)
        self._folder_rows = [row, lr]  # hidden with the Collection source
        self.modality = QComboBox()
        self.modality.addItems(["brightfield", "fluorescence"])
        self.modality.setToolTip("What the images are; the model learns this modality.")
        form.addRow("Modality", self.modality)
        self._folder_rows.append(self.modality)
        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setRange(0.0, 100.0)
        self.pixel_size.setDecimals(4)
        self.pixel_size.setSingleStep(0.01)
        self.pixel_size.setSuffix(" µm")
        self.pixel_size.setSpecialValueText("from each file")
        self.pixel_size.setToolTip("Size of one pixel of the images, in µm (e.g. 0.25 for 40x, 0.5 for 20x). "
                                   "Leave at “from each file” when the files record it; a value here is used "
                                   "for every image.")
        adv = QFormLayout()  # machine-learning settings, folded away under "Advanced"
        self.preset = QComboBox()
        self.preset.addItems(["fast", "inception"])
        self.preset.setToolTip("fast: laptop-CPU model (default). inception: the founding paper's InceptionV3 "
                               "(slow without a GPU).")
        adv.addRow("Preset", self.preset)
        self.z_max = QDoubleSpinBox()
        self.z_max.setRange(0.5, 30.0)
        self.z_max.setValue(8.0)
        self.z_max.setSuffix(" µm")
        self.z_max.setToolTip("Largest simulated defocus |z|; training covers 0 to this.")
        form.addRow("Defocus range", self.z_max)
        form.addRow("Pixel size", self.pixel_size)
        self._folder_rows += [self.z_max, self.pixel_size]
        self.blur = QComboBox()
        self.blur.addItems(["optical", "gaussian"])
        self.blur.setToolTip("optical: widefield defocus PSF (recommended); gaussian: the founding paper's blur.")
        adv.addRow("Blur model", self.blur)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100000)
        self.epochs.setValue(300)
        self.epochs.setToolTip("Passes over the simulated tiles.")
        adv.addRow("Epochs", self.epochs)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.lr.setToolTip("Learning rate (fast: 1e-3; inception: 1e-5 as in the paper).")
        adv.addRow("Learning rate", self.lr)
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.batch.setValue(128)
        self.batch.setToolTip("Tiles per optimisation step.")
        adv.addRow("Batch size", self.batch)
        self.samples = QSpinBox()
        self.samples.setRange(2, 100000)
        self.samples.setValue(400)
        self.samples.setToolTip("Simulated tiles drawn from each training image (validation gets half).")
        adv.addRow("Tiles per image", self.samples)
        orow = QHBoxLayout()
        self.out = QLineEdit(str(Path.home() / "focus-model.safetensors"))
        self.out.setToolTip("Where the trained checkpoint (.safetensors) is saved.")
        self.out_btn = QPushButton("Save as…")
        self.out_btn.setToolTip("Choose the checkpoint file.")
        orow.addWidget(self.out, 1)
        orow.addWidget(self.out_btn)
        form.addRow("Save to", orow)
        from superqt import QCollapsible

        self.advanced = QCollapsible("Advanced (machine-learning settings)")
        adv_w = QWidget()
        adv_w.setLayout(adv)
        self.advanced.addWidget(adv_w)
        self.workload = QLabel("")
        self.workload.setWordWrap(True)
        self.workload.setToolTip("How much work the settings ask for; the time left is measured from the "
                                 "first epochs once training runs.")

        btns = QHBoxLayout()
        self.train_btn = QPushButton("Train")
        self.train_btn.setToolTip("Simulate defocus from the images and train; the model appears in Focus QC.")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop training; nothing is saved.")
        self.cancel_btn.setEnabled(False)
        btns.addWidget(self.train_btn)
        btns.addWidget(self.cancel_btn)
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Progress of the current stage (also in the activity dock).")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("Latest training figures.")
        self.plots = _Plots()
        self.plots.setToolTip("Left: training loss and validation error per epoch. Right: validation tiles, "
                              "predicted vs true defocus, with the fitted line and R².")

        # no scroll area: with the machine-learning settings folded away the panel fits a 1000 px
        # screen, and the plots take the height that is left (in a scroll area they grew wider than the dock)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.advanced)
        lay.addWidget(self.workload)
        lay.addLayout(btns)
        lay.addWidget(self.progress_bar)
        lay.addWidget(self.status)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setToolTip("The trained model's result on held-out images, in plain words.")
        lay.addWidget(self.verdict)
        lay.addWidget(self.plots, 1)

    def _wire(self):
        ev = self.viewer.layers.events
        for e in (ev.inserted, ev.removed, ev.reordered):
            e.connect(self._refresh_layers)
        self.folder_btn.clicked.connect(self._pick_folder)
        self.out_btn.clicked.connect(self._pick_out)
        self.preset.currentTextChanged.connect(self._preset_defaults)
        self.source.currentTextChanged.connect(self._on_source)
        self.collection.folder.textChanged.connect(self._update_workload)
        model_registry().added.connect(self.collection.refresh_models)
        model_registry().listed.connect(self.collection.refresh_models)
        self.train_btn.clicked.connect(self.train)
        self.cancel_btn.clicked.connect(self.cancel)
        self.destroyed.connect(_stop_later(self))
        for sig in (self.epochs.valueChanged, self.samples.valueChanged, self.folder.textChanged,
                    self.use_layer.toggled):
            sig.connect(self._update_workload)

    def _restore(self):
        s = settings()
        self.folder.setText(s.value("train/folder", ""))
        self.out.setText(s.value("train/out", self.out.text()))
        self.modality.setCurrentText(s.value("train/modality", "brightfield"))
        self.preset.setCurrentText(s.value("train/preset", "fast"))
        self.blur.setCurrentText(s.value("train/blur", "optical"))
        self.z_max.setValue(float(s.value("train/z_max_um", 8.0)))
        self.epochs.setValue(int(s.value("train/epochs", 300)))
        self.lr.setValue(float(s.value("train/lr", 1e-3)))
        self.batch.setValue(int(s.value("train/batch_size", 128)))
        self.samples.setValue(int(s.value("train/samples_per_image", 400)))
        self.collection.restore()
        self.source.setCurrentText(s.value("train/source", "Folder"))
        self._on_source()

    def _save(self):
        s = settings()
        for k, v in {"folder": self.folder.text(), "out": self.out.text(), "modality": self.modality.currentText(),
                     "preset": self.preset.currentText(), "blur": self.blur.currentText(),
                     "z_max_um": self.z_max.value(), "epochs": self.epochs.value(), "lr": self.lr.value(),
                     "batch_size": self.batch.value(), "samples_per_image": self.samples.value()}.items():
            s.setValue(f"train/{k}", v)
        s.setValue("train/source", self.source.currentText())
        self.collection.save()

    @property
    def from_collection(self) -> bool:
        return self.source.currentText() == "Collection"

    def _on_source(self, *_):
        """Show the rows of the chosen source (a collection needs none of the folder recipe's)."""
        coll = self.from_collection
        for w in self._folder_rows:
            self.form.setRowVisible(w, not coll)
        self.form.setRowVisible(self.collection, coll)
        self.advanced.setVisible(not coll)
        self.plots.setVisible(not coll)  # the simulated recipe's plots; a collection reports in words
        self._update_workload()

    def _update_workload(self, *_):
        """The work the settings ask for, in plain numbers (the time left is measured once it runs)."""
        if self.from_collection:
            self.workload.setText("" if self.collection.update_counts() else
                                  "Choose a collection with tiles of at least two slides.")
            return
        folder = self.folder.text().strip()
        n = len(folder_images(folder)) if folder and Path(folder).is_dir() else 0
        n += int(self.use_layer.isChecked())
        if n < 2:
            self.workload.setText("Choose at least two in-focus images (one is kept aside to check the model).")
            return
        n_val = max(1, round(n * 0.25))
        passes = (n - n_val) * self.samples.value() * self.epochs.value()
        self.workload.setText(f"{n} images ({n_val} kept aside to check the model) × {self.samples.value()} tiles × "
                              f"{self.epochs.value()} epochs = {passes:,} tile passes. The time left is shown "
                              "from the first epochs on.")

    def _preset_defaults(self, preset: str):
        from napari_focusq.training.config import PRESET_DEFAULTS

        d = PRESET_DEFAULTS[preset]
        self.epochs.setValue(d["epochs"])
        self.lr.setValue(d["lr"])
        self.batch.setValue(d["batch_size"])

    def _refresh_layers(self, *_):
        from napari.layers import Image

        cur = self.layer_combo.currentText()
        self.layer_combo.clear()
        names = [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and not ly.metadata.get("focusq")]
        self.layer_combo.addItems(names)
        if cur in names:
            self.layer_combo.setCurrentText(cur)

    def _pick_folder(self):
        d = QFileDialog.getExistingDirectory(self, "Folder of in-focus images", self.folder.text())
        if d:
            self.folder.setText(d)

    def _pick_out(self):
        p, _ = QFileDialog.getSaveFileName(self, "Save model as", self.out.text(), "Model (*.safetensors)")
        if p:
            self.out.setText(p if p.endswith(".safetensors") else p + ".safetensors")

    # ---------------------------------------------------------------- training
    def _layer_image(self) -> tuple[str, float] | None:
        """The chosen layer's shown plane written to a temporary TIFF (path, pixel size)."""
        from napari_focusq.demo import write_tif

        name = self.layer_combo.currentText()
        if name not in self.viewer.layers:
            raise ValueError("choose an image layer to add, or untick “also the image layer”")
        layer = self.viewer.layers[name]
        px = L.layer_pixel_size_um(layer)
        if not px:
            raise ValueError(f"layer {name!r} has no pixel size in µm; open it with the napari-focusq reader "
                             "or set its scale in µm")
        data = L.level0(layer)
        if L.is_stack(layer):
            z = int(self.viewer.dims.current_step[self.viewer.dims.ndim - layer.ndim])
            data = data[min(max(z, 0), data.shape[0] - 1)]
        self._tmpdir = tempfile.TemporaryDirectory(prefix="focusq-train-")
        path = Path(self._tmpdir.name) / f"layer_{''.join(ch if ch.isalnum() else '_' for ch in name)}.tif"
        write_tif(path, np.asarray(data), pixel_size_um=px)
        return str(path), px

    def config(self):
        """The :class:`~napari_focusq.training.config.TrainConfig` of the current settings (raises ValueError)."""
        from napari_focusq.training.config import TrainConfig

        images = folder_images(self.folder.text()) if self.folder.text().strip() else []
        if self.folder.text().strip() and not Path(self.folder.text()).is_dir():
            raise ValueError(f"{self.folder.text()}: no such folder")
        if self.use_layer.isChecked():
            images.append(self._layer_image()[0])
        if len(images) < 2:
            raise ValueError(f"training needs at least two in-focus images (one is held out for validation); "
                             f"found {len(images)}")
        out = Path(self.out.text()).expanduser()
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent}: the folder to save the model in does not exist")
        px = self.pixel_size.value()
        pixel_sizes = {Path(p).name: px for p in images} if px > 0 else {}
        return TrainConfig(images=images, out=str(out), preset=self.preset.currentText(), pixel_sizes=pixel_sizes,
                           modality=self.modality.currentText(), epochs=self.epochs.value(), lr=self.lr.value(),
                           batch_size=self.batch.value(), z_max_um=self.z_max.value(), blur=self.blur.currentText(),
                           samples_per_image=self.samples.value(),
                           val_samples_per_image=max(16, self.samples.value() // 2), name=out.stem)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def train(self, *_):
        """Start training in a worker (returns it), or tell the user what is wrong."""
        if self.busy:
            notify.info("Training is already running; wait for it or press Cancel.")
            return None
        from napari_focusq.training.fit import iter_fit

        try:
            if self.from_collection:
                out = Path(self.out.text()).expanduser()
                if not out.parent.is_dir():
                    raise ValueError(f"{out.parent}: the folder to save the model in does not exist")
                gen = self.collection.generator(out)
            else:
                gen = iter_fit(self.config())
        except (ValueError, OSError) as exc:
            notify.error(f"Train focus model: {exc}")
            return None
        _guard_triton()

        self._save()
        self.plots.clear()
        self.checkpoint = None
        self._first_epoch = None
        self.verdict.setText("")
        self._worker = progress_worker(gen, on_started=self._on_started, on_event=self._on_event,
                                       on_result=self._on_result, on_error=self._on_error,
                                       on_finished=self._on_finished)
        self._worker.start()
        return self._worker

    def cancel(self, *_):
        if self._worker is not None:
            self._worker.quit()

    def _on_started(self):
        self.train_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.status.setText("preparing simulated tiles…")
        self._pbar = ActivityBar("Training")

    def _on_event(self, ev):
        # the activity bar processes events while updating: our own state first, the bar last
        if ev.total:
            self.progress_bar.setMaximum(ev.total)
            self.progress_bar.setValue(ev.done)
            self.progress_bar.setFormat(f"{ev.stage} %v/%m")
        if ev.message:
            self.status.setText(f"{ev.stage}: {ev.message}" + self._time_left(ev))
        if ev.stage == "train" and "val_pred" in ev.data:
            self.plots.update_epoch(ev.data, last=bool(ev.total) and ev.done >= ev.total)
        if self._pbar is not None:
            self._pbar.update(ev)

    def _time_left(self, ev) -> str:
        """" · about 12 min left", measured from the epochs done so far (from the second one on)."""
        import time

        if ev.stage != "train" or not ev.total:
            return ""
        now = time.monotonic()
        if self._first_epoch is None or ev.done <= self._first_epoch[0]:
            self._first_epoch = (ev.done, now)  # the first epoch also pays for start-up: measure after it
            return ""
        done0, t0 = self._first_epoch
        left = (now - t0) / (ev.done - done0) * (ev.total - ev.done)
        return f" · about {_duration(left)} left" if ev.done < ev.total else ""

    def _on_result(self, path):
        """Judge the new model on its validation figures; only a model that passes is put into use."""
        from napari_focusq.errors import FocusQError
        from napari_focusq.models.verdict import collection_verdict, validation_verdict
        from napari_focusq.models.checkpoint import load_checkpoint

        self.checkpoint = str(path)
        try:
            meta = load_checkpoint(path)[1]
        except (FocusQError, OSError, ValueError):
            meta = {}
        ok, text = (collection_verdict if "collection" in meta else validation_verdict)(meta)
        self.verdict.setText(text)
        self.verdict.setStyleSheet("" if ok else "color: #e69f00;")
        # a failed model is listed (the user may choose it anyway) but never selected for them
        model_registry().add(self.checkpoint, select=ok)
        if ok:
            notify.info(f"Trained model saved to {path}. {text} It is now selected in Focus QC.")
        else:
            notify.info(f"Trained model saved to {path}. {text} It is listed in Focus QC's Model list but not "
                         "selected; choose it there to use it anyway.")

    def _on_error(self, exc):
        from napari_focusq.errors import FocusQError

        msg = str(exc) if isinstance(exc, (FocusQError, ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
        notify.error(f"Training failed: {msg}")

    def _on_finished(self):
        if self._worker is not None and self._worker.abort_requested:
            notify.info("Training cancelled; no model was saved.")
            self.status.setText("cancelled")
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        self._worker = None
        self.train_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)


def _duration(seconds: float) -> str:
    """12 s, 4 min, 1 h 20 min."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _guard_triton() -> None:
    """Keep torch from importing triton inside napari.

    torch's optimisers import torch._dynamo on first use, which imports triton if it is
    installed; triton's bundled LLVM clashes with the LLVM of Mesa's OpenGL drivers that
    napari has already loaded, and the process segfaults. Training here never compiles
    GPU kernels, so triton is hidden (unless something imported it already).
    """
    import sys

    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
    import torch._dynamo  # noqa: F401  (import once, in the GUI thread)


def _stop_later(widget):
    holder = {"w": widget}

    def stop(*_):
        w = holder.pop("w", None)
        worker = getattr(w, "_worker", None) if w is not None else None
        if worker is not None:
            try:
                worker.quit()
            except RuntimeError:
                pass

    return stop
