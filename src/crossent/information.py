"""Information-theoretic losses on probabilities: entropy, cross-entropy, KL and JS divergence.

Seed 001 builds the family from the entropy ``H(p) = -sum_i p_i log p_i``: the relative
entropy (KL divergence) ``D_KL(p || q) = sum_i p_i log(p_i / q_i)`` and the cross-entropy
``H(p, q) = -sum_i p_i log q_i`` are tied by ``D_KL(p || q) = H(p, q) - H(p)``. Seed 003 reads
it the other way round: minimising ``D_KL(p_data || p_model)`` over the model is minimising the
cross-entropy, which is maximum likelihood. KL is not symmetric; Jensen-Shannon is its
symmetrised, bounded (``<= log 2``) cousin.

Conventions shared by every function here:

* ``p`` and ``q`` are probabilities (in [0, 1], checked), classes along ``axis``; rows are
  *not* renormalised, so the functions are the plain sums of their formulas.
* Natural logarithm (nats), with ``0 log 0 = 0``: a class where ``p = 0`` contributes 0.
  Where ``q = 0`` but ``p > 0``, ``H(p, q)`` and ``D_KL(p || q)`` are ``+inf``, which is the
  mathematically right value (``q`` cannot explain an event that ``p`` says happens).
* ``reduction="mean"`` is per distribution, PyTorch's ``"batchmean"``: sum over the class
  axis, mean over every other axis; ``"none"`` gives one value per distribution (the shape of
  the input without ``axis``); ``"sum"`` sums everything.
* Gradients: ``*_value_and_grad`` (registered for :func:`crossent.value_and_grad`) and
  ``*_grad`` differentiate w.r.t. the **first** argument ``p``, the library-wide convention.
  Training usually moves the model distribution ``q`` instead, so ``cross_entropy_grad_q``
  and ``kl_divergence_grad_q`` give ``d/dq = -p / q``. All are partial derivatives on the
  unconstrained ambient space (each ``p_i`` varied independently, not along the simplex),
  which is why ``+1`` terms appear; projected onto the simplex (``sum_i dp_i = 0``) the
  constants cancel. At the boundary they take their one-sided limits: ``+-inf`` where a
  logarithm of 0 is involved (the values ``torch.special.entr``'s autograd also gives).
"""

from __future__ import annotations

import math
from typing import Any

from . import _array as A
from . import _checks
from ._reduce import grad_scale, reduce
from .gradients import closed_form

Array = Any

__all__ = [
    "entropy",
    "entropy_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_grad_q",
    "kl_divergence",
    "kl_divergence_grad",
    "kl_divergence_grad_q",
    "js_divergence",
    "js_divergence_grad",
]

_INF = math.inf


def _safe_log(xp: Any, x: Array) -> Array:
    """log x where x > 0 and 0 elsewhere; callers select the right value at x == 0.

    Taking the log of 1 instead of 0 keeps NumPy free of divide-by-zero warnings and keeps
    autograd free of the NaN that ``0 * (-inf)`` would send through an unselected branch.
    """
    return xp.log(xp.where(x > 0, x, xp.ones_like(x)))


def _prepare(p: Array, q: Array | None, axis: int, reduction: str):
    """Validate and upcast; returns (xp, p, q, axis, out_dtype), p and q in the compute dtype."""
    xp, p, q = A.common(p=p, q=q)
    _checks.floating(xp, p, "p")
    if q is not None:
        _checks.floating(xp, q, "q")
    _checks.reduction(reduction)
    if p.ndim == 0:
        raise ValueError("p must have a class axis, got a 0-d array")
    ax = _checks.axis(axis, p.ndim)
    if q is not None:
        _checks.same_shape(p, q, "p", "q")
    _checks.in_unit_interval(xp, p, "p")
    if q is not None:
        _checks.in_unit_interval(xp, q, "q")
    pu = A.upcast(xp, p)
    if q is None:
        return xp, pu, None, ax, p.dtype
    qu = A.upcast(xp, q)
    dt = xp.result_type(pu.dtype, qu.dtype)
    out_dtype = xp.result_type(p.dtype, q.dtype)
    return xp, A.as_float(xp, pu, dt), A.as_float(xp, qu, dt), ax, out_dtype


