"""The training panel's "Folder" source: in-focus images of a folder (and the shown plane of a layer)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_focusq.napari import layers as L


def folder_images(folder) -> list[str]:
    """Image files directly in ``folder`` that the reader understands, sorted (io.formats'
    one folder scanner, as ``focusq train FOLDER`` uses)."""
    from napari_focusq.io.formats import find_images

    p = Path(folder)
    if not p.is_dir():
        return []
    return [str(f) for f in find_images(p)]


def layer_image(viewer, name: str, tmpdir) -> tuple[str, float]:
    """Layer ``name``'s shown plane (a stack's: the one Focus QC would score) as a TIFF in ``tmpdir``.

    Returns (path, pixel size in µm); raises ValueError for a missing layer or pixel size.
    """
    from napari_focusq.demo import write_tif

    if name not in viewer.layers:
        raise ValueError("choose an image layer to add, or untick “also the image layer”")
    layer = viewer.layers[name]
    px = L.layer_pixel_size_um(layer)
    if not px:
        raise ValueError(f"layer {name!r} has no pixel size in µm; open it with the napari-focusq reader "
                         "or set its scale in µm")
    data = L.level0(layer)
    if L.is_stack(layer):
        data = data[L.shown_plane(viewer, layer)]
    path = Path(tmpdir) / f"layer_{''.join(ch if ch.isalnum() else '_' for ch in name)}.tif"
    write_tif(path, np.asarray(data), pixel_size_um=px)
    return str(path), px


def folder_config(panel):
    """The TrainConfig of the training panel's Folder source (raises ValueError with what is wrong)."""
    from napari_focusq.training.config import TrainConfig

    images = folder_images(panel.folder.text()) if panel.folder.text().strip() else []
    if panel.folder.text().strip() and not Path(panel.folder.text()).is_dir():
        raise ValueError(f"{panel.folder.text()}: no such folder")
    if panel.use_layer.isChecked():
        images.append(panel._layer_image()[0])
    if len(images) < 2:
        raise ValueError(f"training needs at least two in-focus images (one is held out for validation); "
                         f"found {len(images)}")
    out = Path(panel.out.text()).expanduser()
    if not out.parent.is_dir():
        raise ValueError(f"{out.parent}: the folder to save the model in does not exist")
    px = panel.pixel_size.value()
    pixel_sizes = {Path(p).name: px for p in images} if px > 0 else {}
    return TrainConfig(images=images, out=str(out), preset=panel.preset.currentText(), pixel_sizes=pixel_sizes,
                       modality=panel.modality.currentText(), epochs=panel.epochs.value(), lr=panel.lr.value(),
                       batch_size=panel.batch.value(), z_max_um=panel.z_max.value(), blur=panel.blur.currentText(),
                       samples_per_image=panel.samples.value(),
                       val_samples_per_image=max(16, panel.samples.value() // 2), name=out.stem)
