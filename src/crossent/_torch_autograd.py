"""The torch side of :mod:`crossent.gradients`: a loss on tensors that require grad is one
``torch.autograd.Function`` whose backward is the definition's closed-form pullback.

The forward computes the value and the gradient from the same intermediates with autograd
off, so no graph of intermediates is recorded; backward only applies the pullback to
``grad_output``. With ``create_graph=True`` (double backward, ``gradgradcheck``) backward
rebuilds the pullback from the saved inputs with differentiable ops instead, so Hessian-vector
products are exact. Under ``torch.func`` transforms, and for tensors the definition has no
closed form for, the definition's value code runs under autograd directly (it is written
autodiff-safe), as a composite of torch ops.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd import forward_ad as _forward_ad

Array = Any


_HALF = (torch.float16, torch.bfloat16)


def autocast_enabled(device_type: str) -> bool:
    """Whether ``torch.autocast`` is on for ``device_type`` (any torch version)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one flag per device family
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return device_type == "cuda" and torch.is_autocast_enabled()


def under_autocast(fn: Any, first: torch.Tensor, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    """Autocast's rule for losses, applied to a crossent loss on tensors: inside an enabled
    ``torch.autocast`` region PyTorch runs its losses in float32 (they are on its float32
    list), so ``fn`` gets its float16/bfloat16 tensors cast to float32 (casts autograd sees:
    their gradients come back in the inputs' dtype) and runs with autocast off, which keeps
    its internal matmuls in float32 too. NotImplemented when autocast is off."""
    device_type = first.device.type
    if not autocast_enabled(device_type):
        return NotImplemented

    def up(v: Any) -> Any:
        return v.float() if isinstance(v, torch.Tensor) and v.dtype in _HALF else v

    with torch.autocast(device_type=device_type, enabled=False):
        return fn(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})


def _transformed(tensors: list[torch.Tensor]) -> bool:
    """Whether a torch.func transform (grad, vmap, jacrev...) wraps these tensors."""
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return is_wrapped is not None and any(is_wrapped(t) for t in tensors)


def apply(spec: Any, arrays: list[Any], options: dict[str, Any]) -> Any:
    tensors = [a for a in arrays if isinstance(a, torch.Tensor)]
    need = tuple(n for n, a in zip(spec.arrays, arrays, strict=True)
                 if isinstance(a, torch.Tensor) and a.requires_grad)
    # an option tensor that requires grad (a learnable weight or pos_weight) has no closed
    # form here: autograd through the value code serves every input then
    learnable_option = any(isinstance(v, torch.Tensor) and v.requires_grad
                           for v in options.values())
    # forward-mode AD: the Function below has no jvp (it would drop a dual input's tangent),
    # and the definition's value code differentiates in either mode
    if not need or not torch.is_grad_enabled() or _transformed(tensors) or learnable_option \
            or _forward_ad._current_level >= 0 or any(n not in spec.wrt for n in need):
        return spec.defn((), *arrays, **options)[0]
    return _ClosedForm.apply(spec, options, need, *arrays)


class _ClosedForm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, spec: Any, options: dict[str, Any], need: tuple[str, ...],
                *arrays: Any) -> torch.Tensor:
        value, pullback = spec.defn(need, *arrays, **options)
        ctx.spec, ctx.options, ctx.need = spec, options, need
        ctx.pullback = pullback
        ctx.others = [None if isinstance(a, torch.Tensor) else a for a in arrays]
        ctx.save_for_backward(*(a if isinstance(a, torch.Tensor) else None for a in arrays))
        return value

    @staticmethod
    def backward(ctx: Any, cot: torch.Tensor) -> tuple[Any, ...]:
        if torch.is_grad_enabled():
            # create_graph: the pullback again, built from the inputs in differentiable ops
            arrays = [t if t is not None else o
                      for t, o in zip(ctx.saved_tensors, ctx.others, strict=True)]
            _, pullback = ctx.spec.defn(ctx.need, *arrays, **ctx.options)
        else:
            pullback = ctx.pullback
        grads = pullback(cot)
        return (None, None, None, *(grads.get(n) if n in ctx.need else None
                                    for n in ctx.spec.arrays))
