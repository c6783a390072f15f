"""Ranking and metric-learning losses: margin ranking, contrastive, triplet, NT-Xent, cosine.

These are *ranking losses* (gombru, "Understanding Ranking Loss, Contrastive Loss, Margin
Loss, Triplet Loss, Hinge Loss", https://gombru.github.io/2019/04/03/ranking_loss/): instead
of a class, they learn relative distances between inputs, pairwise (margin ranking,
contrastive, cosine embedding), by triplets (anchor, positive, negative) or over a batch
(NT-Xent / InfoNCE, which is softmax cross-entropy over similarities: the bridge back to the
rest of crossent).

Each has its closed-form gradient with respect to every input it compares (both members of a
pair, all three of a triplet); NT-Xent's batch-level pullback is exact for any cotangent.
"""

from __future__ import annotations

import math
from typing import Any

from . import _array as A
from . import _checks
from ._reduce import grad_scale, reduce, safe_divide
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = [
    "margin_ranking_loss",
    "contrastive_loss",
    "contrastive_loss_from_distances",
    "triplet_margin_loss",
    "ntxent_loss",
    "cosine_embedding_loss",
]



def _pm1(xp: Any, target: Array, shape: tuple, dtype: Any, name: str = "target") -> Array:
    """Targets in {-1, 1} as floats of ``shape`` (PyTorch's pair labels)."""
    _checks.shape(target, shape, name)
    t = A.as_float(xp, A.upcast(xp, target), dtype)
    if _checks.any_true(xp, (t != 1) & (t != -1)):
        lo, hi = float(xp.min(t)), float(xp.max(t))
        raise ValueError(f"{name} must hold 1 or -1, got values in [{lo}, {hi}]")
    return t


def _real_target(xp: Any, target: Array, shape: tuple, dtype: Any) -> Array:
    """Any real targets as floats of ``shape`` (PyTorch's ranking target: 1 and -1 are the
    usual values, others scale the difference)."""
    _checks.shape(target, shape, "target")
    return A.as_float(xp, A.upcast(xp, target), dtype)


def _pair_inputs(xp: Any, x1: Array, x2: Array, n1: str, n2: str) -> None:
    _checks.floating(xp, x1, n1)
    _checks.floating(xp, x2, n2)
    _checks.same_shape(x1, x2, n1, n2)


def _vectors(x: Array, name: str) -> None:
    if x.ndim == 0:
        raise ValueError(f"{name} must have a feature axis (the last one), got a 0-d array")


def _per_vector(xp: Any) -> Any:
    """``expand`` of a loss that reduced the feature (last) axis."""
    return lambda c: xp.expand_dims(c, axis=-1)


# --- margin ranking -------------------------------------------------------------------------


