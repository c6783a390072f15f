"""Losses over several class axes at once (Optax's tuple ``axis=``).

A loss written for one class axis serves a tuple of axes by moving them to the end, in order,
and flattening them into one: the value is unchanged (its shape is that of the remaining
axes), and each gradient is unflattened and moved back to its argument's layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from . import _array as A
from . import _checks

Array = Any


def class_axes(axis: Sequence[int], ndim: int) -> tuple[int, ...]:
    """A tuple ``axis`` as distinct non-negative axes; a ValueError names a bad one."""
    axes = tuple(_checks.axis(a, ndim) for a in axis)
    if not axes or len(set(axes)) != len(axes):
        raise ValueError(f"axis={tuple(axis)!r} must name distinct axes, at least one")
    return axes


def over_axes(defn: Callable[..., Any], need: tuple[str, ...], arrays: dict[str, Array],
              spread: Sequence[str], axis: Sequence[int], options: dict[str, Any]
              ) -> tuple[Array, Any]:
    """Run ``defn(need, *arrays, axis=-1, **options)`` with the class axes ``axis`` of the
    arrays named in ``spread`` flattened into one trailing axis (a ``where`` option of their
    shape too); returns its value and a pullback giving gradients in the original layouts."""
    names = list(arrays)
    xp, *converted = A.common(**arrays)
    arrays = dict(zip(names, converted, strict=True))
    first = arrays[spread[0]]
    ndim = first.ndim
    axes = class_axes(axis, ndim)
    perm = tuple(i for i in range(ndim) if i not in axes) + axes
    inverse = tuple(perm.index(i) for i in range(ndim))
    nbatch = ndim - len(axes)

    def flat(x: Array) -> Array:
        moved = xp.permute_dims(x, perm)
        return xp.reshape(moved, (*moved.shape[:nbatch], math.prod(moved.shape[nbatch:])))

    moved_shape = {n: tuple(arrays[n].shape[i] for i in perm) for n in spread
                   if hasattr(arrays[n], "ndim") and arrays[n].ndim == ndim}
    flat_arrays = {n: flat(a) if n in moved_shape else a for n, a in arrays.items()}
    where = options.get("where")
    if where is not None and getattr(where, "ndim", None) == ndim:
        options = {**options, "where": flat(A.common(like=first, where=where)[2])}
    value, pullback = defn(need, *(flat_arrays[n] for n in names), axis=-1, **options)
    if pullback is None:
        return value, None

    def unflatten(name: str, g: Array) -> Array:
        if name not in moved_shape:
            return g
        return xp.permute_dims(xp.reshape(g, moved_shape[name]), inverse)

    def wrapped(cot: Array | None) -> dict[str, Array]:
        return {n: unflatten(n, g) for n, g in pullback(cot).items()}

    return value, wrapped
