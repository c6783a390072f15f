"""crossent against Optax 0.2.8 for the losses and options ``tests/test_optax_suite.py`` does
not restate: perceptron losses, KL divergence on log-inputs, the generalized KL divergence,
``where=`` masks and tuple class axes.

Optax returns one value per example (or element), so crossent runs with ``reduction="none"``
against Optax's values, and its "sum" / "mean" are checked against the documented formulas
computed from those values (the "mean" denominators are crossent's documented ones: every
element for the perceptron loss, every row for the per-row losses, the rows with at least one
unmasked element under ``where=``, ``mask.sum()`` for the element-wise sigmoid losses).
Gradients are crossent's closed forms (``crossent.value_and_grad``) against ``jax.grad`` of
the Optax function (of the sum of its values; divided by the "mean" denominator for
"mean"), to ``rtol=1e-10``. Each case runs on NumPy arrays, torch tensors and JAX arrays, in
float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _backends import BACKENDS, to_backend, to_numpy

import crossent

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")
pytest.importorskip("torch")

jax.config.update("jax_enable_x64", True)

L = optax.losses
BACKENDS3 = tuple(b for b in BACKENDS if b in ("numpy", "torch", "jax"))
REDUCTIONS = ("none", "sum", "mean")
RTOL, ATOL = 1e-10, 1e-12

backends = pytest.mark.parametrize("backend", BACKENDS3)
reductions = pytest.mark.parametrize("reduction", REDUCTIONS)


# --- helpers ----------------------------------------------------------------------------------


def seeded(seed):
    return np.random.default_rng(seed)


def _on(backend, kw):
    return {k: to_backend(backend, v) if isinstance(v, np.ndarray) else v
            for k, v in kw.items()}


def crossent_value(backend, fn, args, **kw):
    """``fn(*args, **kw)`` on ``backend`` (arrays in ``kw`` too), as NumPy."""
    return to_numpy(fn(*[to_backend(backend, a) for a in args], **_on(backend, kw)))


def crossent_value_and_grad(backend, fn, args, argnums, **kw):
    """crossent's value and closed-form gradients w.r.t. ``argnums`` (a tuple), as NumPy."""
    value, grads = crossent.value_and_grad(fn, argnums=argnums)(
        *[to_backend(backend, a) for a in args], **_on(backend, kw))
    return to_numpy(value), tuple(to_numpy(g) for g in grads)


def _frozen(x):
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in x.items()))
    return repr(x)


_OPTAX_CACHE: dict = {}


def optax_value_and_grad(f, args, argnums):
    """Optax's per-example values of ``f(*args)`` and ``jax.grad`` of their sum w.r.t.
    ``argnums`` (a tuple), as NumPy. Cached on ``f``'s code, the data it closes over and the
    arguments, so that a case's backends and reductions share one (jitted) Optax run."""
    cells = tuple(_frozen(c.cell_contents) for c in f.__closure__ or ())
    key = (f.__code__, cells, tuple(_frozen(np.asarray(a)) for a in args), argnums)
    if key not in _OPTAX_CACHE:
        jargs = [jnp.asarray(a) for a in args]

        @jax.jit
        def both(*a):
            return f(*a), jax.grad(lambda *b: jnp.sum(f(*b)), argnums=argnums)(*a)

        values, grads = both(*jargs)
        _OPTAX_CACHE[key] = np.asarray(values), tuple(np.asarray(g) for g in grads)
    return _OPTAX_CACHE[key]


def reduce_like_crossent(values, grads, reduction, denominator):
    """The documented reduction of Optax's per-example ``values`` and the gradient of it."""
    if reduction == "none":
        return values, grads
    if reduction == "sum":
        return np.sum(values), grads
    return np.sum(values) / denominator, tuple(g / denominator for g in grads)


