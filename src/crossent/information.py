"""Information-theoretic losses on probabilities: entropy, cross-entropy, KL and JS divergence.

The family is built from the entropy ``H(p) = -sum_i p_i log p_i`` (Shannon 1948): the
relative entropy (KL divergence) ``D_KL(p || q) = sum_i p_i log(p_i / q_i)`` and the
cross-entropy ``H(p, q) = -sum_i p_i log q_i`` are tied by ``D_KL(p || q) = H(p, q) - H(p)``
(Cover & Thomas, *Elements of Information Theory*, ch. 2). Read the other way round:
minimising ``D_KL(p_data || p_model)`` over the model is minimising the cross-entropy, which
is maximum likelihood. KL is not symmetric; Jensen-Shannon is its symmetrised, bounded
(``<= log 2``) cousin.

Conventions shared by every function here:

* ``p`` and ``q`` are probabilities (in [0, 1], checked), classes along ``axis``; rows are
  *not* renormalised, so the functions are the plain sums of their formulas.
* Natural logarithm (nats), with ``0 log 0 = 0``: a class where ``p = 0`` contributes 0.
  Where ``q = 0`` but ``p > 0``, ``H(p, q)`` and ``D_KL(p || q)`` are ``+inf``, which is the
  mathematically right value (``q`` cannot explain an event that ``p`` says happens).
* ``reduction="mean"`` is per distribution, PyTorch's ``"batchmean"``: sum over the class
  axis, mean over every other axis; ``"none"`` gives one value per distribution (the shape of
  the input without ``axis``); ``"sum"`` sums everything.
* Gradients: each loss has a closed form w.r.t. ``p`` and (but for the entropy) ``q``; it is
  the backward of torch autograd and ``jax.grad``, and :func:`crossent.value_and_grad` /
  :func:`crossent.grad` give it on any backend, w.r.t. the **first** argument ``p`` by
  default (the library-wide convention). Training usually moves the model distribution ``q``
  instead: ``crossent.grad(cross_entropy, argnums=1)`` (or ``kl_divergence``) gives
  ``d/dq = -p / q``. All are partial derivatives on the unconstrained ambient space (each
  ``p_i`` varied independently, not along the simplex), which is why ``+1`` terms appear;
  projected onto the simplex (``sum_i dp_i = 0``) the constants cancel. At the boundary they
  take their one-sided limits: ``+-inf`` where a logarithm of 0 is involved (the values
  ``torch.special.entr``'s autograd also gives).

Maximum likelihood is cross-entropy, on the coin of the textbooks: with heads probability
``theta = 0.6``, ten tosses give six heads with probability ``C(10, 6) 0.6^6 0.4^4 ~ 0.2508``;
the likelihood of one sequence of six heads and four tails is ``exp(-10 BCE(theta))``, so the
maximum-likelihood ``theta`` is the minimiser of the binary cross-entropy, ``0.6``:

    >>> import math
    >>> import numpy as np, crossent
    >>> tosses = np.array([1, 1, 0, 1, 1, 0, 1, 0, 1, 0.0])  # six heads, four tails
    >>> def bce(theta):
    ...     return float(crossent.binary_cross_entropy(np.full(10, theta), tosses))
    >>> round(math.comb(10, 6) * math.exp(-10 * bce(0.6)), 4)  # P(6 heads; theta = 0.6)
    0.2508
    >>> theta = 0.5
    >>> for _ in range(50):  # gradient descent on the BCE, its closed-form gradient
    ...     g = crossent.grad(crossent.binary_cross_entropy)(np.full(10, theta), tosses)
    ...     theta -= 0.2 * float(g.sum())
    >>> round(theta, 6)
    0.6

And the identity ``D_KL(p || q) = H(p, q) - H(p)`` on a worked pair:

    >>> p, q = np.array([0.1, 0.2, 0.7]), np.array([0.3, 0.3, 0.4])
    >>> kl = float(crossent.kl_divergence(p, q))
    >>> h_pq, h_p = float(crossent.cross_entropy(p, q)), float(crossent.entropy(p))
    >>> round(kl, 6), round(h_pq - h_p, 6)
    (0.200777, 0.200777)
"""

from __future__ import annotations

import math
from typing import Any

from . import _array as A
from . import _checks
from ._axes import over_axes
from ._reduce import grad_scale, masked, reduce
from .gradients import Pullback, loss, scaled_pullback

Array = Any

