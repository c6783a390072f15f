"""Chunked linear + cross-entropy: the loss of ``hidden @ weight.T + bias`` without the logits."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict, overload

import torch
import torch.nn.functional as F

from .. import _checks
from . import _weights
from ._common import (
    ChunkGrads,
    Opts,
    autocast_dtype,
    autocast_enabled,
    autocast_off,
    check_labels,
    check_options,
    check_probabilities,
    logit_chunks,
    loss_dtype,
    needs_grad,
    reduce_rows,
    require_floating,
    require_tensor,
    scale_by_grad_output,
    transform_active,
)
from ._dtensor import gathered, replicated_activation
from ._rows import acc_dtype, rows_forward
from .cross_entropy import composite_rows

if TYPE_CHECKING:
    from typing_extensions import Unpack

_MIB = 1 << 20
# Below this many rows a chunk's three GEMMs stop amortising the reads of `weight` and the
# read-modify-write of its gradient (about 0.4 * rows flops per byte of weight traffic).
_MIN_ROWS = 128
_MIN_ROWS_GPU = 256


def choose_chunk_size(n: int, v: int, h: int, *, itemsize: int = 4,
                      budget_bytes: int | None = None, device: str = "cpu") -> int:
    """Rows per chunk for :func:`linear_cross_entropy`.

    The chunk's logits (rows x V) are the only N x V-like memory. On CPU they get, by
    default, 1/16 of what the full logits would take, clamped to [8 MiB, 256 MiB], but never
    fewer than 128 rows (or N), below which the matmuls on ``weight`` (V x H) become
    memory-bound, nor more than 4 H. On CUDA they get 1/24 of the full logits (the logits
    chunk then stays under 0.05x the logits, the GPU target) and at least 256 rows, rounded
    down to a multiple of 64 (whole GEMM tiles), at most 4096: a GPU's matmuls need more rows
    than a CPU's to stay compute-bound.

    Args:
        n: number of rows (tokens). v: vocabulary size. h: hidden size.
        itemsize: bytes per logit (the hidden dtype).
        budget_bytes: memory for one chunk of logits; None chooses as above.
        device: the device type (``"cpu"``, ``"cuda"``...): which default rule applies.

    Returns:
        The number of rows per chunk, in [1, n].

    Example:
        >>> choose_chunk_size(4096, 32768, 512)
        256
        >>> choose_chunk_size(8192, 128256, 4096, itemsize=2, device="cuda")
        320
    """
    if n <= 0:
        return 1
    row_bytes = max(1, v * itemsize)
    auto = budget_bytes is None
    gpu = device != "cpu"
    if budget_bytes is None:
        budget_bytes = n * row_bytes // 24 if gpu else \
            min(256 * _MIB, max(8 * _MIB, n * row_bytes // 16))
    rows = max(budget_bytes // row_bytes, 1)
    if auto and gpu:
        rows = min(max(rows, _MIN_ROWS_GPU), 4096) // 64 * 64
    elif auto:
        # Enough rows to amortise the weight traffic, and no more than that needs.
        rows = min(max(rows, _MIN_ROWS), max(_MIN_ROWS, 4 * h))
    return int(min(rows, n))


class _LinearCrossEntropy(torch.autograd.Function):
    """(N, H) hidden, (D*C, H) weight, (D*C,) bias, (N*D,) or (N*D, C) targets -> (loss,
    z_part, lse rows). Each hidden row gives D cross-entropy rows over C classes (D = 1 but
    for torch's K-dimensional heads, whose weight rows the caller has ordered (d, c)).

    mean/sum: every gradient is accumulated chunk by chunk in the forward (the logits chunk
    turns into d loss / d logits in place, then grad_h = g @ W, grad_W += g.T @ h,
    grad_b += g.sum(0); for probability targets that require grad, their gradient
    ``(1 - eps) w_c (lse - z_c)`` from the chunk before it is overwritten); backward scales
    them by grad_output. none: the forward computes only the loss and the backward recomputes
    the chunks with the per-row grad_output folded in, since grad_W = sum_i go_i g_i h_i^T
    cannot be scaled after the fact. A second backward through a retained graph recomputes
    the same way. A differentiable backward (``create_graph=True``) differentiates the
    composite ``F.linear`` + cross-entropy on the materialised logits instead (N x V memory,
    for that backward only).

    ``cfg`` is ``(opts, chunk, out_dtype, num_classes, gw_dtype)`` (``gw_dtype``: grad_W's
    accumulation dtype, None for the default); ``cw`` the class weight, ``sw`` the
    (N*D,) sample weights (None for none).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, cw, sw, cfg):
        opts, chunk, out_dtype, c, gw_dtype = cfg
        acc = acc_dtype(hidden.dtype)
        # known before any chunk: the kernel scales each chunk's gradient by them
        red_gs, red_zs = _weights.scales(target, cw, sw, opts, acc, hidden.device, hidden.is_cpu)
        gs, zs = _weights.row_scales(red_gs, red_zs, sw)
        need = tuple(ctx.needs_input_grad[:4])
        precompute = opts.reduction != "none" and any(need)
        rows = target.shape[0]
        loss_rows = torch.empty(rows, dtype=acc, device=hidden.device)
        z_rows, lse_rows = torch.empty_like(loss_rows), torch.empty_like(loss_rows)
        grads = _chunks(hidden, weight, bias, target, cw, opts, chunk, c, gs, zs,
                        need if precompute else (False,) * 4, loss_rows, z_rows, lse_rows,
                        gw_dtype)
        main, zr = _weights.weighted(loss_rows, z_rows, sw)
        loss, zpart = reduce_rows(main, zr, opts.reduction, red_gs, red_zs)
        ctx.cfg = cfg
        ctx.grads = grads if precompute else None
        # References only (no copies): a backward without precomputed gradients (reduction
        # "none", or a second backward through a retained graph) recomputes the chunks.
        ctx.save_for_backward(hidden, weight, bias, target, cw, sw, gs, zs)
        ctx.mark_non_differentiable(zpart, lse_rows)
        return loss.to(out_dtype), zpart.to(out_dtype), lse_rows

    @staticmethod
    def backward(ctx, grad_loss, grad_zpart, grad_lse):
        grads = ctx.grads
        ctx.grads = None  # hand the tensors over: autograd may adopt them without a copy
        opts, chunk, out_dtype, c, gw_dtype = ctx.cfg
        hidden, weight, bias, target, cw, sw, gs, zs = ctx.saved_tensors
        need = tuple(ctx.needs_input_grad[:4])
        if torch.is_grad_enabled():  # create_graph=True: the gradients must be differentiable
            with torch.enable_grad(), autocast_off(grad_loss.device.type):
                logits = F.linear(hidden, weight, bias).reshape(-1, c)
                loss, _ = composite_rows(logits, target, cw, opts, out_dtype, sw=sw)
                inputs = [t for t, n in zip((hidden, weight, bias, target), need, strict=True)
                          if n]
                got = iter(torch.autograd.grad(loss, inputs, grad_loss, create_graph=True))
            out = tuple(next(got) if n else None for n in need)
            return (*out, None, None, None)
        if grads is None:
            # per-row grad_output for "none"; otherwise the reduction's scale times the scalar
            go = grad_loss.to(gs.dtype)
            tmp = torch.empty(target.shape[0], dtype=gs.dtype, device=hidden.device)
            with autocast_off(hidden.device.type):
                grads = _chunks(hidden, weight, bias, target, cw, opts, chunk, c, go * gs,
                                go * zs, need, tmp, torch.empty_like(tmp), torch.empty_like(tmp),
                                gw_dtype)
            return (*grads, None, None, None)
        return (*scale_by_grad_output(grads, grad_loss), None, None, None)


