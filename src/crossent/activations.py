"""Output-layer activations and label helpers, in their numerically stable forms.

These are the functions applied to the score vector ``s`` before a loss:
sigmoid (the *logistic function*, element-wise, for binary and multi-label tasks) and
softmax (a function, not a loss, for mutually exclusive classes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _array as A
from . import _checks

Array = Any

__all__ = [
    "sigmoid",
    "log_sigmoid",
    "softmax",
    "log_softmax",
    "logsumexp",
    "one_hot",
    "smooth_labels",
]


def sigmoid(x: Array) -> Array:
    """Logistic function, element-wise, without overflow for any finite input.

    Formula: ``sigma(x) = 1 / (1 + exp(-x))``, evaluated as ``1/(1+e)`` for ``x >= 0`` and
    ``e/(1+e)`` for ``x < 0`` with ``e = exp(-|x|)``, so ``exp`` never overflows.

    Args:
        x: logits, any shape, floating dtype.

    Returns:
        Probabilities in [0, 1], shape and dtype of ``x``.

    Raises:
        TypeError: if ``x`` is not floating point.

    Example:
        >>> import numpy as np
        >>> sigmoid(np.array([-1000.0, 0.0, 1000.0]))
        array([0. , 0.5, 1. ])

    Aliases: PyTorch ``torch.sigmoid``, TF ``tf.math.sigmoid``, Optax/JAX ``jax.nn.sigmoid``.
    """
    xp = A.namespace(x)
    _checks.floating(xp, x, "x")
    z = A.upcast(xp, x)
    return A.cast_like(xp, A.sigmoid(xp, z), x)


def log_sigmoid(x: Array) -> Array:
    """log(sigmoid(x)), finite for every finite input.

    Formula: ``log sigma(x) = min(x, 0) - log1p(exp(-|x|))``.

    Args:
        x: logits, any shape.

    Returns:
        Log-probabilities (<= 0), shape and dtype of ``x``.

    Example:
        >>> import numpy as np
        >>> log_sigmoid(np.array([-1000.0, 0.0])).tolist()
        [-1000.0, -0.6931471805599453]

    Aliases: PyTorch ``F.logsigmoid``, JAX ``jax.nn.log_sigmoid``.
    """
    xp = A.namespace(x)
    _checks.floating(xp, x, "x")
    z = A.upcast(xp, x)
    return A.cast_like(xp, -A.softplus(xp, -z), x)


def _lse_parts(xp: Any, z: Array, axis: int) -> tuple[Array, Array, Array]:
    """``(lse, e, s)`` along ``axis`` (kept): ``e = exp(z - m)``, ``s = sum(e)``, ``lse = m +
    log(s)``, so ``softmax(z) = e / s`` costs no second exp."""
    m = xp.max(z, axis=axis, keepdims=True)
    # an all -inf row would give (-inf) - (-inf) = NaN: shift by 0 there instead
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    if isinstance(z, np.ndarray):
        # logits 3e38 apart: z - m overflows to -inf, whose exp is the exact 0, so NumPy's
        # overflow warning says nothing; the exp in place (one N x C buffer less)
        with np.errstate(over="ignore"):
            e = z - m
        e = np.exp(e, out=e)
    else:
        e = xp.exp(z - m)
    s = xp.sum(e, axis=axis, keepdims=True)
    return xp.log(s) + m, e, s


def _lse(xp: Any, z: Array, axis: int, keepdims: bool) -> Array:
    out = _lse_parts(xp, z, axis)[0]
    return out if keepdims else xp.squeeze(out, axis=axis)


def logsumexp(x: Array, *, axis: int = -1, keepdims: bool = False) -> Array:
    """log(sum(exp(x))) along ``axis`` with the max shift, so it never overflows.

    Formula: ``lse(x) = m + log(sum_j exp(x_j - m))`` with ``m = max_j x_j``.

    Args:
        x: any shape.
        axis: the axis to reduce.
        keepdims: keep the reduced axis with size 1.

    Returns:
        Array of ``x``'s shape without ``axis`` (or with size 1 there).

    Example:
        >>> import numpy as np
        >>> float(logsumexp(np.array([1000.0, 1000.0])))
        1000.6931471805599

    Aliases: ``torch.logsumexp``, ``scipy.special.logsumexp``, ``jax.nn.logsumexp``.
    """
    xp = A.namespace(x)
    _checks.floating(xp, x, "x")
    ax = _checks.axis(axis, x.ndim)
    return A.cast_like(xp, _lse(xp, A.upcast(xp, x), ax, keepdims), x)


def log_softmax(x: Array, *, axis: int = -1) -> Array:
    """Log of the softmax, ``x - logsumexp(x)``, exact for large and tiny probabilities.

    Formula: ``log_softmax(x)_i = x_i - log(sum_j exp(x_j))``.

    Args:
        x: logits, classes along ``axis``.
        axis: the class axis.

    Returns:
        Log-probabilities, shape and dtype of ``x``.

    Example:
        >>> import numpy as np
        >>> log_softmax(np.array([0.0, 0.0]))
        array([-0.69314718, -0.69314718])

    Aliases: PyTorch ``F.log_softmax``, TF ``tf.nn.log_softmax``, ``jax.nn.log_softmax``.
    """
    xp = A.namespace(x)
    _checks.floating(xp, x, "x")
    ax = _checks.axis(axis, x.ndim)
    z = A.upcast(xp, x)
    return A.cast_like(xp, z - _lse(xp, z, ax, True), x)


def softmax(x: Array, *, axis: int = -1) -> Array:
    """Softmax along ``axis`` with the max subtracted first (the standard stability trick).

    Formula: ``softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m)``, ``m = max_j x_j``.

    Args:
        x: logits, classes along ``axis``.
        axis: the class axis.

    Returns:
        Probabilities summing to 1 along ``axis``, shape and dtype of ``x``.

    Example:
        >>> import numpy as np
        >>> softmax(np.array([[0.7, 1.2, 0.3]])).round(3)
        array([[0.301, 0.497, 0.202]])

    Aliases: PyTorch ``F.softmax``, TF ``tf.nn.softmax``, Caffe ``Softmax`` layer.
    """
    xp = A.namespace(x)
    _checks.floating(xp, x, "x")
    ax = _checks.axis(axis, x.ndim)
    z = A.upcast(xp, x)
    m = xp.max(z, axis=ax, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    e = xp.exp(z - m)
    return A.cast_like(xp, e / xp.sum(e, axis=ax, keepdims=True), x)


def one_hot(labels: Array, num_classes: int, *, dtype: Any = None) -> Array:
    """One-hot encode integer class labels along a new last axis.

    Formula: ``one_hot(y)[..., c] = 1 if y == c else 0``.

    Args:
        labels: integer array of any shape, values in ``[0, num_classes)``.
        num_classes: number of classes ``C`` (> 0).
        dtype: output dtype; default the namespace's default floating dtype.

    Returns:
        Array of shape ``labels.shape + (C,)``.

    Raises:
        TypeError: if ``labels`` is not an integer array.
        ValueError: if ``num_classes`` is not positive or a label is out of range.

    Example:
        >>> import numpy as np
        >>> one_hot(np.array([1, 2, 0]), 3)
        array([[0., 1., 0.],
               [0., 0., 1.],
               [1., 0., 0.]])

    Aliases: PyTorch ``F.one_hot`` (returns int64), TF ``tf.one_hot``, ``jax.nn.one_hot``.
    """
    xp = A.namespace(labels)
    if not A.is_integer(xp, labels):
        raise TypeError(f"labels must be an integer array, got dtype {A.dtype_name(labels.dtype)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    _checks.labels_in_range(xp, labels, num_classes, None, "labels")
    if dtype is None:
        dtype = xp.asarray(0.0).dtype
    return A.one_hot_mask(xp, labels, num_classes, dtype)


def smooth_labels(targets: Array, epsilon: float, *, axis: int = -1) -> Array:
    """Label smoothing of one-hot (or soft) targets: ``(1 - eps) * t + eps / K``.

    This is the ``label_smoothing`` of YOLOv3-style image classifiers and Optax
    ``smooth_labels``; ``K`` is the number of classes, the size of ``axis``.

    Args:
        targets: probability targets, classes along ``axis``.
        epsilon: smoothing rate in [0, 1].
        axis: the class axis.

    Returns:
        Smoothed targets, shape and dtype of ``targets`` (rows still sum to 1).

    Raises:
        ValueError: if ``epsilon`` is outside [0, 1].

    Example:
        >>> import numpy as np
        >>> smooth_labels(np.array([[0.0, 1.0, 0.0]]), 0.1)
        array([[0.03333333, 0.93333333, 0.03333333]])

    References: Szegedy et al. 2016, "Rethinking the Inception Architecture"; Mueller et al.
    2019, "When does label smoothing help?" (arXiv:1906.02629).
    """
    xp = A.namespace(targets)
    _checks.floating(xp, targets, "targets")
    eps = _checks.unit_interval(epsilon, "epsilon")
    ax = _checks.axis(axis, targets.ndim)
    k = targets.shape[ax]
    return (1.0 - eps) * targets + eps / k
