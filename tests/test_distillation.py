"""distillation_loss against PyTorch, Optax, a float64 loop and Hinton et al.'s limits.

The reference everywhere is ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` written
independently: ``F.kl_div`` (input = student log-probs, target = teacher probs), Optax
``kl_divergence`` / ``kl_divergence_with_log_targets``, and a per-row float64 loop.
"""

from __future__ import annotations

import math
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
import scipy.special as sps  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import crossent  # noqa: E402
from crossent import gradients  # noqa: E402
from crossent.distillation import distillation_loss  # noqa: E402
from tests._backends import (  # noqa: E402
    BACKENDS,
    check_grads_fwd_rev,
    finite_difference,
    to_backend,
    to_numpy,
)

REDUCTIONS = ("none", "sum", "mean")
VAG = crossent.value_and_grad(distillation_loss)
GRAD = crossent.grad(distillation_loss)
TEMPERATURES = (0.5, 1.0, 4.0)


def logits(shape, seed, scale=3.0):
    return np.random.default_rng(seed).normal(size=shape) * scale


def hinton_loop(s, t, temperature):
    """T^2 * sum_i p_t,i log(p_t,i / p_s,i) per row, one row at a time, in float64."""
    out = np.zeros(s.shape[:-1])
    for idx in np.ndindex(*s.shape[:-1]):
        ls = sps.log_softmax(np.asarray(s[idx], np.float64) / temperature)
        lt = sps.log_softmax(np.asarray(t[idx], np.float64) / temperature)
        out[idx] = temperature**2 * sum(math.exp(b) * (b - a) for a, b in zip(ls, lt, strict=True)
                                        if math.exp(b) > 0)
    return out


def reduce_ref(per, reduction):
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_float64_loop_on_every_backend(backend, temperature, reduction):
    s, t = logits((5, 7), 1), logits((5, 7), 2)
    got = distillation_loss(to_backend(backend, s), to_backend(backend, t),
                            temperature=temperature, reduction=reduction)
    want = reduce_ref(hinton_loop(s, t, temperature), reduction)
    assert np.shape(to_numpy(got)) == np.shape(want)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_matches_torch_kl_div_times_t_squared(temperature):
    s, t = torch.from_numpy(logits((6, 5), 3)), torch.from_numpy(logits((6, 5), 4))
    T = temperature
    ref = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T**2
    ref_log = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1),
                       reduction="batchmean", log_target=True) * T**2
    got = distillation_loss(s, t, temperature=T)
    np.testing.assert_allclose(to_numpy(got), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(got), ref_log.item(), rtol=1e-12)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_matches_optax(temperature):
    s, t = jnp.asarray(logits((4, 6), 5)), jnp.asarray(logits((4, 6), 6))
    T = temperature
    ls, lt = jax.nn.log_softmax(s / T), jax.nn.log_softmax(t / T)
    ref = optax.losses.kl_divergence(ls, jnp.exp(lt)) * T**2
    ref_log = optax.losses.kl_divergence_with_log_targets(ls, lt) * T**2
    got = distillation_loss(s, t, temperature=T, reduction="none")
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref_log), rtol=1e-12)


def test_axis_one_is_pytorch_layout():
    s, t = logits((2, 5, 3), 7), logits((2, 5, 3), 8)  # (N, C, d)
    got = distillation_loss(torch.from_numpy(s), torch.from_numpy(t), temperature=2.0, axis=1,
                            reduction="none")
    want = hinton_loop(np.moveaxis(s, 1, -1), np.moveaxis(t, 1, -1), 2.0)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12)


@pytest.mark.parametrize("temperature", (0.1, 1.0, 4.0, 20.0))
def test_identical_logits_cost_nothing(temperature):
    s = logits((3, 10), 9)
    assert float(distillation_loss(s, s, temperature=temperature)) == 0.0
    # softmax is shift invariant: a teacher offset by a constant is the same teacher
    np.testing.assert_allclose(distillation_loss(s, s + 7.5, temperature=temperature), 0.0,
                               atol=1e-12)
    np.testing.assert_array_equal(GRAD(s, s, temperature=temperature), 0.0)