def _chunks(hidden, weight, bias, target, cw, opts: Opts, chunk: int, c: int, gs, zs, need,
            loss_rows, z_rows, lse_rows, gw_dtype=None):
    """Run the chunk loop over the rows of ``hidden``; fill the per-CE-row loss, z-loss and
    lse and return (grad_h, grad_w, grad_b, grad_target) for the inputs in ``need`` (None
    elsewhere), each already multiplied by the scales ``gs`` (main term) and ``zs`` (z-loss),
    0-d or one per cross-entropy row."""
    need_w, need_t = need[1], need[3]
    grad = any(need[:3])
    grads = ChunkGrads(hidden, weight, need[:3], gw_dtype=gw_dtype)
    groups = weight.shape[0] // c  # cross-entropy rows per hidden row
    prob = target.is_floating_point()
    gt = torch.empty_like(target) if need_t else None
    rows_gs = isinstance(gs, torch.Tensor) and gs.dim() == 1
    rows_zs = isinstance(zs, torch.Tensor) and zs.dim() == 1
    eps = opts.label_smoothing
    for i0, i1, hc, lc in logit_chunks(hidden, weight, bias, chunk):
        r0, r1 = i0 * groups, i1 * groups
        x = lc.view(-1, c)  # (rows, C) cross-entropy rows, contiguous
        tc = target[r0:r1]
        gsc = gs[r0:r1] if rows_gs else gs
        if need_w and not prob:
            # An ignored row has a zero gradient row, but 0 * inf is NaN: zero its hidden
            # state in grad_W, so a padding row of non-finite activations contributes nothing.
            ign = (tc == opts.ignore_index).view(-1, groups).all(dim=1, keepdim=True)
            hc = hc.masked_fill(ign, 0.0)
        if gt is not None:
            # d l / d t_c = (1 - eps) w_c (lse - z_c), read before x becomes its gradient
            z = x.to(gt.dtype if gt.dtype == torch.float64 else torch.float32)
            if opts.softcap:
                z = torch.tanh(z / opts.softcap) * opts.softcap
            g = (torch.logsumexp(z, dim=1, keepdim=True) - z) * (1.0 - eps)
            if cw is not None:
                g = g * cw
            gt[r0:r1] = g * (gsc.unsqueeze(1) if rows_gs else gsc)
        st = rows_forward(
            x, tc, weight=cw, ignore_index=opts.ignore_index, label_smoothing=eps,
            z_loss=opts.z_loss, softcap=opts.softcap,
            grad_out=x if grad else None,  # the logits chunk becomes its own gradient
            grad_scale=gsc, z_grad_scale=zs[r0:r1] if rows_zs else zs, impl=opts.impl)
        loss_rows[r0:r1] = st.loss
        z_rows[r0:r1] = st.z
        lse_rows[r0:r1] = st.lse
        if grad:
            grads.add(i0, i1, lc, hc)
    return (*grads.result(bias), gt)


