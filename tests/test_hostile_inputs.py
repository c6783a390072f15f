"""Hostile, extreme and degenerate inputs on NumPy, PyTorch and JAX: every case here was wrong
once. References are independent of crossent: PyTorch's own ops in float64, formulas restated
from torchvision / timm, SciPy, and float64 (or wider) evaluations of the definitions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sp
import torch
import torch.nn.functional as F

import crossent
from tests._backends import (
    finite_difference,
    to_backend,
    to_numpy,
    torchvision_sigmoid_focal_loss,
)

BACKENDS3 = ("numpy", "torch", "jax")


def _timm_asl(x, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8):
    """timm's AsymmetricLossMultiLabel.forward restated (returns the negated sum)."""
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    pt = xs_pos * y + xs_neg * (1 - y)
    gamma = gamma_pos * y + gamma_neg * (1 - y)
    return -(loss * torch.pow(1 - pt, gamma)).sum()


# --- gradients w.r.t. probability targets that are exactly 0 -------------------------------


def test_gradient_wrt_a_zero_probability_target_is_minus_log_softmax():
    z = np.array([10.0, 1.0, -2.0])
    t = np.array([0.0, 1.0, 0.0])
    truth = -sp.log_softmax(z)  # d/dt_c of -sum_c t_c log p_c
    g_jax = jax.grad(lambda tt: crossent.softmax_cross_entropy(jnp.asarray(z), tt))(
        jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(g_jax), truth, rtol=1e-12)
    tt = torch.tensor(t, requires_grad=True)
    crossent.softmax_cross_entropy(torch.tensor(z), tt).backward()
    np.testing.assert_allclose(tt.grad.numpy(), truth, rtol=1e-12)
    # H(p, q) = -sum p log q: d/dp = -log q, also where p = 0
    q = sp.softmax(z)
    g_p = jax.grad(lambda p: crossent.cross_entropy(p, jnp.asarray(q)))(jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(g_p), -np.log(q), rtol=1e-12)


# --- autodiff at a logit of exactly 0 (and subnormal) ----------------------------------------


@pytest.mark.parametrize("x0", [0.0, 5e-324, -5e-324])
def test_jax_autodiff_at_zero_logits_sigmoid_family(x0):
    x = jnp.full(4, x0)
    g = jax.grad(lambda s: crossent.sigmoid_cross_entropy(s, jnp.ones(4)))(x)
    np.testing.assert_allclose(np.asarray(g), -0.125, rtol=1e-12)  # (sigma(0) - 1) / 4
    assert float(jax.grad(crossent.log_sigmoid)(x0)) == pytest.approx(0.5, rel=1e-12)
    assert float(jax.grad(crossent.sigmoid)(x0)) == pytest.approx(0.25, rel=1e-12)
    xt = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    ones = torch.ones(4, dtype=torch.float64)
    torchvision_sigmoid_focal_loss(xt, ones, alpha=0.25, gamma=2.0).mean().backward()
    gf = jax.grad(lambda s: crossent.sigmoid_focal_loss(s, jnp.ones(4)))(x)
    np.testing.assert_allclose(np.asarray(gf), xt.grad.numpy(), rtol=1e-12)
    assert float(gf[0]) != 0.0


def test_torch_autograd_at_zero_logits():
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    crossent.sigmoid(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 0.25, rtol=1e-12)
    for fn in (crossent.log_sigmoid,):
        x.grad = None
        fn(x).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), 0.5, rtol=1e-12)
    # asymmetric loss vs timm's formula under torch autograd, at 0 and around it
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    for v in (0.0, 1e-3, -2.0):
        xr = torch.full((4,), v, dtype=torch.float64, requires_grad=True)
        _timm_asl(xr, y).backward()
        xc = torch.full((4,), v, dtype=torch.float64, requires_grad=True)
        crossent.asymmetric_loss(xc, y, reduction="sum").backward()
        np.testing.assert_allclose(xc.grad.numpy(), xr.grad.numpy(), rtol=1e-10)


# --- ignored padding rows whose logits are all -inf -----------------------------------------

IGNORED_ROW_LOSSES = ("softmax_cross_entropy", "softmax_focal_loss", "poly1_cross_entropy",
                      "generalized_cross_entropy")


