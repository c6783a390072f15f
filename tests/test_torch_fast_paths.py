"""The registered C++ fast paths (``crossent.torch.fast_paths``) of sigmoid cross-entropy,
sigmoid focal loss, distillation and multi-class margin: value and gradient against float64
torch references (PyTorch's own ops, torchvision's focal formula restated), against the
definition they stand in for, on hostile inputs and in every dtype; they are really taken;
what they decline still works."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from _backends import FUSED_NODES, node_name, torchvision_sigmoid_focal_loss  # noqa: E402

import crossent  # noqa: E402
from crossent.torch import _ext  # noqa: E402

pytestmark = pytest.mark.skipif(not _ext.load(), reason="C++ kernel unavailable")

TOL = {torch.float64: (1e-12, 1e-13), torch.float32: (2e-5, 1e-6),
       torch.bfloat16: (2e-2, 2e-3), torch.float16: (4e-3, 4e-4)}
DTYPES = list(TOL)


def _fused(out: torch.Tensor) -> bool:
    return out.grad_fn is not None and node_name(out) in FUSED_NODES


def _logits(rng, shape, dtype, scale=4.0, hostile=True):
    x = rng.normal(size=shape) * scale
    if hostile:
        flat = x.reshape(-1)
        flat[:4] = [40.0, -40.0, 0.0, 1e4][: flat.size]
    return torch.from_numpy(x).to(dtype)


def _close(got, want, dtype, grad=False):
    rtol, atol = TOL[dtype]
    if grad:
        rtol, atol = 10 * rtol, 10 * atol
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol,
                               equal_nan=True)


def _value_and_grad(fn, x, *args, cot=None, **kw):
    x = x.clone().requires_grad_()
    out = fn(x, *args, **kw)
    c = torch.ones_like(out) if cot is None else cot.to(out.dtype)
    (out * c).sum().backward()
    return out.detach(), x.grad


# --- references: float64 torch ops ----------------------------------------------------------


def ref_bce(x, t, weight=None, pos_weight=None, reduction="mean"):
    return F.binary_cross_entropy_with_logits(
        x, t, weight=None if weight is None else weight.double(),
        pos_weight=None if pos_weight is None else pos_weight.double(), reduction=reduction)


def ref_kd(s, t, temperature=1.0, reduction="mean"):
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                  reduction="none", log_target=True).sum(-1) * temperature ** 2
    return {"mean": kl.mean, "sum": kl.sum, "none": lambda: kl}[reduction]()


def ref_mm(x, y, p=1, margin=1.0, weight=None, reduction="mean"):
    return F.multi_margin_loss(x, y, p=p, margin=margin,
                               weight=None if weight is None else weight.double(),
                               reduction=reduction)


def _against_reference(fn, ref, x, other, dtype, cot_rng, **kw):
    for reduction in ("mean", "sum", "none"):
        cot = None
        if reduction == "none":
            shape = x.shape if fn in (crossent.sigmoid_cross_entropy,
                                      crossent.sigmoid_focal_loss) else x.shape[:1]
            cot = torch.from_numpy(cot_rng.uniform(0.5, 2.0, size=shape))
        x_ = x.clone().requires_grad_()
        out = fn(x_, other, reduction=reduction, **kw)
        assert _fused(out), "the fast path was not taken"
        assert out.dtype == dtype
        c = torch.ones_like(out) if cot is None else cot.to(out.dtype)
        (out * c).sum().backward()
        want, want_g = _value_and_grad(ref, x.double(), other if not other.is_floating_point()
                                       else other.double(), cot=cot, reduction=reduction, **kw)
        _close(out.detach(), want, dtype)
        _close(x_.grad, want_g, dtype, grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("kw", ["none", "pos_weight", "weight_full", "weight_row", "weight_1"])
def test_sigmoid_cross_entropy_matches_pytorch(rng, dtype, soft, kw):
    shape = (37, 11)
    x = _logits(rng, shape, dtype)
    t = rng.uniform(size=shape) if soft else (rng.uniform(size=shape) > 0.6) * 1.0
    t = torch.from_numpy(t).to(dtype)
    opts = {"pos_weight": {"pos_weight": torch.from_numpy(rng.uniform(0.5, 3, size=11))},
            "weight_full": {"weight": torch.from_numpy(rng.uniform(size=shape))},
            "weight_row": {"weight": torch.from_numpy(rng.uniform(size=(1, 11)))},
            "weight_1": {"weight": torch.tensor(0.7, dtype=torch.float64)}}.get(kw, {})
    opts = {k: v.to(dtype) if dtype != torch.float64 else v for k, v in opts.items()}
    _against_reference(crossent.sigmoid_cross_entropy, ref_bce, x.double().to(dtype), t,
                       dtype, rng, **opts)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("kw", [{}, {"alpha": None}, {"gamma": 0.0}, {"gamma": 0.5,
                                                                      "alpha": 0.8}])
def test_sigmoid_focal_loss_matches_torchvision_formula(rng, dtype, soft, kw):
    shape = (29, 7, 3)  # RetinaNet-like (N, A, C): any shape is element-wise
    x = _logits(rng, shape, dtype, hostile=False)  # the reference's (1 - p_t)^g is unstable
    t = rng.uniform(size=shape) if soft else (rng.uniform(size=shape) > 0.7) * 1.0
    _against_reference(crossent.sigmoid_focal_loss, torchvision_sigmoid_focal_loss, x,
                       torch.from_numpy(t).to(dtype), dtype, rng, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.5])
def test_distillation_matches_pytorch_kl_div(rng, dtype, temperature):
    s = _logits(rng, (19, 1000), dtype)
    t = _logits(rng, (19, 1000), dtype, hostile=False)
    _against_reference(crossent.distillation_loss, ref_kd, s, t, dtype, rng,
                       temperature=temperature)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [{}, {"p": 2}, {"margin": 0.3}, {"margin": -0.5, "p": 2},
                                "weight"])
def test_multi_margin_matches_pytorch(rng, dtype, kw):
    x = _logits(rng, (23, 37), dtype, scale=1.0, hostile=False)
    y = torch.from_numpy(rng.integers(0, 37, size=23))
    if kw == "weight":
        kw = {"weight": torch.from_numpy(rng.uniform(0.1, 2, size=37)).to(dtype)}
    _against_reference(crossent.multi_margin_loss, ref_mm, x, y, dtype, rng, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("classes", [1, 2, 3, 5, 10, 15, 16, 17, 33])
def test_multi_margin_rows_narrower_and_wider_than_a_vector(rng, dtype, classes):
    """Rows narrower than one vector register (which C that is depends on the CPU and the
    dtype: 4 to 16 lanes) take a scalar loop, wider ones the vector loop: both are the op."""
    x = _logits(rng, (19, classes), dtype, scale=1.0, hostile=False)
    y = torch.from_numpy(rng.integers(0, classes, size=19))
    w = torch.from_numpy(rng.uniform(0.1, 2, size=classes)).to(dtype)
    for kw in ({}, {"p": 2, "margin": 0.6}, {"weight": w}):
        _against_reference(crossent.multi_margin_loss, ref_mm, x, y, dtype, rng, **kw)


# --- the fast path is the definition --------------------------------------------------------


def _cases(rng):
    x = _logits(rng, (64, 33), torch.float32, scale=8.0)
    t_soft = torch.from_numpy(rng.uniform(size=(64, 33))).float()
    t_hard = (t_soft > 0.5).float()
    y = torch.from_numpy(rng.integers(0, 33, size=64))
    teacher = _logits(rng, (64, 33), torch.float32, hostile=False)
    inf = x.clone()
    inf[0, :3] = torch.tensor([math.inf, -math.inf, math.nan])
    return [
        (crossent.sigmoid_cross_entropy, "logits", x, t_soft, {}),
        (crossent.sigmoid_cross_entropy, "logits", inf, t_hard, {"pos_weight": torch.rand(33)}),
        (crossent.sigmoid_focal_loss, "logits", x, t_soft, {"gamma": 1.5}),
        (crossent.sigmoid_focal_loss, "logits", inf, t_hard, {}),
        (crossent.distillation_loss, "student_logits", x, teacher, {"temperature": 3.0}),
        (crossent.multi_margin_loss, "logits", x, y, {"p": 2, "weight": torch.rand(33)}),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fast_path_agrees_with_the_definition(rng, reduction):
    for fn, name, x, other, kw in _cases(rng):
        got, g = _value_and_grad(fn, x, other, reduction=reduction, **kw)
        want, pullback = fn.with_pullback((name,), x, other, reduction=reduction, **kw)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-6, atol=1e-6)
        want_g = pullback(torch.ones_like(want))[name]
        np.testing.assert_allclose(g.numpy(), want_g.numpy(), rtol=2e-5, atol=1e-6)


def test_infinite_logit_with_matching_target_is_exactly_zero():
    x = torch.tensor([math.inf, -math.inf, 30.0, -30.0], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0])
    for fn in (crossent.sigmoid_cross_entropy, crossent.sigmoid_focal_loss):
        x.grad = None
        out = fn(x, t, reduction="none")
        assert _fused(out)
        out.sum().backward()
        assert out[:2].tolist() == [0.0, 0.0] and x.grad[:2].tolist() == [0.0, 0.0]
        assert torch.all(out[2:] > 0) and torch.all(torch.isfinite(x.grad))


def test_reduced_value_is_independent_of_the_thread_count(rng):
    x = torch.from_numpy(rng.normal(size=(4096, 97))).float()
    t = torch.from_numpy(rng.uniform(size=(4096, 97))).float()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = crossent.sigmoid_focal_loss(x, t)
        torch.set_num_threads(2)
        two = crossent.sigmoid_focal_loss(x, t)
    finally:
        torch.set_num_threads(before)
    assert one.item() == two.item()


def test_inputs_are_not_modified(rng):
    for fn, _, x, other, kw in _cases(rng):
        x0, o0 = x.clone(), other.clone()
        _value_and_grad(fn, x, other, **kw)
        assert torch.equal(x.nan_to_num(), x0.nan_to_num()) and torch.equal(other, o0)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fused_backward_passes_gradcheck_and_gradgradcheck(rng, reduction):
    x = torch.from_numpy(rng.normal(size=(5, 4))).requires_grad_()
    t = torch.from_numpy(rng.uniform(size=(5, 4)))
    te = torch.from_numpy(rng.normal(size=(5, 4)))
    y = torch.tensor([0, 3, 1, 1, 2])
    for fn, other, kw in [(crossent.sigmoid_cross_entropy, t, {"pos_weight": torch.rand(4,
                                                                   dtype=torch.float64)}),
                          (crossent.sigmoid_focal_loss, t, {"gamma": 2.5}),
                          (crossent.distillation_loss, te, {"temperature": 2.0}),
                          (crossent.multi_margin_loss, y, {"p": 2}),
                          (crossent.multi_margin_loss, y, {"margin": 0.4})]:
        def f(v, fn=fn, other=other, kw=kw):
            return fn(v, other, reduction=reduction, **kw)

        assert _fused(f(x))
        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))


def _node_cases(rng):
    x = torch.from_numpy(rng.normal(size=(9, 6)))
    t = torch.from_numpy(rng.uniform(size=(9, 6)))
    teacher = torch.from_numpy(rng.normal(size=(9, 6)))
    y = torch.from_numpy(rng.integers(0, 6, size=9))
    pw = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    return x, [
        ("SigmoidCrossEntropyBackward", crossent.sigmoid_cross_entropy, "logits", t,
         {"pos_weight": pw}),
        ("SigmoidFocalLossBackward", crossent.sigmoid_focal_loss, "logits", (t > 0.5).double(),
         {"gamma": 1.5}),
        ("DistillationLossBackward", crossent.distillation_loss, "student_logits", teacher,
         {"temperature": 2.0}),
        ("MultiMarginLossBackward", crossent.multi_margin_loss, "logits", y.to(torch.int32),
         {"margin": 0.8}),
        ("MultiMarginLossBackward", crossent.multi_margin_loss, "logits", y, {"p": 2}),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cpp_nodes_against_the_definitions(rng, reduction):
    """Each kernel's C++ backward node: the gradient scaled by a cotangent, a retained graph's
    second backward (computed again) accumulated into .grad, then the released graph refused;
    under create_graph the definition's pullback, differentiable in the cotangent
    (d(g . v)/dc = the per-row or total J v) and in the logits (a Hessian-vector product
    against the definition's own double backward); strided logits; no-grad calls."""
    x0, cases = _node_cases(rng)
    for name, fn, arg, other, kw in cases:
        ref_x = x0.clone().requires_grad_()
        want_v, pullback = fn.with_pullback((arg,), ref_x, other, reduction=reduction, **kw)
        cot = torch.from_numpy(rng.uniform(0.5, 2.0, size=want_v.shape))
        want = pullback(cot)[arg]

        x = x0.clone().requires_grad_()
        out = fn(x, other, reduction=reduction, **kw)
        assert node_name(out) == name
        torch.testing.assert_close(out, want_v.detach(), rtol=1e-12, atol=1e-14)
        out.backward(cot, retain_graph=True)
        torch.testing.assert_close(x.grad, want, rtol=1e-12, atol=1e-14)
        out.backward(2 * cot)  # computed again, scaled, and accumulated into .grad
        torch.testing.assert_close(x.grad, 3 * want, rtol=1e-12, atol=1e-14)
        with pytest.raises(RuntimeError, match="second time"):
            out.backward(cot)

        c = cot.clone().requires_grad_()
        out = fn(x, other, reduction=reduction, **kw)
        (g,) = torch.autograd.grad(out, x, c, create_graph=True)
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-14)
        v = torch.from_numpy(rng.normal(size=x.shape))
        gc, gx = torch.autograd.grad((g * v).sum(), (c, x), allow_unused=True)
        unit = pullback(torch.ones_like(cot))[arg]
        per = (unit * v).sum(-1) if reduction == "none" and unit.dim() > cot.dim() \
            else (unit * v if reduction == "none" else (unit * v).sum())
        torch.testing.assert_close(gc, per, rtol=1e-12, atol=1e-14)
        if not want.requires_grad:  # the p = 1 margin: a piecewise-constant gradient
            assert gx is None or not gx.any()
        else:
            (want_gx,) = torch.autograd.grad((want * v).sum(), ref_x, retain_graph=True)
            torch.testing.assert_close(gx, want_gx, rtol=1e-12, atol=1e-14)

        with torch.no_grad():
            assert fn(x, other, reduction=reduction, **kw).grad_fn is None
        strided = x0.T.contiguous().T.requires_grad_()
        fn(strided, other, reduction=reduction, **kw).backward(cot)
        torch.testing.assert_close(strided.grad, want, rtol=1e-12, atol=1e-14)


