"""Poly-1, ASL, sparsemax, generalized CE and class-balanced weights: conformance with Optax,
Keras and timm's ASL (restated here: timm is not installed), closed-form gradients against
autodiff and finite differences, limits, extreme inputs, backends and error messages."""

import inspect

import jax
import jax.numpy as jnp
import jax.test_util
import keras
import numpy as np
import optax
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import crossent
from crossent import extended as E
from tests._backends import (
    BACKENDS,
    check_grads_fwd_rev,
    check_inputs_not_mutated,
    check_low_precision,
    check_value_and_grad_on_backend,
    finite_difference,
    to_backend,
    to_numpy,
)

T = torch.from_numpy
REDUCTIONS = ("mean", "sum", "none")
pytestmark = pytest.mark.usefixtures("keras_float64")  # Keras compares in float64 here


def _data(seed=0, n=6, c=5):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, c))
    y = rng.integers(0, c, size=n)
    return z, y, rng.dirichlet(np.ones(c), size=n)


# --- Poly-1 vs Optax ------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [2.0, -0.5, 0.0])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_poly1_matches_optax(epsilon, target_kind):
    z, y, probs = _data(seed=1)
    t = np.eye(5)[y] if target_kind == "index" else probs
    tgt = y if target_kind == "index" else probs

    def ref(logits):
        return jnp.mean(optax.losses.poly_loss_cross_entropy(logits, jnp.asarray(t),
                                                             epsilon=epsilon))

    r, g_ref = jax.jit(jax.value_and_grad(ref))(jnp.asarray(z))
    value, g = crossent.value_and_grad(E.poly1_cross_entropy)(z, tgt, epsilon=epsilon)
    assert float(value) == pytest.approx(float(r), rel=1e-13)
    np.testing.assert_allclose(g, np.asarray(g_ref), rtol=1e-12, atol=1e-15)
    if epsilon == 0.0:
        assert float(value) == pytest.approx(float(crossent.softmax_cross_entropy(z, tgt)),
                                             rel=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_poly1_ignore_index_axis_and_fd(reduction):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, 4, 2))  # (N, C, d) with axis=1
    y = rng.integers(0, 4, size=(3, 2))
    y[0, 1] = -100
    kw = dict(epsilon=1.5, axis=1, reduction=reduction)
    value, g = crossent.value_and_grad(E.poly1_cross_entropy)(z, y, **kw)
    # loop reference over the valid positions
    per = np.zeros((3, 2))
    for i in range(3):
        for j in range(2):
            if y[i, j] != -100:
                p = np.exp(z[i, :, j] - z[i, :, j].max())
                p /= p.sum()
                per[i, j] = -np.log(p[y[i, j]]) + 1.5 * (1 - p[y[i, j]])
    expect = {"none": per, "sum": per.sum(), "mean": per.sum() / 5}[reduction]
    np.testing.assert_allclose(value, expect, rtol=1e-13)
    fd = finite_difference(lambda e: E.poly1_cross_entropy(e, y, **kw), z)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    assert np.all(g[0, :, 1] == 0)


# --- ASL vs timm's AsymmetricLossMultiLabel (restated) --------------------------------------


def _timm_asl(x, y, gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8, elementwise=False):
    """timm.loss.AsymmetricLossMultiLabel.forward, line by line (default options); with
    ``elementwise`` the losses before timm's sum."""
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        loss = loss * one_sided_w
    return -loss if elementwise else -loss.sum()


ASL_OPTIONS = [
    dict(),  # timm's defaults
    dict(gamma_neg=2.0, gamma_pos=0.0, clip=0.2),
    dict(gamma_neg=0.0, gamma_pos=0.0, clip=None),  # plain BCE with a floor
    dict(gamma_neg=1.5, gamma_pos=0.5, clip=0.0, eps=1e-3),
]


@pytest.mark.parametrize("options", ASL_OPTIONS)
@pytest.mark.parametrize("soft", [False, True])
def test_asl_matches_timm(options, soft):
    rng = np.random.default_rng(3)
    x = rng.normal(scale=3.0, size=(6, 7))
    x[0, :3] = [30.0, -30.0, 1e-3]  # saturated sigmoids: the eps floors bite
    y = rng.uniform(size=(6, 7)) if soft else rng.integers(0, 2, size=(6, 7)).astype(float)
    xt = T(x).requires_grad_()
    ref = _timm_asl(xt, T(y), **options)
    ref.backward()
    value, g = crossent.value_and_grad(E.asymmetric_loss)(x, y, reduction="sum", **options)
    assert float(value) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)
    mean = E.asymmetric_loss(x, y, **options)
    assert float(mean) == pytest.approx(ref.item() / x.size, rel=1e-12)


