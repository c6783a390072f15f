"""Per-token ``sample_weight`` on softmax / sigmoid cross-entropy, every backend and the fused
torch path, against float64 loop restatements of the weighted mean
``sum_i s_i w_{y_i} l_i / sum_i s_i w_{y_i}``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from _backends import BACKENDS, finite_difference, to_backend, to_numpy

import crossent


def _softmax_ce_loop(x, y, w, s, eps, ii, red, prob=False):
    """float64 loops: per-row loss, its weight s_i w_{y_i}, then the reduction."""
    n, c = x.shape
    w = np.ones(c) if w is None else w
    s = np.ones(n) if s is None else s
    per, den = np.zeros(n), 0.0
    for i in range(n):
        lse = math.log(sum(math.exp(v) for v in x[i]))
        if prob:
            q = [(1 - eps) * y[i, k] + eps / c for k in range(c)]
            per[i] = s[i] * sum(w[k] * q[k] * (lse - x[i, k]) for k in range(c))
            den += s[i]
            continue
        if y[i] == ii:
            continue
        li = (1 - eps) * w[y[i]] * (lse - x[i, y[i]])
        li += eps / c * sum(w[k] * (lse - x[i, k]) for k in range(c))
        per[i] = s[i] * li
        den += s[i] * w[y[i]]
    if red == "none":
        return per
    if red == "sum":
        return per.sum()
    return per.sum() / den if den else 0.0


def _data(seed, n=6, c=5):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, c)) * 2
    y = r.integers(0, c, n)
    y[1] = -100
    w = r.uniform(0.5, 2.0, c)
    s = r.uniform(0.0, 2.0, n)
    s[3] = 0.0
    return x, y, w, s


CASES = list(itertools.product(("mean", "sum", "none"), (False, True), (0.0, 0.2)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("red", "use_w", "eps"), CASES)
def test_softmax_ce_sample_weight_value_and_grad(backend, red, use_w, eps):
    x, y, w, s = _data(0)
    w = w if use_w else None
    ref = _softmax_ce_loop(x, y, w, s, eps, -100, red)
    kw = dict(weight=to_backend(backend, w), sample_weight=to_backend(backend, s),
              label_smoothing=eps, reduction=red)
    vg = crossent.value_and_grad(crossent.softmax_cross_entropy)
    val, g = vg(to_backend(backend, x), to_backend(backend, y), **kw)
    np.testing.assert_allclose(to_numpy(val), ref, rtol=1e-12, atol=1e-13)
    fd = finite_difference(lambda a: _softmax_ce_loop(a, y, w, s, eps, -100, red), x)
    np.testing.assert_allclose(to_numpy(g), fd, rtol=1e-7, atol=1e-9)
    assert not to_numpy(g)[[1, 3]].any()  # ignored and zero-weight rows: no gradient


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_softmax_ce_sample_weight_probability_targets(backend, red):
    x, _, w, s = _data(1)
    r = np.random.default_rng(5)
    q = r.dirichlet(np.ones(5), size=6)
    ref = _softmax_ce_loop(x, q, w, s, 0.1, None, red, prob=True)
    vg = crossent.value_and_grad(crossent.softmax_cross_entropy, argnums=(0, 1))
    val, (gx, gq) = vg(to_backend(backend, x), to_backend(backend, q),
                       weight=to_backend(backend, w), sample_weight=to_backend(backend, s),
                       label_smoothing=0.1, reduction=red)
    np.testing.assert_allclose(to_numpy(val), ref, rtol=1e-12, atol=1e-13)
    fdx = finite_difference(lambda a: _softmax_ce_loop(a, q, w, s, 0.1, None, red, True), x)
    fdq = finite_difference(lambda b: _softmax_ce_loop(x, b, w, s, 0.1, None, red, True), q)
    np.testing.assert_allclose(to_numpy(gx), fdx, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(to_numpy(gq), fdq, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_ce_sample_weight_class_axis_and_broadcast(backend):
    # (N, C, T) with the classes on axis 1, per-sequence weights (N, 1) broadcast over T
    r = np.random.default_rng(2)
    x = r.normal(size=(3, 4, 5))
    y = r.integers(0, 4, (3, 5))
    s = r.uniform(0.5, 1.5, (3, 1))
    got = crossent.softmax_cross_entropy(to_backend(backend, x), to_backend(backend, y),
                                         axis=1, sample_weight=to_backend(backend, s))
    rows = np.moveaxis(x, 1, -1).reshape(-1, 4)
    ref = _softmax_ce_loop(rows, y.reshape(-1), None, np.broadcast_to(s, (3, 5)).reshape(-1),
                           0.0, -100, "mean")
    np.testing.assert_allclose(to_numpy(got), ref, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_zero_sample_weights_give_zero(backend):
    x, y, w, _ = _data(3)
    s = np.zeros(6)
    vg = crossent.value_and_grad(crossent.softmax_cross_entropy)
    val, g = vg(to_backend(backend, x), to_backend(backend, y), weight=to_backend(backend, w),
                sample_weight=to_backend(backend, s))
    assert float(to_numpy(val)) == 0.0 and not to_numpy(g).any()
    val, g = crossent.value_and_grad(crossent.sigmoid_cross_entropy)(
        to_backend(backend, x), to_backend(backend, (x > 0) * 1.0),
        sample_weight=to_backend(backend, np.zeros((6, 1))))
    assert float(to_numpy(val)) == 0.0 and not to_numpy(g).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_weight_errors_name_the_argument(backend):
    x, y, _, _ = _data(4)
    with pytest.raises(ValueError, match=r"sample_weight of shape \(4,\)"):
        crossent.softmax_cross_entropy(to_backend(backend, x), to_backend(backend, y),
                                       sample_weight=to_backend(backend, np.ones(4)))
    with pytest.raises(ValueError, match="sample_weight"):
        crossent.sigmoid_cross_entropy(to_backend(backend, x), to_backend(backend, x * 0),
                                       sample_weight=to_backend(backend, np.ones(4)))
    with pytest.raises(ValueError, match="sample_weight: the weights .* sum to 0"):
        s = np.zeros(6)
        s[0], s[2] = 1.0, -1.0  # some weights count, yet they cancel
        crossent.softmax_cross_entropy(to_backend(backend, x), to_backend(backend, y),
                                       sample_weight=to_backend(backend, s))


def _sigmoid_loop(x, t, w, s, red):
    per = np.zeros_like(x)
    den = 0.0
    for i, j in np.ndindex(x.shape):
        li = -(t[i, j] * math.log(1 / (1 + math.exp(-x[i, j])))
               + (1 - t[i, j]) * math.log(1 / (1 + math.exp(x[i, j]))))
        per[i, j] = s[i, 0] * (1.0 if w is None else w[j]) * li
        den += s[i, 0]
    return {"none": per, "sum": per.sum(), "mean": per.sum() / den}[red]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("red", "use_w"), list(itertools.product(("mean", "sum", "none"),
                                                                   (False, True))))
def test_sigmoid_ce_sample_weight(backend, red, use_w):
    r = np.random.default_rng(6)
    x = r.normal(size=(5, 3)) * 3
    t = r.uniform(size=(5, 3))
    w = r.uniform(0.5, 2, 3) if use_w else None
    s = r.uniform(0, 2, (5, 1))
    ref = _sigmoid_loop(x, t, w, s, red)
    val, g = crossent.value_and_grad(crossent.sigmoid_cross_entropy)(
        to_backend(backend, x), to_backend(backend, t), weight=to_backend(backend, w),
        sample_weight=to_backend(backend, s), reduction=red)
    np.testing.assert_allclose(to_numpy(val), ref, rtol=1e-12, atol=1e-13)
    fd = finite_difference(lambda a: _sigmoid_loop(a, t, w, s, red), x)
    np.testing.assert_allclose(to_numpy(g), fd, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- torch fused path

torch = pytest.importorskip("torch")
F = torch.nn.functional
import crossent.torch  # noqa: E402


def _torch_ref(x, y, w, s, eps, red, ii=-100):
    """F.cross_entropy per row (float64) times s, then the documented weighted mean."""
    per = F.cross_entropy(x, y, weight=w, ignore_index=ii, label_smoothing=eps,
                          reduction="none") * s
    if red == "none":
        return per
    if red == "sum":
        return per.sum()
    if y.is_floating_point():
        return per.sum() / s.sum()
    valid = y != ii
    wy = (w[torch.where(valid, y, 0)] if w is not None else torch.ones_like(s)) * valid * s
    return per.sum() / wy.sum()


@pytest.mark.parametrize("impl", ["auto", "torch"])
@pytest.mark.parametrize(("red", "use_w", "eps"), CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_cross_entropy_sample_weight(impl, red, use_w, eps, dtype):
    x, y, w, s = (torch.from_numpy(a) for a in _data(7, n=9, c=7))
    x = x.to(dtype)
    w = w if use_w else None
    xa = x.clone().requires_grad_()
    out = crossent.torch.cross_entropy(xa, y, weight=w, sample_weight=s, label_smoothing=eps,
                                       reduction=red, impl=impl)
    xr = x.double().requires_grad_()
    ref = _torch_ref(xr, y, w, s, eps, red)
    cot = torch.rand(ref.shape, dtype=torch.float64) + 0.5
    (ga,) = torch.autograd.grad(out, xa, cot.to(out.dtype))
    (gr,) = torch.autograd.grad(ref, xr, cot)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == torch.float64 else dict(rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(out.double(), ref.detach(), **tol)
    torch.testing.assert_close(ga.double(), gr, **tol)


def test_torch_cross_entropy_sample_weight_layouts_and_higher_derivatives():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (3, 5), generator=g)
    y[0, 0] = -100
    s = torch.rand(3, 5, dtype=torch.float64, generator=g)
    w = torch.rand(4, dtype=torch.float64, generator=g) + 0.5

    def f(a):
        return crossent.torch.cross_entropy(a, y, weight=w, sample_weight=s,
                                            label_smoothing=0.1, z_loss=1e-2)

    lse = torch.logsumexp(x, 1)
    valid = y != -100
    ref = _torch_ref(x, y, w, s, 0.1, "mean") + (1e-2 * lse**2 * s * valid).sum() / (
        s * valid).sum()
    torch.testing.assert_close(f(x), ref, rtol=1e-12, atol=1e-13)
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    # torch.func runs the composite: same gradient
    gf = torch.func.grad(f)(x.detach())
    (ge,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(gf, ge, rtol=1e-12, atol=1e-13)
    # probability targets receive their gradient with the weights folded in
    q = torch.softmax(torch.randn(3, 4, 5, dtype=torch.float64, generator=g), 1)
    q.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: crossent.torch.cross_entropy(a, b, sample_weight=s, reduction="none"),
        (x, q))


def test_torch_cross_entropy_sample_weight_is_not_mutated_and_takes_no_grad():
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    s = torch.tensor([1.0, 2.0, 0.0, 1.0], requires_grad=True)
    copy = s.detach().clone()
    crossent.torch.cross_entropy(x, y, sample_weight=s).backward()
    assert torch.equal(s.detach(), copy) and s.grad is None
    with pytest.raises(TypeError, match="sample_weight"):
        crossent.torch.cross_entropy(x, y, sample_weight=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="sample_weight"):
        crossent.torch.cross_entropy(x, y, sample_weight=torch.ones(5))
