"""The napari manifest, exercised through npe2 as napari uses it: every command imports, and
every reader, writer, sample and widget contribution runs and gives the right thing.

(Format-specific reader tests live elsewhere; this file is about the manifest's wiring.)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

from napari_focusq.scoring.focusmap import FocusMap  # noqa: E402

PLUGIN = "napari-focusq"
REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "src" / "napari_focusq" / "napari.yaml"
# As in conftest.py (not imported from it: tests/_qt has a conftest module of the same name).
SVS = REPO / "src" / "napari_focusq" / "data" / "CMU-1-Small-Region.svs"
SVS_PIXEL_UM = 0.499


@pytest.fixture(scope="module")
def pm():
    pm = npe2.PluginManager.instance()
    pm.discover()
    if PLUGIN not in {m.name for m in pm.iter_manifests()}:  # not installed: register the source tree's
        pm.register(npe2.PluginManifest.from_file(MANIFEST))
    return pm


def test_manifest_validates_and_every_command_imports():
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()  # raises if any python_name does not import
    assert manifest.name == PLUGIN
    ids = {c.id for c in manifest.contributions.commands}
    used = ({r.command for r in manifest.contributions.readers} | {w.command for w in manifest.contributions.writers}
            | {w.command for w in manifest.contributions.widgets}
            | {s.command for s in manifest.contributions.sample_data})
    assert used <= ids and ids == used  # no contribution without its command, no orphan command


def test_installed_manifest_is_the_source_trees(pm):
    m = pm.get_manifest(PLUGIN)
    src = npe2.PluginManifest.from_file(MANIFEST)
    assert [c.id for c in m.contributions.commands] == [c.id for c in src.contributions.commands]


def test_reader_through_npe2(pm, slide_plane):
    layers = npe2.read([str(SVS)], stack=False, plugin_name=PLUGIN)
    assert len(layers) == 1
    data, meta, kind = layers[0]
    assert kind == "image" and meta["rgb"]
    level0 = data[0] if isinstance(data, list) else data
    assert tuple(level0.shape) == slide_plane.shape
    np.testing.assert_array_equal(np.asarray(level0[2000:2016, 650:666]), slide_plane[2000:2016, 650:666])
    assert meta["scale"][-1] == pytest.approx(SVS_PIXEL_UM, abs=1e-6)  # the file's MPP, in µm


def test_reader_declines_what_it_cannot_read(pm, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("not an image")
    assert not [r for r in pm.iter_compatible_readers([str(txt)]) if r.plugin_name == PLUGIN]


def _qc_layer():
    """An "Excluded tiles" labels layer as the Focus QC widget makes it: a 3 x 4 grid of
    100-px tiles over a 300 x 350 image (the last column partial), two tiles excluded."""
    d = np.array([[0.5, 0.5, 3.0, 0.5], [0.5, np.nan, 0.5, 0.5], [0.5, 0.5, 0.5, 4.0]], np.float32)
    fm = FocusMap(d, np.isfinite(d).astype(np.float32), 100.0, (300, 350), 0.5, "brightfield", "fast 1")
    from napari_focusq.napari.writer import EXCLUSION_LAYER_KIND

    excluded = fm.excluded(2.0).astype(np.uint8)
    meta = {"name": "Excluded tiles", "scale": (50.0, 50.0),
            "metadata": {"focusq": EXCLUSION_LAYER_KIND, "focusmap": fm}}
    return excluded, meta, fm


def test_mask_writer_through_npe2(pm, tmp_path):
    import tifffile

    data, meta, fm = _qc_layer()
    out = npe2.write(str(tmp_path / "mask.tif"), [(data, meta, "labels")], plugin_name=PLUGIN)
    assert out == [str(tmp_path / "mask.tif")]
    mask = tifffile.imread(out[0])
    assert mask.shape == (300, 350)
    # 255 where a tile is scored and kept; 0 on excluded tiles and the unscored one.
    assert mask[50, 50] == 255 and mask[50, 250] == 0 and mask[150, 150] == 0 and mask[250, 320] == 0
    assert (mask == 255).sum() == 300 * 350 - 3 * 100 * 100 + 100 * 50  # the partial tile is 50 px wide


def test_mask_writer_refuses_other_labels_through_npe2(pm, tmp_path):
    from napari_focusq.napari.writer import ExportError

    data, meta, _ = _qc_layer()
    with pytest.raises(ExportError, match="not a Focus QC exclusion layer"):
        npe2.write(str(tmp_path / "mask.tif"), [(data, {"name": "mine"}, "labels")], plugin_name=PLUGIN)
    assert not (tmp_path / "mask.tif").exists()


def test_geojson_writer_through_npe2(pm, tmp_path):
    from shapely.geometry import shape

    data, meta, fm = _qc_layer()
    out = npe2.write(str(tmp_path / "excluded.geojson"), [(data, meta, "labels")], plugin_name=PLUGIN)
    gj = json.loads(Path(out[0]).read_text())
    polys = [shape(f["geometry"]) for f in gj["features"]]
    assert len(polys) == 2 and all(p.is_valid for p in polys)
    assert sorted(p.bounds for p in polys) == [(200.0, 0.0, 300.0, 100.0), (300.0, 200.0, 350.0, 300.0)]


def test_cmu1_sample_through_npe2(pm, slide_plane):
    contrib = next(s for s in pm.get_manifest(PLUGIN).contributions.sample_data if s.key == "cmu1")
    (data, meta, kind), = contrib.open()
    level0 = data[0] if isinstance(data, list) else data
    assert kind == "image" and tuple(level0.shape) == slide_plane.shape
    np.testing.assert_array_equal(np.asarray(level0[1500:1508, 800:808]), slide_plane[1500:1508, 800:808])
    assert meta["scale"][-1] == pytest.approx(SVS_PIXEL_UM, abs=1e-6)


@pytest.mark.slow
def test_defocus_demo_sample_through_npe2(pm, slide_plane):
    contrib = next(s for s in pm.get_manifest(PLUGIN).contributions.sample_data if s.key == "defocus_demo")
    (demo, dmeta, dkind), (truth, tmeta, tkind) = contrib.open()
    assert dkind == tkind == "image" and demo.shape == slide_plane.shape and dmeta["rgb"]
    assert sorted(np.unique(truth).tolist()) == [0.0, 1.0, 2.0, 4.0] and truth.shape == slide_plane.shape[:2]
    # The 0 µm band is the slide itself; the 4 µm band is blurred (far less fine detail).
    from napari_focusq.scoring.focus import variance_of_laplacian

    rows0 = np.flatnonzero((truth == 0).all(1))
    rows4 = np.flatnonzero((truth == 4).all(1))
    np.testing.assert_array_equal(demo[rows0], slide_plane[rows0])
    g = lambda a: a[..., 1].astype(np.float32)
    assert variance_of_laplacian(g(demo[rows4])) < 0.2 * variance_of_laplacian(g(slide_plane[rows4]))


@pytest.mark.parametrize("widget", ["Focus QC", "Train focus model"])
def test_widget_contributions_dock_through_napari(widget, make_napari_viewer_proxy):
    pytest.importorskip("qtpy")
    viewer = make_napari_viewer_proxy()
    dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, widget)
    expected = {"Focus QC": "FocusQCWidget", "Train focus model": "TrainWidget"}[widget]
    assert type(w).__name__ == expected
    assert not dock.isHidden() and not w.isHidden()  # docked and shown in the viewer
