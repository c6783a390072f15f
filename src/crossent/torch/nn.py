"""Drop-in ``torch.nn.Module`` versions of the crossent losses (class dimension 1, as PyTorch).

``import crossent.torch.nn as nn`` can stand in for ``torch.nn`` for the losses both have:
``CrossEntropyLoss``, ``LinearCrossEntropyLoss``, ``NLLLoss``, ``BCELoss``,
``BCEWithLogitsLoss``, ``KLDivLoss``, ``MSELoss``, ``MultiMarginLoss``,
``TripletMarginLoss``, ``MarginRankingLoss`` and ``CosineEmbeddingLoss`` take torch's
constructor arguments (names, positions, defaults, the deprecated ``size_average`` /
``reduce`` included) and forward arguments, and give torch's values and gradients; crossent's
extra options come after torch's, keyword-only. The exceptions, by design: every target
ignored gives 0 for ``"mean"`` (torch: NaN), and inputs torch accepts but documents as
invalid (a cosine target other than 1 / -1, probabilities outside [0, 1]) raise ValueError
naming the argument; a ranking target may be any real number, as in torch.

``CrossEntropyLoss`` and ``LinearCrossEntropyLoss`` run the fused PyTorch fast paths;
``NLLLoss`` and ``KLDivLoss`` are small torch-ops computations (crossent has no loss on
log-probabilities); the others, and ``SigmoidCrossEntropyLoss``, ``SigmoidFocalLoss`` and
``SoftmaxFocalLoss``, wrap the generic (array-API) definitions in ``crossent``, imported when
first called. The margin heads (``ArcFaceHead``, ``CosFaceHead``, ``SphereFaceHead``,
``LargeMarginSoftmaxHead``) own their class weight and live in :mod:`crossent.torch.heads`;
they are re-exported here, with ``MarginLinearCrossEntropyLoss`` (the chunked, class-parallel
margin softmax, Partial FC's Module) and ``FocalLoss`` (mmdetection's interface: detection
labels with a background class, ``avg_factor``, ``loss_weight``; :mod:`crossent.torch.focal`).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from .. import _checks
from .._reduce import safe_divide
from ._common import check_options, legacy_reduction
from ._common import core_loss as _core
from .cross_entropy import cross_entropy
from .focal import FocalLoss
from .heads import (
    ArcFaceHead,
    CosFaceHead,
    LargeMarginSoftmaxHead,
    MarginLinearCrossEntropyLoss,
    SphereFaceHead,
)
from .linear import linear_cross_entropy

__all__ = [
    # torch.nn's names
    "BCELoss",
    "BCEWithLogitsLoss",
    "CosineEmbeddingLoss",
    "CrossEntropyLoss",
    "KLDivLoss",
    "LinearCrossEntropyLoss",
    "MSELoss",
    "MarginRankingLoss",
    "MultiMarginLoss",
    "NLLLoss",
    "TripletMarginLoss",
    # crossent's own
    "ArcFaceHead",
    "CosFaceHead",
    "FocalLoss",
    "LargeMarginSoftmaxHead",
    "MarginLinearCrossEntropyLoss",
    "SigmoidCrossEntropyLoss",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
    "SphereFaceHead",
]


def _legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    if size_average is None and reduce is None:
        return reduction
    return legacy_reduction(size_average, reduce)


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
    r"""A classifier head and its cross-entropy in one: ``torch.nn.LinearCrossEntropyLoss``.

    .. math::
        \ell = \mathrm{CE}(x W^\top + b,\ y),\qquad
        W \in \mathbb{R}^{(C \cdot \prod d_k) \times H}

    Same constructor (torch 2.13's: ``in_features``, ``num_classes``, then keyword-only
    ``out_features``, ``bias=False``, ``device``, ``dtype``, ``reduction``, ``weight``,
    ``ignore_index``, ``label_smoothing``, ``options``), same parameter layout
    (``linear.weight``, ``linear.bias``, the class ``weight`` buffer: state dicts load both
    ways) and same values and gradients. Every call runs
    :func:`crossent.torch.linear_cross_entropy`, chunk by chunk, never materialising the
    logits: class-index or probability targets, class weights, K-dimensional heads.
    crossent's extras follow torch's arguments: ``z_loss``, ``softcap``, ``chunk_size``.

    Args:
        in_features: H. num_classes: C.
        out_features: ``(d1, ..., dK)`` for a K-dimensional loss: logits ``(N, C, d1, ...)``.
        bias: learn a bias (torch's default, False).
        device, dtype: of ``linear``'s parameters.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        weight: optional ``(C,)`` class weight (a buffer).
        ignore_index: skipped class index; None means -100, as torch.
        label_smoothing: in [0, 1].
        options: a ``torch.nn.LinearCrossEntropyOptions``; only its ``batch_chunk_size`` is
            read (as ``chunk_size``): crossent's chunking is its own and always on.
        z_loss: coefficient of ``lse**2`` (>= 0). softcap: tanh soft-capping, or None.
        chunk_size: rows per chunk (None: ``options.batch_chunk_size``, else chosen from N,
            C, H).

    Shape:
        input ``(H,)``, ``(N, H)`` or (with ``out_features=()``) ``(..., H)``; target class
        indices ``()``, ``(N,)``, ``(N, d1, ...)`` or ``(...)``, or probabilities
        ``(C,)``, ``(N, C, d1, ...)``. Output: scalar, or the target's batch shape.

    Returns:
        The loss, a tensor in the input's dtype.

    Raises:
        ValueError: at construction, an option outside its range, a ``weight`` that is not
            ``(C,)``, ``out_features`` that are not positive integers or a ``chunk_size``
            that is not a positive integer; when called, whatever ``linear_cross_entropy``
            or ``cross_entropy`` raises (shapes, labels out of range).

    Compatibility: before torch 2.13 had this class, crossent's took ``bias`` third and
    positionally with default True and kept the head matrix in ``weight``; now ``bias`` is
    keyword-only with torch's default False, the matrix is ``linear.weight`` and ``weight`` is
    the class weight. ``bias`` still reads ``linear.bias``, and state dicts saved with the old
    ``weight`` / ``bias`` keys still load.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import LinearCrossEntropyLoss
        >>> _ = torch.manual_seed(0)
        >>> head = LinearCrossEntropyLoss(8, 100, bias=True)
        >>> h, y = torch.randn(4, 8), torch.tensor([1, 2, 3, 4])
        >>> torch.allclose(head(h, y), torch.nn.functional.cross_entropy(head.linear(h), y))
        True

    Aliases: ``torch.nn.LinearCrossEntropyLoss``; Liger-Kernel
    ``LigerFusedLinearCrossEntropyLoss``; Apple Cut Cross-Entropy.
    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.LinearCrossEntropyLoss.html;
    Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language Models".
    """

    def __init__(self, in_features: int, num_classes: int, *,
                 out_features: tuple[int, ...] = (), bias: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 reduction: str = "mean", weight: torch.Tensor | None = None,
                 ignore_index: int | None = None, label_smoothing: float = 0.0,
                 options: Any = None, z_loss: float = 0.0, softcap: float | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__()
        opts = check_options(reduction, label_smoothing, z_loss, softcap,
                             -100 if ignore_index is None else ignore_index)
        if chunk_size is None and options is not None:
            chunk_size = getattr(options, "batch_chunk_size", None)
        chunk_size = _checks.positive_int(chunk_size, "chunk_size", allow_none=True)
        try:
            out = tuple(_checks.positive_int(d, "out_features") for d in out_features)
        except TypeError:
            raise TypeError(f"out_features must be a tuple of positive integers, got "
                            f"{out_features!r}") from None
        if weight is not None:
            weight = torch.as_tensor(weight)
            if tuple(weight.shape) != (num_classes,):
                raise ValueError(f"weight must have shape ({num_classes},), got "
                                 f"{tuple(weight.shape)}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.out_features = out
        # one flat nn.Linear, as torch: same parameter names, shapes and initialisation
        self.linear = nn.Linear(in_features, math.prod(out, start=num_classes), bias=bias,
                                device=device, dtype=dtype)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = opts.reduction
        self.label_smoothing = opts.label_smoothing
        self.z_loss = opts.z_loss
        self.softcap = opts.softcap
        self.chunk_size = chunk_size
        self.options = options

    @property
    def bias(self) -> torch.Tensor | None:
        """The head's bias, ``linear.bias`` (read-only; kept from crossent's earlier API)."""
        return self.linear.bias

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for weight and bias."""
        self.linear.reset_parameters()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # crossent's earlier layout kept the (C, H) matrix at "weight" and the bias at "bias"
        old = state_dict.get(prefix + "weight")
        if prefix + "linear.weight" not in state_dict and old is not None and old.dim() == 2:
            state_dict[prefix + "linear.weight"] = state_dict.pop(prefix + "weight")
            if prefix + "bias" in state_dict:
                state_dict[prefix + "linear.bias"] = state_dict.pop(prefix + "bias")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w: torch.Tensor = self.linear.weight
        b: torch.Tensor | None = self.linear.bias
        if self.out_features:  # the flat head's rows are (c, d1, ..., dK) in row-major order
            w = w.view(self.num_classes, *self.out_features, w.shape[-1])
            b = None if b is None else b.view(self.num_classes, *self.out_features)
        return linear_cross_entropy(input, w, target, b, weight=self.weight,
                                    chunk_size=self.chunk_size, ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing,
                                    reduction=self.reduction, z_loss=self.z_loss,
                                    softcap=self.softcap)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, "
                f"out_features={self.out_features}, bias={self.linear.bias is not None}, "
                f"reduction={self.reduction!r}, ignore_index={self.ignore_index}")


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


