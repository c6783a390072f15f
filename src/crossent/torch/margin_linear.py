"""Margin softmax fused with the class-centre matmul, chunked over the classes.

ArcFace, CosFace, SphereFace and L-Softmax at millions of classes: the loss of
:mod:`crossent.margin_softmax` computed from the embeddings and the class centres without ever
holding the N x C logits. The classes are visited in chunks: each chunk's centres are
normalised, its cosines computed by one matmul, the margin applied at the targets that fall in
it, and the row's logsumexp updated online (a running maximum and a rescaled sum). The
backward visits the chunks again and, from the same per-row logsumexp, writes each chunk's
gradient of the class centres into the returned gradient and accumulates the three per-row
sums the embeddings' gradient is made of (:func:`crossent.margin_softmax.finish_rows`). The
extra memory is a few chunk-sized matrices.

The same loop serves the class-parallel form (``crossent.torch.distributed``): a rank visits
only its slice of the class centres and the per-row statistics meet in a constant number of
collectives (one all_reduce MAX and one SUM forward, one SUM backward, plus the all_gather
of the embeddings and labels when each rank passes its own batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, TypedDict

import torch
import torch.nn.functional as F

from .. import _array as A
from .. import _checks
from ..margin_softmax import _NORM_EPS, Rows, _Variant, finish_rows, variant_for
from ._common import (
    autocast_off,
    check_labels,
    mean_scale,
    refuse_dual,
    require_class_indices,
    require_floating,
    require_tensor,
    transform_active,
)
from ._rows import acc_dtype

__all__ = ["margin_linear_cross_entropy", "choose_class_chunk"]

_MIB = 1 << 20
# a norm below this may hold squares that underflowed (fp32: elements near 1e-20)
_TINY_NORM = 1e-15


def choose_class_chunk(n: int, c: int, d: int, *, sub_centers: int = 1, itemsize: int = 4,
                       budget_bytes: int | None = None) -> int:
    """Classes per chunk for :func:`margin_linear_cross_entropy`.

    A chunk of ``m`` classes holds up to six ``N x m k`` matrices at once (cosines, logits
    turned softmax, their product, the spread over sub-centres, the matmuls' outputs) and
    four ``m k x D`` ones (the centres' directions, their gradient and its parts). By default
    they get 1/20 of what the full N x C logits would take, clamped to [2 MiB, 64 MiB]: the
    measured extra memory stays under 0.04x the logits, and chunks of a few hundred to a few
    thousand classes keep the per-chunk overhead small next to the matmuls.

    Args:
        n: rows (embeddings). c: classes. d: embedding size.
        sub_centers: centres per class. itemsize: bytes per element of the compute dtype.
        budget_bytes: memory for one chunk's temporaries; None chooses as above.

    Returns:
        The number of classes per chunk, in [1, max(c, 1)].

    Example:
        >>> choose_class_chunk(512, 1_000_000, 512)
        3276
    """
    if budget_bytes is None:
        budget_bytes = min(64 * _MIB, max(2 * _MIB, n * c * itemsize // 20))
    per_class = max(1, (6 * n + 4 * d) * sub_centers * itemsize)
    return int(max(1, min(budget_bytes // per_class, max(c, 1))))


# --------------------------------------------------------------------------- the problem


@dataclass(frozen=True)
class Problem:
    """What a call fixes: the variant, the scale, the class layout and how ranks talk.

    ``classes`` (None: all local classes in order) holds the sorted local class ids a
    negative-sampling step kept; ``start`` is the first global class of this rank's slice and
    ``local`` its number of classes. ``world > 1`` makes the per-row statistics meet in
    collectives over ``group``.
    """

    variant: _Variant
    scale: float
    k: int                      # centres per class
    chunk: int                  # classes per chunk
    start: int
    local: int
    classes: torch.Tensor | None
    ignore_index: int
    reduction: str
    group: Any = None
    world: int = 1

    @property
    def width(self) -> int:
        """Number of classes the loop visits (the kept ones when sampling)."""
        return self.local if self.classes is None else int(self.classes.numel())


def partial_fc_sampler(rate: float, start: int, local: int, ignore_index: int,
                       generator: torch.Generator | None) -> Any:
    """Negative sampling of Partial FC: a function from the global labels to the sorted local
    class ids to visit: every positive class of this slice (one some label names), then
    random others up to ``int(rate * local)`` classes in all, drawn from ``generator`` (on
    the CPU, so a seed gives the same classes on any device)."""

    def sample(labels: torch.Tensor) -> torch.Tensor:
        rel, own, _ = _owned(labels, start, local, ignore_index)
        positive = torch.zeros(local, dtype=torch.bool, device=labels.device)
        positive[rel[own]] = True
        keep = int(rate * local)
        if int(positive.sum()) >= keep:
            return positive.nonzero()[:, 0]
        score = torch.rand(local, generator=generator).to(labels.device)
        score[positive] = 2.0  # above every draw: the positives are always kept
        return score.topk(keep).indices.sort().values

    return sample


def _all_reduce(t: torch.Tensor, op: Any, prob: Problem) -> torch.Tensor:
    if prob.world > 1:
        torch.distributed.all_reduce(t, op=op, group=prob.group)
    return t


def _owned(labels: torch.Tensor, start: int, local: int, ignore_index: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(each label relative to this slice, whether the slice holds it, whether it counts)."""
    valid = labels != ignore_index
    rel = labels - start
    return rel, valid & (rel >= 0) & (rel < local), valid


def local_columns(prob: Problem, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
    """(column of each row's target among the visited classes, clamped to be a valid index;
    whether this rank holds it; whether the row counts)."""
    rel, own, valid = _owned(labels, prob.start, prob.local, prob.ignore_index)
    if prob.classes is not None:
        if prob.classes.numel() == 0:
            return torch.zeros_like(labels), torch.zeros_like(own), valid
        pos = torch.searchsorted(prob.classes, rel.clamp(0, max(prob.local - 1, 0)))
        pos = pos.clamp(max=prob.classes.numel() - 1)
        own = own & (prob.classes[pos] == rel)
        rel = pos
    col = torch.where(own, rel, torch.zeros_like(rel))
    return col, own, valid


def _centres(prob: Problem, weight: torch.Tensor, a: int, b: int, acc: torch.dtype
             ) -> torch.Tensor:
    """The centres of visited classes [a, b), ((b - a) k, D), in the compute dtype."""
    w3 = weight.view(prob.local, prob.k, weight.shape[-1])
    rows = w3[a:b] if prob.classes is None else w3[prob.classes[a:b]]
    return rows.reshape(-1, weight.shape[-1]).to(acc)


@dataclass
class _Chunk:
    """One chunk's logits and what its gradient reuses."""

    z: torch.Tensor         # (N, c) logits, margin applied at the targets inside
    cos: torch.Tensor       # (N, c) cosines (the best sub-centre's)
    idx: torch.Tensor | None  # (N, c) which sub-centre, None when k = 1
    w: Rows                 # the chunk's centres
    inside: torch.Tensor    # (N,) the row's target is in this chunk
    col: torch.Tensor       # (N,) its column in the chunk (clamped)
    c_y: torch.Tensor       # (N,) target cosine, f(c_y), f'(c_y) (meaningful where inside)
    f_y: torch.Tensor
    fp_y: torch.Tensor
    z_y: torch.Tensor       # (N,) target logit


def centre_rows(wc: torch.Tensor, keeps_norm: bool) -> Rows:
    """A chunk's centres with their norms and directions.

    One fused norm pass where every norm is in the range where the squares neither overflow
    nor underflow; otherwise (an extreme row somewhere in the chunk, read on the host) the
    scaled norm of :func:`crossent._array.norm_and_unit`, which the materialised losses use."""
    norm = torch.linalg.vector_norm(wc, dim=1, keepdim=True)
    if norm.numel():
        lo, hi = torch.aminmax(norm)
        if bool(torch.isfinite(hi)) and bool(lo >= _TINY_NORM):
            return Rows(wc, norm, wc / norm.clamp_min(_NORM_EPS), keeps_norm)
    return Rows(wc, *A.norm_and_unit(A.namespace(wc), wc, _NORM_EPS), keeps_norm)


def _chunk(prob: Problem, x: Rows, wc: torch.Tensor, a: int, b: int, col: torch.Tensor,
           own: torch.Tensor) -> _Chunk:
    xp = A.namespace(wc)
    n, c = x.unit.shape[0], b - a
    w = centre_rows(wc, prob.variant.keeps_w_norm)
    cos = x.unit @ w.unit.T
    idx = None
    if prob.k > 1:
        cos, idx = cos.view(n, c, prob.k).max(dim=-1)
    inside = own & (col >= a) & (col < b)
    ccol = (col - a).clamp(0, c - 1)
    c_y = cos.gather(1, ccol[:, None]).squeeze(1)
    f_y, fp_y = prob.variant.target(xp, c_y)
    z = cos * prob.scale
    z_y = f_y * prob.scale
    if x.keeps_norm:
        z = z * x.norm
        z_y = z_y * x.norm[:, 0]
    if w.keeps_norm:  # only with one centre per class
        z = z * w.norm.T
        z_y = z_y * w.norm[ccol, 0]
    z.scatter_(1, ccol[:, None], torch.where(inside, z_y, z.gather(1, ccol[:, None])[:, 0])
               [:, None])
    return _Chunk(z, cos, idx, w, inside, ccol, c_y, f_y, fp_y, z_y)


def _spread(prob: Problem, m: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """(N, c) per-class values onto the (N, c k) centres: each at its best sub-centre."""
    if idx is None:
        return m
    n, c = m.shape
    out = m.new_zeros(n, c, prob.k)
    out.scatter_(2, idx[..., None], m[..., None])
    return out.view(n, c * prob.k)


# --------------------------------------------------------------------------- forward, backward


def forward_rows(prob: Problem, x: Rows, weight: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (loss, logsumexp, valid) over every class of every rank."""
    acc = x.unit.dtype
    n = labels.shape[0]
    col, own, valid = local_columns(prob, labels)
    m = torch.full((n,), -math.inf, dtype=acc, device=labels.device)
    s = torch.zeros(n, dtype=acc, device=labels.device)
    z_y = torch.zeros(n, dtype=acc, device=labels.device)
    for a in range(0, prob.width, prob.chunk):
        b = min(a + prob.chunk, prob.width)
        ch = _chunk(prob, x, _centres(prob, weight, a, b, acc), a, b, col, own)
        m_new = torch.maximum(m, ch.z.amax(dim=1))
        z_y = torch.where(ch.inside, ch.z_y, z_y)
        s = s * torch.exp(m - m_new) + ch.z.sub_(m_new[:, None]).exp_().sum(dim=1)
        m = m_new
        del ch  # before the next chunk's matrices exist: one chunk's memory at a time
    if prob.world > 1:
        m_all = _all_reduce(m.clone(), torch.distributed.ReduceOp.MAX, prob)
        # an empty slice (m = -inf) adds nothing; exp(-inf - finite) = 0
        both = torch.stack([s * torch.exp(m - m_all), z_y])
        _all_reduce(both, torch.distributed.ReduceOp.SUM, prob)
        m, (s, z_y) = m_all, both.unbind(0)
    lse = m + torch.log(s)
    loss = torch.where(valid, lse - z_y, torch.zeros_like(lse))
    return loss, lse, valid


def _backward_chunk(prob: Problem, x: Rows, xs: torch.Tensor, weight: torch.Tensor, a: int,
                    b: int, col: torch.Tensor, own: torch.Tensor, lse: torch.Tensor,
                    gos: torch.Tensor, sums: tuple[torch.Tensor, torch.Tensor,
                                                   torch.Tensor | None],
                    gw: torch.Tensor | None) -> None:
    """One chunk's share of the gradients: added to the embeddings' sums, written into the
    centres' gradient ``gw`` (in place)."""
    t_x, a_x, b_x = sums
    acc = x.unit.dtype
    d = x.unit.shape[1]
    ch = _chunk(prob, x, _centres(prob, weight, a, b, acc), a, b, col, own)
    g = ch.z.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
    inside = ch.inside.to(acc)
    g.scatter_add_(1, ch.col[:, None], -inside[:, None])
    g.mul_(gos)  # dL/dz times the scale: (softmax - onehot) s go
    g_t = g.gather(1, ch.col[:, None])[:, 0] * inside
    # h = g f'(cos): f' is 1 off the targets
    g.scatter_add_(1, ch.col[:, None], (g_t * (ch.fp_y - 1.0))[:, None])
    hc = g * ch.cos
    wn = ch.w.norm if ch.w.keeps_norm else None  # (c, 1), one centre per class
    # target terms of sum_j K f (the b sums): g_t (f_y - f'_y c_y)
    t_extra = g_t * (ch.f_y - ch.fp_y * ch.c_y)
    # embeddings side: K = g R_w
    if wn is None:
        t_x += _spread(prob, g, ch.idx) @ ch.w.unit
        a_chunk = hc.sum(dim=1, keepdim=True)
        b_extra = t_extra
    else:
        t_x += g @ (ch.w.unit * wn)
        a_chunk = hc @ wn
        b_extra = t_extra * wn[ch.col, 0]
    a_x += a_chunk
    if b_x is not None:
        b_x += a_chunk + b_extra[:, None]
    if gw is None:
        return
    # class-centre side: K = g R_x, summed over the rows
    t_w = _spread(prob, g, ch.idx).T @ xs  # (c k, D)
    hcx = hc * x.norm if x.keeps_norm else hc
    a_w = _spread(prob, hcx, ch.idx).sum(dim=0)[:, None]  # (c k, 1)
    del g, hc, hcx
    b_w = None
    if ch.w.keeps_norm:
        tx = t_extra * x.norm[:, 0] if x.keeps_norm else t_extra
        b_w = a_w.clone()
        b_w[:, 0].scatter_add_(0, ch.col, tx)
    gwc = finish_rows(A.namespace(t_w), ch.w, t_w, a_w, b_w).view(b - a, prob.k, d)
    if prob.classes is None:
        gw[a:b] = gwc
    else:
        gw.index_copy_(0, prob.classes[a:b], gwc.to(gw.dtype))


def backward_rows(prob: Problem, x: Rows, weight: torch.Tensor, labels: torch.Tensor,
                  lse: torch.Tensor, go: torch.Tensor, want_w: bool
                  ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
                             torch.Tensor | None]:
    """The embeddings' three gradient sums over this rank's classes (summed over ranks by the
    caller) and the class centres' gradient (None unless ``want_w``); ``go`` is each row's
    cotangent (0 on ignored rows)."""
    acc = x.unit.dtype
    n, d = x.unit.shape
    col, own, _ = local_columns(prob, labels)
    t_x = torch.zeros(n, d, dtype=acc, device=labels.device)
    a_x = torch.zeros(n, 1, dtype=acc, device=labels.device)
    b_x = torch.zeros(n, 1, dtype=acc, device=labels.device) if x.keeps_norm else None
    gw = None
    if want_w:
        gw = torch.zeros(prob.local, prob.k, d, dtype=weight.dtype, device=weight.device)
    gos = (go * prob.scale)[:, None]
    xs = x.unit * x.norm if x.keeps_norm else x.unit  # rows of the W side's "other" factor
    for a in range(0, prob.width, prob.chunk):
        # a function per chunk: its matrices are freed before the next chunk's exist
        _backward_chunk(prob, x, xs, weight, a, min(a + prob.chunk, prob.width), col, own,
                        lse, gos, (t_x, a_x, b_x), gw)
    return (t_x, a_x, b_x), (None if gw is None else gw.view(prob.local * prob.k, d))


def x_rows(embeddings: torch.Tensor, prob: Problem) -> Rows:
    """The embeddings as the row factor of the cosines, in the compute dtype."""
    x = embeddings.to(acc_dtype(embeddings.dtype))
    xp = A.namespace(x)
    return Rows(x, *A.norm_and_unit(xp, x, _NORM_EPS), prob.variant.keeps_x_norm)


def row_cotangent(grad: torch.Tensor, valid: torch.Tensor, reduction: str,
                  acc: torch.dtype) -> torch.Tensor:
    """Each row's share of the cotangent: 0 on ignored rows, 1/count for "mean"."""
    grad = grad.to(acc)
    if reduction == "none":
        return torch.where(valid, grad, torch.zeros_like(grad))
    scale = mean_scale(valid, reduction, acc) * grad
    return valid.to(acc) * scale


def reduce_loss(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-row losses reduced with the same scale :func:`row_cotangent` gives the rows."""
    if reduction == "none":
        return loss
    return loss.sum() * mean_scale(valid, reduction, loss.dtype)


# --------------------------------------------------------------------------- single process


class MarginLinearCE(torch.autograd.Function):
    """(N, D) embeddings, (C k, D) centres, (N,) labels -> the loss.

    The forward keeps only the per-row logsumexp; the backward visits the chunks again. With
    ``gather`` (class-parallel, each rank passing its own rows) the embeddings and labels are
    all-gathered first, the loss is that of the global batch ("none": this rank's rows) and
    the embeddings' gradient is this rank's rows of the global one, times ``grad_scale``.
    ``sampler`` maps the global labels to the kept local classes (negative sampling). A
    differentiable backward (``create_graph=True``) differentiates the materialised composite
    in one process, and is refused across processes.
    """

    @staticmethod
    def forward(ctx, embeddings, weight, labels, prob: Problem, gather: bool, sampler: Any,
                grad_scale: float):
        sizes = None
        xg, yg = embeddings, labels
        if gather and prob.world > 1:
            xg, yg, sizes = _gather_rows(embeddings, labels, prob)
        if sampler is not None:
            prob = replace(prob, classes=sampler(yg))
        x = x_rows(xg, prob)
        loss, lse, valid = forward_rows(prob, x, weight, yg)
        ctx.prob, ctx.sizes, ctx.grad_scale = prob, sizes, grad_scale
        ctx.save_for_backward(xg, weight, yg, lse, valid)
        if prob.reduction == "none":
            return _mine(loss, sizes, prob).to(embeddings.dtype)
        return reduce_loss(loss, valid, prob.reduction).to(embeddings.dtype)

    @staticmethod
    def backward(ctx, grad):
        xg, weight, labels, lse, valid = ctx.saved_tensors
        prob: Problem = ctx.prob
        need_x, need_w = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            if prob.world > 1:
                raise RuntimeError("the class-parallel margin loss has no differentiable "
                                   "backward (create_graph=True) across processes")
            with torch.enable_grad(), autocast_off(grad.device.type):
                out = composite(xg, weight, labels, prob)
                inputs = [t for t, nd in ((xg, need_x), (weight, need_w)) if nd]
                got = iter(torch.autograd.grad(out, inputs, grad, create_graph=True))
            return (next(got) if need_x else None, next(got) if need_w else None,
                    None, None, None, None, None)
        if prob.reduction == "none" and ctx.sizes is not None:
            grad = _all_rows(grad.contiguous(), ctx.sizes, prob)
        x = x_rows(xg, prob)
        go = row_cotangent(grad, valid, prob.reduction, lse.dtype)
        sums, gw = backward_rows(prob, x, weight, labels, lse, go, need_w)
        gx = None
        if prob.world > 1:  # every rank takes part, whatever its own inputs need
            t, a, b = sums
            both = _all_reduce(torch.cat([t, a] + ([] if b is None else [b]), dim=1),
                               torch.distributed.ReduceOp.SUM, prob)
            d = t.shape[1]
            sums = (both[:, :d], both[:, d:d + 1], None if b is None else both[:, d + 1:])
        if need_x:
            gx = finish_rows(A.namespace(lse), x, *sums)
            gx = _mine(gx, ctx.sizes, prob)
            if ctx.grad_scale != 1.0:
                gx = gx * ctx.grad_scale
            gx = gx.to(xg.dtype)
        return gx, gw, None, None, None, None, None


def _offsets(sizes: list[int], prob: Problem) -> tuple[int, int]:
    rank = torch.distributed.get_rank(prob.group)
    return sum(sizes[:rank]), sizes[rank]


def _mine(rows: torch.Tensor, sizes: list[int] | None, prob: Problem) -> torch.Tensor:
    """This rank's rows of a global-batch tensor (all of it without gathering)."""
    if sizes is None:
        return rows
    start, n = _offsets(sizes, prob)
    return rows[start:start + n]


def _all_rows(t: torch.Tensor, sizes: list[int], prob: Problem) -> torch.Tensor:
    """Concatenate every rank's rows of ``t`` (rank order), sizes may differ."""
    top = max(sizes)
    pad = t.new_zeros((top - t.shape[0], *t.shape[1:]))
    parts = [t.new_empty((top, *t.shape[1:])) for _ in sizes]
    torch.distributed.all_gather(parts, torch.cat([t, pad]), group=prob.group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def _gather_rows(embeddings: torch.Tensor, labels: torch.Tensor, prob: Problem
                 ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The global batch: every rank's embeddings and labels, in rank order."""
    mine = torch.tensor([embeddings.shape[0]], dtype=torch.int64, device=labels.device)
    parts = [torch.empty_like(mine) for _ in range(prob.world)]
    torch.distributed.all_gather(parts, mine, group=prob.group)
    sizes = [int(p.item()) for p in parts]
    return (_all_rows(embeddings.contiguous(), sizes, prob),
            _all_rows(labels.contiguous(), sizes, prob), sizes)


def composite(embeddings: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
              prob: Problem) -> torch.Tensor:
    """The same loss on the materialised logits, in differentiable torch ops (the
    double-backward path; N x C memory)."""
    acc = acc_dtype(embeddings.dtype)
    x = embeddings.to(acc)
    w = weight.to(acc).view(prob.local, prob.k, -1)
    if prob.classes is not None:
        w = w[prob.classes]
    w = w.reshape(-1, x.shape[-1])
    xn = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    wn = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    cos = F.normalize(x, eps=_NORM_EPS) @ F.normalize(w, eps=_NORM_EPS).T
    if prob.k > 1:
        cos = cos.view(cos.shape[0], -1, prob.k).amax(dim=-1)
    col, own, valid = local_columns(prob, labels)
    c_y = cos.gather(1, col[:, None])[:, 0]
    f_y, _ = prob.variant.target(A.namespace(cos), c_y)
    f = cos + F.one_hot(col, cos.shape[1]).to(acc) * (own.to(acc) * (f_y - c_y))[:, None]
    z = f * prob.scale
    if prob.variant.keeps_x_norm:
        z = z * xn
    if prob.variant.keeps_w_norm:
        z = z * wn.T
    rows = torch.logsumexp(z, dim=1) - z.gather(1, col[:, None])[:, 0]
    rows = torch.where(valid, rows, torch.zeros_like(rows))
    return reduce_loss(rows, valid, prob.reduction).to(embeddings.dtype)


def check_inputs(embeddings: Any, class_weight: Any, labels: Any, sub_centers: Any,
                 weight_name: str = "class_weight") -> int:
    """Types and shapes; returns the number of centres per class."""
    require_tensor(embeddings, "embeddings")
    require_tensor(class_weight, weight_name)
    require_tensor(labels, "labels")
    require_floating(embeddings, "embeddings")
    require_floating(class_weight, weight_name)
    require_class_indices(labels)
    k = _checks.positive_int(sub_centers, "sub_centers")
    _checks.matrix(embeddings, "embeddings")
    if class_weight.dim() != 2 or class_weight.shape[1] != embeddings.shape[1]:
        raise ValueError(f"{weight_name} must have shape (C * sub_centers, D) with D = "
                         f"embeddings.shape[1] = {embeddings.shape[1]}, got "
                         f"{tuple(class_weight.shape)}")
    if class_weight.shape[0] % k:
        raise ValueError(f"{weight_name} must have a multiple of sub_centers={k} rows (C * "
                         f"sub_centers, class-major), got {class_weight.shape[0]}")
    _checks.shape(labels, (embeddings.shape[0],), "labels", "(N,)")
    if class_weight.device != embeddings.device or labels.device != embeddings.device:
        raise ValueError(f"embeddings, {weight_name} and labels must be on one device, got "
                         f"{embeddings.device}, {class_weight.device}, {labels.device}")
    return k


def resolve_variant(margin_type: Any, margin: Any, scale: Any, easy_margin: Any, k: int
                    ) -> tuple[_Variant, float]:
    variant, default_scale = variant_for(margin_type, margin, bool(easy_margin))
    if k > 1 and variant.keeps_w_norm:
        raise ValueError(f"sub_centers={k} needs unit class centres; margin_type="
                         f"{margin_type!r} keeps their norms (use sub_centers=1)")
    return variant, _checks.positive(default_scale if scale is None else scale, "scale")


class MarginOptions(TypedDict, total=False):
    """The options of :func:`margin_linear_cross_entropy` the class-parallel form passes on."""

    margin_type: str
    margin: float | None
    scale: float | None
    easy_margin: bool
    sub_centers: int
    chunk_size: int | None
    reduction: str
    ignore_index: int


@dataclass(frozen=True)
class Parallel:
    """How a class-parallel call shares the classes (checked by the caller)."""

    group: Any = None
    gather: bool = False
    class_start_index: int | None = None
    num_classes: int | None = None
    sample_rate: float = 1.0
    generator: torch.Generator | None = None
    embedding_grad_scale: float = 1.0


def margin_linear_cross_entropy(
    embeddings: torch.Tensor,
    class_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin_type: str = "arcface",
    margin: float | None = None,
    scale: float | None = None,
    easy_margin: bool = False,
    sub_centers: int = 1,
    chunk_size: int | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    _parallel: Parallel | None = None,
) -> torch.Tensor:
    """Margin softmax cross-entropy of embeddings against class centres, chunked over classes.

    Formula: with ``u = x / ||x||``, ``v_j = W_j / ||W_j||`` and ``cos_j = u . v_j`` (with
    ``k`` sub-centres per class, ``cos_j = max_k u . v_jk``), the logits are
    ``z_j = s R_j cos_j`` off the target and ``z_y = s R_y f(cos_y)`` at it, where ArcFace
    has ``f = cos(theta + m)``, CosFace ``cos - m``, SphereFace and L-Softmax
    ``(-1)^k cos(m theta) - 2k``, and ``R_j`` is ``||x|| ||W_j||`` (L-Softmax), ``||x||``
    (SphereFace) or 1; ``l = logsumexp(z) - z_y``. The value and both gradients equal those
    of :func:`crossent.arcface_loss` (and its siblings) on the materialised logits, but only
    chunk-sized matrices are ever allocated.

    Gradient: ``dL/dz = softmax(z) - onehot(y)``, carried to the embeddings and the centres
    through the margin function and the normalisations exactly as in
    :func:`crossent.large_margin_softmax_loss`; with sub-centres the gradient of each class
    goes to its best-matching centre.

    Args:
        embeddings: ``(N, D)`` floating features.
        class_weight: ``(C * sub_centers, D)`` class centres, class-major (rows ``j k`` to
            ``j k + k - 1`` belong to class ``j``), the transpose of pytorch-metric-learning's
            ``W``.
        labels: ``(N,)`` integer classes in ``[0, C)`` or ``ignore_index``.
        margin_type: ``"arcface"``, ``"cosface"``, ``"sphereface"`` or ``"lsoftmax"``.
        margin: radians for ArcFace (default 0.5), the cosine margin for CosFace (0.35), the
            integer multiplier for SphereFace / L-Softmax (4).
        scale: ``s``; default 64 (ArcFace, CosFace) or 1 (SphereFace, L-Softmax).
        easy_margin: ArcFace only: apply the margin only where ``cos > 0``.
        sub_centers: centres per class (sub-center ArcFace); must be 1 for L-Softmax.
        chunk_size: classes per chunk; None: :func:`choose_class_chunk`.
        reduction: ``"mean"`` over non-ignored rows (0 when none), ``"sum"`` or ``"none"``.
        ignore_index: label of rows that count for nothing.
        _parallel: internal: set by
            :func:`crossent.torch.distributed.class_parallel_margin_cross_entropy`.

    Returns:
        The loss in the embeddings' dtype (computed in float32 for fp16/bf16 inputs, float64
        for float64): a scalar, or ``(N,)`` for ``reduction="none"``.

    Raises:
        TypeError: non-tensor or non-floating inputs, non-integer labels.
        ValueError: bad shapes, a label out of range, an unknown ``margin_type`` or
            ``reduction``, a bad ``margin``, ``scale``, ``sub_centers`` or ``chunk_size``.

    Example:
        >>> import torch, crossent
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(4, 8, generator=g, dtype=torch.float64)
        >>> W = torch.randn(10, 8, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([0, 3, 9, 3])
        >>> a = margin_linear_cross_entropy(x, W, y, margin=0.5, scale=16.0, chunk_size=3)
        >>> b = crossent.arcface_loss(x, W, y, margin=0.5, scale=16.0)
        >>> bool(torch.allclose(a, b, rtol=1e-12))
        True

    References: Deng et al. 2019, "ArcFace" (arXiv:1801.07698), and its sub-center
    extension (Deng et al. 2020, ECCV); Wang et al. 2018, "CosFace" (arXiv:1801.09414);
    Liu et al. 2017, "SphereFace" (arXiv:1704.08063); Liu et al. 2016, "Large-Margin
    Softmax" (arXiv:1612.02295); An et al. 2021, "Partial FC" (arXiv:2010.05222) for
    training with millions of classes.
    """
    k = check_inputs(embeddings, class_weight, labels, sub_centers)
    variant, scale = resolve_variant(margin_type, margin, scale, easy_margin, k)
    reduction = _checks.reduction(reduction)
    ignore_index = _checks.index(ignore_index, "ignore_index")
    local = class_weight.shape[0] // k
    par = Parallel() if _parallel is None else _parallel
    start, total, group, world = 0, local, None, 1
    if _parallel is None:
        if local == 0:
            raise ValueError("class_weight must have at least one class, got shape "
                             f"{tuple(class_weight.shape)}")
    else:
        from .distributed import _resolve_shard  # that module imports this one

        shard = _resolve_shard(par.group, local, par.class_start_index, par.num_classes,
                               embeddings.device, tuple(class_weight.shape),
                               ("class_start_index", "num_classes", "class centres"))
        start, total, group, world = shard.start, shard.vocab_size, shard.group, shard.world
    check_labels(labels, total, ignore_index, "labels")
    rows = embeddings.shape[0] * (world if par.gather else 1)
    chunk = (choose_class_chunk(rows, local, embeddings.shape[1], sub_centers=k)
             if chunk_size is None else _checks.positive_int(chunk_size, "chunk_size"))
    prob = Problem(variant, scale, k, chunk, start, local, None, ignore_index, reduction,
                   group, world)
    sampler = (None if par.sample_rate == 1.0 else
               partial_fc_sampler(par.sample_rate, start, local, ignore_index, par.generator))
    if _parallel is None and transform_active(embeddings, class_weight):
        # torch.func transforms and forward-mode AD: the composite, on materialised logits
        return composite(embeddings, class_weight, labels, prob)
    refuse_dual("class_parallel_margin_cross_entropy", embeddings, class_weight)
    return MarginLinearCE.apply(embeddings, class_weight, labels, prob, par.gather, sampler,
                                par.embedding_grad_scale)
