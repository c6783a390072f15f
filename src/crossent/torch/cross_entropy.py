"""Fused softmax cross-entropy for PyTorch: one pass, gradient computed in the forward."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from . import _ext
from ._rows import acc_dtype, rows_forward, use_extension

_REDUCTIONS = ("none", "mean", "sum")
# Fresh gradient buffers at least this large get a transparent-huge-page hint (fewer faults).
_HUGEPAGE_BYTES = 1 << 25


@dataclass(frozen=True)
class _Opts:
    ignore_index: int
    label_smoothing: float
    reduction: str
    z_loss: float
    softcap: float | None


def _check_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_options(reduction: str, label_smoothing: float, z_loss: float,
                  softcap: float | None, ignore_index: int) -> None:
    """Validate the scalar options shared by the fused and the linear cross-entropy."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    eps = _check_number(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    zc = _check_number(z_loss, "z_loss")
    if not zc >= 0.0:
        raise ValueError(f"z_loss must be a non-negative number, got {z_loss!r}")
    if softcap is not None:
        cap = _check_number(softcap, "softcap")
        if not cap > 0.0 or cap == float("inf"):
            raise ValueError(f"softcap must be a positive finite number or None, got {softcap!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")


def check_labels(target: torch.Tensor, num_classes: int, ignore_index: int,
                 name: str = "target") -> None:
    """Labels in [0, C) or equal to ignore_index. CPU only: on an accelerator the check would
    cost a host sync, and an out-of-range label there raises in the gather instead."""
    if target.device.type != "cpu" or target.numel() == 0:
        return
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        lo, hi = int(target.min()), int(target.max())
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes}) or ignore_index="
            f"{ignore_index}, got values in [{lo}, {hi}]")


def _mean_scales(target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
                 acc: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """1 / denominator of the main term and of the z-loss term for reduction="mean".

    Class targets: the main term divides by sum_i w[y_i] over non-ignored rows (PyTorch), the
    z-loss by the number of non-ignored rows. Probability targets: both divide by the number of
    rows. A zero denominator (every row ignored) gives a zero scale: loss 0, gradient 0.
    All on device, no host sync.
    """
    if target.is_floating_point():
        n = torch.tensor(float(target.shape[0]), dtype=acc, device=target.device)
        return _safe_inv(n), _safe_inv(n)
    valid = target != ignore_index
    count = valid.sum().to(acc)
    if weight is None:
        den = count
    else:
        ysafe = torch.where(valid, target, torch.zeros_like(target))
        den = (weight.to(acc)[ysafe] * valid).sum()
    return _safe_inv(den), _safe_inv(count)


_REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}


def _fused(x, target, weight, grad_out, opts: _Opts):
    """The C++ all-in-one op (CPU): (loss, z part) in x's dtype; gradient into grad_out."""
    return torch.ops.crossent_ext.fused(
        x, target, weight, grad_out, opts.label_smoothing, opts.z_loss, opts.softcap or 0.0,
        opts.ignore_index, _REDUCTION_CODES[opts.reduction])


def _scales(target, weight, opts: _Opts, acc, device):
    if opts.reduction == "mean":
        return _mean_scales(target, weight, opts.ignore_index, acc)
    one = torch.ones((), dtype=acc, device=device)
    return one, one


def _safe_inv(d: torch.Tensor) -> torch.Tensor:
    nz = d != 0
    return torch.where(nz, 1.0 / torch.where(nz, d, torch.ones_like(d)), torch.zeros_like(d))


def _reduce(main: torch.Tensor, z: torch.Tensor, reduction: str, gs, zs):
    if reduction == "none":
        return main + z, z
    zsum = z.sum()
    if reduction == "sum":
        return main.sum() + zsum, zsum
    zpart = zsum * zs
    return main.sum() * gs + zpart, zpart


def _bump_version(t: torch.Tensor) -> None:
    """Mark a tensor as modified in place so autograd catches any op that saved it."""
    try:
        torch.autograd.graph.increment_version(t)
    except Exception:  # older torch: no public way; the in-place write stays unchecked
        pass


