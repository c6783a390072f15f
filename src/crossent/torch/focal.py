"""mmdetection's ``FocalLoss`` Module: integer detection targets with a background class,
per-element or per-row weights, ``avg_factor`` and ``loss_weight``.

RetinaNet-style heads score every anchor against ``C`` foreground classes with independent
sigmoids; an anchor labelled ``C`` is background, i.e. the one-hot of ``C + 1`` columns with
the last one dropped, so a background anchor is a negative for every class. The loss is
:func:`crossent.sigmoid_focal_loss` (or :func:`crossent.softmax_focal_loss` with
``use_sigmoid=False``, which mmdetection leaves unimplemented), whose closed-form gradient is
the backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import _checks
from ._common import core_loss

__all__ = ["FocalLoss"]


def _background_one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype
                        ) -> torch.Tensor:
    """(N,) labels in [0, C] -> (N, C) 0/1 targets, label C (background) -> a row of zeros."""
    if target.numel() and not torch.compiler.is_compiling():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi > num_classes:
            raise ValueError(
                f"target must hold class indices in [0, {num_classes}] ({num_classes} is the "
                f"background), got values in [{lo}, {hi}]")
    classes = torch.arange(num_classes, device=target.device)
    return (target.unsqueeze(-1) == classes).to(dtype)


def _element_weight(weight: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """mmdet's weight layouts for (N, C) losses: per element, per row (N,) or, with as many
    values as elements, reshaped to the loss."""
    if weight.shape == pred.shape:
        return weight
    if weight.shape == pred.shape[:-1]:
        return weight.unsqueeze(-1)
    if weight.numel() == pred.numel():
        return weight.reshape(pred.shape)
    raise ValueError(f"weight must have the shape of pred {tuple(pred.shape)}, one value per "
                     f"row {tuple(pred.shape[:-1])}, or as many values as pred; got "
                     f"{tuple(weight.shape)}")


class FocalLoss(nn.Module):
    r"""Focal loss with mmdetection's interface: ``loss_weight * FL`` on detection targets.

    Formula (``use_sigmoid=True``): with ``t`` the one-hot of ``C + 1`` columns of the labels,
    last column (background) dropped, ``p = sigma(pred)``, ``p_t = p t + (1 - p)(1 - t)``,
    ``alpha_t = alpha t + (1 - alpha)(1 - t)``:
    ``l = -alpha_t (1 - p_t)^gamma log p_t`` per element, times ``weight``; "mean" is the
    mean over all ``N C`` elements or, with ``avg_factor``, ``sum(l) / (avg_factor + eps)``
    (``eps`` float32's machine epsilon), as mmdet's ``weight_reduce_loss``; the result is
    multiplied by ``loss_weight``. With ``use_sigmoid=False`` ``pred`` holds ``C + 1`` softmax
    scores, background last, and ``l = -alpha_y (1 - p_y)^gamma log p_y`` per row with
    ``alpha_y = alpha`` for a foreground label and ``1 - alpha`` for the background (the
    balance the sigmoid form gives negatives), or a ``(C + 1,)`` tensor of class weights.
    Gradients are the closed forms of :func:`crossent.sigmoid_focal_loss` /
    :func:`crossent.softmax_focal_loss`.

    Args:
        use_sigmoid: independent sigmoids per class (RetinaNet, the default) or one softmax
            over the classes and the background.
        gamma: focusing parameter ``>= 0``.
        alpha: positive/negative balance in [0, 1], None for no weighting; with
            ``use_sigmoid=False`` also a ``(C + 1,)`` tensor of class weights.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        loss_weight: factor applied to the loss.

    Forward args:
        pred: ``(N, C)`` logits (``(N, C + 1)`` with ``use_sigmoid=False``); any leading
            dimensions in place of ``N``.
        target: ``(N,)`` integer labels in ``[0, C]`` (``C`` = background); or, with
            ``use_sigmoid=True``, targets of ``pred``'s shape (one-hot or soft, as mmdet
            3.x accepts).
        weight: optional weights: per element ``(N, C)`` or per row ``(N,)`` (per row only
            with ``use_sigmoid=False``).
        avg_factor: optional replacement of the mean's denominator (e.g. the number of
            positive anchors); ignored for "none", an error with "sum".
        reduction_override: ``None`` or a reduction that replaces ``reduction`` for this call.

    Returns:
        The loss: a scalar, or ``(N, C)`` (sigmoid) / ``(N,)`` (softmax) for "none".

    Raises:
        ValueError: ``gamma < 0``, ``alpha`` outside [0, 1], an unknown reduction or
            reduction override, labels outside ``[0, C]``, a weight of another layout, a
            negative ``avg_factor`` or one given with "sum".

    Example:
        >>> import torch
        >>> from crossent.torch.nn import FocalLoss
        >>> pred = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
        >>> target = torch.tensor([0, 2])                  # class 0, then background
        >>> round(FocalLoss()(pred, target, avg_factor=1).item(), 6)   # 1 positive anchor
        0.430468
        >>> FocalLoss(reduction="none")(pred, target).shape
        torch.Size([2, 2])

    Aliases: mmdet ``FocalLoss`` (``mmdet.models.losses.focal_loss``).

    References: Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection",
    ICCV 2017 (arXiv:1708.02002); MMDetection's ``FocalLoss`` and ``weight_reduce_loss``
    (https://mmdetection.readthedocs.io).
    """

    def __init__(self, use_sigmoid: bool = True, gamma: float = 2.0,
                 alpha: float | torch.Tensor | None = 0.25, reduction: str = "mean",
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.use_sigmoid = bool(use_sigmoid)
        self.gamma = _checks.non_negative(gamma, "gamma")
        if isinstance(alpha, torch.Tensor) and alpha.dim() > 0:
            if self.use_sigmoid:
                raise ValueError("alpha must be a number in [0, 1] or None with "
                                 "use_sigmoid=True, got a tensor of shape "
                                 f"{tuple(alpha.shape)}")
            self.register_buffer("alpha", alpha)  # per class: moves with .to()
        else:
            self.alpha = None if alpha is None else _checks.unit_interval(alpha, "alpha")
        self.reduction = _checks.reduction(reduction)
        self.loss_weight = _checks.real(loss_weight, "loss_weight")

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None, avg_factor: Any = None,
                reduction_override: str | None = None) -> torch.Tensor:
        reduction = self.reduction if reduction_override is None else _checks.reduction(
            reduction_override)
        if pred.dim() < 1:
            raise ValueError(f"pred must have a class dimension, got shape {tuple(pred.shape)}")
        if self.use_sigmoid:
            loss = self._sigmoid(pred, target, weight, avg_factor, reduction)
        else:
            loss = self._softmax(pred, target, weight, avg_factor, reduction)
        return loss if self.loss_weight == 1.0 else self.loss_weight * loss

    def _sigmoid(self, pred: torch.Tensor, target: torch.Tensor, weight: Any, avg_factor: Any,
                 reduction: str) -> torch.Tensor:
        if target.dim() == pred.dim():  # already one-hot / probabilities
            t = target
        else:
            if target.shape != pred.shape[:-1]:
                raise ValueError(f"target must have shape {tuple(pred.shape[:-1])} (one label "
                                 f"per row of pred) or pred's shape {tuple(pred.shape)}, got "
                                 f"{tuple(target.shape)}")
            if target.is_floating_point() or target.dtype == torch.bool:
                raise TypeError(f"target labels must be integers, got {target.dtype}")
            t = _background_one_hot(target, pred.shape[-1], pred.dtype)
        w = None if weight is None else _element_weight(weight, pred)
        return core_loss("sigmoid_focal_loss")(pred, t, alpha=self.alpha, gamma=self.gamma,
                                           weight=w, avg_factor=avg_factor,
                                           reduction=reduction)

    def _softmax(self, pred: torch.Tensor, target: torch.Tensor, weight: Any, avg_factor: Any,
                 reduction: str) -> torch.Tensor:
        alpha = self.alpha
        if alpha is not None and not isinstance(alpha, torch.Tensor):
            # foreground classes alpha, the background (last column) 1 - alpha
            fg = float(alpha)
            alpha = torch.full((pred.shape[-1],), fg, dtype=torch.float64)
            alpha[-1] = 1.0 - fg
        if weight is not None and weight.shape != target.shape:
            raise ValueError(f"weight must have one value per row {tuple(target.shape)} with "
                             f"use_sigmoid=False, got {tuple(weight.shape)}")
        return core_loss("softmax_focal_loss")(pred, target, alpha=alpha, gamma=self.gamma,
                                           axis=-1, ignore_index=None, weight=weight,
                                           avg_factor=avg_factor, reduction=reduction)

    def extra_repr(self) -> str:
        return (f"use_sigmoid={self.use_sigmoid}, gamma={self.gamma}, alpha={self.alpha}, "
                f"reduction={self.reduction!r}, loss_weight={self.loss_weight}")