class _Rows(NamedTuple):
    """A linear cross-entropy call brought to rows: what the chunk loop takes."""

    hidden: torch.Tensor  # (N, H)
    weight: torch.Tensor  # (D*C, H), rows ordered (d, c)
    bias: torch.Tensor | None  # (D*C,)
    target: torch.Tensor  # (N*D,) int64 or (N*D, C) probabilities
    sw: torch.Tensor | None  # (N*D,)
    num_classes: int
    batch: tuple[int, ...]  # the shape of the per-position losses
    shifted: tuple[int, ...] | None  # with shift=True: the unshifted batch shape


def _alias(value: Any, alias: Any, name: str, alias_name: str) -> Any:
    """One argument reachable under two names (crossent's and torch's)."""
    if alias is None:
        return value
    if value is not None:
        raise TypeError(f"linear_cross_entropy got both {name} and {alias_name} (the same "
                        f"argument under torch's name); pass one")
    return alias


def _layout(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            target: torch.Tensor, sample_weight: Any, ignore_index: int, shift: bool,
            like_acc: torch.Tensor) -> _Rows:
    """Check the shapes and bring (hidden, weight, bias, target, sample_weight) to rows.

    A 2-D weight (C, H) takes hidden (..., H); a weight (C, d1, ..., dK, H) is torch's
    K-dimensional head, hidden (N, H) or (H,) and logits (N, C, d1, ..., dK): its rows are
    reordered (d, c) so that each hidden row's logits are D contiguous rows of C classes.
    ``shift``: position t's loss uses hidden t and target t + 1 along hidden's second-to-last
    axis (the sequence); the hidden states are a prefix view, never copied."""
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise TypeError("hidden, lm_head_weight and bias must share a dtype, got "
                        f"{hidden.dtype}, {weight.dtype}"
                        + ("" if bias is None else f", {bias.dtype}"))
    h = hidden.shape[-1] if hidden.dim() else 0
    if hidden.dim() < 1 or weight.dim() < 2 or weight.shape[-1] != h:
        raise ValueError("lm_head_weight must have shape (C, H) or (C, d1, ..., dK, H) with "
                         f"H = hidden.shape[-1], got hidden {tuple(hidden.shape)} and "
                         f"lm_head_weight {tuple(weight.shape)}")
    c, kdims = weight.shape[0], tuple(weight.shape[1:-1])
    if c == 0:
        raise ValueError("lm_head_weight must have at least one row (class): the logits would "
                         f"have shape {(*hidden.shape[:-1], 0)}")
    if bias is not None and tuple(bias.shape) != tuple(weight.shape[:-1]):
        raise ValueError(f"bias must have shape {tuple(weight.shape[:-1])}, got "
                         f"{tuple(bias.shape)}")
    lead = tuple(hidden.shape[:-1])
    if kdims and len(lead) > 1:
        raise ValueError(f"a K-dimensional lm_head_weight {tuple(weight.shape)} takes hidden "
                         f"of shape (N, H) or (H,), got {tuple(hidden.shape)}")
    if shift and (kdims or not lead):
        raise ValueError("shift=True needs hidden of shape (..., T, H) and a 2-D "
                         f"lm_head_weight, got hidden {tuple(hidden.shape)} and "
                         f"lm_head_weight {tuple(weight.shape)}")
    prob = target.is_floating_point()
    batch = lead + kdims
    want = lead + (c,) + kdims if prob else batch
    if tuple(target.shape) != want:
        kind = "probability" if prob else "class-index"
        raise ValueError(f"target ({kind}) must have shape {want} for hidden "
                         f"{tuple(hidden.shape)} and lm_head_weight {tuple(weight.shape)}, "
                         f"got {tuple(target.shape)}")
    d = math.prod(kdims)
    h2 = hidden.reshape(-1, h)
    n = h2.shape[0]
    if kdims:
        weight = weight.reshape(c, d, h).transpose(0, 1).reshape(d * c, h)
        if bias is not None:
            bias = bias.reshape(c, d).t().reshape(-1)
    if prob:
        t = target.reshape(n, c, d).transpose(1, 2).reshape(n * d, c) if kdims \
            else target.reshape(-1, c)
    else:
        t = target.reshape(-1).to(torch.int64)
    sw = _weights.sample_weight(sample_weight, batch, like_acc)
    shifted = None
    if shift:
        seq = lead[-1]
        shifted = batch
        batch = lead[:-1] + (max(seq - 1, 0),)
        # rows r predict target r + 1; the last position of each sequence has no next token
        m = max(n - 1, 0)
        h2 = h2[:m]
        ends = torch.arange(seq - 1, m, seq, device=h2.device) if seq > 0 else None
        if prob:
            t = t[1:]
            mask = torch.ones(m, dtype=like_acc.dtype if like_acc.dtype == torch.float64
                              else torch.float32, device=h2.device)
            if ends is not None:
                mask[ends] = 0.0
            sw = mask if sw is None else sw[1:] * mask
        else:
            t = t[1:].clone()
            if ends is not None:
                t[ends] = ignore_index
            sw = None if sw is None else sw[1:]
    return _Rows(h2, weight, bias, t, sw, c, batch, shifted)