__all__ = [
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "generalized_kl_divergence",
    "js_divergence",
]

_INF = math.inf


def _safe_log(xp: Any, x: Array) -> Array:
    """log x where x > 0 and 0 elsewhere; callers select the right value at x == 0.

    Taking the log of 1 instead of 0 keeps NumPy free of divide-by-zero warnings and keeps
    autograd free of the NaN that ``0 * (-inf)`` would send through an unselected branch.
    """
    return xp.log(xp.where(x > 0, x, xp.ones_like(x)))


def _class_axis(p: Array, axis: int) -> int:
    if p.ndim == 0:
        raise ValueError("p must have a class axis, got a 0-d array")
    return _checks.axis(axis, p.ndim)


def _prepare_one(p: Array, axis: int, reduction: str) -> tuple[Any, Array, Array, int, Any]:
    """Validate and upcast one distribution; returns ``(xp, p, pc, axis, out_dtype)``: ``pc``
    is ``p`` in the compute dtype."""
    xp, p = _checks.loss_inputs(reduction, p=p)
    ax = _class_axis(p, axis)
    _checks.in_unit_interval(xp, p, "p")
    return xp, p, A.upcast(xp, p), ax, p.dtype


def _prepare(p: Array, q: Array, axis: int, reduction: str, values: str = "probabilities"
             ) -> tuple[Any, Array, Array, Array, Array, int, Any]:
    """Validate and upcast two distributions; returns ``(xp, p, q, pc, qc, axis,
    out_dtype)``: ``p`` and ``q`` in one namespace (their dtypes are the gradients'), ``pc``
    and ``qc`` the same in the compute dtype. ``values``: what they must hold,
    "probabilities" (in [0, 1]), "measures" (>= 0) or "logs" (anything)."""
    xp, p, q = A.common(p=p, q=q)
    _checks.floating(xp, p, "p")
    _checks.floating(xp, q, "q")
    _checks.reduction(reduction)
    ax = _class_axis(p, axis)
    _checks.same_shape(p, q, "p", "q")
    for x, name in ((p, "p"), (q, "q")):
        if values == "probabilities":
            _checks.in_unit_interval(xp, x, name)
        elif (values == "measures" and A.concrete(x) and math.prod(x.shape)
              and not bool(xp.min(x) >= 0)):
            raise ValueError(f"{name} must be non-negative (a measure), got a minimum of "
                             f"{float(xp.min(x))}")
    pu, qu = A.upcast(xp, p), A.upcast(xp, q)
    dt = xp.result_type(pu.dtype, qu.dtype)
    out_dtype = xp.result_type(p.dtype, q.dtype)
    return xp, p, q, A.as_float(xp, pu, dt), A.as_float(xp, qu, dt), ax, out_dtype


def _finish(xp: Any, terms: Array, ax: int, reduction: str, out_dtype: Any,
            mask: Array | None = None) -> tuple[Array, Array | float]:
    """Sum the per-class terms over the class axis and reduce; returns (loss, grad scale).
    With a ``where`` mask, "mean" counts the distributions with an element that takes part."""
    per_dist = xp.sum(terms, axis=ax)
    den = None if mask is None else xp.sum(xp.max(mask, axis=ax))
    out = reduce(xp, per_dist, reduction, den)
    scale = grad_scale(xp, per_dist.shape, reduction, den)
    return (xp.astype(out, out_dtype) if out.dtype != out_dtype else out), scale


def _pullback(xp: Any, grads: dict[str, Array], like: dict[str, Array], ax: int) -> Pullback:
    """The per-distribution losses do not interact: each gradient (of the sum, in its
    argument's dtype) times the cotangent, broadcast back over the class axis."""
    grads = {k: A.cast_like(xp, g, like[k]) for k, g in grads.items()}
    return scaled_pullback(xp, grads, lambda c: xp.expand_dims(c, axis=ax))


# --- entropy --------------------------------------------------------------------------------