def check_against_optax(backend, fn, args, argnums, ref, reduction, denominator,
                        grad_wants=None, **kw):
    """crossent's ``fn(*args, reduction=..., **kw)`` (called directly and through
    ``value_and_grad``) against the Optax ``ref(*args)`` reduced as documented.

    ``grad_wants``: optional per-argument functions mapping Optax's gradient to the expected
    one (e.g. zero where Optax's is NaN at a masked entry)."""
    want_v, want_g = reduce_like_crossent(
        *optax_value_and_grad(ref, args, argnums), reduction, denominator)
    got = crossent_value(backend, fn, args, reduction=reduction, **kw)
    assert got.shape == np.shape(want_v)
    np.testing.assert_allclose(got, want_v, rtol=RTOL, atol=ATOL)
    got_v, got_g = crossent_value_and_grad(backend, fn, args, argnums, reduction=reduction,
                                           **kw)
    assert got_v.shape == np.shape(want_v)
    np.testing.assert_allclose(got_v, want_v, rtol=RTOL, atol=ATOL)
    assert len(got_g) == len(argnums)
    for k, (i, g, w) in enumerate(zip(argnums, got_g, want_g, strict=True)):
        if grad_wants is not None and grad_wants[k] is not None:
            w = grad_wants[k](w)
        assert g.shape == np.shape(args[i]), (i, g.shape)
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"d/d arg {i}")
    return got_g


# --- 1. perceptron_loss -----------------------------------------------------------------------


def perceptron_data():
    r = seeded(1)
    s = r.normal(size=(4, 5))
    s = np.where(np.abs(s) < 0.05, s + 0.1, s)  # no tie s * t == 0
    t = r.choice([-1.0, 1.0], size=(4, 5))
    return s, t


@backends
@reductions
def test_perceptron_loss(backend, reduction):
    s, t = perceptron_data()
    assert 0 < np.sum(-s * t > 0) < s.size  # both branches
    check_against_optax(backend, crossent.perceptron_loss, (s, t), (0,), L.perceptron_loss,
                        reduction, s.size)


@backends
@reductions
def test_perceptron_loss_zero_targets_read_as_minus_one(backend, reduction):
    s, t = perceptron_data()
    t01 = (t > 0).astype(np.float64)  # {0, 1} labels; 0 is the negative class

    def ref(s_, _t):
        return L.perceptron_loss(s_, 2.0 * t01 - 1.0)

    check_against_optax(backend, crossent.perceptron_loss, (s, t01), (0,), ref, reduction,
                        s.size)


@backends
def test_perceptron_loss_kink(backend):
    s = np.array([0.0, 0.0, 0.0, 1.0, -1.0, 2.0])
    t = np.array([1.0, -1.0, 0.0, 1.0, 1.0, -1.0])
    want = np.asarray(L.perceptron_loss(s, np.where(t == 0, -1.0, t)))
    v, (g,) = crossent_value_and_grad(backend, crossent.perceptron_loss, (s, t), (0,),
                                      reduction="none")
    np.testing.assert_allclose(v, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(v, [0.0, 0.0, 0.0, 0.0, 1.0, 2.0])
    # at s = 0 the documented (sub)gradient is 0 (jax.grad of Optax's maximum splits: -t/2)
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0, 0.0, -1.0, 1.0])


@backends
@pytest.mark.parametrize("bad", [2.0, 0.5, -3.0])
def test_perceptron_loss_rejects_targets_outside_minus_one_zero_one(backend, bad):
    s = np.array([0.3, -0.2, 1.0])
    t = np.array([1.0, -1.0, bad])
    with pytest.raises(ValueError, match="targets"):
        crossent_value(backend, crossent.perceptron_loss, (s, t), reduction="none")


# --- 2. multiclass_perceptron_loss ------------------------------------------------------------


@backends
@reductions
def test_multiclass_perceptron_loss(backend, reduction):
    r = seeded(2)
    scores = r.normal(size=(2, 3, 5))
    labels = r.integers(5, size=(2, 3))
    labels[0, 0] = np.argmax(scores[0, 0])  # a zero loss, zero gradient row
    check_against_optax(backend, crossent.multiclass_perceptron_loss, (scores, labels), (0,),
                        L.multiclass_perceptron_loss, reduction, labels.size)


@backends
def test_multiclass_perceptron_loss_ties_share(backend):
    scores = np.array([[1.0, 1.0, 0.0], [2.0, 0.0, 2.0], [0.5, 0.5, 0.5]])
    labels = np.array([2, 0, 1])
    # jax.grad of Optax's max shares ties equally as well
    got = check_against_optax(backend, crossent.multiclass_perceptron_loss, (scores, labels),
                              (0,), L.multiclass_perceptron_loss, "none", 1)
    np.testing.assert_allclose(
        got[0], [[0.5, 0.5, -1.0], [-0.5, 0.0, 0.5], [1 / 3, -2 / 3, 1 / 3]], rtol=1e-14)