@loss(wrt=("input1", "input2"))
def margin_ranking_loss(need: tuple[str, ...], input1: Array, input2: Array, target: Array, *,
                        margin: float = 0.0, reduction: str = "mean"
                        ) -> tuple[Array, Pullback | None]:
    """Margin ranking loss: ``input1`` should rank above ``input2`` by ``margin`` when y = 1.

    Formula: ``l = max(0, -y (x1 - x2) + margin)``, ``y`` usually in {1, -1}; any real ``y``
    is taken as PyTorch does (it scales the difference; ``y = 0`` gives ``max(0, margin)``).
    Gradient w.r.t. ``x1``: ``-y [-y (x1 - x2) + margin >= 0]``; w.r.t. ``x2`` its negative
    (``crossent.grad(margin_ranking_loss, argnums=1)``).

    Args:
        input1: scores ``x1``, any shape.
        input2: scores ``x2``, same shape.
        target: ``y``, 1 or -1 for a ranked pair (any real number is accepted, any dtype),
            same shape.
        margin: the margin (default 0, as PyTorch).
        reduction: ``"mean"`` over elements, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or element-wise losses, in the dtype of ``input1``.

    Raises:
        TypeError: non-floating inputs.
        ValueError: shape mismatch, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> margin_ranking_loss(np.array([1.0, 0.2]), np.array([0.5, 0.5]), np.array([1, 1]),
        ...                     margin=0.1, reduction="none").round(6)
        array([0. , 0.4])
        >>> crossent.grad(margin_ranking_loss, argnums=(0, 1))(
        ...     np.array([0.2]), np.array([0.5]), np.array([1]))
        (array([-1.]), array([1.]))

    Aliases: PyTorch ``MarginRankingLoss`` / ``F.margin_ranking_loss``; pairwise hinge /
    RankSVM loss; Caffe has none.

    References: Herbrich et al. 2000, "Large margin rank boundaries for ordinal regression";
    PyTorch docs of ``torch.nn.MarginRankingLoss``; gombru 2019,
    https://gombru.github.io/2019/04/03/ranking_loss/.
    """
    xp, input1, input2, target = A.common(input1=input1, input2=input2, target=target)
    _pair_inputs(xp, input1, input2, "input1", "input2")
    _checks.reduction(reduction)
    margin = _checks.real(margin, "margin")
    a = A.upcast(xp, input1)
    b = A.as_float(xp, A.upcast(xp, input2), a.dtype)
    y = _real_target(xp, target, a.shape, a.dtype)
    h = margin - y * (a - b)
    per = A.relu(xp, h)
    out = A.cast_like(xp, reduce(xp, per, reduction), input1)
    if not need:
        return out, None
    # h >= 0, not > 0: PyTorch's clamp_min passes the gradient at the kink (e.g. x1 = x2 at
    # margin 0), and conformance includes that subgradient choice
    g = -y * A.as_float(xp, h >= 0, a.dtype)
    g = g * grad_scale(xp, per.shape, reduction, None)
    grads = {}
    if "input1" in need:
        grads["input1"] = A.cast_like(xp, g, input1)
    if "input2" in need:
        grads["input2"] = A.cast_like(xp, -g, input2)
    return out, scaled_pullback(xp, grads, lambda c: c)


# --- contrastive (Hadsell, Chopra & LeCun 2006) ---------------------------------------------


def _similarity_labels(xp: Any, labels: Array, shape: tuple, dtype: Any) -> Array:
    _checks.shape(labels, shape, "labels")
    y = A.as_float(xp, A.upcast(xp, labels), dtype)
    _checks.in_unit_interval(xp, y, "labels")
    return y


def _contrastive_terms(xp: Any, d: Array, d2: Array, y: Array, margin: Any
                       ) -> tuple[Array, Array]:
    """Per-pair loss and dl/dD from the distance ``d`` and its square ``d2``."""
    gap = A.relu(xp, margin - d)
    # a dissimilar pair (y = 0) far apart is a loss of 0 even where D^2 overflows
    per = 0.5 * A.mul0(xp, y, d2) + 0.5 * (1.0 - y) * gap * gap
    return per, y * d - (1.0 - y) * gap


