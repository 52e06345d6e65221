"""Tile collections: add/remove/dedupe, crash safety, and `focusq collect` on real slides."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_focusq.cli.app import main
from napari_focusq.config import TILE_PX
from napari_focusq.io.formats import open_image, sample_slide_path
from napari_focusq.review import collection as coll_mod
from napari_focusq.review.collect import parse_tiles, parse_where, select_tiles
from napari_focusq.review.collection import (
    Collection,
    CollectionError,
    TileRecord,
    default_collection_dir,
    parse_label,
)


def _tile(seed, rgb=True):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (TILE_PX, TILE_PX, 3) if rgb else (TILE_PX, TILE_PX), dtype=np.uint8)


def _rec(x, label="in-focus", slide="a.svs"):
    return TileRecord(slide=slide, y=0, x=x, height=320, width=320, pixel_size_um=0.5, modality="brightfield",
                      label=label, reading_um=0.3, model="fast test")


def test_add_keeps_tiles_losslessly_and_survives_reopening(tmp_path):
    c = Collection(tmp_path / "c")
    t = [_tile(0), _tile(1, rgb=False)]
    ids = c.add([_rec(0), _rec(320, "out-of-focus")], t)
    assert len(set(ids)) == 2
    again = Collection(tmp_path / "c")
    assert [r.id for r in again] == ids
    assert again.counts() == {"in-focus": 1, "out-of-focus": 1}
    for rec, tile in zip(again, t):
        np.testing.assert_array_equal(again.load_tile(rec), tile)  # PNG: bit-exact
    u16 = (np.random.default_rng(2).integers(0, 65535, (TILE_PX, TILE_PX))).astype(np.uint16)
    c.add([_rec(640)], [u16])
    np.testing.assert_array_equal(Collection(tmp_path / "c").load_tile(c.records[-1]), u16)


def test_same_tile_twice_keeps_one_with_the_new_label(tmp_path):
    c = Collection(tmp_path / "c")
    c.add([_rec(0)], [_tile(0)])
    c.add([_rec(0, "2.5"), _rec(320)], [_tile(0), _tile(1)])
    assert len(c) == 2 and len(Collection(tmp_path / "c")) == 2
    assert c.records[0].label == 2.5 and c.records[0].kind == "out-of-focus"
    assert len(list((tmp_path / "c" / "tiles").iterdir())) == 2


def test_remove_drops_row_and_image(tmp_path):
    c = Collection(tmp_path / "c")
    ids = c.add([_rec(0), _rec(320)], [_tile(0), _tile(1)])
    assert c.remove([ids[0], "nonexistent"]) == 1
    re = Collection(tmp_path / "c")
    assert [r.id for r in re] == [ids[1]]
    assert [p.stem for p in (tmp_path / "c" / "tiles").iterdir()] == [ids[1]]
    assert c.remove(["nonexistent"]) == 0


def test_crash_mid_write_leaves_the_old_table_whole(tmp_path, monkeypatch):
    c = Collection(tmp_path / "c")
    c.add([_rec(0), _rec(320)], [_tile(0), _tile(1)])
    before = c.table.read_bytes()
    digest = c.digest()

    def crash(path, text):
        path.write_text(text[: len(text) // 2], encoding="utf-8")  # half of the new table, then power cut
        raise OSError("disk gone")

    monkeypatch.setattr(coll_mod, "_write_text", crash)
    with pytest.raises(OSError):
        c.add([_rec(640)], [_tile(2)])
    with pytest.raises(OSError):
        c.remove([c.records[0].id])
    assert c.table.read_bytes() == before
    assert [p.name for p in c.folder.iterdir() if p.name.startswith(".")] == []  # no temp file left
    monkeypatch.undo()
    re = Collection(tmp_path / "c")
    assert len(re) == 2 and re.digest() == digest
    re.add([_rec(960)], [_tile(3)])  # the next change sweeps the orphan image of the crashed add
    assert len(list((tmp_path / "c" / "tiles").iterdir())) == 3


def test_bad_input_is_refused_with_the_reason(tmp_path):
    with pytest.raises(CollectionError, match="label"):
        parse_label("blurry")
    with pytest.raises(CollectionError, match="µm"):
        parse_label("-1")
    assert parse_label("1.5") == 1.5 and parse_label("IN-FOCUS") == "in-focus"
    c = Collection(tmp_path / "c")
    with pytest.raises(CollectionError, match="expected 320x320"):
        c.add([_rec(0)], [np.zeros((100, 100), np.uint8)])
    with pytest.raises(CollectionError, match="losslessly"):
        c.add([_rec(0)], [np.zeros((TILE_PX, TILE_PX), np.float32)])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "collection.jsonl").write_text('{"slide": "a"}\n')
    with pytest.raises(CollectionError, match="collection.jsonl, line 1"):
        Collection(tmp_path / "bad")


def test_default_folder_is_beside_the_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr(coll_mod.sys, "platform", "linux")
    assert default_collection_dir() == tmp_path / "napari-focusq" / "collections" / "default"


def test_where_parser_is_a_grammar_not_eval():
    assert parse_where("defocus_um<0.5") == [("defocus_um", "<", 0.5)]
    assert parse_where("defocus_um >= 2 and certainty>0.8") == [("defocus_um", ">=", 2.0), ("certainty", ">", 0.8)]
    for bad in ("__import__('os').system('true')", "defocus_um<abc", "foo<1", "defocus_um<<1", ""):
        with pytest.raises(CollectionError, match="--where"):
            parse_where(bad)
    assert parse_tiles(["3,4", " 5 , 6 "]) == [(3, 4), (5, 6)]
    with pytest.raises(CollectionError, match="ROW,COL"):
        parse_tiles(["3;4"])


def test_select_tiles_samples_with_a_seed():
    from napari_focusq.scoring.focusmap import FocusMap

    d = np.arange(20, dtype=np.float32).reshape(4, 5) / 4
    d[0, 0] = np.nan
    fm = FocusMap(defocus_um=d, tissue_fraction=np.ones_like(d), tile_size_px=320, image_shape=(1280, 1600),
                  pixel_size_um=0.5, modality="brightfield", model="m")
    assert select_tiles(fm, where=parse_where("defocus_um<1")) == [(0, 1), (0, 2), (0, 3)]
    assert select_tiles(fm, tiles=[(0, 0), (3, 4)]) == [(3, 4)]  # unscored tiles are never collected
    a = select_tiles(fm, max_n=5, seed=1)
    assert len(a) == 5 and a == select_tiles(fm, max_n=5, seed=1)
    with pytest.raises(CollectionError, match="outside"):
        select_tiles(fm, tiles=[(9, 9)])


@pytest.fixture(scope="module")
def half_defocused(tmp_path_factory):
    from napari_focusq.demo import make_half_defocused, write_tif

    with open_image(sample_slide_path()) as src:
        img, px = src.read_plane(), src.pixel_size_um
    half = make_half_defocused(img, pixel_size_um=px, z_um=3.0, modality="brightfield")
    return write_tif(tmp_path_factory.mktemp("half") / "half.tif", half, pixel_size_um=px, tiled=True), img.shape


def test_focusq_collect_on_the_sample_slide(tmp_path, capsys):
    out = tmp_path / "coll"
    rc = main(["collect", str(sample_slide_path()), "--out", str(out), "--label", "in-focus",
               "--where", "defocus_um<1", "--max", "6"])
    assert rc == 0, capsys.readouterr().err
    c = Collection(out)
    assert len(c) == 6 and c.counts()["in-focus"] == 6
    for r in c:
        assert r.reading_um < 1 and r.pixel_size_um == pytest.approx(0.499) and r.modality == "brightfield"
        assert c.load_tile(r).shape == (TILE_PX, TILE_PX, 3)
    # Collecting the same tiles again keeps one of each.
    assert main(["collect", str(sample_slide_path()), "--out", str(out), "--label", "in-focus",
                 "--where", "defocus_um<1", "--max", "6"]) == 0
    assert len(Collection(out)) == 6
    assert main(["collect", str(sample_slide_path()), "--out", str(out), "--label", "in-focus",
                 "--where", "exec('x')<1"]) == 1
    assert "--where" in capsys.readouterr().err


def test_focusq_collect_takes_the_defocused_half_as_out_of_focus(tmp_path, half_defocused, capsys):
    path, shape = half_defocused
    out = tmp_path / "coll"
    assert main(["collect", str(path), "--out", str(out), "--label", "out-of-focus",
                 "--where", "defocus_um>2"]) == 0, capsys.readouterr().err
    c = Collection(out)
    assert len(c) >= 5, "the 3 µm half reads > 2 µm on most of its tissue tiles"
    # Every tile read > 2 µm lies in the defocused right half (a tile straddling the edge may
    # start up to a tile left of it).
    assert all(r.x + r.width > shape[1] // 2 for r in c)
    assert all(r.kind == "out-of-focus" and r.reading_um > 2 for r in c)
    assert json.loads(c.table.read_text().splitlines()[0])["label"] == "out-of-focus"


def test_one_bad_slide_never_stops_focusq_collect(tmp_path, capsys):
    """An unreadable file and an image without a pixel size are reported and skipped; the good
    slide between them is collected, and the run exits 1 (some input failed), as focusq score."""
    from PIL import Image

    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide at all")
    no_px = tmp_path / "no_pixel_size.png"
    Image.fromarray(np.full((600, 600, 3), 200, np.uint8)).save(no_px)
    out = tmp_path / "coll"
    rc = main(["collect", str(broken), str(sample_slide_path()), str(no_px), "--out", str(out),
               "--label", "in-focus", "--where", "defocus_um<1", "--max", "3"])
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    assert len(Collection(out)) == 3 and {r.slide for r in Collection(out)} == {str(sample_slide_path())}
    err_lines = [ln for ln in cap.err.splitlines() if ln.startswith("focusq: ") and "(skipped)" in ln]
    assert any(str(broken) in ln for ln in err_lines), cap.err
    assert any(str(no_px) in ln and "pixel size" in ln for ln in err_lines), cap.err
    assert "2 of 3 slides failed" in cap.out
