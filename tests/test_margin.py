"""Hinge family and margin softmax losses: conformance with PyTorch, Optax, Keras and
pytorch-metric-learning, closed-form gradients against autodiff and finite differences,
the zero-margin property, extreme inputs, backends and error messages."""

import math

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from pytorch_metric_learning import losses as pml

import crossent
from crossent import hinge as H
from crossent import margin_softmax as M
from tests._backends import (
    BACKENDS,
    check_inputs_not_mutated,
    closed_form_tests,
    finite_difference,
    jit_on,
    to_backend,
    to_numpy,
)

T = torch.from_numpy
REDUCTIONS = ("mean", "sum", "none")
pytestmark = pytest.mark.usefixtures("keras_float64")


def _reduce(values, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction](values)


# --- binary hinge ---------------------------------------------------------------------------


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("zero_one", [False, True])
def test_hinge_matches_optax_and_keras(squared, zero_one):
    rng = np.random.default_rng(0)
    s = rng.normal(scale=2.0, size=(5, 4))
    t = rng.choice([-1, 1], size=(5, 4))
    tin = (t + 1) // 2 if zero_one else t  # {0, 1} labels are read as {-1, 1}
    ours = H.hinge_loss(s, tin, squared=squared, reduction="none")
    ref = np.asarray(optax.losses.hinge_loss(jnp.asarray(s), jnp.asarray(t, dtype=float)))
    np.testing.assert_allclose(ours, ref**2 if squared else ref, rtol=1e-13)
    # Keras averages over the last axis (its mean on JAX keeps ~float32 accuracy)
    kfn = keras.losses.squared_hinge if squared else keras.losses.hinge
    kref = np.asarray(kfn(jnp.asarray(tin, dtype=float), jnp.asarray(s)))
    np.testing.assert_allclose(ours.mean(-1), kref, rtol=1e-6)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hinge_gradient(squared, reduction):
    rng = np.random.default_rng(1)
    s = rng.normal(scale=2.0, size=(4, 3))
    t = rng.choice([0, 1], size=(4, 3))
    value, g = crossent.value_and_grad(H.hinge_loss)(s, t, squared=squared, reduction=reduction)
    jt = jnp.asarray(2.0 * t - 1.0)

    def ref(x):
        h = optax.losses.hinge_loss(x, jt)
        return jnp.sum(h**2 if squared else h) / (s.size if reduction == "mean" else 1)

    np.testing.assert_allclose(g, np.asarray(jax.jit(jax.grad(ref))(jnp.asarray(s))),
                               rtol=1e-12)
    fd = finite_difference(lambda x: H.hinge_loss(x, t, squared=squared,
                                                  reduction=reduction), s)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    assert np.shape(value) == (() if reduction != "none" else s.shape)


def test_hinge_rejects_other_labels():
    with pytest.raises(ValueError, match=r"targets must hold binary labels in \{-1, 1\}"):
        H.hinge_loss(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="scores must be a floating-point array"):
        H.hinge_loss(np.zeros(3, dtype=int), np.array([0, 1, 1]))


# --- multi_margin_loss vs PyTorch -----------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_matches_torch(p, weighted, reduction):
    rng = np.random.default_rng(p + 2 * weighted)
    x = rng.normal(size=(7, 5))
    y = rng.integers(0, 5, size=7)
    w = rng.uniform(0.2, 2.0, size=5) if weighted else None
    xt = T(x).requires_grad_()
    ref = F.multi_margin_loss(xt, T(y), p=p, margin=0.7, weight=None if w is None else T(w),
                              reduction=reduction)
    ref.sum().backward()
    value, g = crossent.value_and_grad(H.multi_margin_loss)(x, y, p=p, margin=0.7, weight=w,
                                                            reduction=reduction)
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_multi_margin_unbatched_and_errors():
    x = np.array([0.1, 0.2, 0.4, 0.8])
    ref = F.multi_margin_loss(T(x)[None], torch.tensor([3]))
    assert float(H.multi_margin_loss(x, np.array(3))) == pytest.approx(float(ref), rel=1e-14)
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        H.multi_margin_loss(x[None], np.array([3]), p=3)
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 4\)"):
        H.multi_margin_loss(x[None], np.array([4]))
    with pytest.raises(ValueError, match="labels must have the shape"):
        H.multi_margin_loss(x[None], np.array([1, 2]))


