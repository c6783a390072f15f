"""Fused softmax cross-entropy for PyTorch: one pass, gradient computed in the forward."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

import torch

from .. import _array, _checks
from . import _ext, _triton_rows, _weights
from ._common import (
    Opts,
    autocast_enabled,
    autocast_off,
    bump_version,
    check_labels,
    check_options,
    check_probabilities,
    finish,
    legacy_reduction,
    loss_dtype,
    reduce_rows,
    refuse_inplace_on_leaf,
    scale_by_grad_output,
    transform_active,
)
from ._rows import EXT_DTYPES, acc_dtype, rows_forward, use_extension

if TYPE_CHECKING:
    from typing_extensions import Unpack

# Fresh gradient buffers at least this large get a transparent-huge-page hint (fewer faults).
_HUGEPAGE_BYTES = 1 << 25


_REDUCTION_CODES = _ext.REDUCTION_CODES


def _fused(x, target, weight, grad_out, opts: Opts, acc_out: bool = False):
    """The C++ all-in-one op (CPU): (loss, z part) in x's dtype (the accumulation dtype with
    ``acc_out``); gradient into grad_out."""
    return torch.ops.crossent_ext.fused(
        x, target, weight, grad_out, opts.label_smoothing, opts.z_loss, opts.softcap or 0.0,
        opts.ignore_index, _REDUCTION_CODES[opts.reduction], acc_out)


def _fused_pullback(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                    label_smoothing: float, z_loss: float, softcap: float, ignore_index: int,
                    reduction: int, acc_out: bool, cot: torch.Tensor) -> torch.Tensor:
    """``fused_loss``'s node under create_graph: the gradient of :func:`composite_rows`, in
    differentiable ops (registered as the CompositeImplicitAutograd kernel of
    ``crossent_ext::fused_pullback``)."""
    opts = check_options(_ext.REDUCTION_NAMES[reduction], label_smoothing, z_loss, softcap or None,
                         ignore_index)
    out_dtype = acc_dtype(x.dtype) if acc_out else x.dtype
    with torch.enable_grad(), autocast_off(cot.device.type):
        loss, _ = composite_rows(x, target, weight, opts, out_dtype)
        (g,) = torch.autograd.grad(loss, x, cot, create_graph=True)
    return g


_PULLBACKS = {"fused_pullback": _fused_pullback}


def _ops() -> Any:
    """``torch.ops.crossent_ext``, with ``fused_pullback`` registered."""
    return _ext.pullback_ops(_PULLBACKS)


def composite_rows(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                   opts: Opts, out_dtype: torch.dtype,
                   check: bool = False, sw: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of the fused path on (R, C) rows, written with differentiable torch ops.

    Same function, options and conventions as :class:`_FusedCrossEntropy` (and as
    ``F.cross_entropy`` where they overlap; ``sw``: the (R,) sample weights), so autograd of
    it gives every derivative: it serves torch.func transforms, double backward
    (``create_graph=True``) and empty batches.
    Ignored rows are zeroed before the softmax, so a row of -inf padding logits contributes
    neither a NaN value nor a NaN gradient. Returns ``(loss, z part)``, reduced, the z part
    detached.
    """
    acc = acc_dtype(x.dtype)
    z = x.to(acc)
    if opts.softcap:
        z = torch.tanh(z / opts.softcap) * opts.softcap
    c = z.shape[1]
    eps = opts.label_smoothing
    w = None if weight is None else weight.to(acc)
    if target.is_floating_point():
        q = target.to(acc)
        if eps:
            q = q * (1.0 - eps) + eps / c
        if w is not None:
            q = q * w
        main = -(q * torch.log_softmax(z, dim=1)).sum(dim=1)
        lse = torch.logsumexp(z, dim=1)
        zrow = opts.z_loss * lse * lse
    else:
        valid = target != opts.ignore_index
        ysafe = torch.where(valid, target, torch.zeros_like(target))
        z = torch.where(valid.unsqueeze(1), z, torch.zeros_like(z))
        logp = torch.log_softmax(z, dim=1)
        nll = -logp.gather(1, ysafe.unsqueeze(1)).squeeze(1)
        main = (1.0 - eps) * nll if w is None else (1.0 - eps) * w[ysafe] * nll
        if eps:
            main = main - (eps / c) * (logp.sum(dim=1) if w is None else logp @ w)
        lse = torch.logsumexp(z, dim=1)
        zero = torch.zeros_like(lse)
        main = torch.where(valid, main, zero)
        zrow = torch.where(valid, opts.z_loss * lse * lse, zero)
    main, zrow = _weights.weighted(main, zrow, sw)
    gs, zs = _weights.scales(target, w, sw, opts, acc, x.device, check)
    loss, zpart = reduce_rows(main, zrow, opts.reduction, gs, zs)
    return loss.to(out_dtype), zpart.detach().to(out_dtype)


