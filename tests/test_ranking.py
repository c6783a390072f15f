"""Ranking losses: conformance with PyTorch and Optax, float64 loop references, closed-form
gradients against autodiff and finite differences, edge cases, backends, error messages."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from pytorch_metric_learning import losses as pml

import crossent
from crossent import ranking as R
from tests._backends import (
    BACKENDS,
    check_inputs_not_mutated,
    check_low_precision,
    check_value_and_grad_on_backend,
    closed_form_tests,
    finite_difference,
)

T = torch.from_numpy
REDUCTIONS = ("mean", "sum", "none")


def _torch_value_and_grad(fn, first, *rest, **kw):
    x = T(first).requires_grad_()
    out = fn(x, *[T(r) for r in rest], **kw)
    out.sum().backward()
    return out.detach().numpy(), x.grad.numpy()


def _torch_grads(fn, args, nums, **kw):
    """Torch autograd's gradients of ``sum(fn(*args))`` w.r.t. the arguments ``nums``."""
    ts = [T(a) for a in args]
    for i in nums:
        ts[i].requires_grad_()
    fn(*ts, **kw).sum().backward()
    return tuple(ts[i].grad.numpy() for i in nums)


def _both_inputs_against_torch(ours, theirs, x1, x2, y, **kw):
    """For a loss of two inputs and a target: crossent's value and closed-form gradients w.r.t.
    ``x1`` (the default argnum) and ``x2`` (argnums=1), and torch autograd's."""
    got = (*crossent.value_and_grad(ours)(x1, x2, y, **kw),
           crossent.grad(ours, argnums=1)(x1, x2, y, **kw))
    t1, t2 = T(x1).requires_grad_(), T(x2).requires_grad_()
    out = theirs(t1, t2, T(y), **kw)
    out.sum().backward()
    return got, (out.detach().numpy(), t1.grad.numpy(), t2.grad.numpy())


# --- margin ranking -------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.0, 0.5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_ranking_matches_torch(margin, reduction):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 12))
    x2[:3] = x1[:3]  # ties: at margin 0 the loss sits on its kink, PyTorch passes the gradient
    y = rng.choice([-1.0, 1.0], size=12)
    (value, g, g2), (ref, g_ref, g2_ref) = _both_inputs_against_torch(
        R.margin_ranking_loss, F.margin_ranking_loss, x1, x2, y, margin=margin,
        reduction=reduction)
    np.testing.assert_allclose(value, ref, rtol=1e-14)
    np.testing.assert_allclose(g, g_ref, rtol=1e-14)
    # the gradient w.r.t. input2 is its negative
    np.testing.assert_allclose(-g, g2_ref, rtol=1e-14)
    np.testing.assert_allclose(g2, g2_ref, rtol=1e-14)


# --- contrastive ----------------------------------------------------------------------------


