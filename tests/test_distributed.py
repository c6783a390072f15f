"""crossent.torch.distributed against single-process F.cross_entropy (never against itself).

The multi-process tests start groups of 2 and 3 processes on the gloo backend (CPU,
127.0.0.1, a free port chosen here). Every process builds the same full logits / weights from
the same seed, keeps its vocabulary slice, runs the vocabulary-parallel loss, and compares the
loss and its gradient slice with F.cross_entropy on the full tensors, computed in float64 in
the same process. The process groups are started by ``tests._gloo`` (each rank runs
:func:`cases` and reports its failures).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from pathlib import Path

import pytest

from tests._gloo import run_group

torch = pytest.importorskip("torch")
F = torch.nn.functional
dist = torch.distributed

from crossent.torch.distributed import (  # noqa: E402
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


# Vocabulary splits per world size: even, uneven, and one with an empty slice.
SPLITS = {
    2: [(6, 6), (6, 5), (1, 10)],
    3: [(4, 4, 3), (2, 6, 3), (0, 6, 5)],
}


# --------------------------------------------------------------------------- references


def _reference(full, target, *, reduction, eps, z_loss, ignore_index=-100, grad_output=None):
    """Loss and gradient of PyTorch's cross-entropy on the full float64 logits.

    The z-loss term is added explicitly (z * logsumexp**2 on non-ignored rows, averaged over
    them for "mean"); an all-ignored "mean" is 0 (F.cross_entropy gives NaN there).
    """
    x = full.detach().double().requires_grad_(True)
    valid = target != ignore_index
    count = int(valid.sum())
    if z_loss == 0 and (reduction != "mean" or count > 0):
        loss = F.cross_entropy(x, target, reduction=reduction, label_smoothing=eps,
                               ignore_index=ignore_index)
    else:
        rows = F.cross_entropy(x, target, reduction="none", label_smoothing=eps,
                               ignore_index=ignore_index)
        lse = torch.logsumexp(x, dim=-1)
        rows = rows + z_loss * torch.where(valid, lse * lse, torch.zeros_like(lse))
        if reduction == "none":
            loss = rows
        elif reduction == "sum":
            loss = rows.sum()
        else:
            loss = rows.sum() / count if count else rows.sum() * 0.0
    go = torch.ones_like(loss) if grad_output is None else grad_output.double()
    (g,) = torch.autograd.grad(loss, x, go)
    return loss.detach(), g


def _close(name, got, want, tol):
    """Assert |got - want| <= tol * max(1, max|want|), with a readable message."""
    got = got.detach().double()
    want = want.detach().double()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if got.numel() == 0:
        return
    err = float((got - want).abs().max())
    bound = tol * max(1.0, float(want.abs().max()))
    assert err <= bound, f"{name}: max abs error {err:.3g} > {bound:.3g}"


TOL = {torch.float32: 2e-6, torch.bfloat16: 1.5e-2}


def _targets(n, v, gen, mode):
    y = torch.randint(0, v, (n,), generator=gen)
    if mode == "some":
        y = torch.where(torch.rand(n, generator=gen) < 0.3, torch.full_like(y, -100), y)
    elif mode == "all":
        y = torch.full_like(y, -100)
    return y


# --------------------------------------------------------------------------- rank-side cases


def _logits_case(rank, widths, *, dtype, reduction, eps, z_loss, ignored, seed, shape=(9,),
                 explicit=False, inplace=False, impl="auto"):
    v = sum(widths)
    start = sum(widths[:rank])
    gen = torch.Generator().manual_seed(seed)
    full = (torch.randn(*shape, v, generator=gen) * 3).to(dtype)
    y = _targets(math.prod(shape), v, gen, ignored).reshape(shape)
    go = torch.randn(shape, generator=gen).to(dtype) if reduction == "none" else None
    leaf = full[..., start:start + widths[rank]].clone().requires_grad_(True)
    shard = leaf * 1.0 if inplace else leaf
    kw = {"vocab_start_index": start, "vocab_size": v} if explicit else {}
    loss, zpart = vocab_parallel_cross_entropy(
        shard, y, reduction=reduction, label_smoothing=eps, z_loss=z_loss,
        inplace_backward=inplace, return_z_loss=True, impl=impl, **kw)
    (g,) = torch.autograd.grad(loss, leaf, go)
    ref, gref = _reference(full.reshape(-1, v), y.reshape(-1), reduction=reduction, eps=eps,
                           z_loss=z_loss,
                           grad_output=None if go is None else go.reshape(-1))
    gref = gref.reshape(*shape, v)[..., start:start + widths[rank]]
    tol = TOL[dtype]
    assert loss.dtype == dtype and g.dtype == dtype
    _close("loss", loss, ref.reshape(loss.shape), tol)
    _close("grad", g, gref, tol)
    if ignored == "all" and reduction == "mean":
        assert float(loss.detach()) == 0.0, "all-ignored mean is not 0"
        assert not bool(g.any()), "all-ignored mean has a non-zero gradient"
    # The z-loss part on its own: z * lse**2 over the non-ignored rows, reduced the same way.
    lse = torch.logsumexp(full.reshape(-1, v).double(), dim=-1)
    valid = y.reshape(-1) != -100
    zrows = z_loss * torch.where(valid, lse * lse, torch.zeros_like(lse))
    zref = {"none": zrows.reshape(shape), "sum": zrows.sum(),
            "mean": zrows.sum() / max(1, int(valid.sum()))}[reduction]
    _close("z_loss part", zpart, zref, tol)


def _linear_case(rank, widths, *, dtype, reduction, eps, z_loss, ignored, seed, bias, chunk,
                 impl="auto"):
    v, n, h = sum(widths), 10, 6
    start, width = sum(widths[:rank]), widths[rank]
    gen = torch.Generator().manual_seed(seed)
    hid = torch.randn(n, h, generator=gen).to(dtype)
    w = torch.randn(v, h, generator=gen).to(dtype)
    b = torch.randn(v, generator=gen).to(dtype)
    y = _targets(n, v, gen, ignored)
    go = torch.randn(n, generator=gen).to(dtype) if reduction == "none" else None
    hl = hid.clone().requires_grad_(True)
    wl = w[start:start + width].clone().requires_grad_(True)
    bl = b[start:start + width].clone().requires_grad_(True) if bias else None
    loss = vocab_parallel_linear_cross_entropy(
        hl, wl, y, bl, chunk_size=chunk, reduction=reduction, label_smoothing=eps,
        z_loss=z_loss, impl=impl)
    inputs = (hl, wl) + ((bl,) if bias else ())
    grads = torch.autograd.grad(loss, inputs, go)
    # Single-process reference on the materialised logits, float64.
    hr = hid.double().requires_grad_(True)
    wr = w.double().requires_grad_(True)
    br = b.double().requires_grad_(True)
    logits = hr @ wr.T + (br if bias else 0.0)
    ref, glog = _reference(logits, y, reduction=reduction, eps=eps, z_loss=z_loss,
                           grad_output=go)
    gh, gw, gb = torch.autograd.grad(logits, (hr, wr, br), glog, allow_unused=True)
    tol = TOL[dtype] * (3 if dtype == torch.bfloat16 else 5)
    assert loss.dtype == dtype
    _close("loss", loss, ref, tol)
    _close("grad hidden", grads[0], gh, tol)
    _close("grad weight", grads[1], gw[start:start + width], tol)
    if bias:
        _close("grad bias", grads[2], gb[start:start + width], tol)


def _error_cases(rank, world):
    """Inconsistent slices raise the same ValueError on every rank (no rank left waiting)."""
    x = torch.zeros(2, 3)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="tile"):  # every rank claims [0, 3)
        vocab_parallel_cross_entropy(x, y, vocab_start_index=0)
    with pytest.raises(ValueError, match="every rank of the group or on none"):
        vocab_parallel_cross_entropy(x, y, vocab_start_index=0 if rank == 0 else None)
    with pytest.raises(ValueError, match="class indices"):  # 3 * world is out of range
        vocab_parallel_cross_entropy(x, torch.tensor([0, 3 * world]))
    # the C++ kernel serves a group of one process only; "torch" and "parallel" are the
    # parallel algorithm here, as "auto" is
    with pytest.raises(ValueError, match="impl='kernel'"):
        vocab_parallel_cross_entropy(x, y, impl="kernel")
    with pytest.raises(ValueError, match="impl='kernel'"):
        vocab_parallel_linear_cross_entropy(torch.zeros(2, 4), torch.zeros(3, 4), y,
                                            impl="kernel")
    with pytest.raises(ValueError, match="impl='triton'.*group of one"):  # so is Triton's
        vocab_parallel_cross_entropy(x, y, impl="triton")
    gen = torch.Generator().manual_seed(11)
    full = torch.randn(4, 3 * world, generator=gen)
    yy = torch.randint(0, 3 * world, (4,), generator=gen)
    want = F.cross_entropy(full.double(), yy)
    for impl in ("auto", "torch", "parallel"):
        got = vocab_parallel_cross_entropy(full[:, 3 * rank:3 * rank + 3], yy, impl=impl)
        _close(f"impl={impl} loss", got, want, 2e-6)


def _dtensor_cases(rank, world):
    """DTensor inputs: logits sharded on the classes (Shard(-1), torch.chunk's uneven blocks)
    through vocab_parallel_cross_entropy, and an FSDP2 fully_shard LM head (and a plain
    distribute_tensor one, with a bias) through linear_cross_entropy outside its forward, each
    rank with its own batch: the weight's gradient is FSDP2's, the mean over the ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from crossent.torch import linear_cross_entropy

    mesh = init_device_mesh("cpu", (world,))
    v, h = 11, 5
    for reduction, eps, z in (("mean", 0.1, 0.0), ("sum", 0.0, 0.01), ("none", 0.2, 0.0)):
        gen = torch.Generator().manual_seed(31)  # the same full logits on every rank
        full = torch.randn(7, v, generator=gen, dtype=torch.float64)
        y = torch.randint(0, v, (7,), generator=gen)
        y[2] = -100
        dx = distribute_tensor(full, mesh, [Shard(-1)]).requires_grad_()
        loss = vocab_parallel_cross_entropy(dx, y, reduction=reduction, label_smoothing=eps,
                                            z_loss=z)
        assert tuple(loss.placements) == (Replicate(),)
        want, gwant = _reference(full, y, reduction=reduction, eps=eps, z_loss=z,
                                 grad_output=torch.ones(7) if reduction == "none" else None)
        _close(f"dtensor logits {reduction} loss", loss.to_local(), want, 1e-12)
        (loss.to_local().sum() if reduction == "none" else loss.to_local()).backward()
        assert tuple(dx.grad.placements) == (Shard(1),)
        _close(f"dtensor logits {reduction} grad", dx.grad.full_tensor(), gwant, 1e-12)
    with pytest.raises(ValueError, match="class"):
        vocab_parallel_cross_entropy(distribute_tensor(full, mesh, [Shard(0)]), y)
    with pytest.raises(ValueError, match="come from DTensor"):
        vocab_parallel_cross_entropy(dx.detach(), y, vocab_size=v)

    gen = torch.Generator().manual_seed(32)
    w0 = torch.randn(v, h, generator=gen, dtype=torch.float64)
    b0 = torch.randn(v, generator=gen, dtype=torch.float64)
    batches = [(torch.randn(6, h, generator=gen, dtype=torch.float64),
                torch.randint(0, v, (6,), generator=gen)) for _ in range(world)]
    mine_h, mine_y = batches[rank]
    # the reference: each rank's loss on the full weight, and the mean of the ranks' gradients
    ref_losses, grads_w, grads_b = [], [], []
    for hb, yb in batches:
        w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
        ref = F.cross_entropy(hb @ w.T + b, yb, label_smoothing=0.1)
        ref.backward()
        ref_losses.append(ref.detach())
        grads_w.append(w.grad)
        grads_b.append(b.grad)
    head = torch.nn.Linear(h, v, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(w0)
        head.bias.copy_(b0)
    fully_shard(head, mesh=mesh)
    assert tuple(head.weight.placements) == (Shard(0),)
    loss = linear_cross_entropy(mine_h, head.weight, mine_y, head.bias, label_smoothing=0.1,
                                chunk_size=4)
    _close("fsdp2 loss", loss, ref_losses[rank], 1e-12)
    loss.backward()
    _close("fsdp2 weight grad", head.weight.grad.full_tensor(), sum(grads_w) / world, 1e-12)
    _close("fsdp2 bias grad", head.bias.grad.full_tensor(), sum(grads_b) / world, 1e-12)
    wd = torch.nn.Parameter(distribute_tensor(w0, mesh, [Shard(0)]))
    loss = linear_cross_entropy(mine_h, wd, mine_y, label_smoothing=0.1)
    loss.backward()
    ref_w = w0.clone().requires_grad_()
    F.cross_entropy(mine_h @ ref_w.T, mine_y, label_smoothing=0.1).backward()
    dist.all_reduce(ref_w.grad)
    _close("dtensor weight grad", wd.grad.full_tensor(), ref_w.grad / world, 1e-12)


def _explicit_slice_cases(rank, world):
    """Both bounds given (no all_gather needed for the slice itself): slices that overlap or
    leave a gap must raise the same ValueError on every rank, not give a wrong loss."""
    x = torch.zeros(2, 3)
    y = torch.tensor([0, 1])
    layouts = {
        "overlap": (0, 3 * world),  # every rank claims [0, 3) of a vocabulary of 3 * world
        "gap": (3 * rank + (rank == world - 1), 3 * world + 1),  # class 3 (world - 1) unowned
        "overlap, right size": (min(3 * rank, 3 * world - 4), 3 * world),
    }
    for name, (start, size) in layouts.items():
        try:
            vocab_parallel_cross_entropy(x, y, vocab_start_index=start, vocab_size=size)
        except ValueError as e:
            assert "tile" in str(e), f"{name}: {e}"
        else:
            raise AssertionError(f"{name}: slices that do not tile [0, V) were accepted")
        h, w = torch.zeros(2, 4), torch.zeros(3, 4)
        try:
            vocab_parallel_linear_cross_entropy(h, w, y, vocab_start_index=start,
                                                vocab_size=size)
        except ValueError as e:
            assert "tile" in str(e), f"linear {name}: {e}"
        else:
            raise AssertionError(f"linear {name}: slices that do not tile [0, V) were accepted")
    # the right slices still work, and give PyTorch's loss
    gen = torch.Generator().manual_seed(9)
    full = torch.randn(4, 3 * world, generator=gen)
    yy = torch.randint(0, 3 * world, (4,), generator=gen)
    got = vocab_parallel_cross_entropy(full[:, 3 * rank:3 * rank + 3], yy,
                                       vocab_start_index=3 * rank, vocab_size=3 * world)
    _close("explicit loss", got, F.cross_entropy(full.double(), yy), 2e-6)


def cases(world, suite="all"):
    """(name, fn(rank)) pairs; the same list, in the same order, on every rank."""
    if suite == "issue9_item7":
        return [("explicit slices", lambda r: _explicit_slice_cases(r, world))]
    if suite == "dtensor":
        return [("dtensor", lambda r: _dtensor_cases(r, world))]
    cases = []
    seed = 0
    for widths in SPLITS[world]:
        for dtype, reduction, eps, z_loss in itertools.product(
                (torch.float32, torch.bfloat16), ("mean", "sum", "none"), (0.0, 0.2),
                (0.0, 0.01)):
            seed += 1
            ignored = "some" if seed % 2 else "none"
            kw = dict(dtype=dtype, reduction=reduction, eps=eps, z_loss=z_loss,
                      ignored=ignored, seed=seed)
            name = f"logits {widths} {kw}"
            cases.append((name, lambda r, w=widths, kw=kw: _logits_case(r, w, **kw)))
        for reduction in ("mean", "sum", "none"):
            seed += 1
            kw = dict(dtype=torch.float32, reduction=reduction, eps=0.1, z_loss=0.01,
                      ignored="all", seed=seed)
            cases.append((f"all ignored {widths} {kw}",
                          lambda r, w=widths, kw=kw: _logits_case(r, w, **kw)))
        seed += 1
        kw = dict(dtype=torch.float32, reduction="none", eps=0.1, z_loss=0.0, ignored="some",
                  seed=seed, shape=(2, 3, 4), explicit=True, inplace=True)
        cases.append((f"3-d, explicit slice, inplace {widths}",
                      lambda r, w=widths, kw=kw: _logits_case(r, w, **kw)))
        for dtype, reduction, eps, z_loss, bias, chunk in [
            (torch.float32, "mean", 0.0, 0.0, True, None),
            (torch.float32, "mean", 0.1, 0.01, True, 3),
            (torch.float32, "sum", 0.0, 0.01, False, 4),
            (torch.float32, "none", 0.1, 0.01, True, 3),
            (torch.bfloat16, "mean", 0.1, 0.0, True, 3),
            (torch.bfloat16, "none", 0.0, 0.01, False, None),
        ]:
            seed += 1
            kw = dict(dtype=dtype, reduction=reduction, eps=eps, z_loss=z_loss,
                      ignored="some", seed=seed, bias=bias, chunk=chunk)
            cases.append((f"linear {widths} {kw}",
                          lambda r, w=widths, kw=kw: _linear_case(r, w, **kw)))
        seed += 1
        kw = dict(dtype=torch.float32, reduction="mean", eps=0.1, z_loss=0.01, ignored="all",
                  seed=seed, bias=True, chunk=4)
        cases.append((f"linear all ignored {widths}",
                      lambda r, w=widths, kw=kw: _linear_case(r, w, **kw)))
    cases.append(("errors", lambda r: _error_cases(r, world)))
    return cases


# --------------------------------------------------------------------------- the tests


def _run_group(world: int, tmp_path: Path, suite: str = "all") -> None:
    run_group("tests.test_distributed", world, tmp_path, suite)


@pytest.mark.parametrize("world", [2, 3])
def test_matches_single_process(world, tmp_path):
    _run_group(world, tmp_path)


@pytest.mark.parametrize("world", [2, 3])
def test_issue9_item7_explicit_slices_must_tile(world, tmp_path):
    _run_group(world, tmp_path, "issue9_item7")


# Single process (torch.distributed not initialised: a group of one): the same references, on
# the parallel code path run with a world of one and on the hand-over to crossent.torch.


@pytest.mark.parametrize("world", [2, 3])
def test_dtensor_logits_and_fsdp2_weight(world, tmp_path):
    _run_group(world, tmp_path, "dtensor")


@pytest.fixture(params=["parallel", "delegated"])
def single_path(request):
    """The ``impl`` of the single-process tests: the parallel code path run with a world of
    one, or the hand-over on the torch-ops row routine (no C++ build needed here)."""
    return {"parallel": "parallel", "delegated": "torch"}[request.param]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps,z_loss", [(0.0, 0.0), (0.2, 0.0), (0.0, 0.05), (0.1, 0.01)])
def test_single_process_logits(reduction, eps, z_loss, single_path):
    for ignored in ("none", "some", "all"):
        _logits_case(0, (13,), dtype=torch.float32, reduction=reduction, eps=eps,
                     z_loss=z_loss, ignored=ignored, seed=7, impl=single_path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_single_process_linear(dtype, single_path):
    for reduction, chunk, bias in [("mean", 3, True), ("sum", None, False), ("none", 4, True)]:
        _linear_case(0, (9,), dtype=dtype, reduction=reduction, eps=0.1, z_loss=0.01,
                     ignored="some", seed=3, bias=bias, chunk=chunk, impl=single_path)


def test_no_grad_path_matches(single_path):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 7, generator=gen)
    y = torch.randint(0, 7, (5, 3), generator=gen)
    with torch.no_grad():
        got = vocab_parallel_cross_entropy(x, y, label_smoothing=0.1, impl=single_path)
    want = F.cross_entropy(x.reshape(-1, 7), y.reshape(-1), label_smoothing=0.1)
    assert torch.allclose(got, want, atol=1e-6)
    h, w = torch.randn(6, 4, generator=gen), torch.randn(7, 4, generator=gen)
    got = vocab_parallel_linear_cross_entropy(h, w, y.reshape(-1)[:6], reduction="none",
                                              impl=single_path)
    want = F.cross_entropy(h @ w.T, y.reshape(-1)[:6], reduction="none")
    assert torch.allclose(got, want, atol=1e-6)


def test_inputs_not_mutated_by_default(single_path):
    x = torch.randn(4, 6, requires_grad=True)
    before = x.detach().clone()
    vocab_parallel_cross_entropy(x, torch.tensor([0, 1, 2, 3]), impl=single_path).backward()
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize(("option", "match"), [
    ({"group": object()}, "not initialised"),
    ({"vocab_start_index": 3}, "vocab_start_index must be 0"),
    ({"vocab_start_index": -1}, "vocab_start_index must be a non-negative int"),
    ({"vocab_size": 5}, "vocab_size must equal"),
    ({"reduction": "avg"}, "reduction"),
    ({"label_smoothing": 1.5}, "label_smoothing"),
    ({"z_loss": -1.0}, "z_loss"),
], ids=["group", "vocab_start_index_3", "vocab_start_index_negative", "vocab_size",
        "reduction", "label_smoothing", "z_loss"])
def test_errors_bad_option(single_path, option, match):
    with pytest.raises(ValueError, match=match):
        vocab_parallel_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), impl=single_path,
                                     **option)