def _finish(xp: Any, terms: Array, ax: int, reduction: str, out_dtype: Any):
    """Sum the per-class terms over the class axis and reduce; returns (loss, grad scale)."""
    per_dist = xp.sum(terms, axis=ax)
    out = reduce(xp, per_dist, reduction)
    scale = grad_scale(xp, per_dist.shape, reduction, None)
    return (xp.astype(out, out_dtype) if out.dtype != out_dtype else out), scale


# --- entropy --------------------------------------------------------------------------------


def _entropy(p, axis, reduction, want_grad):
    xp, pc, _, ax, out_dtype = _prepare(p, None, axis, reduction)
    terms = -A.xlogy(xp, pc, pc)  # 0 log 0 = 0
    out, scale = _finish(xp, terms, ax, reduction, out_dtype)
    if not want_grad:
        return out, None
    # d/dp (-p log p) = -(log p + 1), +inf as p -> 0+
    g = xp.where(pc > 0, -(_safe_log(xp, pc) + 1.0), xp.full_like(pc, _INF)) * scale
    return out, A.cast_like(xp, g, p)


def entropy(p: Array, *, axis: int = -1, reduction: str = "mean") -> Array:
    """Shannon entropy of probability distributions, in nats.

    Formula: ``H(p) = -sum_i p_i log p_i`` along ``axis``, with ``0 log 0 = 0``.

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
        >>> import numpy as np
        >>> entropy(np.array([[0.5, 0.5], [1.0, 0.0]]), reduction="none").round(6).tolist()
        [0.693147, 0.0]

    Aliases: ``scipy.stats.entropy(p)``, ``scipy.special.entr(p).sum(-1)``,
    ``torch.distributions.Categorical(probs=p).entropy()``, ``torch.special.entr``.

    References: Shannon 1948, "A Mathematical Theory of Communication"; seed 001; Cover &
    Thomas, *Elements of Information Theory*, ch. 2.
    """
    return _entropy(p, axis, reduction, False)[0]


@closed_form(entropy)
def entropy_value_and_grad(p: Array, *, axis: int = -1,
                           reduction: str = "mean") -> tuple[Array, Array]:
    """Entropy and its gradient w.r.t. ``p``: ``-(log p + 1)`` (``+inf`` at ``p = 0``).

    Example:
        >>> import numpy as np
        >>> _, g = entropy_value_and_grad(np.array([[0.5, 0.5]]))
        >>> g.round(6).tolist()
        [[-0.306853, -0.306853]]
    """
    return _entropy(p, axis, reduction, True)


def entropy_grad(p: Array, **options: Any) -> Array:
    """Closed-form gradient of :func:`entropy` w.r.t. ``p``: ``-(log p + 1)``."""
    return entropy_value_and_grad(p, **options)[1]


# --- cross-entropy --------------------------------------------------------------------------


def _neg_p_over_q(xp, pc, qc):
    """d/dq of ``-p log q``: ``-p / q``; 0 where p == 0, -inf where p > 0 and q == 0."""
    safe_q = xp.where(qc > 0, qc, xp.ones_like(qc))
    g = xp.where(qc > 0, -pc / safe_q, xp.full_like(qc, -_INF))
    return xp.where(pc == 0, xp.zeros_like(pc), g)


def _cross_entropy(p, q, axis, reduction, want_grad):
    xp, pc, qc, ax, out_dtype = _prepare(p, q, axis, reduction)
    log_q = _safe_log(xp, qc)
    inf = xp.full_like(pc, _INF)
    # -p log q: 0 where p == 0 (even if q == 0), +inf where p > 0 and q == 0; xlogy keeps
    # the derivative w.r.t. p (-log q) where p == 0
    terms = -A.xlogy(xp, pc, qc)
    out, scale = _finish(xp, terms, ax, reduction, out_dtype)
    if want_grad is None:
        return out, None
    if want_grad == "p":
        return out, A.cast_like(xp, xp.where(qc > 0, -log_q, inf) * scale, p)
    return out, A.cast_like(xp, _neg_p_over_q(xp, pc, qc) * scale, q)