def _as_rows(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C,), (N, C) or (N, C, d1, ...) logits as (R, C) rows (a view where possible)."""
    if logits.dim() == 1:
        return logits.unsqueeze(0)
    if logits.dim() == 2:
        return logits
    return logits.movedim(1, -1).reshape(-1, num_classes)


class _FusedCrossEntropy(torch.autograd.Function):
    """(R, V) logits -> (loss, z_part). The gradient w.r.t. the logits is computed in forward
    and kept; the ordinary backward only scales it by grad_output (in place, no new N x V
    tensor). A backward that must itself be differentiable (``create_graph=True``) runs the
    differentiable composite (:func:`composite_rows`) instead.

    ``src`` is the caller's logits when ``x`` is a private copy of them (which the gradient
    may overwrite): the logits' values are then read from ``src`` after the forward. Only the
    gradient w.r.t. probability targets, which always needs them, keeps ``src`` alive (it
    replaces the copy of the logits that would be needed otherwise). Otherwise a weak
    reference is kept: holding the caller's N x V logits until backward would double the
    memory of these layouts for every call, for the rare backward that needs them (a second
    one through a retained graph, or a differentiable one), which then uses the logits if the
    caller still holds them unmodified.

    ``cfg`` is ``(opts, buffer_mode, out_dtype, ext)``, one argument (each argument of
    ``apply`` has a per-call cost): ``ext`` says whether the C++ kernel serves ``x``
    (:func:`._rows.use_extension`, decided once by the caller).
    """

    @staticmethod
    def forward(ctx, x, target, weight, sw, src, cfg: tuple[Opts, str, torch.dtype, bool]):
        opts, buffer_mode, out_dtype, ext = cfg
        acc = acc_dtype(x.dtype)
        need_x, need_t = ctx.needs_input_grad[:2]
        target_grad = need_t and target.is_floating_point()
        buf = None
        if need_x:
            if buffer_mode == "inplace":
                buf = x  # the caller's logits (or our private copy of them) become the gradient
            else:
                buf = torch.empty_like(x, memory_format=torch.contiguous_format)
                if ext and buf.nbytes >= _HUGEPAGE_BYTES:  # ext: a CPU tensor
                    torch.ops.crossent_ext.advise_hugepage(buf)
        # CPU kernel: one call does the label check, the denominators, the rows, the reduction.
        fast = ext and not target_grad and sw is None
        lse = None
        if fast:
            gs = zs = None
            loss, zpart = _fused(x, target, weight, buf, opts, out_dtype != x.dtype)
        else:
            red_gs, red_zs = _weights.scales(target, weight, sw, opts, acc, x.device, x.is_cpu)
            gs, zs = _weights.row_scales(red_gs, red_zs, sw)  # each row's gradient scale
            stats = rows_forward(
                x, target, weight=weight, ignore_index=opts.ignore_index,
                label_smoothing=opts.label_smoothing, z_loss=opts.z_loss, softcap=opts.softcap,
                grad_out=buf, grad_scale=gs, z_grad_scale=zs, impl=opts.impl)
            main, zrows = _weights.weighted(stats.loss, stats.z, sw)
            loss, zpart = reduce_rows(main, zrows, opts.reduction, red_gs, red_zs)
            loss, zpart = loss.to(out_dtype), zpart.to(out_dtype)
            if target_grad:
                lse = stats.lse
        overwritten = buf is x
        if overwritten:
            bump_version(x)
        ctx.buf = buf
        ctx.opts = opts
        ctx.acc = acc
        ctx.dtype = x.dtype
        ctx.out_dtype = out_dtype
        ctx.fast = fast
        ctx.target_grad = target_grad
        ctx.num_classes = x.shape[1]
        # The logits' values for a later backward: x itself while intact, else the caller's
        # logits when x was our private copy, else nothing (inplace_backward destroyed them).
        keep_src = src is not None and target_grad
        ctx.src_ref = None if src is None or keep_src else weakref.ref(src)
        ctx.src_version = None if src is None else src._version
        ctx.save_for_backward(None if (overwritten or src is not None) else x, target, weight,
                              sw, gs, zs, lse, src if keep_src else None)
        ctx.mark_non_differentiable(zpart)
        return loss, zpart

    @staticmethod
    def backward(ctx, grad_loss, grad_zpart):
        x, target, weight, sw, gs, zs, lse, src = ctx.saved_tensors
        if src is None and ctx.src_ref is not None:
            src = ctx.src_ref()
            if src is not None and src._version != ctx.src_version:
                src = None  # modified in place since the forward: its values are not ours
        opts = ctx.opts
        buf = ctx.buf
        # Hand the buffer over: with no other reference left, autograd adopts it as .grad
        # without a copy.
        ctx.buf = None
        need_x, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():
            # create_graph=True: the gradient itself must be differentiable (Hessian-vector
            # products, gradgradcheck), so take it by autograd of the composite.
            return _FusedCrossEntropy._differentiable_backward(ctx, x, src, target, weight,
                                                               sw, grad_loss)
        rows = x
        if rows is None and src is not None:
            rows = _as_rows(src, ctx.num_classes)
        if buf is None and need_x:
            # A second backward through a retained graph (gradcheck, retain_graph=True): the
            # first one consumed the buffer, so compute the gradient again from the logits.
            if rows is None:
                raise RuntimeError(
                    "crossent.torch.cross_entropy: backward ran twice through the same graph "
                    "after the logits were overwritten by the gradient (inplace_backward, or a "
                    "private copy of (N, C, d1, ...) or non-contiguous logits that the caller "
                    "no longer holds unmodified); retain_graph=True is not supported there")
            rows = _contiguous_rows(rows)
            buf = torch.empty_like(rows, memory_format=torch.contiguous_format)
            if ctx.fast:
                _fused(rows, target, weight, buf, opts)
            else:
                rows_forward(rows, target, weight=weight, ignore_index=opts.ignore_index,
                             label_smoothing=opts.label_smoothing, z_loss=opts.z_loss,
                             softcap=opts.softcap, grad_out=buf, grad_scale=gs,
                             z_grad_scale=zs, impl=opts.impl)
        grad_t = None
        if need_t and ctx.target_grad:
            # d loss_i / d t_ic = (1 - eps) * w_c * (lse_i - z_ic) times the row's scale; z is
            # read from logits that are intact (x, or the caller's logits behind a copy).
            z = rows.to(ctx.acc)
            if opts.softcap:
                z = torch.tanh(z / opts.softcap) * opts.softcap
            gt = (lse.unsqueeze(1) - z) * (1.0 - opts.label_smoothing)
            if weight is not None:
                gt = gt * weight
            f = gs * grad_loss.to(ctx.acc)  # per row (R,) or one scalar
            gt = gt * (f.reshape(-1, 1) if f.dim() else f)
            grad_t = gt.to(ctx.dtype)
        if not need_x:
            return None, grad_t, None, None, None, None
        (buf,) = scale_by_grad_output((buf,), grad_loss, opts.reduction == "none")
        return buf, grad_t, None, None, None, None

    @staticmethod
    def _differentiable_backward(ctx, x, src, target, weight, sw, grad_loss):
        need_x, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if x is None and src is None:
            raise RuntimeError(
                "crossent.torch.cross_entropy: a differentiable backward (create_graph=True, "
                "double backward) needs the logits' values, and they are gone: "
                "inplace_backward=True overwrote them with the gradient, or they were "
                "(N, C, d1, ...) or non-contiguous logits (the forward works on a private copy, "
                "which becomes the gradient) that the caller no longer holds unmodified; "
                "call it without inplace_backward and keep a reference to the logits")
        with torch.enable_grad(), autocast_off(grad_loss.device.type):
            rows = x if x is not None else _as_rows(src, ctx.num_classes)
            loss, _ = composite_rows(rows, target, weight, ctx.opts, ctx.out_dtype, sw=sw)
            inputs = ([rows] if need_x else []) + ([target] if need_t else [])
            grads = list(torch.autograd.grad(loss, inputs, grad_loss, create_graph=True,
                                             allow_unused=True))
        grad_x = grads.pop(0) if need_x else None
        grad_t = grads.pop(0) if need_t else None
        return grad_x, grad_t, None, None, None, None


def _contiguous_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` with contiguous rows (what the row kernels read), copied only when needed."""
    c = x.shape[1]
    if c > 1 and x.is_contiguous():  # the common case, without reading the strides
        return x
    if x.stride(-1) != 1 or (x.shape[0] > 1 and x.stride(0) < c):
        return x.contiguous()
    return x


