"""The one reduction every loss uses: ``none`` | ``sum`` | ``mean`` with weights and masks."""

from __future__ import annotations

from typing import Any

from ._array import as_array, device_of

Array = Any


def safe_divide(xp: Any, num: Array, den: Array) -> Array:
    """num / den, and 0 where den == 0 (an all-ignored batch has loss 0 and gradient 0)."""
    nonzero = den != 0
    return xp.where(nonzero, num / xp.where(nonzero, den, xp.ones_like(den)), xp.zeros_like(num))


def reduce(xp: Any, loss: Array, reduction: str, denominator: Array | None = None) -> Array:
    """Reduce per-position losses.

    ``loss`` already carries any per-position weight and is 0 at masked positions. "mean"
    divides by ``denominator`` (the total weight of the positions that count) or, when it is
    None, by the number of positions; a zero denominator gives 0, not NaN.
    """
    if reduction == "none":
        return loss
    total = xp.sum(loss)
    if reduction == "sum":
        return total
    if denominator is None:
        n = 1
        for d in loss.shape:
            n *= d
        # an empty batch: the sum (0) itself, so the result stays attached to the graph and
        # backward gives a zero-size gradient
        return total if n == 0 else total / n
    return safe_divide(xp, total, denominator)


def masked(xp: Any, values: Array, mask: Array | None) -> Array:
    """``values`` where ``mask`` (a 0/1 array, or None for none) is 1, exactly 0 elsewhere,
    even where the values are infinite or NaN (a product would keep those)."""
    return values if mask is None else xp.where(mask > 0, values, xp.zeros_like(values))


def grad_scale(xp: Any, shape: tuple, reduction: str, denominator: Array | None
               ) -> Array | float:
    """d(reduced loss) / d(per-position loss): 1 for none/sum, 1/denominator for mean."""
    if reduction in ("none", "sum"):
        return 1.0
    if denominator is None:
        n = 1
        for d in shape:
            n *= d
        return 1.0 / n if n else 0.0
    return safe_divide(xp, xp.ones_like(denominator), denominator)


# float32's machine epsilon whatever the dtype: mmdetection's guard of ``avg_factor = 0``
AVG_FACTOR_EPS = 1.1920928955078125e-07


def avg_denominator(xp: Any, avg_factor: Any, like: Array) -> Array | None:
    """The mean's denominator ``avg_factor + eps`` as an array of ``like``'s dtype (None when
    no ``avg_factor`` is given): mmdet's ``loss.sum() / (avg_factor + eps)``."""
    if avg_factor is None:
        return None
    value = avg_factor if hasattr(avg_factor, "shape") else float(avg_factor)
    return xp.reshape(as_array(xp, value, like.dtype, device_of(like)), ()) + AVG_FACTOR_EPS