@loss(wrt=("x1", "x2"))
def contrastive_loss(need: tuple[str, ...], x1: Array, x2: Array, labels: Array, *,
                     margin: float = 1.0, reduction: str = "mean"
                     ) -> tuple[Array, Pullback | None]:
    """Contrastive loss of Hadsell, Chopra & LeCun on pairs of embeddings.

    Formula: with the Euclidean distance ``D = ||x1 - x2||_2`` and ``y = 1`` for a similar
    pair, 0 for a dissimilar one: ``l = y D^2 / 2 + (1 - y) max(0, margin - D)^2 / 2``.
    (The paper writes ``Y = 0`` for similar pairs; here 1 means similar, as in most code.)
    Gradient w.r.t. ``x1``: ``[y - (1 - y) max(0, margin - D) / D] (x1 - x2)``; w.r.t.
    ``x2`` its negative (``argnums=1``).

    Args:
        x1: embeddings, shape ``(..., D)``.
        x2: embeddings, same shape.
        labels: similarity in [0, 1] (1 similar, 0 dissimilar), shape ``(...)``.
        margin: the distance beyond which dissimilar pairs cost nothing (>= 0).
        reduction: ``"mean"`` over pairs, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-pair losses, in the dtype of ``x1``.

    Raises:
        TypeError: non-floating embeddings.
        ValueError: shape mismatch, labels outside [0, 1], negative margin, bad reduction.

    Example:
        >>> import numpy as np, crossent
        >>> x1 = np.array([[0.0, 0.0], [0.0, 0.0]]); x2 = np.array([[0.3, 0.4], [0.3, 0.4]])
        >>> contrastive_loss(x1, x2, np.array([1, 0]), reduction="none").round(6)
        array([0.125, 0.125])
        >>> crossent.grad(contrastive_loss)(np.array([[0.0, 0.0]]), np.array([[0.3, 0.4]]),
        ...                                 np.array([1]))
        array([[-0.3, -0.4]])

    Aliases: Siamese / pairwise ranking loss; TF Addons ``contrastive_loss`` (on distances,
    without the 1/2); pytorch-metric-learning ``ContrastiveLoss`` is a non-squared variant.

    References: Hadsell, Chopra & LeCun 2006, "Dimensionality Reduction by Learning an
    Invariant Mapping", CVPR (eq. 4).
    """
    xp, x1, x2, labels = A.common(x1=x1, x2=x2, labels=labels)
    _pair_inputs(xp, x1, x2, "x1", "x2")
    _vectors(x1, "x1")
    _checks.reduction(reduction)
    margin = _checks.non_negative(margin, "margin")
    a = A.upcast(xp, x1)
    diff = a - A.as_float(xp, A.upcast(xp, x2), a.dtype)
    y = _similarity_labels(xp, labels, a.shape[:-1], a.dtype)
    # the scaled norm: D itself is representable long after sum(diff^2) overflows
    d = A.norm_and_unit(xp, diff)[0][..., 0]
    d2 = d * d
    pos = d > 0
    per, _ = _contrastive_terms(xp, d, d2, y, margin)
    out = A.cast_like(xp, reduce(xp, per, reduction), x1)
    if not need:
        return out, None
    # dD/dx1 = (x1 - x2) / D; written as y (x1 - x2) - (1 - y) gap (x1 - x2) / D so that the
    # similar-pair term needs no division (its gradient is 0 at D = 0, not 0/0)
    inv_d = xp.where(pos, 1.0 / xp.where(pos, d, xp.ones_like(d)), xp.zeros_like(d))
    gap = A.relu(xp, margin - d)
    coef = y - (1.0 - y) * gap * inv_d
    g = coef[..., None] * diff * grad_scale(xp, per.shape, reduction, None)
    grads = {}
    if "x1" in need:
        grads["x1"] = A.cast_like(xp, g, x1)
    if "x2" in need:
        grads["x2"] = A.cast_like(xp, -g, x2)
    return out, scaled_pullback(xp, grads, _per_vector(xp))


