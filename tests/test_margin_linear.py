"""crossent.torch.margin_linear_cross_entropy (chunked margin softmax) against references.

References: pytorch-metric-learning's ArcFaceLoss / CosFaceLoss / SphereFaceLoss /
LargeMarginSoftmaxLoss / SubCenterArcFaceLoss (margins converted from degrees), which
materialise the N x C logits and differentiate by autograd, and crossent's materialised
margin losses (themselves checked against pml in test_margin.py).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pml = pytest.importorskip("pytorch_metric_learning.losses")

import crossent  # noqa: E402
from crossent.torch import margin_linear_cross_entropy as mlce  # noqa: E402
from crossent.torch.distributed import class_parallel_margin_cross_entropy  # noqa: E402
from crossent.torch.margin_linear import choose_class_chunk, partial_fc_sampler  # noqa: E402
from crossent.torch.nn import MarginLinearCrossEntropyLoss  # noqa: E402

PML = {
    "arcface": (pml.ArcFaceLoss, crossent.arcface_loss),
    "cosface": (pml.CosFaceLoss, crossent.cosface_loss),
    "sphereface": (pml.SphereFaceLoss, crossent.sphereface_loss),
    "lsoftmax": (pml.LargeMarginSoftmaxLoss, crossent.large_margin_softmax_loss),
}
MARGINS = {"arcface": 0.5, "cosface": 0.35, "sphereface": 3, "lsoftmax": 2}
SCALES = {"arcface": 16.0, "cosface": 16.0, "sphereface": 1.0, "lsoftmax": 1.0}


def _data(n=9, d=6, c=13, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.empty(n, 1).uniform_(
        0.3, 3.0, generator=g).double()
    w = torch.randn(c, d, generator=g, dtype=torch.float64) * torch.empty(c, 1).uniform_(
        0.5, 2.0, generator=g).double()
    y = torch.randint(0, c // max(1, 1), (n,), generator=g)
    return x.to(dtype), w.to(dtype), y


def _pml(kind, x, w, y, *, margin, scale, sub_centers=1):
    """pml's value and gradients; w is (C k, D), pml's W is its transpose."""
    kw = dict(embedding_size=w.shape[1], scale=scale,
              margin=math.degrees(margin) if kind == "arcface" else margin)
    if sub_centers > 1:
        fn = pml.SubCenterArcFaceLoss(num_classes=w.shape[0] // sub_centers,
                                      sub_centers=sub_centers, **kw).double()
    else:
        fn = PML[kind][0](num_classes=w.shape[0], **kw).double()
    with torch.no_grad():
        fn.W.copy_(w.T.double())
    xt = x.double().detach().requires_grad_()
    value = fn(xt, y)
    value.backward()
    return value.detach(), xt.grad, fn.W.grad.T


def _ours(x, w, y, go=None, **kw):
    xt, wt = x.detach().requires_grad_(), w.detach().requires_grad_()
    value = mlce(xt, wt, y, **kw)
    value.backward(torch.ones_like(value) if go is None else go)
    return value.detach(), xt.grad, wt.grad


@pytest.mark.parametrize("kind", sorted(PML))
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_matches_pml(kind, chunk):
    x, w, y = _data(seed=len(kind))
    margin, scale = MARGINS[kind], SCALES[kind]
    ref = _pml(kind, x, w, y, margin=margin, scale=scale)
    got = _ours(x, w, y, margin_type=kind, margin=margin, scale=scale, chunk_size=chunk)
    for name, a, b in zip(("loss", "grad x", "grad W"), got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("sub_centers", [2, 3])
@pytest.mark.parametrize("chunk", [1, 5, None])
def test_sub_centers_match_pml_subcenter_arcface(sub_centers, chunk):
    x, w, y = _data(n=10, d=5, c=7 * sub_centers, seed=sub_centers)
    y = y % 7
    ref = _pml("arcface", x, w, y, margin=0.4, scale=12.0, sub_centers=sub_centers)
    got = _ours(x, w, y, margin=0.4, scale=12.0, sub_centers=sub_centers, chunk_size=chunk)
    for name, a, b in zip(("loss", "grad x", "grad W"), got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("kind", sorted(PML))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_materialised_with_ignored_rows(kind, reduction):
    x, w, y = _data(n=8, c=11, seed=3)
    y[[1, 6]] = -1
    kw = dict(margin=MARGINS[kind], scale=SCALES[kind])
    go = torch.linspace(-1.0, 2.0, 8, dtype=torch.float64) if reduction == "none" else None
    got = _ours(x, w, y, go=go, margin_type=kind, reduction=reduction, chunk_size=3,
                ignore_index=-1, **kw)
    # reference: the materialised loss on the kept rows only (ignored rows count for nothing)
    keep = y != -1
    xt, wt = x.detach().requires_grad_(), w.detach().requires_grad_()
    rows = PML[kind][1](xt[keep], wt, y[keep], reduction="none", **kw)
    if reduction == "none":
        full = torch.zeros(8, dtype=torch.float64).masked_scatter(keep, rows)
        full.backward(go)
        want = full
    else:
        want = rows.sum() if reduction == "sum" else rows.mean()
        want.backward()
    torch.testing.assert_close(got[0], want.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], xt.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[2], wt.grad, rtol=1e-9, atol=1e-12)
    assert torch.all(got[1][~keep] == 0)


def test_every_row_ignored_gives_zero():
    x, w, _ = _data(n=4)
    y = torch.full((4,), -100)
    value, gx, gw = _ours(x, w, y)
    assert value.item() == 0.0
    assert torch.all(gx == 0) and torch.all(gw == 0)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 2e-2)])
def test_low_precision_computed_in_float32(dtype, tol):
    x, w, y = _data(n=16, d=8, c=40, seed=5)
    xl, wl = x.to(dtype), w.to(dtype)
    got = _ours(xl, wl, y, margin=0.3, scale=8.0, chunk_size=7)
    ref = _pml("arcface", xl.double(), wl.double(), y, margin=0.3, scale=8.0)
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == dtype
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)


def test_extreme_inputs_stay_finite():
    x, w, y = _data(n=5, d=4, c=6)
    x = x * 1e30  # norms overflow float32 squares: the directions must not
    x[2] = 0.0    # a zero embedding: cos 0 everywhere, gradient finite
    w[4] = 0.0
    for dtype in (torch.float32, torch.float64):
        value, gx, gw = _ours(x.to(dtype), w.to(dtype), y, margin_type="cosface", scale=64.0)
        assert torch.isfinite(value).all() and torch.isfinite(gx).all()
        assert torch.isfinite(gw).all()
    ref = crossent.cosface_loss(x, w, y, scale=64.0)
    torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(PML))
def test_gradcheck_and_gradgradcheck(kind):
    x, w, y = _data(n=4, d=3, c=5, seed=9)
    x.requires_grad_()
    w.requires_grad_()
    kw = dict(margin_type=kind, margin=MARGINS[kind], scale=2.0, chunk_size=2)
    assert torch.autograd.gradcheck(lambda a, b: mlce(a, b, y, reduction="none", **kw),
                                    (x, w))
    assert torch.autograd.gradgradcheck(lambda a, b: mlce(a, b, y, **kw), (x, w))


def test_inputs_not_mutated():
    x, w, y = _data()
    copies = [t.clone() for t in (x, w, y)]
    _ours(x, w, y, chunk_size=2)
    for a, b in zip((x, w, y), copies, strict=True):
        assert torch.equal(a, b)


def test_chunk_choice_bounds_memory():
    # a chunk's temporaries (six N x m, four m x D matrices) within 1/20 of the logits, so
    # that the extra memory stays under 0.05x of them (the benchmark measures it)
    for c in (100_000, 1_000_000):
        chunk = choose_class_chunk(512, c, 512)
        assert (6 * 512 + 4 * 512) * chunk * 4 <= 512 * c * 4 / 20
        assert chunk >= 200  # and each chunk's matmul keeps a few hundred columns
    assert choose_class_chunk(4, 3, 2) == 3  # never more than C
    assert choose_class_chunk(512, 100_000, 512, sub_centers=3) < choose_class_chunk(
        512, 100_000, 512)


@pytest.mark.parametrize("call,kw,exc,match", [
    ("x", {"margin_type": "sphere"}, ValueError, "margin_type must be one of"),
    ("x", {"reduction": "avg"}, ValueError, "reduction"),
    ("x", {"scale": -1.0}, ValueError, "scale"),
    ("x", {"margin": 4.0}, ValueError, "margin"),
    ("x", {"margin_type": "lsoftmax", "margin": 1.5}, ValueError, "margin"),
    ("x", {"margin_type": "cosface", "easy_margin": True}, ValueError, "easy_margin"),
    ("x", {"margin_type": "lsoftmax", "sub_centers": 2}, ValueError, "sub_centers"),
    ("x", {"sub_centers": 0}, ValueError, "sub_centers"),
    ("x", {"sub_centers": 4}, ValueError, "multiple of sub_centers"),
    ("x", {"chunk_size": 0}, ValueError, "chunk_size"),
    ("labels", {}, ValueError, "labels"),
    ("int x", {}, TypeError, "embeddings"),
    ("float labels", {}, TypeError, "integer"),
    ("bad W", {}, ValueError, "class_weight must have shape"),
])
def test_errors_name_the_argument(call, kw, exc, match):
    x, w, y = _data(n=4, d=3, c=6)
    if call == "labels":
        y = torch.tensor([0, 1, 6, 2])
    elif call == "int x":
        x = x.long()
    elif call == "float labels":
        y = y.double()
    elif call == "bad W":
        w = w[:, :2]
    with pytest.raises(exc, match=match):
        mlce(x, w, y, **kw)


# --------------------------------------------------------------------------- sampling, Module


def test_sample_rate_one_is_the_exact_loss():
    x, w, y = _data(n=6, c=20)
    a = class_parallel_margin_cross_entropy(x, w, y, scale=8.0, sample_rate=1.0, chunk_size=3)
    b = crossent.arcface_loss(x, w, y, scale=8.0)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0.0)


def test_sampling_keeps_positives_and_is_the_loss_over_kept_classes():
    x, w, y = _data(n=6, c=40, seed=2)
    xt, wt = x.detach().requires_grad_(), w.detach().requires_grad_()
    gen = torch.Generator().manual_seed(11)
    value = class_parallel_margin_cross_entropy(xt, wt, y, scale=8.0, sample_rate=0.25,
                                                generator=gen, chunk_size=4)
    value.backward()
    kept = partial_fc_sampler(0.25, 0, 40, -100, torch.Generator().manual_seed(11))(y)
    assert kept.numel() == 10 and set(y.tolist()) <= set(kept.tolist())
    assert torch.equal(torch.sort(kept).values, kept)
    remap = torch.full((40,), -1, dtype=torch.long)
    remap[kept] = torch.arange(kept.numel())
    xr, wr = x.detach().requires_grad_(), w[kept].detach().requires_grad_()
    ref = crossent.arcface_loss(xr, wr, remap[y], scale=8.0)
    ref.backward()
    torch.testing.assert_close(value, ref.detach(), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(xt.grad, xr.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(wt.grad[kept], wr.grad, rtol=1e-9, atol=1e-12)
    dropped = torch.ones(40, dtype=torch.bool)
    dropped[kept] = False
    assert torch.all(wt.grad[dropped] == 0)
    # a seed gives the same classes again, another seed others
    again = partial_fc_sampler(0.25, 0, 40, -100, torch.Generator().manual_seed(11))(y)
    other = partial_fc_sampler(0.25, 0, 40, -100, torch.Generator().manual_seed(12))(y)
    assert torch.equal(again, kept) and not torch.equal(other, kept)


def test_sampling_errors():
    x, w, y = _data(n=4, c=6)
    for rate in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="sample_rate"):
            class_parallel_margin_cross_entropy(x, w, y, sample_rate=rate)
    with pytest.raises(TypeError, match="generator"):
        class_parallel_margin_cross_entropy(x, w, y, sample_rate=0.5, generator=3)


def test_module_single_process_equals_function():
    torch.manual_seed(0)
    loss_fn = MarginLinearCrossEntropyLoss(6, 30, margin_type="cosface", margin=0.2,
                                           scale=10.0, seed=1, dtype=torch.float64)
    assert loss_fn.weight.shape == (30, 6) and loss_fn.class_start == 0
    assert 0.0 < float(loss_fn.weight.detach().std()) < 0.02  # N(0, 0.01), Partial FC's init
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 29, 3, 3, 17])
    loss = loss_fn(x, y)
    loss.backward()
    xr = x.detach().requires_grad_()
    wr = loss_fn.weight.detach().clone().requires_grad_()
    ref = crossent.cosface_loss(xr, wr, y, margin=0.2, scale=10.0)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss_fn.weight.grad, wr.grad, rtol=1e-9, atol=1e-12)
    same = MarginLinearCrossEntropyLoss(6, 30, margin_type="cosface", seed=1,
                                        dtype=torch.float64)
    assert torch.equal(same.weight, loss_fn.weight)  # the seed fixes the initialisation
    assert "classes=[0, 30)" in repr(loss_fn)


def test_module_samples_in_training_only():
    loss_fn = MarginLinearCrossEntropyLoss(4, 50, sample_rate=0.2, seed=3, scale=4.0,
                                           dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    loss_fn.eval()
    exact = crossent.arcface_loss(x, loss_fn.weight.detach(), y, scale=4.0)
    torch.testing.assert_close(loss_fn(x, y), exact, rtol=1e-12, atol=0.0)
    loss_fn.train()
    loss_fn(x, y).backward()
    assert int((loss_fn.weight.grad.abs().sum(1) > 0).sum()) == 10
