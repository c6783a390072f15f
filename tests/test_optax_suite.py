"""Optax's own loss tests, restated against crossent (the acceptance test for Optax parity).

Source: optax 0.2.8, ``optax/losses/*_test.py``. Every Optax loss crossent has a counterpart
for is exercised with Optax's inputs, expected numbers, tolerances and checked properties:

    Optax test class (optax.losses)                 crossent function
    SoftmaxCrossEntropyTest                         softmax_cross_entropy (probability targets)
    SafeSoftmaxCrossEntropyTest                     softmax_cross_entropy (-inf logits)
    SoftmaxCrossEntropyWithIntegerLabelsTest        softmax_cross_entropy (integer labels)
    SigmoidCrossEntropyTest                         sigmoid_cross_entropy
    PolyLossTest                                    poly1_cross_entropy
    HingeTest                                       hinge_loss, multiclass_hinge_loss
    SparsemaxTest                                   binary_sparsemax_loss, sparsemax_loss
    KLDivergenceTest                                kl_divergence(targets, exp(log_predictions))
    KLDivergenceWithLogTargetsTest                  kl_divergence(exp(log_targets), exp(log_p))
    SigmoidFocalLossTest                            sigmoid_focal_loss
    SmoothLabelsTest                                smooth_labels
    NtxentTest                                      ntxent_loss
    TripletMarginLossTest                           triplet_margin_loss
    SquaredErrorTest                                mean_squared_error (trailing class axis of 1)
    FenchelYoungTest (the logsumexp/log-loss part)  softmax_cross_entropy under jax.vmap

Optax runs its losses under ``jax.jit(loss)(x, y, epsilon=...)``, where the keyword
hyper-parameters are traced like the arrays; ``mode="jit"`` does exactly that, ``mode="eager"``
calls the loss directly with the same (mostly NumPy) inputs. The gradient cases differentiate
JAX logits against NumPy labels, as Optax's do.

The ``where=`` masks, tuple ``axis``, the perceptron losses, the generalized KL and the KL on
log inputs are checked against Optax itself in ``test_optax_parity.py``. Not restated: the
losses crossent has no counterpart for (CTC, l2/huber/log-cosh/cosine, ranking_softmax_loss,
dice, make_fenchel_young_loss).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import crossent

MODES = ("eager", "jit")
# Optax's losses return one value per example (or element); crossent reduces by default.
NONE = {"reduction": "none"}


@functools.cache
def _jitted(fn, static):
    # one jitted function per loss and static options, so that cases differing only in a
    # (traced) hyper-parameter value reuse one compilation, as a training loop would
    return jax.jit(functools.partial(fn, **dict(static)))


def run(mode, fn, *arrays, static=None, **hparams):
    """``fn(*arrays, **static, **hparams)``, eagerly or under ``jax.jit`` with the arrays AND
    the hyper-parameters traced (``static`` holds crossent-only options: reduction, axis)."""
    static = static or {}
    if mode == "jit":
        return _jitted(fn, tuple(sorted(static.items())))(*arrays, **hparams)
    return fn(*arrays, **static, **hparams)


def maybe_jit(mode, fn):
    return jax.jit(fn) if mode == "jit" else fn


def seeded(seed=0):
    """A generator with a fixed seed of the case's own (the ``rng`` fixture is per test)."""
    return np.random.default_rng(seed)


