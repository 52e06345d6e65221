"""The layers of a Focus QC result: heatmap, exclusions, hatching, edge tiles, best plane, certainty,
all-in-focus composite, region of interest and the de-blurring preview.

Functions of the panel (``qc``), which holds the shown result (``fmap``, ``heatmap``,
``excluded``, ``extras``); result layers carry the result's id in their metadata, so the
panel recognises them through the proxies napari hands out.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager, nullcontext

import numpy as np

from napari_focusq.napari import edge_tiles as E
from napari_focusq.napari import layers as L
from napari_focusq.napari.widgets import notify


def _remove(viewer, *layers) -> None:
    for ly in layers:
        if ly is not None and ly in viewer.layers:
            viewer.layers.remove(ly)


@contextmanager
def batched(viewer, removing):
    """Layers added and removed as one change when ``removing`` holds a layer of the viewer:
    napari collects garbage and rebuilds its scene graph after every layer it removes
    (gc.collect() takes ~0.2 s with torch loaded, so a result's five layers cost a second of
    GUI time); in a batch it does so once, at the end. A batch that removes nothing would
    still collect once: layers are then only added, outside a batch."""
    batch = getattr(viewer.layers, "batched_update", None)
    if batch is None or not any(ly is not None and ly in viewer.layers for ly in removing):
        batch = nullcontext
    with batch():
        yield


def show_result(qc, fmap, place) -> None:
    """Replace the previous result's layers by those of ``fmap`` placed by ``place`` (a qc_jobs.Placement)."""
    running = place.running
    # The running heatmap becomes the result's (the all-in-focus composite must go under
    # it, so a per-tile run adds a new one): napari runs a full gc.collect() for every
    # layer it removes, seconds of GUI time with torch loaded.
    reuse = running is not None and running in qc.viewer.layers and place.composite is None
    old = [qc.heatmap, qc.excluded, None if reuse else running, *qc.extras.values()]
    with batched(qc.viewer, old):
        _remove(qc.viewer, *old)
        _show_result(qc, fmap, place, reuse)


def _show_result(qc, fmap, place, reuse: bool) -> None:
    viewer = qc.viewer
    scale, translate, units = place.scale, place.translate, place.units
    running = place.running
    qc.extras = {}
    qc.fmap = fmap
    qc.scored_on = {"layer": place.layer, "z": place.z}
    qc.result_id = uuid.uuid4().hex
    qc.roi = None
    _add_extras(qc, fmap, place)
    # result layers are recognised by their metadata (the viewer may hand out proxies)
    ident = {"focusmap": fmap, "source": fmap.source, "model": fmap.model, "result_id": qc.result_id}
    kw = L.heatmap_kwargs(scale, translate)
    kw.update(metadata={"focusq": "heatmap", **ident, "optics": fmap.extra.get("optics")}, units=units)
    if reuse:
        place.running = None  # kept: the job's end removes only a partial layer
        if place.redraw is not None:
            place.redraw.cancel()
        running.data = E.whole_tiles_grid(fmap)  # partial edge tiles: the edge layer below
        running.name = kw["name"]
        running.metadata.update(kw["metadata"])
        qc.heatmap = running
    else:
        qc.heatmap = viewer.add_image(E.whole_tiles_grid(fmap), **kw)
    qc.heatmap.colorbar.visible = True
    rects, rgba = E.edge_shapes(fmap, qc.heatmap.colormap, L.CONTRAST_UM)
    if rects:  # tiles cut by the slide's edge, drawn only over the slide (edge_tiles.py)
        qc.extras["edge"] = viewer.add_shapes(
            rects, face_color=rgba, **E.edge_kwargs(scale, translate, units, {"result_id": qc.result_id}))
    kw = L.excluded_kwargs(scale, translate)
    kw.update(metadata={"focusq": "excluded", **ident}, units=units)
    labels, qc.edits = qc.review.exclusions_for(fmap, place.excluded)
    qc.excluded = viewer.add_labels(labels, **kw)
    qc.review.hook(qc.heatmap)
    qc.review.hook(qc.excluded)
    qc.excluded.events.paint.connect(qc.review.on_paint)
    hs, ht = L.hatch_geometry(scale, translate)
    qc.extras["hatch"] = viewer.add_image(
        L.hatch_rgba(qc.excluded.data > 0, fmap), name=L.HATCH_NAME, rgb=True, scale=hs, translate=ht,
        units=units, interpolation2d="nearest", metadata={"focusq": "hatch", "result_id": qc.result_id})
    label_colorbar(qc.heatmap)
    viewer.layers.selection.active = qc.heatmap
    qc.result_changed()
    notes = fmap.extra.get("notes") or []
    if not fmap.scored.any():
        notify.info(f"Focus QC: no result – {L.no_result_reason(fmap)}.")
        return
    if place.stored:
        return  # a stored result: the review widget says what it opened
    notify.info(f"Focus QC: scored {int(fmap.scored.sum())} tissue tiles with {fmap.model}"
                + (f" ({'; '.join(notes)})" if notes else ""))