def test_multi_margin_learnable_weight_takes_the_definition(rng):
    x = torch.from_numpy(rng.normal(size=(5, 4))).requires_grad_()
    w = torch.rand(4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    out = crossent.multi_margin_loss(x, y, weight=w)
    assert not _fused(out)
    gx, gw = torch.autograd.grad(out, (x, w))
    torch.testing.assert_close(gx, torch.autograd.grad(ref_mm(x, y, weight=w.detach()), x)[0])
    # d/dw_c of mean_i w_{y_i} l_i: the unweighted row losses of class c, over N
    rows = F.multi_margin_loss(x.detach(), y, reduction="none")
    want_gw = torch.zeros(4, dtype=torch.float64).index_add_(0, y, rows) / 5
    torch.testing.assert_close(gw, want_gw)


@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int16, torch.uint8])
def test_margin_kernel_lays_out_strided_logits_and_any_integer_labels(rng, label_dtype):
    """The margin op makes the contiguous copy and the int64 labels itself: a transposed view
    of a leaf still gets the C++ node, and the gradient and double backward (p = 2) reach the
    leaf through the copy, as float64 PyTorch's own op computes them."""
    x0 = torch.from_numpy(rng.normal(size=(6, 9)))
    y = torch.from_numpy(rng.integers(0, 6, size=9))
    v = torch.from_numpy(rng.normal(size=(9, 6)))
    for reduction in ("mean", "none"):
        leaf, ref_leaf = x0.clone().requires_grad_(), x0.clone().requires_grad_()
        out = crossent.multi_margin_loss(leaf.T, y.to(label_dtype), p=2, reduction=reduction)
        assert node_name(out) == "MultiMarginLossBackward"
        torch.testing.assert_close(out, ref_mm(x0.T, y, p=2, reduction=reduction),
                                   rtol=1e-12, atol=1e-14)
        # PyTorch's op has no double backward: its p = 2 formula in differentiable ops
        z = ref_leaf.T
        h = (1.0 - z.gather(1, y[:, None]) + z).clamp_min(0).square().scatter(1, y[:, None], 0.0)
        want = h.sum(1) / z.shape[1]
        want = want.mean() if reduction == "mean" else want
        (g,) = torch.autograd.grad(out.sum(), leaf, create_graph=True)
        (want_g,) = torch.autograd.grad(want.sum(), ref_leaf, create_graph=True)
        torch.testing.assert_close(g, want_g, rtol=1e-12, atol=1e-14)
        hvp = torch.autograd.grad((g * v.T).sum(), leaf)[0]
        torch.testing.assert_close(hvp, torch.autograd.grad((want_g * v.T).sum(), ref_leaf)[0],
                                   rtol=1e-12, atol=1e-14)


