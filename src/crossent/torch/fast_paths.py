"""Fused CPU paths of crossent's generic losses, registered for them (``@loss(torch=...)``):
:func:`crossent.sigmoid_cross_entropy`, :func:`crossent.sigmoid_focal_loss`,
:func:`crossent.distillation_loss` and :func:`crossent.multi_margin_loss`.

On CPU tensors a C++ kernel (``crossent_ext::binary``, ``distill_rows``, ``multi_margin_rows``)
computes the loss and its closed-form gradient w.r.t. the first argument in one pass, and one
autograd node saves that gradient: backward is one multiply by the cotangent, with no graph
of intermediates. The node is a Python autograd Function, except for the multi-class margin
loss with ``p=1``, whose node is C++ too (``crossent_ext::multi_margin_p1``): at 256 x 10 a
Python Function alone costs most of the native op's whole fwd+bwd. Everything else is the
definition's job, so these functions answer ``NotImplemented`` and the generic path (the same
formulas in torch ops) runs: other devices, gradients w.r.t. a second argument or a learnable
option, ``torch.func`` transforms, forward-mode AD and tracing, empty inputs, layouts the
kernels do not take, and every argument the definition would reject (it words the error).
Double backward (``create_graph=True``) rebuilds the gradient from the definition with
differentiable ops, so Hessian-vector products are exact (for ``p=1`` the gradient is
piecewise constant, so the C++ node's product with the cotangent is the whole of it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._common import transform_active
from ._rows import use_extension

__all__ = ["sigmoid_cross_entropy", "sigmoid_focal_loss", "distillation_loss",
           "multi_margin_loss"]

_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}

Definition = Callable[..., Any]  # the loss's definition with its options bound


def _served(x: Any, other: Any, reduction: Any) -> bool:
    """Whether the kernels can take this call at all (the rest is per loss)."""
    return (isinstance(x, torch.Tensor) and isinstance(other, torch.Tensor)
            and other.is_cpu and reduction in _REDUCTIONS and x.numel() > 0
            and not other.requires_grad and not torch.compiler.is_compiling()
            and not transform_active(x, other) and use_extension(x))


def _number(v: Any) -> bool:
    """A plain finite Python number (anything else goes to the definition's checks)."""
    return type(v) in (float, int) and math.isfinite(v)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _FusedClosedForm(torch.autograd.Function):
    """Value and gradient from a kernel; backward scales the kernel's gradient in place."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, run: Callable[[bool], tuple[torch.Tensor, Any]],
                generic: Definition, name: str, per_row: bool, *saved: torch.Tensor
                ) -> torch.Tensor:
        loss, grad = run(True)
        # The gradient is our own buffer, not an input: kept on ctx so that backward can hand
        # it over (scaled in place) and autograd adopts it as .grad without a copy; peak memory
        # is then the one gradient the native op also returns.
        ctx.buf = grad
        ctx.run = run
        ctx.save_for_backward(x, *saved)
        ctx.generic, ctx.name, ctx.per_row = generic, name, per_row
        return loss

    @staticmethod
    def backward(ctx: Any, cot: torch.Tensor) -> tuple[Any, ...]:
        x, *saved = ctx.saved_tensors
        buf, ctx.buf = ctx.buf, None
        if torch.is_grad_enabled():
            # create_graph: the definition's pullback, in differentiable torch ops
            _, pullback = ctx.generic((ctx.name,), x, *saved)
            g = pullback(cot)[ctx.name]
        else:
            if buf is None:  # a second backward through a retained graph: compute it again
                buf = ctx.run(True)[1]
            g = buf
            if cot.ndim:
                g.mul_(cot.to(g.dtype).unsqueeze(-1) if ctx.per_row else cot.to(g.dtype))
            elif not (cot.is_cpu and cot.item() == 1.0):  # loss.backward(): nothing to scale
                g.mul_(cot.to(g.dtype))
        return (g, None, None, None, None, *(None,) * len(saved))


def _call(x: torch.Tensor, run: Callable[[bool], tuple[torch.Tensor, Any]],
          generic: Definition, name: str, per_row: bool, *saved: torch.Tensor) -> Any:
    if x.requires_grad and torch.is_grad_enabled():
        return _FusedClosedForm.apply(x, run, generic, name, per_row, *saved)
    return run(False)[0]


# --- sigmoid cross-entropy and sigmoid focal loss --------------------------------------------


def _element_weight(w: Any, logits: torch.Tensor) -> torch.Tensor | None | bool:
    """``w`` in the kernel's layout (one value per element or per last-dim position, in the
    accumulation dtype), None for none, False when the kernel cannot take it."""
    if w is None:
        return None
    if not isinstance(w, torch.Tensor) or w.requires_grad or w.device.type != "cpu":
        return False
    w = w.to(_acc(logits.dtype))  # as the definition: weights in the computation's dtype
    last = logits.shape[-1] if logits.ndim else 1
    if w.numel() == 1:
        return w.reshape(1).expand(last).contiguous()
    if w.shape[-1:] == (last,) and math.prod(w.shape[:-1]) == 1 and w.ndim <= logits.ndim:
        return w.reshape(last).contiguous()
    try:
        return torch.broadcast_to(w, logits.shape).contiguous()
    except RuntimeError:
        return False  # the definition raises the error


def _binary(logits: torch.Tensor, targets: torch.Tensor, weight: Any, pos_weight: Any,
            focal: bool, alpha: float, gamma: float, reduction: str, generic: Definition
            ) -> Any:
    x = logits.contiguous()
    t = targets.to(_acc(logits.dtype)).contiguous()

    def run(want_grad: bool) -> tuple[torch.Tensor, Any]:
        try:
            return torch.ops.crossent_ext.binary(x, t, weight, pos_weight, focal, alpha, gamma,
                                                 _REDUCTIONS[reduction], want_grad)
        except ValueError:  # targets outside [0, 1]: the definition's check words it
            from .. import _checks

            _checks.in_unit_interval(torch, t, "targets")
            raise

    return _call(logits, run, generic, "logits", False, t)


def sigmoid_cross_entropy(logits: Any, targets: Any, *, weight: Any = None,
                          pos_weight: Any = None, sample_weight: Any = None,
                          where: Any = None, reduction: str = "mean") -> Any:
    """The fused CPU path of :func:`crossent.sigmoid_cross_entropy` (same signature), or
    ``NotImplemented`` where the definition serves the call."""
    if (where is not None or not _served(logits, targets, reduction)
            or targets.shape != logits.shape):
        return NotImplemented
    den = None
    if sample_weight is not None:
        # the weighted mean is the kernel's sum with the product of the weights, divided by
        # sum(sample_weight) (a constant: the weights take no gradient here)
        if (not isinstance(sample_weight, torch.Tensor) or sample_weight.requires_grad
                or not sample_weight.is_cpu
                or (isinstance(weight, torch.Tensor) and weight.requires_grad)):
            return NotImplemented
        try:
            sw = torch.broadcast_to(sample_weight.to(_acc(logits.dtype)), logits.shape)
        except RuntimeError:
            return NotImplemented  # the definition words the shape error
        if reduction == "mean":
            from .. import _checks
            from ._common import safe_inv

            den = safe_inv(_checks.mean_denominator(torch, sw.sum(), (sw != 0).sum(),
                                                    "sample_weight"))
            reduction = "sum"
        if weight is not None:
            if not isinstance(weight, torch.Tensor):
                return NotImplemented
            sw = sw * weight.to(sw.dtype)
        weight = sw
    w, pw = _element_weight(weight, logits), _element_weight(pos_weight, logits)
    if w is False or pw is False:
        return NotImplemented
    from ..classification import sigmoid_cross_entropy as loss

    def generic(need: tuple[str, ...], x: torch.Tensor, t: torch.Tensor) -> Any:
        return loss.with_pullback(need, x, t, weight=weight, pos_weight=pos_weight,
                                  reduction=reduction)

    out = _binary(logits, targets, w, pw, False, -1.0, 0.0, reduction, generic)
    return out if den is None else out * den.to(out.dtype)


def sigmoid_focal_loss(logits: Any, targets: Any, *, alpha: Any = 0.25, gamma: Any = 2.0,
                       weight: Any = None, avg_factor: Any = None, where: Any = None,
                       reduction: str = "mean") -> Any:
    """The fused CPU path of :func:`crossent.sigmoid_focal_loss` (same signature), or
    ``NotImplemented`` where the definition serves the call."""
    if not (where is None and _number(gamma) and gamma >= 0
            and (alpha is None or (_number(alpha) and 0 <= alpha <= 1))
            and (avg_factor is None or (_number(avg_factor) and avg_factor >= 0
                                        and reduction != "sum"))):
        return NotImplemented
    if not _served(logits, targets, reduction) or targets.shape != logits.shape:
        return NotImplemented
    w = _element_weight(weight, logits)
    if w is False:
        return NotImplemented
    from .._reduce import AVG_FACTOR_EPS
    from ..focal import sigmoid_focal_loss as loss

    # avg_factor: the kernel's sum, then one scalar division (its backward scales the
    # cotangent the kernel's gradient is multiplied by)
    averaged = avg_factor is not None and reduction == "mean"
    inner = "sum" if averaged else reduction

    def generic(need: tuple[str, ...], x: torch.Tensor, t: torch.Tensor) -> Any:
        return loss.with_pullback(need, x, t, alpha=alpha, gamma=gamma, weight=weight,
                                  reduction=inner)

    out = _binary(logits, targets, w, None, True, -1.0 if alpha is None else float(alpha),
                  float(gamma), inner, generic)
    return out / (float(avg_factor) + AVG_FACTOR_EPS) if averaged else out


# --- distillation and multi-class margin: row kernels ----------------------------------------


def _last_axis(axis: Any, ndim: int) -> bool:
    return type(axis) is int and axis in (-1, ndim - 1)


def distillation_loss(student_logits: Any, teacher_logits: Any, *, temperature: Any = 1.0,
                      axis: Any = -1, reduction: str = "mean") -> Any:
    """The fused CPU path of :func:`crossent.distillation_loss` (same signature), or
    ``NotImplemented`` where the definition serves the call."""
    s, t = student_logits, teacher_logits
    if not (_served(s, t, reduction) and s.ndim == 2 and _last_axis(axis, 2)
            and t.shape == s.shape and t.dtype == s.dtype and _number(temperature)
            and temperature > 0):
        return NotImplemented
    from ..distillation import distillation_loss as loss

    def generic(need: tuple[str, ...], x: torch.Tensor, teacher: torch.Tensor) -> Any:
        return loss.with_pullback(need, x, teacher, temperature=temperature, axis=axis,
                                  reduction=reduction)

    xs, xt = s.contiguous(), t.contiguous()

    def run(want_grad: bool) -> tuple[torch.Tensor, Any]:
        return torch.ops.crossent_ext.distill_rows(xs, xt, float(temperature),
                                                   _REDUCTIONS[reduction], want_grad)

    return _call(s, run, generic, "student_logits", True, xt)


def multi_margin_loss(logits: Any, labels: Any, *, p: Any = 1, margin: Any = 1.0,
                      weight: Any = None, reduction: str = "mean") -> Any:
    """The fused CPU path of :func:`crossent.multi_margin_loss` (same signature), or
    ``NotImplemented`` where the definition serves the call."""
    if not (_served(logits, labels, reduction) and logits.ndim == 2 and labels.ndim == 1
            and labels.shape[0] == logits.shape[0] and logits.shape[1] > 0
            and labels.dtype in (torch.int64, torch.int32, torch.int16, torch.int8,
                                 torch.uint8)
            and type(p) is int and p in (1, 2) and _number(margin)
            and (weight is None or (isinstance(weight, torch.Tensor) and not weight.requires_grad
                                    and weight.shape == (logits.shape[1],)))):
        return NotImplemented
    x = logits.contiguous()
    y = (labels if labels.dtype is torch.int64 else labels.to(torch.int64)).contiguous()
    if p == 1:
        # the autograd node is C++ too (see multi_margin_p1 in the kernel's source)
        try:
            return torch.ops.crossent_ext.multi_margin_p1(x, y, weight, float(margin),
                                                          _REDUCTIONS[reduction])
        except ValueError:  # a label out of range: the definition words the error
            from ..hinge import multi_margin_loss as loss

            loss.with_pullback((), x, labels, p=p, margin=margin, weight=weight,
                               reduction=reduction)
            raise
    from ..hinge import multi_margin_loss as loss

    def generic(need: tuple[str, ...], x: torch.Tensor, y: torch.Tensor) -> Any:
        return loss.with_pullback(need, x, y, p=p, margin=margin, weight=weight,
                                  reduction=reduction)


    def run(want_grad: bool) -> tuple[torch.Tensor, Any]:
        try:
            return torch.ops.crossent_ext.multi_margin_rows(
                x, y, weight, p, float(margin), _REDUCTIONS[reduction], want_grad)
        except ValueError:  # a label out of range: the definition words the error
            generic((), x, labels)
            raise

    return _call(logits, run, generic, "logits", True, y)
