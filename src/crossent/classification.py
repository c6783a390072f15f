"""Classification losses on logits: softmax and sigmoid cross-entropy, BCE, and two
counter-examples (mean squared error, 0-1 classification error) that show why classifiers are
trained with cross-entropy.

The usual naming: *Cross-Entropy* (alias Logistic / Multinomial Logistic Loss) is
``-sum_i t_i log(s_i)`` on probabilities; *Categorical Cross-Entropy* (alias Softmax Loss) is
softmax followed by it, for mutually exclusive classes; *Binary Cross-Entropy* (alias Sigmoid
Cross-Entropy) applies a sigmoid to each score independently, for binary and multi-label tasks.
"""

from __future__ import annotations

from typing import Any

from . import _array as A
from . import _checks
from ._axes import over_axes
from ._reduce import grad_scale, masked, reduce
from .activations import _lse, _lse_parts
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = [
    "softmax_cross_entropy",
    "sigmoid_cross_entropy",
    "binary_cross_entropy",
    "mean_squared_error",
    "classification_error",
]


# --- softmax cross-entropy ------------------------------------------------------------------


@loss(wrt=("logits", "targets"),
      torch="crossent.torch.cross_entropy:softmax_cross_entropy_rows",
      numpy="crossent._numpy_fast:softmax_cross_entropy",
      jax="crossent._jax_kernel:softmax_cross_entropy")
