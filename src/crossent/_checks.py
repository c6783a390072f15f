"""Argument validation: every message names the argument and the offending value."""

from __future__ import annotations

import math
from typing import Any, Literal, overload

from . import _array as A

REDUCTIONS = ("none", "mean", "sum")


def reduction(value: Any) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {value!r}")
    return value


def floating(xp: Any, x: Any, name: str) -> None:
    if not A.is_floating(xp, x):
        raise TypeError(
            f"{name} must be a floating-point array, got dtype {A.dtype_name(x.dtype)}; "
            f"cast it with .astype(float32) first"
        )


def loss_inputs(reduction_: Any, **arrays: Any) -> tuple[Any, ...]:
    """``(xp, *arrays)`` as :func:`crossent._array.common` gives them, the first array checked
    floating (it is named after its keyword) and the reduction checked."""
    xp, *converted = A.common(**arrays)
    floating(xp, converted[0], next(iter(arrays)))
    reduction(reduction_)
    return (xp, *converted)


#: The labels' dtype range: integer options (``ignore_index``) must fit in it.
INT64_RANGE = (-(2 ** 63), 2 ** 63 - 1)


def plain_softmax_call(logits: Any, targets: Any, axis: Any, weight: Any, sample_weight: Any,
                       ignore_index: Any, label_smoothing: Any, where: Any, reduction: Any
                       ) -> bool:
    """Whether a softmax cross-entropy call is the one its backend kernels take: ``(N, C)``
    logits with the classes last, ``(N,)`` targets, ``N, C > 0``, and no option beyond an
    int64 ``ignore_index`` and a known reduction (the dtypes are each kernel's own check)."""
    return (logits.ndim == 2 and targets.ndim == 1
            and targets.shape[0] == logits.shape[0] > 0 and logits.shape[1] > 0
            and type(axis) is int and axis in (-1, 1) and weight is None
            and sample_weight is None and where is None
            and type(label_smoothing) in (int, float) and label_smoothing == 0
            and type(ignore_index) is int and INT64_RANGE[0] <= ignore_index <= INT64_RANGE[1]
            and type(reduction) is str and reduction in ("mean", "sum", "none"))


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _scalar(value: Any, name: str) -> float | Any | None:
    """``value`` as a float when it is a concrete real number (Python, NumPy scalar, 0-d
    NumPy/torch/JAX array); the value itself when it is a traced 0-d array (``jax.jit``
    tracer, torch fake tensor) whose value cannot be known; None when it is no number."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        return None
    if _is_array(value):
        if tuple(value.shape) != ():
            raise ValueError(f"{name} must be a scalar, got an array of shape "
                             f"{tuple(value.shape)}")
        if "bool" in A.dtype_name(value.dtype) or "complex" in A.dtype_name(value.dtype):
            return None
        if not A.concrete(value):
            return value
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, finite: bool = True,
           what: str | None = None) -> float | Any:
    """The one check of a numeric option: a real number in ``[low, high]`` (ends open when
    asked), finite unless ``finite=False``, NaN never.

    Returns a float for any concrete value. A traced scalar (an option passed through
    ``jax.jit``) cannot be inspected and is returned as it is, for the loss to compute with;
    callers must not branch on it in Python.
    """
    v = _scalar(value, name)
    if v is not None and not isinstance(v, float):
        return v
    ok = v is not None and v == v and (not finite or abs(v) != float("inf"))
    if ok and v is not None and low is not None:
        ok = v > low if low_open else v >= low
    if ok and v is not None and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        if what is None:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            what = ("a finite number" if finite else "a number") + (
                f" {' and '.join(b for b in (lo, hi) if b)}" if lo or hi else "")
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def non_negative(value: Any, name: str) -> float | Any:
    return number(value, name, low=0.0, what="a non-negative finite number")


def positive(value: Any, name: str) -> float | Any:
    return number(value, name, low=0.0, low_open=True, what="a positive finite number")


def unit_interval(value: Any, name: str) -> float | Any:
    return number(value, name, low=0.0, high=1.0, what="in [0, 1]")


def real(value: Any, name: str) -> float | Any:
    """Any finite real number, as a float (traced scalars pass through)."""
    return number(value, name)


def is_traced(value: Any) -> bool:
    """Whether a checked option is a traced array rather than a Python float."""
    return not isinstance(value, (int, float))


@overload
def index(value: Any, name: str, *, allow_none: Literal[False] = ...) -> int: ...
@overload
def index(value: Any, name: str, *, allow_none: bool) -> int | None: ...
def index(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """An integer option such as ``ignore_index``: a Python/NumPy integer or a 0-d integer
    array, within int64 (the labels' dtype) so it can be compared with labels anywhere."""
    if value is None and allow_none:
        return None
    v = None
    if not isinstance(value, (bool, float)) and not (
            _is_array(value) and ("float" in A.dtype_name(value.dtype)
                                  or "bool" in A.dtype_name(value.dtype))):
        try:
            v = int(value.__index__()) if hasattr(value, "__index__") else None
        except (TypeError, ValueError):
            v = None
    if v is None:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not INT64_RANGE[0] <= v <= INT64_RANGE[1]:
        raise ValueError(f"{name} must fit in int64 [-2**63, 2**63 - 1], got {value!r}")
    return v


@overload
def positive_int(value: Any, name: str, *, allow_none: Literal[False] = ...) -> int: ...
@overload
def positive_int(value: Any, name: str, *, allow_none: bool) -> int | None: ...
def positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """A count such as ``chunk_size``: an integer >= 1 (None allowed when asked)."""
    if value is None and allow_none:
        return None
    try:
        v = index(value, name)
    except ValueError:
        v = None
    if v is None or v < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return v


def non_negative_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """An integer >= 0 such as a slice bound (None allowed when asked); NumPy integers and
    0-d integer arrays are accepted, as by :func:`index`."""
    v = None if value is None and allow_none else _index_or(value, name, -1)
    if v is not None and v < 0:
        raise ValueError(f"{name} must be a non-negative int{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return v


def _index_or(value: Any, name: str, default: int) -> int:
    """``index(value)``, or ``default`` where it is not an integer within int64."""
    try:
        v = index(value, name)
    except ValueError:
        return default
    return default if v is None else v


def axis(value: Any, ndim: int, name: str = "axis") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -ndim <= value < ndim:
        raise ValueError(f"{name}={value!r} is out of range for an array with {ndim} dimensions")
    return value % ndim


def class_axis(x: Any, axis_: int, name: str = "logits") -> int:
    """The class axis of ``x`` as a non-negative index; a 0-d ``x`` has none."""
    if x.ndim == 0:
        raise ValueError(f"{name} must have a class axis, got a 0-d array")
    ax = axis(axis_, x.ndim)
    if x.shape[ax] == 0:
        raise ValueError(f"{name} must have at least one class along axis {axis_}, got shape "
                         f"{tuple(x.shape)}")
    return ax


def class_labels(xp: Any, labels: Any, logits: Any, ax: int, ignore_index: int | None,
                 name: str = "targets", logits_name: str = "logits") -> Any:
    """Integer class indices with ``logits``' shape minus the class axis, each in [0, C)."""
    if not A.is_integer(xp, labels):
        raise TypeError(f"{name} must be an integer array of class indices, got dtype "
                        f"{A.dtype_name(labels.dtype)}")
    index(ignore_index, "ignore_index", allow_none=True)
    expected = tuple(s for i, s in enumerate(logits.shape) if i != ax)
    if tuple(labels.shape) != expected:
        raise ValueError(f"integer {name} must have the shape of {logits_name} without the "
                         f"class axis {expected}, got {tuple(labels.shape)}")
    labels_in_range(xp, labels, logits.shape[ax], ignore_index, name)
    return labels


def shape(x: Any, want: tuple[int, ...], name: str, dims: str | None = None) -> None:
    """Refuse ``x`` unless its shape is ``want``; ``dims`` names the axes in the message
    (``"(N,)"`` reads "labels must have shape (N,) = (8,)")."""
    if tuple(x.shape) != tuple(want):
        expected = f"{dims} = {tuple(want)}" if dims else str(tuple(want))
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")


def matrix(x: Any, name: str, dims: str = "(N, D)") -> None:
    """Refuse ``x`` unless it has two axes (``dims`` names them in the message)."""
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape {dims}, got {tuple(x.shape)}")


def same_shape(a: Any, b: Any, name_a: str, name_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name_b} must have the shape of {name_a} {tuple(a.shape)}, got {tuple(b.shape)}"
        )


def any_true(xp: Any, mask: Any) -> bool:
    """Whether ``mask`` has a true element, when that can be known without tracing.

    Inside a JAX trace even arrays closed over as constants give traced results, so the
    result is tested, not the input; unknowable means no error is raised here.
    """
    if not mask.size:
        return False
    flag = xp.any(mask)
    return A.concrete(flag) and bool(flag)


def labels_in_range(xp: Any, labels: Any, num_classes: int, ignore_index: int | None,
                    name: str = "targets") -> None:
    """Every label in [0, C) or equal to ignore_index; skipped for traced (abstract) arrays."""
    if not A.concrete(labels):
        return
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad = bad & (labels != ignore_index)
    if any_true(xp, bad):
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes})"
            + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
            + f", got values in [{lo}, {hi}]"
        )


