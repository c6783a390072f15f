"""Margin softmax losses of face recognition: L-Softmax, SphereFace, CosFace and ArcFace.

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

A variant is a small frozen dataclass (a :class:`_Variant`): the norms it keeps and its
``target(xp, cos) -> (f(cos), f'(cos))`` at the target class. The hinge losses of SVMs are
in :mod:`crossent.hinge`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

from . import _array as A
from . import _checks
from .classification import softmax_cross_entropy
from .gradients import Pullback, loss

Array = Any

__all__ = [
    "large_margin_softmax_loss",
    "sphereface_loss",
    "cosface_loss",
    "arcface_loss",
    "soft_margin_softmax_loss",
]

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


# --- the variants: how each one sets the target logit -----------------------------------------


@dataclass(frozen=True)
class _Variant:
    """A margin softmax variant: the norms its logits keep and its target-class function."""

    keeps_x_norm: ClassVar[bool] = False  # ||x|| is a factor of z (L-Softmax, SphereFace)
    keeps_w_norm: ClassVar[bool] = False  # ||W_j|| is a factor of z (L-Softmax)

    def target(self, xp: Any, c: Array) -> tuple[Array, Array]:
        """``f(c)`` and ``f'(c)`` for the target class (c = cos theta_y)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _LSoftmax(_Variant):
    """L-Softmax: ``psi(theta) = (-1)^k cos(m theta) - 2k``, ``theta`` in ``[k pi/m, (k+1)
    pi/m]``, on the logits ``||x|| ||W_j|| cos``."""

    m: int  # the integer multiplier
    keeps_x_norm: ClassVar[bool] = True
    keeps_w_norm: ClassVar[bool] = True

    def target(self, xp: Any, c: Array) -> tuple[Array, Array]:
        # k counts the j >= 1 with theta >= j pi / m (comparisons, no acos); cos(m theta)
        # and its derivative by Chebyshev
        m = int(self.m)
        k = xp.zeros_like(c)
        for j in range(1, m + 1):
            k = k + A.as_float(xp, c <= math.cos(j * math.pi / m), c.dtype)
        sign = 1.0 - 2.0 * (k - 2.0 * xp.floor(k / 2.0))
        t, u = _chebyshev(xp, c, m)
        return sign * t - 2.0 * k, sign * (m * u)


@dataclass(frozen=True)
class _SphereFace(_LSoftmax):
    """SphereFace (A-Softmax): L-Softmax's ``psi`` with unit class weights (``||x|| cos``)."""

    keeps_w_norm: ClassVar[bool] = False


@dataclass(frozen=True)
class _CosFace(_Variant):
    """CosFace / AM-Softmax: ``cos(theta) - m`` on unit features and weights."""

    m: float  # the cosine margin

    def target(self, xp: Any, c: Array) -> tuple[Array, Array]:
        return c - self.m, xp.ones_like(c)


@dataclass(frozen=True)
class _ArcFace(_Variant):
    """ArcFace: ``cos(theta + m)`` on unit features and weights; where ``theta + m > pi``
    the linear penalty ``cos(theta) - m sin(m)``, or with ``easy_margin`` plain
    ``cos(theta)`` where ``theta >= pi/2``."""

    m: float  # the angular margin in radians
    easy_margin: bool = False

    def target(self, xp: Any, c: Array) -> tuple[Array, Array]:
        cos_m, sin_m = A.scalar_fn(xp, "cos", self.m), A.scalar_fn(xp, "sin", self.m)
        s2 = 1.0 - c * c
        pos = s2 > _SIN_EPS
        sin_t = xp.where(pos, _safe_sqrt(xp, s2), xp.zeros_like(s2))
        phi = c * cos_m - sin_t * sin_m  # cos(theta + m)
        dphi = cos_m + sin_m * c / xp.where(pos, sin_t, xp.ones_like(sin_t))
        dphi = xp.where(pos, dphi, xp.full_like(c, cos_m))
        if self.easy_margin:
            keep = c > 0
            return xp.where(keep, phi, c), xp.where(keep, dphi, xp.ones_like(c))
        # theta + m > pi would make cos(theta + m) rise again: fall back to the linear
        # penalty cos(theta) - m sin(m) there (insightface: th = cos(pi - m), mm = m sin m)
        keep = c > -cos_m  # cos(pi - m)
        return (xp.where(keep, phi, c - self.m * sin_m),
                xp.where(keep, dphi, xp.ones_like(c)))