@pytest.mark.parametrize("backend", BACKENDS3)
@pytest.mark.parametrize("name", IGNORED_ROW_LOSSES)
def test_ignored_rows_of_minus_inf_contribute_nothing(backend, name):
    fn = getattr(crossent, name)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 4))
    y = np.array([1, 3, 0])
    ref, g_ref = crossent.value_and_grad(fn)(z[:2], y[:2], reduction="sum")  # rows that count
    zp = np.vstack([z[:2], np.full((2, 4), -np.inf)])
    yp = np.array([1, 3, -100, -100])
    # the reference above is crossent on clean rows; pin it to PyTorch where one exists
    if name == "softmax_cross_entropy":
        assert float(ref) == pytest.approx(
            F.cross_entropy(torch.tensor(z[:2]), torch.tensor(y[:2]), reduction="sum").item())
    zb, yb = to_backend(backend, zp), to_backend(backend, yp)
    if backend == "torch":
        zb.requires_grad_()
        loss = fn(zb, yb, reduction="sum")
        loss.backward()
        g = zb.grad
    elif backend == "jax":
        loss, g = jax.value_and_grad(lambda s: fn(s, yb, reduction="sum"))(zb)
    else:
        loss, g = crossent.value_and_grad(fn)(zb, yb, reduction="sum")
    assert float(to_numpy(loss)) == pytest.approx(float(ref), rel=1e-12)  # torch: detached
    g = to_numpy(g)
    np.testing.assert_array_equal(g[2:], 0.0)
    np.testing.assert_allclose(g[:2], g_ref, rtol=1e-10, atol=1e-15)


# --- magnitudes that overflow naively but have a representable answer ------------------------


def test_sparsemax_at_1e8_float32():
    z = np.array([[1e8, 1e8, -1e8], [1e8, 1e8 - 64, 0.0]], dtype=np.float32)
    p = crossent.sparsemax(z)
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], atol=1e-7)
    # sparsemax loss of label 1: sum_j p_j (z_j - z_y) + (1 - ||p||^2) / 2, exact in float64
    loss = crossent.sparsemax_loss(z, np.array([1, 1]), reduction="none")
    np.testing.assert_allclose(loss, [0.25, 64.0], rtol=1e-6)


@pytest.mark.parametrize("name", ["arcface_loss", "cosface_loss"])
@pytest.mark.parametrize("factor", [1e20, "max"])
def test_direction_only_margin_losses_are_scale_invariant(name, factor):
    fn = getattr(crossent, name)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    k = np.float32(3e38) / np.abs(x).max() if factor == "max" else np.float32(factor)
    base = fn(x.astype(np.float64), w.astype(np.float64), y)
    big = fn(x * k, w, y)
    assert np.isfinite(big)
    assert float(big) == pytest.approx(float(base), rel=1e-5)


@pytest.mark.parametrize("factor", [1e20, "max"])
def test_ntxent_is_scale_invariant(factor):
    rng = np.random.default_rng(4)
    e = rng.normal(size=(6, 5)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2])
    k = np.float32(3e38) / np.abs(e).max() if factor == "max" else np.float32(factor)
    base = crossent.ntxent_loss(e.astype(np.float64), labels)
    with np.errstate(over="ignore"):  # the norm itself is past float32's range at 3e38
        big = crossent.ntxent_loss(e * k, labels)
    assert float(big) == pytest.approx(float(base), rel=1e-5)


def test_triplet_margin_loss_at_1e20_float32():
    rng = np.random.default_rng(5)
    a, p, n = (rng.normal(size=(4, 3)).astype(np.float32) * np.float32(1e20) for _ in range(3))
    ref = F.triplet_margin_loss(*(torch.tensor(v, dtype=torch.float64) for v in (a, p, n)),
                                reduction="none").numpy()
    got = crossent.triplet_margin_loss(a, p, n, reduction="none")
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS3)
def test_label_smoothing_at_logits_near_the_float32_limit(backend):
    z = np.array([[3e38, -3e38, 1e38], [2e38, 3e38, -1e38]], dtype=np.float32)
    y = np.array([0, 1])
    ref = F.cross_entropy(torch.tensor(z, dtype=torch.float64), torch.tensor(y),
                          label_smoothing=0.1, reduction="none").numpy()
    assert np.all(ref < 3.4e38)  # representable in float32
    got = to_numpy(crossent.softmax_cross_entropy(to_backend(backend, z), to_backend(backend, y),
                                                  label_smoothing=0.1, reduction="none"))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    q = np.eye(3, dtype=np.float32)[y]
    got_p = to_numpy(crossent.softmax_cross_entropy(to_backend(backend, z), to_backend(backend, q),
                                                    label_smoothing=0.1, reduction="none"))
    np.testing.assert_allclose(got_p, ref, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS3)