def _loop_contrastive(x1, x2, y, margin):
    out = []
    for a, b, s in zip(x1, x2, y, strict=True):
        d = math.sqrt(sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True)))
        out.append(0.5 * s * d * d + 0.5 * (1 - s) * max(0.0, margin - d) ** 2)
    return np.array(out)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_contrastive_matches_loop_and_autograd(reduction):
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(scale=0.6, size=(2, 10, 4))
    y = rng.integers(0, 2, size=10)
    value, g = crossent.value_and_grad(R.contrastive_loss)(x1, x2, y, margin=1.5,
                                                           reduction=reduction)
    loop = _loop_contrastive(x1, x2, y, 1.5)
    np.testing.assert_allclose(value, {"mean": loop.mean(), "sum": loop.sum(),
                                       "none": loop}[reduction], rtol=1e-13)
    # torch reference: Hadsell's formula on torch's Euclidean pairwise distance
    a, b = T(x1).requires_grad_(), T(x2).requires_grad_()
    d = F.pairwise_distance(a, b, eps=0.0)
    yt = T(y).double()
    per = 0.5 * yt * d**2 + 0.5 * (1 - yt) * torch.clamp(1.5 - d, min=0) ** 2
    {"mean": per.mean(), "sum": per.sum(), "none": per.sum()}[reduction].backward()
    np.testing.assert_allclose(g, a.grad.numpy(), rtol=1e-12, atol=1e-15)
    g2 = crossent.grad(R.contrastive_loss, argnums=1)(x1, x2, y, margin=1.5,
                                                      reduction=reduction)
    np.testing.assert_allclose(g2, b.grad.numpy(), rtol=1e-12, atol=1e-15)
    fd = finite_difference(lambda e: R.contrastive_loss(e, x2, y, margin=1.5,
                                                        reduction=reduction), x1)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_contrastive_from_distances_agrees_and_zero_distance_is_finite():
    rng = np.random.default_rng(2)
    x1, x2 = rng.normal(size=(2, 6, 3))
    x2[0] = x1[0]  # D = 0 for a dissimilar and ...
    x2[1] = x1[1]  # ... a similar pair
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.3, 0.0])  # soft similarity is allowed
    d = np.linalg.norm(x1 - x2, axis=1)
    v_pairs = R.contrastive_loss(x1, x2, y, reduction="none")
    v_dist, g_dist = crossent.value_and_grad(R.contrastive_loss_from_distances)(
        d, y, reduction="none")
    np.testing.assert_allclose(v_pairs, v_dist, rtol=1e-14)
    _, g_pairs = crossent.value_and_grad(R.contrastive_loss)(x1, x2, y, reduction="none")
    # chain rule: dL/dx1 = dL/dD (x1 - x2) / D away from D = 0
    np.testing.assert_allclose(g_pairs[2:], (g_dist / np.where(d > 0, d, 1))[2:, None]
                               * (x1 - x2)[2:], rtol=1e-12)
    assert np.all(np.isfinite(g_pairs)) and np.all(g_pairs[:2] == 0)
    xt = T(x1).requires_grad_()  # autodiff through the definition: no NaN at D = 0
    R.contrastive_loss(xt, T(x2), T(y)).backward()
    assert torch.isfinite(xt.grad).all()
    fd = finite_difference(lambda e: float(R.contrastive_loss_from_distances(e, y)), d)
    np.testing.assert_allclose(crossent.grad(R.contrastive_loss_from_distances)(d, y), fd,
                               rtol=1e-6, atol=1e-9)


