"""entropy, cross_entropy, kl_divergence, js_divergence against independent references.

References: SciPy (``entr``, ``rel_entr``, ``xlogy``, ``jensenshannon``), PyTorch
(``F.kl_div``, ``torch.special.entr``, autograd), Optax (``kl_divergence``,
``softmax_cross_entropy``, ``safe_softmax_cross_entropy``), ``jax.grad``, float64 loops
written here, central finite differences of those loops, and the coin example (10 tosses,
6 heads).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
import optax
import pytest
import scipy.special as sps
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

import crossent
from crossent import gradients
from crossent.information import (
    cross_entropy,
    entropy,
    js_divergence,
    kl_divergence,
)
from tests._backends import BACKENDS, check_grads_fwd_rev, finite_difference, to_backend, to_numpy

REDUCTIONS = ("none", "sum", "mean")


def dists(shape, seed=0, zeros=False, alpha=1.0):
    """Random distributions along the last axis; with ``zeros``, some exact zeros."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(alpha, size=shape)
    if zeros:
        x = np.where(rng.random(shape) < 0.3, 0.0, x)
        x[..., 0] += 1.0  # no all-zero row
    return x / x.sum(-1, keepdims=True)


def reduce_ref(per_dist, reduction):
    if reduction == "none":
        return per_dist
    return per_dist.sum() if reduction == "sum" else per_dist.mean()


# float64 loop references (the definitions, one class at a time) -----------------------------


def entropy_loop(p):
    out = np.zeros(p.shape[:-1])
    for idx in np.ndindex(*p.shape[:-1]):
        out[idx] = -sum(pi * math.log(pi) for pi in p[idx] if pi > 0)
    return out


def ce_loop(p, q):
    out = np.zeros(p.shape[:-1])
    for idx in np.ndindex(*p.shape[:-1]):
        pairs = zip(p[idx], q[idx], strict=True)
        out[idx] = -sum(pi * math.log(qi) for pi, qi in pairs if pi > 0)
    return out


def kl_loop(p, q):
    out = np.zeros(p.shape[:-1])
    for idx in np.ndindex(*p.shape[:-1]):
        pairs = zip(p[idx], q[idx], strict=True)
        out[idx] = sum(pi * math.log(pi / qi) for pi, qi in pairs if pi > 0)
    return out


def js_loop(p, q):
    return 0.5 * kl_loop(p, (p + q) / 2) + 0.5 * kl_loop(q, (p + q) / 2)


SCIPY_REF = {
    "entropy": lambda p, q: sps.entr(p).sum(-1),
    "cross_entropy": lambda p, q: -sps.xlogy(p, q).sum(-1),
    "kl_divergence": lambda p, q: sps.rel_entr(p, q).sum(-1),
    "js_divergence": lambda p, q: jensenshannon(p, q, axis=-1) ** 2,
}
FUNCS = {
    "entropy": lambda p, q, **kw: entropy(p, **kw),
    "cross_entropy": cross_entropy,
    "kl_divergence": kl_divergence,
    "js_divergence": js_divergence,
}


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_values_match_scipy_on_every_backend(backend, name, reduction):
    p = dists((6, 5), seed=1, zeros=True)  # zeros in p: 0 log 0 = 0
    q = dists((6, 5), seed=2)
    got = FUNCS[name](to_backend(backend, p), to_backend(backend, q), reduction=reduction)
    want = reduce_ref(SCIPY_REF[name](p, q), reduction)
    assert np.shape(to_numpy(got)) == np.shape(want)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(FUNCS))
def test_values_match_float64_loops(name):
    p, q = dists((3, 4, 7), seed=3, zeros=True), dists((3, 4, 7), seed=4)
    loops = {"entropy": lambda p, q: entropy_loop(p), "cross_entropy": ce_loop,
             "kl_divergence": kl_loop, "js_divergence": js_loop}
    np.testing.assert_allclose(FUNCS[name](p, q, reduction="none"), loops[name](p, q),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(FUNCS))