# --- 3. kl_divergence -------------------------------------------------------------------------


def dists(shape, seed, axis=-1):
    x = seeded(seed).gamma(1.0, size=shape) + 0.05
    return x / x.sum(axis=axis, keepdims=True)


@backends
@reductions
@pytest.mark.parametrize("axis", [-1, 0])
def test_kl_divergence_log_inputs(backend, reduction, axis):
    shape = (3, 4) if axis == -1 else (4, 3)
    lp, lq = np.log(dists(shape, 3, axis)), np.log(dists(shape, 4, axis))

    def ref(lp_, lq_):
        return L.kl_divergence_with_log_targets(log_predictions=lq_, log_targets=lp_,
                                                axis=axis)

    check_against_optax(backend, crossent.kl_divergence, (lp, lq), (0, 1), ref, reduction, 3,
                        axis=axis, log_inputs=True)


@backends
@reductions
def test_kl_divergence_probabilities(backend, reduction):
    p, q = dists((3, 4), 5), dists((3, 4), 6)

    def ref(p_, q_):
        return L.kl_divergence(log_predictions=jnp.log(q_), targets=p_)

    check_against_optax(backend, crossent.kl_divergence, (p, q), (0, 1), ref, reduction, 3)


@backends
def test_kl_divergence_zero_reference_probabilities(backend):
    p, q = dists((3, 4), 7), dists((3, 4), 8)
    p[0, 1] = p[2, 3] = 0.0
    p /= p.sum(-1, keepdims=True)
    want = np.asarray(L.kl_divergence(np.log(q), p))
    got = crossent_value(backend, crossent.kl_divergence, (p, q), reduction="none")
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# --- 4. generalized_kl_divergence -------------------------------------------------------------


def measures(seed, shape=(3, 4)):
    r = seeded(seed)
    return r.uniform(0.2, 3.0, size=shape), r.uniform(0.2, 3.0, size=shape)


@backends
@reductions
def test_generalized_kl_divergence(backend, reduction):
    p, q = measures(9)

    def ref(p_, q_):
        return L.generalized_kl_divergence(log_predictions=jnp.log(q_), targets=p_)

    got = check_against_optax(backend, crossent.generalized_kl_divergence, (p, q), (0, 1), ref,
                              reduction, 3)
    scale = 1.0 if reduction != "mean" else 1 / 3
    np.testing.assert_allclose(got[0], np.log(p / q) * scale, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[1], (1 - p / q) * scale, rtol=RTOL, atol=ATOL)


@backends
def test_generalized_kl_divergence_equals_convex_kl_alias(backend):
    p, q = measures(10)
    p[1, 2] = 0.0  # contributes q_i
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convex_kl_divergence is deprecated
        want = np.asarray(L.convex_kl_divergence(np.log(q), p))
    np.testing.assert_allclose(want, np.asarray(L.generalized_kl_divergence(np.log(q), p)),
                               rtol=1e-15)
    got = crossent_value(backend, crossent.generalized_kl_divergence, (p, q), reduction="none")
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# --- 5. where= masks --------------------------------------------------------------------------

B, C = 4, 5


def class_data(seed):
    r = seeded(seed)
    logits = r.normal(size=(B, C))
    targets = r.dirichlet(np.ones(C), size=B)
    labels = r.integers(C, size=B)
    return logits, targets, labels


def class_mask(seed, labels=None):
    """A mask of the logits' shape: some classes masked, row 1 with one class, the last row
    fully masked; with ``labels``, each label's class is unmasked (but in the last row)."""
    w = seeded(seed).random((B, C)) > 0.3
    w[1] = False
    w[1, 2] = True
    if labels is not None:
        w[np.arange(B), labels] = True
    w[-1] = False
    assert w[:-1].any(-1).all() and not w.all()
    return w


ROW_MASK = np.array([True, False, True, True])

MASKS = pytest.mark.parametrize("mask_kind", ["classes", "rows"])


def masked_class_data(seed, mask_kind, keep_labels=False):
    """``class_data(seed)`` and the ``where=`` of a MASKS case: ``class_mask(seed + 1)``
    (``keep_labels``: with the labels' classes unmasked) or ROW_MASK."""
    x, t, y = class_data(seed)
    if mask_kind == "rows":
        return x, t, y, ROW_MASK
    return x, t, y, class_mask(seed + 1, labels=y if keep_labels else None)


