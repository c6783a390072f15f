"""Chunked linear distillation: ``T^2 KL(teacher || student)`` (or the generalized
Jensen-Shannon divergence) of two heads' logits, neither N x V logits matrix ever built."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .. import _checks
from ._common import (
    ChunkGrads,
    autocast_off,
    check_labels,
    check_linear_shapes,
    logit_chunks,
    loss_dtype,
    needs_grad,
    require_floating,
    require_tensor,
    safe_inv,
    scale_by_grad_output,
    transform_active,
)
from ._rows import acc_dtype

# fp32 buffers of one chunk's (rows, V) shape alive at once in the row math below (the two
# logits chunks, the teacher's probabilities, one product and one temporary)
_CHUNK_BUFFERS = 6


def choose_distill_chunk(n: int, v: int, itemsize: int = 4) -> int:
    """Rows per chunk for :func:`linear_distillation_loss`: the chunk's fp32 working buffers
    (about six of shape (rows, V)) stay within a tenth of one N x V logits matrix of
    ``itemsize`` bytes per logit.

    Example:
        >>> choose_distill_chunk(4096, 32000)
        68
    """
    if n <= 0:
        return 1
    del v  # the budget and the buffers both scale with V
    return int(max(1, min(n, (n * itemsize) // (10 * _CHUNK_BUFFERS * 4))))


class _Cfg:
    """The scalar options, checked once (one ``apply`` argument)."""

    def __init__(self, temperature: float, beta: float | None, hard_weight: float,
                 ignore_index: int, reduction: str, chunk: int, out_dtype: torch.dtype):
        self.t, self.beta, self.hard, self.ii = temperature, beta, hard_weight, ignore_index
        self.reduction, self.chunk, self.out_dtype = reduction, chunk, out_dtype


def _soft_term(p: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor, beta: float | None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-row ``KL(p || q)``, or with ``beta`` the generalized JSD
    ``beta KL(p || m) + (1 - beta) KL(q || m)``; returns ``(soft, q, log m)`` (the last two
    None for the KL). xlogy-style products: a class of probability 0 adds 0, even at a -inf
    logit (0 * inf would be NaN)."""
    if beta is None:
        return torch.where(p > 0, p * (log_p - log_q), 0.0).sum(dim=1), None, None
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    q = log_q.exp()
    soft = (beta * torch.where(p > 0, p * (log_p - log_m), 0.0).sum(dim=1)
            + (1.0 - beta) * torch.where(q > 0, q * (log_q - log_m), 0.0).sum(dim=1))
    return soft, q, log_m


