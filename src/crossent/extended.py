"""The extended cross-entropy family: Poly-1, asymmetric (ASL), sparsemax, generalized CE,
and the class-balanced weights of Cui et al.

Each changes one piece of softmax/sigmoid cross-entropy: Poly-1 adds a term in ``1 - p_t``
(the leading term of CE's Taylor series), ASL reshapes the focal modulation differently for
positives and negatives in multi-label tasks, sparsemax replaces softmax by a projection that
can give exact zeros (its loss is the Fenchel-Young counterpart of CE), generalized CE
interpolates between CE (q -> 0) and mean absolute error (q = 1) for noisy labels, and the
class-balanced weights re-weight CE by the effective number of samples of each class.
"""

from __future__ import annotations

import math
from typing import Any

from . import _array as A
from . import _checks
from ._axes import over_axes
from ._reduce import grad_scale, masked, reduce
from .activations import _lse
from .classification import softmax_cross_entropy
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = [
    "poly1_cross_entropy",
    "asymmetric_loss",
    "sparsemax",
    "sparsemax_loss",
    "binary_sparsemax_loss",
    "generalized_cross_entropy",
    "class_balanced_weights",
]



# --- Poly-1 ---------------------------------------------------------------------------------


@loss(wrt=("logits", "targets"))
def poly1_cross_entropy(need: tuple[str, ...], logits: Array, targets: Array, *,
                        epsilon: float = 2.0, axis: int | tuple[int, ...] = -1,
                        ignore_index: int = -100, where: Array | None = None,
                        reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Poly-1 loss: softmax cross-entropy plus ``epsilon (1 - p_t)``.

    Formula: ``l = CE(z, t) + epsilon * sum_c t_c (1 - p_c)``, ``p = softmax(z)``; for an
    integer label that is ``-log p_y + epsilon (1 - p_y)``. Gradient w.r.t. the logits:
    ``p sum(t) - t - epsilon p (t - p_t)``, ``p_t = sum_c t_c p_c``; w.r.t. probability
    targets: ``logsumexp(z) - z_c + epsilon (1 - p_c)``.

    Args:
        logits: floating array, classes along ``axis``.
        targets: integer class indices (shape of ``logits`` minus ``axis``) or floating
            class probabilities (shape of ``logits``).
        epsilon: the coefficient of ``(1 - p_t)`` (2.0 as Optax; -1 < epsilon is the useful
            range, 0 gives cross-entropy).
        axis: the class axis, or a tuple of axes holding the classes together.
        ignore_index: integer targets equal to it contribute neither loss nor gradient.
        where: optional mask of the elements that take part (Optax's ``where``), as for
            :func:`crossent.softmax_cross_entropy`: masked classes leave the softmax and
            the ``1 - p_t`` sum, fully masked positions count nowhere.
        reduction: ``"mean"`` (over non-ignored positions), ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-position losses, in the logits' dtype.

    Raises:
        TypeError: non-floating logits or probability targets.
        ValueError: shape mismatch, label out of range, bad epsilon or reduction.

    Example:
        >>> import numpy as np, crossent
        >>> z = np.array([[0.0, 0.0]])
        >>> round(float(poly1_cross_entropy(z, np.array([0]), epsilon=1.0)), 6)  # ln 2 + 0.5
        1.193147
        >>> crossent.value_and_grad(poly1_cross_entropy)(z, np.array([0]), epsilon=1.0)[1]
        array([[-0.75,  0.75]])

    Aliases: Optax ``poly_loss_cross_entropy``; PolyLoss, Poly-1.

    References: Leng et al. 2022, "PolyLoss: A Polynomial Expansion Perspective of
    Classification Loss Functions", ICLR (arXiv:2204.12511).
    """
    if isinstance(axis, tuple):
        return over_axes(poly1_cross_entropy.with_pullback, need,
                         {"logits": logits, "targets": targets}, ("logits", "targets"), axis,
                         {"epsilon": epsilon, "ignore_index": ignore_index, "where": where,
                          "reduction": reduction})
    xp, logits, targets = _checks.loss_inputs(reduction, logits=logits, targets=targets)
    eps = _checks.real(epsilon, "epsilon")
    ax = _checks.class_axis(logits, axis)
    zin = A.upcast(xp, logits)
    integer = A.is_integer(xp, targets)
    cm = _checks.where_mask(xp, where, zin.shape, ax, zin.dtype, A.device_of(zin))
    # the cross-entropy part, its checks and its gradient: softmax CE's one definition
    # (integer labels have no gradient)
    need_ce = tuple(n for n in need if n == "logits" or not integer)
    ce, ce_pullback = softmax_cross_entropy.with_pullback(
        need_ce, zin, targets, axis=ax, ignore_index=ignore_index, where=cm,
        reduction="none")
    z = A.move_axis_last(xp, zin, ax)
    dt = z.dtype
    if integer:
        z = A.zero_ignored_rows(xp, z, targets, ignore_index)
    rows = None  # 1 where a position has an element left (None: no mask)
    if cm is not None:
        cm = A.move_axis_last(xp, cm, ax)
        z, rows = A.mask_classes(xp, z, cm)  # masked classes: out of the softmax
    p = xp.exp(z - _lse(xp, z, -1, True))
    if integer:
        valid, safe = A.label_mask(xp, targets, ignore_index, dt, z.shape[-1])
        t = A.one_hot_mask(xp, safe, z.shape[-1], dt) * valid[..., None]
        denom = xp.sum(valid if rows is None else valid * rows)
    else:
        t = A.as_float(xp, A.upcast(xp, A.move_axis_last(xp, targets, ax)), dt)
        denom = None if rows is None else xp.sum(rows)
    if cm is not None:
        t = t * cm
    pt = xp.sum(t * p, axis=-1)
    loss_ = ce + eps * (xp.sum(t, axis=-1) - pt)  # eps * sum_c t_c (1 - p_c)
    out = A.cast_like(xp, reduce(xp, loss_, reduction, denom), logits)
    if not need:
        return out, None
    assert ce_pullback is not None  # asked with need, the definition returns one
    g_ce = ce_pullback(None)  # per-position gradients of the CE part (reduction "none")
    scale = grad_scale(xp, loss_.shape, reduction, denom)
    grads = {}
    if "logits" in need:
        # d(-sum_c t_c p_c)/dz_j = -p_j (t_j - p_t)
        g_poly = A.move_axis_back(xp, -eps * p * (t - pt[..., None]), ax)
        grads["logits"] = A.cast_like(xp, (g_ce["logits"] + g_poly) * scale, logits)
    if "targets" in need_ce:
        # d(eps sum_c t_c (1 - p_c))/dt_c = eps (1 - p_c)
        g_poly = A.move_axis_back(xp, masked(xp, eps * (1.0 - p), cm), ax)
        grads["targets"] = A.cast_like(xp, (g_ce["targets"] + g_poly) * scale, targets)
    return out, scaled_pullback(xp, grads, lambda c: xp.expand_dims(c, axis=ax))


# --- asymmetric loss (ASL) ------------------------------------------------------------------


def _sigmoid_pair(xp: Any, x: Array) -> tuple[Array, Array]:
    """``sigmoid(x)`` and ``sigmoid(-x) = 1 - sigmoid(x)``, each without cancellation."""
    return A.sigmoid(xp, x), A.sigmoid(xp, -x)


@loss(wrt=("logits",))
def asymmetric_loss(need: tuple[str, ...], logits: Array, targets: Array, *,
                    gamma_neg: float = 4.0, gamma_pos: float = 1.0,
                    clip: float | None = 0.05, eps: float = 1e-8,
                    reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Asymmetric loss (ASL) for multi-label classification, as timm's
    ``AsymmetricLossMultiLabel``.

    Formula: with ``p = sigmoid(x)`` and the shifted negative probability
    ``q = min(1 - p + clip, 1)``: ``l = -[y (1 - p)^gamma_pos log(max(p, eps)) +
    (1 - y) (1 - q)^gamma_neg log(max(q, eps))]`` (for soft ``y`` the focusing weight is
    ``(1 - p_t)^gamma`` with ``p_t = y p + (1 - y) q``, ``gamma = y gamma_pos +
    (1 - y) gamma_neg``, exactly as timm). The focusing weight is differentiated (timm's
    default ``disable_torch_grad_focal_loss=False``).

    Gradient w.r.t. the logits: ``l = -w B`` with ``B = y log p + (1 - y) log q`` and
    ``w = (1 - p_t)^gamma``; ``dl/dx = -(w' B + w B')``,
    ``w' = -gamma (1 - p_t)^(gamma - 1) dp_t/dx``, ``dp/dx = p (1 - p)``,
    ``dq/dx = -p (1 - p)`` where ``q < 1`` (0 where clipped), and the log terms have zero
    slope where the ``eps`` floor is active. Soft targets are differentiated by autodiff.

    Args:
        logits: floating array of any shape, e.g. ``(N, C)``.
        targets: multi-label targets in [0, 1] (or 0/1 integers), same shape.
        gamma_neg: focusing exponent of the negatives (4).
        gamma_pos: focusing exponent of the positives (1).
        clip: probability margin ``m`` of the negatives, in [0, 1]; ``None`` or 0 is off.
        eps: floor of the probabilities inside the logs (1e-8).
        reduction: ``"mean"`` over elements, ``"sum"`` (timm's reduction) or ``"none"``.

    Returns:
        Scalar or element-wise losses, in the logits' dtype.

    Raises:
        TypeError: non-floating logits.
        ValueError: shape mismatch, targets outside [0, 1], bad gammas, clip, eps or
            reduction.

    Example:
        >>> import numpy as np, crossent
        >>> x = np.array([[0.0, 0.0]]); y = np.array([[1.0, 0.0]])
        >>> asymmetric_loss(x, y, reduction="none").round(6)  # 0.5 ln 2 and 0.45^4 ln(1/0.55)
        array([[0.346574, 0.024515]])
        >>> g = crossent.value_and_grad(asymmetric_loss)(np.array([0.0]), np.array([1.0]))[1]
        >>> g.round(6)  # -(0.25 ln 2 + 0.5 * 0.5): focusing term plus the weighted CE term
        array([-0.423287])

    Aliases: timm ``AsymmetricLossMultiLabel`` (``reduction="sum"``); ASL.

    References: Ben-Baruch et al. 2021, "Asymmetric Loss For Multi-Label Classification",
    ICCV (arXiv:2009.14119), and its reference code (Alibaba-MIIL/ASL, timm).
    """
    xp, logits, targets = _checks.loss_inputs(reduction, logits=logits, targets=targets)
    g_neg = _checks.non_negative(gamma_neg, "gamma_neg")
    g_pos = _checks.non_negative(gamma_pos, "gamma_pos")
    c = 0.0 if clip is None else _checks.unit_interval(clip, "clip")
    eps = _checks.positive(eps, "eps")
    x = A.upcast(xp, logits)
    dt = x.dtype
    if not A.is_floating(xp, targets):
        targets = xp.astype(targets, dt)
    _checks.same_shape(logits, targets, "logits", "targets")
    _checks.in_unit_interval(xp, targets, "targets")
    y = A.as_float(xp, A.upcast(xp, targets), dt)
    s, s_neg = _sigmoid_pair(xp, x)
    log_eps = A.scalar_fn(xp, "log", eps)
    # positive part: log(max(sigmoid(x), eps)), from log_sigmoid so it is exact in the tail
    log_s = -A.softplus(xp, -x)
    lp = xp.where(log_s < log_eps, xp.full_like(x, log_eps), log_s)
    # negative part with probability shifting: q = min(1 - sigmoid(x) + clip, 1)
    q_raw = s_neg + c
    q = xp.minimum(q_raw, xp.ones_like(x))
    lq = xp.maximum(xp.log(q), xp.full_like(x, log_eps))
    base = y * lp + (1.0 - y) * lq
    pt = y * s + (1.0 - y) * q
    gamma = g_pos * y + g_neg * (1.0 - y)
    omp = 1.0 - pt
    nonzero = omp > 0
    omp_safe = xp.where(nonzero, omp, xp.ones_like(omp))
    w = xp.where(nonzero, omp_safe ** gamma, xp.where(gamma == 0, xp.ones_like(omp),
                                                     xp.zeros_like(omp)))
    loss_ = -w * base
    out = A.cast_like(xp, reduce(xp, loss_, reduction), logits)
    if not need:
        return out, None
    ds = s * s_neg  # sigmoid'
    dlp = xp.where(log_s > log_eps, s_neg, xp.zeros_like(x))  # d log sigmoid = 1 - sigmoid
    dq = xp.where(q_raw < 1.0, -ds, xp.zeros_like(x))
    dlq = xp.where(q > eps, dq / q, xp.zeros_like(x))
    dbase = y * dlp + (1.0 - y) * dlq
    dpt = y * ds + (1.0 - y) * dq
    # dw = -gamma (1 - pt)^(gamma - 1) dpt; where 1 - pt = 0 the log term is 0 as well
    dw = xp.where(nonzero, -gamma * (omp_safe ** (gamma - 1.0)) * dpt, xp.zeros_like(x))
    g = -(dw * base + w * dbase) * grad_scale(xp, loss_.shape, reduction, None)
    return out, scaled_pullback(xp, {"logits": A.cast_like(xp, g, logits)}, lambda cot: cot)


# --- sparsemax ------------------------------------------------------------------------------


def _sparsemax_last(xp: Any, z: Array) -> Array:
    """Euclidean projection of each row (last axis) onto the probability simplex."""
    # shift by the row max (the projection is shift-invariant): at |z| ~ 1e8 in float32 the
    # support test 1 + k z_(k) > cumsum would otherwise lose the 1 to rounding
    m = xp.max(z, axis=-1, keepdims=True)
    z = z - xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    zs = xp.sort(z, axis=-1, descending=True)
    cs = xp.cumulative_sum(zs, axis=-1)
    k = xp.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=A.device_of(z))
    # the support is the prefix of sorted entries with 1 + k z_(k) > sum_{j<=k} z_(j)
    inside = 1.0 + k * zs > cs
    size = xp.sum(A.as_float(xp, inside, z.dtype), axis=-1, keepdims=True)
    # where(), not a 0/1 product: masked classes at -inf would give 0 * -inf = NaN
    tau = (xp.sum(xp.where(inside, zs, xp.zeros_like(zs)), axis=-1, keepdims=True) - 1.0) / size
    return A.relu(xp, z - tau)


def sparsemax(x: Array, *, axis: int = -1) -> Array:
    """Sparsemax: the Euclidean projection onto the probability simplex (sparse softmax).

    Formula: ``sparsemax(z) = argmin_{p in simplex} ||p - z||^2 = max(z - tau, 0)`` with
    ``tau`` such that the result sums to 1; large gaps give exact zeros.

    Args:
        x: logits, classes along ``axis``.
        axis: the class axis.

    Returns:
        Probabilities summing to 1 along ``axis``, shape and dtype of ``x``.

    Raises:
        TypeError: non-floating ``x``.

    Example:
        >>> import numpy as np
        >>> sparsemax(np.array([[2.0, 1.0, -1.0], [0.0, 0.0, 0.0]])).round(4).tolist()
        [[1.0, 0.0, 0.0], [0.3333, 0.3333, 0.3333]]

    Aliases: Optax ``optax.projections.projection_simplex`` (per row);
    ``entmax.sparsemax`` (third-party, PyTorch).

    References: Martins & Astudillo 2016, "From Softmax to Sparsemax", ICML
    (arXiv:1602.02068).
    """
    xp = A.namespace(x)
    _checks.floating(xp, x, "x")
    ax = _checks.class_axis(x, axis)
    z = A.upcast(xp, A.move_axis_last(xp, x, ax))
    return A.cast_like(xp, A.move_axis_back(xp, _sparsemax_last(xp, z), ax), x)


@loss(wrt=("logits",))
def sparsemax_loss(need: tuple[str, ...], logits: Array, labels: Array, *, axis: int = -1,
                   reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Multiclass sparsemax loss: the Fenchel-Young loss whose prediction map is sparsemax.

    Formula: ``p = sparsemax(z)``, ``l = sum_j p_j (z_j - z_y) + (1 - ||p||^2) / 2``
    (equivalently ``-z_y + sum_{j in S} (z_j^2 - tau^2) / 2 + 1/2``). Gradient:
    ``sparsemax(z) - onehot(y)``, the analogue of softmax CE's ``p - onehot(y)``; the loss
    is 0 exactly when ``sparsemax(z) = onehot(y)``.

    Args:
        logits: floating array, classes along ``axis``.
        labels: integer class indices, shape of ``logits`` minus ``axis``.
        axis: the class axis.
        reduction: ``"mean"`` over positions, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-position losses, in the logits' dtype.

    Raises:
        TypeError: non-floating logits or non-integer labels.
        ValueError: shape mismatch, label out of range, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> sparsemax_loss(np.array([[2.0, 1.0, -1.0], [0.0, 0.0, 0.0]]), np.array([0, 1]),
        ...                reduction="none").round(6)
        array([0.      , 0.333333])
        >>> crossent.value_and_grad(sparsemax_loss)(np.array([[0.0, 0.0]]), np.array([0]))[1]
        array([[-0.5,  0.5]])

    Aliases: Optax ``multiclass_sparsemax_loss`` (Optax's ``sparsemax_loss`` is the binary
    :func:`binary_sparsemax_loss`); ``entmax.SparsemaxLoss``.

    References: Martins & Astudillo 2016, "From Softmax to Sparsemax", ICML; Blondel,
    Martins & Niculae 2020, "Learning with Fenchel-Young Losses", JMLR 21.
    """
    xp, logits, labels = _checks.loss_inputs(reduction, logits=logits, labels=labels)
    ax = _checks.class_axis(logits, axis)
    _checks.class_labels(xp, labels, logits, ax, None, "labels")
    z = A.upcast(xp, A.move_axis_last(xp, logits, ax))
    p = _sparsemax_last(xp, z)
    d = z - A.take_class(xp, z, labels)[..., None]  # shift-invariant, exact for large z
    d = xp.where(p > 0, d, xp.zeros_like(d))  # classes off the support may be at -inf
    loss_ = xp.sum(p * d, axis=-1) + 0.5 * (1.0 - xp.sum(p * p, axis=-1))
    out = A.cast_like(xp, reduce(xp, loss_, reduction), logits)
    if not need:
        return out, None
    g = p - A.one_hot_mask(xp, labels, z.shape[-1], z.dtype)
    g = A.move_axis_back(xp, g * grad_scale(xp, loss_.shape, reduction, None), ax)
    return out, scaled_pullback(xp, {"logits": A.cast_like(xp, g, logits)},
                                lambda cot: xp.expand_dims(cot, axis=ax))


@loss(wrt=("logits",))
def binary_sparsemax_loss(need: tuple[str, ...], logits: Array, labels: Array, *,
                          reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Binary sparsemax loss: the Fenchel-Young loss of the sparse sigmoid.

    Formula: ``v = -x`` for a positive label and ``x`` for a negative one,
    ``l = sparse_plus(v)`` = 0 for ``v <= -1``, ``(v + 1)^2 / 4`` for ``|v| < 1``, ``v`` for
    ``v >= 1``. Gradient w.r.t. ``x``: ``sparse_sigmoid(x) - y`` with ``sparse_sigmoid(x) =
    clip((x + 1) / 2, 0, 1)``.

    Args:
        logits: floating array of any shape.
        labels: 0/1 labels (any dtype), same shape.
        reduction: ``"mean"`` over elements, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or element-wise losses, in the logits' dtype.

    Raises:
        TypeError: non-floating logits.
        ValueError: shape mismatch, labels outside {0, 1}, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> binary_sparsemax_loss(np.array([2.0, 0.0, -3.0]), np.array([1, 1, 1]),
        ...                       reduction="none")
        array([0.  , 0.25, 3.  ])
        >>> crossent.value_and_grad(binary_sparsemax_loss)(np.array([0.0, 0.0]),
        ...                                                np.array([1, 0]), reduction="sum")[1]
        array([-0.5,  0.5])

    Aliases: Optax ``sparsemax_loss`` (formerly ``binary_sparsemax_loss``).

    References: Blondel, Martins & Niculae 2020, "Learning with Fenchel-Young Losses", JMLR
    21 (sec. 4.4).
    """
    xp, logits, labels = _checks.loss_inputs(reduction, logits=logits, labels=labels)
    x = A.upcast(xp, logits)
    _checks.same_shape(logits, labels, "logits", "labels")
    y = A.as_float(xp, labels, x.dtype)
    if _checks.any_true(xp, (y != 0) & (y != 1)):
        raise ValueError(
            f"labels must hold 0 or 1, got values in [{float(xp.min(y))}, {float(xp.max(y))}]"
        )
    sign = 1.0 - 2.0 * y  # the margin variable is -x for a positive, x for a negative
    v = sign * x
    one = xp.ones_like(v)
    # sparse_plus(v) = 0 (v <= -1), (v + 1)^2 / 4 (|v| < 1), v (v >= 1)
    loss_ = xp.where(v <= -1.0, xp.zeros_like(v), xp.where(v >= 1.0, v, (v + one) ** 2 / 4.0))
    out = A.cast_like(xp, reduce(xp, loss_, reduction), logits)
    if not need:
        return out, None
    slope = xp.clip((v + 1.0) / 2.0, 0.0, 1.0)  # sparse_sigmoid(v)
    g = sign * slope * grad_scale(xp, loss_.shape, reduction, None)
    return out, scaled_pullback(xp, {"logits": A.cast_like(xp, g, logits)}, lambda cot: cot)


# --- generalized cross-entropy --------------------------------------------------------------


@loss(wrt=("logits",))
def generalized_cross_entropy(need: tuple[str, ...], logits: Array, labels: Array, *,
                              q: float = 0.7, axis: int = -1, ignore_index: int = -100,
                              reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Generalized cross-entropy (L_q loss) of Zhang & Sabuncu, robust to noisy labels.

    Formula: ``l = (1 - p_y^q) / q`` with ``p = softmax(z)``; ``q -> 0`` gives
    cross-entropy, ``q = 1`` the mean absolute error ``1 - p_y``. Gradient w.r.t. the
    logits: ``p_y^q (p - onehot(y))``, CE's gradient damped on low-confidence examples.

    Args:
        logits: floating array, classes along ``axis`` (logits, not probabilities: pass
            ``softmax`` outputs' logs, or use Keras for probabilities).
        labels: integer class indices, shape of ``logits`` minus ``axis``.
        q: in (0, 1] (0.7 in the paper; Keras's default is 0.5).
        axis: the class axis.
        ignore_index: labels equal to it contribute neither loss nor gradient.
        reduction: ``"mean"`` over non-ignored positions, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-position losses, in the logits' dtype.

    Raises:
        TypeError: non-floating logits or non-integer labels.
        ValueError: shape mismatch, label out of range, ``q`` outside (0, 1], bad reduction.

    Example:
        >>> import numpy as np, crossent
        >>> z = np.log(np.array([[0.25, 0.75]]))
        >>> round(float(generalized_cross_entropy(z, np.array([0]), q=0.5)), 6)  # 2(1 - 0.5)
        1.0
        >>> crossent.value_and_grad(generalized_cross_entropy)(z, np.array([1]), q=1.0)[1].round(6)
        array([[ 0.1875, -0.1875]])

    Aliases: Keras ``categorical_generalized_cross_entropy`` /
    ``CategoricalGeneralizedCrossEntropy`` (on probabilities); GCE, L_q loss.

    References: Zhang & Sabuncu 2018, "Generalized Cross Entropy Loss for Training Deep
    Neural Networks with Noisy Labels", NeurIPS (arXiv:1805.07836).
    """
    xp, logits, labels = _checks.loss_inputs(reduction, logits=logits, labels=labels)
    q = _checks.number(q, "q", low=0.0, high=1.0, low_open=True, what="in (0, 1]")
    ax = _checks.class_axis(logits, axis)
    _checks.class_labels(xp, labels, logits, ax, ignore_index, "labels")
    z = A.zero_ignored_rows(xp, A.upcast(xp, A.move_axis_last(xp, logits, ax)), labels,
                            ignore_index)
    dt = z.dtype
    valid, safe = A.label_mask(xp, labels, ignore_index, dt, z.shape[-1])
    logp = z - _lse(xp, z, -1, True)
    qlogp = q * A.take_class(xp, logp, safe)
    # (1 - p_y^q) / q = -expm1(q log p_y) / q: exact as q -> 0 (where it tends to CE)
    loss_ = -xp.expm1(qlogp) / q * valid
    denom = xp.sum(valid)
    out = A.cast_like(xp, reduce(xp, loss_, reduction, denom), logits)
    if not need:
        return out, None
    pyq = xp.exp(qlogp) * valid
    g = pyq[..., None] * (xp.exp(logp) - A.one_hot_mask(xp, safe, z.shape[-1], dt))
    g = A.move_axis_back(xp, g * grad_scale(xp, loss_.shape, reduction, denom), ax)
    return out, scaled_pullback(xp, {"logits": A.cast_like(xp, g, logits)},
                                lambda cot: xp.expand_dims(cot, axis=ax))


# --- class-balanced weights -----------------------------------------------------------------


def class_balanced_weights(samples_per_class: Any, beta: float = 0.9999) -> Array:
    """Per-class weights from the effective number of samples (Cui et al. 2019).

    Formula: the effective number of ``n`` samples is ``E_n = (1 - beta^n) / (1 - beta)``;
    ``w_c = 1 / E_{n_c}``, normalised so that ``sum_c w_c = C``. ``beta = 0`` gives equal
    weights, ``beta -> 1`` inverse class frequency (``beta = 1`` is taken as that limit).
    Pass the result as ``weight=`` to :func:`softmax_cross_entropy` (or as per-class
    ``weight`` of any loss).

    Args:
        samples_per_class: positive counts ``n_c``, shape ``(C,)`` (array or sequence).
        beta: in [0, 1] (0.9, 0.99, 0.999, 0.9999 in the paper).

    Returns:
        Weights of shape ``(C,)`` summing to ``C``, in the namespace of
        ``samples_per_class`` (NumPy for a Python sequence), floating.

    Raises:
        ValueError: ``beta`` outside [0, 1], counts not a non-empty 1-D array of positive
            numbers.

    Example:
        >>> class_balanced_weights([10, 100, 1000], beta=0.99).round(4)
        array([2.4068, 0.363 , 0.2301])

    Aliases: "class-balanced loss" (CB loss) weights; ``effective number of samples``.

    References: Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples",
    CVPR (arXiv:1901.05555).
    """
    beta = _checks.unit_interval(beta, "beta")
    if isinstance(samples_per_class, (list, tuple)):
        import numpy as np

        n = np.asarray(samples_per_class, dtype=np.float64)
        xp = A.namespace(n)
    else:
        xp = A.namespace(samples_per_class)
        n = samples_per_class
        if not A.is_floating(xp, n):
            n = xp.astype(n, xp.asarray(0.0, device=A.device_of(n)).dtype)
    if n.ndim != 1 or n.shape[0] == 0:
        raise ValueError(
            f"samples_per_class must be a non-empty 1-D array of counts, got shape "
            f"{tuple(n.shape)}"
        )
    if _checks.any_true(xp, ~(n > 0)):
        raise ValueError(
            f"samples_per_class must be positive counts, got a minimum of {float(xp.min(n))}"
        )
    if _checks.is_traced(beta):
        # the three cases as where() branches, each fed a safe beta so no NaN leaks through
        mid = (beta > 0) & (beta < 1)
        b = xp.where(mid, beta, xp.full_like(beta, 0.5))
        w = xp.where(beta == 1, 1.0 / n,
                     xp.where(mid, (1.0 - b) / -xp.expm1(n * xp.log(b)), xp.ones_like(n)))
    elif beta == 1.0:
        w = 1.0 / n
    elif beta == 0.0:
        w = xp.ones_like(n)
    else:
        # (1 - beta) / (1 - beta^n), with expm1: exact for beta close to 1
        w = (1.0 - beta) / -xp.expm1(n * math.log(beta))
    return w * (n.shape[0] / xp.sum(w))