def log_softmax_np(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def check_grads_like_optax(mode, f, logits, targets):
    """Optax's ``check_grads(loss, (logits, labels), order=1)``: derivatives w.r.t. the logits
    and the probability labels against finite differences."""
    if mode == "jit":
        check_grads(f, (logits, targets), order=1)
    else:
        # crossent validates concrete probability targets to lie in [0, 1] and the finite-
        # difference probes of targets at 0 and 1 leave that domain; eagerly the labels are
        # checked against the exact d loss / d t = -log_softmax(logits) instead (the finite-
        # difference check of the labels is the jit variant's)
        check_grads(lambda x: f(x, targets), (logits,), order=1)
        g = jax.grad(lambda t: jnp.sum(f(logits, t)))(targets)
        np.testing.assert_allclose(g, -jax.nn.log_softmax(logits), rtol=1e-5, atol=1e-6)


AXIS_CASES = pytest.mark.parametrize("axis", [0, 1, 2], ids=lambda a: f"axis={a}")
SHAPE = (4, 5, 6)


def check_axis_like_optax(mode, fn, preds, targets, axis, static=NONE, targets_have_axis=True):
    """Optax's ``test_axis``: ``fn`` along ``axis`` equals ``fn`` along the last axis of the
    arrays with ``axis`` moved there (integer labels have no class axis to move)."""
    x = run(mode, fn, preds, targets, static={**static, "axis": axis})
    if targets_have_axis:
        targets = np.moveaxis(targets, axis, -1)
    y = run(mode, fn, np.moveaxis(preds, axis, -1), targets, static=static)
    np.testing.assert_allclose(x, y, atol=1e-4)


class _SoftmaxCrossEntropyChecks:
    """Optax's value and gradient checks of its softmax cross-entropy classes, which differ only
    in their data: the subclass's ``YS`` (logits), ``TS`` (targets) and ``EXP`` (losses)."""

    def test_scalar(self, mode):
        out = run(mode, crossent.softmax_cross_entropy, self.YS[0], self.TS[0], static=NONE)
        np.testing.assert_allclose(out, self.EXP[0], atol=1e-4)

    def test_batched(self, mode):
        out = run(mode, crossent.softmax_cross_entropy, self.YS, self.TS, static=NONE)
        np.testing.assert_allclose(out, self.EXP, atol=1e-4)

    def test_gradient(self, mode):
        f = maybe_jit(mode, functools.partial(crossent.softmax_cross_entropy, **NONE))
        check_grads_like_optax(mode, f, self.YS[:2], self.TS[:2])


# --- SoftmaxCrossEntropyTest ------------------------------------------------------------------

CE_YS = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], dtype=np.float32)
CE_TS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
CE_EXP = np.array([9.00013, 3.0696733], dtype=np.float32)
CE_INT_TS = np.array([1, 0], dtype=np.int32)


@pytest.mark.parametrize("mode", MODES)
class TestSoftmaxCrossEntropy(_SoftmaxCrossEntropyChecks):
    YS, TS, EXP = CE_YS, CE_TS, CE_EXP

    def test_gradient(self, mode):
        super().test_gradient(mode)
        # JAX (traced) logits with NumPy labels must give finite gradients (Optax's mask half
        # of this check is not restated: crossent has no where=)
        f = maybe_jit(mode, functools.partial(crossent.softmax_cross_entropy, **NONE))
        gs = jax.grad(lambda x: jnp.sum(f(x, CE_TS)))(CE_YS)
        assert bool(jnp.all(jnp.isfinite(gs)))

    @AXIS_CASES
    def test_axis(self, mode, axis):
        r = seeded(axis)
        preds = r.normal(size=SHAPE)
        targets = r.dirichlet(np.ones(SHAPE[-1]), size=SHAPE[:-1])
        check_axis_like_optax(mode, crossent.softmax_cross_entropy, preds, targets, axis)


# --- SafeSoftmaxCrossEntropyTest (crossent's softmax_cross_entropy is also Optax's safe one) --

SAFE_YS = np.array(
    [[10.0, 1.0, -2.0], [1.0, 4.0, 0.2], [-np.inf, 0.0, 0.0], [-np.inf, 0.0, 0.0],
     [-np.inf, 0.0, -np.inf]], dtype=np.float32)
SAFE_TS = np.array(
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.4, 0.3, 0.3], [0.0, 1.0, 0.0]],
    dtype=np.float32)
SAFE_EXP = np.array([9.00013, 3.0696733, 0.693147, np.inf, 0.0], dtype=np.float32)


@pytest.mark.parametrize("mode", MODES)
class TestSafeSoftmaxCrossEntropy(_SoftmaxCrossEntropyChecks):
    YS, TS, EXP = SAFE_YS, SAFE_TS, SAFE_EXP

    def test_against_plain_implementation(self, mode):
        # crossent has one function for both; the "plain" one is the textbook formula
        def plain(x, t):
            return -jnp.sum(t * jax.nn.log_softmax(x))

        f = maybe_jit(mode, functools.partial(crossent.softmax_cross_entropy, **NONE))
        want = jax.value_and_grad(plain)(SAFE_YS[0], SAFE_TS[0])
        got = jax.value_and_grad(f)(SAFE_YS[0], SAFE_TS[0])
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-4)


