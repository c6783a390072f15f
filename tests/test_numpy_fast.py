"""The registered NumPy path of softmax cross-entropy (``crossent._numpy_fast``): it serves
the common case with the definition's numbers, against a float64 loop reference, and leaves
every other case to the definition."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import crossent
from crossent import _numpy_fast
from crossent.classification import softmax_cross_entropy as sce


def _loop_reference(z, y, reduction):
    """float64 loops: lse - z_y per row, softmax - onehot per row, over N for "mean"."""
    z = np.asarray(z, dtype=np.float64)
    n, c = z.shape
    per, g = np.empty(n), np.empty((n, c))
    for i in range(n):
        m = max(z[i])
        s = sum(math.exp(v - m) for v in z[i])
        per[i] = m + math.log(s) - z[i, y[i]]
        for j in range(c):
            g[i, j] = math.exp(z[i, j] - m) / s - (j == y[i])
    if reduction == "mean":
        return per.mean(), g / n
    return (per.sum() if reduction == "sum" else per), g


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
# up to 64 classes the row maximum is taken over the transposed logits, above in place
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 50), (5, 64), (5, 65), (9, 200)])
def test_fast_path_matches_a_float64_loop(rng, dtype, rtol, reduction, shape):
    z = (rng.normal(size=shape) * 30).astype(dtype)
    y = rng.integers(0, shape[1], size=shape[0])
    assert _numpy_fast.softmax_cross_entropy(("logits",), z, y, reduction=reduction) \
        is not NotImplemented
    value, g = crossent.value_and_grad(sce)(z, y, reduction=reduction)
    want, want_g = _loop_reference(z, y, reduction)
    np.testing.assert_allclose(value, want, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(g, want_g, rtol=rtol * 10, atol=rtol)
    assert g.dtype == dtype and np.asarray(value).dtype == dtype
    np.testing.assert_allclose(sce(z, y, reduction=reduction), want, rtol=rtol, atol=rtol)


def test_fast_path_agrees_with_the_definition_and_does_not_mutate(rng):
    z = rng.normal(size=(33, 9)).astype(np.float32)
    y = rng.integers(0, 9, size=33).astype(np.int32)
    z0 = z.copy()
    for reduction in ("mean", "sum", "none"):
        fast_v, fast_pb = _numpy_fast.softmax_cross_entropy(("logits",), z, y,
                                                            reduction=reduction)
        v, pb = sce.with_pullback(("logits",), z, y, reduction=reduction)
        np.testing.assert_allclose(fast_v, v, rtol=1e-6)
        cot = np.full(np.shape(v), 0.5, np.float32)
        np.testing.assert_allclose(fast_pb(cot)["logits"], pb(cot)["logits"], rtol=1e-5,
                                   atol=1e-8)
    assert np.array_equal(z, z0)


@pytest.mark.parametrize("case", ["ignored", "out_of_range", "inf_row", "nan", "weight",
                                  "smoothing", "axis0", "3d", "float16", "empty",
                                  "negative_int8", "wide_out_of_range"])
def test_other_cases_are_the_definitions(rng, case):
    z = rng.normal(size=(6, 4))
    y = np.array([0, 1, 2, 3, 0, 1])
    kw: dict = {}
    if case == "ignored":
        y[2] = -100
    elif case == "out_of_range":
        y[2] = 4
    elif case == "inf_row":
        z[1] = -np.inf
        y[1] = -100
    elif case == "nan":
        z[0, 0] = np.nan
    elif case == "weight":
        kw["weight"] = np.arange(1.0, 5.0)
    elif case == "smoothing":
        kw["label_smoothing"] = 0.1
    elif case == "axis0":
        z, kw["axis"] = z.T.copy(), 0
    elif case == "3d":
        z, y = z[None], y[None]
    elif case == "float16":
        z = z.astype(np.float16)
    elif case == "empty":
        z, y = z[:0], y[:0]
    elif case == "negative_int8":  # -1 as a uint8 is 255: still caught
        y = y.astype(np.int8)
        y[3] = -1
    elif case == "wide_out_of_range":
        z, y = rng.normal(size=(6, 70)), np.array([0, 69, 70, 3, 0, 1])
    if case in ("ignored", "out_of_range", "inf_row", "weight", "smoothing", "axis0", "3d",
                "float16", "empty", "negative_int8", "wide_out_of_range"):
        assert _numpy_fast.softmax_cross_entropy((), z, y, **kw) is NotImplemented
    if case == "wide_out_of_range":
        with pytest.raises(ValueError, match=r"class indices in \[0, 70\)"):
            sce(z, y)
        return
    if case == "negative_int8":
        with pytest.raises(ValueError, match=r"class indices in \[0, 4\)"):
            sce(z, y)
        return
    if case == "out_of_range":
        with pytest.raises(ValueError, match=r"class indices in \[0, 4\)"):
            sce(z, y)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy floating-point warnings on either path
        got = crossent.value_and_grad(sce)(z, y, **kw)
        want = sce.with_pullback(("logits",), z, y, **kw)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got[1], want[1](None)["logits"], rtol=1e-12, equal_nan=True)