@loss(wrt=("distances",))
def contrastive_loss_from_distances(need: tuple[str, ...], distances: Array, labels: Array, *,
                                    margin: float = 1.0, reduction: str = "mean"
                                    ) -> tuple[Array, Pullback | None]:
    """Contrastive loss on given pair distances (any metric, computed by the caller).

    Formula: ``l = y D^2 / 2 + (1 - y) max(0, margin - D)^2 / 2``; gradient w.r.t. ``D``:
    ``y D - (1 - y) max(0, margin - D)``.

    Args:
        distances: non-negative pair distances ``D``, any shape.
        labels: similarity in [0, 1] (1 similar, 0 dissimilar), same shape.
        margin: the distance beyond which dissimilar pairs cost nothing (>= 0).
        reduction: ``"mean"`` over pairs, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-pair losses, in the dtype of ``distances``.

    Raises:
        TypeError: non-floating distances.
        ValueError: shape mismatch, labels outside [0, 1], negative margin, bad reduction.

    Example:
        >>> import numpy as np, crossent
        >>> contrastive_loss_from_distances(np.array([0.5, 0.5]), np.array([1.0, 0.0]),
        ...                                 reduction="none")
        array([0.125, 0.125])
        >>> crossent.grad(contrastive_loss_from_distances)(
        ...     np.array([0.5, 0.5]), np.array([1.0, 0.0]), reduction="sum")
        array([ 0.5, -0.5])

    Aliases: TF Addons ``contrastive_loss(y_true, y_pred)`` is twice this.

    References: Hadsell, Chopra & LeCun 2006 (eq. 4).
    """
    xp, distances, labels = _checks.loss_inputs(reduction, distances=distances, labels=labels)
    margin = _checks.non_negative(margin, "margin")
    d = A.upcast(xp, distances)
    y = _similarity_labels(xp, labels, d.shape, d.dtype)
    per, dl_dd = _contrastive_terms(xp, d, d * d, y, margin)
    out = A.cast_like(xp, reduce(xp, per, reduction), distances)
    if not need:
        return out, None
    g = dl_dd * grad_scale(xp, per.shape, reduction, None)
    return out, scaled_pullback(xp, {"distances": A.cast_like(xp, g, distances)}, lambda c: c)


# --- triplet margin -------------------------------------------------------------------------


def _pnorm(xp: Any, v: Array, p: float) -> tuple[Array, Array]:
    """``||v||_p`` along the last axis and its gradient ``sign(v) |v|^(p-1) / ||v||^(p-1)``."""
    traced = _checks.is_traced(p)
    if not traced and p == 2.0:
        n, unit = A.norm_and_unit(xp, v)
        return n[..., 0], unit
    av = xp.abs(v)
    if not traced and p == 1.0:
        n = xp.sum(av, axis=-1)
        return n, xp.sign(v) * A.as_float(xp, n > 0, v.dtype)[..., None]
    # scaled by the largest |v_i| so that |v|^p neither overflows nor underflows
    m = xp.max(av, axis=-1, keepdims=True) if v.shape[-1] else xp.zeros_like(v[..., :1])
    ms = xp.where((m > 0) & (m < math.inf), m, xp.ones_like(m))
    r = xp.sum((av / ms) ** p, axis=-1, keepdims=True) ** (1.0 / p)  # ||v||_p / ms
    pos = r > 0
    safe = xp.where(pos, r, xp.ones_like(r))
    grad = xp.sign(v) * (av / ms / safe) ** (p - 1.0)
    return (r * ms)[..., 0], grad * A.as_float(xp, pos, v.dtype)