def test_margin_calls_the_kernel_declines_are_the_definitions(rng):
    """One row of scores, an empty batch and bad labels or weights: the op refuses them before
    writing anything and the definition serves the call (PyTorch's numbers) or words the
    error."""
    x = torch.from_numpy(rng.normal(size=5)).requires_grad_()
    out = crossent.multi_margin_loss(x, torch.tensor(2))
    assert not _fused(out)
    want = F.multi_margin_loss(x, torch.tensor(2))
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(want, x)[0])
    empty = torch.zeros(0, 4, requires_grad=True)
    out = crossent.multi_margin_loss(empty, torch.zeros(0, dtype=torch.int64))
    assert not _fused(out) and out.item() == 0.0
    x = torch.zeros(3, 4, requires_grad=True)
    with pytest.raises(TypeError, match="labels must be an integer array.*got dtype bool"):
        crossent.multi_margin_loss(x, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match=r"without the class axis \(3,\), got \(2,\)"):
        crossent.multi_margin_loss(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"one weight per class \(4\), got shape \(5,\)"):
        crossent.multi_margin_loss(x, torch.tensor([0, 1, 2]), weight=torch.ones(5))
    assert x.grad is None


def test_errors_are_the_definitions():
    x = torch.zeros(3, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r"targets must hold probabilities in \[0, 1\], got "
                                         r"values in \[0.0, 2.0\]"):
        crossent.sigmoid_cross_entropy(x, torch.tensor([[0.0, 2.0, 0.5, 1.0]] * 3))
    with pytest.raises(ValueError, match="targets must hold probabilities"):
        crossent.sigmoid_focal_loss(x, torch.full((3, 4), math.nan))
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 4\)"):
        crossent.multi_margin_loss(x, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="gamma"):
        crossent.sigmoid_focal_loss(x, torch.zeros(3, 4), gamma=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        crossent.distillation_loss(x, torch.zeros(3, 4), temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        crossent.sigmoid_cross_entropy(x, torch.zeros(3, 4), reduction="batchmean")


def test_what_the_kernels_decline_still_works(rng):
    """Gradients w.r.t. the second argument or a learnable option, torch.func, a non-last
    class axis: the definition's path, with the same numbers."""
    x = torch.from_numpy(rng.normal(size=(6, 5))).requires_grad_()
    t = torch.from_numpy(rng.uniform(size=(6, 5))).requires_grad_()
    out = crossent.sigmoid_cross_entropy(x, t)
    assert not _fused(out)
    gx, gt = torch.autograd.grad(out, (x, t))
    torch.testing.assert_close(gt, -x.detach() / 30)  # d/dz = -x, times 1/N
    pw = torch.rand(5, dtype=torch.float64, requires_grad=True)
    out = crossent.sigmoid_cross_entropy(x, t.detach(), pos_weight=pw)
    td = t.detach()  # PyTorch's op has no gradient w.r.t. pos_weight: its formula
    want = (pw * td * F.softplus(-x) + (1 - td) * F.softplus(x)).mean()
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(torch.autograd.grad(out, pw)[0],
                               torch.autograd.grad(want, pw)[0])
    teacher = torch.from_numpy(rng.normal(size=(6, 5))).requires_grad_()
    out = crossent.distillation_loss(x, teacher, temperature=2.0)
    assert not _fused(out)
    want = ref_kd(x, teacher, 2.0)
    for a, b in zip(torch.autograd.grad(out, (x, teacher)),
                    torch.autograd.grad(want, (x, teacher)), strict=True):
        torch.testing.assert_close(a, b)
    g = torch.func.grad(lambda v: crossent.sigmoid_focal_loss(v, t.detach()))(x.detach())
    torch.testing.assert_close(g, torch.autograd.grad(
        torchvision_sigmoid_focal_loss(x, t.detach(), reduction="mean"), x)[0])
    out = crossent.distillation_loss(x.T, teacher.detach().T, axis=0)
    torch.testing.assert_close(out, ref_kd(x, teacher.detach()))
