"""Move NumPy test data to each array-API backend and back."""

from __future__ import annotations

import numpy as np

BACKENDS = ("numpy", "torch", "jax", "array_api_strict")


def to_backend(name: str, x):
    if x is None:
        return None
    x = np.asarray(x)
    if name == "numpy":
        return x
    if name == "torch":
        import torch

        return torch.from_numpy(x.copy())
    if name == "jax":
        import jax.numpy as jnp

        return jnp.asarray(x)
    if name == "array_api_strict":
        import array_api_strict as xps

        return xps.asarray(x)
    raise ValueError(name)


def jit_on(backend: str, f):
    """``f`` jitted on JAX (eager JAX compiles op by op, which is slow; jit also checks that
    ``f`` traces), as it is on the other backends."""
    if backend == "jax":
        import jax

        return jax.jit(f)
    return f


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        return (x.float() if str(x.dtype) == "torch.bfloat16" else x).numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        import array_api_strict as xps

        return np.asarray(xps.asarray(x)._array)


def finite_difference(f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Gradient of ``sum(f(x))`` w.r.t. a float64 array ``x``, accurate by construction.

    ``f`` may return a scalar or an array of per-element losses; for an array the two
    evaluations are subtracted element-wise before summing, so the terms that do not depend
    on ``x_i`` cancel exactly and the round-off scales with the terms that do, not with the
    whole sum (a sum of large losses otherwise swamps the difference). Per element, central
    differences at steps ``h_i`` and ``h_i / 2`` with ``h_i = h * max(1, |x_i|)`` are combined
    by Richardson extrapolation: truncation O(h^4), round-off about ``3 eps |f_i| / h_i``.
    """
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        step = h * max(1.0, abs(float(x[i])))

        def central(d, i=i):
            xp_, xm = x.copy(), x.copy()
            xp_[i] += d
            xm[i] -= d
            diff = np.asarray(f(xp_), dtype=np.float64) - np.asarray(f(xm), dtype=np.float64)
            return float(np.sum(diff)) / (xp_[i] - xm[i])

        g[i] = (4.0 * central(step / 2) - central(step)) / 3.0
    return g


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, restated (torchvision is not installable here)."""
    import torch
    import torch.nn.functional as F

    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha is not None and alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def half_inputs(backend: str, dtype: str, x32: np.ndarray):
    """``x32`` in half precision on ``backend``, and the same values upcast to a float32
    NumPy array (the reference a half-precision loss must match after fp32 accumulation)."""
    if backend == "torch":
        import torch

        xh = torch.from_numpy(x32).to(getattr(torch, dtype))
        return xh, xh.float().numpy()
    if backend == "jax":
        import jax.numpy as jnp

        xh = jnp.asarray(x32, dtype=getattr(jnp, dtype))
        return xh, np.asarray(xh.astype(jnp.float32))
    xh = x32.astype(np.float16)
    return xh, xh.astype(np.float32)


def check_summed_in_float32(backend: str, dtype: str, fn, x32: np.ndarray, target: np.ndarray):
    """``crossent.value_and_grad(fn)`` summed over ``x32`` in ``dtype`` and ``target`` on
    ``backend``: value and gradient are of ``dtype``, and the value is ``fn`` of the half
    values in float64 to 1e-2."""
    import crossent

    xh, x_up = half_inputs(backend, dtype, x32)
    v, g = crossent.value_and_grad(fn)(xh, to_backend(backend, target), reduction="sum")
    assert str(v.dtype).endswith(dtype) and str(g.dtype).endswith(dtype), fn.__name__
    ref = float(fn(x_up.astype(np.float64), target, reduction="sum"))
    # accumulated in fp32: only the final rounding to the half type is lost
    assert abs(float(to_numpy(v).astype(np.float64)) - ref) <= 1e-2 * abs(ref), fn.__name__


def partial_in(fn, args, nums, kw, wrap):
    """``fn`` as a function of the differentiated arguments ``nums`` only (``wrap`` makes the
    others backend arrays)."""
    fixed = [wrap(a) for a in args]

    def f(*vs):
        full = list(fixed)
        for i, v in zip(nums, vs, strict=True):
            full[i] = v
        return fn(*full, **kw)

    return f, tuple(fixed[i] for i in nums)


# the backward nodes of crossent's closed forms: the generic autograd Function, and the
# kernels' nodes written in C++ (crossent.torch.fast_paths)
FUSED_NODES = ("SigmoidCrossEntropyBackward", "SigmoidFocalLossBackward",
               "DistillationLossBackward", "MultiMarginLossBackward")
CLOSED_FORM_NODES = ("_ClosedFormBackward", *FUSED_NODES)


def node_name(out) -> str:
    """The name of ``out``'s backward node (a Python Function's class, a C++ node's name())."""
    fn = out.grad_fn
    return type(fn).__name__ if type(fn).__name__ != "CppFunction" else fn.name()


def is_closed_form_node(out) -> bool:
    return out.grad_fn is not None and node_name(out) in CLOSED_FORM_NODES


def check_torch_backward_is_the_closed_form(fn, args, nums, kw, reduction):
    """The torch backward of ``fn`` is its closed-form Function, equals ``crossent.grad`` for
    every argument in ``nums``, and passes gradcheck and gradgradcheck (float64)."""
    import torch

    import crossent

    f, ins = partial_in(fn, args, nums, dict(kw, reduction=reduction), torch.tensor)
    ins = tuple(a.requires_grad_() for a in ins)
    out = f(*ins)
    # the generic closed-form Function, or a registered kernel's (same contract)
    assert is_closed_form_node(out), fn.__name__
    got = torch.autograd.grad(out.sum(), ins)
    want = crossent.grad(fn, argnums=nums)(*args, **kw, reduction=reduction)
    for g, ref in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), ref, rtol=1e-13, atol=1e-15)
    assert torch.autograd.gradcheck(f, ins)
    assert torch.autograd.gradgradcheck(f, ins)  # backward with create_graph is exact too