# --- SoftmaxCrossEntropyWithIntegerLabelsTest -------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
class TestSoftmaxCrossEntropyWithIntegerLabels:
    def test_consistent_with_softmax_cross_entropy_scalar(self, mode):
        # NumPy logits with JAX one-hot targets, as Optax's reference call
        exp = crossent.softmax_cross_entropy(CE_YS[0], jax.nn.one_hot(CE_INT_TS[0], 3), **NONE)
        out = run(mode, crossent.softmax_cross_entropy, CE_YS[0], CE_INT_TS[0], static=NONE)
        np.testing.assert_allclose(out, exp, rtol=1e-6)

    def test_consistent_with_softmax_cross_entropy_batched(self, mode):
        exp = crossent.softmax_cross_entropy(CE_YS, jax.nn.one_hot(CE_INT_TS, 3), **NONE)
        out = run(mode, crossent.softmax_cross_entropy, CE_YS, CE_INT_TS, static=NONE)
        np.testing.assert_allclose(out, exp, rtol=1e-6)

    def test_gradient(self, mode):
        # NumPy integer labels bound in, the logits traced by check_grads (mixed arrays)
        f = maybe_jit(mode, functools.partial(crossent.softmax_cross_entropy, targets=CE_INT_TS,
                                              **NONE))
        check_grads(f, (CE_YS,), order=1)
        gs = jax.grad(lambda x: jnp.sum(f(x)))(CE_YS)
        assert bool(jnp.all(jnp.isfinite(gs)))

    @AXIS_CASES
    def test_axis(self, mode, axis):
        r = seeded(10 + axis)
        preds = r.normal(size=SHAPE)
        targets = r.integers(SHAPE[axis], size=SHAPE[:axis] + SHAPE[axis + 1:])
        check_axis_like_optax(mode, crossent.softmax_cross_entropy, preds, targets, axis,
                              targets_have_axis=False)


# --- SigmoidCrossEntropyTest ------------------------------------------------------------------

SIGMOID_CASES = [
    ([-1e09, -1e-09], [1.0, 0.0], 5e08),
    ([-1e09, -1e-09], [0.0, 1.0], 0.3465736),
    ([1e09, 1e-09], [1.0, 0.0], 0.3465736),
    ([1e09, 1e-09], [0.0, 1.0], 5e08),
    ([-1e09, 1e-09], [1.0, 0.0], 5e08),
    ([-1e09, 1e-09], [0.0, 1.0], 0.3465736),
    ([1e09, -1e-09], [1.0, 0.0], 0.3465736),
    ([1e09, -1e-09], [0.0, 1.0], 5e08),
    ([0.0, 0.0], [1.0, 0.0], 0.6931472),
    ([0.0, 0.0], [0.0, 1.0], 0.6931472),
]


@pytest.mark.parametrize("mode", MODES)
class TestSigmoidCrossEntropy:
    @pytest.mark.parametrize(("preds", "labels", "expected"), SIGMOID_CASES,
                             ids=[f"case{i}" for i in range(len(SIGMOID_CASES))])
    def test_sigmoid_cross_entropy(self, mode, preds, labels, expected):
        out = run(mode, crossent.sigmoid_cross_entropy, np.array(preds), np.array(labels),
                  static=NONE)
        np.testing.assert_allclose(jnp.mean(out), expected, rtol=1e-6, atol=1e-6)


# --- PolyLossTest -----------------------------------------------------------------------------

POLY_LOGITS = np.array([0.14, 1.456, 2.356, -0.124, -2.47])
POLY_LABELS = np.array([0.1, 0.15, 0.2, 0.25, 0.3])
POLY_BATCHED_LOGITS = np.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]])
POLY_BATCHED_LABELS = np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]])
POLY_EPS0_CASES = [
    (np.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0], [0.134, 1.234, 3.235]]),
     np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2], [0.34, 0.33, 0.33]])),
    (np.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]]),
     np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]])),
    (np.array([[4.0, 2.0, 1.0, 0.134, 1.3515], [0.0, 5.0, 1.0, 0.5215, 5.616]]),
     np.array([[0.5, 0.0, 0.0, 0.0, 0.5], [0.0, 0.12, 0.2, 0.56, 0.12]])),
    (np.array([1.89, 2.39]), np.array([0.34, 0.66])),
    (np.array([0.314]), np.array([1.0])),
]


POLY_SCALAR_CASES = [(2, 4.5317), (1, 3.7153), (-1, 2.0827), (0, 2.8990), (-0.5, 2.4908),
                     (1.15, 3.8378), (1.214, 3.8900), (5.45, 7.3480)]
POLY_BATCHED_CASES = [(2, [0.4823, 1.2567]), (1, [0.3261, 1.0407]), (0, [0.1698, 0.8247]),
                      (-0.5, [0.0917, 0.7168]), (1.15, [0.3495, 1.0731]),
                      (1.214, [0.3595, 1.0870]), (5.45, [1.0211, 2.0018])]


def eps_params(cases):
    return [pytest.param(eps, exp, id=f"eps={eps}") for eps, exp in cases]