def masked_full(w):
    """The masked entries of a (B, C) array under a class or row mask."""
    return ~np.broadcast_to(w[:, None] if w.ndim == 1 else w, (B, C))


def rows_counted(w):
    return int(w.sum()) if w.ndim == 1 else int(w.any(-1).sum())


def zero_where_masked(w):
    """Optax's gradient w.r.t. the targets is NaN at the masked entries (0 * log 0); the
    documented one is 0 there."""
    m = masked_full(w)

    def want(g):
        assert np.isfinite(g[~m]).all()
        return np.where(m, 0.0, g)

    return want


def check_masked_zero(grads, w):
    m = masked_full(w)
    for g in grads:
        assert np.all(g[m] == 0.0)


@backends
@reductions
@MASKS
def test_softmax_cross_entropy_where_probability_targets(backend, reduction, mask_kind):
    x, t, _, w = masked_class_data(11, mask_kind)

    def ref(x_, t_):
        return L.softmax_cross_entropy(x_, t_, where=w)

    got = check_against_optax(backend, crossent.softmax_cross_entropy, (x, t), (0, 1), ref,
                              reduction, rows_counted(w), where=w,
                              grad_wants=(None, zero_where_masked(w)))
    check_masked_zero(got, w)


@backends
@reductions
@MASKS
def test_softmax_cross_entropy_where_integer_labels(backend, reduction, mask_kind):
    x, _, y, w = masked_class_data(13, mask_kind, keep_labels=True)

    def ref(x_, y_):
        return L.softmax_cross_entropy_with_integer_labels(x_, y_, where=w)

    got = check_against_optax(backend, crossent.softmax_cross_entropy, (x, y), (0,), ref,
                              reduction, rows_counted(w), where=w)
    check_masked_zero(got, w)
    v = crossent_value(backend, crossent.softmax_cross_entropy, (x, y), where=w,
                       reduction="none")
    assert v[-1 if mask_kind == "classes" else 1] == 0.0


@backends
@reductions
@MASKS
def test_poly1_cross_entropy_where(backend, reduction, mask_kind):
    x, t, _, w = masked_class_data(15, mask_kind)
    # the default epsilon (2.0) with the class mask, another one passed with the row mask
    epsilon, kw = (2.0, {}) if mask_kind == "classes" else (0.5, {"epsilon": 0.5})
    # Optax's poly loss does not expand a batch-shaped where itself
    w_optax = w if w.ndim == 2 else np.broadcast_to(w[:, None], (B, C))

    def ref(x_, t_):
        return L.poly_loss_cross_entropy(x_, t_, epsilon=epsilon, where=w_optax)

    got = check_against_optax(backend, crossent.poly1_cross_entropy, (x, t), (0,), ref,
                              reduction, rows_counted(w), where=w, **kw)
    check_masked_zero(got, w)


@backends
@reductions
def test_kl_divergence_where(backend, reduction):
    p, q = dists((B, C), 17), dists((B, C), 18)
    w = class_mask(19)

    def ref(p_, q_):
        return L.kl_divergence(jnp.log(q_), p_, where=w)

    got = check_against_optax(backend, crossent.kl_divergence, (p, q), (0, 1), ref, reduction,
                              rows_counted(w), where=w)
    check_masked_zero(got, w)


@backends
@reductions
def test_kl_divergence_log_inputs_where(backend, reduction):
    lp, lq = np.log(dists((B, C), 20)), np.log(dists((B, C), 21))
    w = class_mask(22)

    def ref(lp_, lq_):
        return L.kl_divergence_with_log_targets(lq_, lp_, where=w)

    got = check_against_optax(backend, crossent.kl_divergence, (lp, lq), (0, 1), ref,
                              reduction, rows_counted(w), where=w, log_inputs=True)
    check_masked_zero(got, w)


@backends
@reductions
def test_generalized_kl_divergence_where(backend, reduction):
    p, q = measures(23, (B, C))
    w = class_mask(24)

    def ref(p_, q_):
        return L.generalized_kl_divergence(jnp.log(q_), p_, where=w)

    got = check_against_optax(backend, crossent.generalized_kl_divergence, (p, q), (0, 1), ref,
                              reduction, rows_counted(w), where=w)
    check_masked_zero(got, w)