# --- Crammer-Singer and Keras categorical hinge ---------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multiclass_hinge_matches_optax(reduction):
    rng = np.random.default_rng(3)
    s = rng.normal(size=(6, 4))
    s[0] = 0.0  # a tie among the non-target classes: the subgradient is shared
    y = rng.integers(0, 4, size=6)
    ref = optax.losses.multiclass_hinge_loss(jnp.asarray(s), jnp.asarray(y))
    value, g = crossent.value_and_grad(H.multiclass_hinge_loss)(s, y, reduction=reduction)
    np.testing.assert_allclose(value, _reduce(np.asarray(ref), reduction), rtol=1e-13)

    def total(x):
        r = optax.losses.multiclass_hinge_loss(x, jnp.asarray(y))
        return jnp.mean(r) if reduction == "mean" else jnp.sum(r)

    np.testing.assert_allclose(g, np.asarray(jax.jit(jax.grad(total))(jnp.asarray(s))),
                               rtol=1e-13)


@pytest.mark.parametrize("integer_targets", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_categorical_hinge_matches_keras(integer_targets, reduction):
    rng = np.random.default_rng(4)
    s = rng.normal(size=(6, 4))
    s[1] = -np.abs(s[1])  # every score negative: Keras's neg term is the target's 0
    y = rng.integers(0, 4, size=6)
    onehot = np.eye(4)[y]
    tgt = y if integer_targets else onehot
    ref = keras.losses.categorical_hinge(jnp.asarray(onehot), jnp.asarray(s))
    value, g = crossent.value_and_grad(H.categorical_hinge_loss)(s, tgt, reduction=reduction)
    np.testing.assert_allclose(value, _reduce(np.asarray(ref), reduction), rtol=1e-13)

    def total(x):
        r = keras.losses.categorical_hinge(jnp.asarray(onehot), x)
        return jnp.mean(r) if reduction == "mean" else jnp.sum(r)

    np.testing.assert_allclose(g, np.asarray(jax.jit(jax.grad(total))(jnp.asarray(s))),
                               rtol=1e-13)
    if not integer_targets:  # floating targets have a closed form too (argnums=1)
        gt = crossent.grad(H.categorical_hinge_loss, argnums=1)(s, tgt, reduction=reduction)

        def total_t(t):
            r = keras.losses.categorical_hinge(t, jnp.asarray(s))
            return jnp.mean(r) if reduction == "mean" else jnp.sum(r)

        np.testing.assert_allclose(gt, np.asarray(jax.jit(jax.grad(total_t))(jnp.asarray(tgt))),
                                   rtol=1e-13)


# --- margin softmax vs pytorch-metric-learning ----------------------------------------------

PML = {
    "lsoftmax": (M.large_margin_softmax_loss, pml.LargeMarginSoftmaxLoss),
    "sphereface": (M.sphereface_loss, pml.SphereFaceLoss),
    "cosface": (M.cosface_loss, pml.CosFaceLoss),
    "arcface": (M.arcface_loss, pml.ArcFaceLoss),
}
CASES = [
    ("lsoftmax", 1, 1.0), ("lsoftmax", 2, 1.0), ("lsoftmax", 3, 0.7), ("lsoftmax", 4, 1.0),
    ("sphereface", 1, 1.0), ("sphereface", 2, 1.5), ("sphereface", 4, 1.0),
    ("cosface", 0.0, 10.0), ("cosface", 0.35, 64.0),
    ("arcface", 0.0, 10.0), ("arcface", 0.5, 64.0), ("arcface", 2.6, 8.0),
]


def _face_data(seed=0, n=9, d=6, c=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.3, 3.0, size=(n, 1))
    w = rng.normal(size=(c, d)) * rng.uniform(0.5, 2.0, size=(c, 1))
    y = rng.integers(0, c, size=n)
    return x, w, y


def _pml_value_and_grads(kind, margin, scale, x, w, y):
    cls = PML[kind][1]
    pml_margin = math.degrees(margin) if kind == "arcface" else margin
    loss_fn = cls(num_classes=w.shape[0], embedding_size=w.shape[1], margin=pml_margin,
                  scale=scale).double()
    with torch.no_grad():
        loss_fn.W.copy_(T(w.T))  # pml stores W as (D, C)
    xt = T(x).requires_grad_()
    value = loss_fn(xt, T(y))
    value.backward()
    return value.item(), xt.grad.numpy(), loss_fn.W.grad.numpy().T


@pytest.mark.parametrize("kind,margin,scale", CASES)
def test_margin_softmax_matches_pml(kind, margin, scale):
    x, w, y = _face_data(seed=len(kind) + int(10 * margin))
    ref, gx_ref, gw_ref = _pml_value_and_grads(kind, margin, scale, x, w, y)
    fn = PML[kind][0]
    value, gx = crossent.value_and_grad(fn)(x, w, y, margin=margin, scale=scale)
    assert float(value) == pytest.approx(ref, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-9, atol=1e-12)
    # the weight gradient by torch autograd through crossent's own definition
    xt, wt = T(x), T(w).requires_grad_()
    fn(xt, wt, T(y), margin=margin, scale=scale).backward()
    np.testing.assert_allclose(wt.grad.numpy(), gw_ref, rtol=1e-9, atol=1e-12)
    # ... which is the closed form w.r.t. the weight (argnums=1), also on NumPy
    gw = crossent.grad(fn, argnums=1)(x, w, y, margin=margin, scale=scale)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind,margin,scale", CASES[1::2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_softmax_gradient_autograd_and_fd(kind, margin, scale, reduction):
    x, w, y = _face_data(seed=7, n=4, d=3, c=3)
    fn = PML[kind][0]
    kw = dict(margin=margin, scale=scale, reduction=reduction)
    value, g = crossent.value_and_grad(fn)(x, w, y, **kw)
    xt = T(x).requires_grad_()
    fn(xt, T(w), T(y), **kw).sum().backward()
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    fd = finite_difference(lambda e: fn(e, w, y, **kw), x)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)
    assert np.shape(value) == ((4,) if reduction == "none" else ())


