"""Argument validation: every message names the argument and the offending value."""

from __future__ import annotations

from typing import Any

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


def _real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (NumPy and 0-d array scalars included)."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out


def non_negative(value: Any, name: str) -> float:
    v = _real(value)
    if v is None or not v >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return v


def positive(value: Any, name: str) -> float:
    v = _real(value)
    if v is None or not v > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def unit_interval(value: Any, name: str) -> float:
    v = _real(value)
    if v is None or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def real(value: Any, name: str) -> float:
    """Any real number (NaN excluded), as a float."""
    v = _real(value)
    if v is None or v != v:
        raise ValueError(f"{name} must be a number, got {value!r}")
    return v


def axis(value: Any, ndim: int, name: str = "axis") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -ndim <= value < ndim:
        raise ValueError(f"{name}={value!r} is out of range for an array with {ndim} dimensions")
    return value % ndim


def class_axis(x: Any, axis_: int, name: str = "logits") -> int:
    """The class axis of ``x`` as a non-negative index; a 0-d ``x`` has none."""
    if x.ndim == 0:
        raise ValueError(f"{name} must have a class axis, got a 0-d array")
    return axis(axis_, x.ndim)


def class_labels(xp: Any, labels: Any, logits: Any, ax: int, ignore_index: int | None,
                 name: str = "targets", logits_name: str = "logits") -> Any:
    """Integer class indices with ``logits``' shape minus the class axis, each in [0, C)."""
    if not A.is_integer(xp, labels):
        raise TypeError(f"{name} must be an integer array of class indices, got dtype "
                        f"{A.dtype_name(labels.dtype)}")
    expected = tuple(s for i, s in enumerate(logits.shape) if i != ax)
    if tuple(labels.shape) != expected:
        raise ValueError(f"integer {name} must have the shape of {logits_name} without the "
                         f"class axis {expected}, got {tuple(labels.shape)}")
    labels_in_range(xp, labels, logits.shape[ax], ignore_index, name)
    return labels


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


def in_unit_interval(xp: Any, x: Any, name: str) -> None:
    """Probabilities must lie in [0, 1]; skipped for traced arrays."""
    if not A.concrete(x):
        return
    bad = (x < 0) | (x > 1) | (x != x)
    if any_true(xp, bad):
        lo, hi = float(xp.min(x)), float(xp.max(x))
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