ELEMENT_MASK = seeded(25).random((B, C)) > 0.4

SIGMOID_LOSSES = {
    "sigmoid_cross_entropy": (crossent.sigmoid_cross_entropy, L.sigmoid_binary_cross_entropy,
                              {}),
    "sigmoid_focal_loss": (crossent.sigmoid_focal_loss, L.sigmoid_focal_loss,
                           {"alpha": None, "gamma": 2.0}),
    "sigmoid_focal_loss_alpha": (crossent.sigmoid_focal_loss, L.sigmoid_focal_loss,
                                 {"alpha": 0.25, "gamma": 1.5}),
}
SIGMOIDS = pytest.mark.parametrize("loss", list(SIGMOID_LOSSES))


def sigmoid_data(seed):
    r = seeded(seed)
    return r.normal(size=(B, C)) * 2, (r.random((B, C)) > 0.5).astype(np.float64)


@backends
@reductions
@SIGMOIDS
def test_sigmoid_losses_where(backend, reduction, loss):
    fn, opt, hp = SIGMOID_LOSSES[loss]
    x, t = sigmoid_data(26)
    w = ELEMENT_MASK
    assert 0 < w.sum() < w.size

    def ref(x_, t_):
        return opt(x_, t_, **hp) * w

    got = check_against_optax(backend, fn, (x, t), (0,), ref, reduction, int(w.sum()),
                              where=w, **hp)
    assert np.all(got[0][~w] == 0.0)


@backends
@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("shape", [(B, 1), (C,)], ids=str)
@pytest.mark.parametrize("loss", ["sigmoid_cross_entropy", "sigmoid_focal_loss"])
def test_sigmoid_losses_where_broadcast(backend, reduction, shape, loss):
    fn, opt, hp = SIGMOID_LOSSES[loss]
    x, t = sigmoid_data(27)
    w = seeded(28).random(shape) > 0.5
    w.flat[0], w.flat[-1] = True, False

    def ref(x_, t_):
        return opt(x_, t_, **hp) * w

    got = check_against_optax(backend, fn, (x, t), (0,), ref, reduction, None, where=w, **hp)
    assert np.all(got[0][~np.broadcast_to(w, (B, C))] == 0.0)


# --- 6. tuple axis ----------------------------------------------------------------------------

SHAPE4 = (2, 3, 4, 5)
AX = (1, 3)
NBATCH = 2 * 4


def split_classes(flat):
    """(2, 4, 15) -> (2, 3, 4, 5) with the 15 classes over axes (1, 3), C order."""
    return flat.reshape(2, 4, 3, 5).transpose(0, 2, 1, 3)


def tuple_dists(seed):
    return split_classes(seeded(seed).dirichlet(np.ones(15), size=(2, 4)))


@backends
@reductions
def test_tuple_axis_softmax_cross_entropy_probability_targets(backend, reduction):
    x, t = seeded(30).normal(size=SHAPE4), tuple_dists(31)

    def ref(x_, t_):
        return L.softmax_cross_entropy(x_, t_, axis=AX)

    check_against_optax(backend, crossent.softmax_cross_entropy, (x, t), (0, 1), ref,
                        reduction, NBATCH, axis=AX)


@backends
@reductions
def test_tuple_axis_softmax_cross_entropy_integer_labels(backend, reduction):
    r = seeded(32)
    x, y = r.normal(size=SHAPE4), r.integers(15, size=(2, 4))
    y[0, 0], y[1, 3] = 0, 14

    def ref(x_, y_):
        return L.softmax_cross_entropy_with_integer_labels(x_, y_, axis=AX)

    check_against_optax(backend, crossent.softmax_cross_entropy, (x, y), (0,), ref, reduction,
                        NBATCH, axis=AX)
    # the same as one-hot probability targets over the flattened class axes
    onehot = split_classes(np.eye(15)[y])
    np.testing.assert_allclose(
        crossent_value(backend, crossent.softmax_cross_entropy, (x, y), axis=AX,
                       reduction="none"),
        np.asarray(L.softmax_cross_entropy(x, onehot, axis=AX)), rtol=RTOL, atol=ATOL)