def test_asl_gradient_fd_and_extremes():
    rng = np.random.default_rng(4)
    x = rng.normal(scale=2.0, size=(4, 3))
    y = rng.integers(0, 2, size=(4, 3))
    g = crossent.grad(E.asymmetric_loss)(x, y, reduction="sum")
    fd = finite_difference(lambda e: E.asymmetric_loss(e, y, reduction="none"), x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    big = np.array([[1e4, -1e4, 50.0, -50.0]])
    for lab in (np.ones_like(big), np.zeros_like(big)):
        v, g = crossent.value_and_grad(E.asymmetric_loss)(big, lab, reduction="none")
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
        assert np.all(v <= -np.log(1e-8) + 1e-9)  # the eps floor bounds every term
        xt = T(big).requires_grad_()
        E.asymmetric_loss(xt, T(lab)).backward()
        assert torch.isfinite(xt.grad).all()


# --- sparsemax vs Optax ---------------------------------------------------------------------


def test_sparsemax_matches_optax_projection():
    rng = np.random.default_rng(5)
    z = rng.normal(scale=2.0, size=(7, 6))
    z[0] = 0.0  # uniform row, whole support
    z[1, 2] = 50.0  # one-hot row
    ref = jax.jit(jax.vmap(optax.projections.projection_simplex))(jnp.asarray(z))
    p = E.sparsemax(z)
    np.testing.assert_allclose(p, np.asarray(ref), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(E.sparsemax(z.T, axis=0), p.T, rtol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sparsemax_loss_matches_optax(reduction):
    z, y, _ = _data(seed=6, n=7, c=6)
    z[0, y[0]] = 40.0  # sparsemax(z) = onehot(y): loss and gradient exactly 0

    def total(s):
        r = optax.losses.multiclass_sparsemax_loss(s, jnp.asarray(y))
        return r, (jnp.mean(r) if reduction == "mean" else jnp.sum(r))

    ref = np.asarray(total(jnp.asarray(z))[0])
    g_ref = jax.jit(jax.grad(lambda s: total(s)[1]))(jnp.asarray(z))
    value, g = crossent.value_and_grad(E.sparsemax_loss)(z, y, reduction=reduction)
    expect = {"none": ref, "sum": ref.sum(), "mean": ref.mean()}[reduction]
    np.testing.assert_allclose(value, expect, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, np.asarray(g_ref), rtol=1e-12, atol=1e-14)
    assert np.all(g[0] == 0) if reduction != "mean" else np.allclose(g[0], 0)
    fd = finite_difference(lambda e: E.sparsemax_loss(e, y, reduction=reduction), z)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


def test_sparsemax_masked_classes():
    z = np.array([[1.0, -np.inf, 0.5, -np.inf], [0.0, 0.0, -np.inf, 3.0]])
    y = np.array([2, 3])
    p = E.sparsemax(z)
    np.testing.assert_allclose(p, [[0.75, 0, 0.25, 0], [0, 0, 0, 1]], rtol=1e-14)
    v, g = crossent.value_and_grad(E.sparsemax_loss)(z, y, reduction="none")
    finite = np.where(np.isfinite(z), z, -1e6)  # far enough to be off the support
    np.testing.assert_allclose(v, E.sparsemax_loss(finite, y, reduction="none"), rtol=1e-14)
    np.testing.assert_allclose(g, p - np.eye(4)[y], rtol=1e-14)
    zt = torch.from_numpy(z).requires_grad_()  # autodiff through the definition: no NaN
    E.sparsemax_loss.with_pullback((), zt, torch.from_numpy(y), reduction="sum")[0].backward()
    np.testing.assert_allclose(zt.grad.numpy(), g, rtol=1e-14)
    zt = torch.from_numpy(z).requires_grad_()  # the backward (the closed form) as well
    E.sparsemax_loss(zt, torch.from_numpy(y), reduction="sum").backward()
    np.testing.assert_allclose(zt.grad.numpy(), g, rtol=1e-14)


@given(seed=st.integers(0, 2**16), shift=st.floats(-1e3, 1e3))
def test_sparsemax_loss_properties(seed, shift):
    z, y, _ = _data(seed=seed, n=4, c=5)
    base = E.sparsemax_loss(z, y, reduction="none")
    assert np.all(base >= -1e-12)  # a Fenchel-Young loss is non-negative
    np.testing.assert_allclose(E.sparsemax_loss(z + shift, y, reduction="none"), base,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_sparsemax_matches_optax(reduction):
    rng = np.random.default_rng(7)
    x = rng.normal(scale=1.5, size=(5, 4))
    y = rng.integers(0, 2, size=(5, 4))

    def total(s):
        r = optax.losses.sparsemax_loss(s, jnp.asarray(y))
        return jnp.mean(r) if reduction == "mean" else jnp.sum(r)

    ref = np.asarray(optax.losses.sparsemax_loss(jnp.asarray(x), jnp.asarray(y)))
    value, g = crossent.value_and_grad(E.binary_sparsemax_loss)(x, y, reduction=reduction)
    expect = {"none": ref, "sum": ref.sum(), "mean": ref.mean()}[reduction]
    np.testing.assert_allclose(value, expect, rtol=1e-13)
    np.testing.assert_allclose(g, np.asarray(jax.jit(jax.grad(total))(jnp.asarray(x))),
                               rtol=1e-13)


# --- generalized cross-entropy vs Keras -----------------------------------------------------


@pytest.mark.parametrize("q", [0.1, 0.5, 0.7, 1.0])
def test_gce_matches_keras(q):
    z, y, _ = _data(seed=8)
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)

    def ref(logits):
        return jnp.mean(keras.losses.categorical_generalized_cross_entropy(
            jnp.asarray(y), jax.nn.softmax(logits), q=q))

    r, g_ref = jax.jit(jax.value_and_grad(ref))(jnp.asarray(z))
    keras_direct = keras.losses.categorical_generalized_cross_entropy(
        jnp.asarray(y), jnp.asarray(probs), q=q)
    value, g = crossent.value_and_grad(E.generalized_cross_entropy)(z, y, q=q)
    np.testing.assert_allclose(E.generalized_cross_entropy(z, y, q=q, reduction="none"),
                               np.asarray(keras_direct), rtol=1e-12)
    assert float(value) == pytest.approx(float(r), rel=1e-12)
    np.testing.assert_allclose(g, np.asarray(g_ref), rtol=1e-11, atol=1e-15)


def test_gce_limits_ignore_index_axis_and_extremes():
    z, y, _ = _data(seed=9)
    ce = crossent.softmax_cross_entropy(z, y, reduction="none")
    np.testing.assert_allclose(E.generalized_cross_entropy(z, y, q=1e-9, reduction="none"), ce,
                               rtol=1e-7)  # q -> 0 is cross-entropy
    p_y = np.exp(-ce)
    np.testing.assert_allclose(E.generalized_cross_entropy(z, y, q=1.0, reduction="none"),
                               1 - p_y, rtol=1e-12)  # q = 1 is MAE
    y2 = y.copy()
    y2[[1, 4]] = -1
    v, g = crossent.value_and_grad(E.generalized_cross_entropy)(z.T, y2, axis=0,
                                                                ignore_index=-1)
    keep = y2 != -1
    assert float(v) == pytest.approx(float(E.generalized_cross_entropy(z[keep], y[keep])),
                                     rel=1e-13)
    assert np.all(g[:, ~keep] == 0)
    fd = finite_difference(lambda e: float(E.generalized_cross_entropy(e, y2, axis=0,
                                                                       ignore_index=-1)), z.T)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    huge = np.array([[1e4, -1e4, 0.0]])
    for lab in ([0], [1]):
        v, g = crossent.value_and_grad(E.generalized_cross_entropy)(huge, np.array(lab))
        assert np.isfinite(v) and np.all(np.isfinite(g))


# --- class-balanced weights -----------------------------------------------------------------


def _cui_weights(samples_per_cls, beta):
    """The authors' code (Cui et al., class-balanced-loss repository), verbatim in NumPy."""
    effective_num = 1.0 - np.power(beta, samples_per_cls)
    weights = (1.0 - beta) / np.array(effective_num)
    return weights / np.sum(weights) * len(samples_per_cls)


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.999, 0.9999])
def test_class_balanced_weights_match_the_paper_code(beta):
    counts = [5000, 2000, 500, 100, 10, 1]
    w = E.class_balanced_weights(counts, beta=beta)
    np.testing.assert_allclose(w, _cui_weights(counts, beta), rtol=1e-10)
    assert w.sum() == pytest.approx(len(counts))


def test_class_balanced_weights_limits_and_backends():
    counts = np.array([400, 100, 20])
    inv = (1 / counts) / (1 / counts).sum() * 3
    np.testing.assert_allclose(E.class_balanced_weights(counts, beta=1.0), inv, rtol=1e-14)
    np.testing.assert_allclose(E.class_balanced_weights(counts, beta=1 - 1e-12), inv, rtol=1e-6)
    ref = E.class_balanced_weights(counts, beta=0.99)
    for backend in BACKENDS:
        out = E.class_balanced_weights(to_backend(backend, counts), beta=0.99)
        np.testing.assert_allclose(to_numpy(out), ref, rtol=1e-6)  # default float dtypes
    w = E.class_balanced_weights(torch.tensor([10.0, 1.0], dtype=torch.float64), beta=0.9)
    assert w.dtype == torch.float64
    # the intended use: per-class weight of softmax cross-entropy
    z, y, _ = _data(seed=10, c=3)
    crossent.softmax_cross_entropy(z, y, weight=ref)


# --- backends, dtypes, errors ---------------------------------------------------------------


def _cases():
    z, y, probs = _data(seed=11, n=4, c=3)
    yb = (probs > 0.3).astype(float)
    return [
        (E.poly1_cross_entropy, (z, y), {"epsilon": 1.0}),
        (E.poly1_cross_entropy, (z, probs), {}),
        (E.asymmetric_loss, (z, yb), {}),
        (E.sparsemax_loss, (z, y), {}),
        (E.binary_sparsemax_loss, (z, yb), {}),
        (E.generalized_cross_entropy, (z, y), {"q": 0.6}),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends(backend):
    check_value_and_grad_on_backend(backend, _cases())
    p = E.sparsemax(to_backend(backend, _cases()[0][1][0]))
    np.testing.assert_allclose(to_numpy(p), E.sparsemax(_cases()[0][1][0]), rtol=1e-13)


def test_closed_form_against_torch_autograd_through_the_definition():
    for fn, args, kw in _cases():
        _, g = crossent.value_and_grad(fn)(*args, **kw)
        # autograd through the definition's value code (what torch.func transforms use)
        xt = T(args[0]).requires_grad_()
        fn.with_pullback((), xt, *[T(a) for a in args[1:]], **kw)[0].backward()
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14,
                                   err_msg=fn.__name__)
        # the public backward is the closed form itself
        xt = T(args[0]).requires_grad_()
        fn(xt, *[T(a) for a in args[1:]], **kw).backward()
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-14, atol=1e-16,
                                   err_msg=fn.__name__)
        # and torch.func.grad, which runs the value code under autograd
        gf = torch.func.grad(lambda a, fn=fn, args=args, kw=kw: fn(
            a, *[T(b) for b in args[1:]], **kw))(T(args[0]))
        np.testing.assert_allclose(g, gf.numpy(), rtol=1e-10, atol=1e-14, err_msg=fn.__name__)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    check_low_precision(_cases(), dtype, argnums=(0,))


