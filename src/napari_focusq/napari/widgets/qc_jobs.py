"""Focus QC's jobs: score the shown plane (or every plane), find the sharpest plane, de-blur a preview.

Each is a :class:`~napari_focusq.napari.widgets.jobs.Job` run by the panel's JobRunner;
it holds what the run needs to show its result (where the heatmap goes, which plane
was scored) instead of a dict of strings on the panel.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from napari_focusq.napari import edge_tiles as E
from napari_focusq.napari import layers as L
from napari_focusq.napari.widgets import notify
from napari_focusq.napari.widgets.jobs import Job
from napari_focusq.napari.widgets.redraw import Throttle


@dataclass
class Placement:
    """Where a result's layers go and what it was scored on (a run, or a stored result under review)."""

    layer: str | None  # the image layer's name (None: the slide is not open)
    z: int | str | None  # the plane scored: an index, "per-tile", or None for a 2-D image
    px: float
    scale: tuple
    translate: tuple
    units: tuple = ("µm", "µm")
    running: object = None  # the heatmap layer filled while scoring (becomes the result's)
    redraw: Throttle | None = None
    composite: np.ndarray | None = None  # best plane per tile: the all-in-focus image
    excluded: np.ndarray | None = None  # stored exclusions of a review
    stored: bool = False
    extra: dict = field(default_factory=dict)


class _QCJob(Job):
    title = "Focus QC"
    bar = "Focus QC"
    cancelled_text = "Focus QC: cancelled."

    def __init__(self, qc):
        self.qc = qc

    def on_event(self, ev) -> None:
        self.qc._on_event(ev)


class ScoreJob(_QCJob):
    """Score an image layer's shown plane (the slide pipeline), or every plane keeping each tile's best."""

    def __init__(self, qc, layer, plane, z, config, *, per_tile: bool):
        """``config``: the run's :class:`~napari_focusq.config.ScoreConfig` (its pixel size set)."""
        from napari_focusq.scoring.grid import TileGrid

        super().__init__(qc)
        px = config.pixel_size_um
        grid = TileGrid(plane.shape[:2], px)
        scale, translate = L.grid_geometry(layer.scale, layer.translate, grid.tile_size_px, grid.origin_px)
        # tiles the slide's edge cuts stay out of the running heatmap, which would draw them whole,
        # past the edge: the result draws them at their true size (edge_tiles.py)
        self._cut = E.cut_tiles(grid.shape, grid.origin_px, grid.tile_size_px, plane.shape[:2])[0]
        self.place = Placement(layer.name, "per-tile" if per_tile else z, px, scale, translate, L.grid_units(layer))
        self.source = layer.metadata.get("path") or layer.name
        self.t0 = time.perf_counter()
        self.description = f"Focus QC: scoring {layer.name}" + (" (best plane per tile)" if per_tile else "")
        kw = {"modality": config.modality, "model": config.model, "optics": config.optics}
        self._scoring = None  # the ScoringJob, whose cancel reaches the decode threads
        if per_tile:
            self._gen = _iter_per_tile(L.level0(layer), px, layer.name, **kw)
        else:
            from napari_focusq.scoring.viewer_source import ScoringJob

            # the slide pipeline: the file behind the layer, or the layer's own levels
            self._scoring = ScoringJob(layer.data, dict(layer.metadata), multiscale=bool(layer.multiscale),
                                       pixel_size_um=px, name=layer.name, z=z, **kw)
            self._gen = self._scoring.events()

    def events(self):
        return self._gen

    def cancel(self) -> None:
        if self._scoring is not None:
            self._scoring.cancel()

    @property
    def cancelled(self) -> bool:
        return self._scoring is not None and self._scoring.cancelled

    def on_event(self, ev) -> None:
        super().on_event(ev)
        if ev.stage == "score" and "grid_shape" in ev.data:
            self._fill_running(ev.data["grid_shape"], ev.data.get("tiles", ()))

    def _fill_running(self, grid_shape, tiles) -> None:
        """The heatmap fills in tile by tile while scoring runs."""
        p, viewer = self.place, self.qc.viewer
        layer = p.running
        if layer is None or layer not in viewer.layers:
            data = np.full(tuple(grid_shape), np.nan, np.float32)
            kw = L.heatmap_kwargs(p.scale, p.translate)
            kw.update(name=f"{L.HEATMAP_NAME} [scoring]", units=p.units)
            layer = p.running = viewer.add_image(data, **kw)
            p.redraw = Throttle(lambda: layer.refresh() if layer in viewer.layers else None)
        elif not layer.colorbar.visible:
            # the colour legend from the second batch on: its first drawing takes ~0.4 s of GUI
            # time, spent while scoring runs rather than after it, and not before the first tiles
            from napari_focusq.napari.widgets.result_layers import label_colorbar

            label_colorbar(layer)
        if L.fill_tiles(layer.data, [t for t in tiles if not self._cut[t[0], t[1]]]) is not None:
            # Redraws are throttled: each one re-renders the canvas on the cores scoring uses.
            p.redraw.request()

    def on_result(self, result) -> None:
        if isinstance(result, tuple):  # best plane per tile: (FocusMap, all-in-focus composite)
            result, self.place.composite = result
        result.extra["seconds"] = time.perf_counter() - self.t0
        if result.source in (None, "image"):
            result.source = str(self.source)
        self.qc.show_result(result, self.place)
        self.qc.result_shown.emit(result)  # e.g. Review slides stores it for a queued slide

    def on_finished(self, aborted: bool) -> None:
        p = self.place
        if p.redraw is not None:
            p.redraw.cancel()
        if p.running is not None and p.running in self.qc.viewer.layers:
            self.qc.viewer.layers.remove(p.running)  # a cancelled or failed run leaves no partial layer