@pytest.mark.parametrize("mode", MODES)
class TestPolyLoss:
    @pytest.mark.parametrize(("eps", "expected"), eps_params(POLY_SCALAR_CASES))
    def test_scalar(self, mode, eps, expected):
        out = run(mode, crossent.poly1_cross_entropy, POLY_LOGITS, POLY_LABELS, static=NONE,
                  epsilon=eps)
        np.testing.assert_allclose(out, expected, atol=1e-4)

    @pytest.mark.parametrize(("eps", "expected"), eps_params(POLY_BATCHED_CASES))
    def test_batched(self, mode, eps, expected):
        out = run(mode, crossent.poly1_cross_entropy, POLY_BATCHED_LOGITS, POLY_BATCHED_LABELS,
                  static=NONE, epsilon=eps)
        np.testing.assert_allclose(out, np.array(expected), atol=1e-4)

    @pytest.mark.parametrize(("logits", "labels"), POLY_EPS0_CASES,
                             ids=[f"case{i}" for i in range(len(POLY_EPS0_CASES))])
    def test_equals_to_cross_entropy_when_eps0(self, mode, logits, labels):
        out = run(mode, crossent.poly1_cross_entropy, logits, labels, static=NONE, epsilon=0.0)
        ce = run(mode, crossent.softmax_cross_entropy, logits, labels, static=NONE)
        np.testing.assert_allclose(out, ce, atol=1e-4)

    @AXIS_CASES
    def test_axis(self, mode, axis):
        r = seeded(20 + axis)
        preds = r.normal(size=SHAPE)
        targets = r.dirichlet(np.ones(SHAPE[-1]), size=SHAPE[:-1])
        check_axis_like_optax(mode, crossent.poly1_cross_entropy, preds, targets, axis)


# --- HingeTest --------------------------------------------------------------------------------


def _hinge_ref(label, logit):
    return np.maximum(1.0 - logit * (2.0 * label - 1.0), 0.0)


def _multiclass_hinge_ref(label, scores):
    one_hot = np.eye(scores.shape[-1])[label]
    return np.max(scores + 1.0 - one_hot) - scores[label]


@pytest.mark.parametrize("mode", MODES)
class TestHinge:
    def test_binary(self, mode):
        label = jnp.array(1)
        signed_label = jnp.array(2.0 * label - 1.0)
        score = jnp.array(10.0)
        out = run(mode, crossent.hinge_loss, score, signed_label, static=NONE)
        np.testing.assert_allclose(out, _hinge_ref(1, 10.0), atol=1e-4)

    def test_batched_binary(self, mode):
        labels = jnp.array([1, 0])
        signed_labels = jnp.array(2.0 * labels - 1.0)
        scores = jnp.array([10.0, 20.0])
        expected = [_hinge_ref(y, s) for y, s in zip([1, 0], [10.0, 20.0], strict=True)]
        out = run(mode, crossent.hinge_loss, scores, signed_labels, static=NONE)
        np.testing.assert_allclose(out, expected, atol=1e-4)

    def test_multi_class(self, mode):
        label = jnp.array(1)
        scores = jnp.array([10.0, 3.0])
        out = run(mode, crossent.multiclass_hinge_loss, scores, label, static=NONE)
        np.testing.assert_allclose(out, _multiclass_hinge_ref(1, np.array([10.0, 3.0])),
                                   atol=1e-4)

    def test_batched_multi_class(self, mode):
        label = jnp.array([1, 0])
        scores = jnp.array([[10.0, 3.0], [11.0, -2.0]])
        s = np.asarray(scores)
        expected = [_multiclass_hinge_ref(1, s[0]), _multiclass_hinge_ref(0, s[1])]
        out = run(mode, crossent.multiclass_hinge_loss, scores, label, static=NONE)
        np.testing.assert_allclose(out, expected, atol=1e-4)


# --- SparsemaxTest ----------------------------------------------------------------------------


def _binary_sparsemax_ref(label, logit):
    s = -(2 * label - 1) * logit
    if s <= -1.0:
        return 0.0
    if s >= 1.0:
        return s
    return (s + 1.0) ** 2 / 4


def _projection_simplex(v):
    """Euclidean projection of each row of ``v`` onto the probability simplex (sparsemax)."""
    v = np.asarray(v, dtype=np.float64)
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    k = np.arange(1, v.shape[-1] + 1)
    rho = np.sum(u - css / k > 0, axis=-1, keepdims=True)
    tau = np.take_along_axis(css, rho - 1, axis=-1) / rho
    return np.maximum(v - tau, 0.0)