def _add_extras(qc, fmap, place) -> None:
    """Composite (under the heatmap), best plane and certainty layers of a result, where it has them."""
    viewer, scale, translate = qc.viewer, place.scale, place.translate
    image = viewer.layers[place.layer] if place.layer in viewer.layers else None
    if place.composite is not None and image is not None:
        kw = {"name": L.ALL_IN_FOCUS_NAME, "scale": tuple(image.scale[-2:]),
              "translate": tuple(image.translate[-2:]), "rgb": bool(image.rgb), "units": L.grid_units(image),
              "metadata": {"focusq": "all_in_focus", "pixel_size_um": place.px}}
        if not image.rgb:
            kw.update(colormap=image.colormap.name, contrast_limits=tuple(image.contrast_limits))
        qc.extras["all_in_focus"] = viewer.add_image(place.composite, **kw)
    best = fmap.extra.get("best_plane")
    if best is not None and np.shape(best) == fmap.shape:
        grid = np.where(np.asarray(best) >= 0, best, np.nan).astype(np.float32)
        n_z = np.shape(fmap.extra.get("defocus_per_plane", [[0]]))[0]
        qc.extras["best_plane"] = viewer.add_image(
            grid, **{**L.best_plane_kwargs(scale, translate, n_z), "units": place.units})
        label_colorbar(qc.extras["best_plane"])  # its legend: shown with the layer
    cert = fmap.extra.get("certainty")
    if cert is not None and np.shape(cert) == fmap.shape:
        data = np.where(fmap.scored, cert, np.nan).astype(np.float32)
        qc.extras["certainty"] = viewer.add_image(
            data, **{**L.certainty_kwargs(scale, translate), "units": place.units})


def label_colorbar(layer) -> None:
    """The layer's name ("Defocus (µm)") beside its colour bar: the bar's unit and legend."""
    try:
        layer.colorbar.visible = True
        layer.name_overlay.position = layer.colorbar.position
        layer.name_overlay.visible = True
    except AttributeError:  # napari without per-layer overlays: the layer list still names it
        pass


def refresh_hatch(qc) -> None:
    hatch = qc.extras.get("hatch")
    if hatch is None or hatch not in qc.viewer.layers or qc.excluded is None or qc.fmap is None:
        return
    hatch.data = L.hatch_rgba(np.asarray(qc.excluded.data) > 0, qc.fmap)


def toggle_overlay(qc) -> None:
    """One key (H): the tissue alone, or the heatmap and exclusions over it."""
    layers = [ly for ly in (qc.heatmap, qc.extras.get("edge"), qc.extras.get("hatch"))
              if ly is not None and ly in qc.viewer.layers]
    if not layers:
        return
    show = not any(ly.visible for ly in layers)
    for ly in layers:
        ly.visible = show


def show_roi(qc, rings) -> None:
    """The region of interest as an outline (Shapes layer) over the slide."""
    heat = qc.heatmap
    if heat is None or heat not in qc.viewer.layers:
        return
    t = float(qc.fmap.tile_size_px)
    s = np.asarray(heat.scale[-2:], float) / t
    oy, ox = qc.fmap.origin_px
    base = np.asarray(heat.translate[-2:], float) - (np.array([oy, ox]) + t / 2 - 0.5) * s
    # level-0 pixel edge p is at data coordinate p - 0.5 of the image layer
    shapes = [base + (np.asarray(r, float)[:, ::-1] - 0.5) * s for r in rings]
    _remove(qc.viewer, *[ly for ly in list(qc.viewer.layers) if (ly.metadata or {}).get("focusq") == "roi"])
    qc.extras["roi"] = qc.viewer.add_shapes(
        shapes, shape_type="polygon", name=L.ROI_NAME, edge_color="white", face_color="transparent",
        edge_width=0.04 * float(heat.scale[-1]), units=heat.units,  # a 25th of a tile: seen at any zoom
        metadata={"focusq": "roi", "result_id": qc.result_id})
    qc.viewer.layers.selection.active = heat  # clicks keep toggling tiles


