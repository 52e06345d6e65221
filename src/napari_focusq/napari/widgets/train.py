"""Train focus model dock widget: simulated-defocus training from in-focus images, or
fine-tuning on a tile collection (the "Collection" source, train_collection.py).

Drives :func:`napari_focusq.training.fit.iter_fit` (or ``training.collection.iter_train_collection``)
in a worker; draws the loss curve and a validation calibration plot live; the saved
checkpoint is listed in Focus QC at once, and selected there only if it passed its checks.
"""
from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QCheckBox, QFileDialog, QFormLayout, QProgressBar, QVBoxLayout, QWidget

from napari_focusq.models.registry import PRESETS
from napari_focusq.napari.widgets import forms, notify
from napari_focusq.napari.widgets.jobs import JobRunner, show_progress
from napari_focusq.napari.widgets.train_folder import folder_config, folder_images, layer_image
from napari_focusq.napari.widgets.train_job import TrainJob, _guard_triton, judge_model, time_left
from napari_focusq.napari.widgets.train_plots import TrainPlots
from napari_focusq.napari.widgets.workers import settings


class TrainWidget(QWidget):
    """Train a defocus model on in-focus images (a folder and/or the current image)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = JobRunner(self, on_started=self._on_started)
        self._tmpdir = None
        self.checkpoint: str | None = None
        self._first_epoch = None  # (epoch, time) the time-left estimate counts from
        self._build()
        self._wire()
        self._restore()
        self._refresh_layers()

    def _build(self):
        from superqt import QCollapsible

        from napari_focusq.napari.widgets.train_collection import CollectionSource

        form = self.form = QFormLayout()
        self.source = forms.combo(["Folder", "Collection"], "Folder: in-focus images, defocus simulated from them. "
                                  "Collection: tiles collected while reviewing (Focus QC's “Collect tiles”), "
                                  "fine-tuning a model you have.")
        form.addRow("Source", self.source)
        self.collection = CollectionSource()
        form.addRow(self.collection)
        row, self.folder, self.folder_btn = forms.path_row(
            "Folder of sharp, in-focus images (SVS, TIFF, PNG, JPEG); defocus is simulated from them. At least two "
            "source images: one is held out for validation.", "Browse…", "Choose the folder of in-focus images.",
            placeholder="folder of in-focus images")
        form.addRow("Images", row)
        self.use_layer = QCheckBox("also the image layer")
        self.use_layer.setToolTip("Add the chosen image layer (its shown plane) to the training images.")
        self.layer_combo = forms.combo([], "Image layer to add (must be in focus and have a pixel size).")
        lr = forms.hrow(self.use_layer, self.layer_combo, stretch=1)
        form.addRow("", lr)
        self.modality = forms.combo(["brightfield", "fluorescence"], "What the images are; the model learns this "
                                                                     "modality.")
        form.addRow("Modality", self.modality)
        self.pixel_size = forms.spin(0.0, 100.0, decimals=4, step=0.01, suffix=" µm", special="from each file",
                                     tip="Size of one pixel of the images, in µm (e.g. 0.25 for 40x, 0.5 for 20x). "
                                         "Leave at “from each file” when the files record it; a value here is used "
                                         "for every image.")
        adv = QFormLayout()  # machine-learning settings, folded away under "Advanced"
        self.preset = forms.combo(list(PRESETS), "fast: laptop-CPU model (default). inception: the founding "
                                                         "paper's InceptionV3 (slow without a GPU).")
        adv.addRow("Preset", self.preset)
        self.z_max = forms.spin(0.5, 30.0, 8.0, decimals=2, suffix=" µm",
                                tip="Largest simulated defocus |z|; training covers 0 to this.")
        form.addRow("Defocus range", self.z_max)
        form.addRow("Pixel size", self.pixel_size)
        self._folder_rows = [row, lr, self.modality, self.z_max, self.pixel_size]  # hidden with the Collection source
        self.blur = forms.combo(["optical", "gaussian"], "optical: widefield defocus PSF (recommended); gaussian: "
                                                         "the founding paper's blur.")
        adv.addRow("Blur model", self.blur)
        self.epochs = forms.spin(1, 100000, 300, tip="Passes over the simulated tiles.")
        adv.addRow("Epochs", self.epochs)
        self.lr = forms.spin(1e-6, 1.0, 1e-3, decimals=6, step=1e-4,
                             tip="Learning rate (fast: 1e-3; inception: 1e-5 as in the paper).")
        adv.addRow("Learning rate", self.lr)
        self.batch = forms.spin(1, 4096, 128, tip="Tiles per optimisation step.")
        adv.addRow("Batch size", self.batch)
        self.samples = forms.spin(2, 100000, 400, tip="Simulated tiles drawn from each training image (validation "
                                                      "gets half).")
        adv.addRow("Tiles per image", self.samples)
        orow, self.out, self.out_btn = forms.path_row("Where the trained checkpoint (.safetensors) is saved.",
                                                      "Save as…", "Choose the checkpoint file.",
                                                      text=str(Path.home() / "focus-model.safetensors"))
        form.addRow("Save to", orow)
        self.advanced = QCollapsible("Advanced (machine-learning settings)")
        adv_w = QWidget()
        adv_w.setLayout(adv)
        self.advanced.addWidget(adv_w)
        self.workload = forms.label("", "How much work the settings ask for; the time left is measured from the "
                                        "first epochs once training runs.")
        self.train_btn = forms.button("Train", "Simulate defocus from the images and train; the model appears in "
                                               "Focus QC.")
        self.cancel_btn = forms.button("Cancel", "Stop training; nothing is saved.", enabled=False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Progress of the current stage (also in the activity dock).")
        self.status = forms.label("", "Latest training figures.")
        self.verdict = forms.label("", "The trained model's result on held-out images, in plain words.")
        self.plots = TrainPlots()
        self.plots.setToolTip("Left: training loss and validation error per epoch. Right: validation tiles, "
                              "predicted vs true defocus, with the fitted line and R².")
        # no scroll area: with the machine-learning settings folded away the panel fits a 1000 px
        # screen, and the plots take the height that is left (in a scroll area they grew wider than the dock)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.advanced)
        lay.addWidget(self.workload)
        lay.addLayout(forms.hrow(self.train_btn, self.cancel_btn))
        for w in (self.progress_bar, self.status, self.verdict):
            lay.addWidget(w)
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
        self.train_btn.clicked.connect(self.train)
        self.cancel_btn.clicked.connect(self.cancel)
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

    def _layer_image(self) -> tuple[str, float]:
        """The chosen layer's shown plane written to a temporary TIFF (path, pixel size)."""
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="focusq-train-")
        try:
            got = layer_image(self.viewer, self.layer_combo.currentText(), tmp.name)
        except BaseException:
            tmp.cleanup()
            raise
        self._tmpdir = tmp
        return got

    def config(self):
        """The :class:`~napari_focusq.training.config.TrainConfig` of the current settings (raises ValueError)."""
        return folder_config(self)

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
        self.plots.set_source("collection" if coll else "folder")
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
    @property
    def busy(self) -> bool:
        return self.runner.busy

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
        return self.runner.start(TrainJob(self, gen))

    def cancel(self, *_):
        self.runner.cancel()

    def _on_started(self):
        self.train_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.status.setText("preparing simulated tiles…")

    def _on_event(self, ev):
        show_progress(self.progress_bar, ev)
        if ev.message:
            self.status.setText(f"{ev.stage}: {ev.message}" + self._time_left(ev))
        if ev.stage == "train" and "val_pred" in ev.data:
            self.plots.update_epoch(ev.data, last=bool(ev.total) and ev.done >= ev.total)

    def _time_left(self, ev) -> str:
        """" · about 12 min left", measured from the epochs done so far (from the second one on)."""
        import time

        text, self._first_epoch = time_left(self._first_epoch, ev, time.monotonic())
        return text

    def _on_result(self, path):
        """Judge the new model on its validation figures; only a model that passes is put into use."""
        self.checkpoint = str(path)
        ok, text = judge_model(path)
        self.verdict.setText(text)
        self.verdict.setStyleSheet("" if ok else "color: #e69f00;")

    def _job_over(self, aborted: bool):
        if aborted:
            self.status.setText("cancelled")
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
        self.train_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)


