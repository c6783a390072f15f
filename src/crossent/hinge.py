"""Hinge losses: the margin losses of SVMs.

The hinge ("margin") losses of SVMs (Cortes & Vapnik 1995): the binary hinge, PyTorch's
``multi_margin_loss`` (Weston-Watkins), the Crammer-Singer multiclass hinge and Keras's
``categorical_hinge``. The margin softmax losses of face recognition are in
:mod:`crossent.margin_softmax`.
"""

from __future__ import annotations

from typing import Any

from . import _array as A
from . import _checks
from ._reduce import grad_scale, reduce
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = [
    "hinge_loss",
    "multi_margin_loss",
    "multiclass_hinge_loss",
    "categorical_hinge_loss",
    "perceptron_loss",
    "multiclass_perceptron_loss",
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
    return _binary_margin(need, scores, targets, 1.0, squared, reduction)


def _binary_margin(need: tuple[str, ...], scores: Array, targets: Array, margin: float,
                   squared: bool, reduction: str) -> tuple[Array, Pullback | None]:
    """``max(0, margin - t s)`` (squared when asked): the hinge (margin 1) and the
    perceptron (margin 0), with their common subgradient."""
    xp, scores, targets = _checks.loss_inputs(reduction, scores=scores, targets=targets)
    s = A.upcast(xp, scores)
    t = _sign_targets(xp, targets, scores)
    h = margin - t * s
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


@loss(wrt=("logits",),
      torch="crossent.torch.fast_paths:multi_margin_loss")
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
    xp, logits, labels = _checks.loss_inputs(reduction, logits=logits, labels=labels)
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
    return _multiclass_margin(need, scores, labels, 1.0, reduction)


def _multiclass_margin(need: tuple[str, ...], scores: Array, labels: Array, margin: float,
                       reduction: str) -> tuple[Array, Pullback | None]:
    """``max_j (s_j + margin [j != y]) - s_y``: Crammer-Singer's hinge (margin 1) and the
    multiclass perceptron (margin 0), ties sharing the subgradient of the max."""
    xp, scores, labels = _checks.loss_inputs(reduction, scores=scores, labels=labels)
    _checks.class_axis(scores, -1, "scores")
    z = A.upcast(xp, scores)
    _checks.class_labels(xp, labels, z, z.ndim - 1, None, "labels", "scores")
    onehot = A.one_hot_mask(xp, labels, z.shape[-1], z.dtype)
    v = z + margin - margin * onehot if margin else z  # Optax's rounding: (s + 1) - onehot
    vmax = xp.max(v, axis=-1)
    per = vmax - A.take_class(xp, z, labels)
    out = A.cast_like(xp, reduce(xp, per, reduction), scores)
    if not need:
        return out, None
    g = _argmax_share(xp, v, vmax) - onehot
    g = g * grad_scale(xp, per.shape, reduction, None)
    return out, scaled_pullback(xp, {"scores": A.cast_like(xp, g, scores)}, _per_row(xp))


# --- perceptron ----------------------------------------------------------------------------


@loss(wrt=("scores",))
def perceptron_loss(need: tuple[str, ...], scores: Array, targets: Array, *,
                    reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Binary perceptron loss: the hinge without its margin.

    Formula: ``l = max(0, -t s)`` with ``t`` in {-1, 1} (a 0 label is read as -1): zero for
    every correctly signed score, however small. Gradient w.r.t. the scores: ``-t [-t s > 0]``
    (0 at the kink ``s = 0``, as the hinge's), the backward on every backend.

    Args:
        scores: real-valued scores, any shape.
        targets: labels in {-1, 1} or {0, 1}, same shape as ``scores``.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or element-wise losses, in the scores' dtype.

    Raises:
        TypeError: non-floating scores.
        ValueError: shape mismatch, a label outside {-1, 0, 1}, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> perceptron_loss(np.array([2.0, -0.5, 0.3]), np.array([1, 1, -1]), reduction="none")
        array([0. , 0.5, 0.3])
        >>> crossent.grad(perceptron_loss)(np.array([-0.5, 0.3]), np.array([1, 1]),
        ...                                reduction="sum").tolist()
        [-1.0, -0.0]

    References: Rosenblatt 1958, "The perceptron"; Optax ``perceptron_loss``;
    scikit-learn ``Perceptron`` (``SGDClassifier(loss="perceptron")``).
    """
    return _binary_margin(need, scores, targets, 0.0, False, reduction)


@loss(wrt=("scores",))
def multiclass_perceptron_loss(need: tuple[str, ...], scores: Array, labels: Array, *,
                               reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Multiclass perceptron loss: the score of the best class above the true one's.

    Formula: ``l = max_j s_j - s_y`` (0 when the true class scores highest). Gradient:
    ``onehot(argmax_j s_j) - onehot(y)``, tied maxima sharing the first term equally (as
    ``jnp.max``'s derivative).

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
        >>> multiclass_perceptron_loss(np.array([[2.0, 0.5, 1.5], [0.0, 0.0, 3.0]]),
        ...                            np.array([0, 1]), reduction="none")
        array([0., 3.])
        >>> crossent.grad(multiclass_perceptron_loss)(np.array([[1.0, 1.5]]), np.array([0]))
        array([[-1.,  1.]])

    References: Collins 2002, "Discriminative training methods for hidden Markov models:
    theory and experiments with perceptron algorithms", EMNLP; Optax
    ``multiclass_perceptron_loss``.
    """
    return _multiclass_margin(need, scores, labels, 0.0, reduction)


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
    xp, scores, targets = _checks.loss_inputs(reduction, scores=scores, targets=targets)
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