def mean_denominator(xp: Any, den: Any, count: Any, name: str = "weight") -> Any:
    """The denominator of a class-weighted mean, ``sum_i w[y_i]`` over the ``count`` counted
    positions, checked: a zero sum over positions that count leaves the mean undefined.

    No counted position (every target ignored) keeps ``den = 0``, which the reduction turns
    into a loss of 0. Otherwise a zero sum raises ValueError naming ``name``; under a trace,
    where raising is impossible, the denominator becomes NaN so the loss is NaN.
    """
    bad = (den == 0) & (count > 0)
    if A.concrete(bad):
        if bool(bad):
            what = "class weights" if name == "weight" else "weights"
            raise ValueError(
                f"{name}: the {what} of the non-ignored targets sum to 0, so the "
                f"weighted mean is undefined; use reduction='sum' or other weights")
        return den
    return xp.where(bad, xp.full_like(den, math.nan), den)


def sample_weight(xp: Any, value: Any, shape: tuple, dtype: Any, device: Any,
                  name: str = "sample_weight") -> Any:
    """Per-position weights (one per target, e.g. per token) broadcast to ``shape``, the
    shape of the loss before reduction, as a floating array of ``dtype`` on ``device``; None
    stays None. They must be real numbers; a shape that does not broadcast is a ValueError
    naming both shapes."""
    if value is None:
        return None
    s = A.as_array(xp, value, dtype, device)
    try:
        return xp.broadcast_to(s, tuple(shape))
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{name} of shape {tuple(s.shape)} does not broadcast to the shape "
                         f"of the per-position losses {tuple(shape)}") from e