# margin_type -> (variant maker, default margin, default scale): the losses below and the chunked
# linear form (crossent.torch.margin_linear_cross_entropy) build their variants here
VARIANTS: dict[str, tuple[Any, Any, float]] = {
    "arcface": (lambda m, easy: _ArcFace(_angular_margin(m), easy_margin=bool(easy)), 0.5, 64.0),
    "cosface": (lambda m, easy: _CosFace(_checks.non_negative(m, "margin")), 0.35, 64.0),
    "sphereface": (lambda m, easy: _SphereFace(_int_margin(m)), 4, 1.0),
    "lsoftmax": (lambda m, easy: _LSoftmax(_int_margin(m)), 4, 1.0),
}


def variant_for(margin_type: Any, margin: Any = None, easy_margin: bool = False
                ) -> tuple[_Variant, float]:
    """The variant of ``margin_type`` with ``margin`` (None: the paper's), and its default
    scale."""
    if margin_type not in VARIANTS:
        raise ValueError(f"margin_type must be one of {sorted(VARIANTS)}, got {margin_type!r}")
    make, default_margin, default_scale = VARIANTS[margin_type]
    if easy_margin and margin_type != "arcface":
        raise ValueError(f"easy_margin applies to margin_type='arcface' only, got "
                         f"margin_type={margin_type!r}")
    return make(default_margin if margin is None else margin, easy_margin), default_scale


# --- the shared machinery: inputs, logits, softmax cross-entropy, gradients -------------------


def _margin_inputs(embeddings: Array, weight: Array, labels: Array) -> Any:
    xp, embeddings, weight, labels = A.common(embeddings=embeddings, weight=weight, labels=labels)
    _checks.floating(xp, embeddings, "embeddings")
    _checks.floating(xp, weight, "weight")
    _checks.matrix(embeddings, "embeddings", "(N, embedding_dim)")
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
    _checks.shape(labels, (embeddings.shape[0],), "labels", "(N,)")
    _checks.labels_in_range(xp, labels, weight.shape[0], None, "labels")
    return xp


@dataclass(frozen=True)
class Rows:
    """One factor of ``cos = u v^T``: the embeddings (N rows) or the class weights (C rows)."""

    a: Array            # (R, D) in the compute dtype
    norm: Array         # (R, 1) ||a_i||
    unit: Array         # (R, D) a_i / max(||a_i||, eps)
    keeps_norm: bool    # ||a_i|| is a factor of z


@dataclass(frozen=True)
class _Parts:
    """What :func:`_margin_logits` computed on the way to ``z``, for the gradients."""

    x: Rows            # the embeddings
    w: Rows            # the class weights
    cos: Array          # (N, C) u v^T
    f: Array            # (N, C) f_j(cos): the margin function at the target, cos elsewhere
    fprime: Array | None  # (N, C) f_j'(cos), None without labels


def _margin_logits(embeddings: Array, weight: Array, labels: Array | None, variant: _Variant,
                   scale: Any) -> tuple[Array, _Parts]:
    """The modified logits ``z = s R f(cos)`` and the pieces the gradients reuse.

    ``labels=None`` gives the unmodified logits ``s R cos`` (inference).
    """
    xp, embeddings, weight, labels = A.common(embeddings=embeddings, weight=weight,
                                              labels=labels)
    x = A.upcast(xp, embeddings)
    dt = x.dtype
    w = A.as_float(xp, A.upcast(xp, weight), dt)
    # scaled norms: the directions of x and of 1e20 x are the same, with no overflow
    xs = Rows(x, *A.norm_and_unit(xp, x, _NORM_EPS), variant.keeps_x_norm)  # (N, 1), (N, D)
    ws = Rows(w, *A.norm_and_unit(xp, w, _NORM_EPS), variant.keeps_w_norm)  # (C, 1), (C, D)
    cos = xp.matmul(xs.unit, xp.permute_dims(ws.unit, (1, 0)))  # (N, C)
    if labels is None:
        f, fprime = cos, None
    else:
        onehot = A.one_hot_mask(xp, labels, cos.shape[-1], dt)
        c_y = A.take_class(xp, cos, labels)
        f_y, fp_y = variant.target(xp, c_y)
        f = cos + onehot * (f_y - c_y)[:, None]
        fprime = 1.0 + onehot * (fp_y - 1.0)[:, None]
    z = scale * f
    if xs.keeps_norm:
        z = z * xs.norm
    if ws.keeps_norm:  # the norms that multiply f(cos), ||x|| aside
        z = z * xp.permute_dims(ws.norm, (1, 0))
    return z, _Parts(xs, ws, cos, f, fprime)