def test_inputs_are_not_mutated():
    check_inputs_not_mutated(_cases())


# --- the closed form is the backward; double backward -----------------------------------------


def _torch_sparsemax(z):
    """Sparsemax along the last axis, written out with torch ops (sort and threshold)."""
    zs = torch.sort(z, dim=-1, descending=True).values
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    support = 1 + k * zs > zs.cumsum(-1)
    tau = (torch.where(support, zs, 0).sum(-1, keepdim=True) - 1) / support.sum(-1, keepdim=True)
    return torch.clamp(z - tau, min=0)


def _ref_poly1(z, t, epsilon, axis):
    """Poly-1 per position, with (masked) one-hot or probability targets ``t``."""
    logp = torch.log_softmax(z, dim=axis)
    return -(t * logp).sum(axis) + epsilon * (t * (1 - logp.exp())).sum(axis)


def _ref_gce(z, y, q):
    p_y = torch.softmax(z, -1).gather(-1, y[..., None])[..., 0]
    return (1 - p_y ** q) / q


def _ref_binary_sparsemax(x, y):
    v = (1 - 2 * y) * x
    return torch.where(v <= -1, 0 * v, torch.where(v >= 1, v, (v + 1) ** 2 / 4))


def _ref_sparsemax_loss(z, y):
    p = _torch_sparsemax(z)
    z_y = z.gather(-1, y[..., None])
    return (p * (z - z_y)).sum(-1) + 0.5 * (1 - (p * p).sum(-1))