def test_axis_one_is_pytorch_layout(name):
    p, q = dists((2, 3, 6), seed=5), dists((2, 3, 6), seed=6)
    pt, qt = np.moveaxis(p, -1, 1), np.moveaxis(q, -1, 1)  # (N, C, d)
    got = FUNCS[name](torch.from_numpy(pt), torch.from_numpy(qt), axis=1, reduction="none")
    np.testing.assert_allclose(to_numpy(got), SCIPY_REF[name](p, q), rtol=1e-12)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
def test_kl_matches_torch_kl_div_batchmean_and_documents_the_mean_difference():
    p, q = dists((8, 5), seed=7, zeros=True), dists((8, 5), seed=8)
    pt, qt = torch.from_numpy(p), torch.from_numpy(q)
    # torch's argument order: input = log q, target = p
    ref = F.kl_div(qt.log(), pt, reduction="batchmean")
    np.testing.assert_allclose(to_numpy(kl_divergence(pt, qt)), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(kl_divergence(pt, qt, reduction="sum")),
                               F.kl_div(qt.log(), pt, reduction="sum").item(), rtol=1e-12)
    # torch's "mean" divides by the number of elements N * C, ours per distribution N
    torch_mean = F.kl_div(qt.log(), pt, reduction="mean").item()
    np.testing.assert_allclose(to_numpy(kl_divergence(pt, qt)) / 5, torch_mean, rtol=1e-12)
    # (N, d, C): torch's "batchmean" divides by N only, ours by N * d distributions
    p3, q3 = dists((4, 3, 5), seed=9), dists((4, 3, 5), seed=10)
    bm = F.kl_div(torch.from_numpy(q3).log(), torch.from_numpy(p3), reduction="batchmean")
    np.testing.assert_allclose(to_numpy(kl_divergence(p3, q3)) * 3, bm.item(), rtol=1e-12)


def test_kl_matches_optax():
    p, q = dists((5, 6), seed=11, zeros=True), dists((5, 6), seed=12)
    ref = optax.losses.kl_divergence(jnp.log(jnp.asarray(q)), jnp.asarray(p))
    np.testing.assert_allclose(to_numpy(kl_divergence(p, q, reduction="none")), np.asarray(ref),
                               rtol=1e-12)


def test_cross_entropy_of_softmax_matches_optax_softmax_cross_entropy():
    rng = np.random.default_rng(13)
    logits = rng.normal(size=(5, 4)) * 3
    p = dists((5, 4), seed=14, zeros=True)
    q = sps.softmax(logits, axis=-1)
    ref = optax.losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(p))
    np.testing.assert_allclose(to_numpy(cross_entropy(p, q, reduction="none")), np.asarray(ref),
                               rtol=1e-12)
    # a masked class (logit -inf, q = 0) with label 0 contributes 0 (optax's "safe" variant)
    masked = logits.copy()
    masked[:, 1] = -np.inf
    p_masked = p.copy()
    p_masked[:, 0] += p_masked[:, 1]
    p_masked[:, 1] = 0.0
    q_masked = sps.softmax(masked, axis=-1)
    assert (q_masked[:, 1] == 0).all()
    safe = optax.losses.safe_softmax_cross_entropy(jnp.asarray(masked), jnp.asarray(p_masked))
    np.testing.assert_allclose(to_numpy(cross_entropy(p_masked, q_masked, reduction="none")),
                               np.asarray(safe), rtol=1e-12)


def test_zero_probabilities():
    # p = 0 contributes 0 even where q = 0; q = 0 < p gives +inf (scipy agrees)
    p = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])
    kl = kl_divergence(p, q, reduction="none")
    ce = cross_entropy(p, q, reduction="none")
    np.testing.assert_array_equal(kl, sps.rel_entr(p, q).sum(-1))
    np.testing.assert_array_equal(kl, [0.0, np.inf, 0.0])
    np.testing.assert_allclose(ce, [math.log(2), np.inf, 0.0])
    np.testing.assert_array_equal(entropy(p, reduction="none")[2], 0.0)
    js = js_divergence(p, q, reduction="none")
    assert np.isfinite(js).all()
    np.testing.assert_allclose(js, jensenshannon(p, q, axis=-1) ** 2, atol=1e-15)
    assert float(kl_divergence(p, q)) == np.inf