def _rows_layout(logits: torch.Tensor, target: torch.Tensor, prob: bool, functional: bool):
    """Bring (C,), (N, C) and (N, C, d1, ...) to (R, C) rows; returns rows, targets, batch
    shape (for reduction="none") and whether the rows are a private copy. ``functional``
    (a torch.func transform) keeps to shape operations: wrapper tensors have no storage."""
    shape = logits.shape
    tshape = target.shape  # torch.Size: a tuple, compared as one
    if len(shape) == 1:
        want: tuple[int, ...] = shape if prob else ()
        if tshape != want:
            raise ValueError(f"target must have shape {tuple(want)} for unbatched logits of "
                             f"shape {tuple(shape)}, got {tuple(tshape)}")
        batch: tuple[int, ...] = ()
        t = target.reshape(1, -1) if prob else target.reshape(1)
        c = shape[0]
    else:
        c = shape[1]
        batch = (shape[0], *shape[2:])
        want = shape if prob else batch
        if tshape != want:
            kind = "probability" if prob else "class-index"
            raise ValueError(f"target ({kind}) must have shape {tuple(want)} for logits of "
                             f"shape {tuple(shape)}, got {tuple(tshape)}")
        if len(shape) == 2:
            t = target
        else:
            t = target.movedim(1, -1).reshape(-1, c) if prob else target.reshape(-1)
    x = _as_rows(logits, c)
    if functional or x.shape[0] == 0:
        return x, t, batch, False
    x = _contiguous_rows(x)
    copied = x is not logits and (
        x.untyped_storage().data_ptr() != logits.untyped_storage().data_ptr())
    return x, t, batch, copied