def test_contrastive_loss_of_far_dissimilar_pairs_in_float32(backend):
    rng = np.random.default_rng(6)
    x1, x2 = (rng.normal(size=(4, 3)).astype(np.float32) * np.float32(1e25) for _ in range(2))
    y = np.zeros(4, dtype=np.float32)  # dissimilar, far beyond the margin: loss exactly 0
    with np.errstate(over="ignore"):  # D^2 itself is past float32's range; y = 0 silences it
        got = crossent.contrastive_loss(to_backend(backend, x1), to_backend(backend, x2),
                                        to_backend(backend, y), reduction="none")
    np.testing.assert_array_equal(to_numpy(got), 0.0)


# --- NaN propagates ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS3)
def test_triplet_margin_loss_propagates_nan(backend):
    a = np.ones((2, 3))
    a[0, 1] = np.nan
    p, n = np.zeros((2, 3)), np.full((2, 3), 2.0)
    got = to_numpy(crossent.triplet_margin_loss(*(to_backend(backend, v) for v in (a, p, n)),
                                                reduction="none"))
    ref = F.triplet_margin_loss(torch.tensor(a), torch.tensor(p), torch.tensor(n),
                                reduction="none").numpy()
    assert np.isnan(ref[0]) and np.isnan(got[0])
    assert got[1] == pytest.approx(ref[1])


# --- class weights whose selected entries sum to 0 ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS3)
@pytest.mark.parametrize("weight,labels", [([1.0, -1.0], [0, 1]), ([0.0, 1.0], [0, 0])])
def test_weights_summing_to_zero_raise(backend, weight, labels):
    z = to_backend(backend, np.ones((2, 2)))
    y = to_backend(backend, np.array(labels))
    with pytest.raises(ValueError, match="weight"):
        crossent.softmax_cross_entropy(z, y, weight=to_backend(backend, np.array(weight)))
    # 'sum' is defined, and an all-ignored batch is still 0
    crossent.softmax_cross_entropy(z, y, weight=to_backend(backend, np.array(weight)),
                                   reduction="sum")
    ign = to_backend(backend, np.array([-100, -100]))
    assert float(crossent.softmax_cross_entropy(z, ign, weight=[1.0, -1.0])) == 0.0


def test_weights_summing_to_zero_under_jit_give_nan():
    f = jax.jit(lambda s, y, w: crossent.softmax_cross_entropy(s, y, weight=w))
    assert math.isnan(float(f(jnp.ones((2, 2)), jnp.array([0, 1]), jnp.array([1.0, -1.0]))))
    assert float(f(jnp.ones((2, 2)), jnp.array([-100, -100]), jnp.array([1.0, -1.0]))) == 0.0


# --- labels out of range under jax.jit ------------------------------------------------------

JIT_LABEL_CASES = [
    ("softmax_cross_entropy", {}),
    ("softmax_focal_loss", {}),
    ("sparsemax_loss", {}),
    ("multi_margin_loss", {}),
    ("generalized_cross_entropy", {}),
    ("poly1_cross_entropy", {}),
]


@pytest.mark.parametrize("name,kw", JIT_LABEL_CASES)
@pytest.mark.parametrize("bad", [3, -1, 7])
def test_out_of_range_labels_under_jit_give_nan(name, kw, bad):
    fn = getattr(crossent, name)
    z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3)))
    y = jnp.array([0, bad, 2])
    with pytest.raises(ValueError, match="labels|targets"):
        fn(np.asarray(z), np.asarray(y), **kw)  # eager: a clear error
    per = jax.jit(lambda s, t: fn(s, t, reduction="none", **kw))(z, y)
    assert math.isnan(float(per[1])) and np.all(np.isfinite(np.asarray(per)[[0, 2]]))
    assert math.isnan(float(jax.jit(lambda s, t: fn(s, t, **kw))(z, y)))


