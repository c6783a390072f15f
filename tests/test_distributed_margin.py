"""Class-parallel margin softmax on 2 and 3 gloo processes, against the single-process loss.

Every rank builds the same global embeddings, class centres and labels from one seed, keeps
its slice of the centres (and, with ``gather``, its own rows), runs
``class_parallel_margin_cross_entropy`` (or the Module under DDP), and compares the loss and
its gradients with crossent's materialised margin losses (checked against
pytorch-metric-learning in test_margin.py) computed in float64 on the full tensors in the
same process. The process groups are started by ``tests._gloo``.
"""

from __future__ import annotations

import itertools
import math

import pytest

from tests._gloo import run_group

torch = pytest.importorskip("torch")
dist = torch.distributed
pml = pytest.importorskip("pytorch_metric_learning.losses")

import crossent  # noqa: E402
from crossent.torch.distributed import class_parallel_margin_cross_entropy  # noqa: E402
from crossent.torch.margin_linear import partial_fc_sampler  # noqa: E402
from crossent.torch.nn import MarginLinearCrossEntropyLoss  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# class slices per world size: even, uneven, and one with an empty slice
SPLITS = {2: [(6, 6), (4, 9), (0, 7)], 3: [(4, 4, 4), (2, 7, 3), (0, 5, 6)]}
LOSSES = {
    "arcface": (crossent.arcface_loss, 0.5, 16.0),
    "cosface": (crossent.cosface_loss, 0.35, 16.0),
    "sphereface": (crossent.sphereface_loss, 2, 1.0),
    "lsoftmax": (crossent.large_margin_softmax_loss, 3, 1.0),
}


