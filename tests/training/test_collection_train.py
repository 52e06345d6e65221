"""`focusq train --collection`: end to end on CPU, held-out figures, selection, provenance."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_focusq.cli.app import main
from napari_focusq.io.formats import open_image, sample_slide_path
from napari_focusq.models import weights_dir
from napari_focusq.models.checkpoint import read_tensors
from napari_focusq.review.collection import Collection, CollectionError, TileRecord
from napari_focusq.training.collection import _not_worse, separation, split_slides


@pytest.fixture(scope="module")
def sample_pair():
    from napari_focusq.demo import make_half_defocused

    with open_image(sample_slide_path()) as src:
        img, px = src.read_plane(), src.pixel_size_um
    return img, make_half_defocused(img, pixel_size_um=px, z_um=3.0, modality="brightfield"), px


def _collection(folder, sample_pair, flip=()):
    """Three 'slides' (interleaved tile rows of the sample): left-half tiles in focus, right-half
    tiles of the 3 µm copy out of focus; slides in ``flip`` get the labels swapped."""
    from napari_focusq.scoring.tissue import tissue_fraction

    img, half, px = sample_pair
    H, W = img.shape[:2]
    recs, tiles = [], []
    for y in range(0, H - 320, 320):
        for x in range(0, W - 320, 160):
            if tissue_fraction(img[y:y + 320, x:x + 320], "brightfield") < 0.3 or x < W // 2 < x + 320:
                continue
            slide = f"s{(y // 320) % 3 + 1}.svs"
            sharp = x + 320 <= W // 2
            label = "in-focus" if sharp != (slide in flip) else "out-of-focus"
            recs.append(TileRecord(slide=slide, y=y, x=x, height=320, width=320, pixel_size_um=px,
                                   modality="brightfield", label=label))
            tiles.append((img if sharp else half)[y:y + 320, x:x + 320])
    c = Collection(folder)
    c.add(recs, tiles)
    return c


def test_train_on_a_collection_end_to_end(tmp_path, sample_pair, capsys):
    c = _collection(tmp_path / "coll", sample_pair)
    counts = c.counts()
    assert counts["in-focus"] >= 3 and counts["out-of-focus"] >= 3
    out = tmp_path / "lab.safetensors"
    rc = main(["train", "--collection", str(c.folder), "--init", "default", "--out", str(out), "--epochs", "3",
               "--heldout", "s3.svs"])
    text = capsys.readouterr().out
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    rep = meta["collection"]
    assert rep["digest"] == "sha256:" + c.digest()
    assert rep["tiles"] == {"in-focus": counts["in-focus"], "out-of-focus": counts["out-of-focus"], "known_defocus": 0}
    assert rep["heldout_slides"] == ["s3.svs"] and "s3.svs" not in rep["train_slides"]
    held = [r for r in c if r.slide == "s3.svs"]
    assert rep["before"]["n_in_focus"] + rep["before"]["n_out_of_focus"] == len(held)
    for k in ("before", "after"):
        assert 0 <= rep[k]["auc"] <= 1 and 0 <= rep[k]["out_of_focus_over_threshold"] <= 1
    assert "before (fast" in text and "after  (fine-tuned)" in text
    # The 3 µm half is plain to the shipped model: separation on held-out tiles stays complete.
    assert rep["before"]["auc"] == 1.0 and rep["selected"] == "fine-tuned"
    assert meta["name"].endswith("+collection")
    # The fine-tuned heads' own certainty map (not the start's), and figures for every epoch.
    start_meta = json.loads((weights_dir() / "fast.json").read_text())
    assert rep["certainty"] == "refitted on the fresh simulated draws"
    assert meta["certainty"]["n"] > 10 and meta["certainty"] != start_meta["certainty"]
    assert [h["epoch"] for h in rep["history"]] == [1, 2, 3]
    assert all(0 < h["val_mae"] < 1.5 and h["val_r2"] > 0.5 and 0 <= h["heldout_auc"] <= 1 for h in rep["history"])
    from napari_focusq.models import load_model

    fm = load_model(str(out))
    tiles = np.stack([c.load_tile(r) for r in held])
    pred = fm.predict(tiles)
    kinds = np.array([r.kind for r in held])
    assert pred[kinds == "out-of-focus"].min() > pred[kinds == "in-focus"].max()


def test_a_model_that_does_worse_is_not_selected(tmp_path, sample_pair, capsys):
    # Training slides labelled backwards, the held-out slide right: fine-tuning hard on
    # the wrong labels must make the held-out separation worse than the start's.
    c = _collection(tmp_path / "coll", sample_pair, flip=("s1.svs", "s2.svs"))
    out = tmp_path / "m.safetensors"
    assert main(["train", "--collection", str(c.folder), "--out", str(out), "--epochs", "15", "--lr", "0.01",
                 "--heldout", "s3.svs"]) == 0
    text = capsys.readouterr().out
    rep = json.loads(out.with_suffix(".json").read_text())["collection"]
    assert rep["selected"] == "start" and not rep["not_worse"]
    assert "WORSE" in text and "not selected" in text
    start = read_tensors(weights_dir() / "fast.safetensors")
    mine = read_tensors(out)
    assert all(np.array_equal(np.asarray(start[k]), np.asarray(mine[k])) for k in start)


def test_split_needs_two_slides_and_both_kinds(tmp_path):
    def rec(slide, x, label):
        return TileRecord(slide=slide, y=0, x=x, height=320, width=320, pixel_size_um=0.5, modality="brightfield",
                          label=label)

    c = Collection(tmp_path / "c")
    z = np.zeros((320, 320, 3), np.uint8)
    c.add([rec("a.svs", 0, "in-focus"), rec("a.svs", 320, "out-of-focus")], [z, z + 1])
    with pytest.raises(CollectionError, match="at least two slides"):
        split_slides(c)
    c.add([rec("b.svs", 0, "in-focus"), rec("b.svs", 320, "out-of-focus"), rec("c.svs", 0, "in-focus")],
          [z + 2, z + 3, z + 4])
    train, held = split_slides(c, seed=0)
    assert set(train) | set(held) == {"a.svs", "b.svs", "c.svs"} and not set(train) & set(held)
    assert split_slides(c, seed=0) == (train, held)  # seeded
    assert split_slides(c, heldout=["b.svs"]) == (["a.svs", "c.svs"], ["b.svs"])
    with pytest.raises(CollectionError, match="no tiles of held-out"):
        split_slides(c, heldout=["x.svs"])


def test_separation_and_selection_rule():
    s = separation([0.2, 0.4, 2.5], [3.0, 1.0], threshold_um=2.0)
    assert s["auc"] == pytest.approx(5 / 6)  # 3.0 beats all three in-focus readings, 1.0 two of them
    assert s["out_of_focus_over_threshold"] == 0.5 and s["in_focus_over_threshold"] == pytest.approx(1 / 3)
    better = separation([0.2, 0.4], [3.0, 2.5], 2.0)
    assert _not_worse(better, s) and not _not_worse(s, better)


def test_bad_collection_is_refused(tmp_path, capsys):
    assert main(["train", "--collection", str(tmp_path / "none"), "--out", str(tmp_path / "m.safetensors")]) == 1
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
