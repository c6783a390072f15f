"""Weights and reduction scales of the fused cross-entropy rows, shared by
:mod:`.cross_entropy` and :mod:`.linear`: the class weight and the per-row sample weights as
tensors, and the factors by which "mean" divides the main and the z-loss terms.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _checks
from ._common import Opts, safe_inv
from ._rows import acc_dtype


def class_weight(weight: Any, num_classes: int, like: torch.Tensor) -> torch.Tensor | None:
    """Class weights as a (C,) tensor of the accumulation dtype on ``like``'s device; integer
    tensors, lists and NumPy arrays are accepted, as on the NumPy and JAX paths."""
    if weight is None:
        return None
    if isinstance(weight, torch.Tensor):
        w = weight.detach()
    else:
        try:
            w = torch.as_tensor(weight)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"weight must be a tensor, sequence or array of one number per "
                            f"class, got {type(weight).__name__}") from None
    if w.dtype == torch.bool or w.is_complex():
        raise TypeError(f"weight must hold real numbers, got dtype {w.dtype}")
    if w.dim() != 1 or w.shape[0] != num_classes:
        raise ValueError(f"weight must have shape ({num_classes},), got {tuple(w.shape)}")
    return w.to(device=like.device, dtype=acc_dtype(like.dtype))


def mean_scales(target: torch.Tensor, weight: torch.Tensor | None,
                 sw: torch.Tensor | None, ignore_index: int, acc: torch.dtype,
                 check: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """1 / denominator of the main term and of the z-loss term for reduction="mean".

    Class targets: the main term divides by sum_i s_i w[y_i] over non-ignored rows (PyTorch's
    sum_i w[y_i] without sample weights s), the z-loss by sum_i s_i over them (their number
    without sample weights). Probability targets: both divide by sum_i s_i (the number of
    rows). No counted row (every row ignored or of sample weight 0, or none at all) gives a
    zero scale: loss 0, gradient 0. Weights summing to 0 over counted rows leave the mean
    undefined: with ``check`` (CPU, where the host read is free) that raises ValueError,
    otherwise the scale is NaN, with no host sync.
    """
    if target.is_floating_point():
        if sw is None:
            n = torch.tensor(float(target.shape[0]), dtype=acc, device=target.device)
            return safe_inv(n), safe_inv(n)
        den = checked_denominator(sw.sum(), (sw != 0).sum(), check, "sample_weight")
        return safe_inv(den), safe_inv(den)
    valid = target != ignore_index
    rowf = valid.to(acc) if sw is None else valid * sw
    if weight is None and sw is None:
        count = rowf.sum()
        return safe_inv(count), safe_inv(count)
    if weight is None:
        den = rowf.sum()
    else:
        ysafe = torch.where(valid, target, torch.zeros_like(target))
        den = (weight.to(acc)[ysafe] * rowf).sum()
    count = valid.sum() if sw is None else (valid & (sw != 0)).sum()
    name = "sample_weight" if weight is None else (
        "weight" if sw is None else "weight and sample_weight")
    den = checked_denominator(den, count, check, name)
    return safe_inv(den), safe_inv(rowf.sum())


def checked_denominator(den: torch.Tensor, count: torch.Tensor, check: bool,
                         name: str) -> torch.Tensor:
    """A weighted mean's denominator, checked as :func:`crossent._checks.mean_denominator`
    does where reading it is free (``check``), else made NaN where it is undefined."""
    if check and not torch.compiler.is_compiling():  # a graph cannot branch on data
        return _checks.mean_denominator(torch, den, count, name)
    return torch.where((den == 0) & (count > 0), torch.full_like(den, float("nan")), den)


def sample_weight(value: Any, batch: tuple[int, ...], like: torch.Tensor
                   ) -> torch.Tensor | None:
    """Per-row weights (the shape of the targets' batch dimensions, or broadcastable to it)
    as (R,) in the accumulation dtype on ``like``'s device, detached: they take no gradient."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"sample_weight must hold real numbers, got dtype {value.dtype}")
        value = value.detach()
    sw = _checks.sample_weight(torch, value, batch, acc_dtype(like.dtype), like.device)
    return sw.reshape(-1)


def row_scales(gs: Any, zs: Any, sw: torch.Tensor | None) -> tuple[Any, Any]:
    """The per-row gradient scales: the reduction's scales, times the sample weights."""
    return (gs, zs) if sw is None else (gs * sw, zs * sw)


def weighted(main: torch.Tensor, z: torch.Tensor, sw: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-row main and z-loss terms times the sample weights (unchanged without)."""
    return (main, z) if sw is None else (main * sw, z * sw)


def scales(target, weight, sw, opts: Opts, acc, device, check: bool = False):
    if opts.reduction == "mean":
        return mean_scales(target, weight, sw, opts.ignore_index, acc, check)
    one = torch.ones((), dtype=acc, device=device)
    return one, one