def _global(world, c, k=1, d=5, seed=0):
    """(per-rank row counts, x, W, y, a cotangent per row): the same on every rank."""
    g = torch.Generator().manual_seed(seed)
    sizes = [3 + r for r in range(world)]  # ranks pass different numbers of rows
    n = sum(sizes)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 2.0
    w = torch.randn(c * k, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    y[1] = -100
    go = torch.randn(n, generator=g, dtype=torch.float64)
    return sizes, x, w, y, go


def _reference(kind, x, w, y, go, *, reduction, k=1, classes=None, margin, scale):
    """Loss and gradients of the materialised loss on the full tensors (rows with label
    -100 count for nothing; ``classes`` restricts the softmax to those, sampled, classes)."""
    xt, wt = x.detach().requires_grad_(), w.detach().requires_grad_()
    keep = y != -100
    yk, wk = y[keep], wt
    if classes is not None:
        remap = torch.full((w.shape[0],), -1, dtype=torch.long)
        remap[classes] = torch.arange(classes.numel())
        yk, wk = remap[yk], wt[classes]
    fn = None
    if k > 1:
        fn = pml.SubCenterArcFaceLoss(num_classes=w.shape[0] // k, embedding_size=w.shape[1],
                                      sub_centers=k, margin=math.degrees(margin),
                                      scale=scale).double()
        with torch.no_grad():
            fn.W.copy_(w.T)
        rows = torch.stack([fn(xt[keep][i:i + 1], yk[i:i + 1]) for i in range(len(yk))])
    else:
        rows = LOSSES[kind][0](xt[keep], wk, yk, margin=margin, scale=scale, reduction="none")
    full = torch.zeros(len(y), dtype=torch.float64).masked_scatter(keep, rows)
    if reduction == "none":
        loss = full
        full.backward(go)
    else:
        loss = full.sum() / (keep.sum() if reduction == "mean" else 1)
        loss.backward()
    return loss.detach(), xt.grad, wt.grad if fn is None else fn.W.grad.T


def _close(name, got, want, tol=1e-9):
    torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")


def _case(rank, widths, *, kind="arcface", reduction="mean", gather=True, k=1, rate=1.0,
          explicit=False, seed=0):
    world = len(widths)
    _, margin, scale = LOSSES[kind]
    sizes, x, w, y, go = _global(world, sum(widths), k=k, seed=seed)
    start = sum(widths[:rank])
    wl = w[start * k:(start + widths[rank]) * k].clone().requires_grad_()
    r0, r1 = sum(sizes[:rank]), sum(sizes[:rank + 1])
    xl = (x[r0:r1] if gather else x).clone().requires_grad_()
    yl = y[r0:r1] if gather else y
    classes = None
    gen = None
    if rate < 1.0:
        gen = torch.Generator().manual_seed(100 + rank)
        # every rank's kept classes, drawn as that rank draws them (the global labels)
        parts = []
        for r in range(world):
            s = sum(widths[:r])
            kept = partial_fc_sampler(rate, s, widths[r], -100,
                                      torch.Generator().manual_seed(100 + r))(y)
            parts.append(kept + s)
        classes = torch.cat(parts)
    value = class_parallel_margin_cross_entropy(
        xl, wl, yl, margin_type=kind, margin=margin, scale=scale, sub_centers=k,
        reduction=reduction, gather=gather, chunk_size=2, sample_rate=rate, generator=gen,
        class_start_index=start if explicit else None,
        num_classes=sum(widths) if explicit else None)
    mine = slice(r0, r1) if gather else slice(None)
    if reduction == "none":
        value.backward(go[mine])
    else:
        value.backward()
    ref, gx, gw = _reference(kind, x, w, y, go, reduction=reduction, k=k, classes=classes,
                             margin=margin, scale=scale)
    _close("loss", value.detach(), ref[mine] if reduction == "none" else ref)
    _close("grad embeddings", xl.grad, gx[mine])
    _close("grad class_weight", wl.grad, gw[start * k:(start + widths[rank]) * k])


def _ddp_case(rank, widths):
    """A backbone under DDP, the loss Module outside it: the backbone's gradient is that of
    the global-batch loss in one process."""
    world = len(widths)
    c = sum(widths)
    sizes, x, w, y, _ = _global(world, c, d=4, seed=7)
    torch.manual_seed(0)  # the same backbone on every rank (DDP also broadcasts it)
    backbone = torch.nn.Linear(4, 4).double()
    ref_backbone = torch.nn.Linear(4, 4).double()
    ref_backbone.load_state_dict(backbone.state_dict())
    ddp = torch.nn.parallel.DistributedDataParallel(backbone)
    head = MarginLinearCrossEntropyLoss(4, c, margin_type="cosface", margin=0.3, scale=8.0,
                                        chunk_size=3, dtype=torch.float64)
    base, extra = divmod(c, world)
    assert head.class_start == rank * base + min(rank, extra)
    with torch.no_grad():
        head.weight.copy_(w[head.class_start:head.class_start + head.local_classes])
    r0, r1 = sum(sizes[:rank]), sum(sizes[:rank + 1])
    loss = head(ddp(x[r0:r1]), y[r0:r1])
    loss.backward()
    wr = w.clone().requires_grad_()
    ref = crossent.cosface_loss(ref_backbone(x[y != -100]), wr, y[y != -100], margin=0.3,
                                scale=8.0)
    ref.backward()
    _close("loss", loss.detach(), ref.detach())
    _close("backbone weight grad", backbone.weight.grad, ref_backbone.weight.grad)
    _close("backbone bias grad", backbone.bias.grad, ref_backbone.bias.grad)
    _close("centres grad", head.weight.grad,
           wr.grad[head.class_start:head.class_start + head.local_classes])


def _error_cases(rank, world):
    x = torch.randn(3, 4, dtype=torch.float64)
    w = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="slices .* of the class centres"):
        # every rank claims the slice [0, 2): overlaps, and not a tiling of [0, 2 * world)
        class_parallel_margin_cross_entropy(x, w, torch.tensor([0, 1, 0]),
                                            class_start_index=0, num_classes=2 * world)
    with pytest.raises(ValueError, match="labels"):
        class_parallel_margin_cross_entropy(x, w, torch.tensor([0, 2 * world, 1]))
    # a differentiable backward across processes is refused, on every rank alike
    xr = x.clone().requires_grad_()
    loss = class_parallel_margin_cross_entropy(xr, w, torch.tensor([0, 1, 1]))
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(loss, xr, create_graph=True)


def cases(world, suite="all"):
    out = []
    for widths in SPLITS[world]:
        for kind, reduction in itertools.product(LOSSES, ["mean", "none"]):
            out.append((f"{kind} {reduction} {widths}",
                        lambda r, w=widths, kd=kind, red=reduction: _case(r, w, kind=kd,
                                                                          reduction=red)))
        out.append((f"sum, rows already global {widths}",
                    lambda r, w=widths: _case(r, w, reduction="sum", gather=False)))
        out.append((f"none, rows already global {widths}",
                    lambda r, w=widths: _case(r, w, reduction="none", gather=False)))
        out.append((f"sub-centres {widths}", lambda r, w=widths: _case(r, w, k=2)))
        out.append((f"explicit slices {widths}", lambda r, w=widths: _case(r, w, explicit=True)))
        out.append((f"sample_rate 1.0 {widths}", lambda r, w=widths: _case(r, w, rate=1.0)))
        out.append((f"sample_rate 0.5 {widths}", lambda r, w=widths: _case(r, w, rate=0.5)))
    out.append(("ddp backbone", lambda r: _ddp_case(r, SPLITS[world][1])))
    out.append(("errors", lambda r: _error_cases(r, world)))
    return out


@pytest.mark.parametrize("world", [2, 3])
def test_class_parallel_matches_single_process(world, tmp_path):
    run_group("tests.test_distributed_margin", world, tmp_path)