def _per_position(v: torch.Tensor, rows: _Rows) -> torch.Tensor:
    """Per-row values in the shape of the per-position losses (undoing ``shift``'s view)."""
    if rows.shifted is None:
        return v.reshape(rows.batch)
    full = torch.cat([v, v.new_zeros(1)]) if math.prod(rows.shifted) else v
    return full.reshape(rows.shifted)[..., :-1]


class _Options(TypedDict, total=False):
    """:func:`linear_cross_entropy`'s keyword-only options but ``return_z_loss`` and
    ``return_lse``, for its overloads."""

    weight: Any
    sample_weight: Any
    chunk_size: int | None
    ignore_index: int | None
    label_smoothing: float
    reduction: str
    z_loss: float
    softcap: float | None
    shift: bool
    impl: str
    accum_dtype: torch.dtype | None
    input: torch.Tensor | None
    linear_weight: torch.Tensor | None
    linear_bias: torch.Tensor | None
    options: Any


@overload
def linear_cross_entropy(hidden: torch.Tensor | None = ...,
                         lm_head_weight: torch.Tensor | None = ...,
                         target: torch.Tensor | None = ..., bias: torch.Tensor | None = ..., *,
                         return_z_loss: Literal[False] = ..., return_lse: Literal[False] = ...,
                         **options: Unpack[_Options]) -> torch.Tensor: ...