def test_empty_batch_mean_is_zero():
    p = np.zeros((0, 3))
    assert float(kl_divergence(p, p)) == 0.0
    _, g = crossent.value_and_grad(kl_divergence)(p, p)
    assert g.shape == (0, 3)
    assert crossent.grad(kl_divergence, argnums=1)(p, p).shape == (0, 3)


def test_single_distribution_gives_a_scalar():
    p, q = np.array([0.25, 0.75]), np.array([0.5, 0.5])
    for reduction in REDUCTIONS:
        out = kl_divergence(p, q, reduction=reduction)
        assert np.ndim(out) == 0
        np.testing.assert_allclose(out, sps.rel_entr(p, q).sum())


# --- identities and properties --------------------------------------------------------------


@st.composite
def dist_pair(draw):
    c = draw(st.integers(2, 6))
    unit = st.floats(0.0, 1.0, allow_nan=False)
    a = np.array(draw(st.lists(unit, min_size=c, max_size=c))) + np.eye(c)[0] * 1e-3
    b = np.array(draw(st.lists(st.floats(1e-3, 1.0), min_size=c, max_size=c)))
    return a / a.sum(), b / b.sum()


@settings(max_examples=30, deadline=None)
@given(dist_pair())
def test_properties(pq):
    p, q = pq
    kl, ce, h = kl_divergence(p, q), cross_entropy(p, q), entropy(p)
    assert kl >= -1e-15  # Gibbs' inequality
    np.testing.assert_allclose(kl, ce - h, atol=1e-12)  # D_KL = CE - H
    assert 0.0 <= h <= math.log(len(p)) + 1e-12
    js, js_swapped = js_divergence(p, q), js_divergence(q, p)
    np.testing.assert_allclose(js, js_swapped, atol=1e-15)  # symmetric
    assert -1e-15 <= js <= math.log(2) + 1e-12  # bounded
    assert float(kl_divergence(p, p)) == 0.0


def test_kl_is_not_symmetric():
    p, q = np.array([0.9, 0.1]), np.array([0.5, 0.5])
    assert abs(float(kl_divergence(p, q)) - float(kl_divergence(q, p))) > 1e-2


def test_js_bound_is_reached_on_disjoint_supports():
    p, q = np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 0.5, 0.5]])
    np.testing.assert_allclose(js_divergence(p, q), math.log(2), rtol=1e-15)


def test_coin_mle_is_the_cross_entropy_argmin():
    # the coin example (10 tosses, 6 heads): heads, heads, tails, heads, heads, tails, heads,
    # tails, heads, tails
    throws = [1, 1, 0, 1, 1, 0, 1, 0, 1, 0]
    heads = sum(throws) / len(throws)
    p = np.array([heads, 1 - heads])
    assert p.tolist() == [0.6, 0.4]
    theta = np.linspace(0.01, 0.99, 99)
    q = np.stack([theta, 1 - theta], axis=-1)
    ce = cross_entropy(np.broadcast_to(p, q.shape), q, reduction="none")
    assert theta[np.argmin(ce)] == pytest.approx(0.6)
    # the negative log-likelihood of the 10 throws is 10 * H(p, q_theta)
    nll = -(6 * np.log(theta) + 4 * np.log(1 - theta))
    np.testing.assert_allclose(10 * ce, nll, rtol=1e-12)
    # and at the optimum the cross-entropy equals the entropy: KL = 0
    np.testing.assert_allclose(cross_entropy(p, p), entropy(p), rtol=1e-15)


# --- gradients ------------------------------------------------------------------------------


def torch_ref(name, p, q, reduction):
    """Independent torch expressions of the four losses, per distribution, then reduced."""
    if name == "entropy":
        per = torch.special.entr(p).sum(-1)
    elif name == "cross_entropy":
        per = -torch.xlogy(p, q).sum(-1)
    elif name == "kl_divergence":
        per = (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)
    else:
        m = (p + q) / 2
        per = 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m) + torch.xlogy(q, q)
                     - torch.xlogy(q, m)).sum(-1)
    return {"none": per.sum(), "sum": per.sum(), "mean": per.mean()}[reduction]