def cross_entropy(p: Array, q: Array, *, axis: int = -1, reduction: str = "mean") -> Array:
    """Cross-entropy ``H(p, q)`` of a model distribution ``q`` under a target ``p``, in nats.

    Formula: ``H(p, q) = -sum_i p_i log q_i = H(p) + D_KL(p || q)`` (seed 001), with
    ``0 log q = 0``; ``+inf`` where ``q_i = 0 < p_i``. For one-hot ``p`` it is the negative
    log-likelihood ``-log q_y``; as a function of ``q`` it is minimised at ``q = p`` (seed 003:
    minimising cross-entropy is maximum likelihood).

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

    Example (seed 003's coin: 6 heads in 10 throws; ``theta = 0.6`` is the likelihood's
    maximum, so the cross-entropy is lowest there and equals ``H(p)``):
        >>> import numpy as np
        >>> p = np.array([0.6, 0.4])
        >>> [round(float(cross_entropy(p, np.array([t, 1 - t]))), 4) for t in (0.5, 0.6, 0.7)]
        [0.6931, 0.673, 0.6956]

    Aliases: seed 000's "Cross-Entropy Loss" / Logistic Loss on probabilities; Keras
    ``categorical_crossentropy(from_logits=False)`` (which also renormalises and clips ``q``);
    PyTorch ``F.nll_loss(q.log(), y)`` for one-hot ``p``; Optax ``softmax_cross_entropy``
    takes logits instead of ``q``.

    References: seeds 001 and 003; Goodfellow et al., *Deep Learning* 5.5.
    """
    return _cross_entropy(p, q, axis, reduction, None)[0]


@closed_form(cross_entropy)
def cross_entropy_value_and_grad(p: Array, q: Array, *, axis: int = -1,
                                 reduction: str = "mean") -> tuple[Array, Array]:
    """Cross-entropy and its gradient w.r.t. the FIRST argument ``p``: ``-log q``.

    That is the library-wide convention; the gradient a model trains on is w.r.t. ``q``, see
    :func:`cross_entropy_grad_q`. Where ``q = 0`` the gradient is ``+inf``.

    Example:
        >>> import numpy as np
        >>> _, g = cross_entropy_value_and_grad(np.array([1.0, 0.0]), np.array([0.5, 0.5]))
        >>> g.round(6).tolist()
        [0.693147, 0.693147]
    """
    return _cross_entropy(p, q, axis, reduction, "p")


def cross_entropy_grad(p: Array, q: Array, **options: Any) -> Array:
    """Closed-form gradient of :func:`cross_entropy` w.r.t. ``p`` (``-log q``)."""
    return cross_entropy_value_and_grad(p, q, **options)[1]


def cross_entropy_grad_q(p: Array, q: Array, *, axis: int = -1,
                         reduction: str = "mean") -> Array:
    """Closed-form gradient of :func:`cross_entropy` w.r.t. the model distribution ``q``.

    Formula: ``d H(p, q) / d q_i = -p_i / q_i`` (times ``1/N`` for "mean"); 0 where ``p_i = 0``
    and ``-inf`` where ``p_i > 0 = q_i``. Same options as :func:`cross_entropy`.

    Example:
        >>> import numpy as np
        >>> cross_entropy_grad_q(np.array([1.0, 0.0]), np.array([0.5, 0.5])).tolist()
        [-2.0, 0.0]
    """
    return _cross_entropy(p, q, axis, reduction, "q")[1]


# --- Kullback-Leibler divergence ------------------------------------------------------------


def _kl(p, q, axis, reduction, want_grad):
    xp, pc, qc, ax, out_dtype = _prepare(p, q, axis, reduction)
    log_p, log_q = _safe_log(xp, pc), _safe_log(xp, qc)
    zero, inf = xp.zeros_like(pc), xp.full_like(pc, _INF)
    # p (log p - log q) (the form of torch.kl_div and optax): no p / q overflow for tiny q
    terms = xp.where(pc == 0, zero, xp.where(qc > 0, pc * (log_p - log_q), inf))
    out, scale = _finish(xp, terms, ax, reduction, out_dtype)
    if want_grad is None:
        return out, None
    if want_grad == "q":
        return out, A.cast_like(xp, _neg_p_over_q(xp, pc, qc) * scale, q)
    # d/dp [p log p - p log q] = log p - log q + 1: -inf as p -> 0+ (q > 0), +inf where q == 0
    g = xp.where(qc == 0, inf, xp.where(pc == 0, -inf, log_p - log_q + 1.0))
    return out, A.cast_like(xp, g * scale, p)