@overload
def linear_cross_entropy(hidden: torch.Tensor | None = ...,
                         lm_head_weight: torch.Tensor | None = ...,
                         target: torch.Tensor | None = ..., bias: torch.Tensor | None = ..., *,
                         return_z_loss: bool, return_lse: Literal[False] = ...,
                         **options: Unpack[_Options]
                         ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...
@overload
def linear_cross_entropy(hidden: torch.Tensor | None = ...,
                         lm_head_weight: torch.Tensor | None = ...,
                         target: torch.Tensor | None = ..., bias: torch.Tensor | None = ..., *,
                         return_z_loss: bool = ..., return_lse: bool = ...,
                         **options: Unpack[_Options]
                         ) -> torch.Tensor | tuple[torch.Tensor, ...]: ...
def linear_cross_entropy(
    hidden: torch.Tensor | None = None,
    lm_head_weight: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    weight: Any = None,
    sample_weight: Any = None,
    chunk_size: int | None = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    z_loss: float = 0.0,
    softcap: float | None = None,
    shift: bool = False,
    return_z_loss: bool = False,
    return_lse: bool = False,
    impl: str = "auto",
    accum_dtype: torch.dtype | None = None,
    input: torch.Tensor | None = None,
    linear_weight: torch.Tensor | None = None,
    linear_bias: torch.Tensor | None = None,
    options: Any = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    r"""Cross-entropy of ``hidden @ lm_head_weight.T + bias`` without materialising the logits.

    .. math::
        \ell_i = s_i\, \mathrm{CE}_w(h_i W^\top + b,\ y_i)

    with every option of :func:`crossent.torch.cross_entropy`: class ``weight`` ``w``,
    per-token ``sample_weight`` ``s``, ``ignore_index``, label smoothing, z-loss, softcap,
    class-index or probability targets, the three reductions. Rows are processed in chunks:
    each chunk's logits are computed, turned in place into their gradient by the fused row
    kernel, and immediately contracted into ``grad_hidden = g @ W``, ``grad_W += g.T @ h``
    and ``grad_b += g.sum(0)``; only those are kept. The mean's denominator is computed from
    the targets and weights up front so each chunk is scaled before its matmuls. Extra memory
    is one chunk of logits; the values and gradients are those of
    ``F.cross_entropy(hidden @ W.T + b, target, weight=..., ...)`` (times the sample weights,
    whose mean is ``sum_i s_i w_{y_i} l_i / sum_i s_i w_{y_i}``). With ``reduction="none"``
    the forward keeps only its inputs and the backward recomputes the chunks (the per-row
    grad_output has to enter before the sum over rows in grad_W).

    ``shift=True`` is the causal-LM loss: the hidden state at position t is scored against
    the target at t + 1 along the sequence axis (hidden's second-to-last), the last position
    of each sequence scoring nothing, exactly ``F.cross_entropy(logits[..., :-1, :],
    target[..., 1:])``; the hidden states are read through a view, never copied (only the
    labels are). Torch's K-dimensional heads work too: a weight ``(C, d1, ..., dK, H)`` gives
    logits ``(N, C, d1, ..., dK)`` as ``F.linear_cross_entropy`` does.

    An ignored row contributes nothing, not even through non-finite activations (a padding
    row whose logits are all -inf gives no NaN in ``grad_W``). A backward with
    ``create_graph=True`` (double backward) is exact: it differentiates ``F.linear`` +
    cross-entropy on the materialised logits (N x V memory for that backward only); so do
    ``torch.func`` transforms (``grad``, ``vmap``...), which cannot run the chunk loop. Under
    ``torch.autocast`` the matmuls run in the autocast dtype, as ``F.linear`` does (an fp32
    ``weight`` is cast for them and receives its gradient in fp32), and the loss is float32.

    torch 2.13's ``F.linear_cross_entropy`` keywords are accepted as they are: ``input``,
    ``linear_weight``, ``linear_bias``, ``weight`` (the class weight there too),
    ``ignore_index=None`` (meaning -100) and ``options`` (its ``batch_chunk_size`` becomes
    ``chunk_size``).

    Args:
        hidden: (..., H) activations (torch's ``input``); float16, bfloat16, float32 or
            float64. (N, H) or (H,) with a K-dimensional head.
        lm_head_weight: (V, H) classifier / LM-head weight (torch's ``linear_weight``), or
            (C, d1, ..., dK, H); same dtype as ``hidden`` (outside autocast). A DTensor (an
            FSDP2 ``fully_shard`` parameter read outside its module's forward) is gathered in
            full as FSDP2 gathers it, and its gradient comes back reduce-scattered, averaged
            over the ranks (FSDP2's default); ``bias`` too.
        target: (...) class indices (integer; ``ignore_index`` marks rows to skip), or class
            probabilities in [0, 1] of shape (..., V) (floating; they receive a gradient when
            they require one).
        bias: optional (V,) bias (torch's ``linear_bias``), (C, d1, ..., dK) for a
            K-dimensional head.
        weight: optional (C,) class weight, as in ``F.cross_entropy``; no gradient.
        sample_weight: optional per-position (per-token) weights of the target's batch
            shape (broadcastable to it); with ``shift=True`` aligned with ``target`` and
            shifted with it. No gradient.
        chunk_size: rows per chunk; None picks one from N, V, H and a memory budget
            (:func:`choose_chunk_size`).
        ignore_index, label_smoothing, reduction, z_loss, softcap: as in
            :func:`crossent.torch.cross_entropy` (``ignore_index=None`` is -100).
        shift: score position t against target t + 1 (causal LM labels), see above.
        return_z_loss: also return the detached z-loss part (reduced as the loss).
        return_lse: also return the detached per-position log-sum-exp of the (soft-capped)
            logits, the loss's batch shape (0 at ignored positions): what a sampler or a
            z-loss logger needs, without the logits.
        impl: the row routine: ``"auto"`` (the C++ kernel on CPU where available, the Triton
            kernel on CUDA for float16 / bfloat16 / float32 where Triton imports; torch ops
            elsewhere or with ``CROSSENT_NO_EXT=1``), ``"kernel"``, ``"triton"`` or
            ``"torch"`` (see :func:`crossent.torch.cross_entropy`).
        accum_dtype: the dtype the weight's (and bias's) gradient is summed in across
            chunks, for float16 / bfloat16 weights: None (default) sums each chunk's product
            in float32, which holds a V x H float32 buffer (as large as the half-precision
            logits when H = N / 2) and a V x H temporary per chunk; the weight's own dtype
            makes each chunk one in-place ``addmm`` (float32 inside the matmul, the running
            sum rounded once per chunk): no buffer beyond the returned gradient, for an
            error that grows with the number of chunks (Liger-Kernel's default; measured at
            N=4096, H=256, V=8000: 0.35% relative at 8 chunks, 0.70% at 32, against 0.22%,
            the final rounding, for the default). ``torch.float32`` is the default spelled
            out. Ignored for float32 / float64 weights.
        input, linear_weight, linear_bias, options: torch's names (see above).

    Returns:
        The loss (scalar, or the per-position shape for ``"none"``), in ``hidden``'s dtype
        (float32 under autocast); with ``return_z_loss`` and/or ``return_lse``, a tuple
        ``(loss, z_loss_part, lse)`` of the requested ones, in that order.

    Raises:
        ValueError: bad options (as for ``cross_entropy``: ``reduction``,
            ``label_smoothing``, ``z_loss``, ``softcap``, ``ignore_index`` not an integer
            within int64), mismatched shapes of the target, bias, class or sample weights, a
            weight with no row (logits with C = 0), ``shift=True`` without a sequence axis, a
            ``chunk_size`` that is not a positive integer, (CPU) a class index out of range
            or probabilities outside [0, 1], "mean" weights that sum to 0 over counted rows.
        TypeError: non-floating or mismatched dtypes (outside autocast), a boolean or complex
            target, a non-tensor argument, a missing argument, one given under both names,
            or a 2-D ``weight=`` with no ``lm_head_weight`` (``weight`` is the class weight).

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
        >>> hs, ys = torch.randn(2, 5, 4, generator=g), torch.randint(0, 10, (2, 5), generator=g)
        >>> ref = torch.nn.functional.cross_entropy((hs @ w.T)[:, :-1].reshape(-1, 10),
        ...                                         ys[:, 1:].reshape(-1))
        >>> torch.allclose(linear_cross_entropy(hs, w, ys, shift=True), ref)
        True

    Aliases: Liger-Kernel ``LigerFusedLinearCrossEntropyLoss``; Apple ml-cross-entropy
    ``linear_cross_entropy`` (Cut Cross-Entropy); PyTorch ``F.linear_cross_entropy`` with
    ``options=LinearCrossEntropyOptions()``.

    References:
        Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language Models";
        Liger-Kernel (Hsu et al., 2024) fused linear cross-entropy; PaLM z-loss; Gemma 2
        softcapping; https://docs.pytorch.org/docs/stable/generated/torch.nn.functional.linear_cross_entropy.html.
    """
    hidden = _alias(hidden, input, "hidden", "input")
    lm_head_weight = _alias(lm_head_weight, linear_weight, "lm_head_weight", "linear_weight")
    bias = _alias(bias, linear_bias, "bias", "linear_bias")
    if lm_head_weight is None and isinstance(weight, torch.Tensor) and weight.dim() >= 2:
        raise TypeError("linear_cross_entropy: weight= is the (C,) class weight, as in "
                        "F.cross_entropy; pass the linear layer's (V, H) matrix positionally "
                        "or as lm_head_weight=")
    for name, t in (("hidden", hidden), ("lm_head_weight", lm_head_weight),
                    ("target", target)):
        require_tensor(t, name)
    assert hidden is not None and lm_head_weight is not None and target is not None
    require_tensor(bias, "bias", optional=True)
    require_floating(hidden, "hidden")
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold class indices (integer) or probabilities "
                        f"(floating), got dtype {target.dtype}")
    opts = check_options(reduction, label_smoothing, z_loss, softcap,
                         -100 if ignore_index is None else ignore_index, impl)
    if chunk_size is None and options is not None:
        chunk_size = getattr(options, "batch_chunk_size", None)
    chunk_size = _checks.positive_int(chunk_size, "chunk_size", allow_none=True)
    # FSDP2 / DTensor parameters used outside their module's forward: gathered as FSDP2 would
    w, bias = gathered(lm_head_weight, "lm_head_weight"), gathered(bias, "bias")
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

        hidden, w = to_cast(hidden), to_cast(w)
        bias = None if bias is None else to_cast(bias)
    prob = target.is_floating_point()
    gw_dtype = _grad_accumulation(accum_dtype, w)
    rows = _layout(hidden, w, bias, target, sample_weight, opts.ignore_index, bool(shift),
                   hidden)
    c = rows.num_classes
    cw = _weights.class_weight(weight, c, hidden)
    t = rows.target
    if prob:
        check_probabilities(target)
        t = t.to(hidden.dtype)
    else:
        check_labels(t, c, opts.ignore_index)
    tensors = tuple(x for x in (rows.hidden, rows.weight, rows.bias, t) if x is not None)
    with autocast_off(device_type):
        if transform_active(*tensors):
            # torch.func transforms: the same loss as a composition of differentiable ops, on
            # the materialised logits (wrapper tensors have no storage for the chunk loop).
            logits = F.linear(rows.hidden, rows.weight, rows.bias).reshape(-1, c)
            loss, zpart = composite_rows(logits, t, cw, opts, out_dtype, sw=rows.sw)
            lse = torch.logsumexp(_capped_logits(logits, opts), dim=1).detach()
            if not prob:
                lse = lse.masked_fill(t == opts.ignore_index, 0.0)
        else:
            loss, zpart, lse = _chunked(rows._replace(target=t), cw, opts, chunk_size,
                                        out_dtype, tensors, gw_dtype)
    if opts.reduction == "none":
        loss, zpart = _per_position(loss, rows), _per_position(zpart, rows)
    extra = ((zpart,) if return_z_loss else ()) + (
        (_per_position(lse, rows),) if return_lse else ())
    return (loss, *extra) if extra else loss


def _capped_logits(logits: torch.Tensor, opts: Opts) -> torch.Tensor:
    """The logits the loss sees: soft-capped when ``softcap`` is set, in the accumulation
    dtype."""
    z = logits.to(acc_dtype(logits.dtype))
    return torch.tanh(z / opts.softcap) * opts.softcap if opts.softcap else z


def _grad_accumulation(accum_dtype: torch.dtype | None, w: torch.Tensor
                       ) -> torch.dtype | None:
    """grad_W's accumulation dtype for :class:`._common.ChunkGrads` (None: its default);
    ValueError for a value that is no float dtype it takes, or not the weight's."""
    if accum_dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"accum_dtype must be None, torch.float32 or the weight's float16 / "
                         f"bfloat16 dtype, got {accum_dtype!r}")
    if accum_dtype is None or w.dtype not in (torch.float16, torch.bfloat16):
        return None
    if accum_dtype not in (torch.float32, w.dtype):
        raise ValueError(f"accum_dtype must be None, torch.float32 or the weight's dtype "
                         f"({w.dtype}), got {accum_dtype}")
    return accum_dtype