def softmax_cross_entropy(need: tuple[str, ...], logits: Array, targets: Array, *,
                          axis: int | tuple[int, ...] = -1, weight: Array | None = None,
                          sample_weight: Array | None = None,
                          ignore_index: int = -100, label_smoothing: float = 0.0,
                          where: Array | None = None,
                          reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Softmax (categorical) cross-entropy on logits: the "Softmax Loss".

    Formula: with ``log p = s - logsumexp(s)`` along ``axis``,
    ``l = -sum_c w_c t_c log p_c``; for an integer label ``y`` that is ``-w_y log p_y``, and
    with label smoothing ``eps`` the target is ``(1 - eps) * onehot(y) + eps / C``.
    Per-position weights ``s_i`` multiply each position's loss, and "mean" is
    ``sum_i s_i w_{y_i} l_i / sum_i s_i w_{y_i}`` over the non-ignored positions
    (``sum_i s_i l_i / sum_i s_i`` for probability targets).
    Gradient w.r.t. the logits: ``s (p sum_c(w_c t_c) - w t)`` (``p - onehot(y)`` without
    options), times ``1 / sum_i s_i w_{y_i}`` for "mean"; w.r.t. probability targets:
    ``(1 - eps) w_c (logsumexp(s) - s_c)``. Both are the backward on every backend
    (:func:`crossent.value_and_grad`, torch autograd, ``jax.grad``).

    Args:
        logits: floating array, classes along ``axis``, e.g. ``(N, C)`` or ``(N, C, d1...)``
            with ``axis=1``.
        targets: integer class indices with the shape of ``logits`` minus ``axis``, or
            floating class probabilities with the shape of ``logits``.
        axis: the class axis (``-1`` by default; ``1`` for PyTorch layouts), or a tuple of
            axes that together hold the classes (Optax's ``axis=(1, 2)``: integer labels
            then index the flattened classes, and ``weight`` has one entry per flattened
            class).
        weight: optional per-class weights, shape ``(C,)``.
        sample_weight: optional per-position weights (e.g. per token), broadcastable to
            the shape of the per-position losses (``logits`` without ``axis``). They enter
            the mean's denominator, unlike ``weight`` for probability targets; a zero weight
            removes its position from the value, the mean and the gradient, and when every
            counted position has weight 0 "mean" is 0.
        ignore_index: integer targets equal to it contribute neither loss nor gradient.
        label_smoothing: ``eps`` in [0, 1].
        where: optional mask of the elements that take part (Optax's ``where``): the
            logits' shape (masked classes leave the softmax's normaliser, the target
            distribution and the smoothing mass) or one value per position (a masked
            position has loss 0). Positions without an element left count neither in the
            value nor in the mean, and get no gradient; as in Optax, an integer label still
            scores its own logit when its class is masked.
        reduction: ``"mean"`` (weighted mean over non-ignored positions, as PyTorch; 0 when
            all are ignored), ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or the per-position losses for ``reduction="none"``; in the logits' dtype
        (fp16/bf16 inputs are computed in fp32).

    Raises:
        TypeError: non-floating logits; arrays from two different array libraries.
        ValueError: shape mismatch, label out of range, bad ``label_smoothing``,
            ``ignore_index``, ``weight``, ``sample_weight`` or ``reduction``;
            ``reduction="mean"`` with weights whose products at the non-ignored targets
            sum to 0 while some are not 0 (the weighted mean is undefined; PyTorch returns
            NaN).

    Under ``jax.jit`` values cannot be checked: a label out of range gives NaN at its position
    (and in the mean), as do zero-sum class weights, instead of an error. Options may be
    traced there too (``label_smoothing`` as a jitted argument). Targets and weights from
    NumPy or Python lists are converted to the logits' library.

    Example (the TensorFlow verification table's softmax rows):
        >>> import numpy as np
        >>> logits = np.array([[0.7, 1.2, 0.3], [0.4, 0.2, 0.9], [0.6, 0.3, 0.4]])
        >>> softmax_cross_entropy(logits, np.array([1, 2, 0]), reduction="none").round(6)
        array([0.699676, 0.74342 , 0.939831])

    Given torch tensors it runs :func:`crossent.torch.cross_entropy`, the fused autograd
    Function (same numbers, a fraction of the time and memory of ``F.cross_entropy``),
    registered as this loss's torch implementation.

    Aliases: Softmax Loss, Categorical Cross-Entropy, Multinomial Logistic Loss (with softmax);
    PyTorch ``CrossEntropyLoss`` / ``F.cross_entropy``; TF
    ``softmax_cross_entropy_with_logits`` / ``sparse_softmax_cross_entropy_with_logits``;
    Keras ``categorical_crossentropy(from_logits=True)``; Caffe ``SoftmaxWithLoss``; Optax
    ``softmax_cross_entropy`` / ``softmax_cross_entropy_with_integer_labels``.

    References: Bridle 1990; Goodfellow et al., *Deep Learning* 6.2.2.3; PyTorch docs of
    ``torch.nn.CrossEntropyLoss``.
    """
    # Both target kinds are l = sum_c w_c q_c (lse - z_c) for a target distribution q
    # ((1 - eps) onehot(y) + eps / C for a label). Each product is formed before the difference
    # (a lse - a z_c), so logits near the float limit, whose lse - z_c would overflow, still
    # give the representable loss.
    if isinstance(axis, tuple):
        return over_axes(softmax_cross_entropy.with_pullback, need,
                         {"logits": logits, "targets": targets}, ("logits", "targets"), axis,
                         {"weight": weight, "sample_weight": sample_weight,
                          "ignore_index": ignore_index, "label_smoothing": label_smoothing,
                          "where": where, "reduction": reduction})
    xp, logits, targets = _checks.loss_inputs(reduction, logits=logits, targets=targets)
    eps = _checks.unit_interval(label_smoothing, "label_smoothing")
    smoothing = _checks.is_traced(eps) or eps > 0
    ignored = _checks.index(ignore_index, "ignore_index", allow_none=True)
    ax = _checks.class_axis(logits, axis)
    z = A.upcast(xp, A.move_axis_last(xp, logits, ax))
    dt = z.dtype
    num_classes = z.shape[-1]
    dev = A.device_of(z)
    w = _checks.class_weight(xp, weight, num_classes, dt, dev)
    sw = _checks.sample_weight(xp, sample_weight, z.shape[:-1], dt, dev)
    cm = _checks.where_mask(xp, where, logits.shape, ax, dt, dev)
    rowmask = None
    z_norm = z  # what the softmax normalises: the logits of the classes that take part
    if cm is not None:
        cm = A.move_axis_last(xp, cm, ax)
        z_norm, rowmask = A.mask_classes(xp, z, cm)
        sw = rowmask if sw is None else sw * rowmask
    weights_name = " and ".join(n for n, v in (("weight", w), ("sample_weight", sample_weight),
                                               ("where", cm)) if v is not None) or "weight"
    grads = {}

    if A.is_integer(xp, targets):
        _checks.class_labels(xp, targets, logits, ax, ignored)
        validf, safe = A.label_mask(xp, targets, ignored, dt, num_classes)
        z = A.zero_ignored_rows(xp, z, targets, ignored)
        z_norm = z if cm is None else A.zero_ignored_rows(xp, z_norm, targets, ignored)
        lse, e, s = _lse_parts(xp, z_norm, -1)
        # every per-position factor: the ignore mask, times the sample weight
        rowf = validf if sw is None else validf * sw
        wy = xp.reshape(xp.take(w, xp.reshape(safe, (-1,)), axis=0), safe.shape) * rowf \
            if w is not None else rowf
        c1 = (1.0 - eps) * wy
        zy = A.take_class(xp, z, safe)
        loss_ = c1 * lse[..., 0] - c1 * zy
        wc = w if w is not None else xp.ones((num_classes,), dtype=dt, device=dev)
        if cm is not None:
            wc = wc * cm  # masked classes carry no smoothing mass
        if smoothing:
            a = (eps / num_classes) * wc
            az = a * z if cm is None else A.mul0(xp, a, z)  # a masked -inf logit adds 0
            loss_ = loss_ + rowf * xp.sum(a * lse - az, axis=-1)
        denom = xp.sum(wy)
        if (w is not None or sw is not None) and reduction == "mean":
            counted = validf if sw is None else validf * xp.astype(sw != 0, dt)
            denom = _checks.mean_denominator(xp, denom, xp.sum(counted), weights_name)
        out = A.cast_like(xp, reduce(xp, loss_, reduction, denom), logits)
        if "logits" in need:
            # softmax = e / s from the forward's exps; every row factor (the weights, the
            # smoothing mass, the mean's 1 / denominator) folded into one multiply
            scale = grad_scale(xp, loss_.shape, reduction, denom)
            w_sum = xp.sum(wc, axis=-1)
            coef = (c1 + (eps / num_classes) * w_sum * rowf) * scale
            g = A.add_at_class(xp, e * (coef[..., None] / s), safe, -(c1 * scale))
            if smoothing:
                g = g - ((eps / num_classes) * scale * rowf)[..., None] * wc
            grads["logits"] = g
    else:
        _checks.floating(xp, targets, "targets")
        _checks.same_shape(logits, targets, "logits", "targets")
        _checks.in_unit_interval(xp, targets, "targets")
        lse = _lse(xp, z_norm, -1, True)
        t = A.as_float(xp, A.upcast(xp, A.move_axis_last(xp, targets, ax)), dt)
        if smoothing:
            t = (1.0 - eps) * t + eps / num_classes
        if cm is not None:
            t = t * cm  # masked classes are no part of the target distribution
        wt = t * w if w is not None else t
        # a zero target weight silences a -inf logit (a masked class) instead of making NaN
        loss_ = xp.sum(A.mul0(xp, wt, lse) - A.mul0(xp, wt, z), axis=-1)
        denom = None
        if sw is not None:
            loss_ = loss_ * sw
            denom = xp.sum(sw)
            if reduction == "mean":
                denom = _checks.mean_denominator(
                    xp, denom, xp.sum(xp.astype(sw != 0, dt)), weights_name)
        out = A.cast_like(xp, reduce(xp, loss_, reduction, denom), logits)
        scale = grad_scale(xp, loss_.shape, reduction, denom)
        if sw is not None:
            scale = scale * sw[..., None]
        if "logits" in need:
            p = xp.exp(z_norm - lse)
            grads["logits"] = (p * xp.sum(wt, axis=-1, keepdims=True) - wt) * scale
        if "targets" in need:
            # d l / d t_c = (1 - eps) w_c (lse - z_c), formed as a product difference again
            a = (1.0 - eps) * (w if w is not None else 1.0)
            gt = a * lse - a * z
            grads["targets"] = masked(xp, gt, cm) * scale
    if not need:
        return out, None
    like = {"logits": logits, "targets": targets}
    grads = {k: A.cast_like(xp, A.move_axis_back(xp, g, ax), like[k]) for k, g in grads.items()}
    return out, scaled_pullback(xp, grads, lambda c: xp.expand_dims(c, axis=ax))


# --- sigmoid (binary) cross-entropy ---------------------------------------------------------


def _binary_targets(xp: Any, targets: Array, like: Array, name: str = "targets") -> Array:
    if not A.is_floating(xp, targets):
        targets = xp.astype(targets, like.dtype)  # {0, 1} integer or bool labels
    _checks.same_shape(like, targets, "logits", name)
    _checks.in_unit_interval(xp, targets, name)
    return A.as_float(xp, A.upcast(xp, targets), A.compute_dtype(xp, like))


def _broadcast_weight(xp: Any, weight: Array | None, like: Array, name: str) -> Array | None:
    if weight is None:
        return None
    w = A.as_array(xp, weight, like.dtype, A.device_of(like))
    try:
        return xp.broadcast_to(w, like.shape)
    except (ValueError, RuntimeError) as e:
        raise ValueError(
            f"{name} of shape {tuple(w.shape)} does not broadcast to {tuple(like.shape)}"
        ) from e


@loss(wrt=("logits", "targets"),
      torch="crossent.torch.fast_paths:sigmoid_cross_entropy")
def sigmoid_cross_entropy(need: tuple[str, ...], logits: Array, targets: Array, *,
                          weight: Array | None = None, pos_weight: Array | None = None,
                          sample_weight: Array | None = None, where: Array | None = None,
                          reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Sigmoid (binary) cross-entropy on logits, for binary and multi-label tasks.

    Formula (TensorFlow's stable form): ``l = max(x, 0) - x z + log(1 + exp(-|x|))``, equal to
    ``-z log sigma(x) - (1 - z) log(1 - sigma(x))``; with ``pos_weight`` ``p_w``:
    ``l = p_w z softplus(-x) + (1 - z) softplus(x)``. Gradient w.r.t. the logits:
    ``sigma(x) - z``, and ``w [(1 - z) sigma(x) - p_w z (1 - sigma(x))]`` with the weights;
    w.r.t. probability targets: ``-x``, and ``w [p_w softplus(-x) - softplus(x)]`` with the
    weights; times ``1 / N`` for "mean" (``1 / sum(s)`` with sample weights ``s``). Both are
    the backward on every backend (:func:`crossent.value_and_grad`, torch autograd,
    ``jax.grad``).

    Args:
        logits: floating array of any shape (one independent score per element).
        targets: probabilities in [0, 1] (or 0/1 integers), same shape as ``logits``.
        weight: optional element weights broadcastable to ``logits``.
        pos_weight: optional weight of the positive term, broadcastable to ``logits`` (a
            per-class vector for ``(N, C)`` multi-label logits).
        sample_weight: optional per-element weights broadcastable to ``targets`` (per row of
            ``(N, C)`` logits: shape ``(N, 1)``). Each loss is multiplied by its weight, and
            "mean" becomes the weighted mean ``sum(s w l) / sum(s)`` (0 when every weight is
            0), where ``weight`` keeps PyTorch's meaning, a rescaling that leaves the
            denominator alone.
        where: optional mask broadcastable to ``logits`` of the elements that take part
            (Optax's ``where``): the others add nothing to the value or the gradient, and
            "mean" averages over the elements left (with their sample weights).
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or element-wise losses, in the logits' dtype.

    Raises:
        TypeError: non-floating logits.
        ValueError: shape mismatch, targets outside [0, 1], unknown reduction; "mean" with
            sample weights that sum to 0 while some are not 0.

    Example (the TensorFlow verification table, row 0 with smoothed labels, 0.0333 at (0, 0)):
        >>> import numpy as np, crossent
        >>> x = np.array([[0.7, 1.2, 0.3]]); z = np.array([[1/30, 28/30, 1/30]])
        >>> sigmoid_cross_entropy(x, z, reduction="none").round(6)
        array([[1.079853, 0.343282, 0.844355]])
        >>> crossent.value_and_grad(sigmoid_cross_entropy)(np.array([0.0]), np.array([0.0]))[1]
        array([0.5])

    Aliases: Sigmoid Cross-Entropy, Binary Cross-Entropy (with logits), Logistic Loss; PyTorch
    ``BCEWithLogitsLoss`` / ``F.binary_cross_entropy_with_logits``; TF
    ``sigmoid_cross_entropy_with_logits``; Keras ``binary_crossentropy(from_logits=True)``;
    Caffe ``SigmoidCrossEntropyLoss``; Optax ``sigmoid_binary_cross_entropy``.

    References: TensorFlow docs of ``tf.nn.sigmoid_cross_entropy_with_logits`` (the stable
    formula), https://www.tensorflow.org/api_docs/python/tf/nn/sigmoid_cross_entropy_with_logits;
    PyTorch docs of ``BCEWithLogitsLoss``.
    """
    xp, logits, targets = _checks.loss_inputs(reduction, logits=logits, targets=targets)
    x = A.upcast(xp, logits)
    t = _binary_targets(xp, targets, logits)
    w = _broadcast_weight(xp, weight, x, "weight")
    pw = _broadcast_weight(xp, pos_weight, x, "pos_weight")
    sw = _checks.sample_weight(xp, sample_weight, x.shape, x.dtype, A.device_of(x))
    m = _checks.where_mask(xp, where, x.shape, None, x.dtype, A.device_of(x))
    denom = None
    if sw is not None or m is not None:
        if sw is not None:
            w = sw if w is None else w * sw
        counted = sw if m is None else (m if sw is None else sw * m)
        denom = xp.sum(counted)
        if reduction == "mean":
            denom = _checks.mean_denominator(
                xp, denom, xp.sum(xp.astype(counted != 0, x.dtype)),
                "sample_weight" if m is None else "sample_weight and where")
    # z softplus(-x) + (1 - z) softplus(x) equals TF's max(x, 0) - x z + log(1 + e^-|x|)
    # but adds two non-negative terms, so nothing cancels: at x = 60, z = 1 it gives e^-60
    # where softplus(x) - x z rounds to 0. A zero coefficient silences its term even at an
    # infinite logit: x = +inf with z = 1 is a loss of exactly 0, not 0 * inf = NaN.
    mul = (lambda a, b: a * b) if A.surely_finite(xp, x) else (lambda a, b: A.mul0(xp, a, b))
    loss_ = mul(t if pw is None else pw * t, A.softplus(xp, -x)) + mul(1.0 - t,
                                                                      A.softplus(xp, x))
    if w is not None:
        loss_ = loss_ * w
    loss_ = masked(xp, loss_, m)
    out = A.cast_like(xp, reduce(xp, loss_, reduction, denom), logits)
    if not need:
        return out, None
    scale = grad_scale(xp, loss_.shape, reduction, denom)
    grads = {}
    if "logits" in need:
        sig = A.sigmoid(xp, x)
        g = sig - t if pw is None else (1.0 - t) * sig - pw * t * (1.0 - sig)
        if w is not None:
            g = g * w
        grads["logits"] = A.cast_like(xp, masked(xp, g * scale, m), logits)
    if "targets" in need:
        # d l / d z = softplus(-x) - softplus(x), exactly -x (no rounding) without pos_weight
        g = -x if pw is None else pw * A.softplus(xp, -x) - A.softplus(xp, x)
        if w is not None:
            g = g * w
        grads["targets"] = A.cast_like(xp, masked(xp, g * scale, m), targets)
    return out, scaled_pullback(xp, grads, lambda c: c)


# --- binary cross-entropy on probabilities --------------------------------------------------

_LOG_FLOOR = -100.0  # PyTorch clamps log terms here so that p in {0, 1} stays finite


@loss(wrt=("probs", "targets"))
def binary_cross_entropy(need: tuple[str, ...], probs: Array, targets: Array, *,
                         weight: Array | None = None, reduction: str = "mean"
                         ) -> tuple[Array, Pullback | None]:
    """Binary cross-entropy on probabilities (not logits), finite at ``p`` in {0, 1}.

    Formula: ``l = -w [t log p + (1 - t) log(1 - p)]`` with each log clamped at -100, as
    PyTorch's ``BCELoss`` does. Prefer :func:`sigmoid_cross_entropy` on logits: it is exact
    where this one saturates. Gradient w.r.t. the probabilities (PyTorch's backward):
    ``w (p - t) / max(p (1 - p), 1e-12)``, finite at ``p`` in {0, 1}; w.r.t. the targets:
    ``-w [log p - log(1 - p)]`` with the same clamped logs; times ``1 / N`` for "mean".
    Both are the backward on every backend (:func:`crossent.value_and_grad`, torch autograd,
    ``jax.grad``).

    Args:
        probs: probabilities in [0, 1], any shape.
        targets: targets in [0, 1], same shape.
        weight: optional element weights broadcastable to ``probs``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or element-wise losses, in the probs' dtype.

    Raises:
        ValueError: values outside [0, 1], shape mismatch, unknown reduction.

    Example (the binary formula ``-[t log p + (1 - t) log(1 - p)]``, averaged):
        >>> import numpy as np, crossent
        >>> float(binary_cross_entropy(np.array([0.9, 0.2]), np.array([1.0, 0.0])).round(6))
        0.164252
        >>> crossent.value_and_grad(binary_cross_entropy)(np.array([0.5]), np.array([1.0]))[1]
        array([-2.])

    Aliases: Logistic Loss / log loss on probabilities; PyTorch ``BCELoss`` /
    ``F.binary_cross_entropy``; TF ``tf.compat.v1.losses.log_loss``; Keras
    ``binary_crossentropy`` (from_logits=False); scikit-learn ``log_loss``.

    References: "理解Cross-Entropy Loss, Softmax Loss, Focal Loss等名词" (blog article, 2020)
    and "Cross Entropy损失函数" (article), for the names and the binary formula; PyTorch docs
    of ``BCELoss``.
    """
    xp, probs, targets = _checks.loss_inputs(reduction, probs=probs, targets=targets)
    _checks.in_unit_interval(xp, probs, "probs")
    p = A.upcast(xp, probs)
    if not A.is_floating(xp, targets):
        targets = xp.astype(targets, p.dtype)
    _checks.same_shape(probs, targets, "probs", "targets")
    _checks.in_unit_interval(xp, targets, "targets")
    t = A.as_float(xp, A.upcast(xp, targets), p.dtype)
    w = _broadcast_weight(xp, weight, p, "weight")
    floor = xp.full_like(p, _LOG_FLOOR)
    # log(0) would be -inf (and a warning); the inner where keeps it out of the computation
    pos, below_one = p > 0, p < 1
    log_p = xp.where(pos, xp.maximum(xp.log(xp.where(pos, p, 1.0)), floor), floor)
    log_1mp = xp.where(below_one, xp.maximum(xp.log1p(-xp.where(below_one, p, 0.0)), floor),
                       floor)
    loss_ = -(t * log_p + (1.0 - t) * log_1mp)
    if w is not None:
        loss_ = loss_ * w
    out = A.cast_like(xp, reduce(xp, loss_, reduction), probs)
    if not need:
        return out, None
    scale = grad_scale(xp, loss_.shape, reduction, None)
    grads = {}
    if "probs" in need:
        # PyTorch's backward: (p - t) / max(p (1 - p), 1e-12), finite at p in {0, 1}
        g = (p - t) / xp.maximum(p * (1.0 - p), xp.full_like(p, 1e-12))
        if w is not None:
            g = g * w
        grads["probs"] = A.cast_like(xp, g * scale, probs)
    if "targets" in need:
        # the derivative of the clamped value: finite (+-100) at p in {0, 1}
        g = log_1mp - log_p
        if w is not None:
            g = g * w
        grads["targets"] = A.cast_like(xp, g * scale, targets)
    return out, scaled_pullback(xp, grads, lambda c: c)


# --- counter-examples: losses that cannot tell a good classifier from a bad one -------------


def _class_targets(xp: Any, targets: Array, like: Array, ax: int) -> Array:
    """Integer labels -> one-hot along the class axis; probability targets pass through."""
    if A.is_integer(xp, targets):
        num_classes = like.shape[ax]
        _checks.labels_in_range(xp, targets, num_classes, None)
        oh = A.one_hot_mask(xp, targets, num_classes, A.compute_dtype(xp, like))
        return A.move_axis_back(xp, oh, ax)
    _checks.same_shape(like, targets, "predictions", "targets")
    return A.as_float(xp, A.upcast(xp, targets), A.compute_dtype(xp, like))


@loss(wrt=("predictions", "targets"))
def mean_squared_error(need: tuple[str, ...], predictions: Array, targets: Array, *,
                       axis: int = -1, reduction: str = "mean"
                       ) -> tuple[Array, Pullback | None]:
    """Squared error summed over classes, averaged over examples.

    Formula: ``l_i = sum_c (yhat_ic - y_ic)^2``, ``MSE = mean_i l_i``. It is used here to show
    why MSE is a poor classification loss: with a sigmoid/softmax in front its gradient
    vanishes when the prediction is confidently wrong. Gradient w.r.t. the predictions:
    ``2 (yhat - y)``, w.r.t. floating targets ``-2 (yhat - y)``, times ``1 / N`` for "mean";
    both are the backward on every backend (:func:`crossent.value_and_grad`, torch autograd,
    ``jax.grad``).

    Args:
        predictions: predicted probabilities (or any scores), classes along ``axis``.
        targets: one-hot / probability targets of the same shape, or integer labels.
        axis: the class axis.
        reduction: ``"mean"`` over examples, ``"sum"`` or ``"none"`` (per example).

    Returns:
        Scalar or per-example losses.

    Example (the three-animal example of two models, model 1 and model 2):
        >>> import numpy as np, crossent
        >>> y = np.array([2, 1, 0])
        >>> m1 = np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]])
        >>> m2 = np.array([[0.1, 0.2, 0.7], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3]])
        >>> round(float(mean_squared_error(m1, y)), 4), round(float(mean_squared_error(m2, y)), 4)
        (0.8067, 0.34)
        >>> crossent.value_and_grad(mean_squared_error)(np.array([[1.0, 0.0]]), np.array([1]))[1]
        array([[ 2., -2.]])

    Aliases: Keras ``mean_squared_error`` sums the class axis differently (it averages over
    it); PyTorch ``MSELoss`` averages over every element. This one follows the three-animal
    example of two models (sum over the classes, mean over the examples).

    References: "Cross Entropy损失函数" (article: 0-1 error and MSE vs cross-entropy, the
    three-animal example of two models).
    """
    xp, predictions, targets = _checks.loss_inputs(reduction, predictions=predictions,
                                                   targets=targets)
    ax = _checks.axis(axis, predictions.ndim)
    y = A.upcast(xp, predictions)
    t = _class_targets(xp, targets, predictions, ax)
    d = y - t
    loss_ = xp.sum(d * d, axis=ax)
    out = A.cast_like(xp, reduce(xp, loss_, reduction), predictions)
    if not need:
        return out, None
    g = 2.0 * d * grad_scale(xp, loss_.shape, reduction, None)
    grads = {}
    if "predictions" in need:
        grads["predictions"] = A.cast_like(xp, g, predictions)
    if "targets" in need:
        grads["targets"] = A.cast_like(xp, -g, targets)
    return out, scaled_pullback(xp, grads, lambda c: xp.expand_dims(c, axis=ax))


def classification_error(scores: Array, labels: Array, *, axis: int = -1) -> Array:
    """Fraction of examples whose arg-max class is not the label (0-1 loss).

    Formula: ``error = count(argmax_c s_ic != y_i) / N``. The first candidate loss: it
    cannot tell a confident model from a barely-right one, and its gradient is zero almost
    everywhere, so it has no closed-form gradient to offer and cannot train a model.

    Args:
        scores: scores, logits or probabilities, classes along ``axis``.
        labels: integer labels (shape of ``scores`` minus ``axis``) or one-hot targets.
        axis: the class axis.

    Returns:
        A scalar in [0, 1], float dtype of ``scores``.

    Example (the three-animal example of two models: both misclassify one sample in three):
        >>> import numpy as np
        >>> m1 = np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]])
        >>> float(classification_error(m1, np.array([2, 1, 0])))
        0.3333333333333333

    Aliases: 0-1 loss, misclassification rate; ``1 - accuracy``.
    """
    xp, scores, labels = A.common(scores=scores, labels=labels)
    ax = _checks.axis(axis, scores.ndim)
    pred = xp.argmax(scores, axis=ax)
    if A.is_integer(xp, labels):
        _checks.labels_in_range(xp, labels, scores.shape[ax], None, "labels")
        truth = labels
    else:
        _checks.same_shape(scores, labels, "scores", "labels")
        truth = xp.argmax(labels, axis=ax)
    if tuple(truth.shape) != tuple(pred.shape):
        raise ValueError(
            f"labels must have the shape of scores without the class axis {tuple(pred.shape)},"
            f" got {tuple(truth.shape)}"
        )
    wrong = A.as_float(xp, pred != xp.astype(truth, pred.dtype),
                       A.compute_dtype(xp, scores) if A.is_floating(xp, scores) else xp.float64)
    return reduce(xp, wrong, "mean")