class _FusedCrossEntropy(torch.autograd.Function):
    """(R, V) logits -> (loss, z_part). The gradient w.r.t. the logits is computed in forward
    and kept; backward only scales it by grad_output (in place, no new N x V tensor)."""

    @staticmethod
    def forward(ctx, x, target, weight, opts: _Opts, buffer_mode: str):
        acc = acc_dtype(x.dtype)
        if buffer_mode == "inplace":
            buf = x  # the caller's logits (or our private copy of them) become the gradient
        else:
            buf = torch.empty_like(x, memory_format=torch.contiguous_format)
            if buf.device.type == "cpu" and buf.nbytes >= _HUGEPAGE_BYTES and use_extension(x):
                torch.ops.crossent_ext.advise_hugepage(buf)
        # Probability targets that need a gradient: keep what d loss / d t needs before the
        # logits can be overwritten.
        target_grad = target.is_floating_point() and ctx.needs_input_grad[1]
        z_saved = None
        if target_grad:
            z_saved = x.to(acc)
            if opts.softcap:
                z_saved = torch.tanh(z_saved / opts.softcap) * opts.softcap
        # CPU kernel: one call does the label check, the denominators, the rows, the reduction.
        fast = use_extension(x) and not target_grad
        if fast:
            gs = zs = lse = None
            loss, zpart = _fused(x, target, weight, buf, opts)
        else:
            gs, zs = _scales(target, weight, opts, acc, x.device)
            stats = rows_forward(
                x, target, weight=weight, ignore_index=opts.ignore_index,
                label_smoothing=opts.label_smoothing, z_loss=opts.z_loss, softcap=opts.softcap,
                grad_out=buf, grad_scale=gs, z_grad_scale=zs)
            loss, zpart = _reduce(stats.loss, stats.z, opts.reduction, gs, zs)
            loss, zpart = loss.to(x.dtype), zpart.to(x.dtype)
            lse = stats.lse
        if buffer_mode == "inplace":
            _bump_version(x)
        ctx.buf = buf
        ctx.opts = opts
        ctx.acc = acc
        ctx.dtype = x.dtype
        ctx.fast = fast
        ctx.recompute = buffer_mode == "new"  # x is intact: a second backward can redo it
        ctx.target_grad = target_grad
        extra = ()
        if target_grad:
            extra = (z_saved, lse, None if weight is None else weight.to(acc))
        ctx.save_for_backward(x if ctx.recompute else None, target, weight, gs, zs, *extra)
        ctx.mark_non_differentiable(zpart)
        return loss, zpart

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, grad_zpart):
        x, target, weight, gs, zs, *extra = ctx.saved_tensors
        opts = ctx.opts
        buf = ctx.buf
        # Hand the buffer over: with no other reference left, autograd adopts it as .grad
        # without a copy.
        ctx.buf = None
        if buf is None and ctx.needs_input_grad[0]:
            # A second backward through a retained graph (gradcheck, retain_graph=True): the
            # first one consumed the buffer, so compute the gradient again from the logits.
            if not ctx.recompute:
                raise RuntimeError(
                    "crossent.torch.cross_entropy: backward ran twice through the same graph "
                    "after the logits were overwritten by the gradient (inplace_backward, or a "
                    "private copy of non-contiguous logits); retain_graph=True is not supported "
                    "there")
            buf = torch.empty_like(x, memory_format=torch.contiguous_format)
            if ctx.fast:
                _fused(x, target, weight, buf, opts)
            else:
                rows_forward(x, target, weight=weight, ignore_index=opts.ignore_index,
                             label_smoothing=opts.label_smoothing, z_loss=opts.z_loss,
                             softcap=opts.softcap, grad_out=buf, grad_scale=gs, z_grad_scale=zs)
        grad_t = None
        if ctx.needs_input_grad[1] and ctx.target_grad:
            z, lse, w = extra
            # d loss_i / d t_ic = (1 - eps) * w_c * (lse_i - z_ic) times the row's scale.
            gt = (lse.unsqueeze(1) - z) * (1.0 - opts.label_smoothing)
            if w is not None:
                gt = gt * w
            go = grad_loss.to(ctx.acc)
            gt = gt * (gs * go).reshape(-1, 1) if opts.reduction == "none" else gt * (gs * go)
            grad_t = gt.to(ctx.dtype)
        if not ctx.needs_input_grad[0]:
            return None, grad_t, None, None, None
        if opts.reduction == "none":
            buf.mul_(grad_loss.to(buf.dtype).unsqueeze(1))
        elif not (grad_loss.device.type == "cpu" and grad_loss.item() == 1.0):
            # On CPU reading the scalar is free and loss.backward() passes 1: skip a pass.
            buf.mul_(grad_loss.to(buf.dtype))
        return buf, grad_t, None, None, None