# --------------------------------------------------------------------------- torch's names
# Drop-ins under torch.nn's loss names: torch's constructor and forward signatures (the
# deprecated size_average / reduce included), values and gradients; each maps onto a generic
# crossent function, adapting torch's layout (class dim 1, element-wise means) to it.

_KL_REDUCTIONS = ("none", "mean", "batchmean", "sum")


def _buffer(value: Any) -> torch.Tensor | None:
    """An optional weight as a tensor (a list / NumPy array too), to be a buffer."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value)


def _check_tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


class NLLLoss(nn.Module):
    r"""Negative log-likelihood of class labels under log-probabilities: ``torch.nn.NLLLoss``.

    .. math::
        \ell_i = -w_{y_i}\, x_{i, y_i},\qquad
        \text{mean} = \frac{\sum_{i:\ y_i \ne \text{ignore}} \ell_i}
                           {\sum_{i:\ y_i \ne \text{ignore}} w_{y_i}}

    crossent has no loss on log-probabilities and class labels (its
    :func:`crossent.cross_entropy` takes probabilities, :func:`crossent.torch.cross_entropy`
    logits), so this is a small torch-ops computation: a gather at the labels, masked where
    ``y == ignore_index``, with torch's weighted mean. Every target ignored gives 0 for
    ``"mean"`` (torch: NaN); class weights summing to 0 over the counted targets raise.

    Args:
        weight: optional ``(C,)`` class weight (a buffer).
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        ignore_index: class index that is skipped. reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        input ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` log-probabilities; target
        ``(N,)``, ``()`` or ``(N, d1, ...)`` class indices. Output: scalar, or the target's
        shape for ``"none"``.

    Returns:
        The loss, in the input's dtype.

    Raises:
        ValueError: an unknown ``reduction`` or a non-integer ``ignore_index`` (construction);
            a target whose shape is not the input's without dim 1, a label outside [0, C)
            other than ``ignore_index``, a ``weight`` that is not ``(C,)``, or class weights
            of the counted targets summing to 0 for ``"mean"``.
        TypeError: a non-floating input or a non-integer target.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import NLLLoss
        >>> logp = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
        >>> round(NLLLoss()(logp, torch.tensor([0, 1])).item(), 4)   # -(log .5 + log .8) / 2
        0.4581

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.NLLLoss.html
    """

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 ignore_index: int = -100, reduce: bool | None = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight))
        self.ignore_index = _checks.index(ignore_index, "ignore_index")
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _check_tensor(input, "input"), _check_tensor(target, "target")
        if not x.is_floating_point():
            raise TypeError(f"input must be floating-point log-probabilities, got {x.dtype}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"target must be integer class indices, got {t.dtype}")
        if x.dim() == 0:
            raise ValueError("input must have a class dimension, got a 0-d tensor")
        unbatched = x.dim() == 1
        if unbatched:  # (C,) and (): one row
            x, t = x.unsqueeze(0), t.unsqueeze(0)
        num_classes = x.shape[1]
        expected = (x.shape[0], *x.shape[2:])
        if tuple(t.shape) != expected:
            raise ValueError(f"target must have the shape of input without dim 1 {expected}, "
                             f"got {tuple(target.shape)}")
        _checks.labels_in_range(torch, t, num_classes, self.ignore_index, "target")
        valid = t != self.ignore_index
        safe = torch.where(valid, t, torch.zeros_like(t))
        picked = -x.gather(1, safe.unsqueeze(1)).squeeze(1)
        if self.weight is None:
            w = valid.to(x.dtype)
        else:
            cw = _checks.class_weight(torch, self.weight, num_classes, x.dtype, x.device)
            w = torch.where(valid, cw[safe], torch.zeros((), dtype=x.dtype, device=x.device))
        # where, not a product: an ignored -inf log-probability must give 0, not NaN
        loss = torch.where(valid, picked * w, torch.zeros((), dtype=x.dtype, device=x.device))
        if self.reduction == "none":
            return loss.squeeze(0) if unbatched else loss
        total = loss.sum()
        if self.reduction == "sum":
            return total
        den = _checks.mean_denominator(torch, w.sum(), valid.sum())
        return safe_divide(torch, total, den)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"


class BCELoss(nn.Module):
    r"""Binary cross-entropy on probabilities (``torch.nn.BCELoss``): ``binary_cross_entropy``.

    .. math::
        \ell = -w\,[t \log p + (1 - t) \log(1 - p)],\ \text{each log clamped at } -100

    Args:
        weight: optional element weight broadcast against the input (a buffer).
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        reduction: ``"mean"`` over all elements | ``"sum"`` | ``"none"``.

    Shape:
        input: any shape, probabilities in [0, 1]; target: the same shape.

    Returns:
        Scalar, or element-wise losses, in the input's dtype.

    Raises:
        ValueError: an unknown ``reduction``; when called, a target of another shape, values
            outside [0, 1], or a weight that does not broadcast.
        TypeError: a non-floating input.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import BCELoss
        >>> round(BCELoss()(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0])).item(), 6)
        0.164252

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.BCELoss.html
    """

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight))
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _core("binary_cross_entropy")(input, target, weight=self.weight,
                                             reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class BCEWithLogitsLoss(nn.Module):
    r"""Binary cross-entropy on logits (``torch.nn.BCEWithLogitsLoss``): ``sigmoid_cross_entropy``.

    .. math::
        \ell = w\,[p_w\, t\, \mathrm{softplus}(-x) + (1 - t)\, \mathrm{softplus}(x)]

    :class:`SigmoidCrossEntropyLoss` is the same loss with crossent's own argument order.

    Args:
        weight: optional element weight broadcast against the input (a buffer).
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        reduction: ``"mean"`` over all elements | ``"sum"`` | ``"none"``.
        pos_weight: optional weight of the positive term, broadcast against the input (per
            class on the last dimension, a buffer).

    Shape:
        input: any shape (logits); target: the same shape, probabilities in [0, 1].

    Returns:
        Scalar, or element-wise losses, in the input's dtype.

    Raises:
        ValueError: an unknown ``reduction``; when called, a target of another shape, targets
            outside [0, 1], or a weight that does not broadcast.
        TypeError: a non-floating input.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import BCEWithLogitsLoss
        >>> x, y = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
        >>> torch.allclose(BCEWithLogitsLoss()(x, y), torch.nn.BCEWithLogitsLoss()(x, y))
        True

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html
    """

    def __init__(self, weight: torch.Tensor | None = None, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean",
                 pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight))
        self.register_buffer("pos_weight", _buffer(pos_weight))
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _core("sigmoid_cross_entropy")(input, target, weight=self.weight,
                                              pos_weight=self.pos_weight,
                                              reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class KLDivLoss(nn.Module):
    r"""Pointwise Kullback-Leibler divergence of log-probabilities: ``torch.nn.KLDivLoss``.

    .. math::
        \ell = t\,(\log t - x)\quad(0 \text{ where } t = 0),\qquad
        \ell = e^{t}\,(t - x)\ \text{with } \texttt{log\_target}

    ``x`` (input) is log q, the model's log-probabilities; ``t`` (target) is p, or log p with
    ``log_target=True``. Reductions as torch: ``"none"`` element-wise, ``"sum"``,
    ``"batchmean"`` (sum / input.size(0): the KL divergence per distribution) and ``"mean"``
    (sum / number of elements, which torch warns is not a KL of anything, and so does this).

    :func:`crossent.kl_divergence` takes probabilities (not log-probabilities) in [0, 1] and
    sums over a class axis, where torch's input is any real tensor reduced element-wise; so
    this Module computes torch's formula with torch ops (``xlogy``), exactly as torch does.

    Args:
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        reduction: ``"none"`` | ``"mean"`` | ``"batchmean"`` | ``"sum"``.
        log_target: the target is log p.

    Shape:
        input: any shape; target: the same shape. Output: scalar, or the input's shape.

    Returns:
        The loss, in the promoted dtype of input and target.

    Raises:
        ValueError: an unknown ``reduction``; when called, a target of another shape.
        TypeError: a non-floating input or target.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import KLDivLoss
        >>> p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.75]])
        >>> round(KLDivLoss(reduction="batchmean")(q.log(), p).item(), 6)   # KL(p || q)
        0.143841

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.KLDivLoss.html;
    Kullback & Leibler 1951, "On Information and Sufficiency".
    """

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__()
        reduction = _legacy_reduction(size_average, reduce, reduction)
        if reduction not in _KL_REDUCTIONS:
            raise ValueError(f"reduction must be one of {_KL_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.log_target = bool(log_target)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _check_tensor(input, "input"), _check_tensor(target, "target")
        for v, name in ((x, "input"), (t, "target")):
            if not v.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got {v.dtype}")
        _checks.same_shape(x, t, "input", "target")
        if self.reduction == "mean":
            warnings.warn(
                "reduction: 'mean' divides the total loss by both the batch size and the "
                "support size.'batchmean' divides only by the batch size, and aligns with the "
                "KL div math definition.'mean' will be changed to behave the same as "
                "'batchmean' in the next major release.", stacklevel=2)
        if self.log_target:
            loss = torch.exp(t) * (t - x)
        else:
            loss = torch.xlogy(t, t) - t * x
        if self.reduction == "none":
            return loss
        if self.reduction == "mean":
            return loss.mean()
        total = loss.sum()
        if self.reduction == "batchmean" and x.dim() != 0:
            return total / x.shape[0]
        return total

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, log_target={self.log_target}"


class MSELoss(nn.Module):
    r"""Mean squared error over all elements (``torch.nn.MSELoss``): ``mean_squared_error``.

    .. math::
        \ell = (x - y)^2,\qquad \text{mean} = \tfrac{1}{n} \textstyle\sum \ell

    ``crossent.mean_squared_error`` sums over a class axis; torch's is element-wise, so each
    element is passed as a one-class row. Targets of another shape are broadcast with torch's
    warning; integer targets are read as numbers, not labels.

    Args:
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        input: any shape; target: the same (or broadcastable). Output: scalar, or the
        broadcast shape.

    Returns:
        The loss, in the input's dtype.

    Raises:
        ValueError: an unknown ``reduction``; when called, shapes that do not broadcast.
        TypeError: a non-floating input.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import MSELoss
        >>> MSELoss()(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item()
        2.5

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.MSELoss.html
    """

    def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _check_tensor(input, "input"), _check_tensor(target, "target")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {x.dtype}")
        if not t.is_floating_point():
            t = t.to(x.dtype)  # numbers: the generic function would read them as labels
        if t.shape != x.shape:
            warnings.warn(
                f"Using a target size ({t.size()}) that is different to the input size "
                f"({x.size()}). This will likely lead to incorrect results due to "
                f"broadcasting. Please ensure they have the same size.", stacklevel=2)
            try:
                x, t = torch.broadcast_tensors(x, t)
            except RuntimeError:
                raise ValueError(f"target of shape {tuple(t.shape)} does not broadcast with "
                                 f"input of shape {tuple(x.shape)}") from None
        shape = x.shape
        out = _core("mean_squared_error")(x.reshape(-1, 1), t.reshape(-1, 1), axis=-1,
                                          reduction=self.reduction)
        return out.reshape(shape) if self.reduction == "none" else out

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MultiMarginLoss(nn.Module):
    r"""Multi-class margin loss (``torch.nn.MultiMarginLoss``): ``crossent.multi_margin_loss``.

    .. math::
        \ell = \frac{w_y}{C} \sum_{j \ne y} \max(0,\ \text{margin} - x_y + x_j)^p

    Args:
        p: 1 or 2. margin: the margin (default 1).
        weight: optional ``(C,)`` class weight (a buffer), applied by the target class.
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        reduction: ``"mean"`` (plain mean over examples, even with ``weight``) | ``"sum"``
            | ``"none"``.

    Shape:
        input ``(N, C)``, ``(C,)`` or ``()`` (one class); target ``(N,)``, ``()`` or, for a
        single row, ``(1,)`` class indices.

    Returns:
        Scalar, or one loss per example, in the input's dtype.

    Raises:
        ValueError: ``p`` not in {1, 2}, a ``weight`` that is not 1-D or an unknown
            ``reduction`` (construction); when called, bad shapes or a label out of range.
        TypeError: a non-floating input or a non-integer target.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import MultiMarginLoss
        >>> x = torch.tensor([[0.1, 0.2, 0.4, 0.8]])
        >>> round(MultiMarginLoss()(x, torch.tensor([3])).item(), 4)   # torch's documented value
        0.325

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.MultiMarginLoss.html;
    Weston & Watkins 1999, "Support vector machines for multi-class pattern recognition".
    """

    def __init__(self, p: int = 1, margin: float = 1.0, weight: torch.Tensor | None = None,
                 size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        if isinstance(p, bool) or p not in (1, 2):
            raise ValueError(f"p must be 1 or 2 (as in PyTorch), got {p!r}")
        weight = _buffer(weight)
        if weight is not None and weight.dim() != 1:
            raise ValueError(f"weight must be 1-D (one weight per class), got shape "
                             f"{tuple(weight.shape)}")
        self.p = int(p)
        self.margin = _checks.real(margin, "margin")
        self.register_buffer("weight", weight)
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _check_tensor(input, "input"), _check_tensor(target, "target")
        if x.dim() <= 1 and t.numel() == 1:
            # torch reads () and (C,) inputs as one row (a 0-d input as one class) and gives
            # the target's shape for "none"
            out = _core("multi_margin_loss")(x.reshape(1, -1), t.reshape(1), p=self.p,
                                             margin=self.margin, weight=self.weight,
                                             reduction=self.reduction)
            return out.reshape(t.shape) if self.reduction == "none" else out
        return _core("multi_margin_loss")(x, t, p=self.p, margin=self.margin,
                                          weight=self.weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"p={self.p}, margin={self.margin}, reduction={self.reduction!r}"


class TripletMarginLoss(nn.Module):
    r"""Triplet margin loss (``torch.nn.TripletMarginLoss``): ``crossent.triplet_margin_loss``.

    .. math::
        d(a, b) = \lVert a - b + \epsilon \rVert_p,\qquad
        \ell = \max(0,\ \text{margin} + d(a, p) - d(a, n))

    with ``swap``, ``d(a, n)`` becomes ``min(d(a, n), d(p, n))``.

    Args:
        margin: the margin (default 1). p: the norm degree, >= 1.
        eps: added to the differences, as torch's ``pairwise_distance``.
        swap: Balntas et al.'s distance swap.
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        anchor, positive, negative: ``(N, D)`` or ``(D,)``, all the same shape.

    Returns:
        Scalar, or one loss per triplet, in the anchor's dtype.

    Raises:
        ValueError: ``p < 1``, a negative ``eps``, an unknown ``reduction``; when called,
            shape mismatches.
        TypeError: non-floating inputs.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import TripletMarginLoss
        >>> a, pos = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> neg = torch.tensor([[1.5, 0.0]])
        >>> TripletMarginLoss(eps=0.0)(a, pos, neg).item()
        0.5

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.TripletMarginLoss.html;
    Schroff et al. 2015, "FaceNet"; Balntas et al. 2016 (swap).
    """

    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6,
                 swap: bool = False, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.margin = _checks.real(margin, "margin")
        self.p = _checks.number(p, "p", low=1.0, what="a finite norm degree >= 1")
        self.eps = _checks.non_negative(eps, "eps")
        self.swap = bool(swap)
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction))

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                negative: torch.Tensor) -> torch.Tensor:
        return _core("triplet_margin_loss")(anchor, positive, negative, margin=self.margin,
                                            p=self.p, eps=self.eps, swap=self.swap,
                                            reduction=self.reduction)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, p={self.p}, eps={self.eps}, swap={self.swap}, "
                f"reduction={self.reduction!r}")


class MarginRankingLoss(nn.Module):
    r"""Margin ranking loss (``torch.nn.MarginRankingLoss``): ``crossent.margin_ranking_loss``.

    .. math::
        \ell = \max(0,\ -y\,(x_1 - x_2) + \text{margin})

    ``y`` is 1 or -1 for a ranked pair; any other real target is taken as torch takes it
    (``max(0, margin)`` at ``y = 0``).

    Args:
        margin: the margin (default 0).
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        input1, input2, target: the same shape (any).

    Returns:
        Scalar, or element-wise losses, in input1's dtype.

    Raises:
        ValueError: an unknown ``reduction``; when called, shape mismatches.
        TypeError: non-floating inputs.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import MarginRankingLoss
        >>> x1, x2, y = torch.tensor([1.0, 0.2]), torch.tensor([0.5, 0.5]), torch.tensor([1, 1])
        >>> MarginRankingLoss(margin=0.1, reduction="sum")(x1, x2, y).item()
        0.4

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.MarginRankingLoss.html;
    Herbrich et al. 2000, "Large margin rank boundaries for ordinal regression".
    """

    def __init__(self, margin: float = 0.0, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.margin = _checks.real(margin, "margin")
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction))

    def forward(self, input1: torch.Tensor, input2: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        return _core("margin_ranking_loss")(input1, input2, target, margin=self.margin,
                                            reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"


class CosineEmbeddingLoss(nn.Module):
    r"""Cosine embedding loss (``torch.nn.CosineEmbeddingLoss``): ``cosine_embedding_loss``.

    .. math::
        \cos = \frac{x_1 \cdot x_2}{\sqrt{(\lVert x_1 \rVert^2 + e)(\lVert x_2 \rVert^2 + e)}},
        \qquad \ell = \begin{cases} 1 - \cos & y = 1 \\ \max(0, \cos - \text{margin}) & y = -1
        \end{cases}

    with torch's ``e = 1e-12``.

    Args:
        margin: a cosine in [-1, 1] (default 0).
        size_average, reduce: deprecated PyTorch arguments, mapped to ``reduction``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Shape:
        input1, input2 ``(N, D)`` or ``(D,)``; target ``(N,)`` or ``()``, in {1, -1}.

    Returns:
        Scalar, or one loss per pair, in input1's dtype.

    Raises:
        ValueError: a margin outside [-1, 1] or an unknown ``reduction`` (construction); when
            called, shape mismatches or a target not in {1, -1}.
        TypeError: non-floating inputs.

    Example:
        >>> import torch
        >>> from crossent.torch.nn import CosineEmbeddingLoss
        >>> x1, x2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> CosineEmbeddingLoss()(x1, x2, torch.tensor([1])).item()   # orthogonal: 1 - 0
        1.0

    References: https://docs.pytorch.org/docs/stable/generated/torch.nn.CosineEmbeddingLoss.html
    """

    def __init__(self, margin: float = 0.0, size_average: bool | None = None,
                 reduce: bool | None = None, reduction: str = "mean") -> None:
        super().__init__()
        margin = _checks.real(margin, "margin")
        if not -1.0 <= margin <= 1.0:
            raise ValueError(f"margin must be in [-1, 1] (a cosine), got {margin!r}")
        self.margin = margin
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction))

    def forward(self, input1: torch.Tensor, input2: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        return _core("cosine_embedding_loss")(input1, input2, target, margin=self.margin,
                                              reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"
