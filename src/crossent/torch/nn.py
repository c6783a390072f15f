"""Drop-in ``torch.nn.Module`` versions of the crossent losses (class dimension 1, as PyTorch).

``CrossEntropyLoss`` and ``LinearCrossEntropyLoss`` run the fused PyTorch fast paths;
``SigmoidCrossEntropyLoss``, ``SigmoidFocalLoss`` and ``SoftmaxFocalLoss`` wrap the generic
(array-API) definitions in ``crossent``, imported when first called. The margin heads
(``ArcFaceHead``, ``CosFaceHead``, ``SphereFaceHead``, ``LargeMarginSoftmaxHead``) own their
class weight and live in :mod:`crossent.torch.heads`; they are re-exported here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .. import _checks
from ._common import check_options
from .cross_entropy import cross_entropy
from .heads import ArcFaceHead, CosFaceHead, LargeMarginSoftmaxHead, SphereFaceHead
from .linear import linear_cross_entropy

__all__ = [
    "ArcFaceHead",
    "CosFaceHead",
    "CrossEntropyLoss",
    "LargeMarginSoftmaxHead",
    "SphereFaceHead",
    "LinearCrossEntropyLoss",
    "SigmoidCrossEntropyLoss",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
]


def _legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    if size_average is None and reduce is None:
        return reduction
    from torch.nn import _reduction

    return _reduction.legacy_get_string(size_average, reduce)


class CrossEntropyLoss(nn.Module):
    r"""Softmax cross-entropy as a Module: :func:`crossent.torch.cross_entropy`.

    A drop-in replacement for :class:`torch.nn.CrossEntropyLoss` (same constructor arguments
    and positions, same values and gradients) that computes the gradient in the forward pass
    with one exp per logit, plus ``z_loss`` (PaLM), ``softcap`` (Gemma 2) and
    ``inplace_backward``. Every target ignored gives 0 for ``"mean"``, not NaN.

    Args:
        weight: optional (C,) per-class weight (a buffer: moves with ``.to()``).
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        ignore_index: class index that is skipped.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        label_smoothing: in [0, 1].
        z_loss: coefficient of ``lse**2`` (>= 0). softcap: tanh soft-capping, or None.
        inplace_backward: write the gradient into the logits (see ``cross_entropy``).

    Shape:
        input (N, C), (C,) or (N, C, d1, ...); target (N,), () or (N, d1, ...) class indices,
        or probabilities of the input's shape. Output: scalar, or the target's batch shape.

    Raises:
        ValueError: at construction, an option outside its range (as for
            :func:`crossent.torch.cross_entropy`; NumPy scalars and 0-d tensors are
            accepted); when called, whatever ``cross_entropy`` raises.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import CrossEntropyLoss
        >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1)
        >>> x, y = torch.zeros(2, 4), torch.tensor([0, 3])
        >>> round(loss_fn(x, y).item(), 4)   # log(4): uniform logits
        1.3863

    Aliases: ``torch.nn.CrossEntropyLoss``, Keras ``SparseCategoricalCrossentropy``, Caffe
    ``SoftmaxWithLoss``. References: see :func:`crossent.torch.cross_entropy`.
    """

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                 softcap: float | None = None, inplace_backward: bool = False) -> None:
        super().__init__()
        reduction = _legacy_reduction(size_average, reduce, reduction)
        opts = check_options(reduction, label_smoothing, z_loss, softcap, ignore_index)
        if weight is not None and not isinstance(weight, torch.Tensor):
            weight = torch.as_tensor(weight)  # a list / NumPy array: a buffer all the same
        self.register_buffer("weight", weight)
        self.ignore_index = opts.ignore_index
        self.reduction = opts.reduction
        self.label_smoothing = opts.label_smoothing
        self.z_loss = opts.z_loss
        self.softcap = opts.softcap
        self.inplace_backward = inplace_backward

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             label_smoothing=self.label_smoothing, reduction=self.reduction,
                             z_loss=self.z_loss, softcap=self.softcap,
                             inplace_backward=self.inplace_backward)

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}", f"ignore_index={self.ignore_index}"]
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        if self.z_loss:
            parts.append(f"z_loss={self.z_loss}")
        if self.softcap is not None:
            parts.append(f"softcap={self.softcap}")
        return ", ".join(parts)


class LinearCrossEntropyLoss(nn.Module):
    r"""A classifier head and its cross-entropy in one: :func:`linear_cross_entropy`.

    The Module owns the head's ``weight`` (num_classes, in_features) and optional ``bias``,
    initialised like :class:`torch.nn.Linear`, and computes
    ``CE(hidden @ weight.T + bias, target)`` chunk by chunk without materialising the logits.
    To tie it to an embedding, assign the Parameter (``loss.weight = emb.weight``); to use a
    weight owned elsewhere without a Module, call
    :func:`crossent.torch.linear_cross_entropy` directly.

    Args:
        in_features: H. num_classes: V. bias: whether to learn a bias.
        ignore_index, reduction, label_smoothing, z_loss, softcap: as in ``cross_entropy``.
        chunk_size: rows per chunk (None: chosen from N, V, H).
        device, dtype: of the parameters.

    Shape:
        hidden (..., H), target (...) class indices. Output: scalar, or target's shape.

    Raises:
        ValueError: at construction, an option outside its range or a ``chunk_size`` that is
            not a positive integer; when called, whatever ``linear_cross_entropy`` raises.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import LinearCrossEntropyLoss
        >>> _ = torch.manual_seed(0)
        >>> head = LinearCrossEntropyLoss(8, 100)
        >>> h, y = torch.randn(4, 8), torch.tensor([1, 2, 3, 4])
        >>> ref = torch.nn.functional.cross_entropy(h @ head.weight.T + head.bias, y)
        >>> torch.allclose(head(h, y), ref)
        True

    Aliases: Liger-Kernel ``LigerFusedLinearCrossEntropyLoss``; Apple Cut Cross-Entropy.
    References: Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language Models".
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = True, *,
                 ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, z_loss: float = 0.0,
                 softcap: float | None = None, chunk_size: int | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        opts = check_options(reduction, label_smoothing, z_loss, softcap, ignore_index)
        chunk_size = _checks.positive_int(chunk_size, "chunk_size", allow_none=True)
        self.in_features = in_features
        self.num_classes = num_classes
        self.weight = nn.Parameter(
            torch.empty((num_classes, in_features), device=device, dtype=dtype))
        self.bias = (nn.Parameter(torch.empty(num_classes, device=device, dtype=dtype))
                     if bias else None)
        self.ignore_index = opts.ignore_index
        self.reduction = opts.reduction
        self.label_smoothing = opts.label_smoothing
        self.z_loss = opts.z_loss
        self.softcap = opts.softcap
        self.chunk_size = chunk_size
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for weight and bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(hidden, self.weight, target, self.bias,
                                    chunk_size=self.chunk_size, ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing,
                                    reduction=self.reduction, z_loss=self.z_loss,
                                    softcap=self.softcap)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
                f"bias={self.bias is not None}, reduction={self.reduction!r}")


