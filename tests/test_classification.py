"""Softmax / sigmoid cross-entropy, BCE, MSE: conformance with PyTorch, Optax and Keras,
closed-form gradients against autodiff and finite differences, backends, properties."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import crossent
from tests._backends import (
    BACKENDS,
    check_summed_in_float32,
    finite_difference,
    half_inputs,
    node_name,
    second_order_tests,
    to_backend,
    to_numpy,
)

T = torch.from_numpy


def _case(shape_nc=(6, 5), spatial=(), ignore_some=True, seed=0):
    rng = np.random.default_rng(seed)
    n, c = shape_nc
    logits = rng.normal(scale=3.0, size=(n, c) + spatial)
    labels = rng.integers(0, c, size=(n,) + spatial)
    if ignore_some:
        labels.reshape(-1)[::4] = -100
    probs = rng.dirichlet(np.ones(c), size=(n,) + spatial)
    probs = np.moveaxis(probs, -1, 1)
    weight = rng.uniform(0.2, 2.0, size=c)
    return logits, labels, probs, weight


# --- softmax cross-entropy vs torch.nn.functional.cross_entropy ------------------------------

OPTIONS = list(itertools.product(["mean", "sum", "none"], [0.0, 0.3], [False, True],
                                 [(), (3, 2)]))


@pytest.mark.parametrize("reduction,eps,weighted,spatial", OPTIONS)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_softmax_ce_matches_torch(reduction, eps, weighted, spatial, target_kind, rng):
    logits, labels, probs, weight = _case(spatial=spatial, seed=len(spatial) + int(eps * 10))
    tgt = labels if target_kind == "index" else probs
    w = weight if weighted else None
    kw = dict(weight=None if w is None else T(w), reduction=reduction, label_smoothing=eps)
    x = T(logits).requires_grad_()
    ref = F.cross_entropy(x, T(tgt), **kw)
    go = torch.from_numpy(rng.normal(size=ref.shape)) if reduction == "none" else None
    ref.backward(go if go is not None else torch.ones_like(ref))
    opts = dict(axis=1, weight=w, reduction=reduction, label_smoothing=eps)
    value, g = crossent.value_and_grad(crossent.softmax_cross_entropy)(logits, tgt, **opts)
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    if go is not None:  # a random upstream gradient: per-position gradients scaled by it
        g = g * np.expand_dims(go.numpy(), 1)
    np.testing.assert_allclose(g, x.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_ce_all_ignored_is_zero_with_zero_gradient(rng):
    logits = rng.normal(size=(4, 3))
    labels = np.full(4, -100)
    loss, g = crossent.value_and_grad(crossent.softmax_cross_entropy)(logits, labels)
    assert loss == 0.0
    assert np.all(g == 0)
    # PyTorch gives NaN here: that is the one deliberate difference
    assert torch.isnan(F.cross_entropy(T(logits), T(labels)))


def test_softmax_ce_custom_ignore_index_and_weighted_mean():
    logits, labels, _, weight = _case(ignore_some=False, seed=5)
    labels[1] = 2
    ref = F.cross_entropy(T(logits), T(labels), weight=T(weight), ignore_index=2)
    ours = crossent.softmax_cross_entropy(logits, labels, weight=weight, ignore_index=2)
    assert float(ours) == pytest.approx(float(ref), rel=1e-12)


def test_softmax_ce_unbatched_1d(rng):
    logits = rng.normal(size=7)
    ref = F.cross_entropy(T(logits), torch.tensor(3))
    assert float(crossent.softmax_cross_entropy(logits, np.array(3))) == pytest.approx(
        float(ref), rel=1e-12)


def test_softmax_ce_matches_optax_and_keras():
    import keras

    logits, labels, probs, _ = _case(ignore_some=False, seed=9)
    probs = np.moveaxis(probs, 1, -1)
    np.testing.assert_allclose(
        crossent.softmax_cross_entropy(logits, labels, reduction="none"),
        optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(labels)),
        rtol=1e-12)
    np.testing.assert_allclose(
        crossent.softmax_cross_entropy(logits, probs, reduction="none"),
        optax.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(probs)), rtol=1e-12)
    onehot = np.eye(logits.shape[1])[labels]
    ks = keras.losses.categorical_crossentropy(onehot, logits, from_logits=True,
                                               label_smoothing=0.2)
    np.testing.assert_allclose(
        crossent.softmax_cross_entropy(logits, labels, label_smoothing=0.2, reduction="none"),
        np.asarray(ks), rtol=1e-6)
    np.testing.assert_allclose(crossent.smooth_labels(onehot, 0.2),
                               optax.smooth_labels(jnp.asarray(onehot), 0.2), rtol=1e-12)


# --- sigmoid cross-entropy and BCE ---------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,pos_weighted", [(False, False), (True, False), (False, True),
                                                   (True, True)])
def test_sigmoid_ce_matches_torch(reduction, weighted, pos_weighted, rng):
    x = rng.normal(scale=4, size=(5, 4))
    t = rng.uniform(size=(5, 4))
    w = rng.uniform(0.1, 2, size=(5, 1)) if weighted else None
    pw = rng.uniform(0.5, 3, size=4) if pos_weighted else None
    xt = T(x).requires_grad_()
    ref = F.binary_cross_entropy_with_logits(
        xt, T(t), weight=None if w is None else T(w), pos_weight=None if pw is None else T(pw),
        reduction=reduction)
    ref.sum().backward()
    loss, g = crossent.value_and_grad(crossent.sigmoid_cross_entropy)(
        x, t, weight=w, pos_weight=pw, reduction=reduction)
    np.testing.assert_allclose(loss, ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_sigmoid_ce_matches_optax_and_accepts_integer_labels(rng):
    x = rng.normal(scale=3, size=(6, 3))
    y = rng.integers(0, 2, size=(6, 3))
    ref = optax.sigmoid_binary_cross_entropy(jnp.asarray(x), jnp.asarray(y, dtype=jnp.float64))
    np.testing.assert_allclose(crossent.sigmoid_cross_entropy(x, y, reduction="none"), ref,
                               rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_torch_including_saturated_probabilities(reduction, rng):
    p = rng.uniform(size=(4, 5))
    p[0, :3] = [0.0, 1.0, 0.0]
    t = rng.uniform(size=(4, 5))
    t[0, :3] = [1.0, 0.0, 0.0]
    w = rng.uniform(size=(4, 5))
    pt = T(p).requires_grad_()
    ref = F.binary_cross_entropy(pt, T(t), weight=T(w), reduction=reduction)
    ref.sum().backward()
    loss, g = crossent.value_and_grad(crossent.binary_cross_entropy)(p, t, weight=w,
                                                                      reduction=reduction)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g))
    np.testing.assert_allclose(loss, ref.detach().numpy(), rtol=1e-12)
    # the saturated entries are ~1e12 / N: compare relatively
    np.testing.assert_allclose(g, pt.grad.numpy(), rtol=1e-8)


# --- closed-form gradients vs jax.grad and finite differences ------------------------------

GRAD_CASES = {  # name: (loss, rng -> (prediction, target), options)
    "softmax_index": (crossent.softmax_cross_entropy,
                      lambda rng: (rng.normal(size=(4, 5)), np.array([0, 4, -100, 2])),
                      dict(weight=np.array([1.0, 2, 0.5, 1, 3]), label_smoothing=0.1)),
    "softmax_prob": (crossent.softmax_cross_entropy,
                     lambda rng: (rng.normal(size=(3, 4)), rng.dirichlet(np.ones(4), size=3)),
                     dict(label_smoothing=0.2)),
    "softmax_axis1": (crossent.softmax_cross_entropy,
                      lambda rng: (rng.normal(size=(2, 3, 4)), rng.integers(0, 3, size=(2, 4))),
                      dict(axis=1, reduction="sum")),
    "sigmoid": (crossent.sigmoid_cross_entropy,
                lambda rng: (rng.normal(size=(3, 4)), rng.uniform(size=(3, 4))),
                dict(pos_weight=np.array([1.0, 2.0, 0.5, 3.0]))),
    "bce": (crossent.binary_cross_entropy,
            lambda rng: (rng.uniform(0.05, 0.95, size=(3, 4)), rng.uniform(size=(3, 4))), {}),
    "mse": (crossent.mean_squared_error,
            lambda rng: (rng.uniform(size=(3, 4)), rng.integers(0, 4, size=3)), {}),
}


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_closed_form_gradient_vs_jax_grad_and_finite_differences(case, rng):
    fn, make, kw = GRAD_CASES[case]
    pred, tgt = make(rng)
    _, g = crossent.value_and_grad(fn)(pred, tgt, **kw)
    jkw = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    jg = jax.grad(lambda p: fn(p, jnp.asarray(tgt), **jkw))(jnp.asarray(pred))
    np.testing.assert_allclose(g, np.asarray(jg), rtol=1e-9, atol=1e-12)
    fd = finite_difference(lambda p: fn(p, tgt, **kw), pred)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


def test_torch_autograd_through_the_generic_definition(rng):
    # the array-API definition itself stays differentiable by autograd
    x = T(rng.normal(size=(3, 4))).requires_grad_()
    y = torch.tensor([1, 0, 3])
    crossent.softmax_cross_entropy(x, y, label_smoothing=0.1).backward()
    _, g = crossent.value_and_grad(crossent.softmax_cross_entropy)(
        x.detach().numpy(), y.numpy(), label_smoothing=0.1)
    np.testing.assert_allclose(x.grad.numpy(), g, rtol=1e-10)


# --- gradients w.r.t. the targets, torch double backward, JAX second order -------------------


def _torch_reference(kind, pred, tgt, reduction, kw):
    """The plain torch formula each closed form is checked against (autograd w.r.t. both)."""
    if kind == "sigmoid":
        w, pw = kw.get("weight"), kw.get("pos_weight")
        return F.binary_cross_entropy_with_logits(
            pred, tgt, weight=None if w is None else T(w),
            pos_weight=None if pw is None else T(pw), reduction=reduction)
    if kind == "bce":
        w = kw.get("weight")
        return F.binary_cross_entropy(pred, tgt, weight=None if w is None else T(w),
                                      reduction=reduction)
    per = ((pred - tgt) ** 2).sum(-1)
    return {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]


TARGET_CASES = {
    "sigmoid": ("sigmoid", crossent.sigmoid_cross_entropy, {}),
    "sigmoid_weighted": ("sigmoid", crossent.sigmoid_cross_entropy,
                         dict(weight=np.array([[0.5], [2.0], [1.0], [0.1]]),
                              pos_weight=np.array([1.0, 2.0, 0.5]))),
    "bce": ("bce", crossent.binary_cross_entropy, {}),
    "bce_weighted": ("bce", crossent.binary_cross_entropy,
                     dict(weight=np.array([0.3, 1.0, 2.5]))),
    "mse": ("mse", crossent.mean_squared_error, {}),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", sorted(TARGET_CASES))
def test_target_gradient_matches_torch_autograd_and_finite_differences(case, reduction):
    kind, fn, kw = TARGET_CASES[case]
    rng = np.random.default_rng(len(case))
    pred = (rng.normal(scale=3, size=(4, 3)) if kind == "sigmoid"
            else rng.uniform(0.05, 0.95, size=(4, 3)))
    tgt = rng.uniform(0.05, 0.95, size=(4, 3))
    gp, gt = crossent.grad(fn, argnums=(0, 1))(pred, tgt, reduction=reduction, **kw)
    np.testing.assert_array_equal(gt, crossent.grad(fn, argnums=1)(pred, tgt,
                                                                   reduction=reduction, **kw))
    pt, tt = T(pred).requires_grad_(), T(tgt).requires_grad_()
    ref = _torch_reference(kind, pt, tt, reduction, kw)
    cot = T(rng.normal(size=ref.shape))
    ref.backward(cot)
    c = cot.numpy() if reduction == "none" else float(cot)
    if kind == "mse" and reduction == "none":
        c = c[..., None]
    np.testing.assert_allclose(gp * c, pt.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gt * c, tt.grad.numpy(), rtol=1e-10, atol=1e-13)
    fd = finite_difference(lambda b: fn(pred, b, reduction=reduction, **kw), tgt, h=1e-6)
    np.testing.assert_allclose(gt, fd, rtol=1e-6, atol=1e-9)
    # the loss on torch tensors: one autograd Function whose backward is that closed form
    pt, tt = T(pred).requires_grad_(), T(tgt).requires_grad_()
    tkw = {k: T(v) for k, v in kw.items()}
    out = fn(pt, tt, reduction=reduction, **tkw)
    assert "ClosedForm" in type(out.grad_fn).__name__
    out.backward(cot)
    np.testing.assert_allclose(pt.grad.numpy(), gp * c, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(tt.grad.numpy(), gt * c, rtol=1e-13, atol=1e-16)


def test_sigmoid_target_gradient_is_minus_x_and_bce_target_gradient_is_clamped():
    x = np.array([-700.0, -3.0, 0.0, 0.5, 40.0])
    t = np.array([0.0, 1.0, 0.5, 0.2, 1.0])
    g = crossent.grad(crossent.sigmoid_cross_entropy, argnums=1)(x, t, reduction="sum")
    np.testing.assert_array_equal(g, -x)
    # at p in {0, 1} the logs are clamped at -100, so is the derivative of the value
    p = np.array([0.0, 1.0, 0.5, 1e-30, 1e-50])
    g = crossent.grad(crossent.binary_cross_entropy, argnums=1)(p, np.full(5, 0.5),
                                                                reduction="sum")
    np.testing.assert_allclose(g, [100.0, -100.0, 0.0, np.log(1e30), 100.0], rtol=1e-14,
                               atol=1e-14)
    assert np.all(np.isfinite(g))


def _second_order_cases():
    rng = np.random.default_rng(77)
    x = rng.normal(size=(3, 4))
    soft = rng.uniform(0.1, 0.9, size=(3, 4))
    probs = 0.8 * rng.dirichlet(np.ones(4), size=3) + 0.05
    p = rng.uniform(0.1, 0.9, size=(3, 4))
    # (loss, arrays, options, indices of the differentiated arrays)
    return [
        (crossent.softmax_cross_entropy, (x, np.array([1, -100, 3])),
         dict(weight=np.array([1.0, 2.0, 0.5, 1.5]), label_smoothing=0.1), (0,)),
        (crossent.softmax_cross_entropy, (x, probs), dict(label_smoothing=0.2), (0, 1)),
        (crossent.sigmoid_cross_entropy, (x, soft), {}, (0, 1)),
        (crossent.sigmoid_cross_entropy, (x, soft),
         dict(weight=np.array([[0.5], [2.0], [1.0]]), pos_weight=np.array([1.0, 2.0, 0.5, 3.0])),
         (0, 1)),
        (crossent.binary_cross_entropy, (p, soft), dict(weight=np.array([0.3, 1.0, 2.5, 1.0])),
         (0, 1)),
        (crossent.mean_squared_error, (p, soft), {}, (0, 1)),
        (crossent.mean_squared_error, (p, soft), dict(axis=0), (0, 1)),
        (crossent.mean_squared_error, (p, np.array([0, 3, 1])), {}, (0,)),
    ]


# softmax CE has a registered fused path, not the generic Function
test_torch_gradcheck_and_gradgradcheck, test_jax_check_grads_to_second_order = (
    second_order_tests(_second_order_cases, fused=(crossent.softmax_cross_entropy,)))


# --- the same numbers on every backend -----------------------------------------------------

BACKEND_CASES = [  # (loss, rng -> (prediction, target), options)
    (crossent.softmax_cross_entropy, lambda r: (r.normal(size=(4, 3)), np.array([0, 2, -100, 1])),
     dict(weight=np.array([1.0, 0.5, 2.0]), label_smoothing=0.1)),
    (crossent.softmax_cross_entropy, lambda r: (r.normal(size=(2, 3, 2)),
                                                r.dirichlet(np.ones(3), size=(2, 2))
                                                .transpose(0, 2, 1)),
     dict(axis=1)),
    (crossent.sigmoid_cross_entropy, lambda r: (r.normal(size=(4, 3)), r.uniform(size=(4, 3))),
     dict(pos_weight=np.array([1.0, 2.0, 3.0]))),
    (crossent.binary_cross_entropy, lambda r: (r.uniform(size=(5,)), r.uniform(size=(5,))), {}),
    (crossent.mean_squared_error, lambda r: (r.uniform(size=(3, 3)), np.array([0, 2, 1])), {}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(BACKEND_CASES)))
def test_same_value_and_gradient_on_every_backend(backend, index, rng):
    fn, make, kw = BACKEND_CASES[index]
    pred, tgt = make(rng)
    ref_v, ref_g = crossent.value_and_grad(fn)(pred, tgt, **kw)
    bkw = {k: to_backend(backend, v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    for reduction in ("mean", "none"):
        v, g = crossent.value_and_grad(fn)(to_backend(backend, pred), to_backend(backend, tgt),
                                           reduction=reduction, **bkw)
        rv, rg = crossent.value_and_grad(fn)(pred, tgt, reduction=reduction, **kw)
        np.testing.assert_allclose(to_numpy(v), rv, rtol=1e-12)
        np.testing.assert_allclose(to_numpy(g), rg, rtol=1e-12)
    assert ref_v.shape == ()


def test_half_precision_is_computed_in_float32(half_precision, rng):
    backend, dtype = half_precision
    x32 = rng.normal(scale=5, size=(8, 50)).astype(np.float32)
    y = rng.integers(0, 50, size=8)
    check_summed_in_float32(backend, dtype, crossent.softmax_cross_entropy, x32, y)
    xh, _ = half_inputs(backend, dtype, x32)
    sv = crossent.sigmoid_cross_entropy(xh, to_backend(backend, (x32 > 0).astype(np.float32)))
    assert str(sv.dtype).endswith(dtype)


# --- properties --------------------------------------------------------------------------

logit_arrays = hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1,
                                                       max_side=6),
                          elements=st.floats(-50, 50))


@given(logit_arrays, st.data())
def test_integer_labels_equal_one_hot(logits, data):
    n, c = logits.shape
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    eps = data.draw(st.sampled_from([0.0, 0.1, 0.5]))
    a = crossent.softmax_cross_entropy(logits, labels, label_smoothing=eps, reduction="none")
    b = crossent.softmax_cross_entropy(logits, crossent.one_hot(labels, c), label_smoothing=eps,
                                       reduction="none")
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@given(logit_arrays, st.floats(-1e3, 1e3))
def test_softmax_ce_is_shift_invariant(logits, shift):
    labels = np.zeros(logits.shape[0], dtype=np.int64)
    a, ga = crossent.value_and_grad(crossent.softmax_cross_entropy)(logits, labels)
    b, gb = crossent.value_and_grad(crossent.softmax_cross_entropy)(logits + shift, labels)
    assert float(a) == pytest.approx(float(b), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(ga, gb, atol=1e-9)


@given(logit_arrays, st.sampled_from([crossent.softmax_cross_entropy,
                                      crossent.sigmoid_cross_entropy]))
def test_sum_of_none_is_sum(logits, fn):
    tgt = (np.zeros(logits.shape[0], dtype=np.int64) if fn is crossent.softmax_cross_entropy
           else (logits > 0).astype(np.float64))
    none = fn(logits, tgt, reduction="none")
    assert float(np.sum(none)) == pytest.approx(float(fn(logits, tgt, reduction="sum")),
                                                rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e4), (np.float64, 1e300),
                                         (np.float32, 1e4), (np.float32, 1e38)])
def test_no_nan_or_inf_at_extreme_logits(dtype, scale):
    # scales chosen so that the true loss (up to ~2 * scale) is representable in the dtype
    logits = (np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0], [0.3, 0.2, -0.9]]) * scale
              ).astype(dtype)
    labels = np.array([0, 0, 2])
    for fn, tgt in [(crossent.softmax_cross_entropy, labels),
                    (crossent.softmax_cross_entropy, crossent.one_hot(labels, 3).astype(dtype)),
                    (crossent.sigmoid_cross_entropy, crossent.one_hot(labels, 3).astype(dtype))]:
        v, g = crossent.value_and_grad(fn)(logits, tgt, reduction="none")
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)), (fn.__name__, v, g)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("call,exc,match", [
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError,
     r"targets must hold class indices in \[0, 3\).*\[0, 3\]"),
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, -1])), ValueError,
     "ignore_index=-100"),
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])), ValueError,
     r"shape of logits without the class axis \(2,\), got \(3,\)"),
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3)), np.zeros((2, 4))), ValueError,
     r"shape of logits \(2, 3\), got \(2, 4\)"),
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]),
                                            reduction="avg"), ValueError, "reduction.*'avg'"),
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]),
                                            label_smoothing=1.5), ValueError,
     r"label_smoothing must be in \[0, 1\], got 1.5"),
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3), dtype=np.int64), np.array([0, 1])),
     TypeError, "logits must be a floating-point array, got dtype int64"),
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]),
                                            weight=np.ones(2)), ValueError,
     r"weight must be a 1-D array of one weight per class \(3\), got shape \(2,\)"),
    (lambda: crossent.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), axis=2),
     ValueError, "axis=2 is out of range"),
    (lambda: crossent.sigmoid_cross_entropy(np.zeros(3), np.array([0.0, 1.5, 0.5])), ValueError,
     r"targets must hold probabilities in \[0, 1\], got values in \[0.0, 1.5\]"),
    (lambda: crossent.binary_cross_entropy(np.array([0.5, 1.2]), np.array([0.0, 1.0])),
     ValueError, r"probs must hold probabilities in \[0, 1\]"),
    (lambda: crossent.sigmoid_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3)),
                                            pos_weight=np.ones(4)), ValueError,
     r"pos_weight of shape \(4,\) does not broadcast to \(2, 3\)"),
    (lambda: crossent.smooth_labels(np.eye(3), -0.1), ValueError, "epsilon must be in"),
    (lambda: crossent.one_hot(np.array([0, 5]), 3), ValueError, r"labels must hold class indices"),
    (lambda: crossent.one_hot(np.array([0.0]), 3), TypeError, "labels must be an integer array"),
    (lambda: crossent.value_and_grad(crossent.classification_error), ValueError,
     "no closed-form gradient"),
])
def test_bad_input_raises_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_inputs_are_not_mutated(rng):
    logits = rng.normal(size=(4, 3))
    labels = np.array([0, 1, -100, 2])
    w = np.array([1.0, 2.0, 3.0])
    copies = [a.copy() for a in (logits, labels, w)]
    crossent.value_and_grad(crossent.softmax_cross_entropy)(logits, labels, weight=w,
                                                            label_smoothing=0.2)
    for a, b in zip((logits, labels, w), copies, strict=True):
        np.testing.assert_array_equal(a, b)
    xt = torch.from_numpy(logits.copy())
    crossent.softmax_cross_entropy(xt, torch.from_numpy(labels))
    np.testing.assert_array_equal(xt.numpy(), logits)


def test_jit_compatible_under_jax(rng):
    logits = jnp.asarray(rng.normal(size=(4, 3)))
    labels = jnp.asarray([0, 1, 2, 1])
    f = jax.jit(lambda x, y: crossent.softmax_cross_entropy(x, y, label_smoothing=0.1))
    assert float(f(logits, labels)) == pytest.approx(
        float(crossent.softmax_cross_entropy(np.asarray(logits), np.asarray(labels),
                                             label_smoothing=0.1)), rel=1e-12)


def test_sigmoid_ce_keeps_relative_precision_for_confident_correct_logits():
    # the exact loss is softplus(-x) = log1p(exp(-x)); softplus(x) - x z would round it to 0
    x = np.array([17.0, 60.0, 700.0])
    loss = crossent.sigmoid_cross_entropy(x, np.ones(3), reduction="none")
    np.testing.assert_allclose(loss, np.log1p(np.exp(-x)), rtol=1e-14)
    assert loss[2] > 0


def test_jit_with_labels_closed_over_as_constants(rng):
    # the labels are concrete but every check on them is traced: validation must step aside
    y = jnp.asarray([0, 2, 1])
    z = jnp.asarray(rng.normal(size=(3, 3)))
    f = jax.jit(lambda s: crossent.softmax_cross_entropy(s, y))
    assert float(f(z)) == pytest.approx(float(crossent.softmax_cross_entropy(
        np.asarray(z), np.asarray(y))), rel=1e-12)
    g = jax.jit(lambda s: crossent.sigmoid_cross_entropy(s, jnp.ones_like(s) * 0.5))
    assert np.isfinite(float(g(z)))


@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_torch_tensors_take_the_fused_path_with_the_same_numbers(target_kind, rng):
    logits = rng.normal(size=(2, 3, 6))  # classes on the last axis: moved to dim 1 for torch
    tgt = (rng.integers(0, 6, size=(2, 3)) if target_kind == "index"
           else rng.dirichlet(np.ones(6), size=(2, 3)))
    w = rng.uniform(0.5, 2, size=6)
    x = T(logits).requires_grad_()
    loss = crossent.softmax_cross_entropy(x, T(tgt), weight=w, label_smoothing=0.1)
    # the fused Function, or the kernel's C++ node (rows of PyTorch's (N, C) layout)
    assert node_name(loss) in ("_FusedCrossEntropyBackward", "CrossEntropyBackward")
    loss.backward()
    ref, g = crossent.value_and_grad(crossent.softmax_cross_entropy)(
        logits, tgt, weight=w, label_smoothing=0.1)
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), g, rtol=1e-10, atol=1e-14)
