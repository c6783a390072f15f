"""Autocast's rule for losses, on every crossent loss that takes torch tensors: inside
``torch.autocast`` the loss comes back in float32, computed in float32 from the half-precision
inputs (PyTorch's losses are on autocast's float32 list), and the gradients come back in the
inputs' dtypes; ``linear_cross_entropy`` takes the autocast-dtype hidden state with a float32
weight, cast as ``F.linear`` casts it. The reference is PyTorch's own op under the same
autocast region."""

import pytest
import torch
import torch.nn.functional as F

import crossent
import crossent.torch as ct

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HALF = {"cpu": [torch.bfloat16], "cuda": [torch.float16, torch.bfloat16]}
CASES = [(d, h) for d in DEVICES for h in HALF[d]]


def _inputs(device, half):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(16, 6, generator=gen).to(device, half)
    a = torch.randn(16, 6, generator=gen).to(device, half)
    b = torch.randn(16, 6, generator=gen).to(device, half)
    y = torch.randint(0, 6, (16,), generator=gen).to(device)
    t = torch.rand(16, 6, generator=gen).to(device)
    sign = torch.sign(torch.randn(16, generator=gen)).to(device)
    return x, a, b, y, t, sign


# (name, crossent's loss, PyTorch's counterpart), each taking (x, a, b, y, t, sign); x is the
# input whose gradient is compared
PAIRS = [
    ("cross_entropy", lambda x, a, b, y, t, s: ct.cross_entropy(x, y, label_smoothing=0.1),
     lambda x, a, b, y, t, s: F.cross_entropy(x, y, label_smoothing=0.1)),
    ("softmax_cross_entropy", lambda x, a, b, y, t, s: crossent.softmax_cross_entropy(x, y),
     lambda x, a, b, y, t, s: F.cross_entropy(x, y)),
    ("sigmoid_cross_entropy", lambda x, a, b, y, t, s: crossent.sigmoid_cross_entropy(x, t),
     lambda x, a, b, y, t, s: F.binary_cross_entropy_with_logits(x, t)),
    ("multi_margin_loss", lambda x, a, b, y, t, s: crossent.multi_margin_loss(x, y),
     lambda x, a, b, y, t, s: F.multi_margin_loss(x, y)),
    ("distillation_loss",
     lambda x, a, b, y, t, s: crossent.distillation_loss(x, a, temperature=2.0),
     # x / T in float32 (autocast would divide in half precision before the float32 op)
     lambda x, a, b, y, t, s: 4.0 * F.kl_div(F.log_softmax(x.float() / 2.0, 1),
                                            F.log_softmax(a.float() / 2.0, 1),
                                            log_target=True, reduction="batchmean")),
    ("triplet_margin_loss", lambda x, a, b, y, t, s: crossent.triplet_margin_loss(x, a, b),
     lambda x, a, b, y, t, s: F.triplet_margin_loss(x, a, b)),
    ("margin_ranking_loss",
     lambda x, a, b, y, t, s: crossent.margin_ranking_loss(x[:, 0], a[:, 0], s, margin=0.1),
     lambda x, a, b, y, t, s: F.margin_ranking_loss(x[:, 0], a[:, 0], s, margin=0.1)),
    ("cosine_embedding_loss",
     lambda x, a, b, y, t, s: crossent.cosine_embedding_loss(x, a, s),
     lambda x, a, b, y, t, s: F.cosine_embedding_loss(x, a, s)),
]


@pytest.mark.parametrize("device,half", CASES, ids=str)
@pytest.mark.parametrize("name,ours,theirs", PAIRS, ids=[p[0] for p in PAIRS])
def test_losses_follow_autocasts_float32_rule(device, half, name, ours, theirs):
    x, a, b, y, t, s = _inputs(device, half)
    xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast(device, dtype=half):
        out = ours(xo, a, b, y, t, s)
        ref = theirs(xt, a, b, y, t, s)
    assert ref.dtype == torch.float32  # the rule, as PyTorch applies it
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.backward()
    ref.backward()
    assert xo.grad.dtype == half
    torch.testing.assert_close(xo.grad, xt.grad)


@pytest.mark.parametrize("device,half", CASES, ids=str)
def test_generic_losses_compute_in_float32(device, half):
    """Losses without a PyTorch counterpart get the same rule: the value of the float32
    inputs, in float32."""
    x, a, _, y, t, _ = _inputs(device, half)
    for fn, args in [(crossent.sigmoid_focal_loss, (x, t)),
                     (crossent.softmax_focal_loss, (x, y)),
                     (crossent.kl_divergence, (torch.softmax(a.float(), 1), torch.softmax(x, 1)))]:
        with torch.autocast(device, dtype=half):
            out = fn(*args)
        ref = fn(*(v.float() if v.is_floating_point() else v for v in args))
        assert out.dtype == torch.float32, fn.__name__
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device,half", CASES, ids=str)
def test_linear_cross_entropy_casts_like_f_linear(device, half):
    gen = torch.Generator().manual_seed(8)
    h = torch.randn(20, 8, generator=gen).to(device, half)
    w = torch.randn(11, 8, generator=gen).to(device)  # float32 weight, as in a mixed model
    bias = torch.randn(11, generator=gen).to(device)
    y = torch.randint(0, 11, (20,), generator=gen).to(device)
    ho, ht = h.clone().requires_grad_(), h.clone().requires_grad_()
    wo, wt = w.clone().requires_grad_(), w.clone().requires_grad_()
    bo, bt = bias.clone().requires_grad_(), bias.clone().requires_grad_()
    with torch.autocast(device, dtype=half):
        out = ct.linear_cross_entropy(ho, wo, y, bo, chunk_size=7)
        ref = F.cross_entropy(F.linear(ht, wt, bt), y)
    assert out.dtype == ref.dtype == torch.float32
    # the matmul runs in the autocast dtype on both sides; the chunking changes its rounding
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    out.backward()
    ref.backward()
    assert ho.grad.dtype == half and wo.grad.dtype == torch.float32
    assert bo.grad.dtype == torch.float32
    for g, r in ((ho.grad, ht.grad), (wo.grad, wt.grad), (bo.grad, bt.grad)):
        torch.testing.assert_close(g.float(), r.float(), rtol=5e-2, atol=5e-3)


def test_outside_autocast_dtypes_are_kept():
    """No autocast region: a bfloat16 input gives a bfloat16 loss (computed in float32)."""
    x, _, _, _, t, _ = _inputs("cpu", torch.bfloat16)
    out = crossent.sigmoid_cross_entropy(x, t)
    assert out.dtype == torch.bfloat16
    ref = F.binary_cross_entropy_with_logits(x.float(), t)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