@loss(wrt=("p",))
def entropy(need: tuple[str, ...], p: Array, *, axis: int = -1, reduction: str = "mean"
            ) -> tuple[Array, Pullback | None]:
    """Shannon entropy of probability distributions, in nats.

    Formula: ``H(p) = -sum_i p_i log p_i`` along ``axis``, with ``0 log 0 = 0``. Gradient
    w.r.t. ``p``: ``-(log p_i + 1)`` (times ``1/N`` for "mean"), ``+inf`` at ``p_i = 0``.

    Args:
        p: probabilities in [0, 1], classes along ``axis``, e.g. ``(N, C)``.
        axis: the class axis.
        reduction: ``"mean"`` over distributions, ``"sum"`` or ``"none"`` (shape of ``p``
            without ``axis``).

    Returns:
        Scalar, or one entropy per distribution; in ``p``'s dtype (fp16/bf16 computed in fp32).

    Raises:
        TypeError: non-floating ``p``.
        ValueError: values outside [0, 1] (or NaN), a 0-d ``p``, bad ``axis`` or ``reduction``.

    Example (a fair coin has 1 bit = log 2 nats; a certain outcome has none):
        >>> import numpy as np, crossent
        >>> entropy(np.array([[0.5, 0.5], [1.0, 0.0]]), reduction="none").round(6).tolist()
        [0.693147, 0.0]
        >>> _, g = crossent.value_and_grad(entropy)(np.array([[0.5, 0.5]]))
        >>> g.round(6).tolist()
        [[-0.306853, -0.306853]]

    Aliases: ``scipy.stats.entropy(p)``, ``scipy.special.entr(p).sum(-1)``,
    ``torch.distributions.Categorical(probs=p).entropy()``, ``torch.special.entr``.

    References: Shannon 1948, "A Mathematical Theory of Communication"; Cover & Thomas,
    *Elements of Information Theory*, ch. 2.
    """
    xp, p, pc, ax, out_dtype = _prepare_one(p, axis, reduction)
    terms = -A.xlogy(xp, pc, pc)  # 0 log 0 = 0
    out, scale = _finish(xp, terms, ax, reduction, out_dtype)
    if not need:
        return out, None
    # d/dp (-p log p) = -(log p + 1), +inf as p -> 0+
    g = xp.where(pc > 0, -(_safe_log(xp, pc) + 1.0), xp.full_like(pc, _INF)) * scale
    return out, _pullback(xp, {"p": g}, {"p": p}, ax)


# --- cross-entropy --------------------------------------------------------------------------


def _neg_p_over_q(xp: Any, pc: Array, qc: Array) -> Array:
    """d/dq of ``-p log q``: ``-p / q``; 0 where p == 0, -inf where p > 0 and q == 0."""
    safe_q = xp.where(qc > 0, qc, xp.ones_like(qc))
    g = xp.where(qc > 0, -pc / safe_q, xp.full_like(qc, -_INF))
    return xp.where(pc == 0, xp.zeros_like(pc), g)


