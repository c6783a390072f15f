"""The Triton row kernel (``impl="triton"``) against ``F.cross_entropy`` in float64.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors (the suite sets
``TRITON_INTERPRET=1`` before Triton is imported, see conftest.py); on a machine with a GPU the
same cases run compiled on CUDA tensors (``pytest -m cuda``) and the CPU ones skip. Without
Triton the module skips.
"""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="the Triton kernel's tests need triton (pip install triton)")
F = torch.nn.functional

from crossent.torch import _triton_rows, cross_entropy, linear_cross_entropy  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", id="interpreter"),
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")]),
]
# float32 computes as the float64 reference does up to rounding; float16 / bfloat16 logits are
# rounded inputs (the reference sees the same rounded values), a loss in their dtype and a
# gradient rounded once to it.
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float16: dict(rtol=2e-3, atol=2e-4),
       torch.bfloat16: dict(rtol=1.6e-2, atol=2e-3)}


@pytest.fixture
def device(request):
    dev = request.param
    why = _triton_rows.why_not(torch.empty(1, 1)) if dev == "cpu" else None
    if why is not None:
        pytest.skip(f"Triton cannot run CPU tensors here: {why}")
    return dev


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 classes, so that the vocabularies below span several, and end mid-block."""
    monkeypatch.setattr(_triton_rows, "MAX_BLOCK", 16)


def reference(x, target, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
              softcap=None, reduction="mean", sample_weight=None, grad_output=None):
    """The loss and its gradient w.r.t. ``x``, in float64, from F.cross_entropy and autograd:
    softcap applied first, the z-loss ``z_loss * lse**2`` on each counted row (averaged over
    them for "mean"), ignored rows zeroed before anything reads them."""
    x64 = x.detach().double().requires_grad_(True)
    prob = target.is_floating_point()
    keep = torch.ones(x.shape[0], dtype=torch.bool) if prob else target.cpu() != ignore_index
    keep = keep.to(x.device)
    z = softcap * torch.tanh(x64 / softcap) if softcap else x64
    z = torch.where(keep.unsqueeze(1), z, torch.zeros_like(z))
    t = target.double() if prob else target
    w = None if weight is None else weight.double()
    main = F.cross_entropy(z, t, weight=w, ignore_index=ignore_index,
                           label_smoothing=label_smoothing, reduction="none")
    lse = torch.logsumexp(z, dim=1)
    zrow = torch.where(keep, z_loss * lse * lse, torch.zeros_like(lse))
    s = torch.ones_like(lse) if sample_weight is None else sample_weight.double()
    if reduction == "none":
        loss = s * (main + zrow)
    elif reduction == "sum":
        loss = (s * (main + zrow)).sum()
    else:
        if prob:
            den = s.sum()
        else:
            wy = torch.ones_like(lse) if w is None else w[torch.where(keep, target, 0)]
            den = (s * wy * keep).sum()
        loss = (s * main).sum() / den + (s * zrow).sum() / (s * keep).sum()
    go = torch.ones_like(loss) if grad_output is None else grad_output.double()
    (g,) = torch.autograd.grad(loss, x64, go)
    return loss, g


def ours(x, target, grad_output=None, **kw):
    xl = x.detach().clone().requires_grad_(True)
    loss = cross_entropy(xl, target, impl="triton", **kw)
    go = torch.ones_like(loss) if grad_output is None else grad_output.to(loss.dtype)
    (g,) = torch.autograd.grad(loss, xl, go)
    return loss, g


def _data(n, v, dtype, device, gen, prob, neg_inf=True):
    x = (torch.randn(n, v, generator=gen) * 3).to(dtype)
    y = torch.randint(0, v, (n,), generator=gen)
    if neg_inf and v > 3:
        x[1, : v // 2] = float("-inf")  # padding columns ahead of the row's max
        y[1] = v - 1
        x[2] = float("-inf")  # a padding row of -inf only, ignored
        y[2] = -100
    y[n - 1] = -100
    if prob:
        t = torch.softmax(torch.randn(n, v, generator=gen), dim=1).to(dtype)
        if neg_inf and v > 3:
            x[1:3] = torch.randn(2, v, generator=gen).to(dtype)  # 0 * -inf is NaN for probabilities
        return x.to(device), t.to(device)
    return x.to(device), y.to(device)


OPTIONS = list(itertools.product([False, True], [0.0, 0.1], [0.0, 1e-2], [None, 4.0]))


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("prob", [False, True], ids=["labels", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_option_matches_pytorch(device, small_blocks, dtype, prob, reduction):
    gen = torch.Generator().manual_seed(7)
    n, v = 6, 37  # 3 blocks of 16, the last one 5 wide
    for use_w, eps, zl, cap in OPTIONS:
        x, t = _data(n, v, dtype, device, gen, prob)
        w = (torch.rand(v, generator=gen) + 0.1).to(device)
        kw = dict(weight=w if use_w else None, label_smoothing=eps, z_loss=zl, softcap=cap,
                  reduction=reduction)
        go = torch.randn(n, generator=gen).to(device) if reduction == "none" else None
        ref, gref = reference(x, t, grad_output=go, **kw)
        out, g = ours(x, t, go, **kw)
        assert out.dtype == dtype and g.dtype == dtype and out.shape == ref.shape
        msg = str(dict(kw, weight=use_w))
        assert torch.isfinite(g).all(), msg
        torch.testing.assert_close(out.double(), ref, **TOL[dtype], msg=msg)
        torch.testing.assert_close(g.double(), gref, **TOL[dtype], msg=msg)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("prob", [False, True], ids=["labels", "probabilities"])
def test_sample_weights_use_per_row_scales(device, small_blocks, prob):
    gen = torch.Generator().manual_seed(8)
    x, t = _data(7, 40, torch.float32, device, gen, prob)
    sw = torch.rand(7, generator=gen).to(device)
    w = (torch.rand(40, generator=gen) + 0.1).to(device)
    for red in ("mean", "sum", "none"):
        kw = dict(weight=w, label_smoothing=0.1, z_loss=1e-2, reduction=red)
        go = torch.randn(7, generator=gen).to(device) if red == "none" else None
        ref, gref = reference(x, t, grad_output=go, sample_weight=sw, **kw)
        out, g = ours(x, t, go, sample_weight=sw, **kw)
        torch.testing.assert_close(out.double(), ref, **TOL[torch.float32])
        torch.testing.assert_close(g.double(), gref, **TOL[torch.float32])


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("v", [1, 15, 16, 17, 33, 100])
def test_vocabulary_edges_of_the_blocks(device, small_blocks, v):
    gen = torch.Generator().manual_seed(v)
    x = (torch.randn(5, v, generator=gen) * 4).to(device)
    y = torch.randint(0, v, (5,), generator=gen).to(device)
    for kw in (dict(), dict(label_smoothing=0.2, z_loss=1e-3)):
        ref, gref = reference(x, y, **kw)
        out, g = ours(x, y, **kw)
        torch.testing.assert_close(out.double(), ref, **TOL[torch.float32])
        torch.testing.assert_close(g.double(), gref, **TOL[torch.float32])


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_vocabulary_of_262144_with_the_default_block(device, dtype):
    assert _triton_rows.MAX_BLOCK == 4096  # 64 blocks of the size the GPU runs
    gen = torch.Generator().manual_seed(9)
    v = 262144
    x = (torch.randn(2, v, generator=gen) * 2).to(dtype).to(device)
    y = torch.tensor([5, v - 1]).to(device)
    ref, gref = reference(x, y, label_smoothing=0.1, z_loss=1e-4)
    out, g = ours(x, y, label_smoothing=0.1, z_loss=1e-4)
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    # the gradient of a 262144-way softmax is ~4e-6 per class: compare it at that scale
    torch.testing.assert_close(g.double(), gref, rtol=TOL[dtype]["rtol"], atol=1e-8)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_all_ignored_batch_gives_zero(device, small_blocks):
    x = torch.randn(4, 20).to(device)
    x[0] = float("-inf")
    y = torch.full((4,), -100).to(device)
    for kw in (dict(), dict(weight=torch.rand(20).to(device), label_smoothing=0.2,
                            z_loss=1e-2, softcap=3.0)):
        for red in ("mean", "sum"):
            out, g = ours(x, y, reduction=red, **kw)
            assert out.item() == 0.0 and torch.all(g == 0)
        out, g = ours(x, y, reduction="none", **kw)
        assert torch.all(out == 0) and torch.all(g == 0)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_inplace_backward_writes_into_the_logits(device, small_blocks):
    gen = torch.Generator().manual_seed(10)
    x, y = _data(6, 50, torch.float32, device, gen, prob=False)
    ref, gref = reference(x, y, label_smoothing=0.1)
    h = x.clone().requires_grad_(True)
    logits = h * 1.0  # an intermediate nobody reads afterwards
    ptr = logits.data_ptr()
    loss = cross_entropy(logits, y, label_smoothing=0.1, inplace_backward=True, impl="triton")
    (g,) = torch.autograd.grad(loss, logits)
    assert g.data_ptr() == ptr
    torch.testing.assert_close(loss.double(), ref, **TOL[torch.float32])
    torch.testing.assert_close(g.double(), gref, **TOL[torch.float32])


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_no_grad_forward_and_probability_target_gradient(device, small_blocks):
    gen = torch.Generator().manual_seed(11)
    x, p = _data(5, 30, torch.float32, device, gen, prob=True)
    with torch.no_grad():
        out = cross_entropy(x, p, label_smoothing=0.1, impl="triton")
    torch.testing.assert_close(out.double(), reference(x, p, label_smoothing=0.1)[0],
                               **TOL[torch.float32])
    # the gradient w.r.t. the probabilities themselves
    pl = p.clone().requires_grad_(True)
    (gp,) = torch.autograd.grad(cross_entropy(x, pl, impl="triton"), pl)
    p64 = p.double().requires_grad_(True)
    (gref,) = torch.autograd.grad(F.cross_entropy(x.double(), p64), p64)
    torch.testing.assert_close(gp.double(), gref, **TOL[torch.float32])


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_linear_cross_entropy_on_triton(device, small_blocks, dtype):
    gen = torch.Generator().manual_seed(12)
    n, h, v = 10, 8, 45
    hid = torch.randn(n, h, generator=gen).to(dtype).to(device)
    w = (torch.randn(v, h, generator=gen) / 3).to(dtype).to(device)
    y = torch.randint(0, v, (n,), generator=gen)
    y[3] = -100
    y = y.to(device)
    hl, wl = hid.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = linear_cross_entropy(hl, wl, y, chunk_size=4, label_smoothing=0.1, z_loss=1e-3,
                                impl="triton")
    loss.backward()
    h64, w64 = hid.double().requires_grad_(True), w.double().requires_grad_(True)
    logits = h64 @ w64.T
    lse = torch.logsumexp(logits, 1)
    keep = y != -100
    full = F.cross_entropy(logits, y, label_smoothing=0.1) + 1e-3 * (lse[keep] ** 2).mean()
    full.backward()
    torch.testing.assert_close(loss.double(), full.detach(), **TOL[dtype])
    torch.testing.assert_close(hl.grad.double(), h64.grad, **TOL[dtype])
    torch.testing.assert_close(wl.grad.double(), w64.grad, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_autocast_gives_a_float32_loss_like_pytorch(device, small_blocks):
    """Under autocast, bf16 logits from an autocast matmul: the loss comes back in float32,
    as F.cross_entropy's does there, and the gradient keeps the logits' dtype."""
    gen = torch.Generator().manual_seed(14)
    h = torch.randn(6, 8, generator=gen).to(device)
    w = torch.randn(40, 8, generator=gen).to(device)
    y = torch.randint(0, 40, (6,), generator=gen).to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = h @ w.T
        assert logits.dtype == torch.bfloat16
        ours = cross_entropy(logits, y, label_smoothing=0.1, impl="triton")
        ref = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert ours.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(ours, ref, **TOL[torch.bfloat16])
    xl = logits.detach().requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16):
        (g,) = torch.autograd.grad(cross_entropy(xl, y, impl="triton"), xl)
    assert g.dtype == torch.bfloat16


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_logits_near_the_float32_limit_with_smoothing(device):
    """Each smoothing term is scaled before it is summed, and each product taken before the
    difference: the loss stays finite where the logits' plain sum would overflow."""
    z = torch.tensor([[3.0e38, -3.0e38, 1.0e38, 2.9e38], [-3.4e38, 3.4e38, 0.0, -1.0]])
    y = torch.tensor([0, 1])
    # labels, and the same targets as one-hot probabilities (whose loss is representable)
    for t in (y, torch.eye(4)[y]):
        ref, gref = reference(z.to(device), t.to(device), label_smoothing=0.2,
                              reduction="none")
        assert (ref < 3.4e38).all()
        out, g = ours(z.to(device), t.to(device), label_smoothing=0.2, reduction="none")
        assert torch.isfinite(out).all() and torch.isfinite(g).all()
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0)
        torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=1e-7)


