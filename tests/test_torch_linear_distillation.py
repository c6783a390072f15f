"""crossent.torch.linear_distillation_loss against the materialised losses: crossent's
distillation_loss (itself held to F.kl_div) and softmax cross-entropy, and a float64
restatement of the generalized JSD."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import crossent  # noqa: E402
from crossent.torch import choose_distill_chunk, linear_distillation_loss  # noqa: E402


def _make(seed, lead=(3, 5), hs=6, ht=9, v=13, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    sh = torch.randn(*lead, hs, generator=g, dtype=dtype)
    sw = torch.randn(v, hs, generator=g, dtype=dtype) / hs**0.5
    sb = torch.randn(v, generator=g, dtype=dtype)
    th = torch.randn(*lead, ht, generator=g, dtype=dtype)
    tw = torch.randn(v, ht, generator=g, dtype=dtype) / ht**0.5
    tb = torch.randn(v, generator=g, dtype=dtype)
    y = torch.randint(0, v, lead, generator=g)
    y.view(-1)[::4] = -100
    return sh, sw, sb, th, tw, tb, y


def _jsd(s, t, beta, temp):
    """float64 generalized JSD of GKD: beta KL(p || m) + (1 - beta) KL(q || m)."""
    p, q = torch.softmax(t / temp, -1), torch.softmax(s / temp, -1)
    m = beta * p + (1 - beta) * q
    return (beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1))


def _reference(sh, sw, sb, th, tw, tb, y, temp, hard, beta, red):
    s = sh @ sw.T + sb
    t = (th @ tw.T + tb).detach()
    v = s.shape[-1]
    if beta is None:
        soft = crossent.distillation_loss(s.reshape(-1, v), t.reshape(-1, v),
                                          temperature=temp, reduction="none")
    else:
        soft = _jsd(s.reshape(-1, v), t.reshape(-1, v), beta, temp) * temp**2
    rows = (1 - hard) * soft
    yf = None if y is None else y.reshape(-1)
    if hard:
        rows = rows + hard * F.cross_entropy(s.reshape(-1, v), yf, reduction="none")
    if yf is not None:
        rows = torch.where(yf != -100, rows, torch.zeros_like(rows))
    if red == "none":
        return rows.reshape(sh.shape[:-1])
    if red == "sum":
        return rows.sum()
    return rows.sum() / (rows.numel() if yf is None else (yf != -100).sum())


CASES = list(itertools.product((1.0, 2.5), (0.0, 0.3), (None, 0.4), ("mean", "sum", "none")))


@pytest.mark.parametrize(("temp", "hard", "beta", "red"), CASES)
def test_matches_materialised_float64(temp, hard, beta, red):
    sh, sw, sb, th, tw, tb, y = _make(CASES.index((temp, hard, beta, red)))
    ours_in = [t.clone().requires_grad_() for t in (sh, sw, sb)]
    ref_in = [t.clone().requires_grad_() for t in (sh, sw, sb)]
    teach = [t.clone().requires_grad_() for t in (th, tw, tb)]
    out = linear_distillation_loss(ours_in[0], ours_in[1], teach[0], teach[1],
                                   temperature=temp, target=y, hard_weight=hard, beta=beta,
                                   student_bias=ours_in[2], teacher_bias=teach[2],
                                   chunk_size=4, reduction=red)
    ref = _reference(*ref_in, th, tw, tb, y, temp, hard, beta, red)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-13)
    cot = torch.rand(ref.shape, dtype=torch.float64) + 0.5
    got = torch.autograd.grad(out, ours_in, cot)
    want = torch.autograd.grad(ref, ref_in, cot)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-12)
    # the teacher is detached: its tensors take no part in the graph
    assert all(t.grad is None for t in teach)


def test_float32_within_1e6_of_distillation_loss():
    sh, sw, _, th, tw, _, _ = _make(1, lead=(64,), hs=32, ht=48, v=301, dtype=torch.float32)
    for beta in (None,):
        ours = linear_distillation_loss(sh, sw, th, tw, temperature=2.0, beta=beta)
        ref = crossent.distillation_loss(sh @ sw.T, th @ tw.T, temperature=2.0)
        assert abs(ours.item() - ref.item()) <= 1e-6 * max(1.0, abs(ref.item()))


def test_without_target_all_rows_count_and_no_grad_path():
    sh, sw, _, th, tw, _, _ = _make(2)
    with torch.no_grad():
        out = linear_distillation_loss(sh, sw, th, tw, temperature=3.0, chunk_size=2)
    ref = crossent.distillation_loss((sh @ sw.T).reshape(-1, 13), (th @ tw.T).reshape(-1, 13),
                                     temperature=3.0)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-13)


def test_ignored_rows_with_non_finite_activations_give_no_nan():
    sh, sw, _, th, tw, _, y = _make(3, lead=(6,))
    sh[0] = float("inf")
    y[0] = -100
    leaf = sh.clone().requires_grad_()
    w = sw.clone().requires_grad_()
    linear_distillation_loss(leaf, w, th, tw, target=y, hard_weight=0.5).backward()
    assert torch.isfinite(w.grad).all()


def test_double_backward_and_torch_func():
    sh, sw, sb, th, tw, tb, y = _make(4, lead=(4,))

    def f(a, b):
        return linear_distillation_loss(a, b, th, tw, target=y, hard_weight=0.25, beta=0.3,
                                        temperature=1.5, chunk_size=3)

    a, b = sh.clone().requires_grad_(), sw.clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (a, b))
    assert torch.autograd.gradgradcheck(f, (a, b))
    gf = torch.func.grad(f, argnums=(0, 1))(sh, sw)
    ge = torch.autograd.grad(f(a, b), (a, b))
    for x, e in zip(gf, ge, strict=True):
        torch.testing.assert_close(x, e, rtol=1e-12, atol=1e-13)


def test_bfloat16_student_accumulates_in_float32():
    sh, sw, _, th, tw, _, y = _make(5, lead=(32,), hs=16, ht=16, v=97, dtype=torch.float32)
    sb16, wb16 = sh.bfloat16().requires_grad_(), sw.bfloat16().requires_grad_()
    out = linear_distillation_loss(sb16, wb16, th.bfloat16(), tw.bfloat16(), target=y,
                                   hard_weight=0.5, temperature=2.0)
    assert out.dtype == torch.bfloat16
    ref = _reference(sb16.float(), wb16.float(), torch.zeros(97), th.bfloat16().float(),
                     tw.bfloat16().float(), torch.zeros(97), y, 2.0, 0.5, None, "mean")
    assert abs(out.float().item() - ref.item()) < 2e-2
    out.backward()
    assert wb16.grad.dtype == torch.bfloat16 and torch.isfinite(wb16.grad.float()).all()


def test_errors_name_the_argument():
    sh, sw, _, th, tw, _, y = _make(6, lead=(4,))
    bad = [
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(hard_weight=0.5), ValueError, "target"),
        (dict(hard_weight=1.5, target=y), ValueError, "hard_weight"),
        (dict(beta=1.0), ValueError, "beta"),
        (dict(reduction="batchmean"), ValueError, "reduction"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(target=y[:3]), ValueError, "target"),
        (dict(target=y.float()), TypeError, "target"),
        (dict(target=torch.full((4,), 13)), ValueError, r"\[0, 13\)"),
    ]
    for kw, err, match in bad:
        with pytest.raises(err, match=match):
            linear_distillation_loss(sh, sw, th, tw, **kw)
    with pytest.raises(ValueError, match="vocabulary"):
        linear_distillation_loss(sh, sw, th, tw[:5])
    with pytest.raises(ValueError, match="leading shape"):
        linear_distillation_loss(sh, sw, th[:3], tw)
    with pytest.raises(TypeError, match="dtype"):
        linear_distillation_loss(sh, sw.float(), th, tw)


def test_default_chunk_meets_the_memory_budget():
    n, v = 4096, 32000
    rows = choose_distill_chunk(n, v)
    assert rows * v * 4 * 6 <= 0.1 * n * v * 4
    assert choose_distill_chunk(0, v) == 1 and choose_distill_chunk(3, v) == 1