def _double_backward_cases():
    """(name, loss, its positional arrays, options, the indices of the arrays with a closed
    form, a torch reference of the per-position losses, mean's denominator): every loss of
    the module and every closed-form argument."""
    rng = np.random.default_rng(50)
    z = rng.normal(size=(3, 4))
    y = rng.integers(0, 4, size=3)
    z3 = rng.normal(size=(2, 4, 3))  # (N, C, d), classes on axis 1, one label ignored
    y3 = rng.integers(0, 4, size=(2, 3))
    y3[1, 0] = -100
    t = rng.dirichlet(5 * np.ones(4), size=3)
    x = rng.normal(size=(3, 4))
    yb = rng.integers(0, 2, size=(3, 4)).astype(float)
    ys = rng.uniform(size=(3, 4))
    onehot = torch.nn.functional.one_hot
    onehot3 = torch.moveaxis(onehot(T(y3).clamp(min=0), 4), -1, 1) * (T(y3) != -100)[:, None]
    asl_kw = dict(gamma_neg=2.0, gamma_pos=1.0, clip=0.1)
    return [
        ("poly1 labels", E.poly1_cross_entropy, (z, y), dict(epsilon=1.5), (0,),
         lambda a, b: _ref_poly1(a, onehot(b, 4), 1.5, -1), 3),
        ("poly1 axis=1 ignore_index", E.poly1_cross_entropy, (z3, y3),
         dict(epsilon=-0.5, axis=1), (0,), lambda a, b: _ref_poly1(a, onehot3, -0.5, 1), 5),
        ("poly1 probabilities", E.poly1_cross_entropy, (z, t), dict(epsilon=2.0), (0, 1),
         lambda a, b: _ref_poly1(a, b, 2.0, -1), 3),
        ("asl", E.asymmetric_loss, (x, yb), {}, (0,),
         lambda a, b: _timm_asl(a, b, elementwise=True), 12),
        ("asl soft", E.asymmetric_loss, (x, ys), asl_kw, (0,),
         lambda a, b: _timm_asl(a, b, elementwise=True, **asl_kw), 12),
        ("sparsemax", E.sparsemax_loss, (2 * z, y), {}, (0,), _ref_sparsemax_loss, 3),
        ("binary sparsemax", E.binary_sparsemax_loss, (1.5 * x, yb), {}, (0,),
         _ref_binary_sparsemax, 12),
        ("gce", E.generalized_cross_entropy, (z, y), dict(q=0.6), (0,),
         lambda a, b: _ref_gce(a, b, 0.6), 3),
    ]