def test_out_of_range_label_gives_nan_on_its_row_only(small_blocks):
    """What the kernel does where no check ran first (on CUDA, checking would synchronise):
    NaN on that row, no read outside the row."""
    if _triton_rows.why_not(torch.empty(1, 1)) is not None:
        pytest.skip("needs the interpreter")
    x = torch.randn(3, 20)
    y = torch.tensor([3, 20, -7])
    g = torch.empty_like(x)
    loss, _, _ = _triton_rows.rows(x, y, None, g, 1.0, 1.0, 0.0, 0.0, None, -100)
    ref = F.cross_entropy(x[:1], y[:1], reduction="none")
    torch.testing.assert_close(loss[:1], ref)
    assert torch.isnan(loss[1:]).all()


def test_impl_triton_refuses_what_it_cannot_serve(monkeypatch):
    x = torch.randn(3, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"impl='triton'.*float64"):
        cross_entropy(x, y, impl="triton")
    monkeypatch.setattr(_triton_rows, "INTERPRET", False)  # as without TRITON_INTERPRET=1
    with pytest.raises(ValueError, match=r"impl='triton'.*CUDA tensors"):
        cross_entropy(x.float(), y, impl="triton")
    # "auto" never picks it for CPU tensors: the C++ kernel or torch ops serve them
    assert not _triton_rows.serves(x.float(), "auto")


