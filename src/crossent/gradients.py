"""Closed-form gradients: ``value_and_grad(loss)`` and ``grad(loss)`` with no autodiff.

Every loss module defines, beside the loss, a ``*_value_and_grad`` function that computes
the loss and its gradient with respect to the first (prediction) argument from the same
intermediate values, and registers it here with :func:`closed_form`. For
``reduction="none"`` the gradient returned is that of the *sum* of the per-example losses,
which, since examples do not interact, is each example's own gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_VALUE_AND_GRAD: dict[Callable[..., Any], Callable[..., tuple[Any, Any]]] = {}


def closed_form(loss_fn: Callable[..., Any]) -> Callable[[Callable], Callable]:
    """Register the decorated function as ``loss_fn``'s closed-form value-and-gradient."""

    def register(vag: Callable[..., tuple[Any, Any]]) -> Callable[..., tuple[Any, Any]]:
        _VALUE_AND_GRAD[loss_fn] = vag
        return vag

    return register


def has_closed_form(loss_fn: Callable[..., Any]) -> bool:
    return loss_fn in _VALUE_AND_GRAD


def value_and_grad(loss_fn: Callable[..., Any]) -> Callable[..., tuple[Any, Any]]:
    """Wrap a crossent loss into ``f(pred, *args, **kw) -> (loss, d loss / d pred)``.

    The gradient is the analytic one (e.g. ``softmax(s) - y`` for softmax cross-entropy,
    ``sigmoid(s) - y`` for sigmoid cross-entropy), computed in the array's own namespace, so it
    works on NumPy arrays with no autodiff framework and on torch/JAX arrays alike.

    Args:
        loss_fn: a crossent loss function, e.g. ``crossent.softmax_cross_entropy``.

    Returns:
        A function with the loss's signature returning ``(loss, gradient)``; the gradient has
        the shape and dtype of the prediction argument.

    Raises:
        ValueError: if ``loss_fn`` has no closed-form gradient in crossent.

    Example:
        >>> import numpy as np, crossent
        >>> loss, g = crossent.value_and_grad(crossent.softmax_cross_entropy)(
        ...     np.array([[0.0, 0.0]]), np.array([0]))
        >>> float(loss), g.tolist()
        (0.6931471805599453, [[-0.5, 0.5]])
    """
    try:
        return _VALUE_AND_GRAD[loss_fn]
    except (KeyError, TypeError):
        name = getattr(loss_fn, "__name__", repr(loss_fn))
        known = sorted(f.__name__ for f in _VALUE_AND_GRAD)
        raise ValueError(
            f"loss_fn {name!r} has no closed-form gradient in crossent; ones that do: "
            + ", ".join(known)
        ) from None


def grad(loss_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Like :func:`value_and_grad` but returns only the gradient.

    Example:
        >>> import numpy as np, crossent
        >>> crossent.grad(crossent.sigmoid_cross_entropy)(
        ...     np.array([0.0]), np.array([1.0]), reduction="sum").tolist()
        [-0.5]
    """
    vag = value_and_grad(loss_fn)

    def gradient(*args: Any, **kwargs: Any) -> Any:
        return vag(*args, **kwargs)[1]

    gradient.__name__ = f"grad_{getattr(loss_fn, '__name__', 'loss')}"
    gradient.__doc__ = f"Closed-form gradient of {getattr(loss_fn, '__name__', 'the loss')}."
    return gradient