def test_double_backward_cases_cover_every_closed_form():
    covered = {}
    for _, fn, _, _, diff, _, _ in _double_backward_cases():
        names = list(inspect.signature(fn).parameters)
        covered.setdefault(fn, set()).update(names[i] for i in diff)
    losses = {E.poly1_cross_entropy, E.asymmetric_loss, E.sparsemax_loss,
              E.binary_sparsemax_loss, E.generalized_cross_entropy}
    assert set(covered) == losses
    for fn, names in covered.items():
        assert names == set(crossent.gradients.closed_form_args(fn)), fn.__name__
    assert crossent.gradients.closed_form_args(E.poly1_cross_entropy) == ("logits", "targets")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", _double_backward_cases(), ids=lambda c: c[0])
def test_backward_is_the_closed_form_and_double_backward_is_exact(case, reduction):
    """torch: the backward is the closed-form autograd Function, gradcheck and gradgradcheck
    pass in float64, and a random cotangent pulls back as autograd of a plain formula; JAX:
    check_grads to second order in forward and reverse mode, jitted."""
    name, fn, args, kw, diff, ref, denom = case

    def bind(full, diffs):
        full = list(full)
        for i, a in zip(diff, diffs, strict=True):
            full[i] = a
        return full

    def g(*diffs):
        return fn(*bind([T(a) for a in args], diffs), reduction=reduction, **kw)

    def g_jax(*diffs):
        return fn(*bind(args, diffs), reduction=reduction, **kw)

    ts = [T(args[i]).requires_grad_() for i in diff]
    out = g(*ts)
    assert type(out.grad_fn).__name__ == "_ClosedFormBackward", name
    assert torch.autograd.gradcheck(g, ts), name
    assert torch.autograd.gradgradcheck(g, ts), name
    cot = T(np.random.default_rng(51).normal(size=tuple(out.shape)))
    got = torch.autograd.grad(out, ts, cot)
    refs = [T(args[i]).requires_grad_() for i in diff]
    per = ref(*bind([T(a) for a in args], refs))
    ref_out = {"none": per, "sum": per.sum(), "mean": per.sum() / denom}[reduction]
    np.testing.assert_allclose(out.detach().numpy(), ref_out.detach().numpy(), rtol=1e-12,
                               atol=1e-15, err_msg=name)
    for a, b in zip(got, torch.autograd.grad(ref_out, refs, cot), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-13, err_msg=name)
    # the closed form of crossent.grad is the backward's, for each argument
    for i, a in zip(diff, torch.autograd.grad(g(*ts).sum(), ts), strict=True):
        want = crossent.grad(fn, argnums=i)(*args, reduction=reduction, **kw)
        np.testing.assert_allclose(a.numpy(), want, rtol=1e-14, atol=1e-16, err_msg=name)
    if reduction == "none":  # on JAX one reduction (the most general cotangent) suffices:
        # each check compiles dozens of second-order programs, about 3 s a case
        check_grads_fwd_rev(jax.jit(g_jax), tuple(jnp.asarray(args[i]) for i in diff))