def _rows_grad(xp: Any, gz: Array, f: Array, fprime: Array, cos: Array, rows: Rows,
               other: Rows) -> Array:
    """Gradient w.r.t. the rows ``a_i`` of ``sum_ij G_ij R'_j R_i f_ij(c_ij)``, with
    ``c_ij = unit_i . other_j``, ``unit_i = a_i / e_i``, ``e_i = max(||a_i||, eps)``,
    ``R_i = ||a_i||`` when ``rows`` keeps its norm (else 1) and ``R'_j`` the same of
    ``other``; ``G`` (``gz``, rows by ``other``'s rows) is constant in ``a``.

    With ``K_ij = G_ij R'_j``: ``dc_ij/da_i = (other_j - [||a_i|| > eps] c_ij a_i/||a_i||) /
    e_i`` and ``d||a_i||/da_i = a_i/||a_i||``, so with ``kappa_i = R_i / e_i`` (1, or
    ``1/||a_i||``, above the floor): ``kappa_i sum_j K_ij f'_ij other_j + a_i/||a_i|| sum_j
    K_ij ([keeps_norm] f_ij - [||a_i|| > eps] kappa_i f'_ij c_ij)``. Below the floor the unit
    vector is ``a/eps``, whose derivative has no radial part: the exact derivative of the
    value code there too.
    """
    k = gz * xp.permute_dims(other.norm, (1, 0)) if other.keeps_norm else gz
    kf = k * fprime
    return finish_rows(xp, rows, xp.matmul(kf, other.unit),
                       xp.sum(kf * cos, axis=-1, keepdims=True),
                       xp.sum(k * f, axis=-1, keepdims=True) if rows.keeps_norm else None)


def finish_rows(xp: Any, rows: Rows, t: Array, a: Array, b: Array | None) -> Array:
    """The gradient w.r.t. the rows ``a_i`` from the three sums of :func:`_rows_grad`:
    ``t_i = sum_j K_ij f'_ij other_j`` (R, D), ``a_i = sum_j K_ij f'_ij c_ij`` (R, 1) and,
    when ``rows`` keeps its norm, ``b_i = sum_j K_ij f_ij`` (R, 1). The sums may be
    accumulated over chunks of ``other`` (or over processes): this step is per row."""
    norm, unit = rows.norm, rows.unit
    big = norm > _NORM_EPS
    e = xp.maximum(norm, xp.full_like(norm, _NORM_EPS))
    kappa = norm / e if rows.keeps_norm else 1.0 / e
    tangential = t * kappa
    radial = -(A.as_float(xp, big, t.dtype) * kappa) * a
    if not rows.keeps_norm:
        return tangential + unit * radial  # radial is 0 wherever unit is not a / ||a||
    assert b is not None
    radial = radial + b
    # the true direction a/||a|| below the floor too (unit is a/eps there); 0 at a = 0
    pos = norm > 0
    direction = xp.where(big, unit, xp.where(pos, rows.a, xp.zeros_like(rows.a))
                         / xp.where(pos, norm, xp.ones_like(norm)))
    return tangential + direction * radial


def _margin_softmax(need: tuple[str, ...], embeddings: Array, weight: Array, labels: Array,
                    variant: _Variant, *, scale: Any, reduction: str
                    ) -> tuple[Array, Pullback | None]:
    """The one definition of the margin softmax losses: softmax cross-entropy of the
    logits ``variant`` modifies, and the exact pullback to the embeddings and the class
    weights."""
    xp = _margin_inputs(embeddings, weight, labels)
    _, embeddings, weight, labels = A.common(embeddings=embeddings, weight=weight,
                                             labels=labels)
    _checks.reduction(reduction)
    scale = _checks.positive(scale, "scale")
    z, parts = _margin_logits(embeddings, weight, labels, variant, scale)
    # softmax cross-entropy on the modified logits: one definition, reused with its pullback
    out, ce_pullback = softmax_cross_entropy.with_pullback(
        need=("logits",) if need else (), logits=z, targets=labels, reduction=reduction)
    out = A.cast_like(xp, out, embeddings)
    if not need:
        return out, None
    assert ce_pullback is not None  # asked with need, the definition returns one
    cos, f, fprime = parts.cos, parts.f, parts.fprime

    def pullback(cot: Array | None) -> dict[str, Array]:
        # z_ij = s R_x,i R_w,j f_j(c_ij): the cotangent reaches z through softmax CE (rows
        # independent, so its pullback is exact for any cotangent), then both factors. W is
        # shared by every example: its gradient sums over them, for any cotangent.
        gz = ce_pullback(cot)["logits"] * scale  # dL/dz s, (N, C)
        grads = {}
        if "embeddings" in need:
            g = _rows_grad(xp, gz, f, fprime, cos, parts.x, parts.w)
            grads["embeddings"] = A.cast_like(xp, g, embeddings)
        if "weight" in need:
            t = lambda a: xp.permute_dims(a, (1, 0))  # noqa: E731
            g = _rows_grad(xp, t(gz), t(f), t(fprime), t(cos), parts.w, parts.x)
            grads["weight"] = A.cast_like(xp, g, weight)
        return grads

    return out, pullback


