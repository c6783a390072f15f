"""Scoring rules of scikit-learn, with its conventions: ``log_loss`` on class labels.

scikit-learn's ``sklearn.metrics.log_loss(y_true, y_prob)`` is the cross-entropy of predicted
class probabilities, with conventions of its own: the labels may be any sortable values
(strings included) mapped to columns in sorted order, a 1-D ``y_prob`` is the probability of
the larger class, probabilities are clipped to ``[eps, 1 - eps]`` (``eps`` the machine epsilon
of their dtype) and the weighted mean divides by the sum of the sample weights.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from . import _array as A
from . import _checks
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = ["log_loss"]


def _host(values: Any) -> np.ndarray:
    """Labels as a NumPy array on the host (lists, NumPy, torch, JAX, strings)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _columns(y_true: Any, labels: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the sorted classes, each row's column among them)."""
    yt = _host(y_true)
    if yt.ndim != 1 or yt.shape[0] != n:
        raise ValueError(f"y_true must hold one label per row of y_prob ({n}), got shape "
                         f"{yt.shape}")
    classes = np.unique(_host(labels) if labels is not None else yt)
    col = np.searchsorted(classes, yt)
    found = (col < len(classes)) & (classes[np.minimum(col, len(classes) - 1)] == yt)
    if not found.all():
        raise ValueError(f"y_true contains labels not in labels={classes.tolist()}: "
                         f"{sorted(set(yt[~found].tolist()))}")
    return classes, col


@loss(wrt=("y_prob",))
def log_loss(need: tuple[str, ...], y_true: Array, y_prob: Array, *,
             sample_weight: Array | None = None, labels: Array | None = None,
             normalize: bool = True) -> tuple[Array, Pullback | None]:
    """Log loss (cross-entropy) of predicted class probabilities, as scikit-learn computes it.

    Formula: with ``p`` clipped to ``[eps, 1 - eps]`` (``eps`` the machine epsilon of its
    dtype) and ``c_i`` the column of ``y_true[i]`` among the sorted classes,
    ``l = sum_i w_i (-log p_{i, c_i}) / sum_i w_i`` (``normalize=False``: the weighted sum).
    A 1-D ``y_prob`` is the probability of the second (larger) of two classes, the columns
    ``[1 - p, p]``. Gradient w.r.t. ``y_prob``: ``-w_i / (p_{i, c_i} sum_j w_j)`` at the true
    class (``(2 [c_i = 1] - 1)`` times that for 1-D probabilities), 0 where the clip is
    active. Rows need not sum to 1 (a ``UserWarning`` says so, as scikit-learn's).

    How it differs from :func:`crossent.binary_cross_entropy` with ``weight=``: that weight
    multiplies each element's loss and its "mean" divides by the number of elements, so
    weights change the scale; here the mean divides by the sum of the weights (weights 2 on
    every row give the unweighted loss). Probabilities are clipped here, not the logs.

    Args:
        y_true: ``(N,)`` class labels of any sortable kind (ints, strings), any array type.
        y_prob: ``(N, C)`` predicted probabilities, columns the sorted classes; or ``(N,)``,
            the probability of the larger of two classes.
        sample_weight: ``(N,)`` non-negative weights, or None.
        labels: all the classes (when ``y_true`` does not show every one); None: those of
            ``y_true``.
        normalize: the weighted mean (True) or the weighted sum.

    Returns:
        A scalar in ``y_prob``'s dtype.

    Raises:
        TypeError: non-floating ``y_prob``.
        ValueError: probabilities outside [0, 1], a row count or class count that does not
            match, labels outside ``labels``, bad ``sample_weight``.

    Example:
        >>> import numpy as np, crossent
        >>> round(float(log_loss(["spam", "ham", "ham", "spam"],
        ...                      np.array([[.1, .9], [.9, .1], [.8, .2], [.35, .65]]))), 5)
        0.21616
        >>> crossent.grad(log_loss)([0, 1], np.array([0.5, 0.8])).round(4)  # w.r.t. y_prob
        array([ 1.   , -0.625])

    Aliases: scikit-learn ``sklearn.metrics.log_loss``.

    References: scikit-learn, ``sklearn.metrics.log_loss``,
    https://scikit-learn.org/stable/modules/generated/sklearn.metrics.log_loss.html; Bishop
    2006, *Pattern Recognition and Machine Learning*, p. 209.
    """
    xp, y_prob = A.common(y_prob=y_prob)
    _checks.floating(xp, y_prob, "y_prob")
    if y_prob.ndim not in (1, 2):
        raise ValueError(f"y_prob must have shape (N, C) or (N,), got {tuple(y_prob.shape)}")
    _checks.in_unit_interval(xp, y_prob, "y_prob")
    n = y_prob.shape[0]
    classes, col = _columns(y_true, labels, n)
    binary = y_prob.ndim == 1 or y_prob.shape[1] == 1
    p = A.upcast(xp, xp.reshape(y_prob, (n,)) if binary else y_prob)
    if binary:
        p = xp.stack([1.0 - p, p], axis=1)
    if len(classes) != p.shape[1]:
        raise ValueError(f"y_prob has {p.shape[1]} class columns but there are "
                         f"{len(classes)} classes {classes.tolist()[:10]}"
                         + ("" if labels is not None else
                            " in y_true; pass every class with labels="))
    w = None
    if sample_weight is not None:
        w = A.as_array(xp, sample_weight, p.dtype, A.device_of(p))
        if tuple(w.shape) != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {tuple(w.shape)}")
        if _checks.any_true(xp, w < 0):
            raise ValueError("sample_weight must be non-negative")
    name = A.dtype_name(y_prob.dtype)  # eps of the input's dtype, as scikit-learn's
    eps = 2.0 ** -7 if name == "bfloat16" else float(np.finfo(np.dtype(name)).eps)
    if A.concrete(p):
        sums = _host(xp.sum(p, axis=1))
        if not np.allclose(sums, 1.0, rtol=math.sqrt(eps), atol=0.0):
            warnings.warn("The y_prob values do not sum to one. Make sure to pass "
                          "probabilities.", UserWarning, stacklevel=3)
    idx = A.as_array(xp, col, None, A.device_of(p))
    pc = xp.minimum(xp.maximum(p, xp.full_like(p, eps)), xp.full_like(p, 1.0 - eps))
    p_true = A.take_class(xp, pc, idx)
    per = -xp.log(p_true)
    total = xp.sum(per if w is None else w * per)
    denom = (float(n) if w is None else xp.sum(w)) if normalize else 1.0
    value = total / denom
    out = A.cast_like(xp, value, y_prob)
    if not need:
        return out, None
    # d(-log pc)/dp: -1/pc where the clip passes the value through, 0 where it clips
    live = A.as_float(xp, (p_true >= eps) & (p_true <= 1.0 - eps)
                      & (A.take_class(xp, p, idx) == p_true), p.dtype)
    g_true = -live / p_true * (1.0 if w is None else w) / denom
    g = A.one_hot_mask(xp, idx, p.shape[1], p.dtype) * g_true[:, None]
    if binary:
        g = g[:, 1] - g[:, 0]
        g = xp.reshape(g, tuple(y_prob.shape))
    return out, scaled_pullback(xp, {"y_prob": A.cast_like(xp, g, y_prob)}, lambda c: c)