def test_soft_asl_targets_are_differentiated_by_autodiff_of_the_definition():
    # ASL has no closed form w.r.t. soft targets: torch autograd and jax.grad run the value
    # code, which must give correct (finite-difference) gradients for both arguments
    rng = np.random.default_rng(52)
    x, ys = rng.normal(size=(3, 4)), rng.uniform(0.1, 0.9, size=(3, 4))
    kw = dict(gamma_neg=2.0, gamma_pos=1.0, clip=0.1)
    assert crossent.gradients.closed_form_args(E.asymmetric_loss) == ("logits",)
    with pytest.raises(ValueError, match="no closed-form gradient w.r.t. 'targets'"):
        crossent.grad(E.asymmetric_loss, argnums=1)
    for reduction in REDUCTIONS:
        def f(a, b, reduction=reduction):
            return E.asymmetric_loss(a, b, reduction=reduction, **kw)

        assert torch.autograd.gradcheck(f, (T(x).requires_grad_(), T(ys).requires_grad_()))
        jax.test_util.check_grads(jax.jit(f), (jnp.asarray(x), jnp.asarray(ys)), order=1,
                                  modes=("rev",))


def test_errors():
    z, y, probs = _data(seed=12, n=3, c=4)
    with pytest.raises(ValueError, match="epsilon must be a finite number"):
        E.poly1_cross_entropy(z, y, epsilon="2")
    with pytest.raises(ValueError, match=r"targets must hold class indices in \[0, 4\)"):
        E.poly1_cross_entropy(z, np.array([0, 1, 9]))
    with pytest.raises(ValueError, match=r"targets must hold probabilities in \[0, 1\]"):
        E.asymmetric_loss(z, 2 * probs)
    with pytest.raises(ValueError, match="gamma_neg must be a non-negative finite number"):
        E.asymmetric_loss(z, probs, gamma_neg=-1)
    with pytest.raises(ValueError, match=r"clip must be in \[0, 1\]"):
        E.asymmetric_loss(z, probs, clip=1.5)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        E.sparsemax_loss(z, probs)
    with pytest.raises(ValueError, match="labels must hold 0 or 1"):
        E.binary_sparsemax_loss(z, 2 * np.ones_like(z))
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        E.generalized_cross_entropy(z, y, q=0.0)
    with pytest.raises(ValueError, match="labels must have the shape of logits without"):
        E.generalized_cross_entropy(z, y[:2])
    with pytest.raises(ValueError, match="samples_per_class must be positive counts"):
        E.class_balanced_weights([10, 0, 3])
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        E.class_balanced_weights([10, 3], beta=1.5)
    with pytest.raises(ValueError, match="samples_per_class must be a non-empty 1-D array"):
        E.class_balanced_weights(np.ones((2, 2)))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        E.sparsemax(np.array([1, 2]))