def jax_ref(name, p, q, reduction):
    if name == "entropy":
        per = jss.entr(p).sum(-1)
    elif name == "cross_entropy":
        per = -jss.xlogy(p, q).sum(-1)
    elif name == "kl_divergence":
        per = jss.rel_entr(p, q).sum(-1)
    else:
        m = (p + q) / 2
        per = 0.5 * (jss.rel_entr(p, m) + jss.rel_entr(q, m)).sum(-1)
    return per.sum() if reduction in ("none", "sum") else per.mean()


LOOPS = {"entropy": lambda p, q: entropy_loop(p), "cross_entropy": ce_loop,
         "kl_divergence": kl_loop, "js_divergence": js_loop}
VAG = {"entropy": lambda p, q, **kw: crossent.value_and_grad(entropy)(p, **kw),
       "cross_entropy": crossent.value_and_grad(cross_entropy),
       "kl_divergence": crossent.value_and_grad(kl_divergence),
       "js_divergence": crossent.value_and_grad(js_divergence)}
# the closed forms w.r.t. the first argument p and (argnums=1) the second q
entropy_grad = crossent.grad(entropy)
cross_entropy_grad = crossent.grad(cross_entropy)
cross_entropy_grad_q = crossent.grad(cross_entropy, argnums=1)
kl_divergence_grad = crossent.grad(kl_divergence)
kl_divergence_grad_q = crossent.grad(kl_divergence, argnums=1)
js_divergence_grad = crossent.grad(js_divergence)
js_divergence_grad_q = crossent.grad(js_divergence, argnums=1)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_wrt_p_matches_torch_jax_and_finite_differences(name, reduction):
    p, q = dists((3, 4), seed=20), dists((3, 4), seed=21)
    value, g = VAG[name](p, q, reduction=reduction)
    np.testing.assert_allclose(value, FUNCS[name](p, q, reduction=reduction), rtol=1e-15)
    pt = torch.from_numpy(p).requires_grad_(True)
    torch_ref(name, pt, torch.from_numpy(q), reduction).backward()
    np.testing.assert_allclose(g, pt.grad.numpy(), rtol=1e-10, atol=1e-12)
    gj = jax.grad(lambda a: jax_ref(name, a, jnp.asarray(q), reduction))(jnp.asarray(p))
    np.testing.assert_allclose(g, np.asarray(gj), rtol=1e-10, atol=1e-12)
    # ambient-space derivative of the float64 loop (p varied off the simplex)
    fd = finite_difference(lambda a: reduce_ref(LOOPS[name](a, q), reduction).sum(), p)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("fn", [cross_entropy_grad_q, kl_divergence_grad_q])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_wrt_q_matches_torch_kl_div_jax_and_finite_differences(fn, reduction):
    p, q = dists((3, 5), seed=22, zeros=True), dists((3, 5), seed=23)
    g = fn(p, q, reduction=reduction)
    qt = torch.from_numpy(q).requires_grad_(True)
    torch_red = {"none": "sum", "sum": "sum", "mean": "batchmean"}[reduction]
    F.kl_div(qt.log(), torch.from_numpy(p), reduction=torch_red).backward()
    np.testing.assert_allclose(g, qt.grad.numpy(), rtol=1e-12)
    red = jnp.sum if reduction != "mean" else jnp.mean
    gj = jax.grad(lambda b: red(optax.losses.kl_divergence(jnp.log(b), jnp.asarray(p))))(
        jnp.asarray(q))
    np.testing.assert_allclose(g, np.asarray(gj), rtol=1e-12)
    fd = finite_difference(lambda b: reduce_ref(ce_loop(p, b), reduction).sum(), q)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    assert (g[p == 0] == 0).all()


