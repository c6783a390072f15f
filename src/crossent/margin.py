"""Margin losses: the hinge family and the margin softmax losses of face recognition.

The successors of softmax cross-entropy widen the gap between classes: L-Softmax (a
multiplicative angular margin on the target class, Liu et al., arXiv:1612.02295), A-Softmax /
SphereFace (the same with normalised class weights, arXiv:1704.08063), AM-Softmax / CosFace
(an additive cosine margin, arXiv:1801.05599 / arXiv:1801.09414) and ArcFace (an additive
angular margin, arXiv:1801.07698). Each of them is softmax cross-entropy on modified logits
``z_j = s R_j f_j(cos theta_j)``, where ``theta_j`` is the angle between the embedding and
the class weight ``W_j``, ``f_j`` is the identity except at the target class, and ``R_j`` is
the product of the norms the variant keeps (``||x|| ||W_j||`` for L-Softmax, ``||x||`` for
SphereFace, 1 for CosFace and ArcFace). That one form gives one implementation and one
closed-form gradient, with respect to the embeddings and to the class weights, for all four.

Beside them are the hinge ("margin") losses of SVMs (Cortes & Vapnik 1995): the binary
hinge, PyTorch's ``multi_margin_loss`` (Weston-Watkins), the Crammer-Singer multiclass hinge
and Keras's ``categorical_hinge``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

from . import _array as A
from . import _checks
from ._reduce import grad_scale, reduce
from .classification import softmax_cross_entropy
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = [
    "hinge_loss",
    "multi_margin_loss",
    "multiclass_hinge_loss",
    "categorical_hinge_loss",
    "large_margin_softmax_loss",
    "sphereface_loss",
    "cosface_loss",
    "arcface_loss",
]



def _sign_targets(xp: Any, targets: Array, like: Array, name: str = "targets") -> Array:
    """Binary targets in {-1, 1} or {0, 1} as floats in {-1, 1} (0 means the negative class)."""
    _checks.same_shape(like, targets, "scores", name)
    t = A.as_float(xp, A.upcast(xp, targets), A.compute_dtype(xp, like))
    if _checks.any_true(xp, (t != 1) & (t != -1) & (t != 0)):
        lo, hi = float(xp.min(t)), float(xp.max(t))
        raise ValueError(
            f"{name} must hold binary labels in {{-1, 1}} or {{0, 1}}, got values in [{lo}, {hi}]"
        )
    return xp.where(t == 0, -xp.ones_like(t), t)


def _argmax_share(xp: Any, v: Array, vmax: Array) -> Array:
    """Subgradient of ``max(v)`` along the last axis: ties share it equally (as ``jnp.max``)."""
    hit = A.as_float(xp, v == vmax[..., None], v.dtype)
    return hit / xp.sum(hit, axis=-1, keepdims=True)


def _per_row(xp: Any) -> Any:
    """``expand`` of a loss that reduced the last (class / feature) axis."""
    return lambda c: xp.expand_dims(c, axis=-1)


# --- binary hinge ---------------------------------------------------------------------------


@loss(wrt=("scores",))
def hinge_loss(need: tuple[str, ...], scores: Array, targets: Array, *, squared: bool = False,
               reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Binary hinge loss of a linear SVM, or its squared form.

    Formula: ``l = max(0, 1 - t s)`` with ``t`` in {-1, 1} (a 0 label is read as -1);
    ``squared=True`` gives ``max(0, 1 - t s)^2``. Gradient w.r.t. the scores:
    ``-t [1 - t s > 0]`` (times ``2 max(0, 1 - t s)`` when squared), the backward on every
    backend; the labels are not differentiated.

    Args:
        scores: real-valued scores (not probabilities), any shape.
        targets: labels in {-1, 1} or {0, 1}, same shape as ``scores``, any dtype.
        squared: square the hinge (the L2-SVM loss).
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or element-wise losses, in the scores' dtype.

    Raises:
        TypeError: non-floating scores.
        ValueError: shape mismatch, a label outside {-1, 0, 1}, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> hinge_loss(np.array([2.0, 0.5, -0.5]), np.array([1, 1, 0]), reduction="none")
        array([0. , 0.5, 0.5])
        >>> float(hinge_loss(np.array([0.5]), np.array([1]), squared=True))
        0.25
        >>> crossent.value_and_grad(hinge_loss)(np.array([0.5, 2.0]), np.array([1, 1]),
        ...                                     reduction="sum")[1]
        array([-1., -0.])

    Aliases: Keras ``hinge`` / ``squared_hinge`` (they average over the last axis);
    Optax ``hinge_loss``; TF ``tf.compat.v1.losses.hinge_loss`` (on {0, 1} labels);
    scikit-learn ``hinge_loss``; Caffe ``HingeLoss`` (multiclass, one-vs-all).

    References: Cortes & Vapnik 1995, "Support-vector networks".
    """
    xp, scores, targets = A.common(scores=scores, targets=targets)
    _checks.floating(xp, scores, "scores")
    _checks.reduction(reduction)
    s = A.upcast(xp, scores)
    t = _sign_targets(xp, targets, scores)
    h = 1.0 - t * s
    hp = A.relu(xp, h)
    per = hp * hp if squared else hp
    out = A.cast_like(xp, reduce(xp, per, reduction), scores)
    if not need:
        return out, None
    # d/ds max(0, 1 - t s) = -t where the margin is violated, 0 at and beyond it (as relu')
    dh = 2.0 * hp if squared else A.as_float(xp, h > 0, s.dtype)
    g = -t * dh * grad_scale(xp, per.shape, reduction, None)
    return out, scaled_pullback(xp, {"scores": A.cast_like(xp, g, scores)}, lambda c: c)


