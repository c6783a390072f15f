"""Chunked linear + cross-entropy: the loss of ``hidden @ weight.T + bias`` without the logits."""

from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F

from .. import _checks
from ._common import (
    ChunkGrads,
    Opts,
    autocast_dtype,
    autocast_enabled,
    autocast_off,
    check_labels,
    check_linear_shapes,
    check_options,
    finish,
    functorch_active,
    logit_chunks,
    loss_dtype,
    mean_scale,
    needs_grad,
    reduce_rows,
    require_class_indices,
    require_floating,
    require_tensor,
    scale_by_grad_output,
)
from ._dtensor import gathered, replicated_activation
from ._rows import acc_dtype, rows_forward
from .cross_entropy import composite_rows

_MIB = 1 << 20
# Below this many rows a chunk's three GEMMs stop amortising the reads of `weight` and the
# read-modify-write of its gradient (about 0.4 * rows flops per byte of weight traffic).
_MIN_ROWS = 128


def choose_chunk_size(n: int, v: int, h: int, *, itemsize: int = 4,
                      budget_bytes: int | None = None) -> int:
    """Rows per chunk for :func:`linear_cross_entropy`.

    The chunk's logits (rows x V) are the only N x V-like memory; by default they get 1/16 of
    what the full logits would take, clamped to [8 MiB, 256 MiB], but never fewer than 128
    rows (or N), below which the matmuls on ``weight`` (V x H) become memory-bound.

    Args:
        n: number of rows (tokens). v: vocabulary size. h: hidden size.
        itemsize: bytes per logit (the hidden dtype).
        budget_bytes: memory for one chunk of logits; None chooses as above.

    Returns:
        The number of rows per chunk, in [1, n].

    Example:
        >>> choose_chunk_size(4096, 32768, 512)
        256
    """
    if n <= 0:
        return 1
    row_bytes = max(1, v * itemsize)
    auto = budget_bytes is None
    if budget_bytes is None:
        budget_bytes = min(256 * _MIB, max(8 * _MIB, n * row_bytes // 16))
    rows = max(budget_bytes // row_bytes, 1)
    if auto:
        # Enough rows to amortise the weight traffic, and no more than that needs.
        rows = min(max(rows, _MIN_ROWS), max(_MIN_ROWS, 4 * h))
    return int(min(rows, n))


class _LinearCrossEntropy(torch.autograd.Function):
    """(N, H) hidden, (V, H) weight, (V,) bias, (N,) targets -> (loss, z_part).

    mean/sum: every gradient is accumulated chunk by chunk in the forward (the logits chunk
    turns into d loss / d logits in place, then grad_h = g @ W, grad_W += g.T @ h,
    grad_b += g.sum(0)); backward scales them by grad_output. none: the forward computes only
    the loss and the backward recomputes the chunks with the per-row grad_output folded in,
    since grad_W = sum_i go_i g_i h_i^T cannot be scaled after the fact. A second backward
    through a retained graph recomputes the same way. A differentiable backward
    (``create_graph=True``) differentiates the composite ``F.linear`` + cross-entropy on the
    materialised logits instead (N x V memory, for that backward only).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, opts: Opts, chunk: int,
                out_dtype: torch.dtype):
        acc = acc_dtype(hidden.dtype)
        n = hidden.shape[0]
        # known before any chunk: the kernel scales each chunk's gradient by it
        gs = mean_scale(target != opts.ignore_index, opts.reduction, acc)
        need = tuple(ctx.needs_input_grad[:3])
        precompute = opts.reduction != "none" and any(need)
        loss_rows = torch.empty(n, dtype=acc, device=hidden.device)
        z_rows = torch.empty(n, dtype=acc, device=hidden.device)
        grads = _chunks(hidden, weight, bias, target, opts, chunk, gs, need if precompute else
                        (False, False, False), loss_rows, z_rows)
        loss, zpart = reduce_rows(loss_rows, z_rows, opts.reduction, gs)
        ctx.opts, ctx.chunk, ctx.out_dtype = opts, chunk, out_dtype
        ctx.grads = grads if precompute else None
        # References only (no copies): a backward without precomputed gradients (reduction
        # "none", or a second backward through a retained graph) recomputes the chunks.
        ctx.save_for_backward(hidden, weight, bias, target, gs)
        ctx.mark_non_differentiable(zpart)
        return loss.to(out_dtype), zpart.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_loss, grad_zpart):
        grads = ctx.grads
        ctx.grads = None  # hand the tensors over: autograd may adopt them without a copy
        if torch.is_grad_enabled():  # create_graph=True: the gradients must be differentiable
            hidden, weight, bias, target, _ = ctx.saved_tensors
            need = ctx.needs_input_grad[:3]
            with torch.enable_grad(), autocast_off(grad_loss.device.type):
                loss, _ = composite_rows(F.linear(hidden, weight, bias), target, None, ctx.opts,
                                         ctx.out_dtype)
                inputs = [t for t, n in zip((hidden, weight, bias), need, strict=True) if n]
                got = iter(torch.autograd.grad(loss, inputs, grad_loss, create_graph=True))
            gh, gw, gb = (next(got) if n else None for n in need)
            return gh, gw, gb, None, None, None, None
        if grads is None:
            hidden, weight, bias, target, gs = ctx.saved_tensors
            # per-row grad_output for "none"; otherwise the mean's scale times the scalar
            scale = grad_loss.to(gs.dtype) * gs
            n = hidden.shape[0]
            tmp = torch.empty(n, dtype=gs.dtype, device=hidden.device)
            with autocast_off(hidden.device.type):
                gh, gw, gb = _chunks(hidden, weight, bias, target, ctx.opts, ctx.chunk, scale,
                                     tuple(ctx.needs_input_grad[:3]), tmp, torch.empty_like(tmp))
            return gh, gw, gb, None, None, None, None
        gh, gw, gb = scale_by_grad_output(grads, grad_loss)
        return gh, gw, gb, None, None, None, None


def _chunks(hidden, weight, bias, target, opts: Opts, chunk: int, scale, need,
            loss_rows, z_rows):
    """Run the chunk loop; fill loss_rows / z_rows and return (grad_h, grad_w, grad_b) for the
    inputs in ``need`` (None elsewhere), each already multiplied by ``scale`` (0-d or (N,))."""
    need_w = need[1]
    grad = any(need)
    grads = ChunkGrads(hidden, weight, need)
    per_row = isinstance(scale, torch.Tensor) and scale.dim() == 1
    for i0, i1, hc, lc in logit_chunks(hidden, weight, bias, chunk):
        if need_w:
            # An ignored row has a zero gradient row, but 0 * inf is NaN: zero its hidden
            # state in grad_W, so a padding row of non-finite activations contributes nothing.
            ign = (target[i0:i1] == opts.ignore_index).unsqueeze(1)
            hc = hc.masked_fill(ign, 0.0)
        st = rows_forward(
            lc, target[i0:i1], ignore_index=opts.ignore_index,
            label_smoothing=opts.label_smoothing, z_loss=opts.z_loss, softcap=opts.softcap,
            grad_out=lc if grad else None,  # the logits chunk becomes its own gradient
            grad_scale=scale[i0:i1] if per_row else scale, impl=opts.impl)
        loss_rows[i0:i1] = st.loss
        z_rows[i0:i1] = st.z
        if grad:
            grads.add(i0, i1, lc, hc)
    return grads.result(bias)


@overload
def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
    bias: torch.Tensor | None = ..., *, chunk_size: int | None = ..., ignore_index: int = ...,
    label_smoothing: float = ..., reduction: str = ..., z_loss: float = ...,
    softcap: float | None = ..., return_z_loss: Literal[False] = ..., impl: str = ...,
) -> torch.Tensor: ...


@overload
def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
    bias: torch.Tensor | None = ..., *, chunk_size: int | None = ..., ignore_index: int = ...,
    label_smoothing: float = ..., reduction: str = ..., z_loss: float = ...,
    softcap: float | None = ..., return_z_loss: Literal[True], impl: str = ...,
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
    bias: torch.Tensor | None = ..., *, chunk_size: int | None = ..., ignore_index: int = ...,
    label_smoothing: float = ..., reduction: str = ..., z_loss: float = ...,
    softcap: float | None = ..., return_z_loss: bool, impl: str = ...,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_z_loss: bool = False,
    impl: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Cross-entropy of ``hidden @ weight.T + bias`` without materialising the N x V logits.

    .. math::
        \ell_i = \mathrm{CE}(h_i W^\top + b,\ y_i)

    with the options of :func:`crossent.torch.cross_entropy` (label smoothing, z-loss,
    softcap). Rows are processed in chunks: each chunk's logits are computed, turned in place
    into their gradient by the fused row kernel, and immediately contracted into
    ``grad_hidden = g @ W``, ``grad_W += g.T @ h`` and ``grad_b += g.sum(0)``; only those are
    kept. The mean's denominator (number of non-ignored targets) is computed from the targets
    up front so each chunk is scaled before its matmuls. Extra memory is one chunk of logits;
    the values and gradients are those of ``F.cross_entropy(hidden @ weight.T + bias, target)``.
    With ``reduction="none"`` the forward keeps only its inputs and the backward recomputes the
    chunks (the per-row grad_output has to enter before the sum over rows in grad_W).

    An ignored row contributes nothing, not even through non-finite activations (a padding
    row whose logits are all -inf gives no NaN in ``grad_W``). A backward with
    ``create_graph=True`` (double backward) is exact: it differentiates ``F.linear`` +
    cross-entropy on the materialised logits (N x V memory for that backward only); so do
    ``torch.func`` transforms (``grad``, ``vmap``...), which cannot run the chunk loop. Under
    ``torch.autocast`` the matmuls run in the autocast dtype, as ``F.linear`` does (an fp32
    ``weight`` is cast for them and receives its gradient in fp32), and the loss is float32.

    Args:
        hidden: (..., H) activations; float16, bfloat16, float32 or float64.
        weight: (V, H) classifier / LM-head weight, same dtype as ``hidden`` (outside
            autocast). A DTensor (an FSDP2 ``fully_shard`` parameter read outside its
            module's forward) is gathered in full as FSDP2 gathers it, and its gradient comes
            back reduce-scattered, averaged over the ranks (FSDP2's default); ``bias`` too.
        target: (...) class indices (integer); ``ignore_index`` marks rows to skip.
        bias: optional (V,) bias.
        chunk_size: rows per chunk; None picks one from N, V, H and a memory budget
            (:func:`choose_chunk_size`).
        ignore_index, label_smoothing, reduction, z_loss, softcap: as in
            :func:`crossent.torch.cross_entropy` (no class ``weight`` here: ``weight`` is the
            linear layer's).
        return_z_loss: also return the detached z-loss part.
        impl: the row routine: ``"auto"`` (the C++ kernel on CPU where available; torch ops
            elsewhere or with ``CROSSENT_NO_EXT=1``), ``"kernel"`` or ``"torch"``.

    Returns:
        The loss (scalar, or ``target``'s shape for ``"none"``), in ``hidden``'s dtype
        (float32 under autocast); with ``return_z_loss=True``, ``(loss, z_loss_part)``.

    Raises:
        ValueError: bad options (as for ``cross_entropy``: ``reduction``,
            ``label_smoothing``, ``z_loss``, ``softcap``, ``ignore_index`` not an integer
            within int64), mismatched shapes, a ``weight`` with no row (logits with C = 0),
            a ``chunk_size`` that is not a positive integer, (CPU) a class index out of range.
        TypeError: non-floating or mismatched dtypes (outside autocast), non-integer
            targets, a non-tensor argument.

    Example:
        >>> import torch
        >>> from crossent.torch import linear_cross_entropy
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(6, 4, generator=g, requires_grad=True)
        >>> w = torch.randn(10, 4, generator=g, requires_grad=True)
        >>> y = torch.tensor([1, 3, 5, 7, 9, -100])
        >>> loss = linear_cross_entropy(h, w, y, chunk_size=2)
        >>> ref = torch.nn.functional.cross_entropy(h @ w.T, y)
        >>> torch.allclose(loss, ref)
        True
        >>> loss.backward(); w.grad.shape
        torch.Size([10, 4])

    Aliases: Liger-Kernel ``LigerFusedLinearCrossEntropyLoss``; Apple ml-cross-entropy
    ``linear_cross_entropy`` (Cut Cross-Entropy); PyTorch ``F.linear_cross_entropy`` with
    ``options=LinearCrossEntropyOptions()``.

    References:
        Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language Models";
        Liger-Kernel (Hsu et al., 2024) fused linear cross-entropy; PaLM z-loss; Gemma 2
        softcapping.
    """
    for name, t in (("hidden", hidden), ("weight", weight), ("target", target)):
        require_tensor(t, name)
    require_tensor(bias, "bias", optional=True)
    require_floating(hidden, "hidden")
    require_class_indices(target)
    opts = check_options(reduction, label_smoothing, z_loss, softcap, ignore_index, impl)
    chunk_size = _checks.positive_int(chunk_size, "chunk_size", allow_none=True)
    # FSDP2 / DTensor parameters used outside their module's forward: gathered as FSDP2 would
    weight, bias = gathered(weight, "weight"), gathered(bias, "bias")
    hidden = replicated_activation(hidden, "hidden")
    target = replicated_activation(target, "target")
    device_type = hidden.device.type
    out_dtype = loss_dtype(hidden)
    if autocast_enabled(device_type):
        # As F.linear under autocast: the matmuls run in the autocast dtype, through casts
        # that autograd sees, so an fp32 weight receives its gradient in fp32.
        cast = autocast_dtype(device_type)
        def to_cast(t: torch.Tensor) -> torch.Tensor:
            return t if t.dtype == torch.float64 or not t.is_floating_point() else t.to(cast)

        hidden, weight = to_cast(hidden), to_cast(weight)
        bias = None if bias is None else to_cast(bias)
    v = check_linear_shapes(hidden, weight, bias, target)
    batch = tuple(target.shape)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    y = target.reshape(-1).to(torch.int64)
    check_labels(y, v, opts.ignore_index)
    tensors = (h2, weight) if bias is None else (h2, weight, bias)
    with autocast_off(device_type):
        if functorch_active(*tensors, y):
            # torch.func transforms: the same loss as a composition of differentiable ops, on
            # the materialised logits (wrapper tensors have no storage for the chunk loop).
            loss, zpart = composite_rows(F.linear(h2, weight, bias), y, None, opts, out_dtype)
        else:
            loss, zpart = _chunked(h2, weight, bias, y, opts, chunk_size, out_dtype, tensors)
    return finish(loss, zpart, opts.reduction, batch, return_z_loss)


def _chunked(h2, weight, bias, y, opts: Opts, chunk_size: int | None, out_dtype,
             tensors) -> tuple[torch.Tensor, torch.Tensor]:
    if not h2.is_contiguous():
        h2 = h2.contiguous()
    y = y.contiguous()
    n, v = h2.shape[0], weight.shape[0]
    if chunk_size is None:
        chunk_size = choose_chunk_size(n, v, h2.shape[1], itemsize=h2.element_size())
    chunk = max(1, min(chunk_size, n))
    if needs_grad(*tensors):
        return _LinearCrossEntropy.apply(h2, weight, bias, y, opts, chunk, out_dtype)
    acc = acc_dtype(h2.dtype)
    loss_rows = torch.empty(n, dtype=acc, device=h2.device)
    z_rows = torch.empty_like(loss_rows)
    with torch.no_grad():
        _chunks(h2, weight, bias, y, opts, chunk, None, (False, False, False), loss_rows,
                z_rows)
    gs = mean_scale(y != opts.ignore_index, opts.reduction, acc)
    loss, zpart = reduce_rows(loss_rows, z_rows, opts.reduction, gs)
    return loss.to(out_dtype), zpart.to(out_dtype)
