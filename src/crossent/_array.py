"""Array-API plumbing shared by every loss: namespaces, dtypes and stable primitives.

Everything here takes the namespace ``xp`` explicitly so that a loss computes its namespace
once and passes it down; nothing here converts to NumPy, so the same code runs (and
differentiates) on NumPy, PyTorch, JAX and array-api-strict arrays.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

Array = Any  # any array-API array; the project does not pin one library's type

_HALF = ("float16", "bfloat16")


def namespace(*arrays: Any) -> Any:
    """The array-API namespace of the given arrays (``None`` entries and Python scalars ignored)."""
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    return array_api_compat.array_namespace(*arrs)


def is_torch(x: Any) -> bool:
    return array_api_compat.is_torch_array(x)


def dtype_name(dtype: Any) -> str:
    """'float32', 'bfloat16', 'int64'... whatever library the dtype comes from."""
    return str(dtype).rsplit(".", 1)[-1].replace("dtype(", "").strip("')\"")


def is_floating(xp: Any, x: Array) -> bool:
    name = dtype_name(x.dtype)
    if name in _HALF:
        return True
    try:
        return bool(xp.isdtype(x.dtype, "real floating"))
    except (AttributeError, TypeError, ValueError):
        return name.startswith("float")


def is_integer(xp: Any, x: Array) -> bool:
    try:
        return bool(xp.isdtype(x.dtype, "integral"))
    except (AttributeError, TypeError, ValueError):
        return dtype_name(x.dtype).startswith(("int", "uint"))


def is_half(x: Array) -> bool:
    return dtype_name(x.dtype) in _HALF


def compute_dtype(xp: Any, x: Array) -> Any:
    """The dtype a loss accumulates in: float32 for half-precision inputs, else the input's."""
    return xp.float32 if is_half(x) else x.dtype


def upcast(xp: Any, x: Array) -> Array:
    """``x`` in its compute dtype (fp16/bf16 -> fp32); no copy when already there."""
    return xp.astype(x, xp.float32) if is_half(x) else x


def cast_like(xp: Any, value: Array, like: Array) -> Array:
    """Return ``value`` in ``like``'s dtype (undo :func:`upcast` on the way out)."""
    return xp.astype(value, like.dtype) if value.dtype != like.dtype else value


def as_float(xp: Any, x: Array, dtype: Any) -> Array:
    """Targets, weights and masks in the computation's float dtype."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def as_array(xp: Any, value: Any, dtype: Any, device: Any = None) -> Array:
    """A Python scalar/sequence or foreign array as an array of ``xp``."""
    if value is None:
        return None
    try:
        return xp.asarray(value, dtype=dtype, device=device)
    except TypeError:  # some namespaces take no device keyword
        return xp.asarray(value, dtype=dtype)


def device_of(x: Array) -> Any:
    return array_api_compat.device(x)


def concrete(x: Array) -> bool:
    """Whether ``x`` holds values we may inspect (not a JAX tracer or a torch fake tensor)."""
    name = type(x).__name__
    if "Tracer" in name or "FakeTensor" in name or "FunctionalTensor" in name:
        return False
    return True


def move_axis_last(xp: Any, x: Array, axis: int) -> Array:
    """Move ``axis`` to the end so every loss can work on the last axis."""
    axis = axis % x.ndim
    if axis == x.ndim - 1:
        return x
    order = [i for i in range(x.ndim) if i != axis] + [axis]
    return xp.permute_dims(x, tuple(order))


def move_axis_back(xp: Any, x: Array, axis: int) -> Array:
    """Inverse of :func:`move_axis_last`: put the last axis back at ``axis``."""
    nd = x.ndim
    axis = axis % nd
    if axis == nd - 1:
        return x
    order = list(range(nd - 1))
    order.insert(axis, nd - 1)
    return xp.permute_dims(x, tuple(order))


# --- stable primitives ---------------------------------------------------------------------


def softplus(xp: Any, x: Array) -> Array:
    """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))."""
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def xlogy(xp: Any, x: Array, y: Array) -> Array:
    """x * log(y) with 0 * log(0) = 0, -inf for x > 0 = y, and no NaN gradient where x == 0.

    log is only ever taken of positive values, so NumPy raises no divide-by-zero warning.
    """
    pos = y > 0
    log_y = xp.where(pos, xp.log(xp.where(pos, y, xp.ones_like(y))), xp.full_like(y, -math.inf))
    zero = x == 0
    # the masked branch must not compute 0 * -inf either: NaN there poisons autodiff
    x_safe = xp.where(zero, xp.ones_like(x), x)
    return xp.where(zero, xp.zeros_like(y), x_safe * log_y)


def take_class(xp: Any, x: Array, labels: Array) -> Array:
    """``x[..., labels]`` along the last axis, one value per position.

    Labels outside ``[0, C)`` (ignored positions) are clipped to a valid index; callers mask
    those positions out.
    """
    idx = xp.clip(labels, 0, x.shape[-1] - 1)
    if hasattr(xp, "take_along_axis"):
        return xp.take_along_axis(x, idx[..., None], axis=-1)[..., 0]
    classes = xp.arange(x.shape[-1], device=device_of(x))
    return xp.sum(xp.where(idx[..., None] == classes, x, xp.zeros_like(x)), axis=-1)


def label_mask(xp: Any, labels: Array, ignore_index: int | None, dtype: Any
               ) -> tuple[Array, Array]:
    """(1.0 where a label counts else 0.0, labels with ignored ones replaced by class 0)."""
    if ignore_index is None:
        return xp.ones(labels.shape, dtype=dtype, device=device_of(labels)), labels
    valid = labels != ignore_index
    return as_float(xp, valid, dtype), xp.where(valid, labels, xp.zeros_like(labels))


def one_hot_mask(xp: Any, labels: Array, num_classes: int, dtype: Any) -> Array:
    classes = xp.arange(num_classes, device=device_of(labels))
    return xp.astype(labels[..., None] == classes, dtype)
