"""Focal losses (Lin et al. 2017): cross-entropy scaled by ``(1 - p_t)^gamma`` so that easy,
well-classified examples contribute little and training focuses on the hard ones.

Focal Loss puts a coefficient in front of each CE term: the RetinaNet form is
``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)`` (Lin et al. 2017, arXiv:1708.02002, eq. (5)),
and mmdetection implements it as ``py_sigmoid_focal_loss`` (https://mmdetection.readthedocs.io).
The modulation is computed in log space here,
``(1 - p_t)^gamma = exp(gamma * log(1 - p_t))``, so that loss and gradient stay finite for
logits of any finite size, and ``gamma = 0`` gives exactly 1 (so the loss is exactly the
cross-entropy, ``0^0 = 1`` as in PyTorch).
"""

from __future__ import annotations

import math
from typing import Any

from . import _array as A
from . import _checks
from ._reduce import avg_denominator, grad_scale, masked, reduce
from .classification import _binary_targets, _broadcast_weight
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss"]


# --- sigmoid focal loss ---------------------------------------------------------------------


def _power(xp: Any, g: Any, log_q: Array, one: Array) -> Array:
    """``q^g = exp(g log q)`` with ``0^0 = 1``; ``g`` a float or a traced scalar."""
    if not _checks.is_traced(g) and g == 0:
        return one
    return xp.exp(A.mul0(xp, g, log_q))


def _plogp_ratio(xp: Any, d: Array) -> Array:
    """``k(d) = -p log p / (1 - p)`` for ``p = sigma(d)``, i.e. ``e^d softplus(-d)``, in
    [0, 1] (-> 1 as p -> 1). In terms of ``u = exp(-|d|)``: ``k = log1p(u) / u`` for
    ``d >= 0`` and ``k = u (|d| + log1p(u))`` for ``d < 0``; both branches are the same
    analytic function, so their derivatives are exact too."""
    zero = xp.zeros_like(d)
    u = xp.exp(A.neg_abs(xp, d))
    u_pos = xp.where(u > 0, u, xp.ones_like(u))
    k_pos = xp.where(u > 0, xp.log1p(u_pos) / u_pos, xp.ones_like(u))
    k_neg = xp.where(u > 0, u * (xp.abs(xp.where(u > 0, d, zero)) + xp.log1p(u)), zero)
    return xp.where(d >= 0, k_pos, k_neg)


@loss(wrt=("logits", "targets"),
      torch="crossent.torch.fast_paths:sigmoid_focal_loss")
