"""The QuPath tiles as a file QuPath opens: ``<stem>.tiles.geojson.zip`` beside the contract's ``.gz``.

QuPath's ``PathIO.readObjects`` (v0.4+) chooses by the name's ending: ``.zip`` (every entry
read again by its own name), ``.geojson``/``.json``, ``.qpdata``; anything else, ``.gz``
included, gives no objects. :func:`qupath_reads` mirrors that rule.
"""
from __future__ import annotations

import gzip
import json
import zipfile

import numpy as np

from napari_focusq.export.qupath import import_annotations, read_geojson
from napari_focusq.scoring.focusmap import FocusMap


def qupath_reads(path) -> list[dict]:
    """The features QuPath's PathIO.readObjects would find in ``path`` (its rule by file-name ending)."""
    name = str(path).lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return [f for n in zf.namelist() if n.lower().endswith((".json", ".geojson"))
                    for f in json.loads(zf.read(n))["features"]]
    if name.endswith((".json", ".geojson")):
        return json.loads(open(path, "rb").read())["features"]
    return []  # .gz and all else: "Unable to read objects"


def _big_map(rows=150, cols=170, seed=1) -> FocusMap:
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 5, (rows, cols)).astype(np.float32)
    d[rng.random(d.shape) < 0.3] = np.nan  # glass
    tissue = np.where(np.isfinite(d), rng.uniform(0.3, 1, d.shape), 0.0)
    return FocusMap(d, tissue, tile_size_px=640.0, image_shape=(rows * 640 - 100, cols * 640 - 300),
                    pixel_size_um=0.25, modality="brightfield", model="fast", source="x/big.svs")


def test_outputs_include_a_zip_qupath_opens(tmp_path):
    from napari_focusq.export.outputs import write_outputs

    fm = _big_map()
    paths = write_outputs(fm, tmp_path, "big", threshold_um=2.0)
    gz, zp = tmp_path / "big.tiles.geojson.gz", tmp_path / "big.tiles.geojson.zip"
    assert paths["tiles_geojson"] == gz and paths["tiles_qupath"] == zp
    assert qupath_reads(gz) == []  # why the zip exists
    feats = qupath_reads(zp)
    assert feats == json.loads(gzip.decompress(gz.read_bytes()))["features"]  # the same objects in both
    assert sum(f["properties"]["objectType"] == "tile" for f in feats) == fm.defocus_um.size  # 25 500 tiles
    with zipfile.ZipFile(zp) as zf:
        (info,) = zf.infolist()
        assert info.filename == "big.tiles.geojson" and info.compress_type == zipfile.ZIP_DEFLATED
    # small: deflate like the gzip (a few hundred bytes of zip headers more), a tenth or less of the JSON
    assert zp.stat().st_size <= gz.stat().st_size * 1.05 + 1024
    assert zp.stat().st_size < info.file_size / 5
    # our importer reads both, to the same exclusions
    a = import_annotations(fm, read_geojson(zp))
    b = import_annotations(fm, read_geojson(gz))
    assert np.array_equal(a["excluded"], b["excluded"])