@pytest.mark.parametrize("bad", [3, -1, 7, -4])
def test_out_of_range_labels_under_jit_leave_the_other_rows_gradients_alone(bad):
    """The JAX gradient puts -1 at each label by a scatter: a label out of [0, C) that the
    checks could not see under jit gives its row a NaN gradient, as its loss is NaN, and
    leaves the other rows' gradients softmax - onehot, as a float64 loop."""
    z = np.random.default_rng(1).normal(size=(3, 3))
    y = jnp.array([0, bad, 2])
    g = np.asarray(jax.jit(jax.grad(lambda s, t: crossent.softmax_cross_entropy(
        s, t, reduction="sum")))(jnp.asarray(z), y))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    for i, label in ((0, 0), (2, 2)):
        want = p[i].copy()
        want[label] -= 1.0
        np.testing.assert_allclose(g[i], want, rtol=1e-12, atol=1e-15)
    assert np.all(np.isnan(g[1]))


def test_margin_softmax_out_of_range_labels_under_jit_give_nan():
    x = jnp.ones((2, 3))
    w = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)))
    per = jax.jit(lambda a, b, c: crossent.arcface_loss(a, b, c, reduction="none"))(
        x, w, jnp.array([1, 4]))
    assert np.isfinite(float(per[0])) and math.isnan(float(per[1]))


# --- infinite logits with the matching target -------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS3)
@pytest.mark.parametrize("name", ["sigmoid_cross_entropy", "sigmoid_focal_loss"])
def test_infinite_logits_with_matching_targets_are_exactly_zero(backend, name):
    fn = getattr(crossent, name)
    x = np.array([np.inf, -np.inf, 1.0])
    t = np.array([1.0, 0.0, 1.0])
    ref = F.binary_cross_entropy_with_logits(torch.tensor(x[2:]), torch.tensor(t[2:]),
                                             reduction="none").numpy()
    xb, tb = to_backend(backend, x), to_backend(backend, t)
    if backend == "torch":
        xb.requires_grad_()
        per = fn(xb, tb, reduction="none")
        per.sum().backward()
        g = xb.grad
    elif backend == "jax":
        per = fn(xb, tb, reduction="none")
        g = jax.grad(lambda s: fn(s, tb, reduction="sum"))(xb)
    else:
        per, g = crossent.value_and_grad(fn)(xb, tb, reduction="none")
    per, g = to_numpy(per), to_numpy(g)
    np.testing.assert_array_equal(per[:2], 0.0)
    np.testing.assert_array_equal(g[:2], 0.0)
    assert np.all(np.isfinite(per)) and np.all(np.isfinite(g))
    if name == "sigmoid_cross_entropy":
        np.testing.assert_allclose(per[2:], ref, rtol=1e-12)


# --- hyper-parameters traced by jax.jit ------------------------------------------------------


def _traced_cases():
    """(loss, arrays, hyper-parameters), built at collection from a generator of their own."""
    r = np.random.default_rng(7)
    z = r.normal(size=(4, 3))
    y = np.array([0, 2, 1, 1])
    t = (r.uniform(size=(4, 3)) > 0.5).astype(float)
    e = r.normal(size=(4, 5))
    w = r.normal(size=(3, 5))
    return [
        ("sigmoid_focal_loss", (z, t), {"alpha": 0.3, "gamma": 1.5}),
        ("sigmoid_focal_loss", (z, t), {"gamma": 0.0}),
        ("softmax_focal_loss", (z, y), {"alpha": 0.5, "gamma": 2.0}),
        ("softmax_cross_entropy", (z, y), {"label_smoothing": 0.2}),
        ("softmax_cross_entropy", (z, np.eye(3)[y]), {"label_smoothing": 0.2}),
        ("poly1_cross_entropy", (z, y), {"epsilon": 2.0}),
        ("generalized_cross_entropy", (z, y), {"q": 0.5}),
        ("distillation_loss", (z, z[::-1].copy()), {"temperature": 3.0}),
        ("asymmetric_loss", (z, t), {"gamma_neg": 3.0, "gamma_pos": 0.5, "clip": 0.1,
                                     "eps": 1e-6}),
        ("ntxent_loss", (e, np.array([0, 0, 1, 1])), {"temperature": 0.2}),
        ("triplet_margin_loss", (e, e[::-1].copy(), e * 0.5), {"margin": 0.7, "p": 3.0}),
        ("multi_margin_loss", (z, y), {"margin": 0.5}),
        ("arcface_loss", (e[:3], w, np.array([0, 1, 2])), {"margin": 0.3, "scale": 8.0}),
        ("cosface_loss", (e[:3], w, np.array([0, 1, 2])), {"margin": 0.3, "scale": 8.0}),
    ]