def test_direction_is_teacher_to_student():
    # Hinton et al. 2015: D_KL(p_teacher || p_student), not the reverse, and the two differ
    s, t = logits((1, 4), 10), logits((1, 4), 11)
    forward = float(distillation_loss(s, t, temperature=2.0))
    reverse = float(distillation_loss(t, s, temperature=2.0))
    assert abs(forward - reverse) > 1e-3
    pt, ps = sps.softmax(t / 2.0, axis=-1), sps.softmax(s / 2.0, axis=-1)
    np.testing.assert_allclose(forward, 4.0 * sps.rel_entr(pt, ps).sum(), rtol=1e-12)
    np.testing.assert_allclose(reverse, 4.0 * sps.rel_entr(ps, pt).sum(), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.floats(0.2, 10.0), st.integers(0, 2**31 - 1))
def test_non_negative_and_equal_to_the_loop(num_classes, temperature, seed):
    s, t = logits((2, num_classes), seed, 5.0), logits((2, num_classes), seed + 1, 5.0)
    got = distillation_loss(s, t, temperature=temperature, reduction="none")
    assert (got >= -1e-12).all()
    np.testing.assert_allclose(got, hinton_loop(s, t, temperature), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_for_logits_of_1e4(dtype):
    s = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [1e4, 1e4 - 1.0, -1e4]], dtype=dtype)
    t = np.array([[1e4 - 2.0, 1e4, -1e4], [0.0, 1e4, 1e4], [1e4, 1e4, 1e4]], dtype=dtype)
    for temperature in (1.0, 10.0, 1e3):
        got = distillation_loss(s, t, temperature=temperature, reduction="none")
        _, g = VAG(s, t, temperature=temperature)
        assert got.dtype == dtype and np.isfinite(got).all() and np.isfinite(g).all()
        want = hinton_loop(s.astype(np.float64), t.astype(np.float64), temperature)
        tol = 1e-3 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_masked_teacher_classes_contribute_nothing():
    # a -inf teacher logit has probability 0: no loss, no NaN, whatever the student says
    s = np.array([[1.0, 2.0, -np.inf], [0.5, 0.0, 3.0]])
    t = np.array([[0.0, 1.0, -np.inf], [0.0, 1.0, -np.inf]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy invalid-value warning from -inf - (-inf)
        got = distillation_loss(s, t, reduction="none")
    np.testing.assert_allclose(got, hinton_loop(s, t, 1.0), rtol=1e-12,
                               atol=1e-15)
    assert np.isfinite(got).all()
    st_ = torch.from_numpy(s).requires_grad_(True)
    distillation_loss(st_, torch.from_numpy(t)).backward()
    assert torch.isfinite(st_.grad).all()
    np.testing.assert_allclose(st_.grad.numpy(), GRAD(s, t), rtol=1e-12,
                               atol=1e-15)
    # a -inf student logit where the teacher puts mass is an infinite loss
    assert float(distillation_loss(t, s)) == np.inf


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_matches_torch_jax_and_finite_differences(temperature, reduction):
    s, t = logits((3, 5), 12), logits((3, 5), 13)
    T = temperature
    value, g = VAG(s, t, temperature=T, reduction=reduction)
    np.testing.assert_allclose(value, distillation_loss(s, t, temperature=T,
                                                        reduction=reduction), rtol=1e-15)
    st_ = torch.from_numpy(s).requires_grad_(True)
    torch_red = {"none": "sum", "sum": "sum", "mean": "batchmean"}[reduction]
    (F.kl_div(F.log_softmax(st_ / T, -1), F.softmax(torch.from_numpy(t) / T, -1),
              reduction=torch_red) * T**2).backward()
    np.testing.assert_allclose(g, st_.grad.numpy(), rtol=1e-10, atol=1e-13)
    red = jnp.mean if reduction == "mean" else jnp.sum
    gj = jax.grad(lambda a: red(optax.losses.kl_divergence(
        jax.nn.log_softmax(a / T), jax.nn.softmax(jnp.asarray(t) / T))) * T**2)(jnp.asarray(s))
    np.testing.assert_allclose(g, np.asarray(gj), rtol=1e-10, atol=1e-13)
    fd = finite_difference(lambda a: reduce_ref(hinton_loop(a, t, T), reduction).sum(), s)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # the closed form itself: T (p_s - p_t) / N
    n = 3 if reduction == "mean" else 1
    ps, pt = sps.softmax(s / T, axis=-1), sps.softmax(t / T, axis=-1)
    np.testing.assert_allclose(g, T * (ps - pt) / n, rtol=1e-12, atol=1e-15)


def _torch_reference(s, t, T, reduction):
    """T^2 KL(softmax(t / T) || softmax(s / T)) per distribution, through F.kl_div."""
    per = (F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="none",
                    log_target=True) * T**2).sum(-1)
    return reduce_ref(per, reduction)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_teacher_grad_matches_torch_autograd_and_finite_differences(temperature, reduction):
    s, t = logits((3, 5), 23), logits((3, 5), 24)
    T = temperature
    value, (gs, gt) = crossent.value_and_grad(distillation_loss, argnums=(0, 1))(
        s, t, temperature=T, reduction=reduction)
    np.testing.assert_allclose(value, distillation_loss(s, t, temperature=T,
                                                        reduction=reduction), rtol=1e-15)
    np.testing.assert_array_equal(gs, GRAD(s, t, temperature=T, reduction=reduction))
    np.testing.assert_array_equal(gt, crossent.grad(distillation_loss, argnums=1)(
        s, t, temperature=T, reduction=reduction))
    st_, tt = (torch.from_numpy(a).requires_grad_(True) for a in (s, t))
    ref = _torch_reference(st_, tt, T, reduction)
    cot = torch.from_numpy(np.random.default_rng(25).normal(size=ref.shape))
    ref.backward(cot)
    c = cot.numpy()[..., None] if reduction == "none" else float(cot)
    np.testing.assert_allclose(gs * c, st_.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gt * c, tt.grad.numpy(), rtol=1e-10, atol=1e-13)
    fd = finite_difference(lambda b: reduce_ref(hinton_loop(s, b, T), reduction).sum(), t)
    np.testing.assert_allclose(gt, fd, rtol=1e-6, atol=1e-8)
    # the closed form itself: T p_t (log p_t - log p_s - KL) / N
    n = 3 if reduction == "mean" else 1
    ls, lt = sps.log_softmax(s / T, axis=-1), sps.log_softmax(t / T, axis=-1)
    kl = (np.exp(lt) * (lt - ls)).sum(-1, keepdims=True)
    np.testing.assert_allclose(gt, T * np.exp(lt) * (lt - ls - kl) / n, rtol=1e-12, atol=1e-15)
    # the same closed form is the backward of the loss on torch tensors
    st_, tt = (torch.from_numpy(a).requires_grad_(True) for a in (s, t))
    out = distillation_loss(st_, tt, temperature=T, reduction=reduction)
    assert "ClosedForm" in type(out.grad_fn).__name__
    out.backward(cot)
    np.testing.assert_allclose(st_.grad.numpy(), gs * c, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(tt.grad.numpy(), gt * c, rtol=1e-13, atol=1e-16)


def test_masked_teacher_classes_get_zero_teacher_gradient():
    s = np.array([[1.0, 2.0, -np.inf], [0.5, 0.0, 3.0]])
    t = np.array([[0.0, 1.0, -np.inf], [0.0, 1.0, -np.inf]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gt = crossent.grad(distillation_loss, argnums=1)(s, t, reduction="sum")
    assert np.isfinite(gt).all() and np.all(gt[:, 2] == 0)
    ref = crossent.grad(distillation_loss, argnums=1)(s[1:, :2], t[1:, :2], reduction="sum")
    np.testing.assert_allclose(gt[1:, :2], ref, rtol=1e-12, atol=1e-15)
    tt = torch.from_numpy(t).requires_grad_(True)
    distillation_loss(torch.from_numpy(s), tt, reduction="sum").backward()
    np.testing.assert_allclose(tt.grad.numpy(), gt, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [-1, 0])
def test_torch_gradcheck_and_gradgradcheck(reduction, axis):
    s, t = logits((3, 4), 26, 2.0), logits((3, 4), 27, 2.0)
    st_, tt = (torch.from_numpy(a).requires_grad_(True) for a in (s, t))
    out = distillation_loss(st_, tt, temperature=1.7, axis=axis, reduction=reduction)
    assert "ClosedForm" in type(out.grad_fn).__name__

    def f(a, b):
        return distillation_loss(a, b, temperature=1.7, axis=axis, reduction=reduction)

    assert torch.autograd.gradcheck(f, (st_, tt))
    assert torch.autograd.gradgradcheck(f, (st_, tt))
    # one argument at a time: the other one is a constant, not differentiated
    assert torch.autograd.gradgradcheck(lambda a: f(a, tt.detach()), (st_,))
    assert torch.autograd.gradgradcheck(lambda b: f(st_.detach(), b), (tt,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_jax_check_grads_to_second_order(reduction):

    s, t = jnp.asarray(logits((3, 4), 28, 2.0)), jnp.asarray(logits((3, 4), 29, 2.0))

    def f(a, b):
        return distillation_loss(a, b, temperature=1.7, reduction=reduction)

    check_grads_fwd_rev(f, (s, t))
    check_grads_fwd_rev(lambda a: f(a, t), (s,))
    check_grads_fwd_rev(lambda b: f(s, b), (t,))


def test_registry_and_grad_convenience():
    s, t = logits((2, 4), 14), logits((2, 4), 15)
    assert gradients.has_closed_form(distillation_loss)
    assert gradients.closed_form_args(distillation_loss) == ("student_logits", "teacher_logits")
    np.testing.assert_array_equal(gradients.grad(distillation_loss)(s, t, temperature=3.0),
                                  VAG(s, t, temperature=3.0)[1])


def test_hinton_high_temperature_limit_is_logit_matching():
    # Hinton et al. 2015, sec. 2.1: for zero-mean logits and T >> |logits|, the T^2-scaled
    # gradient tends to (z_i - v_i) / C and the loss to sum_i (z_i - v_i)^2 / (2C)
    rng = np.random.default_rng(16)
    s, t = rng.normal(size=(1, 6)), rng.normal(size=(1, 6))
    s, t = s - s.mean(), t - t.mean()
    c = s.shape[-1]
    loss, g = VAG(s, t, temperature=1e3, reduction="sum")
    np.testing.assert_allclose(g, (s - t) / c, rtol=1e-2, atol=1e-5)
    np.testing.assert_allclose(loss, ((s - t) ** 2).sum() / (2 * c), rtol=1e-2)
    # and T^2 keeps the gradient's size comparable across temperatures (it does not vanish)
    g_hot = GRAD(s, t, temperature=1e2, reduction="sum")
    assert np.abs(g_hot).max() == pytest.approx(np.abs(g).max(), rel=2e-2)


def test_jit_and_autodiff_through_the_loss():
    s, t = jnp.asarray(logits((3, 4), 17)), jnp.asarray(logits((3, 4), 18))
    f = jax.jit(lambda a, b: distillation_loss(a, b, temperature=2.0))
    np.testing.assert_allclose(f(s, t), hinton_loop(np.asarray(s), np.asarray(t), 2.0).mean(),
                               rtol=1e-12)
    np.testing.assert_allclose(jax.grad(f)(s, t),
                               GRAD(np.asarray(s), np.asarray(t),
                                                      temperature=2.0), rtol=1e-10)


# --- dtypes, validation, purity -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    s, t = logits((4, 8), 19), logits((4, 8), 20)
    sh, th = torch.from_numpy(s).to(dtype), torch.from_numpy(t).to(dtype)
    out = distillation_loss(sh, th, temperature=2.0, reduction="none")
    assert out.dtype == dtype
    ref = hinton_loop(sh.double().numpy(), th.double().numpy(), 2.0)
    np.testing.assert_allclose(to_numpy(out), ref, rtol=1e-2, atol=1e-2)
    _, g = VAG(sh, th, temperature=2.0)
    assert g.dtype == dtype


def test_inputs_are_not_mutated():
    s, t = logits((3, 4), 21), logits((3, 4), 22)
    s0, t0 = s.copy(), t.copy()
    VAG(s, t, temperature=3.0)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(t, t0)


GOOD = np.array([[0.1, 0.2, 0.3]])


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, "2", None, True, float("nan")])
def test_temperature_must_be_a_positive_number(temperature):
    with pytest.raises(ValueError, match=f"temperature must be a positive finite number, got "
                                         f"{temperature!r}"):
        distillation_loss(GOOD, GOOD, temperature=temperature)


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"teacher_logits must have the shape of student_logits "
                                         r"\(1, 3\), got \(1, 4\)"):
        distillation_loss(GOOD, np.zeros((1, 4)))
    with pytest.raises(TypeError, match="student_logits must be a floating-point array, got "
                                        "dtype int64"):
        distillation_loss(np.array([[1, 2, 3]]), GOOD)
    with pytest.raises(TypeError, match="teacher_logits must be a floating-point array"):
        distillation_loss(GOOD, np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match="reduction must be one of .* got 'batchmean'"):
        distillation_loss(GOOD, GOOD, reduction="batchmean")
    with pytest.raises(ValueError, match="axis=-3 is out of range for an array with 2 dim"):
        distillation_loss(GOOD, GOOD, axis=-3)
    with pytest.raises(ValueError, match="student_logits must have a class axis"):
        distillation_loss(np.array(1.0), np.array(1.0))
