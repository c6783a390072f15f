"""The JAX CPU kernel of softmax cross-entropy (``crossent._jax_kernel``): it serves the common
call under ``jit`` and eagerly, with the value and gradient of optax and of a float64 loop,
the definition's answers on hostile inputs and on ignored or out-of-range labels, and the
derivatives JAX users take (``grad``, ``vmap``, ``jvp``, ``hessian``); what it declines is the
definition's."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

from crossent import _jax_kernel  # noqa: E402
from crossent.classification import softmax_cross_entropy as sce  # noqa: E402

pytestmark = pytest.mark.skipif(not _jax_kernel.load(), reason="JAX C++ kernel unavailable")


def _loop(z, y, reduction, ignore_index=-100):
    """float64 loops: lse - z_y per counted row, softmax - onehot, mean over counted rows."""
    z = np.asarray(z, dtype=np.float64)
    n, c = z.shape
    per, g = np.zeros(n), np.zeros((n, c))
    counted = [i for i in range(n) if y[i] != ignore_index]
    for i in counted:
        m = max(z[i])
        s = sum(math.exp(v - m) for v in z[i])
        per[i] = m + math.log(s) - z[i, y[i]]
        g[i] = [math.exp(v - m) / s for v in z[i]]
        g[i, y[i]] -= 1.0
    if reduction == "mean":
        k = len(counted)
        return (per.sum() / k if k else 0.0), (g / k if k else g)
    return (per.sum() if reduction == "sum" else per), g


def _uses_kernel(fn, *args) -> bool:
    return "crossent_ce" in jax.jit(fn).lower(*args).as_text()


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
# narrower than a vector, one and a half vectors, two vectors and a tail, wide
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (5, 8), (6, 12), (9, 17), (4, 1000)])
def test_value_and_gradient_against_a_float64_loop(rng, dtype, rtol, reduction, shape):
    z = jnp.asarray((rng.normal(size=shape) * 20).astype(dtype))
    y = jnp.asarray(rng.integers(0, shape[1], size=shape[0]))
    want, want_g = _loop(z, np.asarray(y), reduction)

    def total(s):
        return jnp.sum(sce(s, y, reduction=reduction))

    assert _uses_kernel(jax.grad(total), z)
    np.testing.assert_allclose(sce(z, y, reduction=reduction), want, rtol=rtol, atol=rtol)
    for f in (jax.grad(total), jax.jit(jax.grad(total))):
        g = f(z)
        assert g.dtype == dtype
        np.testing.assert_allclose(g, want_g, rtol=10 * rtol, atol=rtol)


def test_matches_optax_under_jit(rng):
    z = jnp.asarray(rng.normal(size=(64, 300)).astype(np.float32) * 5)
    y = jnp.asarray(rng.integers(0, 300, size=64))
    ours = jax.jit(jax.value_and_grad(lambda s: sce(s, y)))
    theirs = jax.jit(jax.value_and_grad(
        lambda s: optax.softmax_cross_entropy_with_integer_labels(s, y).mean()))
    (v, g), (wv, wg) = ours(z), theirs(z)
    np.testing.assert_allclose(v, wv, rtol=1e-6)
    np.testing.assert_allclose(g, wg, rtol=1e-5, atol=1e-9)


def _definition(z, y, reduction, ignore_index=-100):
    """The definition's value and gradient, traced in jnp ops under jit (no kernel; the labels
    traced, as in the call it is held to)."""
    def run(s, t):
        v, pullback = sce.with_pullback(("logits",), s, t, reduction=reduction,
                                        ignore_index=ignore_index)
        return v, pullback(None)["logits"]

    return jax.jit(run)(z, y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_hostile_rows_are_the_definitions(reduction):
    big = np.float32(3e38)
    z = np.array([[0.0, 1.0, 2.0, 3.0],
                  [-np.inf, -np.inf, -np.inf, -np.inf],    # all -inf
                  [np.inf, 0.0, 1.0, 2.0],                  # +inf, label elsewhere
                  [np.nan, 0.0, 1.0, 2.0],                  # NaN
                  [big, -big, 0.0, 1.0],                    # 6e38 apart
                  [-104.0, -90.0, 0.0, -87.0],              # exps near underflow
                  [5.0, -np.inf, 1.0, 2.0]],                # a masked class
                 np.float32)
    y = jnp.asarray([3, 1, 2, 1, 0, 1, 0])
    v, g = jax.jit(jax.value_and_grad(lambda s: jnp.sum(sce(s, y, reduction=reduction))))(
        jnp.asarray(z))
    wv, wg = _definition(jnp.asarray(z), y, reduction)
    np.testing.assert_allclose(v, jnp.sum(wv), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(g, wg, rtol=1e-5, atol=1e-30, equal_nan=True)
    assert np.array_equal(np.isnan(np.asarray(g)), np.isnan(np.asarray(wg)))
    # rows without a non-finite logit stay finite whatever their neighbours hold
    if reduction != "mean":
        assert np.isfinite(np.asarray(g)[[0, 4, 5, 6]]).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignored_and_traced_out_of_range_labels(rng, reduction):
    z = jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32))
    f = jax.jit(jax.value_and_grad(lambda s, t: jnp.sum(sce(s, t, reduction=reduction))))
    y = jnp.asarray([0, -100, 4, -100, 2, 1])
    v, g = f(z, y)
    want, want_g = _loop(z, np.asarray(y), reduction)
    np.testing.assert_allclose(v, np.sum(want), rtol=2e-6)
    np.testing.assert_allclose(g, want_g, rtol=2e-5, atol=1e-7)
    none = jnp.full(6, -100)  # nothing counted: "mean" is 0, not NaN, with a zero gradient
    v, g = f(z, none)
    assert float(v) == 0.0 and not np.asarray(g).any()
    bad = jnp.asarray([0, 5, 4, -100, 2, -1])  # under jit a bad label is NaN, as defined
    v, g = f(z, bad)
    wv, wg = _definition(z, bad, reduction)
    np.testing.assert_allclose(v, jnp.sum(wv), equal_nan=True)
    np.testing.assert_allclose(g, wg, rtol=1e-5, atol=1e-7, equal_nan=True)
    assert np.isnan(np.asarray(g)).any()


def test_eager_labels_are_checked_with_the_definitions_words():
    z = jnp.zeros((3, 4))
    with pytest.raises(ValueError, match=r"class indices in \[0, 4\)"):
        sce(z, jnp.asarray([0, 4, 1]))


def test_vmap_jvp_and_hessian(rng):
    z = jnp.asarray(rng.normal(size=(3, 5, 7)))  # float64: the derivatives to 1e-12
    y = jnp.asarray(rng.integers(0, 7, size=(3, 5)))
    y = y.at[1, 2].set(-100)

    def ref(s, t):  # optax's, masked as the mean over counted rows
        keep = t != -100
        per = optax.softmax_cross_entropy_with_integer_labels(s, jnp.where(keep, t, 0))
        return jnp.sum(jnp.where(keep, per, 0.0)) / jnp.sum(keep)

    def ours(s, t):
        return sce(s, t)

    # float64 (the suite enables JAX x64 in conftest): the derivatives to 1e-12
    z64 = z.astype(jnp.float64)
    assert _uses_kernel(jax.vmap(jax.grad(ours)), z64, y)
    np.testing.assert_allclose(jax.vmap(ours)(z64, y), jax.vmap(ref)(z64, y), rtol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(ours)))(z64, y),
                               jax.vmap(jax.grad(ref))(z64, y), rtol=1e-12, atol=1e-15)
    dz = jnp.asarray(rng.normal(size=(5, 7)))
    v, t = jax.jvp(lambda s: ours(s, y[0]), (z64[0],), (dz,))
    wv, wt = jax.jvp(lambda s: ref(s, y[0]), (z64[0],), (dz,))
    np.testing.assert_allclose([v, t], [wv, wt], rtol=1e-12)
    h = jax.jit(jax.hessian(lambda s: ours(s, y[1])))(z64[1])
    np.testing.assert_allclose(h, jax.hessian(lambda s: ref(s, y[1]))(z64[1]),
                               rtol=1e-10, atol=1e-14)
    # third order: the Hessian's own derivative along dz
    d3 = jax.jvp(jax.hessian(lambda s: ours(s, y[0])), (z64[0],), (dz,))[1]
    w3 = jax.jvp(jax.hessian(lambda s: ref(s, y[0])), (z64[0],), (dz,))[1]
    np.testing.assert_allclose(d3, w3, rtol=1e-9, atol=1e-13)


def test_integer_label_dtypes(rng):
    z = jnp.asarray(rng.normal(size=(8, 6)).astype(np.float32))
    y = rng.integers(0, 6, size=8)
    want = sce(z, jnp.asarray(y, jnp.int32))
    for dt in (np.int8, np.uint8, np.int16, np.int32):
        np.testing.assert_allclose(sce(z, jnp.asarray(y.astype(dt))), want, rtol=1e-7)
    np.testing.assert_allclose(sce(z, y), want, rtol=1e-7)  # a NumPy label array


def test_what_the_kernel_declines_is_the_definitions(rng):
    z = jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 5, size=6))
    w = jnp.linspace(0.5, 2.0, 5)
    calls = [((z, y), {"weight": w}), ((z, y), {"label_smoothing": 0.1}),
             ((z.T, y), {"axis": 0}), ((z[None], y[None]), {}),
             ((z.astype(jnp.bfloat16), y), {}), ((z[:0], y[:0]), {}),
             ((z, y), {"ignore_index": None}), ((z, jax.nn.one_hot(y, 5)), {})]
    for args, kw in calls:
        assert _jax_kernel.softmax_cross_entropy(*args, **kw) is NotImplemented
        assert not _uses_kernel(lambda s, a=args, k=kw: jnp.sum(sce(s, *a[1:], **k)), args[0])


def test_exps_are_accurate_down_to_gradual_underflow():
    """One row per shift: the softmax of 0 against -t is exp(-t) / (1 + exp(-t)); the kernel's
    float32 exp (its fast path above -87.3, the clamped one below) within 4 ulp of float64;
    a subnormal result within 2 units of 2^-149, or 0 where XLA's threads flush subnormals
    (as XLA's own exp then does)."""
    t = np.concatenate([np.linspace(0.0, 87.0, 300), np.linspace(87.0, 110.0, 300)])
    z = np.zeros((t.size, 2), np.float32)
    z[:, 1] = -t.astype(np.float32)
    y = jnp.zeros(t.size, jnp.int32)
    g = np.asarray(jax.grad(lambda s: jnp.sum(sce(s, y, reduction="sum")))(jnp.asarray(z)))
    tt = -z[:, 1].astype(np.float64)
    want = np.exp(-tt) / (1.0 + np.exp(-tt))
    tiny = np.float64(2.0 ** -149)
    normal = want >= np.finfo(np.float32).tiny
    err = np.abs(g[:, 1] - want)
    assert (err[normal] <= 4 * np.spacing(want[normal].astype(np.float32))).all()
    sub = g[~normal, 1]
    assert ((sub == 0) | (err[~normal] <= 2 * tiny)).all()
    assert normal.sum() > 300 and (~normal).sum() > 100


def test_disabled_kernel_falls_back_in_a_fresh_process():
    import os
    import subprocess
    import sys

    code = ("import jax.numpy as jnp, crossent; from crossent import _jax_kernel as k; "
            "v = crossent.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.asarray([0, 2])); "
            "print(round(float(v), 6), k.load(), k.info()['error'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "CROSSENT_NO_EXT": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1.098612", "False", "disabled", "by", "CROSSENT_NO_EXT"]