TRACED = _traced_cases()


@pytest.mark.parametrize("name,args,kw", TRACED, ids=[f"{c[0]}-{i}" for i, c in
                                                      enumerate(TRACED)])
def test_hyper_parameters_can_be_traced_under_jit(name, args, kw):
    fn = getattr(crossent, name)
    eager = fn(*args, **kw)
    names = list(kw)

    def f(arrays, values):
        return fn(*arrays, **dict(zip(names, values, strict=True)))

    traced = jax.jit(f)(tuple(jnp.asarray(a) for a in args),
                        tuple(jnp.asarray(kw[k]) for k in names))
    assert float(traced) == pytest.approx(float(eager), rel=1e-10)
    rest = tuple(jnp.asarray(a) for a in args[1:])
    g = jax.jit(jax.grad(lambda x0, values: f((x0, *rest), values), argnums=(0, 1)))(
        jnp.asarray(args[0]), tuple(jnp.asarray(kw[k]) for k in names))
    assert np.all(np.isfinite(np.asarray(g[0])))
    assert all(np.isfinite(float(v)) for v in g[1])


def test_traced_smooth_labels_and_concrete_values_still_checked():
    t = np.eye(3)
    np.testing.assert_allclose(jax.jit(crossent.smooth_labels)(jnp.asarray(t), 0.3),
                               0.7 * t + 0.1)
    with pytest.raises(ValueError, match="epsilon"):
        crossent.smooth_labels(t, 1.5)
    with pytest.raises(ValueError, match="gamma"):
        jax.jit(lambda s: crossent.sigmoid_focal_loss(s, jnp.ones(3), gamma=-1.0))(jnp.ones(3))


# --- arrays from different libraries ---------------------------------------------------------


def test_jax_logits_take_numpy_labels_and_lists():
    z = np.random.default_rng(2).normal(size=(3, 4))
    y = np.array([0, 3, 1])
    ref = F.cross_entropy(torch.tensor(z), torch.tensor(y)).item()
    assert float(crossent.softmax_cross_entropy(jnp.asarray(z), y)) == pytest.approx(ref)
    assert float(jax.jit(crossent.softmax_cross_entropy)(jnp.asarray(z), y)) == pytest.approx(ref)
    assert float(crossent.softmax_cross_entropy(z.tolist(), y.tolist())) == pytest.approx(ref)
    assert float(crossent.sigmoid_focal_loss(jnp.asarray(z), (z > 0).astype(float))) > 0


def test_torch_logits_take_numpy_labels_and_list_weights():
    z = np.random.default_rng(3).normal(size=(3, 4))
    y = np.array([0, 3, 1])
    w = [1.0, 2.0, 0.5, 1.5]
    ref = F.cross_entropy(torch.tensor(z), torch.tensor(y),
                          weight=torch.tensor(w, dtype=torch.float64)).item()
    zt = torch.tensor(z, requires_grad=True)
    loss = crossent.softmax_cross_entropy(zt, y, weight=w)
    assert loss.item() == pytest.approx(ref)
    loss.backward()
    assert zt.grad.shape == (3, 4)
    got = crossent.sigmoid_cross_entropy(torch.tensor(z), (z > 0).astype(float), weight=w)
    ref_b = F.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor((z > 0) * 1.0),
                                               weight=torch.tensor(w, dtype=torch.float64))
    assert got.item() == pytest.approx(ref_b.item())


def test_two_different_array_libraries_are_refused_by_name():
    with pytest.raises(TypeError, match="targets.*jax.*logits.*torch"):
        crossent.softmax_cross_entropy(torch.ones(2, 3), jnp.array([0, 1]))


# --- empty batches ---------------------------------------------------------------------------