class SharpestJob(_QCJob):
    """Find the sharpest plane of a stack and move the z slider to it."""

    def __init__(self, qc, layer, measure: str):
        super().__init__(qc)
        self.layer, self.measure = layer.name, measure
        self.stack = L.level0(layer)
        self.description = f"Focus QC: sharpest slice of {layer.name}"

    def events(self):
        from napari_focusq.scoring.focus import iter_sharpest_slice

        return iter_sharpest_slice(self.stack, measure=self.measure)

    def on_result(self, result) -> None:
        index, _scores = result
        viewer = self.qc.viewer
        if self.layer in viewer.layers:
            L.show_plane(viewer, viewer.layers[self.layer], index)
        notify.info(f"Focus QC: sharpest plane is z = {index} ({self.measure}).")


class DeblurJob(_QCJob):
    """De-blur the 3x3 tiles of a region with the predicted defocus; a preview layer beside the image."""

    def __init__(self, qc, layer, data, fmap, region):
        super().__init__(qc)
        self.layer, self.data, self.fmap, self.region = layer.name, data, fmap, region
        self.description = f"Focus QC: de-blurring a preview of {layer.name}"

    def events(self):
        return _iter_deblur(self.data, self.fmap, self.region)

    def on_result(self, result) -> None:
        from napari_focusq.napari.widgets.result_layers import show_preview

        show_preview(self.qc, self.layer, self.region, *result)


def _iter_per_tile(stack, px: float, name: str, *, modality: str, model, optics=None):
    """Score every plane, keep each tile's best; return (FocusMap, all-in-focus composite)."""
    from napari_focusq.io.arrays import ArraySource
    from napari_focusq.progress import Progress
    from napari_focusq.scoring.pipeline import iter_score_slide
    from napari_focusq.scoring.zstack import all_in_focus

    src = ArraySource(stack, px, name=name, stack=True)
    fmap = yield from iter_score_slide(src, pixel_size_um=px, modality=modality, model=model, slice="per-tile",
                                       optics=optics)
    yield Progress("all in focus", 0, 1, "composing the best planes")
    return fmap, all_in_focus(stack, fmap)


def _iter_deblur(image, fmap, region):
    """De-blur one region (one step: Richardson-Lucy has no cancel point inside); returns (array, µm)."""
    from napari_focusq.optics.deblur import deblur_region
    from napari_focusq.progress import Progress

    y0, x0, y1, x1 = region
    a, b = fmap.tile_at(y0, x0), fmap.tile_at(y1 - 1, x1 - 1)
    d = fmap.defocus_um[a[0]:b[0] + 1, a[1]:b[1] + 1]
    d = d[np.isfinite(d)]
    yield Progress("deblur", 0, 1, "de-blurring the preview region")
    out = deblur_region(image, fmap, y0, x0, y1, x1)
    yield Progress("deblur", 1, 1, "done")
    return out, float(np.median(d)) if d.size else float("nan")


def checked_input(qc):
    """(layer, plane, z, pixel size) to score in Focus QC ``qc``, or None after telling the user why.

    The plane is level 0's, for a stack the one shown on the z slider (``layers.shown_plane``).
    """
    from napari.layers import Image

    layer = qc.selected_layer()
    if layer is None or not isinstance(layer, Image):
        notify.error("Focus QC: choose an image layer to score (open a slide or a sample first).")
        return None
    px = qc.pixel_size.value()
    if not px > 0:
        notify.error(f"Focus QC: {layer.name!r} has no pixel size; enter it in µm (e.g. 0.25 for a 40x "
                     "scan, 0.5 for 20x) so defocus can be given in µm.")
        return None
    data, z = L.level0(layer), None
    if L.is_stack(layer):
        if layer.ndim > 3:
            notify.error(f"Focus QC: layer {layer.name!r} has {layer.ndim} axes; Focus QC scores (z, y, x) stacks")
            return None
        z = L.shown_plane(qc.viewer, layer)
        data = data[z]
    return layer, data, z, px