def kl_divergence(p: Array, q: Array, *, axis: int = -1, reduction: str = "mean") -> Array:
    """Kullback-Leibler divergence ``D_KL(p || q)`` (relative entropy), in nats.

    Formula: ``D_KL(p || q) = sum_i p_i log(p_i / q_i) = H(p, q) - H(p)`` (seed 001). Classes
    with ``p_i = 0`` contribute 0; ``+inf`` where ``q_i = 0 < p_i``. Not symmetric: mind the
    direction (seed 001); ``p`` is the reference ("true") distribution, ``q`` the approximation.

    Args:
        p: reference probabilities in [0, 1], classes along ``axis``, e.g. ``(N, C)``.
        q: approximating probabilities in [0, 1], same shape as ``p``.
        axis: the class axis.
        reduction: ``"mean"`` over distributions, ``"sum"`` or ``"none"`` (shape of ``p``
            without ``axis``). "mean" equals PyTorch's ``reduction="batchmean"`` for 2-D
            inputs; for ``(N, d, C)`` inputs it divides by ``N * d`` distributions where
            PyTorch's "batchmean" divides by ``N``, and PyTorch's "mean" divides by the number
            of *elements* ``N * C`` (which is not a KL of anything).

    Returns:
        Scalar, or one divergence per distribution, in the promoted dtype of ``p`` and ``q``.

    Raises:
        TypeError: non-floating ``p`` or ``q``.
        ValueError: shape mismatch, values outside [0, 1], bad ``axis`` or ``reduction``.

    Example:
        >>> import numpy as np
        >>> p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
        >>> round(float(kl_divergence(p, q)), 6), float(kl_divergence(q, p))
        (0.693147, inf)

    Aliases: relative entropy, information gain; PyTorch ``F.kl_div(q.log(), p,
    reduction="batchmean")`` / ``nn.KLDivLoss`` (note the order: input is ``log q``, target
    ``p``); Optax ``kl_divergence(log_predictions=log q, targets=p)``; Keras ``KLDivergence``
    (``(y_true=p, y_pred=q)``, clipped to ``[1e-7, 1]``); ``scipy.special.rel_entr(p, q).sum()``,
    ``scipy.stats.entropy(p, q)``.

    References: Kullback & Leibler 1951, "On Information and Sufficiency"; seeds 001, 003.
    """
    return _kl(p, q, axis, reduction, None)[0]


@closed_form(kl_divergence)
def kl_divergence_value_and_grad(p: Array, q: Array, *, axis: int = -1,
                                 reduction: str = "mean") -> tuple[Array, Array]:
    """KL divergence and its gradient w.r.t. the FIRST argument ``p``: ``log(p / q) + 1``.

    Ambient-space partial derivative (the ``+1`` cancels along the simplex); ``-inf`` at
    ``p_i = 0 < q_i`` and ``+inf`` where ``q_i = 0``. For the gradient w.r.t. the model
    distribution ``q`` use :func:`kl_divergence_grad_q`.

    Example:
        >>> import numpy as np
        >>> _, g = kl_divergence_value_and_grad(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
        >>> g.tolist()
        [1.0, 1.0]
    """
    return _kl(p, q, axis, reduction, "p")


def kl_divergence_grad(p: Array, q: Array, **options: Any) -> Array:
    """Closed-form gradient of :func:`kl_divergence` w.r.t. ``p`` (``log(p / q) + 1``)."""
    return kl_divergence_value_and_grad(p, q, **options)[1]