def test_opcheck_of_the_registered_op():
    """The launcher is the torch op ``crossent_triton::rows``, with a fake (meta) version for
    torch.compile: torch.library.opcheck tests its schema, fake tensor and autograd
    registration."""
    if _triton_rows.why_not(torch.empty(1, 1)) is not None:
        pytest.skip("needs the interpreter")
    _triton_rows.rows(torch.randn(1, 2), torch.tensor([0]), None, None, None, None, 0.0, 0.0,
                      None, -100)  # registers the op
    x = torch.randn(4, 9)
    y = torch.tensor([1, -100, 8, 0])
    for weight, grad in ((None, None), (torch.rand(9), torch.empty(4, 9))):
        torch.library.opcheck(torch.ops.crossent_triton.rows.default,
                              (x, y, weight, grad, torch.rand(4), torch.tensor(0.5), 0.1,
                               1e-3, 3.0, -100))


# dynamo.explain instantiates autograd Functions and probes a non-leaf .grad: torch's own
# warnings, which the suite's "error" filter would turn into failures
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_compile_fullgraph_traces_the_op_without_breaks(device, backend):
    """torch.compile(fullgraph=True) of the fused and the linear loss on Triton: the op is one
    node of the graph (its fake version gives the shapes), nothing in the dispatch breaks it,
    and compiled equals eager in value and gradient."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(8, 50, generator=gen).to(device)
    y = torch.randint(0, 50, (8,), generator=gen).to(device)
    hid = torch.randn(8, 6, generator=gen).to(device)
    w = torch.randn(50, 6, generator=gen).to(device)

    def fused(logits):
        return cross_entropy(logits, y, label_smoothing=0.1, z_loss=1e-3, impl="triton")

    def linear(h):
        return linear_cross_entropy(h, w, y, chunk_size=3, impl="triton")

    for fn, inp in ((fused, x), (linear, hid)):
        assert torch._dynamo.explain(fn)(inp).graph_break_count == 0
        a, b = inp.clone().requires_grad_(True), inp.clone().requires_grad_(True)
        out = torch.compile(fn, fullgraph=True, backend=backend)(a)
        out.backward()
        ref = fn(b)
        ref.backward()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_forward_and_backward_never_synchronise():
    x = torch.randn(64, 1000, device="cuda", requires_grad=True)
    y = torch.randint(0, 1000, (64,), device="cuda")
    w = torch.rand(1000, device="cuda")
    cross_entropy(x, y, weight=w).backward()  # warm-up: compiles the kernel
    torch.cuda.set_sync_debug_mode("error")
    try:
        for kw in (dict(), dict(weight=w, label_smoothing=0.1, z_loss=1e-4),
                   dict(reduction="none", softcap=30.0)):
            loss = cross_entropy(x, y, **kw)
            loss.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_compile_fullgraph_matches_eager():
    x = torch.randn(32, 500, device="cuda", dtype=torch.bfloat16)
    y = torch.randint(0, 500, (32,), device="cuda")

    def step(logits):
        return cross_entropy(logits, y, label_smoothing=0.1)

    compiled = torch.compile(step, fullgraph=True)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    compiled(xa).backward()
    step(xb).backward()
    torch.testing.assert_close(xa.grad, xb.grad)