def preview_source(qc):
    """(image layer, level-0 (Y, X[, C]) array) the shown result was scored on, or None."""
    sc = qc.scored_on or {}
    if sc.get("z") == "per-tile":
        layer = qc.extras.get("all_in_focus")
        return (layer, layer.data) if layer is not None and layer in qc.viewer.layers else None
    layer = qc.viewer.layers[sc["layer"]] if sc.get("layer") in qc.viewer.layers else None
    if layer is None:
        return None
    data = L.level0(layer)
    return layer, (data if sc.get("z") is None else data[sc["z"]])


def preview_region(qc, world_yx=None) -> tuple[int, int, int, int] | None:
    """Level-0 (y0, x0, y1, x1) of the 3x3 tiles around ``world_yx`` (default: the view's centre)."""
    src, fmap = preview_source(qc), qc.fmap
    if src is None or fmap is None:
        return None
    layer = src[0]
    world_yx = list(qc.viewer.camera.center)[-2:] if world_yx is None else list(world_yx)[-2:]
    s, tr = list(layer.scale)[-2:], list(layer.translate)[-2:]
    rows, cols = fmap.shape
    H, W = fmap.image_shape
    y = min(max((world_yx[0] - tr[0]) / s[0], 0), H - 1)
    x = min(max((world_yx[1] - tr[1]) / s[1], 0), W - 1)
    r, c = fmap.tile_at(round(y), round(x)) or (rows // 2, cols // 2)
    r0, c0 = max(r - 1, 0), max(c - 1, 0)
    r1, c1 = min(r + 1, rows - 1), min(c + 1, cols - 1)
    y0, x0 = fmap.tile_bounds(r0, c0)[:2]
    y1, x1 = fmap.tile_bounds(r1, c1)[2:]
    return y0, x0, y1, x1


def show_preview(qc, layer_name: str, region, out, defocus: float) -> None:
    """The de-blurred region as its own layer over the image (the image is never changed)."""
    layer = qc.viewer.layers[layer_name] if layer_name in qc.viewer.layers else None
    if layer is None:
        return
    _remove(qc.viewer, qc.extras.pop("preview", None))
    y0, x0, y1, x1 = region
    kw = {"name": L.PREVIEW_NAME, "scale": tuple(layer.scale[-2:]),
          "translate": L.region_translate(layer.scale, layer.translate, y0, x0), "rgb": bool(layer.rgb),
          "units": ("µm", "µm"),
          "metadata": {"focusq": "preview", "region_px": (y0, x0, y1, x1), "defocus_um": defocus,
                       "source_layer": layer.name, "note": "de-blurring preview, not measured data"}}
    if not layer.rgb:
        kw.update(colormap=layer.colormap.name, contrast_limits=tuple(layer.contrast_limits))
    qc.extras["preview"] = qc.viewer.add_image(out, **kw)
    notify.info(f"Focus QC: de-blurred preview of pixels ({y0}, {x0})–({y1}, {x1}) at {defocus:.2f} µm; "
                "a preview for looking, not data (the image is unchanged).")


def show_stored(qc, fmap, layer=None, *, excluded=None, threshold_um: float | None = None) -> None:
    """Show a stored result (the review of a batch folder) over ``layer``, without rescoring.

    ``excluded`` are the stored exclusions ((rows, cols) bool); tiles where they differ
    from the threshold's count as set by hand.
    """
    from napari_focusq.napari.widgets.qc_jobs import Placement

    if threshold_um is not None:
        qc.review.set_threshold_quietly(float(threshold_um))
    if layer is not None:
        scale, translate = L.grid_geometry(layer.scale, layer.translate, fmap.tile_size_px, fmap.origin_px)
        units, name = L.grid_units(layer), layer.name
    else:  # the slide itself is missing: the map alone, in µm
        px = float(fmap.pixel_size_um)
        scale, translate = L.grid_geometry((px, px), (0.0, 0.0), fmap.tile_size_px, fmap.origin_px)
        units, name = ("µm", "µm"), None
    show_result(qc, fmap, Placement(name, None, fmap.pixel_size_um, scale, translate, units, excluded=excluded,
                                    stored=True))