# --- the losses -------------------------------------------------------------------------------


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
    return _margin_softmax(need, embeddings, weight, labels, _LSoftmax(_int_margin(margin)),
                           scale=scale, reduction=reduction)


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
    return _margin_softmax(need, embeddings, weight, labels, _SphereFace(_int_margin(margin)),
                           scale=scale, reduction=reduction)


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
    variant = _CosFace(_checks.non_negative(margin, "margin"))
    return _margin_softmax(need, embeddings, weight, labels, variant, scale=scale,
                           reduction=reduction)


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
    variant = _ArcFace(_angular_margin(margin), easy_margin=bool(easy_margin))
    return _margin_softmax(need, embeddings, weight, labels, variant, scale=scale,
                           reduction=reduction)


@loss(wrt=("logits",))
def soft_margin_softmax_loss(need: tuple[str, ...], logits: Array, labels: Array, *,
                             margin: float = 0.0, axis: int = -1, ignore_index: int = -100,
                             reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """SM-Softmax: softmax cross-entropy with a margin subtracted from the target logit.

    Formula: ``z'_y = z_y - m`` and ``z'_j = z_j`` for ``j != y`` (the logits themselves, not
    cosines: no normalisation); ``l = -log softmax(z')_y = logsumexp(z') - z_y + m``. ``m = 0``
    is softmax cross-entropy. Gradient w.r.t. the logits: ``softmax(z') - onehot(y)`` (the
    shift has unit Jacobian), times ``1 / (number of counted rows)`` for "mean".

    Args:
        logits: scores ``z``, classes along ``axis``, floating.
        labels: integer class indices, the shape of ``logits`` without ``axis``;
            ``ignore_index`` rows count for nothing.
        margin: ``m >= 0``.
        axis: the class axis.
        ignore_index: the label of ignored rows.
        reduction: ``"mean"`` over counted rows, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-row losses, in the logits' dtype.

    Raises:
        TypeError: non-floating logits, non-integer labels.
        ValueError: bad shapes, a label out of range, a negative ``margin``, an unknown
            ``reduction``.

    Example:
        >>> import numpy as np, crossent
        >>> z = np.array([[2.0, 1.0, 0.1]])
        >>> round(float(soft_margin_softmax_loss(z, np.array([0]), margin=0.5)), 6)
        0.616875
        >>> crossent.grad(soft_margin_softmax_loss)(z, np.array([0]), margin=0.0).round(4)
        array([[-0.341 ,  0.2424,  0.0986]])

    Aliases: "Soft-Margin Softmax", SM-Softmax.

    References: Liang, Wang, Li & Xie 2017, "Soft-Margin Softmax for Deep Classification",
    ICONIP (LNCS 10635).
    """
    xp, logits, labels = A.common(logits=logits, labels=labels)
    _checks.floating(xp, logits, "logits")
    if not A.is_integer(xp, labels):
        raise TypeError(f"labels must be an integer array of class indices, got dtype "
                        f"{A.dtype_name(labels.dtype)}")
    m = _checks.non_negative(margin, "margin")
    z = A.move_axis_last(xp, logits, axis)
    onehot = A.one_hot_mask(xp, labels, z.shape[-1], A.compute_dtype(xp, z))
    shifted = A.move_axis_back(xp, A.upcast(xp, z) - m * onehot, axis)
    out, pullback = softmax_cross_entropy.with_pullback(
        need=("logits",) if need else (), logits=shifted, targets=labels, axis=axis,
        ignore_index=ignore_index, reduction=reduction)
    out = A.cast_like(xp, out, logits)
    if pullback is None:
        return out, None
    inner = pullback

    def shifted_pullback(cot: Array | None) -> dict[str, Array]:
        return {"logits": A.cast_like(xp, inner(cot)["logits"], logits)}

    return out, shifted_pullback
