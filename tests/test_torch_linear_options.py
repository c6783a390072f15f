"""linear_cross_entropy with the full option set (class weight, sample weight, probability
targets, (..., H) hidden, shift, return_lse, the reductions), against F.cross_entropy on the
materialised float64 logits; and torch's own OpInfo samples of F.linear_cross_entropy."""

from __future__ import annotations

import itertools
import warnings

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from crossent.torch import linear as linear_mod  # noqa: E402
from crossent.torch import linear_cross_entropy  # noqa: E402


def _weighted_ce(logits, target, w, s, eps, red, z_loss=0.0):
    """The documented loss on materialised (R, C) logits: F.cross_entropy per row, times the
    sample weights, with the mean sum_i s_i w_{y_i} l_i / sum_i s_i w_{y_i}."""
    per = F.cross_entropy(logits, target, weight=w, label_smoothing=eps, reduction="none")
    prob = target.is_floating_point()
    valid = torch.ones_like(per, dtype=torch.bool) if prob else target != -100
    s = torch.ones_like(per) if s is None else s
    zrow = z_loss * torch.logsumexp(logits, 1) ** 2 * valid
    per, zrow = per * s, zrow * s
    if red == "none":
        return per + zrow
    if red == "sum":
        return per.sum() + zrow.sum()
    if prob:
        return (per.sum() + zrow.sum()) / s.sum()
    wy = (torch.ones_like(per) if w is None else w[torch.where(valid, target, 0)]) * valid * s
    return per.sum() / wy.sum() + zrow.sum() / (s * valid).sum()


def _make(seed, lead, h=6, v=11, prob=False):
    g = torch.Generator().manual_seed(seed)
    hid = torch.randn(*lead, h, generator=g, dtype=torch.float64)
    w = torch.randn(v, h, generator=g, dtype=torch.float64) / h**0.5
    b = torch.randn(v, generator=g, dtype=torch.float64)
    if prob:
        y = torch.softmax(torch.randn(*lead, v, generator=g, dtype=torch.float64), -1)
    else:
        y = torch.randint(0, v, lead, generator=g)
        y.view(-1)[torch.randperm(y.numel(), generator=g)[: y.numel() // 4]] = -100
        y.view(-1)[0] = 3
    cw = torch.rand(v, generator=g, dtype=torch.float64) + 0.5
    s = torch.rand(*lead, generator=g, dtype=torch.float64)
    return hid, w, b, y, cw, s


COMBOS = list(itertools.product(
    ("mean", "sum", "none"),  # reduction
    (False, True),  # class weight
    (False, True),  # sample weight
    (False, True),  # probability targets
    (False, True),  # shift
))


@pytest.mark.parametrize(("red", "use_cw", "use_sw", "prob", "shift"), COMBOS)
def test_every_combination_matches_materialised(red, use_cw, use_sw, prob, shift):
    hid, w, b, y, cw, s = _make(COMBOS.index((red, use_cw, use_sw, prob, shift)), (2, 5),
                                prob=prob)
    cw = cw if use_cw else None
    s = s if use_sw else None
    eps, zl = 0.1, 1e-3
    leaves = [t.clone().requires_grad_() for t in (hid, w, b)]
    yt = y.clone().requires_grad_() if prob else y
    out, lse = linear_cross_entropy(leaves[0], leaves[1], yt, leaves[2], weight=cw,
                                    sample_weight=s, label_smoothing=eps, z_loss=zl,
                                    reduction=red, shift=shift, chunk_size=3, return_lse=True)
    refs = [t.clone().requires_grad_() for t in (hid, w, b)]
    yr = y.clone().requires_grad_() if prob else y
    logits = refs[0] @ refs[1].T + refs[2]
    if shift:
        logits, yr_s = logits[:, :-1], yr[:, 1:]
        s = None if s is None else s[:, 1:]
    else:
        yr_s = yr
    v = logits.shape[-1]
    rows = logits.reshape(-1, v)
    trows = yr_s.reshape(-1, v) if prob else yr_s.reshape(-1)
    ref = _weighted_ce(rows, trows, cw, None if s is None else s.reshape(-1), eps, red, zl)
    if red == "none":
        ref = ref.reshape(logits.shape[:-1])
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-13)
    want_lse = torch.logsumexp(logits, -1).detach()
    if not prob:
        want_lse = want_lse.masked_fill(yr_s == -100, 0.0)
    torch.testing.assert_close(lse, want_lse, rtol=1e-12, atol=1e-13)
    cot = torch.rand(ref.shape, dtype=torch.float64) + 0.5
    wrt = leaves + ([yt] if prob else [])
    got = torch.autograd.grad(out, wrt, cot)
    want = torch.autograd.grad(ref, refs + ([yr] if prob else []), cot)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-12)