def check_grads_fwd_rev(f, ins, **kw):
    """``jax.test_util.check_grads`` in forward mode to order 1 and reverse mode to order 2.

    Reverse over reverse differentiates a custom_jvp's rule through its transpose, so the
    second order is checked there; second-order forward mode would add compile time and no
    new code path."""
    from jax.test_util import check_grads

    check_grads(f, ins, order=1, modes=("fwd",), **kw)
    check_grads(f, ins, order=2, modes=("rev",), **kw)


def check_jax_closed_form_derivatives(fn, args, nums, kw):
    """``jax.test_util.check_grads`` of the per-item losses (the custom_jvp's tangent map is
    the transposed pullback), jitted: forward mode to order 1, reverse mode to order 2."""
    import jax
    import jax.numpy as jnp

    f, ins = partial_in(fn, args, nums, dict(kw, reduction="none"), jnp.asarray)
    check_grads_fwd_rev(jax.jit(f), ins)


def check_torch_second_order(fn, arrays, kw, diff, reduction, closed_form=True):
    """gradcheck and gradgradcheck (float64) of ``fn`` w.r.t. the arguments ``diff`` jointly,
    then gradgradcheck of each alone with the others constant; ``closed_form``: the backward
    must be crossent's closed-form Function."""
    import torch

    tensors = [torch.from_numpy(a.copy()).requires_grad_(i in diff)
               for i, a in enumerate(arrays)]
    tkw = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    out = fn(*tensors, reduction=reduction, **tkw)
    if closed_form:
        assert is_closed_form_node(out), node_name(out)

    def f(*d):
        full = list(tensors)
        for i, v in zip(diff, d, strict=True):
            full[i] = v
        return fn(*full, reduction=reduction, **tkw)

    inputs = tuple(tensors[i] for i in diff)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)
    for i in diff:  # one argument at a time, the others constant
        rest = [v.detach() for v in inputs]

        def g(v, i=i, rest=rest):
            return f(*[v if j == i else r for j, r in zip(diff, rest, strict=True)])

        assert torch.autograd.gradgradcheck(g, (tensors[i],))


def second_order_tests(make_cases, fused=()):
    """A module's two second-order tests over the ``(fn, arrays, kw, diff)`` cases that
    ``make_cases()`` returns: ``check_torch_second_order`` under every reduction (the backward
    must be crossent's closed-form Function but for the losses in ``fused``, which have a
    registered fused path), and ``check_jax_second_order``. The module binds them to names
    pytest collects."""
    import pytest

    count = len(make_cases())

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("index", range(count))
    def test_torch_gradcheck_and_gradgradcheck(index, reduction):
        fn, arrays, kw, diff = make_cases()[index]
        check_torch_second_order(fn, arrays, kw, diff, reduction, closed_form=fn not in fused)

    # Each case with one reduction, in turn (all three are covered; the reduction is a linear
    # map after the per-item custom_jvp): a JAX second-order check compiles for ~10 s on a
    # 2-core machine, and torch's gradgradcheck above runs every combination.
    @pytest.mark.parametrize("index,reduction",
                             [(i, ("none", "mean", "sum")[i % 3]) for i in range(count)])
    def test_jax_check_grads_to_second_order(index, reduction):
        check_jax_second_order(*make_cases()[index], reduction)

    return test_torch_gradcheck_and_gradgradcheck, test_jax_check_grads_to_second_order


