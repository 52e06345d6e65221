"""batch's worker task is score_to_outputs: one list of input errors decides row or retry.

Called directly (outside a worker) so no cluster is needed; tests/test_batch.py runs it on one.
"""
from __future__ import annotations

import errno

import numpy as np
import pytest
import tifffile

from napari_focusq.batch import _score_task
from napari_focusq.config import ScoreConfig
from napari_focusq.errors import INPUT_ERRORS


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "good.tif"
    tifffile.imwrite(p, rng.integers(0, 255, (400, 400, 3), dtype=np.uint8), photometric="rgb")
    return p


def test_an_unreadable_input_is_an_error_row_not_a_retry(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    res = _score_task(str(bad), str(tmp_path / "out"), "bad", ScoreConfig(pixel_size_um=0.5), None)
    assert res["row"]["status"] == "error" and "not a valid TIFF" in res["row"]["error"]
    assert res["outputs"] == [] and res["size"] == len(b"not a tiff at all")


def test_the_same_message_as_focusq_score_for_a_missing_pixel_size(good, tmp_path):
    res = _score_task(str(good), str(tmp_path / "out"), "good", ScoreConfig(), None)
    assert res["row"]["status"] == "error" and "--pixel-size" in res["row"]["error"]


@pytest.mark.parametrize("exc,retried", [
    (MemoryError("Unable to allocate 7 GiB"), False),  # too big here: would fail alike elsewhere
    (PermissionError(errno.EACCES, "denied"), False),
    (OSError(errno.EIO, "Input/output error"), True),  # a network share's hiccup: worth a retry
    (RuntimeError("a bug"), True),
])
def test_what_raises_is_what_dask_retries(good, tmp_path, monkeypatch, exc, retried):
    import napari_focusq.scoring.pipeline as pipeline

    def boom(*a, **k):
        raise exc
        yield  # a generator, as the real one

    monkeypatch.setattr(pipeline, "iter_score_slide", boom)
    assert isinstance(exc, INPUT_ERRORS) is not retried
    call = lambda: _score_task(str(good), str(tmp_path / "out"), "good", ScoreConfig(pixel_size_um=0.5), None)
    if retried:
        with pytest.raises(type(exc)):
            call()
    else:
        assert call()["row"]["status"] == "error"


def test_a_good_input_gets_its_outputs_and_row(good, tmp_path):
    res = _score_task(str(good), str(tmp_path / "out"), "good", ScoreConfig(pixel_size_um=0.5), None)
    assert res["row"]["status"] == "ok" and res["model_label"] == res["row"]["model"] != ""
    assert "good.mask.png" in res["outputs"] and all((tmp_path / "out" / f).is_file() for f in res["outputs"])