def test_errors(single_path):
    vpce = functools.partial(vocab_parallel_cross_entropy, impl=single_path)
    vplce = functools.partial(vocab_parallel_linear_cross_entropy, impl=single_path)
    x = torch.zeros(2, 3)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="target must have shape"):
        vpce(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="class indices"):
        vpce(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="at least one class"):
        vpce(torch.zeros(2, 0), y)
    with pytest.raises(ValueError, match="inplace_backward"):
        vpce(x.requires_grad_(True), y, inplace_backward=True)
    with pytest.raises(TypeError, match="floating-point"):
        vpce(torch.zeros(2, 3, dtype=torch.int64), y)
    with pytest.raises(TypeError, match="integer class indices"):
        vpce(torch.zeros(2, 3), torch.zeros(2))
    h, w = torch.zeros(2, 4), torch.zeros(3, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        vplce(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="weight_shard must have shape"):
        vplce(h, torch.zeros(3, 5), y)
    with pytest.raises(ValueError, match="bias_shard must have shape"):
        vplce(h, w, y, torch.zeros(4))
    with pytest.raises(TypeError, match="share a dtype"):
        vplce(h, w.double(), y)


def test_impl_argument(monkeypatch):
    """impl= chooses the code path: bad values name impl and the value; "parallel" runs the
    collectives' algorithm in a group of one (which refuses a differentiable backward, where
    the hand-over to crossent.torch supports it); every choice gives the same numbers."""
    from crossent.torch import _ext, _triton_rows

    gen = torch.Generator().manual_seed(12)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    h = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 6, -100, 3, 2])
    cases = [  # (loss for an impl, the input to differentiate, its logits)
        (lambda impl: vocab_parallel_cross_entropy(x, y, label_smoothing=0.1, impl=impl), x,
         x),
        (lambda impl: vocab_parallel_linear_cross_entropy(h, w, y, label_smoothing=0.1,
                                                          impl=impl), h, h @ w.T),
    ]
    impls = ["auto", "torch", "parallel"] + (["kernel"] if _ext.load() else [])
    for call, wrt, logits in cases:
        for bad in ("cuda", "distributed", "Parallel", None, 1):
            with pytest.raises(ValueError, match=r"impl must be one of \('auto', 'kernel', "
                               r"'triton', 'torch', 'parallel'\), got " + re.escape(repr(bad))):
                call(bad)
        want = F.cross_entropy(logits, y, label_smoothing=0.1)
        (gwant,) = torch.autograd.grad(want, wrt)
        for impl in impls:
            got = call(impl)
            (g,) = torch.autograd.grad(got, wrt)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g, gwant, rtol=1e-12, atol=1e-12)
        (g,) = torch.autograd.grad(call("auto"), wrt, create_graph=True)
        assert g.requires_grad  # the hand-over: an exact double backward
        with pytest.raises(RuntimeError, match="create_graph"):
            torch.autograd.grad(call("parallel"), wrt, create_graph=True)
        with pytest.raises(ValueError, match="impl='triton'.*float64"):
            call("triton")
    x32 = x.detach().float()
    if _triton_rows.why_not(x32) is None:  # the hand-over on Triton's interpreter, on CPU
        got = vocab_parallel_cross_entropy(x32, y, label_smoothing=0.1, impl="triton")
        torch.testing.assert_close(got, F.cross_entropy(x32, y, label_smoothing=0.1))
    monkeypatch.setattr(_ext, "load", lambda: False)  # a machine without the kernel
    with pytest.raises(ValueError, match="impl='kernel'"):
        vocab_parallel_cross_entropy(x, y, impl="kernel")