# --- independent float64 loop references (angles by acos, the paper's piecewise forms) -------


def _loop_margin_loss(kind, x, w, y, margin, scale, easy_margin=False):
    total = []
    for xi, yi in zip(x, y, strict=True):
        logits = []
        for j, wj in enumerate(w):
            cos = float(xi @ wj / (np.linalg.norm(xi) * np.linalg.norm(wj)))
            theta = math.acos(max(-1.0, min(1.0, cos)))
            f = cos
            if j == yi:
                if kind in ("lsoftmax", "sphereface"):
                    k = math.floor(theta * margin / math.pi)
                    f = (-1) ** k * math.cos(margin * theta) - 2 * k
                elif kind == "cosface":
                    f = cos - margin
                elif easy_margin:
                    f = math.cos(theta + margin) if cos > 0 else cos
                else:
                    f = math.cos(theta + margin) if theta + margin < math.pi else (
                        cos - margin * math.sin(margin))
            r = {"lsoftmax": np.linalg.norm(xi) * np.linalg.norm(wj),
                 "sphereface": np.linalg.norm(xi)}.get(kind, 1.0)
            logits.append(scale * r * f)
        logits = np.array(logits)
        mx = logits.max()
        total.append(mx + math.log(np.exp(logits - mx).sum()) - logits[yi])
    return np.array(total)