SPARSEMAX_LABELS = jnp.array([1, 0, 2])
SPARSEMAX_SCORES = jnp.array([[0.0, 1e5, 0.0], [1e5, 0.0, 0.0], [0.0, 0.0, 1e5]])


@pytest.mark.parametrize("mode", MODES)
class TestSparsemax:
    def test_binary(self, mode):
        # Optax's sparsemax_loss is crossent's binary_sparsemax_loss
        out = run(mode, crossent.binary_sparsemax_loss, jnp.asarray(10.0), jnp.asarray(1),
                  static=NONE)
        np.testing.assert_allclose(out, _binary_sparsemax_ref(1, 10.0), atol=1e-4)

    def test_batched_binary(self, mode):
        labels = jnp.array([1, 0])
        scores = jnp.array([10.0, 20.0])
        expected = [_binary_sparsemax_ref(1, 10.0), _binary_sparsemax_ref(0, 20.0)]
        out = run(mode, crossent.binary_sparsemax_loss, scores, labels, static=NONE)
        np.testing.assert_allclose(out, expected, atol=1e-4)

    def test_multi_class_zero_loss(self, mode):
        # Optax's multiclass_sparsemax_loss is crossent's sparsemax_loss
        out = run(mode, crossent.sparsemax_loss, SPARSEMAX_SCORES, SPARSEMAX_LABELS,
                  static=NONE)
        np.testing.assert_allclose(out, np.zeros(3), atol=1e-4)

    def test_multi_class_gradient(self, mode):
        f = maybe_jit(mode, functools.partial(crossent.sparsemax_loss, **NONE))
        grad = jax.grad(lambda s, y: jnp.mean(f(s, y)))(SPARSEMAX_SCORES, SPARSEMAX_LABELS)
        # Optax's expected value, as Optax writes it (zero for these scores)
        expected = _projection_simplex(SPARSEMAX_SCORES) - np.eye(3)[np.asarray(SPARSEMAX_LABELS)]
        np.testing.assert_allclose(grad, expected, atol=1e-4)


# --- KLDivergenceTest / KLDivergenceWithLogTargetsTest ----------------------------------------
# Optax's kl_divergence(log_predictions, targets) is crossent's kl_divergence(p=targets,
# q=exp(log_predictions)), and kl_divergence_with_log_targets(log_p, log_t) is
# kl_divergence(exp(log_t), exp(log_p)): crossent takes both distributions as probabilities.

KL_LOG_PS = np.array([
    [-2.9957, -3.5066, -3.9120, -1.2040, -0.6931, -2.3026],
    [-1.6094, -1.6094, -1.6094, -2.3026, -1.8971, -1.8971],
])
KL_QS = np.array([[0.2, 0.2, 0.2, 0.1, 0.15, 0.15], [0.05, 0.03, 0.02, 0.3, 0.5, 0.0]])
KL_EXP = np.array([0.8875577, 0.7592807])
KL_LOG_TS = np.array([
    [-1.6094, -1.6094, -1.6094, -2.3026, -1.8971, -1.8971],
    [-2.9957, -3.5066, -3.9120, -1.2040, -0.6931, -2.3026],
])
KL_LOG_EXP = np.array([0.8875625, 0.7187435584901326])


def _exp(x):
    # NumPy stays NumPy (eagerly crossent sees Optax's NumPy inputs), tracers use jnp
    return np.exp(x) if isinstance(x, np.ndarray) else jnp.exp(x)


def optax_kl(log_predictions, targets, axis=-1):
    return crossent.kl_divergence(targets, _exp(log_predictions), axis=axis, **NONE)


def optax_kl_log_targets(log_predictions, log_targets, axis=-1):
    return crossent.kl_divergence(_exp(log_targets), _exp(log_predictions), axis=axis, **NONE)


class KLVariant(NamedTuple):
    fn: Callable
    targets: np.ndarray  # Optax's targets for KL_LOG_PS
    expected: np.ndarray
    seed: int  # of the axis test (plus the axis)
    as_target: Callable  # a Dirichlet draw as this variant's targets


