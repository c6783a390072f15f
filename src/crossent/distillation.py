"""Knowledge-distillation loss: the student matches the teacher's softened distribution.

The direction matters: the loss is ``D_KL(p_teacher || p_student)``, the difference
between the two *seen from the teacher*. Hinton et al. (2015, arXiv:1503.02531) soften both
distributions with a temperature ``T`` and multiply by ``T^2`` so that the gradients keep
their magnitude as ``T`` changes (the softened gradient scales like ``1/T^2``).
"""

from __future__ import annotations

from typing import Any

from . import _array as A
from . import _checks
from ._reduce import grad_scale, reduce
from .activations import _lse
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = ["distillation_loss"]


@loss(wrt=("student_logits", "teacher_logits"),
      torch="crossent.torch.fast_paths:distillation_loss")
def distillation_loss(need: tuple[str, ...], student_logits: Array, teacher_logits: Array, *,
                      temperature: float = 1.0, axis: int = -1,
                      reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Hinton's knowledge-distillation loss, ``T^2 D_KL(teacher || student)`` on softened logits.

    Formula: with ``p_t = softmax(t / T)`` and ``p_s = softmax(s / T)`` along ``axis``,
    ``l = T^2 * sum_i p_t,i (log p_t,i - log p_s,i)``. The direction is the teacher's (Hinton
    et al. 2015); it is not symmetric in the two logits. Gradient w.r.t. the student logits:
    ``T (p_s - p_t)``; w.r.t. the teacher logits: ``T p_t (log p_t - log p_s - l / T^2)``
    (0 at a masked teacher class); times ``1/N`` for "mean" over ``N`` distributions. Both
    are the backward on every backend (:func:`crossent.value_and_grad`, torch autograd,
    ``jax.grad``). Both distributions are computed by log-softmax, so logits of any finite
    size are fine. Combine with the hard-label loss yourself, e.g.
    ``alpha * distillation_loss(s, t, temperature=T) + (1 - alpha) * softmax_cross_entropy(s, y)``.

    Args:
        student_logits: floating array, classes along ``axis``, e.g. ``(N, C)``.
        teacher_logits: floating array of the same shape. It is not detached: call
            ``.detach()`` (PyTorch) or ``jax.lax.stop_gradient`` if the teacher is frozen.
        temperature: ``T > 0``; ``T > 1`` softens both distributions.
        axis: the class axis (``1`` for PyTorch ``(N, C, d1, ...)`` layouts).
        reduction: ``"mean"`` over distributions (PyTorch's "batchmean"), ``"sum"`` or
            ``"none"`` (shape of the logits without ``axis``).

    Returns:
        Scalar, or one loss per distribution, in the promoted dtype of the logits
        (fp16/bf16 computed in fp32).

    Raises:
        TypeError: non-floating logits.
        ValueError: shape mismatch, ``temperature`` not a positive number, a 0-d input, bad
            ``axis`` or ``reduction``.

    Example (identical logits cost nothing; the direction matters):
        >>> import numpy as np, crossent
        >>> s, t = np.array([[2.0, 0.0, -1.0]]), np.array([[0.0, 1.0, 0.0]])
        >>> float(distillation_loss(t, t, temperature=4.0))
        0.0
        >>> round(float(distillation_loss(s, t)), 6), round(float(distillation_loss(t, s)), 6)
        (0.982577, 0.912983)
        >>> _, g = crossent.value_and_grad(distillation_loss)(
        ...     np.array([[0.0, 0.0]]), np.array([[0.0, 1e4]]), temperature=2.0)
        >>> g.tolist()
        [[1.0, -1.0]]

    Aliases: KD loss, soft-target loss; PyTorch ``F.kl_div(F.log_softmax(s / T, -1),
    F.softmax(t / T, -1), reduction="batchmean") * T**2``; Optax
    ``kl_divergence(jax.nn.log_softmax(s / T), jax.nn.softmax(t / T)) * T**2``; Keras
    ``KLDivergence`` in its ``Distiller`` example.

    References: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"
    (arXiv:1503.02531).
    """
    xp, student_logits, teacher_logits = A.common(student_logits=student_logits,
                                                  teacher_logits=teacher_logits)
    _checks.floating(xp, student_logits, "student_logits")
    _checks.floating(xp, teacher_logits, "teacher_logits")
    _checks.reduction(reduction)
    t = _checks.positive(temperature, "temperature")
    ax = _checks.class_axis(student_logits, axis, "student_logits")
    _checks.same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    zs, zt = A.upcast(xp, student_logits), A.upcast(xp, teacher_logits)
    dt = xp.result_type(zs.dtype, zt.dtype)
    zs, zt = A.as_float(xp, zs, dt) / t, A.as_float(xp, zt, dt) / t
    # log-softmax with the max shift: exact for logits of any finite size (+-1e4 and beyond)
    log_ps = zs - _lse(xp, zs, ax, True)
    log_pt = zt - _lse(xp, zt, ax, True)
    pt = xp.exp(log_pt)
    # a teacher class of probability 0 (masked with -inf, or underflowed) contributes 0
    # whatever the student says; zeroing both logs there keeps -inf - (-inf) = NaN out of the
    # value, NumPy's warnings and autograd's backward pass
    masked, zero = pt == 0, xp.zeros_like(pt)
    diff = xp.where(masked, zero, log_pt) - xp.where(masked, zero, log_ps)
    kl = xp.sum(pt * diff, axis=ax, keepdims=True)
    per_dist = (t * t) * xp.squeeze(kl, axis=ax)
    out = reduce(xp, per_dist, reduction)
    out_dtype = xp.result_type(student_logits.dtype, teacher_logits.dtype)
    out = xp.astype(out, out_dtype) if out.dtype != out_dtype else out
    if not need:
        return out, None
    scale = grad_scale(xp, per_dist.shape, reduction, None)
    grads = {}
    if "student_logits" in need:
        # d/ds [T^2 KL(pt || softmax(s / T))] = T^2 * (1/T) * (ps - pt) = T (ps - pt)
        g = t * (xp.exp(log_ps) - pt) * scale
        grads["student_logits"] = A.cast_like(xp, g, student_logits)
    if "teacher_logits" in need:
        # d/dt_j [T^2 sum_i pt_i diff_i] = T [sum_i pt_i ([i=j] - pt_j) diff_i + sum_i pt_i
        # ([i=j] - pt_j)] = T pt_j (diff_j - KL): the second sum is 0; 0 where pt_j = 0
        g = t * (pt * (diff - kl)) * scale
        grads["teacher_logits"] = A.cast_like(xp, g, teacher_logits)
    return out, scaled_pullback(xp, grads, lambda c: xp.expand_dims(c, axis=ax))