EMPTY = [
    ("sigmoid_cross_entropy", lambda x: (x, torch.zeros(0, 3, dtype=x.dtype))),
    ("sigmoid_focal_loss", lambda x: (x, torch.zeros(0, 3, dtype=x.dtype))),
    ("distillation_loss", lambda x: (x, torch.zeros(0, 3, dtype=x.dtype))),
    ("sparsemax_loss", lambda x: (x, torch.zeros(0, dtype=torch.int64))),
    ("asymmetric_loss", lambda x: (x, torch.zeros(0, 3, dtype=x.dtype))),
    ("triplet_margin_loss", lambda x: (x, torch.zeros(0, 3, dtype=x.dtype),
                                       torch.zeros(0, 3, dtype=x.dtype))),
    ("ntxent_loss", lambda x: (x, torch.zeros(0, dtype=torch.int64))),
    ("softmax_focal_loss", lambda x: (x, torch.zeros(0, dtype=torch.int64))),
]


@pytest.mark.parametrize("name,make", EMPTY, ids=[e[0] for e in EMPTY])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_batch_gives_zero_with_a_zero_size_gradient_on_torch(name, make, reduction):
    x = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    loss = getattr(crossent, name)(*make(x), reduction=reduction)
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and x.grad.shape == (0, 3)


@pytest.mark.parametrize("backend", BACKENDS3)
def test_ntxent_empty_batch_on_every_backend(backend):
    e = to_backend(backend, np.zeros((0, 4)))
    lab = to_backend(backend, np.zeros(0, dtype=np.int64))
    assert float(crossent.ntxent_loss(e, lab)) == 0.0
    loss, g = crossent.value_and_grad(crossent.ntxent_loss)(e, lab)
    assert float(loss) == 0.0 and tuple(g.shape) == (0, 4)


# --- the same call gives the same answer and the same error on every backend -----------------


@pytest.mark.parametrize("backend", BACKENDS3)
def test_probability_targets_outside_unit_interval_raise(backend):
    z = to_backend(backend, np.zeros((1, 2)))
    bad = to_backend(backend, np.array([[1.5, -0.5]]))
    # crossent.torch names the argument ``target``, PyTorch's name; the check is the same
    with pytest.raises(ValueError, match=r"targets? must hold probabilities in \[0, 1\]"):
        crossent.softmax_cross_entropy(z, bad)


@pytest.mark.parametrize("backend", BACKENDS3)
def test_integer_class_weights(backend):
    z = np.random.default_rng(8).normal(size=(4, 4))
    y = np.array([0, 1, 2, 3])
    ref = F.cross_entropy(torch.tensor(z), torch.tensor(y),
                          weight=torch.tensor([1.0, 2.0, 3.0, 1.0], dtype=torch.float64)).item()
    for w in ([1, 2, 3, 1], np.array([1, 2, 3, 1])):
        got = crossent.softmax_cross_entropy(to_backend(backend, z), to_backend(backend, y),
                                             weight=w)
        assert float(got) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS3)
def test_numeric_scalars_of_every_library_are_accepted(backend):
    z = np.random.default_rng(9).normal(size=(3, 4))
    y = np.array([0, 1, -100])
    ref = F.cross_entropy(torch.tensor(z), torch.tensor(y), label_smoothing=0.1).item()
    zb, yb = to_backend(backend, z), to_backend(backend, y)
    for eps in (np.float32(0.1), np.float64(0.1), torch.tensor(0.1), jnp.asarray(0.1)):
        got = crossent.softmax_cross_entropy(zb, yb, label_smoothing=eps,
                                             ignore_index=np.int64(-100))
        assert float(got) == pytest.approx(ref, rel=1e-6)
    x = np.random.default_rng(10).normal(size=(2, 3))
    w = np.random.default_rng(11).normal(size=(4, 3))
    base = crossent.arcface_loss(x, w, np.array([0, 3]), margin=0.5)
    got = crossent.arcface_loss(to_backend(backend, x), to_backend(backend, w),
                                to_backend(backend, np.array([0, 3])), margin=np.float32(0.5))
    assert float(got) == pytest.approx(float(base), rel=1e-6)


BAD_OPTIONS = [
    ("softmax_cross_entropy", {"ignore_index": 2 ** 70}, "ignore_index"),
    ("softmax_cross_entropy", {"ignore_index": 1.5}, "ignore_index"),
    ("softmax_cross_entropy", {"label_smoothing": float("nan")}, "label_smoothing"),
    ("distillation_loss", {"temperature": float("inf")}, "temperature"),
    ("asymmetric_loss", {"gamma_neg": float("inf")}, "gamma_neg"),
    ("sigmoid_focal_loss", {"gamma": float("inf")}, "gamma"),
    ("softmax_focal_loss", {"gamma": -1.0}, "gamma"),
]


