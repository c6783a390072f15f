"""Fused CPU paths of crossent's generic losses, registered for them (``@loss(torch=...)``):
:func:`crossent.sigmoid_cross_entropy`, :func:`crossent.sigmoid_focal_loss`,
:func:`crossent.distillation_loss` and :func:`crossent.multi_margin_loss`.

On CPU tensors a C++ kernel op (``crossent_ext::binary_loss``, ``distill_loss``,
``multi_margin_loss``) computes the loss and its closed-form gradient w.r.t. the first argument
in one pass, and gives the loss an autograd node written in C++ that keeps that gradient:
backward is one multiply by the cotangent, with no graph of intermediates and no Python (a
Python autograd Function alone costs more than a native op's whole fwd+bwd at 256 x 10).
Double backward (``create_graph=True``) calls the loss's definition, registered below as a
Python op, whose pullback is written in differentiable torch ops: Hessian-vector products are
exact. Everything else is the definition's job, so these functions answer ``NotImplemented``
and the generic path (the same formulas in torch ops) runs: other devices, gradients w.r.t. a
second argument or a learnable option, ``torch.func`` transforms, forward-mode AD and tracing,
empty inputs, layouts the kernels do not take, and every argument the definition would reject
(it words the error).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import _ext
from ._common import kernel_call
from ._rows import use_extension

__all__ = ["sigmoid_cross_entropy", "sigmoid_focal_loss", "distillation_loss",
           "multi_margin_loss"]

_REDUCTIONS = _ext.REDUCTION_CODES


def _served(x: Any, other: Any, reduction: Any) -> bool:
    """Whether the kernels can take this call at all (the rest is per loss). The cheap
    conditions come first: at 256 x 10 a native fwd+bwd is ~60 us, and each microsecond here
    is felt."""
    return (isinstance(x, torch.Tensor) and isinstance(other, torch.Tensor)
            and type(reduction) is str and reduction in _REDUCTIONS
            and other.is_cpu and x.numel() > 0 and not other.requires_grad
            and kernel_call(x, other) and use_extension(x))


def _number(v: Any) -> bool:
    """A plain finite Python number (anything else goes to the definition's checks)."""
    return type(v) in (float, int) and math.isfinite(v)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# --- the definitions' pullbacks, the C++ nodes' double backward -------------------------------
# A kernel op's autograd node (``ClosedFormBackward``, C++) calls these ops under create_graph:
# CompositeImplicitAutograd kernels in Python that run the loss's definition in differentiable
# torch ops, so autograd records the second-order graph. The options arrive as the kernel took
# them (reduction as its code, a focal alpha of None as -1).

_NAMES = _ext.REDUCTION_NAMES


def _binary_pullback(x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None,
                     pw: torch.Tensor | None, focal: bool, alpha: float, gamma: float,
                     reduction: int, cot: torch.Tensor) -> torch.Tensor:
    red = _NAMES[reduction]
    if focal:
        from ..focal import sigmoid_focal_loss

        _, pullback = sigmoid_focal_loss.with_pullback(
            ("logits",), x, t, alpha=None if alpha < 0 else alpha, gamma=gamma, weight=w,
            reduction=red)
    else:
        from ..classification import sigmoid_cross_entropy

        _, pullback = sigmoid_cross_entropy.with_pullback(("logits",), x, t, weight=w,
                                                          pos_weight=pw, reduction=red)
    assert pullback is not None  # a definition asked for a gradient returns a pullback
    return pullback(cot)["logits"]


def _distill_pullback(s: torch.Tensor, t: torch.Tensor, temperature: float, reduction: int,
                      cot: torch.Tensor) -> torch.Tensor:
    from ..distillation import distillation_loss

    _, pullback = distillation_loss.with_pullback(("student_logits",), s, t,
                                                  temperature=temperature,
                                                  reduction=_NAMES[reduction])
    assert pullback is not None  # a definition asked for a gradient returns a pullback
    return pullback(cot)["student_logits"]


def _multi_margin_pullback(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, p: int,
                           margin: float, reduction: int, cot: torch.Tensor) -> torch.Tensor:
    from ..hinge import multi_margin_loss

    _, pullback = multi_margin_loss.with_pullback(("logits",), x, y, p=p, margin=margin,
                                                  weight=w, reduction=_NAMES[reduction])
    assert pullback is not None  # a definition asked for a gradient returns a pullback
    return pullback(cot)["logits"]


_PULLBACKS = {"binary_pullback": _binary_pullback, "distill_pullback": _distill_pullback,
              "multi_margin_pullback": _multi_margin_pullback}


def _ops() -> Any:
    """``torch.ops.crossent_ext``, with the pullbacks above registered."""
    return _ext.pullback_ops(_PULLBACKS)


_OVERLOADS: dict[str, Any] = {}


def _op(name: str) -> Any:
    """The kernel op ``name``'s default overload (calling it skips the overload packet's
    Python ``__call__``, half a microsecond)."""
    op = _OVERLOADS.get(name)
    if op is None:
        op = _OVERLOADS[name] = getattr(_ops(), name).default
    return op


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
            focal: bool, alpha: float, gamma: float, reduction: str) -> Any:
    x = logits.contiguous()
    t = targets.to(_acc(logits.dtype)).contiguous()
    try:
        return _op("binary_loss")(x, t, weight, pos_weight, focal, alpha, gamma,
                                  _REDUCTIONS[reduction])
    except ValueError:  # targets outside [0, 1]: the definition's check words it
        from .. import _checks

        _checks.in_unit_interval(torch, t, "targets")
        raise


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
    out = _binary(logits, targets, w, pw, False, -1.0, 0.0, reduction)
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

    # avg_factor: the kernel's sum, then one scalar division (its backward scales the
    # cotangent the kernel's gradient is multiplied by)
    averaged = avg_factor is not None and reduction == "mean"
    inner = "sum" if averaged else reduction
    out = _binary(logits, targets, w, None, True, -1.0 if alpha is None else float(alpha),
                  float(gamma), inner)
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
    return _op("distill_loss")(s.contiguous(), t.contiguous(), float(temperature),
                               _REDUCTIONS[reduction])


def multi_margin_loss(logits: Any, labels: Any, *, p: Any = 1, margin: Any = 1.0,
                      weight: Any = None, reduction: str = "mean") -> Any:
    """The fused CPU path of :func:`crossent.multi_margin_loss` (same signature), or
    ``NotImplemented`` where the definition serves the call."""
    if not (type(p) is int and (p == 1 or p == 2) and _number(margin)
            and _served(logits, labels, reduction)
            and (weight is None or (isinstance(weight, torch.Tensor) and weight.is_cpu
                                    and not weight.requires_grad))):
        return NotImplemented
    try:
        # the op lays out the logits and any integer labels itself and checks the shapes
        return _op("multi_margin_loss")(logits, labels, weight, p, float(margin),
                                         _REDUCTIONS[reduction])
    except ValueError:
        # shapes, label dtypes or label values the kernel does not take (it raises before
        # writing anything): the definition serves the call or words the error
        return NotImplemented