def _chunked(rows: _Rows, cw, opts: Opts, chunk_size: int | None, out_dtype, tensors,
             gw_dtype: torch.dtype | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h2 = rows.hidden if rows.hidden.is_contiguous() else rows.hidden.contiguous()
    weight, bias = rows.weight, rows.bias
    y = rows.target.contiguous()
    n, v = h2.shape[0], weight.shape[0]
    if chunk_size is None:
        chunk_size = choose_chunk_size(n, v, h2.shape[1], itemsize=h2.element_size(),
                                        device=h2.device.type)
    chunk = max(1, min(chunk_size, n))
    cfg = (opts, chunk, out_dtype, rows.num_classes, gw_dtype)
    if needs_grad(*tensors):
        return _LinearCrossEntropy.apply(h2, weight, bias, y, cw, rows.sw, cfg)
    acc = acc_dtype(h2.dtype)
    loss_rows = torch.empty(y.shape[0], dtype=acc, device=h2.device)
    z_rows, lse_rows = torch.empty_like(loss_rows), torch.empty_like(loss_rows)
    gs, zs = _weights.scales(y, cw, rows.sw, opts, acc, h2.device, h2.is_cpu)
    with torch.no_grad():
        _chunks(h2, weight, bias, y, cw, opts, chunk, rows.num_classes, gs, zs,
                (False,) * 4, loss_rows, z_rows, lse_rows)
    sw = rows.sw
    main, zr = _weights.weighted(loss_rows, z_rows, sw)
    loss, zpart = reduce_rows(main, zr, opts.reduction, gs, zs)
    return loss.to(out_dtype), zpart.to(out_dtype), lse_rows