def kl_divergence_grad_q(p: Array, q: Array, *, axis: int = -1,
                         reduction: str = "mean") -> Array:
    """Closed-form gradient of :func:`kl_divergence` w.r.t. ``q``: ``-p / q``.

    The same as :func:`cross_entropy_grad_q`, since ``D_KL(p || q) = H(p, q) - H(p)`` and
    ``H(p)`` does not depend on ``q`` (seed 003). 0 where ``p_i = 0``; ``-inf`` where
    ``p_i > 0 = q_i``; times ``1/N`` for "mean".

    Example:
        >>> import numpy as np
        >>> kl_divergence_grad_q(np.array([[0.5, 0.5]]), np.array([[0.25, 0.75]])).round(6)
        array([[-2.      , -0.666667]])
    """
    return _kl(p, q, axis, reduction, "q")[1]


# --- Jensen-Shannon divergence --------------------------------------------------------------


def _js(p, q, axis, reduction, want_grad):
    xp, pc, qc, ax, out_dtype = _prepare(p, q, axis, reduction)
    m = 0.5 * (pc + qc)
    log_p, log_q, log_m = _safe_log(xp, pc), _safe_log(xp, qc), _safe_log(xp, m)
    zero = xp.zeros_like(pc)
    # m > 0 wherever p > 0 or q > 0, so both KL terms are always finite: JS <= log 2
    kl_pm = xp.where(pc == 0, zero, pc * (log_p - log_m))
    kl_qm = xp.where(qc == 0, zero, qc * (log_q - log_m))
    terms = 0.5 * (kl_pm + kl_qm)
    out, scale = _finish(xp, terms, ax, reduction, out_dtype)
    if not want_grad:
        return out, None
    # JS = 0.5 sum p log p + 0.5 sum q log q - sum m log m, so d/dp = 0.5 log(p / m): the +1
    # terms cancel. At p = 0 it is -inf where q > 0 and 0.5 log 2 where q = 0 (m = p / 2).
    edge = xp.where(qc > 0, xp.full_like(pc, -_INF), xp.full_like(pc, 0.5 * math.log(2.0)))
    g = xp.where(pc > 0, 0.5 * (log_p - log_m), edge)
    return out, A.cast_like(xp, g * scale, p)


def js_divergence(p: Array, q: Array, *, axis: int = -1, reduction: str = "mean") -> Array:
    """Jensen-Shannon divergence, the symmetric and bounded version of KL, in nats.

    Formula: ``JS(p, q) = 0.5 D_KL(p || m) + 0.5 D_KL(q || m)`` with ``m = (p + q) / 2``;
    ``0 <= JS <= log 2``, symmetric in ``p`` and ``q``, finite even where supports differ.

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
        >>> import numpy as np
        >>> p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
        >>> round(float(js_divergence(p, q)), 6), round(float(js_divergence(p, p)), 6)
        (0.693147, 0.0)

    Aliases: Jensen-Shannon divergence / information radius; ``scipy.spatial.distance.
    jensenshannon(p, q) ** 2`` (SciPy returns the *distance*, the square root, and
    renormalises its inputs).

    References: Lin 1991, "Divergence measures based on the Shannon entropy"; Goodfellow et
    al. 2014 (GANs minimise a JS divergence).
    """
    return _js(p, q, axis, reduction, False)[0]


@closed_form(js_divergence)
def js_divergence_value_and_grad(p: Array, q: Array, *, axis: int = -1,
                                 reduction: str = "mean") -> tuple[Array, Array]:
    """JS divergence and its gradient w.r.t. ``p``: ``0.5 log(p / m)``, ``m = (p + q) / 2``.

    ``-inf`` at ``p_i = 0 < q_i``, ``0.5 log 2`` at ``p_i = q_i = 0``. JS is symmetric, so the
    gradient w.r.t. ``q`` is ``js_divergence_grad(q, p)``.

    Example:
        >>> import numpy as np
        >>> _, g = js_divergence_value_and_grad(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
        >>> g.tolist()
        [0.0, 0.0]
    """
    return _js(p, q, axis, reduction, True)


def js_divergence_grad(p: Array, q: Array, **options: Any) -> Array:
    """Closed-form gradient of :func:`js_divergence` w.r.t. ``p`` (``0.5 log(p / m)``)."""
    return js_divergence_value_and_grad(p, q, **options)[1]