@loss(wrt=("anchor", "positive", "negative"))
def triplet_margin_loss(need: tuple[str, ...], anchor: Array, positive: Array, negative: Array,
                        *, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6,
                        swap: bool = False, reduction: str = "mean"
                        ) -> tuple[Array, Pullback | None]:
    """Triplet margin loss: the anchor nearer its positive than its negative by ``margin``.

    Formula: ``d(a, b) = ||a - b + eps||_p`` (PyTorch's ``pairwise_distance``),
    ``l = max(0, margin + d(a, p) - d(a, n))``; with ``swap`` the negative distance is
    ``min(d(a, n), d(p, n))`` (Balntas et al.'s distance swap). Gradient, with
    ``grad ||v||_p = sign(v) |v|^(p-1) / ||v||_p^(p-1)``, ``g_ap`` that at ``a - p + eps``
    (and ``g_an``, ``g_pn`` likewise), and ``w`` the share of ``d(a, n)`` in the negative
    distance (1 without swap; 1, 1/2 at a tie, or 0 with it): w.r.t. the anchor
    ``[h >= 0] (g_ap - w g_an)``, the positive ``-[h >= 0] (g_ap + (1 - w) g_pn)``, the
    negative ``[h >= 0] (w g_an + (1 - w) g_pn)`` (``argnums`` 0, 1, 2).

    Args:
        anchor: embeddings, shape ``(..., D)``.
        positive: embeddings of the same identity, same shape.
        negative: embeddings of another identity, same shape.
        margin: the margin (default 1).
        p: the norm degree, >= 1 (default 2).
        eps: added to the difference before the norm, as PyTorch (default 1e-6).
        swap: use the distance swap.
        reduction: ``"mean"`` over triplets, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-triplet losses, in the anchor's dtype.

    Raises:
        TypeError: non-floating inputs.
        ValueError: shape mismatch, ``p < 1``, negative ``eps``, bad reduction.

    Example:
        >>> import numpy as np, crossent
        >>> a = np.array([[0.0, 0.0]]); pos = np.array([[0.0, 1.0]]); neg = np.array([[1.5, 0.0]])
        >>> float(triplet_margin_loss(a, pos, neg, eps=0.0))
        0.5
        >>> crossent.value_and_grad(triplet_margin_loss)(a, pos, neg, eps=0.0)[1]
        array([[ 1., -1.]])

    Aliases: PyTorch ``TripletMarginLoss`` / ``F.triplet_margin_loss``; Optax
    ``triplet_margin_loss`` (equal at ``eps=0`` and even ``p``: Optax adds ``eps`` inside
    the power sum and takes no absolute value); TF Addons ``TripletSemiHardLoss`` /
    ``TripletHardLoss`` (with mining); pytorch-metric-learning ``TripletMarginLoss`` (with
    mining).

    References: Schroff, Kalenichenko & Philbin 2015, "FaceNet"; Balntas et al. 2016,
    "Learning local feature descriptors with triplets and shallow convolutional neural
    networks" (swap); PyTorch docs of ``torch.nn.TripletMarginLoss``.
    """
    swap = bool(swap)
    xp, anchor, positive, negative = A.common(anchor=anchor, positive=positive, negative=negative)
    _pair_inputs(xp, anchor, positive, "anchor", "positive")
    _pair_inputs(xp, anchor, negative, "anchor", "negative")
    _vectors(anchor, "anchor")
    _checks.reduction(reduction)
    margin = _checks.real(margin, "margin")
    eps = _checks.non_negative(eps, "eps")
    p = _checks.number(p, "p", low=1.0, what="a finite norm degree >= 1")
    a = A.upcast(xp, anchor)
    dt = a.dtype
    pv = A.as_float(xp, A.upcast(xp, positive), dt)
    nv = A.as_float(xp, A.upcast(xp, negative), dt)
    # PyTorch's pairwise_distance: ||x1 - x2 + eps||_p
    d_ap, g_ap = _pnorm(xp, a - pv + eps, p)
    d_an, g_an = _pnorm(xp, a - nv + eps, p)
    d_neg, w_an, g_pn = d_an, None, None
    if swap:
        d_pn, g_pn = _pnorm(xp, pv - nv + eps, p)
        d_neg = xp.minimum(d_an, d_pn)
        # torch.minimum's derivative: to the smaller one, half to each at a tie
        w_an = xp.where(d_an < d_pn, xp.ones_like(d_an),
                        xp.where(d_an == d_pn, xp.full_like(d_an, 0.5), xp.zeros_like(d_an)))
    h = margin + d_ap - d_neg
    per = A.relu(xp, h)
    out = A.cast_like(xp, reduce(xp, per, reduction), anchor)
    if not need:
        return out, None
    # dl/d d(a, p) = [h >= 0] and dl/d d_neg = -[h >= 0] (clamp_min passes the gradient at
    # the kink); d_neg splits between d(a, n) (share w) and d(p, n) (share 1 - w)
    active = (A.as_float(xp, h >= 0, dt) * grad_scale(xp, per.shape, reduction, None))[..., None]
    g_neg = g_an if w_an is None else w_an[..., None] * g_an  # d d_neg / d anchor
    g_swap = None if w_an is None else (1.0 - w_an)[..., None] * g_pn  # d d_neg / d positive
    grads = {}
    if "anchor" in need:
        grads["anchor"] = A.cast_like(xp, active * (g_ap - g_neg), anchor)
    if "positive" in need:
        gp = -g_ap if g_swap is None else -g_ap - g_swap
        grads["positive"] = A.cast_like(xp, active * gp, positive)
    if "negative" in need:
        gn = g_neg if g_swap is None else g_neg + g_swap
        grads["negative"] = A.cast_like(xp, active * gn, negative)
    return out, scaled_pullback(xp, grads, _per_vector(xp))