def sigmoid_focal_loss(need: tuple[str, ...], logits: Array, targets: Array, *,
                       alpha: float | None = 0.25, gamma: float = 2.0,
                       weight: Array | None = None, avg_factor: Any = None,
                       where: Array | None = None,
                       reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Sigmoid focal loss (RetinaNet): binary cross-entropy scaled by ``(1 - p_t)^gamma``.

    Formula: with ``p = sigma(x)``, ``p_t = p t + (1 - p)(1 - t)`` and
    ``alpha_t = alpha t + (1 - alpha)(1 - t)``:
    ``FL = -alpha_t (1 - p_t)^gamma [t log p + (1 - t) log(1 - p)]``, i.e.
    ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)`` for 0/1 targets. ``(1 - p_t)^gamma`` is
    computed as ``exp(gamma log(1 - p_t))`` with ``log(1 - p_t)`` a log-sum-exp of log-sigmoids,
    so it is exact and finite for logits of any finite size; ``gamma = 0`` gives exactly the
    (alpha-weighted) sigmoid cross-entropy.
    Gradient: with ``ce`` the sigmoid cross-entropy, ``q = 1 - p_t = t (1-p) + (1-t) p`` and
    ``dq/dx = (1 - 2t) p (1 - p)``:
    ``alpha_t (1 - p_t)^gamma [(p - t) + gamma (1 - 2t) ce p (1 - p) / (1 - p_t)]``, where
    ``p (1 - p) / q`` lies in [0, 1] (so it is finite even for ``gamma < 1``). W.r.t. the
    targets (``dq/dt = 1 - 2p``, ``d ce / dt = -x``):
    ``(2 alpha - 1) ce q^gamma + alpha_t q^gamma [-x + gamma ce (1 - 2p) / q]``, the last ratio
    formed from bounded pieces. Both are the backward on every backend
    (:func:`crossent.value_and_grad`, torch autograd, ``jax.grad``).

    Args:
        logits: floating array of any shape, one independent score per element (e.g.
            ``(N, C)`` one-vs-rest class scores, or RetinaNet's ``(N, A, C)`` anchors).
        targets: probabilities in [0, 1] (soft targets allowed) or 0/1 integers, same shape.
        alpha: weight of the positive term in [0, 1] (``1 - alpha`` for the negative term);
            ``None`` disables the weighting. Default 0.25 (the paper, torchvision, mmdet).
        gamma: focusing parameter ``>= 0``; 0 gives cross-entropy. Default 2.
        weight: optional element weights broadcastable to ``logits`` (mmdet's per-element
            ``weight``; a per-row weight of shape ``(N,)`` for ``(N, C)`` logits is
            ``weight[:, None]``). They multiply the element losses and do not enter the
            mean's denominator.
        avg_factor: optional non-negative number replacing the mean's denominator, as
            mmdet's ``weight_reduce_loss``: "mean" is ``sum / (avg_factor + eps)`` with
            ``eps`` float32's machine epsilon (RetinaNet divides by the number of positive
            anchors). Ignored for "none"; an error with "sum".
        reduction: ``"mean"`` over all elements (as torchvision), ``"sum"`` or ``"none"``.

    Returns:
        Scalar or element-wise losses, in the logits' dtype (fp16/bf16 computed in fp32).

    Raises:
        TypeError: non-floating logits.
        ValueError: negative ``gamma``, ``alpha`` outside [0, 1], targets outside [0, 1],
            shape mismatch, a ``weight`` that does not broadcast, a negative ``avg_factor``
            or one given with ``reduction="sum"``, unknown reduction.

    Example (the paper's point: at p_t = 0.9, gamma = 2 gives 1/100 of the cross-entropy):
        >>> import numpy as np, crossent
        >>> x = np.log(np.array([9.0, 1.0 / 9.0]))        # p = 0.9, 0.1
        >>> t = np.array([1.0, 0.0])                        # p_t = 0.9 for both
        >>> fl = sigmoid_focal_loss(x, t, alpha=None, reduction="none")
        >>> (fl / -np.log(0.9)).round(6).tolist()
        [0.01, 0.01]
        >>> float(sigmoid_focal_loss(np.array([2.0, -1.0]), np.array([1, 1])).round(6))
        0.087959
        >>> _, g = crossent.value_and_grad(sigmoid_focal_loss)(
        ...     np.array([0.0]), np.array([1.0]), alpha=None, reduction="sum")
        >>> g.round(6).tolist()   # 0.25 * (-0.5 - 2 * log(2) * 0.25 / 0.5)
        [-0.298287]
        >>> float(sigmoid_focal_loss(np.array([2.0, -1.0]), np.array([1, 1]),
        ...                          avg_factor=1).round(6))   # the sum over 1 positive
        0.175918

    Aliases: torchvision ``ops.sigmoid_focal_loss`` (same defaults, but its default reduction
    is "none"); mmdet ``py_sigmoid_focal_loss`` / ``FocalLoss(use_sigmoid=True)``; Optax
    ``sigmoid_focal_loss`` (element-wise, ``alpha=None`` default); detectron2/fvcore
    ``sigmoid_focal_loss``; Keras ``BinaryFocalCrossentropy(apply_class_balancing=True,
    from_logits=True)`` (Keras averages over the last axis, so its value is this loss with
    ``reduction="none"`` averaged over ``axis=-1``, and it clips probabilities at 1e-7).

    References: Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection",
    ICCV 2017 (arXiv:1708.02002), eq. (5) and appendix B (its derivative, which the gradient
    here reduces to for 0/1 targets); torchvision.ops.sigmoid_focal_loss; mmdet
    ``py_sigmoid_focal_loss`` (https://mmdetection.readthedocs.io).
    """
    # With p = sigma(x) and q = 1 - p_t = t (1 - p) + (1 - t) p (valid for soft t):
    #
    # * ce = -t log p - (1 - t) log(1 - p), d ce / dx = p - t, d ce / dt = log(1-p) - log p = -x;
    # * log q = logaddexp(log t + log sigma(-x), log(1 - t) + log sigma(x)), with the
    #   t = 0 / t = 1 cases taken exactly (log q = log sigma(x) / log sigma(-x)) so no log 0 is
    #   ever formed;
    # * M = q^gamma = exp(gamma log q) and, since dq/dx = (1 - 2t) p (1 - p),
    #   dM/dx = gamma (1 - 2t) M r with r = p (1 - p) / q. q is a convex combination of p and
    #   1 - p, so q >= min(p, 1 - p) >= p (1 - p) and 0 <= r <= 1: the q^(gamma - 1) that
    #   blows up for gamma < 1 never appears on its own;
    # * dL/dx = alpha_t M [(p - t) + gamma (1 - 2t) ce r], r = exp(log p + log(1-p) - log q);
    # * dM/dt = gamma M (1 - 2p) / q, and ce (1 - 2p) / q = A (-log p - k(x)) + B (k(-x) +
    #   log(1 - p)) with the logaddexp weights A = t (1 - p) / q, B = (1 - t) p / q (in [0, 1],
    #   A + B = 1) and k(d) = -sigma(d) log sigma(d) / (1 - sigma(d)) in [0, 1]: every piece
    #   is bounded by 1 or by a log-sigmoid, so nothing blows up where q -> 0.
    xp, logits, targets = _checks.loss_inputs(reduction, logits=logits, targets=targets)
    g = _checks.non_negative(gamma, "gamma")
    a = None if alpha is None else _checks.unit_interval(alpha, "alpha")
    avg = _checks.avg_factor(avg_factor, reduction)
    focusing = _checks.is_traced(g) or g != 0
    x = A.upcast(xp, logits)
    t = _binary_targets(xp, targets, logits)
    w = _broadcast_weight(xp, weight, x, "weight")
    m = _checks.where_mask(xp, where, x.shape, None, x.dtype, A.device_of(x))
    log_p = -A.softplus(xp, -x)  # log sigma(x)
    log_1mp = -A.softplus(xp, x)  # log sigma(-x) = log(1 - p)
    # both terms >= 0: no cancellation; a zero target weight silences an infinite log (a
    # logit of +-inf with the matching target is a loss of exactly 0)
    if A.surely_finite(xp, x):  # log sigma(+-x) finite: plain products (fewer passes)
        ce = -(t * log_p + (1.0 - t) * log_1mp)
    else:
        ce = -(A.mul0(xp, t, log_p) + A.mul0(xp, 1.0 - t, log_1mp))
    one = xp.ones_like(t)
    pos, neg = t > 0, t < 1
    # xlogy-style: log t and log(1 - t) only where they are finite
    la = xp.log(xp.where(pos, t, one)) + log_1mp
    lb = xp.log(xp.where(neg, 1.0 - t, one)) + log_p
    log_q = xp.where(~pos, log_p, xp.where(~neg, log_1mp, xp.logaddexp(la, lb)))
    mod = _power(xp, g, log_q, one)
    alpha_t = None if a is None else a * t + (1.0 - a) * (1.0 - t)
    focal = ce * mod
    loss_ = focal if alpha_t is None else alpha_t * focal
    if w is not None:
        loss_ = loss_ * w
    loss_ = masked(xp, loss_, m)
    den = avg_denominator(xp, avg, x)
    if den is None and m is not None:
        den = xp.sum(m)  # the mean over the elements that take part
    out = A.cast_like(xp, reduce(xp, loss_, reduction, den), logits)
    if not need:
        return out, None
    scale = grad_scale(xp, loss_.shape, reduction, den)
    if w is not None:
        scale = scale * w
    zero = xp.zeros_like(log_q)
    # where q = 0 (a saturated logit with the matching target) ce is 0 too
    sat = log_q == -math.inf
    grads = {}
    if "logits" in need:
        p = A.sigmoid(xp, x)
        inner = p - t
        if focusing:
            # p (1 - p) / q, in [0, 1]; where q = 0 the term is 0
            r = xp.where(sat, zero, xp.exp(log_p + log_1mp - xp.where(sat, zero, log_q)))
            inner = inner + g * (1.0 - 2.0 * t) * (ce * r)
        grad = mod * inner
        if alpha_t is not None:
            grad = alpha_t * grad
        grads["logits"] = A.cast_like(xp, masked(xp, grad * scale, m), logits)
    if "targets" in need:
        inner = -x
        if focusing:
            # the logaddexp weights: exponents <= 0 for soft t, and formed only there (a
            # hard t's unused branch could overflow, and autograd would turn 0 * inf to NaN)
            soft = pos & neg
            w_a = xp.where(~neg, one, xp.where(~pos, zero, xp.exp(
                xp.where(soft, la - log_q, zero))))
            w_b = xp.where(~pos, one, xp.where(~neg, zero, xp.exp(
                xp.where(soft, lb - log_q, zero))))
            ratio = (A.mul0(xp, w_a, -log_p - _plogp_ratio(xp, x))
                     + A.mul0(xp, w_b, _plogp_ratio(xp, -x) + log_1mp))
            inner = inner + g * ratio
        # M = 0 silences an infinite inner term (x = +-inf with the matching target)
        grad = A.mul0(xp, mod, inner)
        if alpha_t is not None and a is not None:
            grad = alpha_t * grad + (2.0 * a - 1.0) * focal
        grads["targets"] = A.cast_like(xp, masked(xp, grad * scale, m), targets)
    return out, scaled_pullback(xp, grads, lambda c: c)


# --- softmax focal loss ---------------------------------------------------------------------


def _class_alpha(xp: Any, alpha: Any, num_classes: int, dt: Any, dev: Any) -> Any:
    """None, a non-negative scalar, or one non-negative weight per class."""
    if alpha is None:
        return None
    if not isinstance(alpha, (list, tuple)) and getattr(alpha, "ndim", 0) == 0:
        return _checks.non_negative(alpha, "alpha")
    a = _checks.class_weight(xp, alpha, num_classes, dt, dev, "alpha")
    if A.concrete(a) and bool(xp.any(~(a >= 0))):
        raise ValueError(f"alpha must hold non-negative class weights, got {alpha!r}")
    return a


@loss(wrt=("logits", "targets"))
def softmax_focal_loss(need: tuple[str, ...], logits: Array, targets: Array, *,
                       alpha: Any = None, gamma: float = 2.0, axis: int = -1,
                       ignore_index: int = -100, weight: Array | None = None,
                       avg_factor: Any = None, where: Array | None = None,
                       reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Softmax (categorical) focal loss: softmax cross-entropy with each class term scaled
    by ``alpha_c (1 - p_c)^gamma``.

    Formula: with ``p = softmax(z)`` along ``axis``,
    ``FL = -sum_c alpha_c (1 - p_c)^gamma t_c log p_c``; for an integer label ``y`` that is
    ``-alpha_y (1 - p_y)^gamma log p_y``. ``log p_c`` and ``log(1 - p_c)`` are both computed
    exactly from ``d_c = z_c - logsumexp_{j != c} z_j`` (``p_c = sigma(d_c)``), and
    ``(1 - p_c)^gamma = exp(gamma log(1 - p_c))``, so loss and gradient are finite for any
    finite logits; ``gamma = 0`` with ``alpha=None`` is exactly softmax cross-entropy.
    Gradient: ``g_j = v_j - p_j sum_c v_c`` with
    ``v_c = -alpha_c t_c (1 - p_c)^gamma (1 + gamma k_c)``, ``k_c = -p_c log p_c / (1 - p_c)``
    in [0, 1]; times ``1 / (number of non-ignored positions)`` for "mean". ``gamma = 0``
    gives ``p sum_c(alpha_c t_c) - alpha t``. W.r.t. probability targets (the loss is linear
    in them): ``-alpha_c (1 - p_c)^gamma log p_c``. Both are the backward on every backend
    (:func:`crossent.value_and_grad`, torch autograd, ``jax.grad``).

    Args:
        logits: floating array, classes along ``axis``, e.g. ``(N, C)`` or ``(N, C, d1...)``
            with ``axis=1``.
        targets: integer class indices with the shape of ``logits`` minus ``axis``, or
            floating class probabilities (one-hot or soft) with the shape of ``logits``.
        alpha: ``None`` (no weighting, the default), a non-negative scalar applied to every
            class (Keras' default is 0.25), or one non-negative weight per class, shape
            ``(C,)``.
        gamma: focusing parameter ``>= 0``; 0 gives (alpha-weighted) cross-entropy.
        axis: the class axis (``-1`` by default; ``1`` for PyTorch layouts).
        ignore_index: integer targets equal to it contribute neither loss nor gradient.
        weight: optional per-position weights broadcastable to the shape of ``logits``
            without ``axis`` (mmdet's per-row ``weight``, e.g. ``(N,)``); they multiply the
            position losses and do not enter the mean's denominator.
        avg_factor: optional non-negative number replacing the mean's denominator:
            "mean" is ``sum / (avg_factor + eps)``, ``eps`` float32's machine epsilon, as
            mmdet's ``weight_reduce_loss``. Ignored for "none"; an error with "sum".
        where: optional mask of the elements that take part (Optax's ``where``), as for
            :func:`crossent.softmax_cross_entropy`: masked classes leave the softmax and the
            sum (a label whose class is masked scores nothing), a position with no class
            left counts nowhere.
        reduction: ``"mean"`` over examples (over non-ignored positions for integer targets,
            0 when all are ignored; alpha and ``weight`` do not enter the denominator),
            ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or the per-position losses for ``reduction="none"``; in the logits' dtype
        (fp16/bf16 inputs are computed in fp32).

    Raises:
        TypeError: non-floating logits, or targets neither integer nor floating.
        ValueError: negative ``gamma``, bad ``alpha`` (negative or wrong shape), shape
            mismatch, a ``weight`` that does not broadcast, a negative ``avg_factor`` or one
            given with ``reduction="sum"``, label out of range, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> z = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
        >>> softmax_focal_loss(z, np.array([0, 2]), reduction="none").round(6)
        array([0.011093, 0.401258])
        >>> float(softmax_focal_loss(z, np.array([0, -100])).round(6))   # one ignored
        0.011093
        >>> _, g = crossent.value_and_grad(softmax_focal_loss)(np.array([[0.0, 0.0]]),
        ...                                                    np.array([1]))
        >>> g.round(6).tolist()   # v_1 = -0.25 (1 + 2 log 2), g = v_1 ([0, 1] - p)
        [[0.298287, -0.298287]]

    Aliases: Keras ``CategoricalFocalCrossentropy(from_logits=True)`` /
    ``categorical_focal_crossentropy`` (default ``alpha=0.25``; its "sum_over_batch_size" is
    our "mean"; it has no ``ignore_index`` and clips probabilities at 1e-7); kornia
    ``losses.focal_loss`` (scalar alpha); mmdet ``FocalLoss(use_sigmoid=False)``, which
    mmdetection leaves unimplemented (https://mmdetection.readthedocs.io):
    :class:`crossent.torch.nn.FocalLoss` runs this loss for it.

    References: Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection",
    ICCV 2017 (arXiv:1708.02002), section 3 ("extending the focal loss to the multi-class case
    is straightforward"); Keras docs of ``CategoricalFocalCrossentropy``.
    """
    # Each class probability is a sigmoid of a logit difference: p_c = sigma(d_c) with
    # d_c = z_c - logsumexp_{j != c} z_j. So log p_c = -softplus(-d_c) and
    # log(1 - p_c) = -softplus(d_c) are both exact in relative terms, even where p_c rounds
    # to 1 (z = [30, 0]: log p = z - lse would keep only ~2 digits of 1 - p, and at
    # z = [1e4, 0] would give log(1 - p) = -inf). logsumexp_{j != c} is m + log(S - e_c) with
    # e = exp(z - m), S = sum e; S - e_c >= S / 2 for every class but the arg-max (no
    # cancellation), whose leave-one-out sum is summed directly.
    #
    # Gradient: f_c = -a_c t_c (1 - p_c)^g log p_c and dp_c/dz_j = p_c ([c=j] - p_j) give
    # grad_j = v_j - p_j sum_c v_c with v_c = p_c df_c/dp_c
    # = a_c t_c [g (1-p_c)^(g-1) p_c log p_c - (1-p_c)^g] = -a_c t_c (1-p_c)^g (1 + g k_c),
    # k_c = -p_c log p_c / (1 - p_c) in [0, 1] (-> 1 as p -> 1): the (1 - p)^(g - 1) that
    # diverges for g < 1 is absorbed analytically (see _plogp_ratio).
    xp, logits, targets = _checks.loss_inputs(reduction, logits=logits, targets=targets)
    g = _checks.non_negative(gamma, "gamma")
    avg = _checks.avg_factor(avg_factor, reduction)
    ax = _checks.class_axis(logits, axis)
    z = A.upcast(xp, A.move_axis_last(xp, logits, ax))
    dt = z.dtype
    num_classes = z.shape[-1]
    dev = A.device_of(z)
    a = _class_alpha(xp, alpha, num_classes, dt, dev)
    cm = _checks.where_mask(xp, where, logits.shape, ax, dt, dev)
    rows = None  # 1 where a position has a class left (None: no mask)

    denom = None
    if A.is_integer(xp, targets):
        _checks.class_labels(xp, targets, logits, ax, ignore_index)
        validf, safe = A.label_mask(xp, targets, ignore_index, dt, num_classes)
        z = A.zero_ignored_rows(xp, z, targets, ignore_index)
        t = A.one_hot_mask(xp, safe, num_classes, dt) * validf[..., None]
        denom = xp.sum(validf)
    else:
        _checks.floating(xp, targets, "targets")
        _checks.same_shape(logits, targets, "logits", "targets")
        _checks.in_unit_interval(xp, targets, "targets")
        t = A.as_float(xp, A.upcast(xp, A.move_axis_last(xp, targets, ax)), dt)
    if cm is not None:
        # a masked class is a -inf logit with target 0 (out of the softmax, no term), which
        # the algorithm below already takes exactly; a position with no class left is zeroed
        cm = A.move_axis_last(xp, cm, ax)
        z, rows = A.mask_classes(xp, z, cm)
        t = t * cm
        denom = xp.sum(rows) if denom is None else xp.sum(validf * rows)

    m = xp.max(z, axis=-1, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    e = xp.exp(z - m)
    s = xp.sum(e, axis=-1, keepdims=True)
    top = A.one_hot_mask(xp, xp.argmax(z, axis=-1), num_classes, dt)
    rest_top = xp.sum(e * (1.0 - top), axis=-1, keepdims=True)
    rest = xp.where(top > 0, rest_top, s - e)
    # an all-underflowed (or C = 1) leave-one-out sum: clamp so log stays finite (and so
    # autograd sees no log 0); it changes 1 - p only below the smallest normal number
    tiny = xp.full_like(rest, xp.finfo(dt).smallest_normal)
    d = (z - m) - xp.log(xp.maximum(rest, tiny))
    # -log p_c, and exactly 0 where p_c rounds to 1 (C = 1, or every other class underflowed)
    nll = xp.where(rest > 0, A.softplus(xp, -d), xp.zeros_like(d))
    mod = _power(xp, g, -A.softplus(xp, d), xp.ones_like(d))  # (1 - p_c)^g
    at = t * a if a is not None else t
    # 0 * (-log p) = 0 even where a logit is -inf (a masked class with target 0)
    loss_ = xp.sum(mod * A.mul0(xp, at, nll), axis=-1)
    w = _broadcast_weight(xp, weight, loss_, "weight")
    if w is not None:
        loss_ = loss_ * w
    if avg is not None:
        denom = avg_denominator(xp, avg, loss_)
    out = A.cast_like(xp, reduce(xp, loss_, reduction, denom), logits)
    if not need:
        return out, None
    scale = grad_scale(xp, loss_.shape, reduction, denom)
    if w is not None:
        scale = scale * w[..., None]
    grads = {}
    if "logits" in need:
        coef = mod
        if _checks.is_traced(g) or g != 0:
            coef = mod * (1.0 + g * _plogp_ratio(xp, d))
        v = -(at * coef)
        p = e / s
        grad = v - p * xp.sum(v, axis=-1, keepdims=True)
        grads["logits"] = A.cast_like(xp, A.move_axis_back(xp, grad * scale, ax), logits)
    if "targets" in need:  # probability targets: the loss is linear in them
        gt = mod * nll if a is None else a * (mod * nll)
        gt = masked(xp, gt * scale, cm)  # a masked class's -log p = inf takes no part
        grads["targets"] = A.cast_like(xp, A.move_axis_back(xp, gt, ax), targets)
    return out, scaled_pullback(xp, grads, lambda c: xp.expand_dims(c, axis=ax))
