"""crossent.torch.linear_cross_entropy against the materialised F.cross_entropy(h @ W.T + b)."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from crossent.torch import choose_chunk_size, linear_cross_entropy  # noqa: E402


def _data(n, h, v, seed, dtype=torch.float32, ignore=0.0):
    g = torch.Generator().manual_seed(seed)
    hid = torch.randn(n, h, generator=g).to(dtype)
    w = (torch.randn(v, h, generator=g) / h**0.5).to(dtype)
    b = torch.randn(v, generator=g).to(dtype)
    y = torch.randint(0, v, (n,), generator=g)
    if ignore:
        y[torch.rand(n, generator=g) < ignore] = -100
        y[0] = 1
    return hid, w, b, y


def _materialised(hid, w, b, y, go=None, z_loss=0.0, softcap=None, **kw):
    """Reference in float64: F.cross_entropy on the full logits (+ the documented z-loss)."""
    ts = [t.detach().double().requires_grad_(True) for t in (hid, w)]
    tb = None if b is None else b.detach().double().requires_grad_(True)
    logits = ts[0] @ ts[1].T + (0 if tb is None else tb)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    loss = F.cross_entropy(logits, y, **kw)
    if z_loss:
        valid = y != kw.get("ignore_index", -100)
        zrow = z_loss * torch.logsumexp(logits, 1) ** 2 * valid
        red = kw.get("reduction", "mean")
        loss = loss + {"mean": zrow.sum() / valid.sum(), "sum": zrow.sum(), "none": zrow}[red]
    go = torch.ones_like(loss) if go is None else go.double()
    inputs = ts + ([] if tb is None else [tb])
    grads = torch.autograd.grad(loss, inputs, go)
    return loss.detach(), grads


def _ours(hid, w, b, y, go=None, **kw):
    ts = [t.detach().clone().requires_grad_(True) for t in (hid, w)]
    tb = None if b is None else b.detach().clone().requires_grad_(True)
    loss = linear_cross_entropy(ts[0], ts[1], y, tb, **kw)
    go = torch.ones_like(loss) if go is None else go.to(loss.dtype)
    inputs = ts + ([] if tb is None else [tb])
    grads = torch.autograd.grad(loss, inputs, go)
    return loss.detach(), grads


def _close(a, b, rtol=2e-5, atol=2e-6):
    torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("red,bias,chunk", list(itertools.product(
    ["mean", "sum", "none"], [True, False], [1, 5, 64, None])))
def test_matches_materialised(kernel_backend, red, bias, chunk):
    hid, w, b, y = _data(23, 16, 37, seed=1, ignore=0.2)
    b = b if bias else None
    go = torch.randn(23) if red == "none" else None
    ref, gref = _materialised(hid, w, b, y, go, reduction=red)
    out, g = _ours(hid, w, b, y, go, reduction=red, chunk_size=chunk)
    _close(out, ref)
    for a, r in zip(g, gref, strict=True):
        _close(a, r)


def test_options_match_materialised(kernel_backend):
    hid, w, b, y = _data(19, 12, 2500, seed=2, ignore=0.2)
    for kw in (dict(label_smoothing=0.1), dict(z_loss=1e-3), dict(softcap=2.0),
               dict(label_smoothing=0.2, z_loss=1e-2, softcap=3.0, reduction="sum"),
               dict(ignore_index=5, reduction="none")):
        go = torch.randn(19) if kw.get("reduction") == "none" else None
        t = torch.where(y == -100, kw.get("ignore_index", -100), y)
        ref, gref = _materialised(hid, w, b, t, go, **kw)
        out, g = _ours(hid, w, b, t, go, chunk_size=4, **kw)
        _close(out, ref)
        for a, r in zip(g, gref, strict=True):
            _close(a, r)


def test_chunked_equals_unchunked(kernel_backend):
    hid, w, b, y = _data(40, 8, 300, seed=3, ignore=0.1)
    one, g1 = _ours(hid, w, b, y, chunk_size=40)
    for chunk in (1, 7, 39):
        out, g = _ours(hid, w, b, y, chunk_size=chunk)
        torch.testing.assert_close(out, one, rtol=1e-6, atol=1e-6)
        for a, r in zip(g, g1, strict=True):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_batched_hidden_and_reduction_none_shape(kernel_backend):
    hid, w, b, y = _data(12, 8, 30, seed=4)
    h3, y3 = hid.reshape(3, 4, 8), y.reshape(3, 4)
    out = linear_cross_entropy(h3, w, y3, b, reduction="none", chunk_size=5)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out, F.cross_entropy((h3 @ w.T + b).reshape(12, 30), y,
                                                    reduction="none").reshape(3, 4))


def test_bfloat16(kernel_backend):
    hid, w, b, y = _data(32, 16, 500, seed=5, dtype=torch.bfloat16)
    ref, gref = _materialised(hid, w, b, y)  # float64 on the same rounded inputs
    out, g = _ours(hid, w, b, y, chunk_size=8)
    assert out.dtype == torch.bfloat16 and all(t.dtype == torch.bfloat16 for t in g)
    _close(out, ref, rtol=2e-2, atol=2e-2)
    for a, r in zip(g, gref, strict=True):
        _close(a, r, rtol=5e-2, atol=2e-3)


def test_all_ignored_and_no_grad(kernel_backend):
    hid, w, b, y = _data(6, 4, 9, seed=6)
    hg = hid.clone().requires_grad_(True)
    loss = linear_cross_entropy(hg, w, torch.full((6,), -100), b)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(hg.grad == 0)
    # no rows at all: 0, and zero gradients of the right shapes
    wg = w.clone().requires_grad_(True)
    empty = linear_cross_entropy(torch.zeros(0, 4), wg, torch.zeros(0, dtype=torch.long))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(wg.grad, torch.zeros_like(w))
    with torch.no_grad():
        out = linear_cross_entropy(hid, w, y, b, label_smoothing=0.1, chunk_size=4)
    torch.testing.assert_close(out, F.cross_entropy(hid @ w.T + b, y, label_smoothing=0.1))


def test_gradcheck_float64(kernel_backend):
    g = torch.Generator().manual_seed(7)
    hid = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, -100, 1, 2])
    for kw in (dict(chunk_size=2, label_smoothing=0.1, z_loss=0.05, softcap=2.0),
               dict(chunk_size=3, reduction="none")):
        assert torch.autograd.gradcheck(
            lambda a, c, d, kw=kw: linear_cross_entropy(a, c, y, d, **kw), (hid, w, b))


def test_inputs_not_mutated(kernel_backend):
    hid, w, b, y = _data(10, 6, 20, seed=8)
    copies = [t.clone() for t in (hid, w, b, y)]
    hg, wg, bg = (t.clone().requires_grad_(True) for t in (hid, w, b))
    linear_cross_entropy(hg, wg, y, bg, chunk_size=3).backward()
    for t, c in zip((hg, wg, bg, y), copies, strict=True):
        assert torch.equal(t, c)


def test_validation_errors():
    hid, w, b, y = _data(4, 3, 5, seed=9)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(hid, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(hid, w[:, :2], y)
    with pytest.raises(ValueError, match="bias"):
        linear_cross_entropy(hid, w, y, b[:4])
    with pytest.raises(ValueError, match="target"):
        linear_cross_entropy(hid, w, y[:3])
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(hid, w, y, reduction="batchmean")
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        linear_cross_entropy(hid, w, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(TypeError, match="dtype"):
        linear_cross_entropy(hid, w.double(), y)
    with pytest.raises(ValueError, match=r"target \(probability\) must have shape \(4, 5\)"):
        linear_cross_entropy(hid, w, y.float())
    with pytest.raises(TypeError, match="target"):
        linear_cross_entropy(hid, w, y.bool())
    with pytest.raises(ValueError, match="sample_weight"):
        linear_cross_entropy(hid, w, y, sample_weight=torch.ones(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        linear_cross_entropy(hid, w, y, weight=torch.ones(4))
    with pytest.raises(TypeError, match="class weight"):
        linear_cross_entropy(hid, weight=w, target=y)  # the old keyword of the linear matrix
    with pytest.raises(TypeError, match="linear_weight"):
        linear_cross_entropy(hid, w, y, linear_weight=w)
    with pytest.raises(ValueError, match="shift=True"):
        linear_cross_entropy(hid[0], w, y[0], shift=True)
    with pytest.raises(ValueError, match="probabilities"):
        linear_cross_entropy(hid, w, torch.full((4, 5), 2.0))


def test_choose_chunk_size():
    assert choose_chunk_size(4096, 32768, 512) * 32768 * 4 <= 4096 * 32768 * 4 // 10
    assert choose_chunk_size(10, 1000, 64) == 10  # small problems: one chunk
    assert choose_chunk_size(1, 256000, 4096) == 1
    big = choose_chunk_size(100000, 256000, 4096)
    assert 128 <= big and big * 256000 * 4 <= 256 * 2**20
    assert choose_chunk_size(1000, 100, 8, budget_bytes=4000) == 10


@pytest.mark.parametrize("n,v,h,itemsize", [(8192, 128256, 4096, 2), (8192, 128256, 4096, 4),
                                            (16384, 262144, 8192, 2), (65536, 32000, 2048, 2)])
def test_choose_chunk_size_on_cuda_keeps_the_chunk_under_the_gpu_target(n, v, h, itemsize):
    rows = choose_chunk_size(n, v, h, itemsize=itemsize, device="cuda")
    assert rows % 64 == 0 and 256 <= rows <= 4096
    assert rows * v <= 0.05 * n * v  # the chunk's logits: under 0.05x the full logits
    assert choose_chunk_size(300, v, h, itemsize=itemsize, device="cuda") == 256
    assert choose_chunk_size(100, v, h, itemsize=itemsize, device="cuda") == 100


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_materialised():
    hid, w, b, y = (t.cuda() for t in _data(64, 32, 3000, seed=10, ignore=0.1))
    ref, gref = _materialised(hid, w, b, y, label_smoothing=0.1)
    out, g = _ours(hid, w, b, y, chunk_size=16, label_smoothing=0.1)
    _close(out, ref, rtol=1e-4, atol=1e-5)
    for a, r in zip(g, gref, strict=True):
        _close(a, r, rtol=1e-4, atol=1e-5)


def test_backward_twice_through_a_retained_graph(kernel_backend):
    hid, w, b, y = _data(9, 4, 11, seed=11)
    hg, wg = hid.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = linear_cross_entropy(hg, wg, y, b, chunk_size=4)
    loss.backward(retain_graph=True)
    (2 * loss).backward()  # the first backward consumed the precomputed gradients: recomputed
    rh, rw = (t.double().requires_grad_(True) for t in (hid, w))
    gh, gw = torch.autograd.grad(F.cross_entropy(rh @ rw.T + b.double(), y), (rh, rw))
    _close(hg.grad, 3 * gh)
    _close(wg.grad, 3 * gw)


@pytest.mark.parametrize("red", ["mean", "none"])
def test_accum_dtype_of_the_weight_gradient(kernel_backend, monkeypatch, red):
    """bf16 weights: the default sums grad_W in a float32 buffer; accum_dtype=bfloat16 keeps
    it in the weight's dtype (one in-place addmm per chunk). Both stay within bf16 rounding
    of the float64 reference over 8 chunks; float32 weights ignore the option."""
    from crossent.torch import _common

    seen = []
    add = _common.ChunkGrads.add

    def spy(self, *args):
        add(self, *args)
        seen.append(self.gw.dtype if self.gw is not None else None)

    monkeypatch.setattr(_common.ChunkGrads, "add", spy)
    hid, w, b, y = _data(64, 16, 50, seed=21, dtype=torch.bfloat16, ignore=0.1)
    go = torch.rand(64) if red == "none" else None
    ref, (gh_ref, gw_ref, gb_ref) = _materialised(hid, w, b, y, go, reduction=red)
    for accum, want in ((None, torch.float32), (torch.float32, torch.float32),
                        (torch.bfloat16, torch.bfloat16)):
        seen.clear()
        ts = [t.clone().requires_grad_(True) for t in (hid, w, b)]
        loss = linear_cross_entropy(*ts[:2], y, ts[2], chunk_size=8, reduction=red,
                                    accum_dtype=accum)
        loss.backward(None if go is None else go.to(loss.dtype))
        assert seen and set(seen) == {want}, (accum, seen)
        assert ts[1].grad.dtype == ts[2].grad.dtype == torch.bfloat16
        for got, exp in zip([t.grad for t in ts], (gh_ref, gw_ref, gb_ref), strict=True):
            err = (got.double() - exp).norm() / exp.norm()
            assert err < 2e-2, (accum, float(err))
    with pytest.raises(ValueError, match=r"accum_dtype.*torch.bfloat16.*got torch.float16"):
        linear_cross_entropy(hid, w, y, accum_dtype=torch.float16)
    with pytest.raises(ValueError, match=r"accum_dtype must be None.*got 'bf16'"):
        linear_cross_entropy(hid, w, y, accum_dtype="bf16")
    seen.clear()
    h32, w32 = hid.float().requires_grad_(True), w.float().requires_grad_(True)
    linear_cross_entropy(h32, w32, y, chunk_size=8, accum_dtype=torch.bfloat16).backward()
    assert set(seen) == {torch.float32}  # float32 weights: the option does not apply
