"""Forward-mode AD (``torch.autograd.forward_ad``) through crossent's torch losses: the
tangent of the loss is its directional derivative, checked against central differences in
float64, for every loss in the names table and for the fused paths (the C++ kernels, their
autograd nodes, the chunked linear loss). Those define no forward-mode derivative of their
own, so with a dual level open they must hand the call to the composite definition: a dropped
tangent (None, or zero) fails here."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fwad = pytest.importorskip("torch.autograd.forward_ad")

import crossent  # noqa: E402
import crossent.torch as ct  # noqa: E402
from crossent import _samples, names  # noqa: E402
from crossent.gradients import default_argnum, has_closed_form  # noqa: E402

# torch's forward-mode rule for nll_loss loads its jvp decompositions on first use, which
# torch.jit.script's them and warns that torch.jit.script is deprecated: torch's own warning,
# taken once here so that filterwarnings=error keeps guarding crossent's code
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import torch._decomp.decompositions_for_jvp  # noqa: E402, F401

H = 1e-6


def _tangent(call, x, t, requires_grad=False):
    with fwad.dual_level():
        out = call(fwad.make_dual(x.clone().requires_grad_(requires_grad), t))
        tangent = fwad.unpack_dual(out).tangent
    assert tangent is not None, "the tangent was dropped"
    return tangent


def _central(call, x, t):
    with torch.no_grad():
        return (call(x + H * t) - call(x - H * t)) / (2 * H)


def _check(call, x, t, requires_grad=False, rtol=1e-6, atol=1e-8):
    got = _tangent(call, x, t, requires_grad)
    torch.testing.assert_close(got, _central(call, x, t), rtol=rtol, atol=atol)
    assert torch.any(got != 0), "a zero tangent proves nothing here"


CLOSED_FORM = [s.name for s in names.catalog() if has_closed_form(s.fn)]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("name", CLOSED_FORM)
def test_every_loss_has_the_directional_derivative_as_tangent(name, requires_grad):
    fn = names.get(name).fn
    args, kw = _samples.sample(name, 0)
    pos = default_argnum(fn)
    targs = [torch.from_numpy(np.asarray(a)) if isinstance(a, np.ndarray) else a
             for a in args]
    x = targs[pos].double()
    t = torch.from_numpy(np.random.default_rng(1).normal(size=tuple(x.shape)))
    if name in ("sparsemax_loss",) or names.get(name).inputs.startswith("prob"):
        t = t * 1e-3  # stay near the sample point (probabilities)

    def call(v):
        return fn(*targs[:pos], v, *targs[pos + 1:], **kw)

    with warnings.catch_warnings():  # probes off the simplex may warn (rows not summing to 1)
        warnings.simplefilter("ignore", UserWarning)
        got = _tangent(call, x, t, requires_grad)
        want = _central(call, x, t)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def _data(seed=0, n=12, c=7):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(scale=2.0, size=(n, c)))
    return (x, torch.from_numpy(rng.integers(0, c, size=n)),
            torch.from_numpy(rng.uniform(size=(n, c))), torch.from_numpy(rng.normal(size=(n, c))))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fused_kernel_paths_keep_the_tangent(requires_grad, reduction):
    x, y, q, t = _data()
    teacher = torch.from_numpy(np.random.default_rng(5).normal(size=x.shape))
    pos_weight = torch.linspace(0.5, 2.0, 7, dtype=torch.float64)
    cases = [
        lambda v: crossent.sigmoid_cross_entropy(v, q, pos_weight=pos_weight,
                                                 reduction=reduction),
        lambda v: crossent.sigmoid_focal_loss(v, (q > 0.5).double(), reduction=reduction),
        lambda v: crossent.distillation_loss(v, teacher, temperature=2.0, reduction=reduction),
        lambda v: crossent.multi_margin_loss(v, y, reduction=reduction),
        lambda v: crossent.multi_margin_loss(v, y, p=2, margin=0.5, reduction=reduction),
        lambda v: crossent.softmax_cross_entropy(v, y, reduction=reduction),
        lambda v: ct.cross_entropy(v, y, label_smoothing=0.1, z_loss=1e-3,
                                   reduction=reduction),
        lambda v: ct.cross_entropy(v, q / q.sum(-1, keepdim=True), reduction=reduction),
    ]
    for call in cases:
        _check(call, x, t, requires_grad)


def _head_case(seed, n, d, c):
    """(N, D) inputs, (C, D) weights, labels, and a tangent for each of the two."""
    rng = np.random.default_rng(seed)
    x, w = (torch.from_numpy(rng.normal(size=s)) for s in ((n, d), (c, d)))
    y = torch.from_numpy(rng.integers(0, c, size=n))
    return x, w, y, torch.from_numpy(rng.normal(size=x.shape)), \
        torch.from_numpy(rng.normal(size=w.shape))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_linear_cross_entropy_keeps_the_tangent(requires_grad):
    h, w, y, th, tw = _head_case(3, 10, 6, 9)
    _check(lambda v: ct.linear_cross_entropy(v, w, y, chunk_size=4), h, th, requires_grad)
    _check(lambda v: ct.linear_cross_entropy(h, v, y, chunk_size=4, label_smoothing=0.2), w, tw,
           requires_grad)


@pytest.mark.parametrize("margin_type", ["arcface", "cosface"])
def test_margin_linear_cross_entropy_keeps_the_tangent(margin_type):
    e, w, y, te, tw = _head_case(4, 8, 5, 6)
    kw = dict(margin_type=margin_type, scale=4.0, chunk_size=4)
    _check(lambda v: ct.margin_linear_cross_entropy(v, w, y, **kw), e, te, rtol=1e-5)
    _check(lambda v: ct.margin_linear_cross_entropy(e, v, y, **kw), w, tw, rtol=1e-5)


def test_collective_paths_refuse_a_dual_input_by_name():
    """The vocabulary- and class-parallel algorithms (run here in a group of one) have no
    composite to hand a dual input to: they say so instead of dropping the tangent, and the
    single-device hand-over keeps it."""
    from crossent.torch.distributed import (
        class_parallel_margin_cross_entropy,
        vocab_parallel_cross_entropy,
        vocab_parallel_linear_cross_entropy,
    )

    x, y, _, t = _data()
    h, w = x[:, :5].contiguous(), torch.from_numpy(np.random.default_rng(6).normal(size=(7, 5)))
    calls = {
        "vocab_parallel_cross_entropy":
            lambda v: vocab_parallel_cross_entropy(v, y, impl="parallel"),
        "vocab_parallel_linear_cross_entropy":
            lambda v: vocab_parallel_linear_cross_entropy(v[:, :5].contiguous(), w, y,
                                                          impl="parallel"),
        "class_parallel_margin_cross_entropy":
            lambda v: class_parallel_margin_cross_entropy(v[:, :5].contiguous(), w, y),
    }
    for name, call in calls.items():
        with fwad.dual_level():
            d = fwad.make_dual(x, t)
            with pytest.raises(NotImplementedError, match=f"{name} has no forward-mode"):
                call(d)
        call(x)  # and without a dual input it runs
    _check(lambda v: vocab_parallel_cross_entropy(v, y), x, t)
    _check(lambda v: vocab_parallel_linear_cross_entropy(v, w, y), h, t[:, :5].contiguous())