# Optax's KLDivergenceTest and KLDivergenceWithLogTargetsTest check the same properties, each
# with its own inputs, expected numbers and seeds: one class runs both.
KL_VARIANTS = [
    pytest.param(KLVariant(optax_kl, KL_QS, KL_EXP, 30, lambda q: q), id="KLDivergence"),
    pytest.param(KLVariant(optax_kl_log_targets, KL_LOG_TS, KL_LOG_EXP, 40, np.log),
                 id="KLDivergenceWithLogTargets"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kl", KL_VARIANTS)
class TestKLDivergence:
    def test_scalar(self, mode, kl):
        out = run(mode, kl.fn, KL_LOG_PS[0], kl.targets[0])
        np.testing.assert_allclose(out, kl.expected[0], atol=1e-4)

    def test_batched(self, mode, kl):
        out = run(mode, kl.fn, KL_LOG_PS, kl.targets)
        np.testing.assert_allclose(out, kl.expected, atol=1e-4)

    @AXIS_CASES
    def test_axis(self, mode, kl, axis):
        r = seeded(kl.seed + axis)
        # Optax feeds N(0, 1) draws as log-predictions; crossent needs q in [0, 1], so they are
        # log-normalised along the axis first (the property tested, axis handling, is unchanged)
        preds = log_softmax_np(r.normal(size=SHAPE), axis)
        targets = kl.as_target(r.dirichlet(np.ones(SHAPE[-1]), size=SHAPE[:-1]))
        # optax_kl* return per-example values themselves
        check_axis_like_optax(mode, kl.fn, preds, targets, axis, static={})


# --- SigmoidFocalLossTest ---------------------------------------------------------------------

FOCAL_YS = np.array([[2.0, 0.1, -2.0], [0.3, -0.1, 1.2]], dtype=np.float32)
FOCAL_TS = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
FOCAL_RTOL = 2e-5  # Optax's CPU tolerance


def _logit(x):
    return jnp.log(x / (1.0 - x))


FOCAL_LARGE_YS = _logit(jnp.array([0.9, 0.98, 0.3, 0.99]))
FOCAL_SMALL_YS = _logit(jnp.array([0.1, 0.02, 0.09, 0.15]))
FOCAL_ONES_TS = jnp.array([1.0, 1.0, 1.0, 1.0])


def focal(mode, logits, labels, **hparams):
    # Optax's alpha defaults to None (no weighting), crossent's to 0.25
    hparams.setdefault("alpha", None)
    return run(mode, crossent.sigmoid_focal_loss, logits, labels, static=NONE, **hparams)


def bce(logits, labels):
    return crossent.sigmoid_cross_entropy(logits, labels, **NONE)


@pytest.mark.parametrize("mode", MODES)
class TestSigmoidFocalLoss:
    def test_focal_equals_ce(self, mode):
        np.testing.assert_allclose(focal(mode, FOCAL_YS, FOCAL_TS, gamma=0.0),
                                   bce(FOCAL_YS, FOCAL_TS), rtol=FOCAL_RTOL)

    def test_focal_gamma_zero_matches_binary_cross_entropy(self, mode):
        logits = jnp.array([[-1.0, 0.0, 1.0], [2.0, -2.0, 0.5]])
        labels = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
        np.testing.assert_allclose(focal(mode, logits, labels, gamma=0.0), bce(logits, labels),
                                   rtol=FOCAL_RTOL)

    def test_scale(self, mode):
        gamma = 2
        focal_loss = focal(mode, FOCAL_YS, FOCAL_TS, gamma=gamma)
        p = jax.nn.sigmoid(FOCAL_YS)
        p_t = p * FOCAL_TS + (1 - p) * (1 - FOCAL_TS)
        scale = (1 - p_t) ** gamma
        np.testing.assert_allclose(focal_loss / bce(FOCAL_YS, FOCAL_TS), scale, rtol=FOCAL_RTOL)

    def test_large_logit_fl_less_than_ce(self, mode):
        focal_loss = focal(mode, FOCAL_LARGE_YS, FOCAL_ONES_TS, gamma=2, alpha=0.5)
        ratio = bce(FOCAL_LARGE_YS, FOCAL_ONES_TS) / focal_loss
        expected = 2.0 / ((1.0 - jax.nn.sigmoid(FOCAL_LARGE_YS)) ** 2)
        np.testing.assert_allclose(ratio, expected, rtol=FOCAL_RTOL)

    def test_small_logit_fl_less_than_ce(self, mode):
        focal_loss = focal(mode, FOCAL_SMALL_YS, FOCAL_ONES_TS, gamma=2)
        ratio = bce(FOCAL_SMALL_YS, FOCAL_ONES_TS) / focal_loss
        expected = 1.0 / ((1.0 - jax.nn.sigmoid(FOCAL_SMALL_YS)) ** 2)
        np.testing.assert_allclose(ratio, expected, rtol=FOCAL_RTOL)

    def test_alpha_one(self, mode):
        np.testing.assert_allclose(focal(mode, FOCAL_YS, FOCAL_TS, gamma=0.0, alpha=1),
                                   bce(FOCAL_YS, FOCAL_TS) * FOCAL_TS, rtol=FOCAL_RTOL)

    def test_ignore_positive(self, mode):
        focal_loss = np.asarray(focal(mode, FOCAL_YS, FOCAL_TS, alpha=0))
        ce_loss = np.asarray(bce(FOCAL_YS, FOCAL_TS))
        assert all(ce_loss[FOCAL_TS == 1] > 0)
        assert all(focal_loss[FOCAL_TS == 1] == 0)

    def test_ignore_negative(self, mode):
        focal_loss = np.asarray(focal(mode, FOCAL_YS, FOCAL_TS, alpha=1))
        ce_loss = np.asarray(bce(FOCAL_YS, FOCAL_TS))
        assert all(ce_loss[FOCAL_TS == 0] > 0)
        assert all(focal_loss[FOCAL_TS == 0] == 0)

    def test_extreme_logits_finite_gradients(self, mode):
        extreme_logits = jnp.array([100.0, -100.0, 75.0, -75.0, 50.0, -50.0])
        labels = jnp.array([0.9, 0.1, 0.8, 0.2, 1.0, 0.0])
        gamma = 0.5

        def loss_fn(logits):
            return jnp.sum(focal(mode, logits, labels, gamma=gamma))

        assert bool(jnp.isfinite(loss_fn(extreme_logits)))
        assert bool(jnp.all(jnp.isfinite(jax.grad(loss_fn)(extreme_logits))))
        # the Hessian is compiled in both modes (op-by-op it takes seconds); "eager" then means
        # the loss traced with gamma a Python number, "jit" with gamma traced too
        assert bool(jnp.all(jnp.isfinite(jax.jit(jax.hessian(loss_fn))(extreme_logits))))


# --- SmoothLabelsTest -------------------------------------------------------------------------

SMOOTH_TS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
SMOOTH_CASES = [
    (0.0, SMOOTH_TS),
    (0.1, 0.9 * SMOOTH_TS + 0.1 / SMOOTH_TS.shape[-1]),
    (1.0, np.ones_like(SMOOTH_TS) / SMOOTH_TS.shape[-1]),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("alpha", "expected"), SMOOTH_CASES,
                         ids=[f"alpha={a}" for a, _ in SMOOTH_CASES])
class TestSmoothLabels:
    def test_scalar(self, mode, alpha, expected):
        # the smoothing rate is passed positionally and traced, as jax.jit(smooth_labels)(t, a)
        out = run(mode, crossent.smooth_labels, SMOOTH_TS[0], alpha)
        np.testing.assert_allclose(out, expected[0], atol=1e-4)

    def test_batched(self, mode, alpha, expected):
        out = run(mode, crossent.smooth_labels, SMOOTH_TS, alpha)
        np.testing.assert_allclose(out, expected, atol=1e-4)


# --- NtxentTest -------------------------------------------------------------------------------

NTX_YS = jnp.array([[-1.9540, 1.0780], [0.2380, -0.5703], [1.8745, -0.0195],
                    [-0.6719, -1.9210]])
NTX_YS_2 = jnp.array([[0.0, 0.0], [0.2380, -0.5703], [1.8745, -0.0195], [-0.6719, -1.9210]])
NTX_TS_1 = jnp.array([0, 0, 1, 1])
NTX_TS_2 = jnp.array([0, 0, 0, 1])
NTX_CASES = [(NTX_YS, NTX_TS_1, 14.01032), (NTX_YS, NTX_TS_2, 8.968544),
             (NTX_YS_2, NTX_TS_1, 9.2889)]


@pytest.mark.parametrize("mode", MODES)
class TestNtxent:
    # Optax's test_batched makes three checks; one case each here
    @pytest.mark.parametrize(("ys", "ts", "expected"), NTX_CASES,
                             ids=["ys-ts_1", "ys-ts_2", "ys_2-ts_1"])
    def test_batched(self, mode, ys, ts, expected):
        # same default temperature (0.07) and mean over positive pairs as Optax
        out = run(mode, crossent.ntxent_loss, ys, ts)
        np.testing.assert_allclose(out, expected, atol=1e-4)


# --- TripletMarginLossTest --------------------------------------------------------------------


def _triplet_ref(a, p, n, margin=1.0, p_norm=2, eps=1e-6):
    ap = np.sqrt(np.sum(np.power(a - p, p_norm)) + eps)
    an = np.sqrt(np.sum(np.power(a - n, p_norm)) + eps)
    return np.maximum(ap - an + margin, 0)


TRIPLET_CASES = [
    (np.ones((2, 2)), np.zeros((2, 2)), np.ones((2, 2)) * 2, 1.0),
    (np.zeros((2, 2)), np.ones((2, 2)), np.ones((2, 2)) * 2, 1.0),
]


@pytest.mark.parametrize("mode", MODES)
class TestTripletMarginLoss:
    # crossent adds eps to the difference (PyTorch), Optax under the root: both 1e-6, far
    # inside Optax's atol=1e-4
    @pytest.mark.parametrize(("anchor", "positive", "negative", "margin"), TRIPLET_CASES,
                             ids=["case0", "case1"])
    def test_batched(self, mode, anchor, positive, negative, margin):
        expected = _triplet_ref(anchor, positive, negative, margin=margin)
        out = run(mode, crossent.triplet_margin_loss, anchor, positive, negative, static=NONE)
        np.testing.assert_allclose(out, expected, atol=1e-4)

    def test_vmap(self, mode):
        anchor, positive, negative = np.ones((2, 2)), np.zeros((2, 2)), np.ones((2, 2)) * 2
        f = functools.partial(crossent.triplet_margin_loss, **NONE)
        original = f(anchor, positive, negative)
        vmapped = maybe_jit(mode, jax.vmap(f, in_axes=(0, 0, 0)))(
            anchor[None], positive[None], negative[None])
        np.testing.assert_allclose(np.asarray(vmapped).flatten(),
                                   np.asarray(original).flatten(), atol=1e-4)


# --- SquaredErrorTest -------------------------------------------------------------------------
# Optax's squared_error is element-wise; crossent's mean_squared_error sums over a class axis,
# so each element gets a trailing class axis of size 1 (and reduction="none").

SQ_YS = jnp.array([-2.0, -1.0, 0.5, 1.0])
SQ_TS = jnp.array([-1.5, 0.0, -1, 1.0])
SQ_EXP = (SQ_TS - SQ_YS) ** 2


def optax_squared_error(predictions, targets):
    return crossent.mean_squared_error(predictions[..., None], targets[..., None], **NONE)


@pytest.mark.parametrize("mode", MODES)
class TestSquaredError:
    def test_scalar(self, mode):
        np.testing.assert_allclose(run(mode, optax_squared_error, SQ_YS[0], SQ_TS[0]),
                                   SQ_EXP[0])

    def test_batched(self, mode):
        np.testing.assert_allclose(run(mode, optax_squared_error, SQ_YS, SQ_TS), SQ_EXP)

    def test_shape_mismatch(self, mode):
        with pytest.raises(ValueError):
            run(mode, optax_squared_error, SQ_YS, jnp.expand_dims(SQ_TS, axis=-1))


# --- FenchelYoungTest (the part about a crossent loss) ----------------------------------------
# make_fenchel_young_loss(logsumexp)(theta, y) = logsumexp(theta) - <theta, y>; for one-hot y it
# is the log loss (Optax checks it against softmax_cross_entropy_with_integer_labels, vmapped
# and not), and for any y its gradient is softmax(theta) - y, which is also the gradient of the
# softmax cross-entropy with probability targets y (they differ by the constant entropy of y).


@pytest.mark.parametrize("mode", MODES)
class TestFenchelYoung:
    def test_fenchel_young_reg(self, mode):
        rngs = jax.random.split(jax.random.key(0), 2)
        theta_true = jax.random.uniform(rngs[0], (8, 5))
        y_true = jax.vmap(jax.nn.softmax)(theta_true)
        theta_random = jax.random.uniform(rngs[1], (8, 5))
        y_random = jax.vmap(jax.nn.softmax)(theta_random)
        ce = functools.partial(crossent.softmax_cross_entropy, **NONE)

        grad_random = maybe_jit(mode, jax.vmap(jax.grad(ce)))(theta_random, y_true)
        np.testing.assert_allclose(grad_random, y_random - y_true, rtol=1e-4)

        int_one_hot = jnp.argmax(theta_true, axis=-1)
        y_one_hot = jax.nn.one_hot(int_one_hot, 5)
        fy_one_hot = (jax.vmap(jax.scipy.special.logsumexp)(theta_random)
                      - jnp.sum(theta_random * y_one_hot, axis=-1))
        log_loss = maybe_jit(mode, jax.vmap(ce))(theta_random, int_one_hot)
        np.testing.assert_allclose(fy_one_hot, log_loss, rtol=1e-4)
        no_vmap = maybe_jit(mode, ce)(theta_random, int_one_hot)
        np.testing.assert_allclose(log_loss, no_vmap, rtol=1e-4)

