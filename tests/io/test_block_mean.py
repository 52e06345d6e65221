"""Thumbnail block means: the integer path gives what the float formula gives, edges included."""
from __future__ import annotations

import numpy as np
import pytest

from napari_focusq.io.source import _block_mean


def float_block_mean(a, f):
    """The definition: each f x f block's mean (partial edge blocks: of what they hold), rounded."""
    H, W = a.shape[:2]
    out = np.empty((-(-H // f), -(-W // f)) + a.shape[2:], np.float64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = a[i * f:(i + 1) * f, j * f:(j + 1) * f].astype(np.float64).mean((0, 1))
    return np.rint(out).astype(a.dtype)


@pytest.mark.parametrize("shape,dtype,f", [((130, 125, 3), np.uint8, 2), ((101, 77), np.uint16, 3),
                                           ((5, 7, 2), np.uint8, 4), ((1, 1), np.uint16, 5),
                                           ((64, 48, 3), np.uint8, 7), ((30, 31), np.uint16, 30),
                                           ((41, 29, 2), np.int16, 3), ((9, 13), np.int8, 2)])
def test_integer_block_mean_is_exact(shape, dtype, f):
    rng = np.random.default_rng(7)
    a = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    got = _block_mean(a, f)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, float_block_mean(a, f))


def test_integer_block_mean_rounds_ties_as_the_float_mean_near_full_scale():
    # Means of x.5 at the top of the 16-bit range, where float32's step is largest (2^-8).
    rng = np.random.default_rng(9)
    a = rng.integers(65000, 65535, (66, 63), dtype=np.uint16, endpoint=True)
    for f in (2, 3, 11, 12):
        np.testing.assert_array_equal(_block_mean(a, f), float_block_mean(a, f))


def test_float_block_mean_unchanged():
    a = np.random.default_rng(8).random((37, 41, 2)).astype(np.float32)
    want = np.array([[a[i:i + 4, j:j + 4].astype(np.float64).mean((0, 1)) for j in range(0, 41, 4)]
                     for i in range(0, 37, 4)])
    np.testing.assert_allclose(_block_mean(a, 4), want, rtol=1e-6)  # float32 output of a float64 mean