@pytest.mark.parametrize("kind,margin,scale", CASES)
def test_margin_softmax_matches_loop_reference(kind, margin, scale):
    x, w, y = _face_data(seed=11)
    ours = PML[kind][0](x, w, y, margin=margin, scale=scale, reduction="none")
    np.testing.assert_allclose(ours, _loop_margin_loss(kind, x, w, y, margin, scale),
                               rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("margin", [0.3, 1.2, 2.9])
def test_arcface_easy_margin_and_both_branches(margin):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 3))
    y = np.arange(40) % 4
    # embeddings from aligned to opposite their class weight: every branch is visited
    t = np.linspace(0.0, 1.0, 40)[:, None]
    x = (1 - 2 * t) * w[y] + 0.3 * rng.normal(size=(40, 3))
    cos = np.sum(x * w[y], 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(w[y], axis=1)
    assert (cos > 0).any() and (cos < math.cos(math.pi - margin)).any()
    for easy in (False, True):
        value, g = crossent.value_and_grad(M.arcface_loss)(
            x, w, y, margin=margin, scale=5.0, easy_margin=easy, reduction="none")
        np.testing.assert_allclose(value, _loop_margin_loss("arcface", x, w, y, margin, 5.0,
                                                            easy), rtol=1e-11)
        xt = T(x).requires_grad_()
        M.arcface_loss(xt, T(w), T(y), margin=margin, scale=5.0, easy_margin=easy,
                       reduction="sum").backward()
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-13)


# --- the zero-margin property ---------------------------------------------------------------


def _normalised_softmax_ce(x, w, y, scale):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    v = w / np.linalg.norm(w, axis=1, keepdims=True)
    z = scale * u @ v.T
    mx = z.max(1, keepdims=True)
    lse = (mx + np.log(np.exp(z - mx).sum(1, keepdims=True)))[:, 0]
    return lse - z[np.arange(len(y)), y]


@given(seed=st.integers(0, 2**16), scale=st.floats(0.5, 64.0))
def test_zero_margin_is_normalised_softmax_ce(seed, scale):
    x, w, y = _face_data(seed=seed, n=5, d=4, c=3)
    ref = _normalised_softmax_ce(x, w, y, scale)
    for fn, m in ((M.cosface_loss, 0.0), (M.arcface_loss, 0.0)):
        np.testing.assert_allclose(fn(x, w, y, margin=m, scale=scale, reduction="none"), ref,
                                   rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        M.arcface_loss(x, w, y, margin=0.0, scale=scale, easy_margin=True, reduction="none"),
        ref, rtol=1e-10, atol=1e-12)
    # multiplicative margins: m = 1 is no margin; SphereFace on unit features is then
    # normalised softmax, L-Softmax plain softmax on s W x
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(
        M.sphereface_loss(u, w, y, margin=1, scale=scale, reduction="none"), ref, rtol=1e-10,
        atol=1e-12)
    plain = crossent.softmax_cross_entropy(scale * x @ w.T, y, reduction="none")
    np.testing.assert_allclose(
        M.large_margin_softmax_loss(x, w, y, margin=1, scale=scale, reduction="none"), plain,
        rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 2**16), m=st.floats(0.05, 0.8))
def test_margin_makes_the_loss_larger(seed, m):
    x, w, y = _face_data(seed=seed, n=5, d=4, c=3)
    for fn in (M.cosface_loss, M.arcface_loss):
        base = fn(x, w, y, margin=0.0, scale=8.0, reduction="none")
        assert np.all(fn(x, w, y, margin=m, scale=8.0, reduction="none") >= base - 1e-12)


# --- extreme inputs, dtypes, backends -------------------------------------------------------