def _row_terms(zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor | None, cfg: _Cfg,
               grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row loss of a chunk, and (``grad``) its gradient w.r.t. the student logits.

    ``zs`` and ``zt`` are (rows, V) logits in the accumulation dtype that this function owns
    (it overwrites them). The soft term is ``T^2 KL(p || q)`` with ``p = softmax(zt / T)``,
    ``q = softmax(zs / T)`` (gradient ``T (q - p)``), or with ``beta`` the generalized JSD
    ``beta KL(p || m) + (1 - beta) KL(q || m)``, ``m = beta p + (1 - beta) q``, whose gradient
    w.r.t. ``q`` is ``(1 - beta) log(q / m)``; the hard term is the cross-entropy of ``zs``
    (at temperature 1) with ``y``, mixed as ``(1 - hard) soft + hard CE``. Rows whose label
    is ``ignore_index`` get 0 and a zero gradient.
    """
    t, beta, h = cfg.t, cfg.beta, cfg.hard
    valid = None if y is None else y != cfg.ii
    hard_rows = soft1 = ysafe = None
    if h:
        assert y is not None and valid is not None  # checked by the caller
        lse1 = torch.logsumexp(zs, dim=1, keepdim=True)
        ysafe = torch.where(valid, y, torch.zeros_like(y)).unsqueeze(1)
        hard_rows = (lse1 - zs.gather(1, ysafe)).squeeze(1)
        if grad:
            soft1 = torch.exp(zs - lse1)  # softmax at temperature 1, for the hard gradient
    if t != 1.0:
        zs.div_(t)
        zt.div_(t)
    log_q = zs.sub_(torch.logsumexp(zs, dim=1, keepdim=True))
    log_p = zt.sub_(torch.logsumexp(zt, dim=1, keepdim=True))
    p = log_p.exp()
    soft, q, log_m = _soft_term(p, log_p, log_q, beta)
    rows = soft * (t * t)
    if hard_rows is not None:
        rows = (1.0 - h) * rows + h * hard_rows
    if valid is not None:
        rows = torch.where(valid, rows, torch.zeros_like(rows))
    if not grad:
        return rows, None
    # d(T^2 soft)/dzs = T d soft/du at u = zs / T
    if beta is None:
        g = log_q.exp_().sub_(p)  # q - p, in the student's buffer
    else:
        assert q is not None and log_m is not None
        g = log_q.sub_(log_m).mul_(1.0 - beta)  # d JSD / d q
        g.sub_((q * g).sum(dim=1, keepdim=True)).mul_(q)  # through the softmax
    g.mul_((1.0 - h) * t)
    if soft1 is not None:
        assert ysafe is not None
        g.add_(soft1, alpha=h).scatter_add_(
            1, ysafe, torch.full(ysafe.shape, -h, dtype=g.dtype, device=g.device))
    if valid is not None:
        g.masked_fill_(~valid.unsqueeze(1), 0.0)
    return rows, g


def _chunks(sh, sw, sb, th, tw, tb, y, cfg: _Cfg, scale, need, loss_rows):
    """The chunk loop: fill ``loss_rows`` (N,) and return (grad_h, grad_w, grad_b) of the
    student for ``need``, each multiplied by ``scale`` (0-d, or (N,) per row)."""
    grad = any(need)
    grads = ChunkGrads(sh, sw, need)
    acc = acc_dtype(sh.dtype)
    per_row = isinstance(scale, torch.Tensor) and scale.dim() == 1
    tbuf = torch.empty((min(cfg.chunk, sh.shape[0]), tw.shape[0]), dtype=th.dtype,
                       device=th.device)
    twt = tw.t()
    for i0, i1, hc, lc in logit_chunks(sh, sw, sb, cfg.chunk):
        tc = tbuf[: i1 - i0]
        if tb is None:
            torch.mm(th[i0:i1], twt, out=tc)
        else:
            torch.addmm(tb, th[i0:i1], twt, out=tc)
        zs = lc if lc.dtype == acc else lc.to(acc)
        zt = tc if tc.dtype == acc else tc.to(acc)  # the reused buffer may be overwritten
        yc = None if y is None else y[i0:i1]
        rows, g = _row_terms(zs, zt, yc, cfg, grad)
        loss_rows[i0:i1] = rows
        if g is None:
            continue
        g.mul_(scale[i0:i1].unsqueeze(1) if per_row else scale)
        if g is not lc:
            lc.copy_(g)
        if need[1] and yc is not None:
            # an ignored row's zero gradient must not meet non-finite activations (0 * inf)
            hc = hc.masked_fill((yc == cfg.ii).unsqueeze(1), 0.0)
        grads.add(i0, i1, lc, hc)
    return grads.result(sb)


def _scale(y: torch.Tensor | None, n: int, cfg: _Cfg, acc: torch.dtype, device: Any
           ) -> torch.Tensor:
    """The reduction's factor: 1 / (number of counted rows) for "mean", else 1."""
    if cfg.reduction != "mean":
        return torch.ones((), dtype=acc, device=device)
    count = (y != cfg.ii).sum().to(acc) if y is not None else torch.tensor(
        float(n), dtype=acc, device=device)
    return safe_inv(count)


def _reduce(rows: torch.Tensor, scale: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return rows
    return rows.sum() * scale if reduction == "mean" else rows.sum()


class _LinearDistillation(torch.autograd.Function):
    """Student (N, H_s) hidden, (V, H_s) weight, (V,) bias; the teacher's three (no grad);
    labels or None -> the loss. mean/sum: the student's gradients are accumulated chunk by
    chunk in the forward and scaled by grad_output in backward; none: the backward
    recomputes the chunks with the per-row grad_output. A differentiable backward
    (``create_graph=True``) differentiates the materialised composite instead."""

    @staticmethod
    def forward(ctx, sh, sw, sb, th, tw, tb, y, cfg: _Cfg):
        acc = acc_dtype(sh.dtype)
        n = sh.shape[0]
        scale = _scale(y, n, cfg, acc, sh.device)
        need = tuple(ctx.needs_input_grad[:3])
        pre = cfg.reduction != "none"
        loss_rows = torch.empty(n, dtype=acc, device=sh.device)
        grads = _chunks(sh, sw, sb, th, tw, tb, y, cfg, scale, need if pre else
                        (False,) * 3, loss_rows)
        ctx.cfg, ctx.grads = cfg, grads if pre else None
        ctx.save_for_backward(sh, sw, sb, th, tw, tb, y, scale)
        return _reduce(loss_rows, scale, cfg.reduction).to(cfg.out_dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        grads, ctx.grads = ctx.grads, None
        sh, sw, sb, th, tw, tb, y, scale = ctx.saved_tensors
        cfg, need = ctx.cfg, tuple(ctx.needs_input_grad[:3])
        if torch.is_grad_enabled():  # create_graph=True: differentiable gradients
            with torch.enable_grad(), autocast_off(grad_loss.device.type):
                loss = composite(sh, sw, sb, th, tw, tb, y, cfg)
                inputs = [t for t, k in zip((sh, sw, sb), need, strict=True) if k]
                got = iter(torch.autograd.grad(loss, inputs, grad_loss, create_graph=True))
            out = tuple(next(got) if k else None for k in need)
        elif grads is None:  # reduction "none", or a second backward: recompute
            tmp = torch.empty(sh.shape[0], dtype=scale.dtype, device=sh.device)
            with autocast_off(sh.device.type):
                out = _chunks(sh, sw, sb, th, tw, tb, y, cfg,
                              grad_loss.to(scale.dtype) * scale, need, tmp)
        else:
            out = scale_by_grad_output(grads, grad_loss)
        return (*out, None, None, None, None, None)


def composite(sh, sw, sb, th, tw, tb, y, cfg: _Cfg) -> torch.Tensor:
    """The same loss in differentiable torch ops on the materialised logits: the form that
    torch.func transforms and double backward differentiate (N x V memory)."""
    acc = acc_dtype(sh.dtype)
    t, beta, h = cfg.t, cfg.beta, cfg.hard
    zs = F.linear(sh, sw, sb).to(acc)
    zt = F.linear(th, tw, tb).to(acc).detach()
    log_q = torch.log_softmax(zs / t, dim=1)
    log_p = torch.log_softmax(zt / t, dim=1)
    soft = _soft_term(log_p.exp(), log_p, log_q, beta)[0]
    rows = soft * (t * t)
    if h:
        assert y is not None
        rows = (1.0 - h) * rows + h * F.cross_entropy(zs, y, ignore_index=cfg.ii,
                                                      reduction="none")
    if y is not None:
        rows = torch.where(y != cfg.ii, rows, torch.zeros_like(rows))
    scale = _scale(y, sh.shape[0], cfg, acc, sh.device)
    return _reduce(rows, scale, cfg.reduction).to(cfg.out_dtype)


def linear_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    *,
    temperature: float = 1.0,
    target: torch.Tensor | None = None,
    hard_weight: float = 0.0,
    ignore_index: int = -100,
    beta: float | None = None,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Knowledge distillation between two LM heads, chunked: no N x V logits are built.

    .. math::
        \ell_i = (1 - \lambda)\, T^2\, D_{KL}(p_i \,\|\, q_i)
                 + \lambda\, \mathrm{CE}(s_i, y_i),\qquad
        p_i = \mathrm{softmax}(t_i / T),\ q_i = \mathrm{softmax}(s_i / T)

    with student logits ``s = student_hidden @ student_weight.T + student_bias`` and teacher
    logits ``t`` likewise (Hinton et al.'s direction, KL(teacher || student), as
    :func:`crossent.distillation_loss`). With ``beta`` in (0, 1) the soft term is the
    generalized Jensen-Shannon divergence of GKD, ``beta KL(p || m) + (1 - beta) KL(q || m)``
    with ``m = beta p + (1 - beta) q`` (still times ``T^2``). Rows are processed in chunks:
    each chunk's student and teacher logits are computed, turned into the loss and the
    gradient w.r.t. the student logits (``T (q - p)`` for the KL), and contracted at once into
    the student's ``grad_hidden``, ``grad_weight`` and ``grad_bias``. The teacher is detached:
    it receives no gradient. Extra memory is a few (chunk, V) buffers, a tenth of one logits
    matrix with the default chunk size (:func:`choose_distill_chunk`).

    Args:
        student_hidden: (..., H_s) student activations; floating.
        student_weight: (V, H_s) student LM head, same dtype.
        teacher_hidden: (..., H_t) teacher activations, the same leading shape.
        teacher_weight: (V, H_t) teacher LM head (the same vocabulary), same dtype as
            ``teacher_hidden``.
        temperature: ``T > 0``, softening both distributions.
        target: optional (...) class labels: the hard term's labels, and ``ignore_index``
            marks rows (padding) that count in neither term nor in the mean.
        hard_weight: ``lambda`` in [0, 1], the hard cross-entropy's share (needs ``target``).
        ignore_index: the label of rows to skip.
        beta: None for the KL, or in (0, 1) for the generalized JSD.
        student_bias, teacher_bias: optional (V,) biases.
        chunk_size: rows per chunk; None chooses one (:func:`choose_distill_chunk`).
        reduction: ``"mean"`` over the counted rows (all rows without ``target``), ``"sum"``
            or ``"none"`` (the leading shape).

    Returns:
        The loss in the student's dtype: a scalar, or per row for ``"none"``.

    Raises:
        ValueError: mismatched shapes or vocabularies, ``temperature`` not positive,
            ``hard_weight`` outside [0, 1] or positive without ``target``, ``beta`` outside
            (0, 1), a bad ``reduction`` / ``chunk_size``, (CPU) a label out of range.
        TypeError: non-tensor or non-floating inputs, mismatched dtypes, non-integer labels.

    Example:
        >>> import torch, crossent
        >>> from crossent.torch import linear_distillation_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> hs, ws = torch.randn(6, 4, generator=g), torch.randn(10, 4, generator=g)
        >>> ht, wt = torch.randn(6, 8, generator=g), torch.randn(10, 8, generator=g)
        >>> loss = linear_distillation_loss(hs, ws, ht, wt, temperature=2.0, chunk_size=4)
        >>> ref = crossent.distillation_loss(hs @ ws.T, ht @ wt.T, temperature=2.0)
        >>> torch.allclose(loss, ref)
        True

    Aliases: Liger-Kernel ``LigerFusedLinearJSDLoss`` (``beta``) and its fused linear
    distillation losses; Hinton's KD loss at LLM vocabulary size.

    References:
        Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network";
        Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from
        Self-Generated Mistakes" (GKD, the generalized JSD); Liger-Kernel (Hsu et al., 2024).
    """
    for name, x in (("student_hidden", student_hidden), ("student_weight", student_weight),
                    ("teacher_hidden", teacher_hidden), ("teacher_weight", teacher_weight)):
        require_tensor(x, name)
        require_floating(x, name)
    for name, opt in (("target", target), ("student_bias", student_bias),
                      ("teacher_bias", teacher_bias)):
        require_tensor(opt, name, optional=True)
    red = _checks.reduction(reduction)
    t = float(_checks.positive(temperature, "temperature"))
    h = float(_checks.unit_interval(hard_weight, "hard_weight"))
    ii = _checks.index(ignore_index, "ignore_index")
    b = None if beta is None else float(_checks.number(
        beta, "beta", low=0.0, high=1.0, low_open=True, high_open=True,
        what="None or a number in (0, 1)"))
    chunk_size = _checks.positive_int(chunk_size, "chunk_size", allow_none=True)
    if h and target is None:
        raise ValueError(f"hard_weight={hard_weight!r} needs target= (the hard labels)")
    lead = tuple(student_hidden.shape[:-1])
    if target is not None and (target.is_floating_point() or target.dtype == torch.bool
                               or target.is_complex()):
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    v = check_linear_shapes(student_hidden, student_weight, student_bias, target,
                            weight_name="student_weight", bias_name="student_bias",
                            hidden_name="student_hidden")
    vt = check_linear_shapes(teacher_hidden, teacher_weight, teacher_bias, None,
                             weight_name="teacher_weight", bias_name="teacher_bias",
                             hidden_name="teacher_hidden")
    if tuple(teacher_hidden.shape[:-1]) != lead:
        raise ValueError(f"teacher_hidden must have the leading shape of student_hidden "
                         f"{lead}, got {tuple(teacher_hidden.shape[:-1])}")
    if vt != v:
        raise ValueError(f"student_weight and teacher_weight must share a vocabulary, got {v} "
                         f"and {vt} rows")
    y = None
    if target is not None:
        y = target.reshape(-1).to(torch.int64).contiguous()
        check_labels(y, v, ii)
    sh = student_hidden.reshape(-1, student_hidden.shape[-1])
    th = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
    tw = teacher_weight.detach()
    tb = None if teacher_bias is None else teacher_bias.detach()
    n = sh.shape[0]
    if chunk_size is None:
        chunk_size = choose_distill_chunk(n, v, sh.element_size())
    cfg = _Cfg(t, b, h, ii, red, max(1, min(chunk_size, max(n, 1))),
               loss_dtype(student_hidden))
    sb = student_bias
    with autocast_off(sh.device.type):
        if transform_active(sh, student_weight, th, tw) or n == 0:
            out = composite(sh, student_weight, sb, th, tw, tb, y, cfg)
        elif needs_grad(sh, student_weight, sb):
            if not sh.is_contiguous():
                sh = sh.contiguous()
            out = _LinearDistillation.apply(sh, student_weight, sb, th.contiguous(), tw, tb,
                                            y, cfg)
        else:
            acc = acc_dtype(sh.dtype)
            rows = torch.empty(n, dtype=acc, device=sh.device)
            scale = _scale(y, n, cfg, acc, sh.device)
            with torch.no_grad():
                _chunks(sh.contiguous(), student_weight, sb, th.contiguous(), tw, tb, y, cfg,
                        scale, (False,) * 3, rows)
            out = _reduce(rows, scale, red).to(cfg.out_dtype)
    return out.reshape(lead) if red == "none" else out