# --- triplet --------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_triplet_matches_torch(p, swap, reduction):
    rng = np.random.default_rng(int(p) + 3 * swap)
    a, pos, neg = rng.normal(size=(3, 8, 5))
    neg[:2] = pos[:2] + 0.05 * rng.normal(size=(2, 5))  # swap chooses d(p, n) here
    kw = dict(margin=0.8, p=p, eps=1e-3, swap=swap, reduction=reduction)
    ref, g_ref = _torch_value_and_grad(F.triplet_margin_loss, a, pos, neg, **kw)
    value, g = crossent.value_and_grad(R.triplet_margin_loss)(a, pos, neg, **kw)
    np.testing.assert_allclose(value, ref, rtol=1e-13)
    np.testing.assert_allclose(g, g_ref, rtol=1e-11, atol=1e-15)
    fd = finite_difference(lambda e: R.triplet_margin_loss(e, pos, neg, **kw), a)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)
    # the positive and the negative have closed forms too (argnums 1 and 2)
    refs = _torch_grads(F.triplet_margin_loss, (a, pos, neg), (1, 2), **kw)
    gp, gn = crossent.grad(R.triplet_margin_loss, argnums=(1, 2))(a, pos, neg, **kw)
    np.testing.assert_allclose(gp, refs[0], rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(gn, refs[1], rtol=1e-11, atol=1e-15)


def test_triplet_matches_optax_at_zero_eps_and_unbatched():
    rng = np.random.default_rng(4)
    a, pos, neg = rng.normal(size=(3, 6, 4))
    ref = optax.losses.triplet_margin_loss(jnp.asarray(a), jnp.asarray(pos), jnp.asarray(neg),
                                           eps=0.0)
    np.testing.assert_allclose(R.triplet_margin_loss(a, pos, neg, eps=0.0, reduction="none"),
                               np.asarray(ref), rtol=1e-13)
    one = F.triplet_margin_loss(T(a[0]), T(pos[0]), T(neg[0]))
    assert float(R.triplet_margin_loss(a[0], pos[0], neg[0])) == pytest.approx(float(one),
                                                                               rel=1e-14)


# --- NT-Xent --------------------------------------------------------------------------------


def _loop_ntxent(x, labels, tau):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T / tau
    out = np.zeros_like(s)
    for i in range(len(x)):
        negs = [k for k in range(len(x)) if labels[k] != labels[i]]
        for j in range(len(x)):
            if j != i and labels[j] == labels[i]:
                den = math.exp(s[i, j]) + sum(math.exp(s[i, k]) for k in negs)
                out[i, j] = -math.log(math.exp(s[i, j]) / den)
    return out


@pytest.mark.parametrize("tau", [0.07, 0.5, 2.0])
def test_ntxent_matches_optax(tau):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 5))
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3])  # a triple, and a singleton without positives
    ref, g_ref = jax.jit(jax.value_and_grad(
        lambda e: optax.losses.ntxent(e, jnp.asarray(labels), tau)))(jnp.asarray(x))
    value, g = crossent.value_and_grad(R.ntxent_loss)(x, labels, temperature=tau)
    assert float(value) == pytest.approx(float(ref), rel=1e-12)
    np.testing.assert_allclose(g, np.asarray(g_ref), rtol=1e-10, atol=1e-13)
    # pytorch-metric-learning's NTXentLoss is the same loss
    xt = T(x).requires_grad_()
    p = pml.NTXentLoss(temperature=tau)(xt, T(labels))
    p.backward()
    assert p.item() == pytest.approx(float(value), rel=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ntxent_reductions_loop_and_fd(reduction):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 3))
    labels = np.array([1, 0, 1, 0, 2, 2])
    loop = _loop_ntxent(x, labels, 0.3)
    value, g = crossent.value_and_grad(R.ntxent_loss)(x, labels, temperature=0.3,
                                                      reduction=reduction)
    expect = {"none": loop, "sum": loop.sum(), "mean": loop.sum() / 6}[reduction]
    np.testing.assert_allclose(value, expect, rtol=1e-12, atol=1e-15)
    fd = finite_difference(lambda e: R.ntxent_loss(e, labels, temperature=0.3,
                                                   reduction=reduction), x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    xt = T(x).requires_grad_()
    R.ntxent_loss(xt, T(labels), temperature=0.3, reduction=reduction).sum().backward()
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_ntxent_edge_cases():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # no positive pair: 0 with a zero gradient (Optax: 0/0 = NaN)
    v, g = crossent.value_and_grad(R.ntxent_loss)(x, np.array([0, 1, 2]))
    assert v == 0.0 and np.all(g == 0)
    assert np.isnan(float(optax.losses.ntxent(jnp.asarray(x), jnp.asarray([0, 1, 2]))))
    # one group only: no negatives, every positive has probability 1
    v, g = crossent.value_and_grad(R.ntxent_loss)(x, np.array([4, 4, 4]))
    assert v == 0.0 and np.all(g == 0)
    xt = T(x).requires_grad_()
    R.ntxent_loss(xt, torch.tensor([4, 4, 4])).backward()
    assert torch.isfinite(xt.grad).all()
    # a zero embedding and a tiny temperature stay finite
    z = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    v, g = crossent.value_and_grad(R.ntxent_loss)(z, np.array([0, 0, 1, 1]), temperature=1e-3)
    assert np.isfinite(v) and np.all(np.isfinite(g))


@given(seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_ntxent_is_scale_invariant(seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 3))
    labels = np.array([0, 0, 1, 1, 2, 2])
    base, g = crossent.value_and_grad(R.ntxent_loss)(x, labels, temperature=0.5)
    assert float(R.ntxent_loss(scale * x, labels, temperature=0.5)) == pytest.approx(
        float(base), rel=1e-9)
    np.testing.assert_allclose(np.sum(g * x, axis=1), 0.0, atol=1e-10)  # no radial part


# --- cosine embedding -----------------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.0, 0.3, -0.5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cosine_embedding_matches_torch(margin, reduction):
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=(2, 9, 4))
    x1[0] = 0.0  # a zero vector: PyTorch's 1e-12 keeps it finite, and so does crossent
    y = rng.choice([-1, 1], size=9)
    (value, g, g2), (ref, g_ref, g2_ref) = _both_inputs_against_torch(
        R.cosine_embedding_loss, F.cosine_embedding_loss, x1, x2, y, margin=margin,
        reduction=reduction)
    np.testing.assert_allclose(value, ref, rtol=1e-13)
    np.testing.assert_allclose(g[1:], g_ref[1:], rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(g[0], g_ref[0], rtol=1e-8)  # ~1e6: rounding order shows
    np.testing.assert_allclose(g2, g2_ref, rtol=1e-11, atol=1e-15)
    one = F.cosine_embedding_loss(T(x1[1]), T(x2[1]), T(y[1:2]).squeeze(0), margin=margin)
    assert float(R.cosine_embedding_loss(x1[1], x2[1], y[1], margin=margin)) == pytest.approx(
        float(one), rel=1e-13)


# --- backends, dtypes, errors ---------------------------------------------------------------


def _ranking_cases():
    rng = np.random.default_rng(8)
    a, b, c = rng.normal(size=(3, 5, 3))
    s1, s2 = rng.normal(size=(2, 5))
    pm = np.array([1, -1, 1, 1, -1])
    return [
        (R.margin_ranking_loss, (s1, s2, pm), {"margin": 0.2}),
        (R.contrastive_loss, (a, b, np.array([1, 0, 1, 0, 0])), {}),
        (R.contrastive_loss_from_distances, (np.abs(s1), np.array([1.0, 0, 1, 0, 0])), {}),
        (R.triplet_margin_loss, (a, b, c), {"swap": True}),
        (R.ntxent_loss, (a, np.array([0, 0, 1, 1, 0])), {"temperature": 0.5}),
        (R.cosine_embedding_loss, (a, b, pm), {"margin": 0.1}),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends(backend):
    check_value_and_grad_on_backend(backend, _ranking_cases())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_dtypes(dtype):
    check_low_precision(_ranking_cases(), dtype)


def test_inputs_are_not_mutated():
    check_inputs_not_mutated(_ranking_cases())


def test_errors():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\)"):
        R.margin_ranking_loss(x[:, 0], x[:, 1], np.array([1, 0]))
    with pytest.raises(ValueError, match=r"input2 must have the shape of input1"):
        R.margin_ranking_loss(x[:, 0], x[:2, 1], np.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"labels must hold probabilities in \[0, 1\]"):
        R.contrastive_loss(x, x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        R.contrastive_loss(x, x, np.array([0, 1]))
    with pytest.raises(ValueError, match="margin must be a non-negative finite number"):
        R.contrastive_loss(x, x, np.array([0, 1, 1]), margin=-1)
    with pytest.raises(ValueError, match="p must be a finite norm degree >= 1"):
        R.triplet_margin_loss(x, x, x, p=0.5)
    with pytest.raises(ValueError, match="negative must have the shape of anchor"):
        R.triplet_margin_loss(x, x, x[:, :1])
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        R.ntxent_loss(x, np.array([0, 0, 1]), temperature=0.0)
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(3,\)"):
        R.ntxent_loss(x, np.array([0, 0]))
    with pytest.raises(ValueError, match=r"margin must be in \[-1, 1\]"):
        R.cosine_embedding_loss(x, x, np.array([1, 1, 1]), margin=2.0)
    with pytest.raises(TypeError, match="x1 must be a floating-point array"):
        R.cosine_embedding_loss(x.astype(int), x, np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        R.triplet_margin_loss(x, x, x, reduction="batchmean")


# --- the closed form is the backward: gradcheck, double backward, JAX, exact pullbacks -------


def _closed_form_cases():
    """Every loss with each of its closed-form (``wrt``) arguments, on small float64 inputs
    away from the kinks (finite differences straddle none)."""
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 3, 4))
    s1, s2 = rng.normal(size=(2, 5))
    pm = np.array([1.0, -1.0, 1.0])
    return [
        ("margin_ranking", R.margin_ranking_loss, (s1, s2, np.array([1.0, -1, 1, 1, -1])),
         (0, 1), {"margin": 0.2}),
        ("contrastive", R.contrastive_loss, (a, b, np.array([1.0, 0.0, 0.4])), (0, 1),
         {"margin": 3.0}),
        ("contrastive_from_distances", R.contrastive_loss_from_distances,
         (np.abs(s1) + 0.1, np.array([1.0, 0, 1, 0, 0.3])), (0,), {"margin": 2.0}),
        ("triplet", R.triplet_margin_loss, (a, b, c), (0, 1, 2), {"margin": 2.0}),
        ("triplet_swap_p3", R.triplet_margin_loss, (a, b, c), (0, 1, 2),
         {"margin": 2.0, "swap": True, "p": 3.0}),
        ("triplet_p1", R.triplet_margin_loss, (a, b, c), (0, 1, 2), {"margin": 2.0, "p": 1.0}),
        ("ntxent", R.ntxent_loss, (rng.normal(size=(5, 3)), np.array([0, 0, 1, 1, 2])), (0,),
         {"temperature": 0.5}),
        ("cosine_embedding", R.cosine_embedding_loss, (a, b, pm), (0, 1), {"margin": -0.9}),
    ]


test_torch_backward_is_the_closed_form, test_jax_derivatives_of_the_closed_form = (
    closed_form_tests(_closed_form_cases()))


def _torch_ntxent_reference(x, labels, tau):
    """The (N, N) NT-Xent pair losses written plainly in torch ops, for autograd."""
    u = F.normalize(x, dim=1)
    s = u @ u.T / tau
    n = len(labels)
    rows = []
    for i in range(n):
        negs = [k for k in range(n) if labels[k] != labels[i]]
        row = []
        for j in range(n):
            if j != i and labels[j] == labels[i] and negs:
                logits = torch.cat([s[i, j:j + 1], s[i, negs]])
                row.append(torch.logsumexp(logits, 0) - s[i, j])
            else:
                row.append(torch.zeros((), dtype=x.dtype))
        rows.append(torch.stack(row))
    return torch.stack(rows)


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_ntxent_pullback_is_the_vjp(tau):
    """reduction="none": every embedding enters many pair losses (as anchor, positive and
    negative), so the pullback of a random (N, N) cotangent must be the exact VJP."""
    rng = np.random.default_rng(15)
    x = rng.normal(size=(7, 3))
    labels = np.array([0, 0, 1, 1, 1, 2, 3])  # a triple and a singleton
    cot = rng.normal(size=(7, 7))
    xt = T(x).requires_grad_()
    ref_value = _torch_ntxent_reference(xt, labels, tau)
    (ref,) = torch.autograd.grad(ref_value, xt, T(cot))
    kw = dict(temperature=tau, reduction="none")
    out = R.ntxent_loss(xt, T(labels), **kw)
    np.testing.assert_allclose(out.detach().numpy(), ref_value.detach().numpy(), rtol=1e-12,
                               atol=1e-15)
    (got,) = torch.autograd.grad(out, xt, T(cot))  # the closed form
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-10, atol=1e-13)
    _, pullback = R.ntxent_loss.with_pullback(("embeddings",), x, labels, **kw)
    np.testing.assert_allclose(pullback(cot)["embeddings"], ref.numpy(), rtol=1e-10,
                               atol=1e-13)
    _, vjp = jax.vjp(lambda e: R.ntxent_loss(e, jnp.asarray(labels), **kw), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(cot))[0]), ref.numpy(), rtol=1e-10,
                               atol=1e-13)
    # a cotangent of ones is the gradient of the sum
    np.testing.assert_allclose(pullback(None)["embeddings"],
                               crossent.grad(R.ntxent_loss)(x, labels, **kw), rtol=1e-14)
    np.testing.assert_allclose(pullback(np.ones((7, 7)))["embeddings"],
                               pullback(None)["embeddings"], rtol=1e-13, atol=1e-16)