@pytest.mark.parametrize("kind,margin,scale", CASES)
def test_margin_softmax_extreme_inputs_finite(kind, margin, scale):
    _, w, _ = _face_data(seed=3, c=4)
    y = np.array([0, 1, 2, 3, 0])
    x = np.stack([w[0], -w[1], np.zeros(6), 1e150 * w[3], 1e-150 * w[1]])  # cos = 1, -1 ...
    fn = PML[kind][0]
    value, g = crossent.value_and_grad(fn)(x, w, y, margin=margin, scale=scale,
                                           reduction="none")
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(g))
    xt = T(x).requires_grad_()
    fn(xt, T(w), T(y), margin=margin, scale=scale).backward()
    assert torch.isfinite(xt.grad).all()
    # float32 with a large scale and nearly opposite features
    v32, g32 = crossent.value_and_grad(fn)(x[:3].astype(np.float32), w.astype(np.float32),
                                           y[:3], margin=margin, scale=scale)
    assert v32.dtype == np.float32 and np.isfinite(v32) and np.all(np.isfinite(g32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_margin_softmax_half_precision(dtype):
    x, w, y = _face_data(seed=2)
    ref = M.arcface_loss(x, w, y)
    out = M.arcface_loss(T(x).to(dtype), T(w).to(dtype), T(y))
    assert out.dtype == dtype
    assert float(out) == pytest.approx(ref, rel=5e-2)


# JAX compiles take seconds: its cases cover one additive and one multiplicative margin
@pytest.mark.parametrize("backend,kind", [(b, k) for b in BACKENDS for k in sorted(PML)
                                          if b != "jax" or k in ("arcface", "lsoftmax")])
def test_margin_softmax_backends(backend, kind):
    x, w, y = _face_data(seed=4, n=4, d=3, c=3)
    margin = {"lsoftmax": 3, "sphereface": 2, "cosface": 0.3, "arcface": 0.4}[kind]
    fn = PML[kind][0]
    ref_v, ref_g = crossent.value_and_grad(fn)(x, w, y, margin=margin, scale=2.0)
    b = lambda a: to_backend(backend, a)  # noqa: E731
    vag = jit_on(backend, lambda *a: crossent.value_and_grad(fn)(*a, margin=margin, scale=2.0))
    v, g = vag(b(x), b(w), b(y))
    np.testing.assert_allclose(to_numpy(v), ref_v, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(g), ref_g, rtol=1e-10, atol=1e-14)
    if backend == "jax":  # the closed form against jax.grad through the same definition
        gj = jax.jit(jax.grad(lambda *a: fn(*a, margin=margin, scale=2.0)))(b(x), b(w), b(y))
        np.testing.assert_allclose(np.asarray(gj), ref_g, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hinge_family_backends(backend):
    rng = np.random.default_rng(9)
    s = rng.normal(size=(4, 3))
    y = rng.integers(0, 3, size=4)
    t = rng.choice([-1, 1], size=(4, 3))
    b = lambda a: to_backend(backend, a)  # noqa: E731
    for fn, tgt in ((H.hinge_loss, t), (H.multi_margin_loss, y), (H.multiclass_hinge_loss, y),
                    (H.categorical_hinge_loss, y)):
        ref_v, ref_g = crossent.value_and_grad(fn)(s, tgt)
        v, g = jit_on(backend, crossent.value_and_grad(fn))(b(s), b(tgt))
        np.testing.assert_allclose(to_numpy(v), ref_v, rtol=1e-13)
        np.testing.assert_allclose(to_numpy(g), ref_g, rtol=1e-13)


def test_inputs_are_not_mutated():
    x, w, y = _face_data(seed=1)
    check_inputs_not_mutated([(M.arcface_loss, (x, w, y), {}),
                              (M.large_margin_softmax_loss, (x, w, y), {})])


# --- bad input messages ---------------------------------------------------------------------


def test_margin_softmax_errors():
    x, w, y = _face_data(seed=0, n=4, d=3, c=2)
    with pytest.raises(ValueError, match=r"weight must have shape \(num_classes, embedding_dim=3"):
        M.arcface_loss(x, w[:, :2], y)
    with pytest.raises(ValueError, match=r"embeddings must have shape \(N, embedding_dim\)"):
        M.cosface_loss(x[0], w, y)
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(4,\)"):
        M.cosface_loss(x, w, y[:2])
    with pytest.raises(TypeError, match="labels must be an integer array"):
        M.cosface_loss(x, w, y.astype(float))
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 2\)"):
        M.cosface_loss(x, w, np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="margin must be a positive integer"):
        M.sphereface_loss(x, w, y, margin=1.5)
    with pytest.raises(ValueError, match=r"margin must be an angle in radians in \[0, pi\)"):
        M.arcface_loss(x, w, y, margin=28.6)
    with pytest.raises(ValueError, match="margin must be a non-negative finite number"):
        M.cosface_loss(x, w, y, margin=-0.1)
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        M.cosface_loss(x, w, y, scale=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        M.cosface_loss(x, w, y, reduction="avg")
    with pytest.raises(TypeError, match="embeddings must be a floating-point array"):
        M.cosface_loss(x.astype(int), w, y)


# --- the closed form is the backward: gradcheck, double backward, JAX, exact pullbacks -------


def _closed_form_cases():
    """Every loss with each of its closed-form (``wrt``) arguments, on small float64 inputs
    away from the kinks (finite differences straddle none)."""
    rng = np.random.default_rng(0)
    x, w, y = rng.normal(size=(3, 3)), rng.normal(size=(3, 3)), rng.integers(0, 3, size=3)
    s, t = rng.normal(size=(3, 4)), rng.choice([-1, 1], size=(3, 4))
    lab = rng.integers(0, 4, size=3)
    soft = 0.9 * np.eye(4)[lab] + 0.025
    return [
        ("hinge", H.hinge_loss, (s, t), (0,), {}),
        ("squared_hinge", H.hinge_loss, (s, t), (0,), {"squared": True}),
        ("multi_margin_p2_weighted", H.multi_margin_loss, (s, lab), (0,),
         {"p": 2, "weight": np.array([1.0, 2.0, 0.5, 1.0])}),
        ("multi_margin", H.multi_margin_loss, (s, lab), (0,), {}),
        ("multiclass_hinge", H.multiclass_hinge_loss, (s, lab), (0,), {}),
        ("categorical_hinge", H.categorical_hinge_loss, (s, soft), (0, 1), {}),
        ("lsoftmax", M.large_margin_softmax_loss, (x, w, y), (0, 1),
         {"margin": 3, "scale": 0.7}),
        ("sphereface", M.sphereface_loss, (x, w, y), (0, 1), {"margin": 2, "scale": 1.5}),
        ("cosface", M.cosface_loss, (x, w, y), (0, 1), {"margin": 0.3, "scale": 4.0}),
        ("arcface", M.arcface_loss, (x, w, y), (0, 1), {"margin": 0.4, "scale": 4.0}),
        ("arcface_easy", M.arcface_loss, (x, w, y), (0, 1),
         {"margin": 0.4, "scale": 4.0, "easy_margin": True}),
    ]


test_torch_backward_is_the_closed_form, test_jax_derivatives_of_the_closed_form = (
    closed_form_tests(_closed_form_cases()))


def _torch_margin_reference(kind, x, w, y, margin, scale, easy_margin=False):
    """The margin losses written plainly in torch ops (angles by acos), for autograd."""
    x_norm, w_norm = x.norm(dim=1, keepdim=True), w.norm(dim=1)
    cos = (x / x_norm) @ (w / w_norm[:, None]).T
    c_y = cos[torch.arange(len(y)), y]
    theta = torch.acos(c_y)
    if kind in ("lsoftmax", "sphereface"):
        k = torch.floor(theta * margin / math.pi)
        f_y = (1 - 2 * (k % 2)) * torch.cos(margin * theta) - 2 * k
    elif kind == "cosface":
        f_y = c_y - margin
    elif easy_margin:
        f_y = torch.where(c_y > 0, torch.cos(theta + margin), c_y)
    else:
        f_y = torch.where(theta + margin < math.pi, torch.cos(theta + margin),
                          c_y - margin * math.sin(margin))
    target = F.one_hot(y, w.shape[0]).bool()
    f = torch.where(target, f_y[:, None], cos)
    r = {"lsoftmax": x_norm * w_norm, "sphereface": x_norm}.get(kind, 1.0)
    return F.cross_entropy(scale * r * f, y, reduction="none")


@pytest.mark.parametrize("kind,margin,scale", CASES)
def test_margin_softmax_pullback_is_the_vjp(kind, margin, scale):
    """reduction="none": W is shared by the examples, so a cotangent weights each example's
    contribution to its gradient; the pullback must be the exact VJP, on every backend."""
    x, w, y = _face_data(seed=13, n=6, d=4, c=5)
    cot = np.random.default_rng(14).normal(size=6)
    fn = PML[kind][0]
    kw = dict(margin=margin, scale=scale, reduction="none")
    xt, wt = T(x).requires_grad_(), T(w).requires_grad_()
    ref = torch.autograd.grad(_torch_margin_reference(kind, xt, wt, T(y), margin, scale),
                              (xt, wt), T(cot))
    got = torch.autograd.grad(fn(xt, wt, T(y), **kw), (xt, wt), T(cot))  # the closed form
    value, pullback = fn.with_pullback(("embeddings", "weight"), x, w, y, **kw)
    np_grads = pullback(cot)
    _, vjp = jax.vjp(lambda a, b: fn(a, b, jnp.asarray(y), **kw), jnp.asarray(x),
                     jnp.asarray(w))
    jax_grads = vjp(jnp.asarray(cot))
    for i, name in enumerate(("embeddings", "weight")):
        r = ref[i].numpy()
        np.testing.assert_allclose(got[i].numpy(), r, rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(np_grads[name], r, rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(np.asarray(jax_grads[i]), r, rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    # a cotangent of ones is the gradient of the sum
    ones = pullback(None)
    np.testing.assert_allclose(ones["weight"], pullback(np.ones(6))["weight"], rtol=1e-14)


@pytest.mark.parametrize("kind,margin,scale", CASES[1::3])
def test_margin_softmax_gradients_below_the_norm_floor(kind, margin, scale):
    """Norms at, below and around the 1e-12 floor (where u = x / eps): the closed form is the
    derivative of the value code there too, as torch.func's autodiff of it says."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 3))
    w[2] *= 1e-13  # a class weight below the floor
    y = np.array([0, 1, 2, 3, 0])
    unit = rng.normal(size=(5, 3))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    x = unit * np.array([0.3e-12, 2e-12, 0.0, 1.0, 0.9e-12])[:, None]
    fn = PML[kind][0]
    kw = dict(margin=margin, scale=scale, reduction="sum")
    gx, gw = crossent.grad(fn, argnums=(0, 1))(x, w, y, **kw)
    ax, aw = torch.func.grad(lambda a, b: fn(a, b, T(y), **kw), argnums=(0, 1))(T(x), T(w))
    # atol: a saturated row's ~1e-10 gradient is p - onehot with p ~ 1, cancelled in rounding
    np.testing.assert_allclose(gx, ax.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gw, aw.numpy(), rtol=1e-12, atol=1e-13)
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gw))


# --- SM-Softmax (soft-margin softmax) vs torch's cross-entropy on the shifted logits ------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_softmax_is_cross_entropy_of_the_shifted_logits(backend, reduction):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 5)) * 3.0
    y = np.array([0, 4, 2, -100, 1, 4])
    m = 0.7
    zt = T(z).requires_grad_()
    shifted = zt - m * F.one_hot(T(y).clamp(min=0), 5).double() * T(y != -100)[:, None]
    ref = F.cross_entropy(shifted, T(y), reduction=reduction, ignore_index=-100)
    cot = np.linspace(-1.0, 1.0, 6) if reduction == "none" else np.array(1.0)
    (gref,) = torch.autograd.grad(ref, zt, T(cot))
    fn = M.soft_margin_softmax_loss
    value, pullback = fn.with_pullback(need=("logits",), logits=to_backend(backend, z),
                                       labels=to_backend(backend, y), margin=m,
                                       reduction=reduction)
    np.testing.assert_allclose(to_numpy(value), ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    g = pullback(to_backend(backend, cot))["logits"]
    np.testing.assert_allclose(to_numpy(g), gref.numpy(), rtol=1e-10, atol=1e-14)
    # the public gradient is the same closed form; the class axis may come first
    if backend == "numpy" and reduction == "mean":
        np.testing.assert_allclose(crossent.grad(fn)(z, y, margin=m), gref.numpy(),
                                   rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(fn(z.T, y, margin=m, axis=0), ref.item(), rtol=1e-12)


def test_soft_margin_softmax_errors():
    z, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="margin"):
        M.soft_margin_softmax_loss(z, y, margin=-0.1)
    with pytest.raises(TypeError, match="labels"):
        M.soft_margin_softmax_loss(z, y.astype(float))
    with pytest.raises(ValueError, match="reduction"):
        M.soft_margin_softmax_loss(z, y, reduction="avg")