@loss(wrt=("p", "q"))
def cross_entropy(need: tuple[str, ...], p: Array, q: Array, *, axis: int = -1,
                  reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Cross-entropy ``H(p, q)`` of a model distribution ``q`` under a target ``p``, in nats.

    Formula: ``H(p, q) = -sum_i p_i log q_i = H(p) + D_KL(p || q)``, with
    ``0 log q = 0``; ``+inf`` where ``q_i = 0 < p_i``. For one-hot ``p`` it is the negative
    log-likelihood ``-log q_y``; as a function of ``q`` it is minimised at ``q = p``
    (minimising cross-entropy is maximum likelihood: Goodfellow et al., *Deep Learning* 5.5).

    Gradients (times ``1/N`` for "mean"): w.r.t. the target ``p`` (the first argument, the
    library convention) ``-log q_i``, ``+inf`` where ``q_i = 0``; w.r.t. the model
    distribution ``q`` (``crossent.grad(cross_entropy, argnums=1)``, the one a model trains
    on) ``-p_i / q_i``, 0 where ``p_i = 0`` and ``-inf`` where ``p_i > 0 = q_i``.

    Args:
        p: target probabilities in [0, 1], classes along ``axis``, e.g. ``(N, C)``.
        q: model probabilities in [0, 1], same shape as ``p``.
        axis: the class axis.
        reduction: ``"mean"`` over distributions (PyTorch's "batchmean"), ``"sum"`` or
            ``"none"`` (shape of ``p`` without ``axis``).

    Returns:
        Scalar, or one value per distribution, in the promoted dtype of ``p`` and ``q``.

    Raises:
        TypeError: non-floating ``p`` or ``q``.
        ValueError: shape mismatch, values outside [0, 1], bad ``axis`` or ``reduction``.

    Example (the coin example, 10 tosses, 6 heads; ``theta = 0.6`` is the likelihood's
    maximum, so the cross-entropy is lowest there and equals ``H(p)``):
        >>> import numpy as np, crossent
        >>> p = np.array([0.6, 0.4])
        >>> [round(float(cross_entropy(p, np.array([t, 1 - t]))), 4) for t in (0.5, 0.6, 0.7)]
        [0.6931, 0.673, 0.6956]
        >>> _, (gp, gq) = crossent.value_and_grad(cross_entropy, argnums=(0, 1))(
        ...     np.array([1.0, 0.0]), np.array([0.5, 0.5]))
        >>> gp.round(6).tolist(), gq.tolist()
        ([0.693147, 0.693147], [-2.0, 0.0])

    Aliases: "Cross-Entropy Loss" / Logistic Loss on probabilities in the usual naming
    (Categorical Cross-Entropy = Softmax Loss = softmax + this); Keras
    ``categorical_crossentropy(from_logits=False)`` (which also renormalises and clips ``q``);
    PyTorch ``F.nll_loss(q.log(), y)`` for one-hot ``p``; Optax ``softmax_cross_entropy``
    takes logits instead of ``q``.

    References: Goodfellow et al., *Deep Learning* 3.13 (cross-entropy and KL) and 5.5
    (maximum likelihood); Cover & Thomas, *Elements of Information Theory*, ch. 2.
    """
    xp, p, q, pc, qc, ax, out_dtype = _prepare(p, q, axis, reduction)
    # -p log q: 0 where p == 0 (even if q == 0), +inf where p > 0 and q == 0; xlogy keeps
    # the derivative w.r.t. p (-log q) where p == 0
    terms = -A.xlogy(xp, pc, qc)
    out, scale = _finish(xp, terms, ax, reduction, out_dtype)
    if not need:
        return out, None
    grads = {}
    if "p" in need:
        grads["p"] = xp.where(qc > 0, -_safe_log(xp, qc), xp.full_like(pc, _INF)) * scale
    if "q" in need:
        grads["q"] = _neg_p_over_q(xp, pc, qc) * scale
    return out, _pullback(xp, grads, {"p": p, "q": q}, ax)


# --- Kullback-Leibler divergence ------------------------------------------------------------


@loss(wrt=("p", "q"))
def kl_divergence(need: tuple[str, ...], p: Array, q: Array, *,
                  axis: int | tuple[int, ...] = -1, reduction: str = "mean",
                  elementwise: bool = False, log_inputs: bool = False,
                  where: Array | None = None) -> tuple[Array, Pullback | None]:
    """Kullback-Leibler divergence ``D_KL(p || q)`` (relative entropy), in nats.

    Formula: ``D_KL(p || q) = sum_i p_i log(p_i / q_i) = H(p, q) - H(p)``. Classes
    with ``p_i = 0`` contribute 0; ``+inf`` where ``q_i = 0 < p_i``. Not symmetric: mind the
    direction; ``p`` is the reference ("true") distribution, ``q`` the approximation.

    Gradients (times ``1/N`` for "mean"): w.r.t. ``p`` (the first argument)
    ``log(p_i / q_i) + 1``, an ambient-space partial derivative (the ``+1`` cancels along the
    simplex), ``-inf`` at ``p_i = 0 < q_i`` and ``+inf`` where ``q_i = 0``; w.r.t. ``q``
    (``crossent.grad(kl_divergence, argnums=1)``) ``-p_i / q_i``, the same as the
    cross-entropy's since ``H(p)`` does not depend on ``q``: 0 where ``p_i = 0``,
    ``-inf`` where ``p_i > 0 = q_i``.

    With ``log_inputs=True`` both arguments are log-probabilities ``a = log p``,
    ``b = log q`` (Optax's ``kl_divergence_with_log_targets``): ``sum_i e^{a_i} (a_i - b_i)``,
    finite for any finite inputs, with gradients ``e^{a_i} (a_i - b_i + 1)`` and ``-e^{a_i}``.

    Args:
        p: reference probabilities in [0, 1], classes along ``axis``, e.g. ``(N, C)`` (their
            logs with ``log_inputs``).
        q: approximating probabilities in [0, 1], same shape as ``p`` (their logs with
            ``log_inputs``).
        axis: the class axis, or a tuple of axes that together hold the classes (Optax's
            ``axis=(1, 2)``).
        reduction: ``"mean"`` over distributions, ``"sum"`` or ``"none"`` (shape of ``p``
            without ``axis``). "mean" equals PyTorch's ``reduction="batchmean"`` for 2-D
            inputs; for ``(N, d, C)`` inputs it divides by ``N * d`` distributions where
            PyTorch's "batchmean" divides by ``N``, and PyTorch's "mean" divides by the number
            of *elements* ``N * C`` (which is not a KL of anything).
        elementwise: reduce the terms ``p_i log(p_i / q_i)`` themselves instead of the
            per-distribution sums: PyTorch's ``F.kl_div`` / ``KLDivLoss`` semantics, where
            "none" gives the terms (the shape of ``p``) and "mean" their mean over every
            element.
        log_inputs: ``p`` and ``q`` are log-probabilities (see above).
        where: optional mask of the elements that take part (Optax's ``where``): ``p``'s
            shape, or one value per distribution; excluded elements add nothing to the value
            or the gradient, and "mean" counts only the distributions with an element left
            (the elements left, with ``elementwise``).

    Returns:
        Scalar, or one divergence per distribution (per element with ``elementwise``), in
        the promoted dtype of ``p`` and ``q``.

    Raises:
        TypeError: non-floating ``p`` or ``q``.
        ValueError: shape mismatch, values outside [0, 1], bad ``axis`` or ``reduction``.

    Example:
        >>> import numpy as np, crossent
        >>> p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
        >>> round(float(kl_divergence(p, q)), 6), float(kl_divergence(q, p))
        (0.693147, inf)
        >>> crossent.grad(kl_divergence)(np.array([0.5, 0.5]), np.array([0.5, 0.5])).tolist()
        [1.0, 1.0]
        >>> crossent.grad(kl_divergence, argnums=1)(np.array([[0.5, 0.5]]),
        ...                                         np.array([[0.25, 0.75]])).round(6)
        array([[-2.      , -0.666667]])
        >>> kl_divergence(p, q, reduction="none", elementwise=True).round(6)  # F.kl_div's
        array([0.346574, 0.346574, 0.      ])

    Aliases: relative entropy, information gain; PyTorch ``F.kl_div(q.log(), p,
    reduction="batchmean")`` / ``nn.KLDivLoss`` (note the order: input is ``log q``, target
    ``p``); Optax ``kl_divergence(log_predictions=log q, targets=p)`` and
    ``kl_divergence_with_log_targets(log q, log p)`` (``log_inputs=True``); Keras ``KLDivergence``
    (``(y_true=p, y_pred=q)``, clipped to ``[1e-7, 1]``); ``scipy.special.rel_entr(p, q).sum()``,
    ``scipy.stats.entropy(p, q)``.

    References: Kullback & Leibler 1951, "On Information and Sufficiency"; Cover &
    Thomas, *Elements of Information Theory*, ch. 2; Goodfellow et al., *Deep Learning* 3.13.
    """
    if isinstance(axis, tuple):
        return over_axes(kl_divergence.with_pullback, need, {"p": p, "q": q}, ("p", "q"), axis,
                         {"reduction": reduction, "elementwise": elementwise,
                          "log_inputs": log_inputs, "where": where})
    xp, p, q, pc, qc, ax, out_dtype = _prepare(p, q, axis, reduction,
                                               "logs" if log_inputs else "probabilities")
    mask = _checks.where_mask(xp, where, pc.shape, ax, pc.dtype, A.device_of(pc))
    zero, inf = xp.zeros_like(pc), xp.full_like(pc, _INF)
    if log_inputs:
        ep = xp.exp(pc)
        # e^a (a - b): a vanishing reference weight silences even an infinite log ratio
        terms = xp.where(ep == 0, zero, ep * (pc - qc))
    else:
        log_p, log_q = _safe_log(xp, pc), _safe_log(xp, qc)
        # p (log p - log q) (the form of torch.kl_div and optax): no p / q overflow for tiny q
        terms = xp.where(pc == 0, zero, xp.where(qc > 0, pc * (log_p - log_q), inf))
    terms = masked(xp, terms, mask)
    if elementwise:
        den = None if mask is None else xp.sum(mask)
        out = reduce(xp, terms, reduction, den)
        out = xp.astype(out, out_dtype) if out.dtype != out_dtype else out
        scale = grad_scale(xp, terms.shape, reduction, den)
    else:
        out, scale = _finish(xp, terms, ax, reduction, out_dtype, mask)
    if not need:
        return out, None
    grads = {}
    if "p" in need:
        if log_inputs:
            gp = xp.where(ep == 0, zero, ep * (pc - qc + 1.0))
        else:
            # d/dp [p log p - p log q] = log p - log q + 1: -inf as p -> 0+ (q > 0), +inf
            # where q == 0
            gp = xp.where(qc == 0, inf, xp.where(pc == 0, -inf, log_p - log_q + 1.0))
        grads["p"] = gp
    if "q" in need:
        grads["q"] = -ep if log_inputs else _neg_p_over_q(xp, pc, qc)
    grads = {k: masked(xp, g, mask) * scale for k, g in grads.items()}
    if elementwise:  # one cotangent per element: no broadcast over the class axis
        return out, scaled_pullback(xp, {k: A.cast_like(xp, g, {"p": p, "q": q}[k])
                                         for k, g in grads.items()}, lambda c: c)
    return out, _pullback(xp, grads, {"p": p, "q": q}, ax)


@loss(wrt=("p", "q"))
def generalized_kl_divergence(need: tuple[str, ...], p: Array, q: Array, *,
                              axis: int | tuple[int, ...] = -1, reduction: str = "mean",
                              where: Array | None = None) -> tuple[Array, Pullback | None]:
    """Generalized KL divergence of non-negative measures (no normalisation needed).

    Formula: ``D(p || q) = sum_i p_i log(p_i / q_i) - p_i + q_i``, the Bregman divergence
    of ``x log x - x``; it equals ``D_KL(p || q)`` when both sum to 1, and is 0 only at
    ``p = q``. Terms with ``p_i = 0`` are ``q_i``; ``+inf`` where ``q_i = 0 < p_i``.
    Gradients (times ``1/N`` for "mean"): w.r.t. ``p`` ``log(p_i / q_i)``; w.r.t. ``q``
    ``1 - p_i / q_i``; the backward on every backend.

    Args:
        p: reference measure, non-negative, classes along ``axis``.
        q: approximating measure, non-negative, same shape as ``p``.
        axis: the class axis, or a tuple of axes.
        reduction: ``"mean"`` over distributions, ``"sum"`` or ``"none"``.
        where: optional mask of the elements that take part (Optax's ``where``), as for
            :func:`kl_divergence`.

    Returns:
        Scalar, or one divergence per distribution, in the promoted dtype of ``p`` and ``q``.

    Raises:
        TypeError: non-floating ``p`` or ``q``.
        ValueError: shape mismatch, negative values, bad ``axis``, ``where`` or
            ``reduction``.

    Example:
        >>> import numpy as np, crossent
        >>> p, q = np.array([2.0, 1.0, 0.0]), np.array([1.0, 1.0, 0.5])
        >>> round(float(generalized_kl_divergence(p, q)), 6)  # 2 log 2 - 2 + 1 + 0.5
        0.886294
        >>> crossent.grad(generalized_kl_divergence, argnums=1)(p, q).tolist()
        [-1.0, 0.0, 1.0]

    Aliases: I-divergence (Csiszar); Optax ``generalized_kl_divergence(log_predictions=log q,
    targets=p)`` (and its deprecated name ``convex_kl_divergence``).

    References: Boyd & Vandenberghe, *Convex Optimization*, p. 90; Bregman 1967; Lee & Seung
    2001, "Algorithms for non-negative matrix factorization" (the NMF divergence).
    """
    if isinstance(axis, tuple):
        return over_axes(generalized_kl_divergence.with_pullback, need, {"p": p, "q": q},
                         ("p", "q"), axis, {"reduction": reduction, "where": where})
    xp, p, q, pc, qc, ax, out_dtype = _prepare(p, q, axis, reduction, "measures")
    mask = _checks.where_mask(xp, where, pc.shape, ax, pc.dtype, A.device_of(pc))
    inf = xp.full_like(pc, _INF)
    log_p, log_q = _safe_log(xp, pc), _safe_log(xp, qc)
    terms = xp.where(pc == 0, qc, xp.where(qc > 0, pc * (log_p - log_q) - pc + qc, inf))
    terms = masked(xp, terms, mask)
    out, scale = _finish(xp, terms, ax, reduction, out_dtype, mask)
    if not need:
        return out, None
    grads = {}
    if "p" in need:
        grads["p"] = xp.where(qc == 0, inf, xp.where(pc == 0, -inf, log_p - log_q))
    if "q" in need:
        safe_q = xp.where(qc > 0, qc, xp.ones_like(qc))
        grads["q"] = xp.where(qc > 0, 1.0 - pc / safe_q,
                              xp.where(pc > 0, -inf, xp.ones_like(qc)))
    grads = {k: masked(xp, g, mask) * scale for k, g in grads.items()}
    return out, _pullback(xp, grads, {"p": p, "q": q}, ax)


# --- Jensen-Shannon divergence --------------------------------------------------------------


def _js_slope(xp: Any, a: Array, b: Array, log_a: Array, log_m: Array) -> Array:
    """d JS / d a for ``JS(a, b)``: ``0.5 log(a / m)``. JS = 0.5 sum a log a + 0.5 sum b log b
    - sum m log m, so the +1 terms cancel. At a = 0 it is -inf where b > 0 and 0.5 log 2
    where b = 0 (m = a / 2 there, and the loss is exactly linear in a)."""
    edge = xp.where(b > 0, xp.full_like(a, -_INF), xp.full_like(a, 0.5 * math.log(2.0)))
    return xp.where(a > 0, 0.5 * (log_a - log_m), edge)


@loss(wrt=("p", "q"))
def js_divergence(need: tuple[str, ...], p: Array, q: Array, *, axis: int = -1,
                  reduction: str = "mean") -> tuple[Array, Pullback | None]:
    """Jensen-Shannon divergence, the symmetric and bounded version of KL, in nats.

    Formula: ``JS(p, q) = 0.5 D_KL(p || m) + 0.5 D_KL(q || m)`` with ``m = (p + q) / 2``;
    ``0 <= JS <= log 2``, symmetric in ``p`` and ``q``, finite even where supports differ.
    Gradient w.r.t. ``p``: ``0.5 log(p_i / m_i)`` (times ``1/N`` for "mean"), ``-inf`` at
    ``p_i = 0 < q_i`` and ``0.5 log 2`` at ``p_i = q_i = 0``; w.r.t. ``q``
    (``crossent.grad(js_divergence, argnums=1)``) the same with the roles swapped.

    Args:
        p: probabilities in [0, 1], classes along ``axis``, e.g. ``(N, C)``.
        q: probabilities in [0, 1], same shape as ``p``.
        axis: the class axis.
        reduction: ``"mean"`` over distributions, ``"sum"`` or ``"none"`` (shape of ``p``
            without ``axis``).

    Returns:
        Scalar, or one divergence per distribution, in the promoted dtype of ``p`` and ``q``.

    Raises:
        TypeError: non-floating ``p`` or ``q``.
        ValueError: shape mismatch, values outside [0, 1], bad ``axis`` or ``reduction``.

    Example (disjoint supports reach the bound log 2):
        >>> import numpy as np, crossent
        >>> p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
        >>> round(float(js_divergence(p, q)), 6), round(float(js_divergence(p, p)), 6)
        (0.693147, 0.0)
        >>> crossent.grad(js_divergence)(np.array([0.5, 0.5]), np.array([0.5, 0.5])).tolist()
        [0.0, 0.0]

    Aliases: Jensen-Shannon divergence / information radius; ``scipy.spatial.distance.
    jensenshannon(p, q) ** 2`` (SciPy returns the *distance*, the square root, and
    renormalises its inputs).

    References: Lin 1991, "Divergence measures based on the Shannon entropy"; Goodfellow et
    al. 2014 (GANs minimise a JS divergence).
    """
    xp, p, q, pc, qc, ax, out_dtype = _prepare(p, q, axis, reduction)
    m = 0.5 * (pc + qc)
    log_p, log_q, log_m = _safe_log(xp, pc), _safe_log(xp, qc), _safe_log(xp, m)
    zero = xp.zeros_like(pc)
    # m > 0 wherever p > 0 or q > 0, so both KL terms are always finite: JS <= log 2
    kl_pm = xp.where(pc == 0, zero, pc * (log_p - log_m))
    kl_qm = xp.where(qc == 0, zero, qc * (log_q - log_m))
    terms = 0.5 * (kl_pm + kl_qm)
    out, scale = _finish(xp, terms, ax, reduction, out_dtype)
    if not need:
        return out, None
    grads = {}
    if "p" in need:
        grads["p"] = _js_slope(xp, pc, qc, log_p, log_m) * scale
    if "q" in need:
        grads["q"] = _js_slope(xp, qc, pc, log_q, log_m) * scale
    return out, _pullback(xp, grads, {"p": p, "q": q}, ax)
