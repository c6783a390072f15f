"""Margin-softmax classification heads: ``torch.nn.Module`` s that own the class weights.

Each head holds ``weight`` of shape ``(num_classes, embedding_dim)`` (the layout of
``torch.nn.Linear``) and computes its loss with the generic definition in
:mod:`crossent.margin_softmax`, so module and function agree exactly and autograd reaches both the
embeddings and the weight.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import _checks
from .. import margin_softmax as _m

__all__ = ["ArcFaceHead", "CosFaceHead", "SphereFaceHead", "LargeMarginSoftmaxHead",
           "MarginLinearCrossEntropyLoss"]


class _MarginHead(torch.nn.Module):
    """Common part: the weight, its initialisation, ``forward`` (loss) and ``logits``."""

    _kind = ""
    _loss: Any = None
    _variant: Any = None  # its target-logit definition in crossent.margin_softmax

    def __init__(self, embedding_dim: int, num_classes: int, *, margin: Any, scale: float,
                 easy_margin: bool = False, reduction: str = "mean", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        sizes = []
        for name, value in (("embedding_dim", embedding_dim), ("num_classes", num_classes)):
            try:
                size = _checks.index(value, name)
            except ValueError:
                size = 0
            if size <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            sizes.append(size)
        embedding_dim, num_classes = sizes
        # The checked values are stored: Python numbers whatever scalar type came in.
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.margin = margin
        self.scale = _checks.positive(scale, "scale")
        self.easy_margin = easy_margin
        self.reduction = _checks.reduction(reduction)
        self.weight = torch.nn.Parameter(
            torch.empty(num_classes, embedding_dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-uniform, as insightface's ArcMarginProduct / CosFace heads
        torch.nn.init.xavier_uniform_(self.weight)

    def _options(self) -> dict:
        opts = {"margin": self.margin, "scale": self.scale, "reduction": self.reduction}
        if self._kind == "arcface":
            opts["easy_margin"] = self.easy_margin
        return opts

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The margin loss of ``embeddings`` ``(N, embedding_dim)`` with labels ``(N,)``."""
        return type(self)._loss(embeddings, self.weight, labels, **self._options())

    def logits(self, embeddings: torch.Tensor,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``(N, num_classes)``: with the margin at ``labels`` when given
        (training), plain ``s R cos(theta)`` without (inference, for ``argmax``)."""
        if labels is not None:
            _m._margin_inputs(embeddings, self.weight, labels)
        extra = {"easy_margin": self.easy_margin} if self._kind == "arcface" else {}
        z, _ = _m._margin_logits(embeddings, self.weight, labels,
                                 self._variant(self._margin_value(), **extra), float(self.scale))
        return z.to(embeddings.dtype)

    def _margin_value(self) -> float:
        return float(self.margin)

    def extra_repr(self) -> str:
        extra = f", easy_margin={self.easy_margin}" if self._kind == "arcface" else ""
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, "
                f"margin={self.margin}, scale={self.scale}{extra}, "
                f"reduction={self.reduction!r}")


class ArcFaceHead(_MarginHead):
    """ArcFace head: :func:`crossent.arcface_loss` with its own class weights.

    Args:
        embedding_dim: ``D``.
        num_classes: ``C``; ``weight`` has shape ``(C, D)``.
        margin: angular margin in radians (0.5).
        scale: ``s`` (64).
        easy_margin: apply the margin only where ``theta < pi/2``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        device, dtype: of ``weight``.

    Raises:
        ValueError: ``margin`` not an angle in [0, pi), ``scale`` not a positive finite
            number, an unknown ``reduction`` or non-positive sizes (NumPy scalars and 0-d
            tensors are accepted and stored as Python numbers).

    Example:
        >>> import torch
        >>> head = ArcFaceHead(8, 4)
        >>> loss = head(torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0]))
        >>> loss.backward(); head.weight.grad.shape
        torch.Size([4, 8])

    Aliases: insightface ``ArcFace`` / ``ArcMarginProduct``; pytorch-metric-learning
    ``ArcFaceLoss`` (its margin in degrees, its ``W`` transposed).
    """

    _kind = "arcface"
    _loss = staticmethod(_m.arcface_loss)
    _variant = _m._ArcFace

    def __init__(self, embedding_dim: int, num_classes: int, *, margin: float = 0.5,
                 scale: float = 64.0, easy_margin: bool = False, reduction: str = "mean",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(embedding_dim, num_classes, margin=_m._angular_margin(margin),
                         scale=scale, easy_margin=bool(easy_margin), reduction=reduction,
                         device=device, dtype=dtype)


class CosFaceHead(_MarginHead):
    """CosFace / AM-Softmax head: :func:`crossent.cosface_loss` with its own class weights.

    Args:
        embedding_dim: ``D``.
        num_classes: ``C``; ``weight`` has shape ``(C, D)``.
        margin: cosine margin (0.35).
        scale: ``s`` (64).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        device, dtype: of ``weight``.

    Raises:
        ValueError: a negative ``margin``, ``scale`` not a positive finite number, an
            unknown ``reduction`` or non-positive sizes.

    Example:
        >>> import torch
        >>> head = CosFaceHead(8, 4, margin=0.2, scale=30.0)
        >>> head.logits(torch.randn(5, 8)).shape
        torch.Size([5, 4])

    Aliases: insightface ``CosFace``; pytorch-metric-learning ``CosFaceLoss``.
    """

    _kind = "cosface"
    _loss = staticmethod(_m.cosface_loss)
    _variant = _m._CosFace

    def __init__(self, embedding_dim: int, num_classes: int, *, margin: float = 0.35,
                 scale: float = 64.0, reduction: str = "mean", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(embedding_dim, num_classes,
                         margin=_checks.non_negative(margin, "margin"), scale=scale,
                         reduction=reduction, device=device, dtype=dtype)


class SphereFaceHead(_MarginHead):
    """SphereFace (A-Softmax) head: :func:`crossent.sphereface_loss` with its own weights.

    Args:
        embedding_dim: ``D``.
        num_classes: ``C``; ``weight`` has shape ``(C, D)``.
        margin: integer multiplier ``m`` (4).
        scale: ``s`` (1).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        device, dtype: of ``weight``.

    Raises:
        ValueError: ``margin`` not a positive integer, ``scale`` not a positive finite
            number, an unknown ``reduction`` or non-positive sizes.

    Example:
        >>> import torch
        >>> head = SphereFaceHead(8, 4, margin=2)
        >>> round(head(torch.zeros(2, 8), torch.tensor([0, 1])).item(), 5)  # ln 4: ||x|| = 0
        1.38629

    Aliases: SphereFace's ``MarginInnerProduct``; pytorch-metric-learning
    ``SphereFaceLoss``.
    """

    _kind = "sphereface"
    _loss = staticmethod(_m.sphereface_loss)
    _variant: Any = _m._SphereFace

    def __init__(self, embedding_dim: int, num_classes: int, *, margin: int = 4,
                 scale: float = 1.0, reduction: str = "mean", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(embedding_dim, num_classes, margin=_m._int_margin(margin),
                         scale=scale, reduction=reduction, device=device, dtype=dtype)

    def _margin_value(self) -> float:
        return int(self.margin)


class LargeMarginSoftmaxHead(SphereFaceHead):
    """L-Softmax head: :func:`crossent.large_margin_softmax_loss` with its own weights.

    Args:
        embedding_dim: ``D``.
        num_classes: ``C``; ``weight`` has shape ``(C, D)``.
        margin: integer multiplier ``m`` (4).
        scale: ``s`` (1).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        device, dtype: of ``weight``.

    Raises:
        ValueError: ``margin`` not a positive integer, ``scale`` not a positive finite
            number, an unknown ``reduction`` or non-positive sizes.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> head = LargeMarginSoftmaxHead(8, 4, margin=1)  # m = 1: a plain linear softmax
        >>> x = torch.randn(3, 8)
        >>> # |w||x|cos(theta), rounded differently from the dot product
        >>> torch.allclose(head.logits(x), x @ head.weight.T, rtol=1e-5, atol=1e-5)
        True

    Aliases: Caffe ``LargeMarginInnerProduct``; pytorch-metric-learning
    ``LargeMarginSoftmaxLoss``.
    """

    _kind = "lsoftmax"
    _loss = staticmethod(_m.large_margin_softmax_loss)
    _variant = _m._LSoftmax


class MarginLinearCrossEntropyLoss(torch.nn.Module):
    """A margin softmax loss that owns its (shard of the) class centres: Partial FC as a Module.

    In one process it holds all ``num_classes`` centres; in a process group of ``P`` ranks
    (``group``, or the default group once ``torch.distributed`` is initialised) rank ``r``
    holds the ``r``-th of ``P`` contiguous slices (sizes differ by at most one) and the loss
    is :func:`crossent.torch.distributed.class_parallel_margin_cross_entropy` of the rows
    every rank passes. Wrap the backbone in ``DistributedDataParallel`` and keep this Module
    out of it (its parameter is sharded, not replicated): with ``ddp_grad_scale`` the
    embeddings' gradient is multiplied by ``P``, so DDP's average of the backbone gradients
    is the gradient of the global-batch loss. Negative sampling (``sample_rate < 1``) runs in
    training mode only, from a generator seeded with ``seed`` and the rank.

    Args:
        embedding_dim: ``D``.
        num_classes: ``C`` over all ranks.
        margin_type, margin, scale, easy_margin, sub_centers, chunk_size, reduction,
            ignore_index: as in :func:`crossent.torch.margin_linear_cross_entropy`.
        sample_rate: Partial FC's fraction of each slice's classes visited per step.
        group: the process group (None: the default one when initialised).
        seed: seeds the initialisation and the sampling (None: torch's global RNG).
        ddp_grad_scale: scale the embeddings' gradient by the world size (see above).
        device, dtype: of ``weight``.

    Attributes:
        weight: ``(C_r * sub_centers, D)`` this rank's centres, initialised N(0, 0.01) as
            Partial FC's. class_start: the first class of the slice.

    Raises:
        ValueError: non-positive sizes, or an option the functional form refuses.

    Example:
        >>> import torch
        >>> loss_fn = MarginLinearCrossEntropyLoss(8, 1000, margin_type="cosface", seed=0)
        >>> x = torch.randn(4, 8, requires_grad=True)
        >>> loss = loss_fn(x, torch.tensor([1, 999, 5, 5]))
        >>> loss.backward(); loss_fn.weight.grad.shape
        torch.Size([1000, 8])

    References: An et al. 2021, "Partial FC: Training 10 Million Identities on a Single
    Machine" (arXiv:2010.05222).
    """

    def __init__(self, embedding_dim: int, num_classes: int, *, margin_type: str = "arcface",
                 margin: float | None = None, scale: float | None = None,
                 easy_margin: bool = False, sub_centers: int = 1, sample_rate: float = 1.0,
                 chunk_size: int | None = None, reduction: str = "mean",
                 ignore_index: int = -100, group: Any = None, seed: int | None = None,
                 ddp_grad_scale: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        from .margin_linear import resolve_variant

        self.embedding_dim = _checks.positive_int(embedding_dim, "embedding_dim")
        self.num_classes = _checks.positive_int(num_classes, "num_classes")
        self.sub_centers = _checks.positive_int(sub_centers, "sub_centers")
        resolve_variant(margin_type, margin, scale, easy_margin, self.sub_centers)  # checks
        self.options: dict[str, Any] = {
            "margin_type": margin_type, "margin": margin, "scale": scale,
            "easy_margin": bool(easy_margin), "sub_centers": self.sub_centers,
            "chunk_size": chunk_size, "reduction": _checks.reduction(reduction),
            "ignore_index": _checks.index(ignore_index, "ignore_index")}
        self.sample_rate = _checks.number(sample_rate, "sample_rate", low=0.0, high=1.0,
                                          low_open=True, what="a fraction in (0, 1]")
        self.group = group
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        self.world = dist.get_world_size(group) if initialised else 1
        rank = dist.get_rank(group) if initialised else 0
        base, extra = divmod(self.num_classes, self.world)
        self.class_start = rank * base + min(rank, extra)
        self.local_classes = base + (rank < extra)
        self.ddp_grad_scale = bool(ddp_grad_scale)
        self._generator = None
        if seed is not None:
            seed = _checks.index(seed, "seed")
            self._generator = torch.Generator().manual_seed(seed * 1_000_003 + rank)
        self.weight = torch.nn.Parameter(torch.empty(
            self.local_classes * self.sub_centers, self.embedding_dim, device=device,
            dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            w = torch.randn(self.weight.shape, generator=self._generator, dtype=torch.float32)
            self.weight.copy_(w.mul_(0.01))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of this rank's ``embeddings`` ``(N_r, D)`` with global ``labels``
        ``(N_r,)``: the global batch's mean (or sum) on every rank."""
        from .distributed import class_parallel_margin_cross_entropy

        return class_parallel_margin_cross_entropy(
            embeddings, self.weight, labels, group=self.group, gather=True,
            class_start_index=self.class_start if self.world > 1 else None,
            num_classes=self.num_classes if self.world > 1 else None,
            sample_rate=self.sample_rate if self.training else 1.0,
            generator=self._generator,
            embedding_grad_scale=float(self.world) if self.ddp_grad_scale else 1.0,
            **self.options)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, "
                f"classes=[{self.class_start}, {self.class_start + self.local_classes}), "
                f"sample_rate={self.sample_rate}, "
                + ", ".join(f"{k}={v!r}" for k, v in self.options.items()))