def _core(name: str) -> Any:
    """The generic crossent function ``name``, imported on first use (the core package does
    not import torch, and this module must not import the core at import time)."""
    import crossent

    fn = getattr(crossent, name, None)
    if fn is None:
        raise NotImplementedError(f"crossent.{name} is not available in this installation")
    return fn


class SigmoidCrossEntropyLoss(nn.Module):
    r"""Binary cross-entropy on logits: :func:`crossent.sigmoid_cross_entropy` as a Module.

    ``l = -w [p y log s(x) + (1 - y) log(1 - s(x))]`` with ``p = pos_weight``, computed
    stably; a drop-in for :class:`torch.nn.BCEWithLogitsLoss`.

    Args:
        weight: optional element weight, broadcast against the input.
        pos_weight: optional weight of positive examples (per class, broadcast on the last
            dimension as in PyTorch).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Raises:
        ValueError: an unknown ``reduction``.

    Example:
        >>> import crossent, torch
        >>> from crossent.torch.nn import SigmoidCrossEntropyLoss
        >>> x, y = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
        >>> ref = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
        >>> (not hasattr(crossent, "sigmoid_cross_entropy")   # the core may be absent
        ...  or torch.allclose(SigmoidCrossEntropyLoss()(x, y), ref))
        True

    Aliases: ``torch.nn.BCEWithLogitsLoss``, TF ``sigmoid_cross_entropy_with_logits``,
    optax ``sigmoid_binary_cross_entropy``.
    """

    def __init__(self, weight: torch.Tensor | None = None, pos_weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.reduction = _checks.reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _core("sigmoid_cross_entropy")(input, target, weight=self.weight,
                                              pos_weight=self.pos_weight,
                                              reduction=self.reduction)


class SigmoidFocalLoss(nn.Module):
    r"""Focal loss on per-class sigmoids (RetinaNet): :func:`crossent.sigmoid_focal_loss`.

    ``l = -alpha_t (1 - p_t)**gamma log p_t`` element-wise, ``alpha_t = alpha`` for positives
    and ``1 - alpha`` for negatives (no alpha weighting when ``alpha`` is None).

    Args:
        alpha: balance of positives, in [0, 1], or None. gamma: focusing exponent >= 0.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Raises:
        ValueError: ``alpha`` outside [0, 1], ``gamma < 0`` or an unknown ``reduction``.

    Example:
        >>> import crossent, torch
        >>> from crossent.torch.nn import SigmoidFocalLoss
        >>> x, y = torch.tensor([[3.0, -1.0]]), torch.tensor([[1.0, 0.0]])
        >>> not hasattr(crossent, "sigmoid_focal_loss") or SigmoidFocalLoss()(x, y).item() < 0.01
        True

    Aliases: torchvision ``sigmoid_focal_loss``, TF-Addons ``SigmoidFocalCrossEntropy``.
    References: Lin et al., 2017, "Focal Loss for Dense Object Detection".
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.alpha = None if alpha is None else _checks.unit_interval(alpha, "alpha")
        self.gamma = _checks.non_negative(gamma, "gamma")
        self.reduction = _checks.reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _core("sigmoid_focal_loss")(input, target, alpha=self.alpha, gamma=self.gamma,
                                           reduction=self.reduction)


class SoftmaxFocalLoss(nn.Module):
    r"""Multi-class focal loss: :func:`crossent.softmax_focal_loss` with the classes on dim 1.

    ``l = -alpha_y (1 - p_y)**gamma log p_y`` for class-index targets.

    Args:
        alpha: None, a number, or a (C,) tensor of per-class weights.
        gamma: focusing exponent >= 0. ignore_index: class index that is skipped.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Raises:
        ValueError: a negative scalar ``alpha``, ``gamma < 0``, a non-integer
            ``ignore_index`` or an unknown ``reduction``.

    Example:
        >>> import crossent, torch
        >>> from crossent.torch.nn import SoftmaxFocalLoss
        >>> x, y = torch.zeros(2, 4), torch.tensor([0, 3])
        >>> # gamma=0 and no alpha: plain cross-entropy, log(4) on uniform logits
        >>> (not hasattr(crossent, "softmax_focal_loss")
        ...  or abs(SoftmaxFocalLoss(gamma=0.0)(x, y).item() - 1.3863) < 1e-4)
        True

    Aliases: ``FocalLoss`` in kornia / mmdet (softmax variant).
    References: Lin et al., 2017, "Focal Loss for Dense Object Detection".
    """

    def __init__(self, alpha: float | torch.Tensor | None = None, gamma: float = 2.0,
                 ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        if isinstance(alpha, torch.Tensor) and alpha.dim() > 0:
            self.register_buffer("alpha", alpha)  # per class: moves with .to()
        else:
            self.alpha = None if alpha is None else _checks.non_negative(alpha, "alpha")
        self.gamma = _checks.non_negative(gamma, "gamma")
        self.ignore_index = _checks.index(ignore_index, "ignore_index")
        self.reduction = _checks.reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        axis = 1 if input.dim() >= 2 else 0
        return _core("softmax_focal_loss")(input, target, alpha=self.alpha, gamma=self.gamma,
                                           axis=axis, ignore_index=self.ignore_index,
                                           reduction=self.reduction)