def _rows_layout(logits: torch.Tensor, target: torch.Tensor, prob: bool):
    """Bring (C,), (N, C) and (N, C, d1, ...) to (R, C) rows; returns rows, targets, batch
    shape (for reduction="none") and whether the rows are a private copy."""
    if logits.dim() == 1:
        want = logits.shape if prob else ()
        if tuple(target.shape) != tuple(want):
            raise ValueError(f"target must have shape {tuple(want)} for unbatched logits of "
                             f"shape {tuple(logits.shape)}, got {tuple(target.shape)}")
        return logits.unsqueeze(0), target.reshape(1, -1) if prob else target.reshape(1), (), False
    c = logits.shape[1]
    batch = (logits.shape[0], *logits.shape[2:])
    want = tuple(logits.shape) if prob else batch
    if tuple(target.shape) != want:
        kind = "probability" if prob else "class-index"
        raise ValueError(f"target ({kind}) must have shape {want} for logits of shape "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    if logits.dim() == 2:
        x = logits
        t = target
    else:
        x = logits.movedim(1, -1).reshape(-1, c)
        t = target.movedim(1, -1).reshape(-1, c) if prob else target.reshape(-1)
    if x.stride(-1) != 1 or (x.shape[0] > 1 and x.stride(0) < c):
        x = x.contiguous()
    copied = x.untyped_storage().data_ptr() != logits.untyped_storage().data_ptr()
    return x, t, batch, copied


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    z_loss: float = 0.0,
    softcap: float | None = None,
    inplace_backward: bool = False,
    return_z_loss: bool = False,
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
    On CPU a C++ kernel does this (built at first use, see :func:`backend_info`); elsewhere a
    torch-ops version of the same algorithm runs. float16/bfloat16 logits are computed in
    float32 and the gradient is rounded once to the logits' dtype.

    One deliberate difference from PyTorch: when every target is ignored, ``"mean"`` gives 0
    with a zero gradient, not NaN.

    The z-loss (PaLM) ``z_loss * lse**2`` is added on each non-ignored row, unweighted by
    ``weight``; with ``reduction="mean"`` it is averaged over the non-ignored rows (all rows for
    probability targets), so it stays the mean z-loss whatever the class weights (the
    convention of Liger-Kernel). With ``reduction="none"`` it is in each row's loss.

    Args:
        logits: (N, C), unbatched (C,), or (N, C, d1, ...) with the classes on dim 1;
            float16, bfloat16, float32 or float64.
        target: class indices, integer, of shape (N,), (), or (N, d1, ...); or class
            probabilities of ``logits``' shape (floating).
        weight: (C,) per-class rescaling weight, as in PyTorch. It receives no gradient.
        ignore_index: class index whose rows count neither in the loss nor in the mean.
        label_smoothing: epsilon in [0, 1]; targets become ``(1 - eps) * onehot + eps / C``.
        reduction: ``"mean"`` (weighted mean over non-ignored rows), ``"sum"`` or ``"none"``
            (shape of ``target``'s batch dimensions).
        z_loss: coefficient of the auxiliary ``lse**2`` term (PaLM uses 1e-4), >= 0.
        softcap: Gemma 2's logit soft-capping ``softcap * tanh(logits / softcap)`` applied
            before everything else (its derivative is folded into the gradient); None is off.
        inplace_backward: write the gradient into the logits' own memory (no extra N x V
            memory). The logits' values are destroyed by the call, so only pass logits that
            are an intermediate nobody reads afterwards (e.g. the output of the LM head);
            autograd raises if another op saved them for its own backward. A leaf tensor that
            requires grad is refused. Default False: the caller's tensor is never modified.
        return_z_loss: also return the z-loss part of the loss (reduced the same way,
            detached), for logging.

    Returns:
        The loss: a scalar for ``"mean"``/``"sum"``, else the batch shape; in the logits'
        dtype. With ``return_z_loss=True``, ``(loss, z_loss_part)``.

    Raises:
        ValueError: unknown ``reduction``; ``label_smoothing`` outside [0, 1]; ``z_loss < 0``;
            ``softcap <= 0``; target or weight shape mismatch; (CPU) a class index out of
            range; ``inplace_backward`` on a leaf requiring grad.
        TypeError: non-floating logits, or a boolean target.

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
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target must be torch.Tensor")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold class indices (integer) or probabilities "
                        f"(floating), got dtype {target.dtype}")
    check_options(reduction, label_smoothing, z_loss, softcap, ignore_index)
    if logits.dim() == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    num_classes = logits.shape[0] if logits.dim() == 1 else logits.shape[1]
    if num_classes == 0:
        raise ValueError(f"logits must have at least one class, got shape {tuple(logits.shape)}")
    prob = target.is_floating_point()
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            raise TypeError("weight must be a floating-point tensor of one weight per class")
        if weight.dim() != 1 or weight.shape[0] != num_classes:
            raise ValueError(f"weight must have shape ({num_classes},), got "
                             f"{tuple(weight.shape)}")
        weight = weight.detach().to(device=logits.device)
    x, t, batch, copied = _rows_layout(logits, target, prob)
    if prob:
        t = t.to(dtype=x.dtype)
        if not t.is_contiguous():
            t = t.contiguous()
    else:
        t = t.to(dtype=torch.int64).contiguous()
        if not use_extension(x):  # the C++ kernel checks them itself, before writing anything
            check_labels(t, num_classes, ignore_index)
    opts = _Opts(int(ignore_index), float(label_smoothing), reduction, float(z_loss),
                 None if softcap is None else float(softcap))
    needs_grad = torch.is_grad_enabled() and (
        logits.requires_grad or (prob and target.requires_grad))
    if inplace_backward and needs_grad:
        if logits.is_leaf and logits.requires_grad:
            raise ValueError(
                "inplace_backward=True writes the gradient into the logits' memory, so logits "
                "must be an intermediate result, not a leaf tensor that requires grad")
        if prob and target.requires_grad:
            raise ValueError("inplace_backward=True cannot be combined with probability "
                             "targets that require grad (their gradient needs the logits)")
    if needs_grad:
        mode = "inplace" if (inplace_backward or copied) else "new"
        loss, zpart = _FusedCrossEntropy.apply(x, t, weight, opts, mode)
    elif use_extension(x):
        loss, zpart = _fused(x.detach(), t.detach(), weight, None, opts)
    else:
        stats = rows_forward(x.detach(), t.detach(), weight=weight,
                             ignore_index=opts.ignore_index,
                             label_smoothing=opts.label_smoothing, z_loss=opts.z_loss,
                             softcap=opts.softcap)
        gs, zs = _scales(t, weight, opts, acc_dtype(x.dtype), x.device)
        loss, zpart = _reduce(stats.loss, stats.z, reduction, gs, zs)
        loss, zpart = loss.to(x.dtype), zpart.to(x.dtype)
    if reduction == "none":
        loss = loss.reshape(batch)
        zpart = zpart.reshape(batch)
    return (loss, zpart) if return_z_loss else loss


def backend_info() -> dict:
    """Which implementation serves each device, and why.

    Returns a dict: ``cpu`` ("cpp-extension" or "torch-ops"), ``cuda`` ("torch-ops"),
    ``extension`` (availability, the build error if any, the library path and load time).
    Building the extension happens here if it has not happened yet.
    """
    ok = _ext.load()
    return {"cpu": "cpp-extension" if ok else "torch-ops", "cuda": "torch-ops",
            "extension": _ext.info()}
