"""One mask writer and one downsample rule for focusq score, batch, review and the napari writer."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_focusq.errors import ExportError, FocusQError
from napari_focusq.export.masks import MASK_MAX_PX, mask_downsample, save_mask, write_tissue_mask
from napari_focusq.napari.writer import write_mask
from napari_focusq.scoring.focusmap import FocusMap


def _slide_map(shape=(40_000, 25_000), tile=640.0):
    rows, cols = int(np.ceil(shape[0] / tile)), int(np.ceil(shape[1] / tile))
    d = np.random.default_rng(0).uniform(0, 4, (rows, cols)).astype(np.float32)
    return FocusMap(defocus_um=d, tissue_fraction=np.ones_like(d), tile_size_px=tile, image_shape=shape,
                    pixel_size_um=0.25, modality="brightfield", model="fast test")


def test_the_napari_writer_follows_the_cli_rule_and_metadata(tmp_path):
    fmap = _slide_map()
    excluded = fmap.excluded(2.0)
    cli = write_tissue_mask(fmap, tmp_path / "cli.mask.png", excluded=excluded)
    (viewer,) = write_mask(str(tmp_path / "viewer.mask.png"), excluded.astype(np.uint8),
                           {"metadata": {"focusq": "excluded", "focusmap": fmap}})
    a, b = Image.open(cli), Image.open(viewer)
    ds = mask_downsample(fmap.image_shape)
    assert ds == 10 and max(a.size) <= MASK_MAX_PX  # 40 000 px / 4096 -> 10, not the old 64 Mpx rule's 5
    for im in (a, b):
        assert im.size == (2500, 4000)
        assert im.text["downsample"] == str(ds) and float(im.text["pixel_size_um"]) == pytest.approx(2.5)
        assert json.loads(im.text["image_shape"]) == [40_000, 25_000] and im.text["software"] == "napari-focusq"
    assert np.array_equal(np.asarray(a), np.asarray(b))  # the same mask, whoever wrote it
    # the viewer's file keeps the pHYs scale it always had; focusq score's stays without it
    assert b.info["dpi"][0] == pytest.approx(25400 / 2.5, rel=1e-3) and "dpi" not in a.info


def test_tiff_masks_keep_their_resolution_tags(tmp_path):
    import tifffile

    fmap = _slide_map((3000, 2000), 320.0)
    (out,) = write_mask(str(tmp_path / "m.tif"), fmap.excluded(2.0).astype(np.uint8),
                        {"metadata": {"focusq": "excluded", "focusmap": fmap}})
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.shape == (3000, 2000)  # under 4096 a side: level 0
        num, den = page.tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 0.25)


@pytest.mark.parametrize("name", ["m.jpg", "m"])
def test_a_bad_suffix_is_an_export_error_and_writes_nothing(tmp_path, name):
    with pytest.raises(ExportError, match="written as .tif, .tiff or .png") as e:
        save_mask(tmp_path / name, np.zeros((4, 4), np.uint8), 1.0)
    assert isinstance(e.value, FocusQError) and isinstance(e.value, OSError)  # both families catch it
    assert list(tmp_path.iterdir()) == []


def test_save_mask_records_only_what_it_is_told(tmp_path):
    # the QC widget's export gives the pixel size of its own downsample, not the downsample:
    # a "downsample" chunk of 1 there would lie about a 16x mask
    out = save_mask(tmp_path / "w.png", np.full((8, 8), 255, np.uint8), 8.0)
    im = Image.open(out)
    assert "downsample" not in im.text and "image_shape" not in im.text
    assert float(im.text["pixel_size_um"]) == 8.0 and im.info["dpi"][0] == pytest.approx(25400 / 8.0, rel=1e-3)
    out = save_mask(tmp_path / "v.png", np.zeros((8, 8), np.uint8), 8.0, downsample=16, image_shape=(128, 128))
    assert Image.open(out).text["downsample"] == "16"