def _args(name, backend, c=3):
    z = np.random.default_rng(12).normal(size=(2, c))
    if name == "distillation_loss":
        return to_backend(backend, z), to_backend(backend, z)
    if name in ("asymmetric_loss", "sigmoid_focal_loss"):
        return to_backend(backend, z), to_backend(backend, (z > 0).astype(float))
    return to_backend(backend, z), to_backend(backend, np.zeros(2, dtype=np.int64))


@pytest.mark.parametrize("backend", BACKENDS3)
@pytest.mark.parametrize("name,kw,word", BAD_OPTIONS)
def test_bad_options_raise_one_clear_value_error(backend, name, kw, word):
    with pytest.raises(ValueError, match=word) as info:
        getattr(crossent, name)(*_args(name, backend), **kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS3)
@pytest.mark.parametrize("name", ["softmax_cross_entropy", "softmax_focal_loss",
                                  "poly1_cross_entropy", "sparsemax_loss"])
def test_zero_classes_is_a_clear_error(backend, name):
    z = to_backend(backend, np.zeros((2, 0)))
    with pytest.raises(ValueError, match="at least one class"):
        getattr(crossent, name)(z, to_backend(backend, np.zeros(2, dtype=np.int64)))


# --- the finite-difference reference itself ---------------------------------------------------


def test_finite_difference_reference_is_accurate_on_large_sums():
    # a sum of many large per-element terms (|sum| ~ 1e5) with a known gradient: a plain
    # 1e-6 step on the sum loses ~eps |sum| / h ~ 1e-5; differencing element-wise before
    # summing, the reference must be good to 1e-9 on any CPU
    x = np.linspace(-3.0, 3.0, 400)

    def per_element(v):
        return 300.0 + np.exp(v) + 50.0 * v ** 2

    np.testing.assert_allclose(finite_difference(per_element, x), np.exp(x) + 100.0 * x,
                               rtol=1e-9, atol=1e-9)


def test_option_tensors_that_require_grad_get_their_gradient():
    # a learnable pos_weight / class weight: autograd reaches it through the value code
    rng = np.random.default_rng(13)
    x = torch.tensor(rng.normal(size=(5, 3)), requires_grad=True)
    t = torch.tensor((rng.uniform(size=(5, 3)) > 0.5) * 1.0)
    pw = torch.tensor([0.5, 2.0, 1.5], dtype=torch.float64, requires_grad=True)
    crossent.sigmoid_cross_entropy(x, t, pos_weight=pw).backward()
    xr, pr = x.detach().clone().requires_grad_(), pw.detach().clone().requires_grad_()
    # PyTorch's op has no gradient for pos_weight: its formula, under autograd
    (pr * t * F.softplus(-xr) + (1 - t) * F.softplus(xr)).mean().backward()
    torch.testing.assert_close(pw.grad, pr.grad)
    torch.testing.assert_close(x.grad, xr.grad)


@pytest.mark.parametrize("dtype", ["int32", "int16", "uint8"])
def test_narrow_integer_labels_on_torch_definitions(dtype):
    """Every loss that takes class labels, run as its definition on torch tensors (the path of
    torch.func, CROSSENT_NO_EXT and other devices): int32/int16/uint8 labels give the int64
    labels' value (torch gathers with int64 indices only)."""
    import torch

    from crossent import _samples, names

    checked = 0
    for spec in names.catalog():
        if not hasattr(spec.fn, "with_pullback"):
            continue
        args, kw = _samples.sample(spec.name, 0)
        if len(args) < 2 or not (isinstance(args[1], np.ndarray) and args[1].dtype.kind in "iu"
                                 and args[1].ndim >= 1 and args[1].min() >= 0):
            continue
        t = [torch.from_numpy(np.asarray(a)) for a in args]
        want = spec.fn.with_pullback((), *t, **kw)[0]
        narrow = [t[0], t[1].to(getattr(torch, dtype)), *t[2:]]
        got = spec.fn.with_pullback((), *narrow, **kw)[0]
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=spec.name)
        checked += 1
    assert checked >= 10