def check_jax_second_order(fn, arrays, kw, diff, reduction):
    """``check_grads`` w.r.t. the arguments ``diff`` under jit (one compiled program per
    transformation: a fraction of the eager time): forward mode to order 1, reverse to 2."""
    import jax
    import jax.numpy as jnp

    jarrays = [jnp.asarray(a) for a in arrays]
    jkw = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}

    def f(*d):
        full = list(jarrays)
        for i, v in zip(diff, d, strict=True):
            full[i] = v
        return fn(*full, reduction=reduction, **jkw)

    check_grads_fwd_rev(jax.jit(f), tuple(jarrays[i] for i in diff))


# --- checks shared by the modules that list their losses as (fn, args, kw) cases ------------


def check_value_and_grad_on_backend(backend: str, cases):
    """``crossent.value_and_grad`` of each ``(fn, args, kw)`` of ``cases`` on ``backend``
    (jitted on JAX) equals its value and gradient on the NumPy arrays."""
    import crossent

    for fn, args, kw in cases:
        ref_v, ref_g = crossent.value_and_grad(fn)(*args, **kw)
        vag = jit_on(backend, lambda *a, fn=fn, kw=kw: crossent.value_and_grad(fn)(*a, **kw))
        v, g = vag(*[to_backend(backend, a) for a in args])
        np.testing.assert_allclose(to_numpy(v), ref_v, rtol=1e-12, err_msg=fn.__name__)
        np.testing.assert_allclose(to_numpy(g), ref_g, rtol=1e-10, atol=1e-14,
                                   err_msg=fn.__name__)


def check_low_precision(cases, dtype, argnums=None):
    """Each ``(fn, args, kw)`` of ``cases`` on torch tensors, the arguments ``argnums`` (by
    default every float64 one) in ``dtype``: value and gradient come back in ``dtype``, and the
    value is the float64 one to a few per cent."""
    import pytest
    import torch

    import crossent

    for fn, args, kw in cases:
        ref = fn(*args, **kw)
        lowered = [i in argnums if argnums is not None else a.dtype == np.float64
                   for i, a in enumerate(args)]
        targs = [torch.from_numpy(a).to(dtype) if low else torch.from_numpy(a)
                 for a, low in zip(args, lowered, strict=True)]
        out, g = crossent.value_and_grad(fn)(*targs, **kw)
        assert out.dtype == dtype and g.dtype == dtype, fn.__name__
        assert float(out) == pytest.approx(float(ref), rel=3e-2, abs=1e-2), fn.__name__


def check_inputs_not_mutated(cases):
    """``crossent.value_and_grad`` of each ``(fn, args, kw)`` of ``cases`` leaves its NumPy
    arguments as they were."""
    import crossent

    for fn, args, kw in cases:
        copies = [a.copy() for a in args]
        crossent.value_and_grad(fn)(*args, **kw)
        for a, c in zip(args, copies, strict=True):
            np.testing.assert_array_equal(a, c, err_msg=fn.__name__)


def closed_form_tests(cases):
    """A module's two closed-form tests over its ``(id, fn, args, nums, kw)`` cases:
    ``check_torch_backward_is_the_closed_form`` under every reduction, and
    ``check_jax_closed_form_derivatives``. The module binds them to names pytest collects."""
    import pytest

    each_case = pytest.mark.parametrize("fn,args,nums,kw", [c[1:] for c in cases],
                                        ids=[c[0] for c in cases])

    @pytest.mark.parametrize("reduction", ("mean", "sum", "none"))
    @each_case
    def test_torch_backward_is_the_closed_form(fn, args, nums, kw, reduction):
        check_torch_backward_is_the_closed_form(fn, args, nums, kw, reduction)

    @each_case
    def test_jax_derivatives_of_the_closed_form(fn, args, nums, kw):
        check_jax_closed_form_derivatives(fn, args, nums, kw)

    return test_torch_backward_is_the_closed_form, test_jax_derivatives_of_the_closed_form