def test_second_backward_recomputes(single_path):
    """retain_graph=True: the second backward gives the same gradients (recomputed)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 7, generator=gen, requires_grad=True)
    y = torch.tensor([0, 6, -100, 3, 2])
    loss = vocab_parallel_cross_entropy(x, y, label_smoothing=0.1, z_loss=0.01, impl=single_path)
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x, torch.tensor(2.0))
    torch.testing.assert_close(g2, 2 * g1)
    h = torch.randn(5, 3, generator=gen, requires_grad=True)
    w = torch.randn(7, 3, generator=gen, requires_grad=True)
    loss = vocab_parallel_linear_cross_entropy(h, w, y, chunk_size=2, z_loss=0.01,
                                               impl=single_path)
    g1 = torch.autograd.grad(loss, (h, w), retain_graph=True)
    g2 = torch.autograd.grad(loss, (h, w), torch.tensor(3.0))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(b, 3 * a)


def test_inplace_backward_second_backward_refused():
    leaf = torch.randn(3, 4, requires_grad=True)
    x = leaf * 1.0
    loss = vocab_parallel_cross_entropy(x, torch.tensor([0, 1, 2]), inplace_backward=True,
                                        impl="parallel")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_parallel_path(reduction):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    h = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, -100, 4, 0])
    kw = dict(label_smoothing=0.2, z_loss=0.05, reduction=reduction, impl="parallel")
    # The first backward uses the exponentials kept by the forward, a repeated one recomputes
    # them from the saved lse: equal up to rounding, hence a non-zero nondet_tol.
    assert torch.autograd.gradcheck(lambda t: vocab_parallel_cross_entropy(t, y, **kw), (x,),
                                    nondet_tol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, c, d: vocab_parallel_linear_cross_entropy(a, c, y, d, chunk_size=3, **kw),
        (h, w, b), nondet_tol=1e-12)