@backends
@reductions
def test_tuple_axis_poly1_cross_entropy(backend, reduction):
    x, t = seeded(33).normal(size=SHAPE4), tuple_dists(34)

    def ref(x_, t_):
        return L.poly_loss_cross_entropy(x_, t_, epsilon=2.0, axis=AX)

    check_against_optax(backend, crossent.poly1_cross_entropy, (x, t), (0,), ref, reduction,
                        NBATCH, axis=AX)


@backends
@reductions
def test_tuple_axis_kl_divergence(backend, reduction):
    p, q = tuple_dists(35), tuple_dists(36)

    def ref(p_, q_):
        return L.kl_divergence(jnp.log(q_), p_, axis=AX)

    check_against_optax(backend, crossent.kl_divergence, (p, q), (0, 1), ref, reduction,
                        NBATCH, axis=AX)

    def ref_log(lp_, lq_):
        return L.kl_divergence_with_log_targets(lq_, lp_, axis=AX)

    check_against_optax(backend, crossent.kl_divergence, (np.log(p), np.log(q)), (0, 1),
                        ref_log, reduction, NBATCH, axis=AX, log_inputs=True)


@backends
@reductions
def test_tuple_axis_generalized_kl_divergence(backend, reduction):
    p, q = measures(37, SHAPE4)

    def ref(p_, q_):
        return L.generalized_kl_divergence(jnp.log(q_), p_, axis=AX)

    check_against_optax(backend, crossent.generalized_kl_divergence, (p, q), (0, 1), ref,
                        reduction, NBATCH, axis=AX)


# --- 7. names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "want"), [
    ("optax.perceptron_loss", "perceptron_loss"),
    ("optax.multiclass_perceptron_loss", "multiclass_perceptron_loss"),
    ("optax.generalized_kl_divergence", "generalized_kl_divergence"),
    ("optax.convex_kl_divergence", "generalized_kl_divergence"),
    ("optax.kl_divergence_with_log_targets", "kl_divergence"),
])
def test_optax_names(name, want):
    assert crossent.get(name).name == want


# --- 8. errors --------------------------------------------------------------------------------

WHERE_LOSSES = {
    "softmax_cross_entropy": lambda a, b: (crossent.softmax_cross_entropy, (a, b)),
    "softmax_cross_entropy_int": lambda a, b: (crossent.softmax_cross_entropy,
                                               (a, np.zeros(B, dtype=np.int64))),
    "poly1_cross_entropy": lambda a, b: (crossent.poly1_cross_entropy, (a, b)),
    "kl_divergence": lambda a, b: (crossent.kl_divergence, (b, b)),
    "generalized_kl_divergence": lambda a, b: (crossent.generalized_kl_divergence, (b, b)),
    "sigmoid_cross_entropy": lambda a, b: (crossent.sigmoid_cross_entropy, (a, b)),
    "sigmoid_focal_loss": lambda a, b: (crossent.sigmoid_focal_loss, (a, b)),
}


@backends
@pytest.mark.parametrize("loss", list(WHERE_LOSSES))
@pytest.mark.parametrize("shape", [(3,), (B, C + 1), (B + 1, 1)], ids=str)
def test_where_shape_must_broadcast(backend, loss, shape):
    x, t, _ = class_data(40)
    fn, args = WHERE_LOSSES[loss](x, t)
    w = np.ones(shape, dtype=bool)
    with pytest.raises(ValueError, match="where"):
        crossent_value(backend, fn, args, where=w, reduction="none")


def test_traced_where_mask_under_jit_and_grad():
    # the mask is an argument of the jitted function (a traced boolean), differentiated
    # through: it must not be closed over by the custom derivative
    r = seeded(31)
    x = r.normal(size=(4, 5))
    y = r.integers(0, 5, 4)
    m = r.uniform(size=(4, 5)) > 0.3
    m[np.arange(4), y] = True

    def ours(z, mask):
        return crossent.softmax_cross_entropy(z, y, where=mask, reduction="sum")

    def ref(z, mask):
        return L.softmax_cross_entropy_with_integer_labels(z, y, where=mask).sum()

    got = jax.jit(jax.grad(ours))(jnp.asarray(x), jnp.asarray(m))
    want = jax.grad(ref)(jnp.asarray(x), jnp.asarray(m))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL)
    f = jax.jit(ours)
    got = jax.grad(lambda z: f(z, jnp.asarray(m)))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL)