# --- NT-Xent (SimCLR, InfoNCE) --------------------------------------------------------------


@loss(wrt=("embeddings",))
def ntxent_loss(need: tuple[str, ...], embeddings: Array, labels: Array, *,
                temperature: float = 0.07, reduction: str = "mean"
                ) -> tuple[Array, Pullback | None]:
    """NT-Xent (normalised temperature-scaled cross-entropy), the SimCLR / InfoNCE loss.

    Formula: ``s_ij = cos(x_i, x_j) / tau``; for every positive pair ``(i, j)`` (same label,
    ``i != j``): ``l_ij = -log(exp(s_ij) / (exp(s_ij) + sum_{k: y_k != y_i} exp(s_ik)))``,
    i.e. softmax cross-entropy of the positive against the anchor's negatives; the loss is
    the mean over positive pairs (0 when there are none, where Optax gives NaN).

    Gradient: with ``r_ij = sigmoid(lse_neg_i - s_ij)`` at the positive pairs, times the
    cotangent ``c_ij`` (its pair's entry for ``reduction="none"``, where every embedding
    enters many entries: the pullback is the exact VJP for any cotangent), ``G = dL/dS`` is
    ``-c_ij r_ij`` at positive pairs and ``softmax_neg(s_i)_k sum_j c_ij r_ij`` at negatives
    (divided by the number of positive pairs for "mean"); ``dL/dU = (G + G^T) U / tau`` and
    ``dL/dx_i = (I - u_i u_i^T) dL/du_i / ||x_i||``.

    Args:
        embeddings: shape ``(N, D)``.
        labels: group labels of shape ``(N,)`` (any dtype with ``==``); equal labels mark
            positive pairs, e.g. ``[0, 0, 1, 1]`` for two augmented views of two images.
        temperature: ``tau > 0`` (0.07 as Optax).
        reduction: ``"mean"`` over positive pairs, ``"sum"``, or ``"none"`` for the
            ``(N, N)`` matrix of pair losses (0 off the positive pairs).

    Returns:
        Scalar, or the ``(N, N)`` pair losses, in the embeddings' dtype.

    Raises:
        TypeError: non-floating embeddings.
        ValueError: bad shapes, non-positive temperature, unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> round(float(ntxent_loss(x, np.array([0, 0, 1, 1]), temperature=0.5)), 6)
        0.289878
        >>> g = crossent.grad(ntxent_loss)(x, np.array([0, 0, 1, 1]))
        >>> bool(np.allclose(np.sum(g * x, axis=1), 0))  # scale-free: g is orthogonal to x
        True

    Aliases: Optax ``ntxent``; pytorch-metric-learning ``NTXentLoss``; InfoNCE (van den Oord
    et al. 2018); the SimCLR loss; "multi-class N-pair loss" (Sohn 2016) at tau = 1.

    References: Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations" (arXiv:2002.05709); Sohn 2016.
    """
    xp, embeddings, labels = _checks.loss_inputs(reduction, embeddings=embeddings, labels=labels)
    tau = _checks.positive(temperature, "temperature")
    _checks.matrix(embeddings, "embeddings")
    _checks.shape(labels, (embeddings.shape[0],), "labels", "(N,)")
    x = A.upcast(xp, embeddings)
    dt = x.dtype
    n = x.shape[0]
    dev = A.device_of(x)
    if n == 0:  # no anchor: an empty (attached) result, and a zero-size gradient
        s = xp.matmul(x, xp.permute_dims(x, (1, 0)))
        out = A.cast_like(xp, s if reduction == "none" else xp.sum(s), embeddings)
        if not need:
            return out, None
        return out, lambda cot: {"embeddings": xp.zeros_like(embeddings)}
    # Optax's cosine similarity: norms floored at sqrt(machine epsilon) of the dtype
    floor = math.sqrt(float(xp.finfo(dt).eps))
    norm, u = A.norm_and_unit(xp, x, floor)
    above = norm > floor
    norm = xp.where(above, norm, xp.full_like(norm, floor))
    s = xp.matmul(u, xp.permute_dims(u, (1, 0))) / tau  # (N, N)
    same = labels[:, None] == labels[None, :]
    idx = xp.arange(n, device=dev)
    eye = idx[:, None] == idx[None, :]
    pos = same & ~eye
    neg = ~same
    # log-sum-exp over each anchor's negatives, finite fill values so autodiff stays NaN-free
    s_neg = xp.where(neg, s, xp.full_like(s, -float("inf")))
    m = xp.max(s_neg, axis=-1, keepdims=True)
    has_neg = xp.isfinite(m)
    m = xp.where(has_neg, m, xp.zeros_like(m))
    e = xp.where(neg, xp.exp(xp.where(neg, s, m) - m), xp.zeros_like(s))
    esum = xp.sum(e, axis=-1, keepdims=True)
    lse_neg = xp.log(xp.where(has_neg, esum, xp.ones_like(esum))) + m
    # -log(e^{s_ij} / (e^{s_ij} + sum_neg e^{s_ik})) = softplus(lse_neg_i - s_ij)
    posf = A.as_float(xp, pos & has_neg, dt)
    z = lse_neg - s
    per = A.softplus(xp, z) * posf
    count = xp.sum(A.as_float(xp, pos, dt))
    if reduction == "none":
        out = per
    elif reduction == "sum":
        out = xp.sum(per)
    else:
        out = safe_divide(xp, xp.sum(per), count)
    out = A.cast_like(xp, out, embeddings)
    if not need:
        return out, None
    # dl_ij/ds_ij = -r_ij, dl_ij/ds_ik = r_ij softmax_neg(s_i)_k, r_ij = sigmoid(lse_neg_i - s_ij)
    r = A.sigmoid(xp, z) * posf
    sm_neg = e / xp.where(has_neg, esum, xp.ones_like(esum))
    inv_count = safe_divide(xp, xp.ones_like(count), count) if reduction == "mean" else None

    def pullback(cot: Array | None) -> dict[str, Array]:
        # every l_ij depends on the whole row s_i (through lse_neg_i) and every x_k enters
        # many s_ij: the cotangent weights each pair's r_ij before the rows are summed
        rc = r
        if cot is not None:
            rc = r * (cot if cot.dtype == dt else xp.astype(cot, dt))
        if inv_count is not None:
            rc = rc * inv_count
        gs = sm_neg * xp.sum(rc, axis=-1, keepdims=True) - rc  # d L / d s, row i = anchor i
        gu = xp.matmul(gs + xp.permute_dims(gs, (1, 0)), u) / tau
        # u = x / max(||x||, sqrt(floor)): project out the radial part where the norm is active
        radial = xp.sum(gu * u, axis=-1, keepdims=True) * u
        g = xp.where(above, gu - radial, gu) / norm
        return {"embeddings": A.cast_like(xp, g, embeddings)}

    return out, pullback


