"""mmdetection's FocalLoss interface: ``crossent.torch.nn.FocalLoss`` and the functional
``weight=`` / ``avg_factor=`` keywords, against a float64 restatement of mmdet's
``py_sigmoid_focal_loss`` + ``weight_reduce_loss`` + ``FocalLoss.forward`` (mmdet has no CPU
wheel here, so its formulas are written out below, in torch ops, and differentiated by
autograd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _backends import BACKENDS, jit_on, to_backend, to_numpy

import crossent
from crossent.torch.nn import FocalLoss

EPS32 = float(torch.finfo(torch.float32).eps)


# --- mmdet, restated ------------------------------------------------------------------------


def mmdet_weight_reduce_loss(loss, weight=None, reduction="mean", avg_factor=None):
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss
    if reduction == "mean":
        return loss.sum() / (avg_factor + EPS32)
    if reduction != "none":
        raise ValueError('avg_factor can not be used with reduction="sum"')
    return loss


def mmdet_py_sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25,
                                reduction="mean", avg_factor=None):
    pred_sigmoid = pred.sigmoid()
    target = target.type_as(pred)
    pt = (1 - pred_sigmoid) * target + pred_sigmoid * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        pred, target, reduction="none") * focal_weight
    if weight is not None:
        if weight.shape != loss.shape:
            if weight.size(0) == loss.size(0):
                weight = weight.view(-1, 1)
            else:
                assert weight.numel() == loss.numel()
                weight = weight.view(loss.size(0), -1)
        assert weight.ndim == loss.ndim
    return mmdet_weight_reduce_loss(loss, weight, reduction, avg_factor)


def mmdet_focal_forward(pred, target, weight=None, avg_factor=None, reduction="mean",
                        gamma=2.0, alpha=0.25, loss_weight=1.0):
    num_classes = pred.size(1)
    if target.dim() != pred.dim():
        target = torch.nn.functional.one_hot(target, num_classes=num_classes + 1)
        target = target[:, :num_classes]
    return loss_weight * mmdet_py_sigmoid_focal_loss(pred, target, weight, gamma, alpha,
                                                     reduction, avg_factor)


def softmax_focal_rows(pred, target, alpha_c, gamma):
    """float64 loop: -alpha_y (1 - p_y)^gamma log p_y per row."""
    out = []
    for z, y in zip(pred, target, strict=True):
        logp = torch.log_softmax(z, 0)[y]
        out.append(-alpha_c[y] * (1 - logp.exp()) ** gamma * logp)
    return torch.stack(out)


def _case(n=12, c=5, seed=0, background=0.4):
    g = torch.Generator().manual_seed(seed)
    pred = (3 * torch.randn(n, c, generator=g, dtype=torch.float64))
    target = torch.randint(0, c, (n,), generator=g)
    target[torch.rand(n, generator=g) < background] = c  # background anchors
    return pred, target, g


# --- the Module against mmdet ---------------------------------------------------------------

WEIGHTS = ["none", "element", "row", "flat"]


def _weight(kind, n, c, g):
    if kind == "none":
        return None
    if kind == "element":
        return torch.rand(n, c, generator=g, dtype=torch.float64)
    if kind == "row":
        return torch.rand(n, generator=g, dtype=torch.float64)
    return torch.rand(n * c, generator=g, dtype=torch.float64)  # mmdet's view(N, -1)


@pytest.mark.parametrize("weight_kind", WEIGHTS)
@pytest.mark.parametrize("reduction,avg_factor", [("mean", None), ("sum", None),
                                                  ("none", None), ("mean", 3.0),
                                                  ("mean", 0.0), ("none", 7.0)])
@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.0, 0.5), (1.5, 0.9)])
def test_module_matches_mmdet_values_and_gradients(weight_kind, reduction, avg_factor, gamma,
                                                   alpha):
    pred, target, g = _case()
    weight = _weight(weight_kind, *pred.shape, g)
    a = pred.clone().requires_grad_()
    ref = mmdet_focal_forward(a, target, weight, avg_factor, reduction, gamma, alpha, 2.0)
    b = pred.clone().requires_grad_()
    got = FocalLoss(gamma=gamma, alpha=alpha, reduction=reduction, loss_weight=2.0)(
        b, target, weight, avg_factor)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    cot = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad(ref, a, cot)
    (gb,) = torch.autograd.grad(got, b, cot)
    torch.testing.assert_close(gb, ga, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("avg_factor", [None, 5.0])
def test_module_low_precision_runs_the_fast_path_and_matches(dtype, avg_factor):
    pred, target, g = _case(n=64, c=9)
    weight = torch.rand(64, generator=g, dtype=torch.float64)
    ref = mmdet_focal_forward(pred, target, weight, avg_factor)
    x = pred.to(dtype).requires_grad_()
    got = FocalLoss()(x, target, weight.to(dtype), avg_factor)
    assert got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=1e-6)
    got.backward()
    xr = pred.to(dtype).double().requires_grad_()
    mmdet_focal_forward(xr, target, weight.to(dtype).double(), avg_factor).backward()
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=tol, atol=tol * 1e-2)


def test_module_accepts_one_hot_targets_like_mmdet_3():
    pred, target, _ = _case()
    onehot = torch.nn.functional.one_hot(target, 6)[:, :5].double()
    torch.testing.assert_close(FocalLoss()(pred, onehot), FocalLoss()(pred, target))
    torch.testing.assert_close(FocalLoss()(pred, onehot), mmdet_focal_forward(pred, onehot))


def test_all_background_gives_the_negatives_loss_only():
    pred, _, _ = _case()
    target = torch.full((12,), 5)
    got = FocalLoss(reduction="sum")(pred, target)
    p = pred.sigmoid()
    ref = (0.75 * p ** 2 * torch.nn.functional.softplus(pred)).sum()
    torch.testing.assert_close(got, ref)


def test_reduction_override_and_loss_weight():
    pred, target, _ = _case()
    m = FocalLoss(reduction="mean", loss_weight=0.5)
    torch.testing.assert_close(m(pred, target, reduction_override="sum"),
                               0.5 * mmdet_focal_forward(pred, target, reduction="sum"))
    assert m(pred, target, reduction_override="none").shape == pred.shape


def test_avg_factor_may_be_a_tensor():
    pred, target, _ = _case()
    n_pos = (target < 5).sum()
    torch.testing.assert_close(FocalLoss()(pred, target, avg_factor=n_pos.double()),
                               mmdet_focal_forward(pred, target, avg_factor=float(n_pos)))


def test_module_gradcheck_and_gradgradcheck():
    pred, target, g = _case(n=5, c=3)
    weight = torch.rand(5, 3, generator=g, dtype=torch.float64)
    x = pred.requires_grad_()
    for m in (FocalLoss(), FocalLoss(use_sigmoid=False)):
        if m.use_sigmoid:
            def f(x, m=m):
                return m(x, target, weight, avg_factor=2.0)
        else:
            def f(x, m=m):
                return m(x, target.clamp(max=2), weight[:, 0], avg_factor=2.0)
        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))


# --- use_sigmoid=False: softmax focal over the classes and the background --------------------


@pytest.mark.parametrize("reduction,avg_factor", [("mean", None), ("sum", None),
                                                  ("none", None), ("mean", 4.0)])
@pytest.mark.parametrize("alpha", [0.25, None, "tensor"])
def test_softmax_module_matches_the_loop(reduction, avg_factor, alpha):
    pred, target, g = _case(c=6)  # 5 foreground classes + the background column
    target = target.clamp(max=5)
    weight = torch.rand(12, generator=g, dtype=torch.float64)
    if alpha == "tensor":
        a_mod = torch.rand(6, generator=g, dtype=torch.float64)
        alpha_c = a_mod
    elif alpha is None:
        a_mod, alpha_c = None, torch.ones(6, dtype=torch.float64)
    else:
        a_mod = alpha
        alpha_c = torch.tensor([alpha] * 5 + [1 - alpha], dtype=torch.float64)
    a = pred.clone().requires_grad_()
    rows = softmax_focal_rows(a, target, alpha_c, 2.0)
    ref = mmdet_weight_reduce_loss(rows, weight, reduction, avg_factor)
    b = pred.clone().requires_grad_()
    got = FocalLoss(use_sigmoid=False, alpha=a_mod, reduction=reduction)(
        b, target, weight, avg_factor)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    cot = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(got, b, cot)[0],
                               torch.autograd.grad(ref, a, cot)[0], rtol=1e-10, atol=1e-14)


# --- bad input ------------------------------------------------------------------------------


def test_errors_name_the_argument():
    pred, target, _ = _case()
    m = FocalLoss()
    with pytest.raises(ValueError, match="avg_factor cannot be used with reduction='sum'"):
        m(pred, target, avg_factor=2.0, reduction_override="sum")
    with pytest.raises(ValueError, match="avg_factor must be a non-negative"):
        m(pred, target, avg_factor=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        m(pred, target, reduction_override="avg")
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 5\]"):
        m(pred, torch.full((12,), 6))
    with pytest.raises(ValueError, match=r"target must hold class indices"):
        m(pred, torch.full((12,), -1))
    with pytest.raises(ValueError, match="target must have shape"):
        m(pred, target[:5])
    with pytest.raises(TypeError, match="target labels must be integers"):
        m(pred, target.double())
    with pytest.raises(ValueError, match="weight must have the shape of pred"):
        m(pred, target, torch.ones(7))
    with pytest.raises(ValueError, match="weight must have one value per row"):
        FocalLoss(use_sigmoid=False)(pred, target.clamp(max=4), torch.ones(12, 5))
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="alpha must be a number"):
        FocalLoss(alpha=torch.ones(5))
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="avg")


def test_nothing_is_mutated():
    pred, target, g = _case()
    weight = torch.rand(12, generator=g, dtype=torch.float64)
    before = (pred.clone(), target.clone(), weight.clone())
    x = pred.requires_grad_()
    FocalLoss()(x, target, weight, avg_factor=2.0).backward()
    for a, b in zip((pred.detach(), target, weight), before, strict=True):
        assert torch.equal(a, b)


# --- the functional keywords, on every backend ----------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction,avg_factor", [("mean", None), ("mean", 2.5),
                                                  ("none", 2.5), ("sum", None)])
def test_functional_weight_and_avg_factor_on_every_backend(backend, reduction, avg_factor):
    pytest.importorskip(backend)
    pred, target, g = _case(n=8, c=4)
    t = torch.nn.functional.one_hot(target, 5)[:, :4].double()
    w = torch.rand(8, 4, generator=g, dtype=torch.float64)
    ref = mmdet_py_sigmoid_focal_loss(pred, t, w, reduction=reduction, avg_factor=avg_factor)

    def f(x, t, w):
        return crossent.sigmoid_focal_loss(x, t, weight=w, avg_factor=avg_factor,
                                           reduction=reduction)

    got = jit_on(backend, f)(*(to_backend(backend, a.numpy()) for a in (pred, t, w)))
    np.testing.assert_allclose(to_numpy(got), ref.numpy(), rtol=1e-12, atol=1e-15)
    if reduction != "none":
        _, grad = crossent.value_and_grad(crossent.sigmoid_focal_loss)(
            pred.numpy(), t.numpy(), weight=w.numpy(), avg_factor=avg_factor,
            reduction=reduction)
        x = pred.clone().requires_grad_()
        mmdet_py_sigmoid_focal_loss(x, t, w, reduction=reduction,
                                    avg_factor=avg_factor).backward()
        np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_jax_traced_avg_factor_and_grad():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    pred, target, _ = _case(n=6, c=3)
    t = torch.nn.functional.one_hot(target, 4)[:, :3].double()
    ref_x = pred.clone().requires_grad_()
    mmdet_py_sigmoid_focal_loss(ref_x, t, avg_factor=4.0).backward()

    def f(x, avg):
        return crossent.sigmoid_focal_loss(x, jax.numpy.asarray(t.numpy()), avg_factor=avg)

    g = jax.jit(jax.grad(f))(jax.numpy.asarray(pred.numpy()), jax.numpy.asarray(4.0))
    np.testing.assert_allclose(np.asarray(g), ref_x.grad.numpy(), rtol=1e-10)


def test_functional_softmax_weight_and_avg_factor_with_ignored_rows():
    pred, target, g = _case(c=5)
    target = target.clamp(max=4)
    target[:3] = -100
    w = torch.rand(12, generator=g, dtype=torch.float64)
    keep = target != -100
    rows = softmax_focal_rows(pred[keep], target[keep], torch.ones(5, dtype=torch.float64), 2.0)
    got = crossent.softmax_focal_loss(pred, target, weight=w, avg_factor=3.0)
    torch.testing.assert_close(got, (rows * w[keep]).sum() / (3.0 + EPS32))
    # without avg_factor the mean's denominator stays the number of counted rows
    got = crossent.softmax_focal_loss(pred, target, weight=w)
    torch.testing.assert_close(got, (rows * w[keep]).sum() / keep.sum())