def test_leading_dims_and_float32_kernel():
    hid, w, b, y, cw, s = _make(3, (2, 3, 4), h=8, v=37)
    args = [t.float().requires_grad_() for t in (hid, w, b)]
    out = linear_cross_entropy(args[0], args[1], y, args[2], weight=cw, sample_weight=s,
                               reduction="none", chunk_size=5)
    assert out.shape == (2, 3, 4)
    ref = _weighted_ce((hid @ w.T + b).reshape(-1, 37), y.reshape(-1), cw, s.reshape(-1), 0.0,
                       "none").reshape(2, 3, 4)
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)


def test_shift_reads_the_hidden_states_without_a_copy(monkeypatch):
    hid, w, _, y, _, _ = _make(4, (3, 7))
    hid = hid.float().requires_grad_()
    seen = {}
    real = linear_mod._LinearCrossEntropy.apply

    def spy(h, *rest):
        seen["ptr"] = h.untyped_storage().data_ptr()
        return real(h, *rest)

    monkeypatch.setattr(linear_mod._LinearCrossEntropy, "apply", spy)
    linear_cross_entropy(hid, w.float(), y, shift=True).backward()
    assert seen["ptr"] == hid.untyped_storage().data_ptr()


def test_shift_edge_lengths():
    w = torch.randn(5, 3, dtype=torch.float64)
    one = linear_cross_entropy(torch.randn(2, 1, 3, dtype=torch.float64), w,
                               torch.zeros(2, 1, dtype=torch.long), shift=True,
                               reduction="none")
    assert one.shape == (2, 0)
    assert linear_cross_entropy(torch.randn(2, 1, 3, dtype=torch.float64), w,
                                torch.zeros(2, 1, dtype=torch.long), shift=True).item() == 0.0


def test_torch_keyword_names_and_options():
    hid, w, b, y, cw, _ = _make(5, (6,))
    opts = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=2)
    kw = dict(linear_bias=b, weight=cw, reduction="sum", ignore_index=None,
              label_smoothing=0.05)
    ours = linear_cross_entropy(input=hid, linear_weight=w, target=y, options=opts, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = F.linear_cross_entropy(hid, w, y, options=opts, **kw)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert torch.equal(linear_cross_entropy(hid, lm_head_weight=w, target=y, bias=b),
                       linear_cross_entropy(hid, w, y, b))


def test_return_z_loss_and_lse_order():
    hid, w, _, y, _, _ = _make(6, (4,))
    loss, z, lse = linear_cross_entropy(hid, w, y, z_loss=0.1, return_z_loss=True,
                                        return_lse=True)
    valid = y != -100
    lse_ref = torch.logsumexp(hid @ w.T, 1) * valid
    torch.testing.assert_close(lse, lse_ref)
    torch.testing.assert_close(z, 0.1 * (lse_ref**2).sum() / valid.sum())
    assert not lse.requires_grad


def test_torch_func_and_double_backward_with_weights():
    hid, w, b, y, cw, s = _make(8, (5,))

    def f(h, ww):
        return linear_cross_entropy(h, ww, y, b, weight=cw, sample_weight=s,
                                    label_smoothing=0.1)

    hh, wr = hid.clone().requires_grad_(), w.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(f, (hh, wr))
    gf = torch.func.grad(f, argnums=(0, 1))(hid, w)
    ge = torch.autograd.grad(f(hh, wr), (hh, wr))
    for a, e in zip(gf, ge, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- torch's OpInfo

cmi = pytest.importorskip("torch.testing._internal.common_methods_invocations")


def _op_samples():
    torch.manual_seed(0)
    out = []
    for info in cmi.op_db:
        if info.name != "nn.functional.linear_cross_entropy":
            continue
        samples = list(info.sample_inputs("cpu", torch.float64, requires_grad=True))
        out += [pytest.param(info, s, id=f"{info.variant_test_name or 'default'}-{i}")
                for i, s in enumerate(samples[::3])]
    return out


def _clone(v):
    if isinstance(v, torch.Tensor):
        return v.detach().clone().requires_grad_(v.requires_grad)
    return v


@pytest.mark.parametrize(("info", "sample"), _op_samples())
def test_opinfo_samples(info, sample):
    def run(fn):
        inp, args = _clone(sample.input), [_clone(a) for a in sample.args]
        kwargs = {k: _clone(v) for k, v in sample.kwargs.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(inp, *args, **kwargs)
        wrt = [t for t in [inp, *args, *kwargs.values()]
               if isinstance(t, torch.Tensor) and t.requires_grad]
        cot = torch.rand(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
        return out.detach(), torch.autograd.grad(out, wrt, cot + 0.5, allow_unused=True)

    out, grads = run(linear_cross_entropy)
    target = sample.args[1] if len(sample.args) > 1 else sample.kwargs.get("target")
    if (sample.kwargs.get("reduction", "mean") == "mean" and not target.is_floating_point()
            and bool((target == (sample.kwargs.get("ignore_index") or -100)).all())):
        assert out.item() == 0.0  # documented: an all-ignored mean is 0, not NaN
        return
    ref, rgrads = run(F.linear_cross_entropy)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12, equal_nan=True)
    for g, r in zip(grads, rgrads, strict=True):
        if r is None or g is None:
            assert (r is None or not r.any()) and (g is None or not g.any())
        else:
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