def where_mask(xp: Any, where: Any, shape: tuple, axis: int | None, dtype: Any, device: Any,
               name: str = "where") -> Any:
    """Optax's ``where=``: the elements that take part, as a 0/1 array of ``dtype`` broadcast
    to ``shape`` (None stays None). A mask with one dimension fewer than ``shape`` is per
    position and is expanded along the class ``axis`` first (Optax's rule); booleans and 0/1
    numbers are accepted; any other value, or a shape that does not broadcast, is a
    ValueError naming ``where``."""
    if where is None:
        return None
    m = where
    if not (hasattr(m, "shape") and A.namespace(m) is xp):
        m = xp.asarray(m, device=device) if device is not None else xp.asarray(m)
    if axis is not None and m.ndim == len(shape) - 1:
        m = xp.expand_dims(m, axis=axis)
    if "bool" not in A.dtype_name(m.dtype):
        if A.concrete(m) and any_true(xp, (m != 0) & (m != 1)):
            raise ValueError(f"{name} must be a boolean mask (or 0/1 numbers), got values "
                             f"in [{float(xp.min(m))}, {float(xp.max(m))}]")
        m = m != 0
    try:
        return xp.astype(xp.broadcast_to(m, tuple(shape)), dtype)
    except (ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"{name} of shape {tuple(m.shape)} does not broadcast to "
                         f"{tuple(shape)}") from e


def avg_factor(value: Any, reduction_: str) -> float | Any | None:
    """The optional replacement of the mean's denominator (mmdetection's ``avg_factor``, e.g.
    RetinaNet's number of positive anchors): None, or a non-negative finite number (a traced
    scalar passes through). It only means something for ``reduction="mean"``: with "sum"
    it is a ValueError (as in mmdet), with "none" it is ignored."""
    if value is None:
        return None
    v = non_negative(value, "avg_factor")
    if reduction_ == "sum":
        raise ValueError("avg_factor cannot be used with reduction='sum' (it replaces the "
                         "mean's denominator); use reduction='mean'")
    return v


def in_unit_interval(xp: Any, x: Any, name: str) -> None:
    """Probabilities must lie in [0, 1]; skipped for traced arrays."""
    if not A.concrete(x):
        return
    if math.prod(x.shape) == 0:
        return
    # two reductions instead of four element-wise passes; NaN makes both comparisons fail
    lo, hi = xp.min(x), xp.max(x)
    if not A.concrete(lo):
        return
    if not (bool(lo >= 0) and bool(hi <= 1)):
        lo, hi = float(lo), float(hi)
        raise ValueError(f"{name} must hold probabilities in [0, 1], got values in [{lo}, {hi}]")


def class_weight(xp: Any, weight: Any, num_classes: int, dtype: Any, device: Any,
                 name: str = "weight") -> Any:
    if weight is None:
        return None
    w = A.as_array(xp, weight, dtype, device)
    if w.ndim != 1 or w.shape[0] != num_classes:
        raise ValueError(
            f"{name} must be a 1-D array of one weight per class ({num_classes}), "
            f"got shape {tuple(w.shape)}"
        )
    return w
