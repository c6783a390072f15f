"""Sigmoid and softmax focal losses: conformance with Optax, torchvision's formula (restated
in torch), Keras; closed-form gradients against torch autograd, jax.grad and finite
differences; backends; the paper's numbers (Lin et al.'s Fig. 1); properties; extremes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import expit, log_expit

import crossent
from crossent.focal import sigmoid_focal_loss, softmax_focal_loss
from tests._backends import (
    BACKENDS,
    check_summed_in_float32,
    finite_difference,
    second_order_tests,
    to_backend,
    to_numpy,
    torchvision_sigmoid_focal_loss,
)

T = torch.from_numpy
GAMMAS = [0.0, 0.5, 1.0, 2.0, 5.0]
SIG_VAG = crossent.value_and_grad(sigmoid_focal_loss)
SOFT_VAG = crossent.value_and_grad(softmax_focal_loss)
SIG_GRAD = crossent.grad(sigmoid_focal_loss)
SOFT_GRAD = crossent.grad(softmax_focal_loss)


# --- independent references ------------------------------------------------------------------


def torch_softmax_focal(z, t, alpha, gamma):
    """Per-example -sum_c alpha_c (1 - p_c)^gamma t_c log p_c, plainly, in torch (class axis -1)."""
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    a = 1.0 if alpha is None else torch.as_tensor(alpha, dtype=z.dtype)
    return -(a * (1 - p) ** gamma * t * logp).sum(-1)


def loop_softmax_focal(z, y, alpha, gamma, ignore_index=-100):
    """Float64 loop over examples with integer labels (class axis -1); NaN marks ignored."""
    out = np.full(y.shape, np.nan)
    for idx in np.ndindex(*y.shape):
        if y[idx] == ignore_index:
            continue
        row = z[idx]
        p = np.exp(row - row.max())
        p = p / p.sum()
        c = y[idx]
        a = 1.0 if alpha is None else (alpha if np.isscalar(alpha) else alpha[c])
        out[idx] = -a * (1 - p[c]) ** gamma * np.log(p[c])
    return out


def _keras():
    import keras

    return keras


# --- sigmoid focal loss ----------------------------------------------------------------------


def _sig_case(shape=(5, 7), soft=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape)
    t = rng.uniform(size=shape) if soft else rng.integers(0, 2, size=shape).astype(np.float64)
    return x, t


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", [None, 0.25, 0.7])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_matches_optax_values_and_jax_grad(gamma, alpha, soft):
    x, t = _sig_case(soft=soft, seed=int(gamma * 10) + soft)
    ref = optax.losses.sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(t), alpha=alpha,
                                          gamma=gamma)
    ours = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="none")
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-12, atol=1e-14)
    ref_g = jax.grad(lambda v: jnp.sum(optax.losses.sigmoid_focal_loss(
        v, jnp.asarray(t), alpha=alpha, gamma=gamma)))(jnp.asarray(x))
    g = SIG_GRAD(x, t, alpha=alpha, gamma=gamma, reduction="sum")
    np.testing.assert_allclose(g, np.asarray(ref_g), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.5, None), (1.5, 0.9), (0.0, 0.25)])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_matches_torchvision_formula_and_autograd(reduction, gamma, alpha, soft, rng):
    x, t = _sig_case(shape=(4, 3, 5), soft=soft, seed=7)
    if not soft:  # keep the hard-target autograd reference away from 0 ** (gamma - 1)
        x = np.clip(x, -15, 15)
    xt = T(x).requires_grad_()
    ref = torchvision_sigmoid_focal_loss(xt, T(t), alpha=alpha, gamma=gamma, reduction=reduction)
    up = T(rng.normal(size=ref.shape)) if reduction == "none" else torch.ones_like(ref)
    ref.backward(up)
    v, g = SIG_VAG(x, t, alpha=alpha, gamma=gamma, reduction=reduction)
    np.testing.assert_allclose(v, ref.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g * up.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_sigmoid_mmdet_formula(rng):
    # mmdetection's py_sigmoid_focal_loss returns the mean of the element-wise loss; its BCE form:
    # -alpha y (1-p)^g log p - (1-alpha)(1-y) p^g log(1-p), with one-hot (N, C) targets
    x = rng.normal(scale=2, size=(6, 4))
    y = np.eye(4)[rng.integers(0, 4, size=6)]
    p = expit(x)
    ref = (-0.25 * y * (1 - p) ** 2 * np.log(p)
           - 0.75 * (1 - y) * p ** 2 * np.log(1 - p)).mean()
    assert float(sigmoid_focal_loss(x, y)) == pytest.approx(ref, rel=1e-12)
    # integer 0/1 targets are accepted and mean the same
    assert float(sigmoid_focal_loss(x, y.astype(np.int64))) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.0, 0.6), (3.0, 0.1)])
def test_sigmoid_matches_keras_binary_focal(gamma, alpha):
    keras = _keras()
    x, t = _sig_case(shape=(6, 4), soft=True, seed=3)
    x = np.clip(x, -5, 5)  # Keras clips probabilities at 1e-7: stay inside
    ref = keras.losses.binary_focal_crossentropy(t, x, apply_class_balancing=True, alpha=alpha,
                                                 gamma=gamma, from_logits=True)
    # Keras averages over the last axis: compare with our element-wise loss averaged likewise
    ours = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="none").mean(-1)
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("t_value", [0.0, 1.0, 0.3])
def test_sigmoid_gradient_finite_differences(gamma, t_value):
    x = np.array([-30.0, -8.0, -1.0, -1e-3, 0.0, 0.7, 5.0, 25.0])
    t = np.full_like(x, t_value)
    g = SIG_GRAD(x, t, gamma=gamma, alpha=0.4, reduction="sum")
    fd = finite_difference(lambda v: sigmoid_focal_loss(v, t, gamma=gamma, alpha=0.4,
                                                        reduction="none"), x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_sigmoid_gradient_matches_the_paper_appendix_b(gamma):
    # Lin et al., appendix B: with y in {-1, +1} and p_t = sigma(y x),
    # dFL/dx = y (1 - p_t)^gamma (gamma p_t log(p_t) + p_t - 1)
    x = np.linspace(-12, 12, 25)
    for y in (-1.0, 1.0):
        p_t = expit(y * x)
        ref = y * (1 - p_t) ** gamma * (gamma * p_t * np.log(p_t) + p_t - 1)
        g = SIG_GRAD(x, np.full_like(x, (y + 1) / 2), alpha=None, gamma=gamma,
                                    reduction="sum")
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-300)


def test_sigmoid_saturated_values_are_exact():
    # x = 40, t = 1: 1 - p = sigma(-40) and -log p = log1p(e^-40) are tiny but exact; the
    # naive (1 - sigmoid(x)) ** gamma gives 0 there
    x = np.array([40.0, -40.0, 300.0])
    t = np.array([1.0, 0.0, 1.0])
    ours = sigmoid_focal_loss(x, t, alpha=None, gamma=0.5, reduction="none")
    ref = np.exp(0.5 * log_expit(-np.abs(x))) * -log_expit(np.abs(x))
    np.testing.assert_allclose(ours, ref, rtol=1e-13)
    assert ours[0] > 0


# --- softmax focal loss ----------------------------------------------------------------------


def _soft_case(n=6, c=5, spatial=(), seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=scale, size=(n, c) + spatial)
    y = rng.integers(0, c, size=(n,) + spatial)
    probs = np.moveaxis(rng.dirichlet(np.ones(c), size=(n,) + spatial), -1, 1)
    return z, y, probs


ALPHAS = [None, 0.25, [0.1, 0.5, 1.0, 0.3, 2.0]]


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha_i", range(len(ALPHAS)))
def test_softmax_matches_keras_categorical_focal(gamma, alpha_i):
    keras = _keras()
    alpha = ALPHAS[alpha_i]
    z, y, probs = _soft_case(n=8, seed=int(gamma * 10) + alpha_i)
    for tgt in (np.eye(5)[y], probs):
        # Keras' alpha (scalar or list) multiplies every class term, as ours does
        ref = keras.losses.categorical_focal_crossentropy(
            tgt, z, alpha=1.0 if alpha is None else alpha, gamma=gamma, from_logits=True)
        ours = softmax_focal_loss(z, tgt, alpha=alpha, gamma=gamma, reduction="none")
        np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-6)
    # Keras' "sum_over_batch_size" is our "mean"
    cls = keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=gamma, from_logits=True)
    assert float(softmax_focal_loss(z, y, alpha=0.25, gamma=gamma)) == pytest.approx(
        float(cls(np.eye(5)[y], z)), rel=1e-6)


SOFT_OPTIONS = list(itertools.product(["mean", "sum", "none"], [0.0, 0.5, 2.0],
                                      [None, 0.25, "per-class"], [(), (3, 2)]))


@pytest.mark.parametrize("reduction,gamma,alpha,spatial", SOFT_OPTIONS)
def test_softmax_integer_labels_vs_loop_and_torch_autograd(reduction, gamma, alpha, spatial, rng):
    z, y, _ = _soft_case(spatial=spatial, seed=len(spatial) + int(gamma * 4))
    y.reshape(-1)[::4] = -100
    a = rng.uniform(0.1, 2.0, size=5) if alpha == "per-class" else alpha
    # loop reference on the class-last layout
    z_last = np.moveaxis(z, 1, -1)
    per = loop_softmax_focal(z_last, y, a, gamma)
    valid = y != -100
    ref = {"none": np.where(valid, per, 0.0), "sum": np.nansum(per),
           "mean": np.nansum(per) / valid.sum()}[reduction]
    v, g = SOFT_VAG(z, y, alpha=a, gamma=gamma, axis=1, reduction=reduction)
    np.testing.assert_allclose(v, ref, rtol=1e-12, atol=1e-14)
    # gradient: torch autograd of the plain formula on one-hot targets
    zt = T(z_last.copy()).requires_grad_()
    oh = T(np.eye(5)[np.where(valid, y, 0)] * valid[..., None])
    per_t = torch_softmax_focal(zt, oh, a, gamma)
    red = {"none": per_t, "sum": per_t.sum(), "mean": per_t.sum() / valid.sum()}[reduction]
    up = T(rng.normal(size=red.shape)) if reduction == "none" else torch.ones_like(red)
    red.backward(up)
    gt = np.moveaxis(zt.grad.numpy(), -1, 1)
    if reduction == "none":
        g = g * np.expand_dims(up.numpy(), 1)
    np.testing.assert_allclose(g, gt, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 4.5])
def test_softmax_probability_targets_vs_torch_autograd(gamma):
    z, _, probs = _soft_case(n=7, seed=11)
    a = [0.3, 1.0, 0.5, 0.8, 0.2]
    zt = T(z).requires_grad_()
    ref = torch_softmax_focal(zt, T(probs), a, gamma).mean()
    ref.backward()
    v, g = SOFT_VAG(z, probs, alpha=a, gamma=gamma)
    assert float(v) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_softmax_gradient_finite_differences(gamma, scale):
    # scale 8 makes some p_c close to 1, where (1 - p)^(gamma - 1) alone would blow up
    z, y, probs = _soft_case(n=4, c=3, seed=int(scale), scale=scale)
    z[0] = [12.0, 0.0, -3.0]
    y[0] = 0
    for tgt in (y, probs):
        f = lambda v, tgt=tgt: softmax_focal_loss(v, tgt, gamma=gamma, alpha=0.7,  # noqa: E731
                                                  reduction="none")
        g = SOFT_GRAD(z, tgt, gamma=gamma, alpha=0.7, reduction="sum")
        np.testing.assert_allclose(g, finite_difference(f, z), rtol=1e-6, atol=1e-9)


def test_softmax_closed_form_vs_jax_grad_of_the_plain_formula():
    z, y, _ = _soft_case(n=5, seed=21)
    t = jnp.asarray(np.eye(5)[y])
    for gamma in (0.5, 2.0):
        def plain(v, gamma=gamma):
            logp = jax.nn.log_softmax(v)
            return -jnp.sum(0.25 * (1 - jnp.exp(logp)) ** gamma * t * logp) / v.shape[0]

        ref = jax.grad(plain)(jnp.asarray(z))
        g = SOFT_GRAD(z, y, alpha=0.25, gamma=gamma)
        np.testing.assert_allclose(g, np.asarray(ref), rtol=1e-10, atol=1e-14)


def test_softmax_near_one_probability_is_exact():
    # z = [30, 0]: 1 - p_0 = sigma(-30) ~ 9.4e-14; log p = z - lse keeps ~2 digits of it
    for gap, gamma in [(30.0, 2.0), (40.0, 0.5), (700.0, 0.5)]:
        v = softmax_focal_loss(np.array([[gap, 0.0]]), np.array([0]), gamma=gamma,
                               reduction="sum")
        ref = np.exp(gamma * log_expit(-gap)) * -log_expit(gap)
        assert float(v) == pytest.approx(float(ref), rel=1e-12, abs=0)


def test_softmax_all_ignored_is_zero_with_zero_gradient(rng):
    z = rng.normal(size=(3, 4))
    v, g = SOFT_VAG(z, np.full(3, -100))
    assert float(v) == 0.0 and np.all(g == 0)
    v, g = SOFT_VAG(z, np.array([1, -7, -7]), ignore_index=-7, reduction="sum")
    assert float(v) == pytest.approx(loop_softmax_focal(z[:1], np.array([1]), None, 2.0)[0])
    assert np.all(g[1:] == 0)


def test_softmax_single_class_is_zero():
    for gamma in (0.0, 0.5, 2.0):
        v, g = SOFT_VAG(np.array([[3.0], [-500.0]]), np.array([0, 0]), gamma=gamma)
        assert float(v) == 0.0 and np.all(g == 0)


def test_softmax_masked_class_with_minus_inf_logit():
    z = np.array([[1.0, -np.inf, 0.5], [0.0, -np.inf, 2.0]])
    probs = np.array([[0.3, 0.0, 0.7], [1.0, 0.0, 0.0]])
    v, g = SOFT_VAG(z, probs, gamma=0.5, reduction="none")
    ref = torch_softmax_focal(T(z[:, [0, 2]]), T(probs[:, [0, 2]]), None, 0.5).numpy()
    np.testing.assert_allclose(v, ref, rtol=1e-12)
    assert np.all(np.isfinite(g)) and np.all(g[:, 1] == 0)


# --- gradients w.r.t. the targets, torch double backward, JAX second order -------------------


def _plain_sigmoid_focal(x, t, alpha, gamma):
    """The element-wise sigmoid focal loss written plainly in jnp, polynomial in t (so its
    jax.grad w.r.t. hard targets is right: Optax's logsumexp masks the terms whose weight
    b = 1 - t or t is 0, which zeroes their derivative with respect to t there)."""
    q = t * jax.nn.sigmoid(-x) + (1 - t) * jax.nn.sigmoid(x)
    ce = -t * jax.nn.log_sigmoid(x) - (1 - t) * jax.nn.log_sigmoid(-x)
    alpha_t = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * ce * q**gamma


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", [None, 0.25, 0.7])
@pytest.mark.parametrize("kind", ["hard", "soft", "mixed"])
def test_sigmoid_target_gradient_vs_jax_grad_of_the_plain_formula(gamma, alpha, kind):
    rng = np.random.default_rng(int(gamma * 10) + len(kind))
    x = np.clip(rng.normal(scale=4.0, size=(6, 5)), -15, 15)
    t = {"hard": rng.integers(0, 2, size=x.shape).astype(np.float64),
         "soft": rng.uniform(size=x.shape),
         "mixed": rng.choice([0.0, 1.0, 0.3, 0.85], size=x.shape)}[kind]
    gx, gt = crossent.grad(sigmoid_focal_loss, argnums=(0, 1))(x, t, alpha=alpha, gamma=gamma,
                                                               reduction="sum")
    ref_x, ref_t = jax.grad(lambda a, b: jnp.sum(_plain_sigmoid_focal(a, b, alpha, gamma)),
                            argnums=(0, 1))(jnp.asarray(x), jnp.asarray(t))
    np.testing.assert_allclose(gx, np.asarray(ref_x), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gt, np.asarray(ref_t), rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(gt, crossent.grad(sigmoid_focal_loss, argnums=1)(
        x, t, alpha=alpha, gamma=gamma, reduction="sum"))
    if kind == "soft":  # interior targets: central differences stay in [0, 1]
        fd = finite_difference(lambda b: sigmoid_focal_loss(x, b, alpha=alpha, gamma=gamma,
                                                            reduction="none"), t, h=1e-6)
        np.testing.assert_allclose(gt, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_target_gradient_is_finite_at_extreme_logits(gamma):
    x = np.array([-1e300, -700.0, -40.0, -1e-3, 0.0, 40.0, 700.0, 1e300])
    for t_value in (0.0, 1.0, 0.3):
        t = np.full_like(x, t_value)
        gt = crossent.grad(sigmoid_focal_loss, argnums=1)(x, t, gamma=gamma, reduction="none")
        assert np.all(np.isfinite(gt)), (t_value, gt)
    moderate = np.array([-40.0, -8.0, -1.0, 0.0, 1.0, 8.0, 40.0])
    for t_value in (0.0, 1.0):
        t = np.full_like(moderate, t_value)
        gt = crossent.grad(sigmoid_focal_loss, argnums=1)(moderate, t, gamma=gamma,
                                                          reduction="none")
        ref = jax.grad(lambda b: jnp.sum(_plain_sigmoid_focal(jnp.asarray(moderate), b, 0.25,
                                                              gamma)))(jnp.asarray(t))
        np.testing.assert_allclose(gt, np.asarray(ref), rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_target_gradient_vs_torch_autograd(gamma, reduction, rng):
    z, _, probs = _soft_case(n=5, seed=31)
    a = [0.3, 1.0, 0.5, 0.8, 0.2]
    zt, tt = T(z).requires_grad_(), T(probs).requires_grad_()
    per = torch_softmax_focal(zt, tt, a, gamma)
    ref = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    cot = T(rng.normal(size=ref.shape))
    ref.backward(cot)
    gz, gt = crossent.grad(softmax_focal_loss, argnums=(0, 1))(z, probs, alpha=a, gamma=gamma,
                                                               reduction=reduction)
    c = cot.numpy()[..., None] if reduction == "none" else float(cot)
    np.testing.assert_allclose(gz * c, zt.grad.numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(gt * c, tt.grad.numpy(), rtol=1e-9, atol=1e-14)
    f = lambda b: softmax_focal_loss(z, b, alpha=a, gamma=gamma, reduction="none")  # noqa: E731
    fd = finite_difference(f, probs, h=1e-6)
    np.testing.assert_allclose(gt / (1 / 5 if reduction == "mean" else 1.0), fd, rtol=1e-6,
                               atol=1e-9)
    # the loss on torch tensors: its backward is that closed form
    zt, tt = T(z).requires_grad_(), T(probs).requires_grad_()
    out = softmax_focal_loss(zt, tt, alpha=a, gamma=gamma, reduction=reduction)
    assert "ClosedForm" in type(out.grad_fn).__name__
    out.backward(cot)
    np.testing.assert_allclose(zt.grad.numpy(), gz * c, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(tt.grad.numpy(), gt * c, rtol=1e-13, atol=1e-16)


def _second_order_cases():
    rng = np.random.default_rng(41)
    x = rng.normal(scale=2.0, size=(3, 4))
    soft = rng.uniform(0.05, 0.95, size=(3, 4))
    hard = rng.integers(0, 2, size=(3, 4)).astype(np.float64)
    z = rng.normal(scale=2.0, size=(3, 4))
    y = np.array([1, -100, 3])
    probs = 0.8 * rng.dirichlet(np.ones(4), size=3) + 0.05
    zs = rng.normal(size=(2, 4, 3))  # classes on axis 1
    ps = np.moveaxis(0.8 * rng.dirichlet(np.ones(4), size=(2, 3)) + 0.05, -1, 1)
    # (loss, arrays, options, indices of the differentiated arrays)
    return [
        (sigmoid_focal_loss, (x, soft), dict(alpha=0.25, gamma=2.0), (0, 1)),
        (sigmoid_focal_loss, (x, soft), dict(alpha=None, gamma=0.5), (0, 1)),
        (sigmoid_focal_loss, (x, soft), dict(alpha=0.7, gamma=0.0), (0, 1)),
        (sigmoid_focal_loss, (x, hard), dict(alpha=0.25, gamma=1.5), (0,)),
        (softmax_focal_loss, (z, y), dict(alpha=[0.5, 1.0, 2.0, 0.3], gamma=2.0), (0,)),
        (softmax_focal_loss, (z, y), dict(gamma=0.0), (0,)),
        (softmax_focal_loss, (z, probs), dict(alpha=0.25, gamma=0.5), (0, 1)),
        (softmax_focal_loss, (zs, ps), dict(gamma=2.0, axis=1), (0, 1)),
    ]


test_torch_gradcheck_and_gradgradcheck, test_jax_check_grads_to_second_order = (
    second_order_tests(_second_order_cases))


# --- Lin et al.'s Fig. 1: loss vs p_t for several gamma (arXiv:1708.02002) ------------------


@pytest.mark.parametrize("fn", ["sigmoid", "softmax"])
def test_paper_figure_loss_vs_p_t(fn):
    p_t = np.linspace(0.01, 0.99, 50)
    x = np.log(p_t) - np.log1p(-p_t)  # sigma(x) = p_t; also a 2-class softmax on [x, 0]
    curves = []
    for gamma in GAMMAS:
        if fn == "sigmoid":
            fl = sigmoid_focal_loss(x, np.ones_like(x), alpha=None, gamma=gamma,
                                    reduction="none")
        else:
            z = np.stack([x, np.zeros_like(x)], axis=-1)
            fl = softmax_focal_loss(z, np.zeros(len(x), dtype=np.int64), gamma=gamma,
                                    reduction="none")
        np.testing.assert_allclose(fl, -(1 - p_t) ** gamma * np.log(p_t), rtol=1e-11)
        curves.append(fl)
    # larger gamma -> smaller loss at every p_t; gamma = 0 is CE
    assert np.all(np.diff(np.stack(curves), axis=0) <= 0)
    # the paper: with gamma = 2 an example at p_t = 0.9 has 100x lower loss than with CE
    x9 = np.array([np.log(9.0)])
    one = np.ones(1)
    fl = sigmoid_focal_loss(x9, one, alpha=None, gamma=2.0, reduction="sum")
    ce = crossent.sigmoid_cross_entropy(x9, one, reduction="sum")
    assert float(ce / fl) == pytest.approx(100.0, rel=1e-12)
    z9 = np.array([[np.log(9.0), 0.0]])
    ratio = crossent.softmax_cross_entropy(z9, np.array([0])) / softmax_focal_loss(
        z9, np.array([0]))
    assert float(ratio) == pytest.approx(100.0, rel=1e-12)


# --- backends, autodiff through the generic definition, dtypes -----------------------------


def _backend_cases():
    x, t = _sig_case(shape=(4, 3), seed=5)
    z, y, probs = _soft_case(n=4, c=3, seed=6)
    y[1] = -100
    return [
        (sigmoid_focal_loss, x, t, dict(alpha=0.25, gamma=2.0)),
        (sigmoid_focal_loss, x, (t > 0.5).astype(np.int64), dict(alpha=None, gamma=0.5)),
        (softmax_focal_loss, z, y, dict(alpha=np.array([0.2, 0.5, 1.0]), gamma=2.0)),
        (softmax_focal_loss, z, probs, dict(alpha=0.25, gamma=0.5)),
        (softmax_focal_loss, np.moveaxis(z, 0, 1).copy(), probs.T.copy(), dict(axis=0)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(5))
def test_same_value_and_gradient_on_every_backend(backend, index):
    fn, pred, tgt, kw = _backend_cases()[index]
    bkw = {k: to_backend(backend, v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    for reduction in ("mean", "sum", "none"):
        rv, rg = crossent.value_and_grad(fn)(pred, tgt, reduction=reduction, **kw)
        v, g = crossent.value_and_grad(fn)(to_backend(backend, pred), to_backend(backend, tgt),
                                           reduction=reduction, **bkw)
        np.testing.assert_allclose(to_numpy(v), rv, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(to_numpy(g), rg, rtol=1e-12, atol=1e-15)
        lv = fn(to_backend(backend, pred), to_backend(backend, tgt), reduction=reduction, **bkw)
        np.testing.assert_allclose(to_numpy(lv), rv, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("index", range(5))
def test_autodiff_through_the_generic_definition(index):
    fn, pred, tgt, kw = _backend_cases()[index]
    _, g = crossent.value_and_grad(fn)(pred, tgt, **kw)
    xt = T(pred.copy()).requires_grad_()
    tkw = {k: T(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    fn(xt, T(tgt), **tkw).backward()
    np.testing.assert_allclose(xt.grad.numpy(), g, rtol=1e-10, atol=1e-15)
    jkw = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    jg = jax.grad(lambda v: fn(v, jnp.asarray(tgt), **jkw))(jnp.asarray(pred))
    np.testing.assert_allclose(np.asarray(jg), g, rtol=1e-10, atol=1e-15)


def test_jit_under_jax():
    z, y, _ = _soft_case(n=4, c=3, seed=8)
    f = jax.jit(lambda v: softmax_focal_loss(v, jnp.asarray(y), alpha=jnp.asarray([1., 2., 3.])))
    ref = softmax_focal_loss(z, y, alpha=np.array([1.0, 2.0, 3.0]))
    assert float(f(jnp.asarray(z))) == pytest.approx(float(ref), rel=1e-12)
    x, t = _sig_case(seed=9)
    h = jax.jit(lambda v: sigmoid_focal_loss(v, jnp.asarray(t)))
    assert float(h(jnp.asarray(x))) == pytest.approx(float(sigmoid_focal_loss(x, t)), rel=1e-12)


def test_half_precision_is_computed_in_float32(half_precision, rng):
    backend, dtype = half_precision
    x32 = rng.normal(scale=4, size=(8, 6)).astype(np.float32)
    y = rng.integers(0, 6, size=8)
    check_summed_in_float32(backend, dtype, softmax_focal_loss, x32, y)
    check_summed_in_float32(backend, dtype, sigmoid_focal_loss, x32, np.eye(6)[y])


# --- properties ------------------------------------------------------------------------------

logit_arrays = hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1,
                                                       max_side=6),
                          elements=st.floats(-60, 60))
small = settings(max_examples=30, deadline=None)


@small
@given(logit_arrays, st.data())
def test_gamma_zero_without_alpha_is_cross_entropy(z, data):
    n, c = z.shape
    y = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    # the CE functions form z - lse (softmax) and softplus(x) - x t (sigmoid), whose rounding
    # error is ~eps * |z| absolute; the focal forms have no such cancellation
    tol = 8 * np.finfo(np.float64).eps * (1 + np.abs(z).max())
    v, g = SOFT_VAG(z, y, gamma=0.0, reduction="none")
    rv, rg = crossent.value_and_grad(crossent.softmax_cross_entropy)(z, y, reduction="none")
    np.testing.assert_allclose(v, rv, rtol=1e-12, atol=tol)
    np.testing.assert_allclose(g, rg, rtol=1e-12, atol=1e-14)
    t = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    t = np.where(z > data.draw(st.floats(-5, 5)), t, 1 - t)
    v, g = SIG_VAG(z, t, gamma=0.0, alpha=None, reduction="none")
    rv, rg = crossent.value_and_grad(crossent.sigmoid_cross_entropy)(z, t, reduction="none")
    np.testing.assert_allclose(v, rv, rtol=1e-12, atol=tol)
    np.testing.assert_allclose(g, rg, rtol=1e-12, atol=1e-14)


@small
@given(logit_arrays, st.floats(0, 6), st.one_of(st.none(), st.floats(0, 1)), st.data())
def test_focal_never_exceeds_cross_entropy(z, gamma, alpha, data):
    n, c = z.shape
    y = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    tol = 8 * np.finfo(np.float64).eps * (1 + np.abs(z).max())  # CE's rounding, see above
    fl = softmax_focal_loss(z, y, gamma=gamma, alpha=alpha, reduction="none")
    ce = crossent.softmax_cross_entropy(z, y, reduction="none")
    assert np.all(fl <= ce + tol)
    t = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).uniform(size=z.shape)
    t = np.where(t < 0.2, 0.0, np.where(t > 0.8, 1.0, t))  # hard and soft targets
    fl = sigmoid_focal_loss(z, t, gamma=gamma, alpha=alpha, reduction="none")
    ce = crossent.sigmoid_cross_entropy(z, t, reduction="none")
    assert np.all(fl <= ce + tol)


@small
@given(logit_arrays, st.floats(-1e3, 1e3), st.floats(0, 4))
def test_softmax_focal_is_shift_invariant(z, shift, gamma):
    y = np.zeros(z.shape[0], dtype=np.int64)
    a, ga = SOFT_VAG(z, y, gamma=gamma)
    b, gb = SOFT_VAG(z + shift, y, gamma=gamma)
    assert float(a) == pytest.approx(float(b), rel=1e-8, abs=1e-12)
    np.testing.assert_allclose(ga, gb, atol=1e-8)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([(np.float64, 1e4), (np.float64, 200.0), (np.float32, 1e4),
                        (np.float32, 200.0)]),
       st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.integers(0, 2**32 - 1))
def test_no_nan_or_inf_at_extreme_logits(dtype_scale, gamma, seed):
    dtype, scale = dtype_scale
    rng = np.random.default_rng(seed)
    z = (rng.choice([-1.0, 1.0, 0.0, 0.5], size=(4, 3)) * scale).astype(dtype)
    y = rng.integers(0, 3, size=4)
    soft = rng.choice([0.0, 1.0, 0.3], size=(4, 3)).astype(dtype)
    probs = (soft + 1e-3) / (soft + 1e-3).sum(-1, keepdims=True)
    cases = [(softmax_focal_loss, y), (softmax_focal_loss, probs.astype(dtype)),
             (sigmoid_focal_loss, soft), (sigmoid_focal_loss, np.eye(3, dtype=dtype)[y])]
    for fn, tgt in cases:
        v, g = crossent.value_and_grad(fn)(z, tgt, gamma=gamma, reduction="none")
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)), (fn.__name__, z, tgt, v, g)
        assert np.all(np.abs(g) <= 2.0 + 2 * gamma)  # bounded, not just finite
        # autograd through the definition stays finite too
        xt = T(z.copy()).requires_grad_()
        fn(xt, T(np.asarray(tgt)), gamma=gamma, reduction="sum").backward()
        assert torch.all(torch.isfinite(xt.grad))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # gamma log q -> -inf
@pytest.mark.parametrize("dtype,scale", [(np.float32, 3e38), (np.float32, 1e38),
                                         (np.float64, 1e300)])
def test_float_extremes(dtype, scale):
    x = (np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]) * scale).astype(dtype)
    t = np.array([[1.0, 0.0, 0.5], [0.0, 0.3, 1.0]], dtype=dtype)
    v, g = SIG_VAG(x, t, reduction="none")
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
    if scale < 2e38 or dtype == np.float64:  # softmax differences up to 2 * scale must fit
        z = (np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]) * scale / 2).astype(dtype)
        v, g = SOFT_VAG(z, np.array([0, 1]), reduction="none")
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("call,exc,match", [
    (lambda: sigmoid_focal_loss(np.zeros(3), np.zeros(3), gamma=-1.0), ValueError,
     "gamma must be a non-negative finite number, got -1.0"),
    (lambda: softmax_focal_loss(np.zeros((2, 3)), np.array([0, 1]), gamma=-0.5), ValueError,
     "gamma must be a non-negative finite number, got -0.5"),
    (lambda: sigmoid_focal_loss(np.zeros(3), np.zeros(3), alpha=1.5), ValueError,
     r"alpha must be in \[0, 1\], got 1.5"),
    (lambda: softmax_focal_loss(np.zeros((2, 3)), np.array([0, 1]), alpha=[0.5, 0.5]),
     ValueError, r"alpha must be a 1-D array of one weight per class \(3\), got shape \(2,\)"),
    (lambda: softmax_focal_loss(np.zeros((2, 3)), np.array([0, 1]), alpha=[0.5, -1.0, 0.5]),
     ValueError, "alpha must hold non-negative class weights"),
    (lambda: softmax_focal_loss(np.zeros((2, 3)), np.array([0, 1]), alpha=-0.25), ValueError,
     "alpha must be a non-negative finite number, got -0.25"),
    (lambda: softmax_focal_loss(np.zeros((2, 3)), np.array([0, 3])), ValueError,
     r"targets must hold class indices in \[0, 3\)"),
    (lambda: softmax_focal_loss(np.zeros((2, 3)), np.array([0, 1, 2])), ValueError,
     r"shape of logits without the class axis \(2,\), got \(3,\)"),
    (lambda: softmax_focal_loss(np.zeros((2, 3)), np.zeros((2, 4))), ValueError,
     r"shape of logits \(2, 3\), got \(2, 4\)"),
    (lambda: softmax_focal_loss(np.zeros(()), np.array(0)), ValueError, "class axis"),
    (lambda: softmax_focal_loss(np.zeros((2, 3)), np.array([0, 1]), axis=2), ValueError,
     "axis=2 is out of range"),
    (lambda: sigmoid_focal_loss(np.zeros(3), np.array([0.0, 1.5, 0.5])), ValueError,
     r"targets must hold probabilities in \[0, 1\]"),
    (lambda: sigmoid_focal_loss(np.zeros(3), np.zeros(3), reduction="avg"), ValueError,
     "reduction.*'avg'"),
    (lambda: sigmoid_focal_loss(np.zeros(3, dtype=np.int64), np.zeros(3)), TypeError,
     "logits must be a floating-point array"),
    (lambda: sigmoid_focal_loss(np.zeros(3), np.zeros(4)), ValueError,
     r"targets must have the shape of logits \(3,\), got \(4,\)"),
])
def test_bad_input_raises_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_inputs_are_not_mutated():
    z, y, probs = _soft_case(n=4, c=3, seed=2)
    y[0] = -100
    a = np.array([0.1, 0.2, 0.3])
    copies = [v.copy() for v in (z, y, probs, a)]
    SOFT_VAG(z, y, alpha=a)
    SOFT_VAG(z, probs, alpha=a)
    SIG_VAG(z, probs)
    for u, w in zip((z, y, probs, a), copies, strict=True):
        np.testing.assert_array_equal(u, w)


# --- where= masks on the softmax focal loss ---------------------------------------------------


def _masked_focal_loop(x, t, mask, alpha, gamma, red):
    """float64 loops: the focal loss of each row restricted to its unmasked classes (their
    own softmax), rows with no class left excluded from the mean."""
    per, count = np.zeros(x.shape[0]), 0
    for i in range(x.shape[0]):
        keep = np.flatnonzero(mask[i])
        if not keep.size:
            continue
        count += 1
        z = x[i, keep]
        p = np.exp(z - z.max())
        p /= p.sum()
        a = np.ones(x.shape[1]) if alpha is None else alpha
        per[i] = -sum(a[c] * (1 - p[k]) ** gamma * t[i, c] * np.log(p[k])
                      for k, c in enumerate(keep))
    return {"none": per, "sum": per.sum(), "mean": per.sum() / count}[red]


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
@pytest.mark.parametrize("red", ["none", "sum", "mean"])
def test_softmax_focal_where_matches_the_restricted_loss(backend, red):

    r = np.random.default_rng(11)
    x = r.normal(size=(5, 4)) * 2
    t = r.dirichlet(np.ones(4), size=5)
    mask = r.uniform(size=(5, 4)) > 0.35
    mask[3] = False  # a position with nothing left
    alpha = r.uniform(0.2, 1.0, 4)
    want = _masked_focal_loop(x, t, mask, alpha, 1.5, red)
    vg = crossent.value_and_grad(crossent.softmax_focal_loss, argnums=(0, 1))
    val, (gx, gt) = vg(to_backend(backend, x), to_backend(backend, t), alpha=alpha, gamma=1.5,
                       where=to_backend(backend, mask), reduction=red)
    np.testing.assert_allclose(to_numpy(val), want, rtol=1e-12, atol=1e-13)
    fdx = finite_difference(lambda a: _masked_focal_loop(a, t, mask, alpha, 1.5, red), x)
    fdt = finite_difference(lambda b: _masked_focal_loop(x, b, mask, alpha, 1.5, red), t)
    np.testing.assert_allclose(to_numpy(gx), fdx, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(to_numpy(gt), fdt, rtol=1e-7, atol=1e-9)
    assert not to_numpy(gx)[~mask].any() and not to_numpy(gt)[~mask].any()