# --- multi-class margin (Weston-Watkins, PyTorch's multi_margin_loss) ----------------------


@loss(wrt=("logits",))
def multi_margin_loss(need: tuple[str, ...], logits: Array, labels: Array, *, p: int = 1,
                      margin: float = 1.0, weight: Array | None = None,
                      reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Multi-class margin (hinge) loss, as PyTorch's ``multi_margin_loss``.

    Formula: ``l = w_y / C * sum_{j != y} max(0, margin - x_y + x_j)^p``, ``p`` in {1, 2}
    (the Weston-Watkins multiclass SVM loss, divided by the number of classes). Gradient:
    ``g_j = w_y / C * p max(0, h_j)^(p-1) [h_j > 0]`` for ``j != y``, ``g_y = -sum_{j != y} g_j``.

    Args:
        logits: scores, shape ``(..., C)``.
        labels: integer class indices, shape ``(...)``.
        p: 1 (hinge) or 2 (squared hinge).
        margin: the margin (default 1).
        weight: optional per-class weights ``(C,)``, applied by the target class.
        reduction: ``"mean"`` (plain mean over examples, as PyTorch even with ``weight``),
            ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-example losses, in the logits' dtype.

    Raises:
        TypeError: non-floating logits or non-integer labels.
        ValueError: ``p`` not in {1, 2}, label out of range, bad shapes, weight or reduction.

    Example:
        >>> import numpy as np, crossent
        >>> x = np.array([[0.1, 0.2, 0.4, 0.8]])
        >>> round(float(multi_margin_loss(x, np.array([3]))), 4)  # PyTorch's documented 0.3250
        0.325
        >>> crossent.grad(multi_margin_loss)(np.array([[0.0, 0.5]]), np.array([0]))
        array([[-0.5,  0.5]])

    Aliases: PyTorch ``MultiMarginLoss`` / ``F.multi_margin_loss``; Weston-Watkins
    multiclass SVM loss; Caffe ``HingeLoss`` is its one-vs-all relative.

    References: Weston & Watkins 1999, "Support vector machines for multi-class pattern
    recognition"; PyTorch docs of ``torch.nn.MultiMarginLoss``.
    """
    xp, logits, labels = A.common(logits=logits, labels=labels)
    _checks.floating(xp, logits, "logits")
    _checks.reduction(reduction)
    _checks.class_axis(logits, -1, "logits")
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"p must be 1 or 2 (as in PyTorch), got {p!r}")
    margin = _checks.real(margin, "margin")
    z = A.upcast(xp, logits)
    dt = z.dtype
    num_classes = z.shape[-1]
    _checks.class_labels(xp, labels, z, z.ndim - 1, None, "labels", "scores")
    w = _checks.class_weight(xp, weight, num_classes, dt, A.device_of(z))
    onehot = A.one_hot_mask(xp, labels, num_classes, dt)
    zy = A.take_class(xp, z, labels)
    h = margin - zy[..., None] + z
    hp = A.relu(xp, h) * (1.0 - onehot)  # the target class is not summed
    wy = A.take_class(xp, xp.broadcast_to(w, z.shape), labels) if w is not None else None
    term = hp if p == 1 else hp * hp
    per = xp.sum(term, axis=-1) / num_classes
    if wy is not None:
        per = per * wy
    out = A.cast_like(xp, reduce(xp, per, reduction), logits)
    if not need:
        return out, None
    dterm = A.as_float(xp, hp > 0, dt) if p == 1 else 2.0 * hp
    coef = grad_scale(xp, per.shape, reduction, None) / num_classes
    if wy is not None:
        coef = coef * wy[..., None]
    gj = dterm * coef
    g = gj - onehot * xp.sum(gj, axis=-1, keepdims=True)
    return out, scaled_pullback(xp, {"logits": A.cast_like(xp, g, logits)}, _per_row(xp))


# --- Crammer-Singer multiclass hinge --------------------------------------------------------


@loss(wrt=("scores",))
def multiclass_hinge_loss(need: tuple[str, ...], scores: Array, labels: Array, *,
                          reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Crammer-Singer multiclass hinge loss.

    Formula: ``l = max_j (s_j + 1 - [j = y]) - s_y``, i.e. ``max(0, 1 + max_{j != y} s_j -
    s_y)``. Gradient: ``onehot(argmax_j (s_j + 1 - [j = y])) - onehot(y)``, ties sharing
    the first term equally (as ``jnp.max``'s derivative).

    Args:
        scores: scores, shape ``(..., C)``.
        labels: integer class indices, shape ``(...)``.
        reduction: ``"mean"`` over examples, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-example losses, in the scores' dtype.

    Raises:
        TypeError: non-floating scores or non-integer labels.
        ValueError: label out of range, bad shapes, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> multiclass_hinge_loss(np.array([[2.0, 0.5, 1.5], [0.0, 0.0, 3.0]]),
        ...                       np.array([0, 1]), reduction="none")
        array([0.5, 4. ])
        >>> crossent.grad(multiclass_hinge_loss)(np.array([[1.0, 1.5]]), np.array([0]))
        array([[-1.,  1.]])

    Aliases: Optax ``multiclass_hinge_loss``; Crammer-Singer multiclass SVM loss;
    scikit-learn ``hinge_loss`` (multiclass) and ``LinearSVC(multi_class="crammer_singer")``.

    References: Crammer & Singer 2001, "On the algorithmic implementation of multiclass
    kernel-based vector machines", JMLR 2.
    """
    xp, scores, labels = A.common(scores=scores, labels=labels)
    _checks.floating(xp, scores, "scores")
    _checks.reduction(reduction)
    _checks.class_axis(scores, -1, "scores")
    z = A.upcast(xp, scores)
    _checks.class_labels(xp, labels, z, z.ndim - 1, None, "labels", "scores")
    onehot = A.one_hot_mask(xp, labels, z.shape[-1], z.dtype)
    v = z + 1.0 - onehot
    vmax = xp.max(v, axis=-1)
    per = vmax - A.take_class(xp, z, labels)
    out = A.cast_like(xp, reduce(xp, per, reduction), scores)
    if not need:
        return out, None
    g = _argmax_share(xp, v, vmax) - onehot
    g = g * grad_scale(xp, per.shape, reduction, None)
    return out, scaled_pullback(xp, {"scores": A.cast_like(xp, g, scores)}, _per_row(xp))


# --- Keras categorical hinge ----------------------------------------------------------------


@loss(wrt=("scores", "targets"))
def categorical_hinge_loss(need: tuple[str, ...], scores: Array, targets: Array, *,
                           reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Keras's categorical hinge loss.

    Formula: ``pos = sum_j t_j s_j``, ``neg = max_j (1 - t_j) s_j``,
    ``l = max(0, neg - pos + 1)``. With one-hot targets the target's own entry enters the
    max as 0, so ``neg >= 0`` (Keras's definition, kept for conformance; the Crammer-Singer
    form is :func:`multiclass_hinge_loss`). Gradient w.r.t. the scores:
    ``[l > 0] ((1 - t) a - t)`` with ``a`` the arg-max indicator of ``(1 - t) s`` (ties
    share it); w.r.t. floating targets: ``-[l > 0] (1 + a) s``.

    Args:
        scores: scores, shape ``(..., C)``.
        targets: one-hot (or any floating) targets of the shape of ``scores``, or integer
            class indices of shape ``(...)``.
        reduction: ``"mean"`` over examples, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-example losses, in the scores' dtype.

    Raises:
        TypeError: non-floating scores.
        ValueError: label out of range, shape mismatch, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> categorical_hinge_loss(np.array([[0.6, 0.4], [0.4, 0.6]]),
        ...                        np.array([[0.0, 1.0], [1.0, 0.0]]), reduction="none")
        array([1.2, 1.2])
        >>> crossent.grad(categorical_hinge_loss)(np.array([[0.6, 0.4]]), np.array([1]))
        array([[ 1., -1.]])

    Aliases: Keras ``categorical_hinge`` / ``CategoricalHinge``; TF
    ``tf.keras.losses.categorical_hinge``.

    References: Keras documentation of ``CategoricalHinge``; Crammer & Singer 2001.
    """
    xp, scores, targets = A.common(scores=scores, targets=targets)
    _checks.floating(xp, scores, "scores")
    _checks.reduction(reduction)
    _checks.class_axis(scores, -1, "scores")
    z = A.upcast(xp, scores)
    if A.is_integer(xp, targets):
        _checks.class_labels(xp, targets, z, z.ndim - 1, None, "targets", "scores")
        t = A.one_hot_mask(xp, targets, z.shape[-1], z.dtype)
    else:
        _checks.same_shape(scores, targets, "scores", "targets")
        t = A.as_float(xp, A.upcast(xp, targets), z.dtype)
    pos = xp.sum(t * z, axis=-1)
    v = (1.0 - t) * z  # Keras's form: the target's own entry counts as 0 in the max
    neg = xp.max(v, axis=-1)
    h = neg - pos + 1.0
    per = A.relu(xp, h)
    out = A.cast_like(xp, reduce(xp, per, reduction), scores)
    if not need:
        return out, None
    active = A.as_float(xp, h > 0, z.dtype)[..., None] * grad_scale(xp, per.shape, reduction,
                                                                     None)
    share = _argmax_share(xp, v, neg)
    grads = {}
    if "scores" in need:
        grads["scores"] = A.cast_like(xp, active * ((1.0 - t) * share - t), scores)
    if "targets" in need:
        # d neg / d t_j = -a_j s_j and d pos / d t_j = s_j
        grads["targets"] = A.cast_like(xp, -active * (1.0 + share) * z, targets)
    return out, scaled_pullback(xp, grads, _per_row(xp))


# --- margin softmax: L-Softmax, SphereFace, CosFace, ArcFace ---------------------------------

_NORM_EPS = 1e-12  # torch.nn.functional.normalize's floor on a norm (pml normalises with it)
_SIN_EPS = 1e-30   # sin(theta) below this counts as 0 (theta = 0 or pi): no infinite slope


def _chebyshev(xp: Any, c: Array, m: int) -> tuple[Array, Array]:
    """``T_m(c) = cos(m theta)`` and ``U_{m-1}(c) = sin(m theta) / sin(theta)``, c = cos theta.

    The three-term recurrences avoid both ``acos`` (infinite slope at |c| = 1) and the
    division by ``sin(theta)``; ``T_m' = m U_{m-1}``.
    """
    t_prev, t = xp.ones_like(c), c
    u_prev, u = xp.zeros_like(c), xp.ones_like(c)  # U_{-1} = 0, U_0 = 1
    for _ in range(m - 1):
        t_prev, t = t, 2.0 * c * t - t_prev
        u_prev, u = u, 2.0 * c * u - u_prev
    return t, u


def _safe_sqrt(xp: Any, sq: Array) -> Array:
    """sqrt with a zero (not infinite) slope at 0, so autodiff of a zero vector's norm is
    finite (``sqrt'(0) * 0`` would be NaN)."""
    pos = sq > 0
    return xp.where(pos, xp.sqrt(xp.where(pos, sq, xp.ones_like(sq))), xp.zeros_like(sq))


def _target_cos(xp: Any, c: Array, kind: str, margin: Any, easy_margin: bool
                ) -> tuple[Array, Array]:
    """``f(c)`` and ``f'(c)`` for the target class (c = cos theta_y)."""
    if kind == "cosface":
        return c - margin, xp.ones_like(c)
    if kind == "arcface":
        cos_m, sin_m = A.scalar_fn(xp, "cos", margin), A.scalar_fn(xp, "sin", margin)
        s2 = 1.0 - c * c
        pos = s2 > _SIN_EPS
        sin_t = xp.where(pos, _safe_sqrt(xp, s2), xp.zeros_like(s2))
        phi = c * cos_m - sin_t * sin_m  # cos(theta + m)
        dphi = cos_m + sin_m * c / xp.where(pos, sin_t, xp.ones_like(sin_t))
        dphi = xp.where(pos, dphi, xp.full_like(c, cos_m))
        if easy_margin:
            keep = c > 0
            return xp.where(keep, phi, c), xp.where(keep, dphi, xp.ones_like(c))
        # theta + m > pi would make cos(theta + m) rise again: fall back to the linear
        # penalty cos(theta) - m sin(m) there (insightface: th = cos(pi - m), mm = m sin m)
        keep = c > -cos_m  # cos(pi - m)
        return (xp.where(keep, phi, c - margin * sin_m),
                xp.where(keep, dphi, xp.ones_like(c)))
    # L-Softmax / SphereFace: psi(theta) = (-1)^k cos(m theta) - 2k, theta in [k pi/m,
    # (k+1) pi/m]; k counts the j >= 1 with theta >= j pi / m (comparisons, no acos)
    m = int(margin)
    k = xp.zeros_like(c)
    for j in range(1, m + 1):
        k = k + A.as_float(xp, c <= math.cos(j * math.pi / m), c.dtype)
    sign = 1.0 - 2.0 * (k - 2.0 * xp.floor(k / 2.0))
    t, u = _chebyshev(xp, c, m)
    return sign * t - 2.0 * k, sign * (m * u)


_VARIANTS = {
    # kind: (keeps ||x||, keeps ||W_j||)
    "lsoftmax": (True, True),
    "sphereface": (True, False),
    "cosface": (False, False),
    "arcface": (False, False),
}


def _margin_inputs(embeddings: Array, weight: Array, labels: Array) -> Any:
    xp, embeddings, weight, labels = A.common(embeddings=embeddings, weight=weight, labels=labels)
    _checks.floating(xp, embeddings, "embeddings")
    _checks.floating(xp, weight, "weight")
    if embeddings.ndim != 2:
        raise ValueError(
            f"embeddings must have shape (N, embedding_dim), got {tuple(embeddings.shape)}"
        )
    if weight.ndim != 2 or weight.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"weight must have shape (num_classes, embedding_dim={embeddings.shape[1]}), "
            f"got {tuple(weight.shape)}"
        )
    if not A.is_integer(xp, labels):
        raise TypeError(
            f"labels must be an integer array of class indices, got dtype "
            f"{A.dtype_name(labels.dtype)}"
        )
    if tuple(labels.shape) != (embeddings.shape[0],):
        raise ValueError(
            f"labels must have shape (N,) = ({embeddings.shape[0]},), got {tuple(labels.shape)}"
        )
    _checks.labels_in_range(xp, labels, weight.shape[0], None, "labels")
    return xp


class _Parts(NamedTuple):
    """What :func:`_margin_logits` computed on the way to ``z``, for the gradients."""

    x: Array            # (N, D) embeddings in the compute dtype
    w: Array            # (C, D) class weights in the compute dtype
    u: Array            # (N, D) x / max(||x||, eps)
    v: Array            # (C, D) W_j / max(||W_j||, eps)
    cos: Array          # (N, C) u v^T
    f: Array            # (N, C) f_j(cos): the margin function at the target, cos elsewhere
    fprime: Array | None  # (N, C) f_j'(cos), None without labels
    x_norm: Array       # (N, 1) ||x_i||
    w_norm: Array       # (C, 1) ||W_j||
    keep_x: bool        # ||x|| is a factor of z (L-Softmax, SphereFace)
    keep_w: bool        # ||W_j|| is a factor of z (L-Softmax)


def _margin_logits(embeddings: Array, weight: Array, labels: Array | None, kind: str,
                   margin: Any, scale: Any, easy_margin: bool = False
                   ) -> tuple[Array, _Parts]:
    """The modified logits ``z = s R f(cos)`` and the pieces the gradients reuse.

    ``labels=None`` gives the unmodified logits ``s R cos`` (inference).
    """
    xp, embeddings, weight, labels = A.common(embeddings=embeddings, weight=weight,
                                              labels=labels)
    keep_x, keep_w = _VARIANTS[kind]
    x = A.upcast(xp, embeddings)
    dt = x.dtype
    w = A.as_float(xp, A.upcast(xp, weight), dt)
    # scaled norms: the directions of x and of 1e20 x are the same, with no overflow
    x_norm, u = A.norm_and_unit(xp, x, _NORM_EPS)  # (N, 1), (N, D)
    w_norm, v = A.norm_and_unit(xp, w, _NORM_EPS)  # (C, 1), (C, D)
    cos = xp.matmul(u, xp.permute_dims(v, (1, 0)))  # (N, C)
    if labels is None:
        f, fprime = cos, None
    else:
        onehot = A.one_hot_mask(xp, labels, cos.shape[-1], dt)
        c_y = A.take_class(xp, cos, labels)
        f_y, fp_y = _target_cos(xp, c_y, kind, margin, easy_margin)
        f = cos + onehot * (f_y - c_y)[:, None]
        fprime = 1.0 + onehot * (fp_y - 1.0)[:, None]
    z = scale * f
    if keep_x:
        z = z * x_norm
    if keep_w:  # the norms that multiply f(cos), ||x|| aside
        z = z * xp.permute_dims(w_norm, (1, 0))
    return z, _Parts(x, w, u, v, cos, f, fprime, x_norm, w_norm, keep_x, keep_w)


def _direction_grad(xp: Any, k: Array, f: Array, fprime: Array, cos: Array, a: Array,
                    unit: Array, other: Array, norm: Array, keeps_norm: bool) -> Array:
    """Gradient w.r.t. the rows ``a_i`` of ``sum_ij K_ij R_i f_ij(c_ij)``, with
    ``c_ij = unit_i . other_j``, ``unit_i = a_i / e_i``, ``e_i = max(||a_i||, eps)`` and
    ``R_i = ||a_i||`` when ``keeps_norm`` (else 1); ``K`` is constant in ``a``.

    ``dc_ij/da_i = (other_j - [||a_i|| > eps] c_ij a_i/||a_i||) / e_i`` and
    ``d||a_i||/da_i = a_i/||a_i||``, so with ``kappa_i = R_i / e_i`` (1, or ``1/||a_i||``,
    above the floor): ``kappa_i sum_j K_ij f'_ij other_j + a_i/||a_i|| sum_j K_ij
    ([keeps_norm] f_ij - [||a_i|| > eps] kappa_i f'_ij c_ij)``. Below the floor the unit
    vector is ``a/eps``, whose derivative has no radial part: the exact derivative of the
    value code there too.
    """
    big = norm > _NORM_EPS
    e = xp.maximum(norm, xp.full_like(norm, _NORM_EPS))
    kappa = norm / e if keeps_norm else 1.0 / e
    kf = k * fprime
    tangential = xp.matmul(kf, other) * kappa
    radial = -(A.as_float(xp, big, k.dtype) * kappa) * xp.sum(kf * cos, axis=-1,
                                                              keepdims=True)
    if not keeps_norm:
        return tangential + unit * radial  # radial is 0 wherever unit is not a / ||a||
    radial = radial + xp.sum(k * f, axis=-1, keepdims=True)
    # the true direction a/||a|| below the floor too (unit is a/eps there); 0 at a = 0
    pos = norm > 0
    direction = xp.where(big, unit, xp.where(pos, a, xp.zeros_like(a))
                         / xp.where(pos, norm, xp.ones_like(norm)))
    return tangential + direction * radial


def _margin_softmax(need: tuple[str, ...], embeddings: Array, weight: Array, labels: Array,
                    kind: str, margin: Any, scale: Any, easy_margin: bool, reduction: str
                    ) -> tuple[Array, Pullback | None]:
    """The one definition of the four margin softmax losses: softmax cross-entropy of the
    modified logits, and the exact pullback to the embeddings and the class weights."""
    xp = _margin_inputs(embeddings, weight, labels)
    _, embeddings, weight, labels = A.common(embeddings=embeddings, weight=weight,
                                             labels=labels)
    _checks.reduction(reduction)
    scale = _checks.positive(scale, "scale")
    z, parts = _margin_logits(embeddings, weight, labels, kind, margin, scale, easy_margin)
    # softmax cross-entropy on the modified logits: one definition, reused with its pullback
    out, ce_pullback = softmax_cross_entropy.with_pullback(
        ("logits",) if need else (), z, labels, reduction=reduction)
    out = A.cast_like(xp, out, embeddings)
    if not need:
        return out, None
    x, w, u, v, cos, f, fprime, x_norm, w_norm, keep_x, keep_w = parts

    def pullback(cot: Array | None) -> dict[str, Array]:
        # z_ij = s R_x,i R_w,j f_j(c_ij): the cotangent reaches z through softmax CE (rows
        # independent, so its pullback is exact for any cotangent), then both factors. W is
        # shared by every example: its gradient sums over them, for any cotangent.
        gz = ce_pullback(cot)["logits"] * scale  # dL/dz s, (N, C)
        grads = {}
        if "embeddings" in need:
            k = gz * xp.permute_dims(w_norm, (1, 0)) if keep_w else gz
            g = _direction_grad(xp, k, f, fprime, cos, x, u, v, x_norm, keep_x)
            grads["embeddings"] = A.cast_like(xp, g, embeddings)
        if "weight" in need:
            k = gz * x_norm if keep_x else gz
            t = lambda a: xp.permute_dims(a, (1, 0))  # noqa: E731
            g = _direction_grad(xp, t(k), t(f), t(fprime), t(cos), w, v, u, w_norm, keep_w)
            grads["weight"] = A.cast_like(xp, g, weight)
        return grads

    return out, pullback


def _int_margin(margin: Any) -> int:
    # the multiplier sets a polynomial's degree, so it must be concrete even under jax.jit
    m = None if isinstance(margin, numbers.Real) and not isinstance(margin, numbers.Integral) \
        else _checks.index(margin, "margin", allow_none=True) if margin is not None else None
    if m is None or m < 1:
        raise ValueError(f"margin must be a positive integer (the multiplier m), got {margin!r}")
    return m


def _angular_margin(margin: Any) -> float:
    return _checks.number(margin, "margin", low=0.0, high=math.pi, high_open=True,
                          what="an angle in radians in [0, pi)")


@loss(wrt=("embeddings", "weight"))
def large_margin_softmax_loss(need: tuple[str, ...], embeddings: Array, weight: Array,
                              labels: Array, *, margin: int = 4, scale: float = 1.0,
                              reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """L-Softmax: softmax cross-entropy with a multiplicative angular margin on the target.

    Formula: ``z_j = s ||W_j|| ||x|| cos(theta_j)`` for ``j != y`` and
    ``z_y = s ||W_y|| ||x|| psi(theta_y)``, ``psi(theta) = (-1)^k cos(m theta) - 2k`` for
    ``theta`` in ``[k pi/m, (k+1) pi/m]``; ``l = -log softmax(z)_y``. ``m = 1`` is plain
    softmax cross-entropy on the logits ``s W x``.

    Gradient (the four margin losses share it): with ``z_j = s R_j f_j(c_j)``,
    ``c_j = u . v_j``, ``u = x / ||x||``, ``v_j = W_j / ||W_j||``, ``G = softmax(z) -
    onehot(y)`` (times the cotangent, and ``1/N`` for "mean") and ``H_j = G_j s R_j / ||x||``:
    ``dL/dx = sum_j H_j f'_j v_j + u sum_j H_j (a f_j - f'_j c_j)``, where ``a = 1`` when
    ``R`` holds ``||x||`` (L-Softmax, SphereFace) and 0 otherwise (CosFace, ArcFace). The
    class weights, shared by all examples, get the mirror image summed over them:
    ``dL/dW_j = sum_i K_ij f'_ij u_i + v_j sum_i K_ij (b f_ij - f'_ij c_ij)`` with
    ``K_ij = G_ij s R_ij / ||W_j||`` (``R_ij``: example ``i``'s ``R_j``) and ``b = 1`` when
    ``R`` holds ``||W_j||`` (L-Softmax only). Here ``R_j = ||x|| ||W_j||``, ``f_y = psi`` and
    ``psi' = (-1)^k m U_{m-1}(c)`` (Chebyshev). Both gradients are the backward on every
    backend (:func:`crossent.value_and_grad` with ``argnums=0`` or ``1``, torch autograd,
    ``jax.grad``), an exact pullback for ``reduction="none"`` too.

    Args:
        embeddings: features ``x``, shape ``(N, D)``, floating.
        weight: class weights ``W``, shape ``(C, D)`` (the transpose of
            pytorch-metric-learning's ``W``, which is ``(D, C)``).
        labels: integer class indices, shape ``(N,)``.
        margin: the integer multiplier ``m >= 1``.
        scale: ``s`` (1 in the paper).
        reduction: ``"mean"`` over examples, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-example losses, in the embeddings' dtype (fp16/bf16 computed in fp32).

    Raises:
        TypeError: non-floating embeddings or weight, non-integer labels.
        ValueError: bad shapes, label out of range, bad ``margin``, ``scale`` or
            ``reduction``.

    Example:
        >>> import numpy as np, crossent
        >>> x = np.array([[1.0, 1.0]]); W = np.array([[1.0, 0.0], [0.0, 2.0]])
        >>> round(float(large_margin_softmax_loss(x, W, np.array([0]), margin=2)), 6)
        2.126928
        >>> gx, gw = crossent.grad(large_margin_softmax_loss, argnums=(0, 1))(
        ...     x, W, np.array([0]), margin=1)
        >>> gx.round(4)  # m = 1: plain softmax CE, gradient (p - onehot) W
        array([[-0.7311,  1.4621]])
        >>> gw.round(4)  # ... and (p - onehot)^T x
        array([[-0.7311, -0.7311],
               [ 0.7311,  0.7311]])

    Aliases: pytorch-metric-learning ``LargeMarginSoftmaxLoss(margin=m, scale=s)`` (with its
    ``W`` set to ``weight.T``); Caffe ``LargeMarginInnerProduct``; "Large-Margin Softmax".

    References: Liu et al. 2016, "Large-Margin Softmax Loss for Convolutional Neural
    Networks", ICML (arXiv:1612.02295).
    """
    m = _int_margin(margin)
    return _margin_softmax(need, embeddings, weight, labels, "lsoftmax", m, scale, False,
                           reduction)


@loss(wrt=("embeddings", "weight"))
def sphereface_loss(need: tuple[str, ...], embeddings: Array, weight: Array, labels: Array, *,
                    margin: int = 4, scale: float = 1.0, reduction: str = "mean"
                    ) -> tuple[Array, Pullback | None]:
    """A-Softmax (SphereFace): L-Softmax with unit-norm class weights.

    Formula: ``z_j = s ||x|| cos(theta_j)`` for ``j != y``, ``z_y = s ||x|| psi(theta_y)``
    with ``psi(theta) = (-1)^k cos(m theta) - 2k`` as in L-Softmax; ``l = -log softmax(z)_y``.
    The paper's annealing with plain softmax (its ``lambda``) is left to the caller.
    Gradient w.r.t. the embeddings and the class weights: that of
    :func:`large_margin_softmax_loss` with ``R_j = ||x||`` (only the directions of the
    weights matter, so their gradient is orthogonal to them).

    Args:
        embeddings: features ``x``, shape ``(N, D)``, floating.
        weight: class weights ``W``, shape ``(C, D)``; only their directions matter.
        labels: integer class indices, shape ``(N,)``.
        margin: the integer multiplier ``m >= 1`` (4 in the paper).
        scale: ``s`` (1 in the paper).
        reduction: ``"mean"`` over examples, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-example losses, in the embeddings' dtype (fp16/bf16 computed in fp32).

    Raises:
        TypeError: non-floating embeddings or weight, non-integer labels.
        ValueError: bad shapes, label out of range, bad ``margin``, ``scale`` or
            ``reduction``.

    Example:
        >>> import numpy as np, crossent
        >>> x = np.array([[1.0, 1.0]]); W = np.array([[1.0, 0.0], [0.0, 2.0]])
        >>> round(float(sphereface_loss(x, W, np.array([0]), margin=2)), 6)
        1.313262
        >>> x = np.array([[3.0, 4.0]]); W = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> crossent.grad(sphereface_loss)(x, W, np.array([1]), margin=1).round(4)
        array([[ 0.2689, -0.2689]])

    The last one: ``m = 1`` and unit ``W`` make it softmax CE on ``x W^T``, gradient
    ``(p - onehot) W``.

    Aliases: pytorch-metric-learning ``SphereFaceLoss(margin=m, scale=s)``; A-Softmax,
    "Angular Softmax"; SphereFace's Caffe ``MarginInnerProduct``.

    References: Liu et al. 2017, "SphereFace: Deep Hypersphere Embedding for Face
    Recognition", CVPR (arXiv:1704.08063).
    """
    m = _int_margin(margin)
    return _margin_softmax(need, embeddings, weight, labels, "sphereface", m, scale, False,
                           reduction)


@loss(wrt=("embeddings", "weight"))
def cosface_loss(need: tuple[str, ...], embeddings: Array, weight: Array, labels: Array, *,
                 margin: float = 0.35, scale: float = 64.0, reduction: str = "mean"
                 ) -> tuple[Array, Pullback | None]:
    """CosFace / AM-Softmax: an additive cosine margin on normalised features and weights.

    Formula: ``z_j = s cos(theta_j)`` for ``j != y``, ``z_y = s (cos(theta_y) - m)``;
    ``l = -log softmax(z)_y``. ``m = 0`` is normalised-softmax cross-entropy. Gradient:
    ``dL/dx = s / ||x|| [G V - (sum_j G_j c_j) u]`` with ``G = softmax(z) - onehot(y)``,
    ``V`` the unit class weights and ``u = x / ||x||``; ``dL/dW_j = s / ||W_j|| sum_i
    G_ij (u_i - c_ij v_j)`` (that of :func:`large_margin_softmax_loss` with ``R = 1``).

    Args:
        embeddings: features ``x``, shape ``(N, D)``, floating; only directions matter.
        weight: class weights ``W``, shape ``(C, D)``; only directions matter.
        labels: integer class indices, shape ``(N,)``.
        margin: the cosine margin ``m >= 0`` (0.35 in the paper).
        scale: ``s`` (64 in the paper).
        reduction: ``"mean"`` over examples, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-example losses, in the embeddings' dtype (fp16/bf16 computed in fp32).

    Raises:
        TypeError: non-floating embeddings or weight, non-integer labels.
        ValueError: bad shapes, label out of range, bad ``margin``, ``scale`` or
            ``reduction``.

    Example:
        >>> import numpy as np, crossent
        >>> x = np.array([[1.0, 1.0]]); W = np.array([[1.0, 0.0], [0.0, 2.0]])
        >>> round(float(cosface_loss(x, W, np.array([0]), margin=0.35, scale=4.0)), 6)
        1.620417
        >>> x = np.array([[2.0, 0.0]]); W = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> _, g = crossent.value_and_grad(cosface_loss)(x, W, np.array([0]), margin=0.0,
        ...                                              scale=1.0)
        >>> g.round(4)  # only the tangential part: the loss ignores ||x||
        array([[0.    , 0.1345]])

    Aliases: pytorch-metric-learning ``CosFaceLoss(margin=m, scale=s)``; AM-Softmax,
    "Additive Margin Softmax", LMCL ("Large Margin Cosine Loss"); insightface ``CosFace``.

    References: Wang et al. 2018, "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR (arXiv:1801.09414); Wang et al. 2018, "Additive Margin Softmax for
    Face Verification" (arXiv:1801.05599).
    """
    m = _checks.non_negative(margin, "margin")
    return _margin_softmax(need, embeddings, weight, labels, "cosface", m, scale, False,
                           reduction)


@loss(wrt=("embeddings", "weight"))
def arcface_loss(need: tuple[str, ...], embeddings: Array, weight: Array, labels: Array, *,
                 margin: float = 0.5, scale: float = 64.0, easy_margin: bool = False,
                 reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """ArcFace: an additive angular margin on normalised features and weights.

    Formula: ``z_j = s cos(theta_j)`` for ``j != y`` and ``z_y = s phi(theta_y)`` with
    ``phi = cos(theta + m)`` where ``cos(theta) > cos(pi - m)`` (``theta + m < pi``, where
    ``cos(theta + m)`` still decreases) and ``phi = cos(theta) - m sin(m)`` elsewhere;
    with ``easy_margin``, ``phi = cos(theta + m)`` where ``cos(theta) > 0`` and
    ``cos(theta)`` elsewhere. ``l = -log softmax(z)_y``. ``m = 0`` is normalised-softmax
    cross-entropy. Gradient w.r.t. the embeddings and the class weights: that of
    :func:`large_margin_softmax_loss` with ``R = 1`` and ``f_y' = cos m + sin m cos(theta) /
    sin(theta)`` on the ``cos(theta + m)`` branch (``cos m`` where ``sin(theta) = 0``, so the
    gradient stays finite), 1 elsewhere.

    Args:
        embeddings: features ``x``, shape ``(N, D)``, floating; only directions matter.
        weight: class weights ``W``, shape ``(C, D)``; only directions matter.
        labels: integer class indices, shape ``(N,)``.
        margin: the angular margin ``m`` in radians, in [0, pi) (0.5 in the paper;
            pytorch-metric-learning takes degrees: 28.6 there).
        scale: ``s`` (64 in the paper).
        easy_margin: apply the margin only where ``theta < pi/2``.
        reduction: ``"mean"`` over examples, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-example losses, in the embeddings' dtype (fp16/bf16 computed in fp32).

    Raises:
        TypeError: non-floating embeddings or weight, non-integer labels.
        ValueError: bad shapes, label out of range, bad ``margin``, ``scale`` or
            ``reduction``.

    Example:
        >>> import numpy as np, crossent
        >>> x = np.array([[1.0, 1.0]]); W = np.array([[1.0, 0.0], [0.0, 2.0]])
        >>> round(float(arcface_loss(x, W, np.array([0]), margin=0.5, scale=4.0)), 6)
        1.869705
        >>> x = np.array([[2.0, 0.0]]); W = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> _, g = crossent.value_and_grad(arcface_loss)(x, W, np.array([0]), margin=0.0,
        ...                                              scale=1.0)
        >>> g.round(4)
        array([[0.    , 0.1345]])

    Aliases: pytorch-metric-learning ``ArcFaceLoss(margin=degrees(m), scale=s)``;
    insightface ``ArcFace`` / ``ArcMarginProduct``; "Additive Angular Margin Loss".

    References: Deng et al. 2019, "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR (arXiv:1801.07698), and its reference code (insightface's
    ``ArcMarginProduct``: ``th = cos(pi - m)``, ``mm = sin(pi - m) m``).
    """
    m = _angular_margin(margin)
    return _margin_softmax(need, embeddings, weight, labels, "arcface", m, scale,
                           bool(easy_margin), reduction)