class _Options(TypedDict, total=False):
    """:func:`cross_entropy`'s keyword-only options but ``return_z_loss``, for its overloads."""

    sample_weight: Any
    z_loss: float
    softcap: float | None
    inplace_backward: bool
    impl: str


@overload
def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Any = ...,
                  size_average: bool | None = ..., ignore_index: int = ...,
                  reduce: bool | None = ..., reduction: str = ..., label_smoothing: float = ...,
                  *, return_z_loss: Literal[False] = ..., **options: Unpack[_Options]
                  ) -> torch.Tensor: ...
@overload
def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Any = ...,
                  size_average: bool | None = ..., ignore_index: int = ...,
                  reduce: bool | None = ..., reduction: str = ..., label_smoothing: float = ...,
                  *, return_z_loss: Literal[True], **options: Unpack[_Options]
                  ) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Any = ...,
                  size_average: bool | None = ..., ignore_index: int = ...,
                  reduce: bool | None = ..., reduction: str = ..., label_smoothing: float = ...,
                  *, return_z_loss: bool, **options: Unpack[_Options]
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...
def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Any = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    sample_weight: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    inplace_backward: bool = False,
    return_z_loss: bool = False,
    impl: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Softmax cross-entropy of logits, fused: one pass, gradient computed in the forward.

    .. math::
        z = c \tanh(x / c)\ \text{(softcap } c\text{, optional)},\qquad
        \mathrm{lse}_i = \log \textstyle\sum_k e^{z_{ik}}

        \ell_i = (1-\varepsilon)\, w_{y_i} (\mathrm{lse}_i - z_{i y_i})
                 + \tfrac{\varepsilon}{C} \textstyle\sum_c w_c (\mathrm{lse}_i - z_{ic})
                 + \lambda_z\, \mathrm{lse}_i^2

    Same values and gradients as :func:`torch.nn.functional.cross_entropy` for everything the
    two share (class-index and probability targets, ``weight``, ``ignore_index``,
    ``label_smoothing``, the three reductions, ``(C,)``, ``(N, C)`` and ``(N, C, d1, ...)``
    layouts), without composing ``log_softmax`` and ``nll_loss``: when a gradient is needed the
    forward computes, per row, the max, the log-sum-exp, the loss and the gradient
    ``softmax - target`` (scaled by per-row scalars for weights, smoothing, z-loss, softcap and
    the reduction) with one exp per logit, and keeps it; backward only multiplies it by
    ``grad_output``. Without a gradient it is a single read of the logits, no N x V buffer.
    On CPU a C++ kernel does this (built at first use, see :func:`backend_info`), on CUDA a
    Triton kernel (an online log-sum-exp over vocabulary blocks, then the gradient written
    over the logits it reads, with no host synchronisation); elsewhere, and for float64 on
    CUDA, a torch-ops version of the same algorithm runs. float16/bfloat16 logits are computed in
    float32 and the gradient is rounded once to the logits' dtype.

    Higher derivatives are exact too: a backward run with ``create_graph=True`` (double
    backward, Hessian-vector products, ``gradgradcheck``) computes the gradient with
    differentiable torch ops instead of the kept buffer. It needs the logits' values: not
    with ``inplace_backward=True``, and for (N, C, d1, ...) or non-contiguous logits (whose
    rows the forward copies, the copy becoming the gradient) only while the caller still holds
    the logits unmodified. Under ``torch.func`` transforms (``grad``, ``vmap``, ``jacrev``...)
    and for an empty batch the loss is computed as such a composition from the start
    (``inplace_backward`` then writes nothing). Under ``torch.autocast`` the loss is float32,
    as ``F.cross_entropy`` gives it there (the gradient keeps the logits' dtype).

    One deliberate difference from PyTorch: when every target is ignored (or the batch is
    empty), ``"mean"`` gives 0 with a zero gradient, not NaN.

    Per-token weights ``s_i`` (``sample_weight``, which PyTorch lacks) multiply each row's
    loss, z-loss included, and its gradient; "mean" is then
    ``sum_i s_i w_{y_i} l_i / sum_i s_i w_{y_i}`` over the non-ignored rows (0 when every
    counted weight is 0), the z-loss averaged with the weights ``s_i``, and probability
    targets divide by ``sum_i s_i``.

    The z-loss (PaLM) ``z_loss * lse**2`` is added on each non-ignored row, unweighted by
    ``weight``; with ``reduction="mean"`` it is averaged over the non-ignored rows (all rows for
    probability targets), so it stays the mean z-loss whatever the class weights (the
    convention of Liger-Kernel). With ``reduction="none"`` it is in each row's loss.

    Args:
        logits: (N, C), unbatched (C,), or (N, C, d1, ...) with the classes on dim 1;
            float16, bfloat16, float32 or float64.
        target: class indices, integer, of shape (N,), (), or (N, d1, ...); or class
            probabilities in [0, 1] of ``logits``' shape (floating).
        weight: (C,) per-class rescaling weight, as in PyTorch: a tensor (floating or
            integer), a sequence or a NumPy array; used in the accumulation dtype on the
            logits' device. It receives no gradient.
        size_average, reduce: PyTorch's deprecated reduction flags, mapped to ``reduction``
            as PyTorch maps them (None: use ``reduction``).
        ignore_index: class index whose rows count neither in the loss nor in the mean.
        sample_weight: optional per-row (per-token) weights of the shape of the targets'
            batch dimensions ((N,), (), (N, d1, ...)) or broadcastable to it; a tensor, a
            sequence or a NumPy array, used in the accumulation dtype. It receives no
            gradient. Combines with ``weight``, ``ignore_index`` and ``label_smoothing``.
        reduction: ``"mean"`` (weighted mean over non-ignored rows), ``"sum"`` or ``"none"``
            (shape of ``target``'s batch dimensions).
        label_smoothing: epsilon in [0, 1]; targets become ``(1 - eps) * onehot + eps / C``.
        z_loss: coefficient of the auxiliary ``lse**2`` term (PaLM uses 1e-4), >= 0.
        softcap: Gemma 2's logit soft-capping ``softcap * tanh(logits / softcap)`` applied
            before everything else (its derivative is folded into the gradient); None is off.
        inplace_backward: write the gradient into the logits' own memory (no extra N x V
            memory). The logits' values are destroyed by the call, so only pass logits that
            are an intermediate nobody reads afterwards (e.g. the output of the LM head);
            autograd raises if another op saved them for its own backward. A leaf tensor that
            requires grad, or a view of one, is refused. Default False: the caller's tensor is
            never modified.
        impl: ``"auto"`` (default: the C++ kernel on CPU where it is available, the Triton
            kernel on CUDA for float16 / bfloat16 / float32 logits where Triton imports,
            torch ops elsewhere; ``CROSSENT_NO_EXT=1`` makes torch ops the CPU default),
            ``"kernel"`` (the C++ kernel), ``"triton"`` (the Triton kernel: CUDA tensors, or
            CPU tensors when ``TRITON_INTERPRET=1`` runs Triton's interpreter) or
            ``"torch"`` (torch ops); the two kernels raise a ValueError where they cannot
            serve the call.
        return_z_loss: also return the z-loss part of the loss (reduced the same way,
            detached), for logging.

    The scalar options accept Python numbers, NumPy scalars and 0-d tensors.

    Returns:
        The loss: a scalar for ``"mean"``/``"sum"``, else the batch shape; in the logits'
        dtype (float32 under autocast). With ``return_z_loss=True``, ``(loss, z_loss_part)``.

    Raises:
        ValueError: unknown ``reduction``; ``label_smoothing`` outside [0, 1]; ``z_loss < 0``;
            ``softcap`` not a positive finite number or None; ``ignore_index`` not an integer
            within int64; logits with no class (C = 0); target, weight or sample_weight
            shape mismatch;
            (CPU) a class index out of range, probability targets outside [0, 1], or, for
            ``reduction="mean"``, class weights of the non-ignored targets that sum to 0
            (the weighted mean is undefined; on an accelerator, where checking would cost a
            host sync, the loss is NaN instead); ``inplace_backward`` on a leaf requiring
            grad or a view of one.
        TypeError: non-floating logits, a boolean or complex target, or a ``weight`` that is
            not real numbers.
        RuntimeError: a differentiable (``create_graph=True``) or a second backward
            (``retain_graph=True``) when the logits' values are gone (see above).

    Example:
        >>> import torch
        >>> from crossent.torch import cross_entropy
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], requires_grad=True)
        >>> target = torch.tensor([0, 2])
        >>> loss = cross_entropy(logits, target)
        >>> round(loss.item(), 4)
        0.1681
        >>> torch.allclose(loss, torch.nn.functional.cross_entropy(logits, target))
        True
        >>> loss.backward(); logits.grad.shape
        torch.Size([2, 3])

    Aliases: PyTorch ``F.cross_entropy`` / ``nn.CrossEntropyLoss``; TensorFlow
    ``softmax_cross_entropy_with_logits`` / ``SparseCategoricalCrossentropy(from_logits=True)``;
    optax ``softmax_cross_entropy_with_integer_labels``; Caffe ``SoftmaxWithLoss``.

    References:
        Liger-Kernel (Hsu et al., 2024), fused linear / cross-entropy Triton kernels;
        flash-attn ``cross_entropy`` (Dao); PaLM z-loss (Chowdhery et al., 2022, sec. 5);
        Gemma 2 logit soft-capping (Gemma Team, 2024).
    """
    if _common_call(logits, target, weight, size_average, reduce, reduction, label_smoothing,
                    sample_weight, z_loss, softcap, inplace_backward, return_z_loss, impl,
                    ignore_index):
        return _ops().fused_loss(logits, target, None, 0.0, 0.0, 0.0, ignore_index,
                                 _REDUCTION_CODES[reduction], False)[0]
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target must be torch.Tensor")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold class indices (integer) or probabilities "
                        f"(floating), got dtype {target.dtype}")
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    opts = check_options(reduction, label_smoothing, z_loss, softcap, ignore_index, impl)
    shape = logits.shape
    if not shape:
        raise ValueError("logits must have at least one dimension (the classes)")
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    if num_classes == 0:
        raise ValueError(f"logits must have at least one class, got logits of shape "
                         f"{tuple(shape)}")
    prob = target.is_floating_point()
    if weight is not None:
        weight = _weights.class_weight(weight, num_classes, logits)
    functional = transform_active(logits, target, weight)
    x, t, batch, copied = _rows_layout(logits, target, prob, functional)
    sw = _weights.sample_weight(sample_weight, batch, logits)
    if prob:
        check_probabilities(target)
        t = t.to(dtype=x.dtype)
        if not functional and not t.is_contiguous():
            t = t.contiguous()
    else:
        if t.dtype != torch.int64:
            t = t.to(dtype=torch.int64)
        if not functional and not t.is_contiguous():
            t = t.contiguous()
        ext = use_extension(x, opts.impl)
        if not ext:  # the C++ kernel checks them itself, before writing anything
            check_labels(t, num_classes, opts.ignore_index)
    device_type = "cpu" if x.is_cpu else x.device.type
    amp = autocast_enabled(device_type)
    out_dtype = loss_dtype(logits, amp)
    needs_grad = torch.is_grad_enabled() and (
        logits.requires_grad or (prob and target.requires_grad))
    if inplace_backward and needs_grad and not functional:  # transforms write nothing
        refuse_inplace_on_leaf(logits, "logits")
        if prob and target.requires_grad:
            raise ValueError("inplace_backward=True cannot be combined with probability "
                             "targets that require grad (their gradient needs the logits)")
    check = device_type == "cpu" and not functional
    with autocast_off(device_type, amp):
        if functional or x.shape[0] == 0:
            loss, zpart = composite_rows(x, t, weight, opts, out_dtype, check, sw)
        else:
            if prob:
                ext = use_extension(x, opts.impl)
            if needs_grad and ext and not prob and sw is None and not (
                    inplace_backward or copied) and not torch.compiler.is_compiling():
                # the common call: the kernel op with its autograd node in C++ (torch.compile
                # traces the Function below: its autograd key has no fake-tensor form)
                loss, zpart = _ops().fused_loss(
                    x, t, weight, opts.label_smoothing, opts.z_loss, opts.softcap or 0.0,
                    opts.ignore_index, _REDUCTION_CODES[opts.reduction], out_dtype != x.dtype)
            elif needs_grad:
                mode = "inplace" if (inplace_backward or copied) else "new"
                loss, zpart = _FusedCrossEntropy.apply(x, t, weight, sw,
                                                       logits if copied else None,
                                                       (opts, mode, out_dtype, ext))
            elif ext and sw is None:
                loss, zpart = _fused(x.detach(), t.detach(), weight, None, opts,
                                     out_dtype != x.dtype)
            else:
                stats = rows_forward(x.detach(), t.detach(), weight=weight,
                                     ignore_index=opts.ignore_index,
                                     label_smoothing=opts.label_smoothing, z_loss=opts.z_loss,
                                     softcap=opts.softcap, impl=opts.impl)
                gs, zs = _weights.scales(t, weight, sw, opts, acc_dtype(x.dtype), x.device, check)
                main, zrows = _weights.weighted(stats.loss, stats.z, sw)
                loss, zpart = reduce_rows(main, zrows, opts.reduction, gs, zs)
                loss, zpart = loss.to(out_dtype), zpart.to(out_dtype)
    return finish(loss, zpart, opts.reduction, batch, return_z_loss)


def _common_call(logits: Any, target: Any, weight: Any, size_average: Any, reduce: Any,
                 reduction: Any, label_smoothing: Any, sample_weight: Any, z_loss: Any,
                 softcap: Any, inplace_backward: Any, return_z_loss: Any, impl: Any,
                 ignore_index: Any) -> bool:
    """Whether a call is the common training one that the kernel op takes as it is: contiguous
    (N, C) CPU logits that require grad, N int64 labels, no option beyond the reduction and
    ``ignore_index``, no autocast, transform or compilation. :func:`cross_entropy` then skips
    its general checks (the op checks the labels itself): at 256 x 10 they cost as much as the
    kernel. Every condition is one the general path would reach the same op with."""
    return (type(logits) is torch.Tensor and type(target) is torch.Tensor and weight is None
            and size_average is None and reduce is None and sample_weight is None
            and softcap is None and inplace_backward is False and return_z_loss is False
            and impl == "auto" and type(label_smoothing) is float and label_smoothing == 0.0
            and type(z_loss) is float and z_loss == 0.0 and type(ignore_index) is int
            and _checks.INT64_RANGE[0] <= ignore_index <= _checks.INT64_RANGE[1]
            and type(reduction) is str
            and reduction in _REDUCTION_CODES
            and logits.dim() == 2 and target.dim() == 1 and target.dtype is torch.int64
            and logits.requires_grad and logits.dtype in EXT_DTYPES and logits.is_cpu
            and logits.shape[0] == target.shape[0] and logits.shape[0] > 0
            and logits.shape[1] > 0 and logits.is_contiguous() and target.is_contiguous()
            and torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not transform_active(logits, target) and not autocast_enabled("cpu")
            and _ext.load())


def softmax_cross_entropy_rows(logits: torch.Tensor, targets: Any, *, axis: Any = -1,
                               weight: Any = None, sample_weight: Any = None,
                               ignore_index: Any = -100,
                               label_smoothing: Any = 0.0, where: Any = None,
                               reduction: str = "mean") -> Any:
    """:func:`crossent.softmax_cross_entropy` on torch tensors, registered as its torch path:
    the classes moved to dim 1 and the fused Function run (same numbers, one pass); Optax's
    ``where`` masks and tuple axes are the definition's (``NotImplemented``)."""
    if where is not None or isinstance(axis, tuple):
        return NotImplemented
    if not (isinstance(logits, torch.Tensor) and isinstance(targets, torch.Tensor)):
        # NumPy arrays or sequences among them: converted to torch (and a JAX array refused)
        _, logits, targets = _array.common(logits=logits, targets=targets)
    # (N, C) logits with the classes last, the common call, skip the general axis handling
    ax = 1 if logits.ndim == 2 and (axis == -1 or axis == 1) and type(axis) is int \
        else _checks.class_axis(logits, axis)
    if logits.ndim > 1 and ax != 1:  # PyTorch's layout puts the classes on dim 1
        logits = torch.movedim(logits, ax, 1)
        if targets.is_floating_point():
            targets = torch.movedim(targets, ax, 1)
    return cross_entropy(logits, targets, weight=weight, ignore_index=ignore_index,
                         label_smoothing=label_smoothing, reduction=reduction,
                         sample_weight=sample_weight)


# cross_entropy follows autocast's float32 rule itself, without a float32 copy of the logits
softmax_cross_entropy_rows.handles_autocast = True  # type: ignore[attr-defined]


def backend_info() -> dict:
    """Which implementation serves each device, and why.

    Returns a dict: ``cpu`` ("cpp-extension" or "torch-ops"), ``cuda`` ("triton" where
    Triton imports, for float16 / bfloat16 / float32 logits; else "torch-ops"), ``triton``
    (None, or why Triton does not import), ``extension`` (availability, the build error if
    any, the library path, the load time, and ``rebuilt``: why a cached library was rebuilt,
    e.g. a file that no longer matches its recorded size and SHA-256, or None). Building the
    extension happens here if it has not happened yet.
    """
    ok = _ext.load()
    triton_error = _triton_rows.import_error()
    return {"cpu": "cpp-extension" if ok else "torch-ops",
            "cuda": "torch-ops" if triton_error else "triton", "triton": triton_error,
            "extension": _ext.info()}