def test_grad_conveniences_and_registry():
    p, q = dists((2, 3), seed=24), dists((2, 3), seed=25)
    pairs = [(entropy, lambda: entropy_grad(p), (p,), ("p",)),
             (cross_entropy, lambda: cross_entropy_grad(p, q), (p, q), ("p", "q")),
             (kl_divergence, lambda: kl_divergence_grad(p, q), (p, q), ("p", "q")),
             (js_divergence, lambda: js_divergence_grad(p, q), (p, q), ("p", "q"))]
    for loss, grad_fn, args, wrt in pairs:
        # registered as one definition, with a closed form w.r.t. p and (but for H) q
        assert gradients.has_closed_form(loss)
        assert gradients.closed_form_args(loss) == wrt
        value, g = gradients.value_and_grad(loss)(*args)
        np.testing.assert_array_equal(value, loss(*args))
        np.testing.assert_array_equal(g, grad_fn())
        np.testing.assert_array_equal(gradients.grad(loss)(*args), grad_fn())
    with pytest.raises(ValueError, match="argnums=1: entropy takes the arrays"):
        crossent.grad(entropy, argnums=1)
    # both gradients in one pass equal the two separate ones
    _, (gp, gq) = crossent.value_and_grad(kl_divergence, argnums=(0, 1))(p, q)
    np.testing.assert_array_equal(gp, kl_divergence_grad(p, q))
    np.testing.assert_array_equal(gq, kl_divergence_grad_q(p, q))
    # -log q, w.r.t. the first argument (the library convention), and -p/q w.r.t. q
    np.testing.assert_allclose(cross_entropy_grad(p, q, reduction="sum"), -np.log(q))
    np.testing.assert_allclose(kl_divergence_grad_q(p, q, reduction="sum"), -p / q)
    # JS is symmetric: the gradient w.r.t. q is the gradient w.r.t. p with the roles swapped
    qt = torch.from_numpy(q).requires_grad_(True)
    torch_ref("js_divergence", torch.from_numpy(p), qt, "mean").backward()
    np.testing.assert_allclose(js_divergence_grad(q, p), qt.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(js_divergence_grad_q(p, q), qt.grad.numpy(), rtol=1e-10)
    np.testing.assert_array_equal(js_divergence_grad_q(p, q), js_divergence_grad(q, p))


def test_boundary_gradients_take_their_one_sided_limits():
    p = np.array([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    q = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    # entropy: +inf at p = 0, as torch.special.entr's autograd
    pt = torch.from_numpy(p).requires_grad_(True)
    torch.special.entr(pt).sum().backward()
    np.testing.assert_array_equal(entropy_grad(p, reduction="sum"), pt.grad.numpy())
    # KL w.r.t. p: -inf at p = 0 < q, +inf where q = 0
    g = kl_divergence_grad(p, q, reduction="sum")
    assert g[0, 0] == -np.inf and g[0, 2] == np.inf and g[1, 0] == np.inf
    np.testing.assert_allclose(g[0, 1], 1.0)
    # CE w.r.t. p: -log q, +inf at q = 0
    np.testing.assert_array_equal(cross_entropy_grad(p, q, reduction="sum")[:, [0, 2]],
                                  [[math.log(2), np.inf], [np.inf, math.log(2)]])
    # w.r.t. q: 0 where p = 0, -inf where p > 0 = q
    gq = kl_divergence_grad_q(p, q, reduction="sum")
    assert gq[0, 0] == 0 and gq[1, 0] == 0 and gq[0, 2] == -np.inf
    # JS: -inf at p = 0 < q; at p = q = 0 the one-sided slope is 0.5 log 2 (exactly linear)
    gjs = js_divergence_grad(p, q, reduction="sum")
    assert gjs[0, 0] == -np.inf
    assert gjs[1, 0] == pytest.approx(0.5 * math.log(2))
    # and w.r.t. q the same with the roles swapped: -inf at q = 0 < p
    gjs_q = js_divergence_grad_q(p, q, reduction="sum")
    assert gjs_q[0, 2] == -np.inf and gjs_q[1, 0] == pytest.approx(0.5 * math.log(2))
    # these limits are the backward on torch and JAX too (the closed form is the backward)
    pt, qt = torch.from_numpy(p).requires_grad_(True), torch.from_numpy(q).requires_grad_(True)
    kl_divergence(pt, qt, reduction="sum").backward()
    np.testing.assert_array_equal(pt.grad.numpy(), g)
    np.testing.assert_array_equal(qt.grad.numpy(), gq)
    gp_j, gq_j = jax.grad(lambda a, b: kl_divergence(a, b, reduction="sum"), argnums=(0, 1))(
        jnp.asarray(p), jnp.asarray(q))
    np.testing.assert_array_equal(np.asarray(gp_j), g)
    np.testing.assert_array_equal(np.asarray(gq_j), gq)
    h = 1e-3
    bumped = p.copy()
    bumped[1, 0] = h
    slope = (js_loop(bumped, q)[1] - js_loop(p, q)[1]) / h
    assert slope == pytest.approx(0.5 * math.log(2), rel=1e-9)


@pytest.mark.parametrize("name", ["cross_entropy", "kl_divergence", "js_divergence"])
def test_autodiff_through_the_losses_is_nan_free_at_zeros(name):
    # p = 0 and q = 0 in places (never q = 0 < p): the loss is finite, so must be the autodiff
    # of its value code, which is what torch.func transforms (and any argument without a
    # closed form) differentiate. The plain backward is the closed form, which takes the
    # one-sided limits there instead (checked at the end, and in the test above).
    p = np.array([[0.0, 0.5, 0.5, 0.0], [0.2, 0.0, 0.8, 0.0]])
    q = np.array([[0.0, 0.25, 0.75, 0.0], [0.1, 0.3, 0.6, 0.0]])
    fn = FUNCS[name]

    def value_code(a, b):
        return fn.with_pullback((), a, b)[0]

    pt = torch.from_numpy(p).requires_grad_(True)
    qt = torch.from_numpy(q).requires_grad_(True)
    value_code(pt, qt).backward()
    assert torch.isfinite(pt.grad).all() and torch.isfinite(qt.grad).all()
    # torch.func runs the same value code under autograd
    gp_f, gq_f = torch.func.grad(fn, argnums=(0, 1))(torch.from_numpy(p), torch.from_numpy(q))
    np.testing.assert_array_equal(gp_f.numpy(), pt.grad.numpy())
    np.testing.assert_array_equal(gq_f.numpy(), qt.grad.numpy())
    gp, gq = jax.grad(value_code, argnums=(0, 1))(jnp.asarray(p), jnp.asarray(q))
    assert np.isfinite(np.asarray(gp)).all() and np.isfinite(np.asarray(gq)).all()
    # where p > 0 and q > 0, autodiff of our own definition agrees with the closed form
    inner = (p > 0) & (q > 0)
    np.testing.assert_allclose(pt.grad.numpy()[inner], VAG[name](p, q)[1][inner], rtol=1e-12)
    np.testing.assert_allclose(qt.grad.numpy()[inner],
                               crossent.grad(fn, argnums=1)(p, q)[inner], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(gp)[inner], VAG[name](p, q)[1][inner], rtol=1e-12)
    # the plain backward is the closed form, one-sided limits included
    pt2 = torch.from_numpy(p).requires_grad_(True)
    qt2 = torch.from_numpy(q).requires_grad_(True)
    fn(pt2, qt2).backward()
    np.testing.assert_array_equal(pt2.grad.numpy(), crossent.grad(fn)(p, q))
    np.testing.assert_array_equal(qt2.grad.numpy(), crossent.grad(fn, argnums=1)(p, q))


def torch_per_dist(name, p, q):
    """A plain torch formula of each loss, one value per distribution (classes last)."""
    if name == "entropy":
        return -(p * torch.log(p)).sum(-1)
    if name == "cross_entropy":
        return -(p * torch.log(q)).sum(-1)
    if name == "kl_divergence":
        return (p * (torch.log(p) - torch.log(q))).sum(-1)
    m = (p + q) / 2
    return 0.5 * (p * (torch.log(p) - torch.log(m)) + q * (torch.log(q) - torch.log(m))).sum(-1)


@pytest.mark.parametrize("name", list(FUNCS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_backward_is_the_closed_form_and_double_backward_is_exact(name, reduction):
    """torch: the backward is the closed-form autograd Function, gradcheck and gradgradcheck
    pass in float64 for every argument with a closed form (alone and together), and a random
    cotangent of reduction="none" pulls back as autograd of a plain formula; JAX:
    check_grads: forward mode to order 1, reverse mode to order 2."""
    fn = {"entropy": entropy, "cross_entropy": cross_entropy, "kl_divergence": kl_divergence,
          "js_divergence": js_divergence}[name]
    wrt = gradients.closed_form_args(fn)
    assert wrt == (("p",) if name == "entropy" else ("p", "q"))
    # interior points (every probability in (0, 1), away from the log kinks at 0)
    p, q = dists((2, 3, 4), seed=40, alpha=6.0), dists((2, 3, 4), seed=41, alpha=6.0)
    arrays = (p, q)[:len(wrt)]

    def f(*a):
        return fn(*a, reduction=reduction)

    for mask in ([True, False], [False, True], [True, True])[:3 if len(wrt) == 2 else 1]:
        ts = [torch.from_numpy(a).requires_grad_(m) for a, m in zip(arrays, mask, strict=False)]
        out = f(*ts)
        assert type(out.grad_fn).__name__ == "_ClosedFormBackward"
        assert torch.autograd.gradcheck(f, ts)
        assert torch.autograd.gradgradcheck(f, ts)
    ts = [torch.from_numpy(a).requires_grad_(True) for a in arrays]
    out = f(*ts)
    cot = torch.from_numpy(np.random.default_rng(42).normal(size=tuple(out.shape)))
    got = torch.autograd.grad(out, ts, cot)
    refs = [torch.from_numpy(a).requires_grad_(True) for a in arrays]
    per = torch_per_dist(name, refs[0], refs[-1])
    ref_out = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    np.testing.assert_allclose(out.detach().numpy(), ref_out.detach().numpy(), rtol=1e-12)
    want = torch.autograd.grad(ref_out, refs, cot)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-10, atol=1e-12)
    # the closed form of value_and_grad is the backward's
    for i, g in enumerate(torch.autograd.grad(f(*ts).sum(), ts)):
        np.testing.assert_allclose(g.numpy(), crossent.grad(fn, argnums=i)(*arrays,
                                                                           reduction=reduction),
                                   rtol=1e-14)
    # a finite-difference step of 1e-6 (not 1e-4): the third derivatives of the logs near
    # p = 0.05 make the default step's truncation error fail even autodiff of scipy's rel_entr
    check_grads_fwd_rev(f, tuple(jnp.asarray(a) for a in arrays), eps=1e-6)


def test_jit():
    p, q = jnp.asarray(dists((4, 3), seed=26)), jnp.asarray(dists((4, 3), seed=27))
    for name, fn in FUNCS.items():
        np.testing.assert_allclose(jax.jit(fn)(p, q), fn(np.asarray(p), np.asarray(q)),
                                   rtol=1e-12, err_msg=name)


# --- dtypes, validation, purity -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(FUNCS))
def test_half_precision_is_computed_in_float32(dtype, name):
    p, q = dists((4, 6), seed=28), dists((4, 6), seed=29)
    ph, qh = torch.from_numpy(p).to(dtype), torch.from_numpy(q).to(dtype)
    out = FUNCS[name](ph, qh, reduction="none")
    assert out.dtype == dtype
    ref = SCIPY_REF[name](ph.double().numpy(), qh.double().numpy())
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    np.testing.assert_allclose(to_numpy(out), ref, rtol=tol, atol=tol)
    _, g = VAG[name](ph, qh)
    assert g.dtype == dtype
    assert cross_entropy_grad_q(ph, qh).dtype == dtype


def test_mixed_float_dtypes_promote():
    p = np.array([[0.5, 0.5]], dtype=np.float32)
    q = np.array([[0.25, 0.75]], dtype=np.float64)
    assert kl_divergence(p, q).dtype == np.float64
    assert kl_divergence_grad(p, q).dtype == np.float32
    assert kl_divergence_grad_q(p, q).dtype == np.float64


def test_inputs_are_not_mutated():
    p, q = dists((3, 4), seed=30, zeros=True), dists((3, 4), seed=31)
    p0, q0 = p.copy(), q.copy()
    for vag in VAG.values():
        vag(p, q, reduction="mean")
    kl_divergence_grad_q(p, q)
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(q, q0)


GOOD = np.array([[0.5, 0.5]])


@pytest.mark.parametrize("fn", [cross_entropy, kl_divergence, js_divergence])
def test_bad_input_messages(fn):
    with pytest.raises(ValueError, match=r"p must hold probabilities in \[0, 1\], got values in "
                                         r"\[-0.5, 1.5\]"):
        fn(np.array([[-0.5, 1.5]]), GOOD)
    with pytest.raises(ValueError, match=r"q must hold probabilities in \[0, 1\]"):
        fn(GOOD, np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match=r"q must have the shape of p \(1, 2\), got \(1, 3\)"):
        fn(GOOD, np.array([[0.2, 0.3, 0.5]]))
    with pytest.raises(ValueError, match="reduction must be one of .* got 'batchmean'"):
        fn(GOOD, GOOD, reduction="batchmean")
    with pytest.raises(ValueError, match="axis=2 is out of range for an array with 2 dim"):
        fn(GOOD, GOOD, axis=2)
    with pytest.raises(TypeError, match="q must be a floating-point array, got dtype int64"):
        fn(GOOD, np.array([[0, 1]]))
    with pytest.raises(TypeError, match="p must be a floating-point array, got dtype int64"):
        fn(np.array([[0, 1]]), GOOD)
    with pytest.raises(ValueError, match="p must have a class axis, got a 0-d array"):
        fn(np.array(0.5), np.array(0.5))


def test_entropy_bad_input_messages():
    with pytest.raises(ValueError, match=r"p must hold probabilities in \[0, 1\]"):
        entropy(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        entropy(GOOD, reduction="avg")
    with pytest.raises(TypeError, match="p must be a floating-point array"):
        entropy(np.array([1, 0]))


# --- element-wise KL: torch.nn.functional.kl_div's "none" and "mean" ----------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_elementwise_kl_is_torch_kl_div(backend, reduction):
    torch = pytest.importorskip("torch")
    p, q = dists((4, 5), seed=8, zeros=True), dists((4, 5), seed=9)
    pt = torch.from_numpy(p).requires_grad_()
    qt = torch.from_numpy(q).requires_grad_()
    with warnings.catch_warnings():  # torch's notice that its "mean" is not "batchmean"
        warnings.filterwarnings("ignore", "reduction: 'mean' divides", UserWarning)
        ref = torch.nn.functional.kl_div(qt.log(), pt, reduction=reduction)
    cot = np.random.default_rng(3).normal(size=tuple(ref.shape))
    gp, gq = torch.autograd.grad(ref, (pt, qt), torch.from_numpy(cot))
    value, pullback = kl_divergence.with_pullback(
        need=("p", "q"), p=to_backend(backend, p), q=to_backend(backend, q),
        reduction=reduction, elementwise=True)
    np.testing.assert_allclose(to_numpy(value), ref.detach().numpy(), rtol=1e-12, atol=1e-15)
    grads = pullback(to_backend(backend, cot))
    # at p = 0 torch's p-gradient is NaN; crossent's is the one-sided limit -inf (times the
    # cotangent, as documented): compare the rest
    zero = p == 0
    assert zero.any()
    np.testing.assert_allclose(to_numpy(grads["p"])[~zero], gp.numpy()[~zero], rtol=1e-10)
    assert np.all(np.isinf(to_numpy(grads["p"])[zero] * np.sign(np.broadcast_to(cot, p.shape)
                                                                [zero])))
    np.testing.assert_allclose(to_numpy(grads["q"]), gq.numpy(), rtol=1e-10, atol=1e-14)