# --- cosine embedding -----------------------------------------------------------------------

_COS_EPS = 1e-12  # PyTorch's EPSILON, added to each squared norm


@loss(wrt=("x1", "x2"))
def cosine_embedding_loss(need: tuple[str, ...], x1: Array, x2: Array, target: Array, *,
                          margin: float = 0.0, reduction: str = "mean"
                          ) -> tuple[Array, Pullback | None]:
    """Cosine embedding loss: pull similar pairs to cosine 1, push others below ``margin``.

    Formula: ``cos = x1 . x2 / sqrt((||x1||^2 + e)(||x2||^2 + e))`` with PyTorch's
    ``e = 1e-12``; ``l = 1 - cos`` if ``y = 1``, ``max(0, cos - margin)`` if ``y = -1``.
    Gradient w.r.t. ``x1``: ``dcos = x2 / den - cos x1 / (||x1||^2 + e)``, times -1 or
    ``[cos >= margin]``; w.r.t. ``x2`` the same with the roles swapped (``argnums=1``).

    Args:
        x1: embeddings, shape ``(..., D)``.
        x2: embeddings, same shape.
        target: ``y`` in {1, -1}, shape ``(...)``.
        margin: a cosine in [-1, 1] (default 0; 0 to 0.5 is the usual advice).
        reduction: ``"mean"`` over pairs, ``"sum"`` or ``"none"``.

    Returns:
        Scalar or per-pair losses, in the dtype of ``x1``.

    Raises:
        TypeError: non-floating inputs.
        ValueError: shape mismatch, a target not in {1, -1}, margin outside [-1, 1],
            unknown reduction.

    Example:
        >>> import numpy as np, crossent
        >>> x1 = np.array([[1.0, 0.0], [1.0, 0.0]]); x2 = np.array([[1.0, 1.0], [1.0, 1.0]])
        >>> cosine_embedding_loss(x1, x2, np.array([1, -1]), reduction="none").round(6)
        array([0.292893, 0.707107])
        >>> g = crossent.grad(cosine_embedding_loss)(np.array([[1.0, 0.0]]),
        ...                                          np.array([[0.0, 1.0]]), np.array([1]))
        >>> g.round(6)
        array([[-0., -1.]])

    Aliases: PyTorch ``CosineEmbeddingLoss`` / ``F.cosine_embedding_loss``.

    References: PyTorch docs of ``torch.nn.CosineEmbeddingLoss``.
    """
    xp, x1, x2, target = A.common(x1=x1, x2=x2, target=target)
    _pair_inputs(xp, x1, x2, "x1", "x2")
    _vectors(x1, "x1")
    _checks.reduction(reduction)
    margin = _checks.real(margin, "margin")
    if not -1.0 <= margin <= 1.0:
        raise ValueError(f"margin must be in [-1, 1] (a cosine), got {margin!r}")
    a = A.upcast(xp, x1)
    b = A.as_float(xp, A.upcast(xp, x2), a.dtype)
    y = _pm1(xp, target, a.shape[:-1], a.dtype)
    prod = xp.sum(a * b, axis=-1)
    m1 = xp.sum(a * a, axis=-1) + _COS_EPS
    m2 = xp.sum(b * b, axis=-1) + _COS_EPS
    den = xp.sqrt(m1 * m2)
    cos = prod / den
    similar = y > 0
    per = xp.where(similar, 1.0 - cos, A.relu(xp, cos - margin))
    out = A.cast_like(xp, reduce(xp, per, reduction), x1)
    if not need:
        return out, None
    coef = xp.where(similar, -xp.ones_like(cos), A.as_float(xp, cos - margin >= 0, a.dtype))
    coef = (coef * grad_scale(xp, per.shape, reduction, None))[..., None]
    grads = {}
    if "x1" in need:
        grads["x1"] = A.cast_like(xp, coef * (b / den[..., None] - (cos / m1)[..., None] * a), x1)
    if "x2" in need:
        grads["x2"] = A.cast_like(xp, coef * (a / den[..., None] - (cos / m2)[..., None] * b), x2)
    return out, scaled_pullback(xp, grads, _per_vector(xp))
