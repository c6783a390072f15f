"""Vocabulary-parallel cross-entropy on ``torch.distributed`` (Megatron-LM tensor parallelism).

Each rank of a process group holds the columns ``[start, start + V_p)`` of the logits (or the
rows ``[start, start + V_p)`` of the LM-head weight); no rank ever holds all V columns. Per row
the ranks combine three numbers with collectives: the global max (``all_reduce(MAX)``), then in
ONE ``all_reduce(SUM)`` of a stacked float32 tensor the sum of exponentials, the target logit
(contributed by the rank that owns the target's column, 0 elsewhere) and the sum of logits
(for label smoothing). Each rank then knows ``lse`` and the loss, and computes its own slice of
the gradient in the forward, so the backward is a local multiply by ``grad_output``.

Every rank must call these functions with the same replicated ``target``, the same options
and the same ``chunk_size`` and ``impl`` (the collectives must match one to one); only the
logits / weight slices differ. Without an initialised process group (and ``group=None``) they
run as a world of size 1, which is plain (fused) cross-entropy: handy for tests and
single-device users. A group of one process hands over to ``crossent.torch.cross_entropy`` /
``linear_cross_entropy``, which compute the same numbers with the fused row kernel, unless
``impl="parallel"`` asks for the parallel algorithm itself (tests and benchmarks of it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict, overload

import torch
import torch.distributed as dist

from .. import _checks
from ._common import (
    ChunkGrads,
    Opts,
    bump_version,
    check_labels,
    check_linear_shapes,
    check_options,
    finish,
    logit_chunks,
    mean_scale,
    needs_grad,
    reduce_rows,
    refuse_dual,
    refuse_inplace_on_leaf,
    require_class_indices,
    require_floating,
    require_tensor,
    scale_by_grad_output,
)
from ._dtensor import as_replicated, class_sharded, is_dtensor, replicated_activation
from ._rows import IMPLS as _ROW_IMPLS
from ._rows import acc_dtype, check_impl
from .cross_entropy import cross_entropy
from .linear import choose_chunk_size, linear_cross_entropy
from .margin_linear import Parallel, margin_linear_cross_entropy

if TYPE_CHECKING:  # Python 3.10 has no typing.Unpack; annotations are strings here
    from typing_extensions import Unpack

    from .margin_linear import MarginOptions

__all__ = [
    "class_parallel_margin_cross_entropy",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
]

# Row blocks of at most this many logits bound the float32 temporaries (half-precision input,
# or no gradient wanted) to 16 MiB whatever N x V_p is.
_BLOCK = 1 << 22
# The implementation choices: those of the single-device fused functions, which a group of one
# process hands over to (same semantics, one pass over the logits on CPU), and "parallel", the
# vocabulary-parallel algorithm with its collectives whatever the size of the group.
IMPLS = (*_ROW_IMPLS, "parallel")


class _Shard(NamedTuple):
    """Where this rank's slice sits in the vocabulary, and how to talk to the other ranks."""

    start: int
    vocab_size: int
    group: Any
    world: int  # 1: no communication at all


def _all_reduce(t: torch.Tensor, op: Any, shard: _Shard) -> None:
    if shard.world > 1:
        dist.all_reduce(t, op=op, group=shard.group)


def _max_op() -> Any:
    return dist.ReduceOp.MAX if dist.is_available() else None


def _sum_op() -> Any:
    return dist.ReduceOp.SUM if dist.is_available() else None


def _check_tiling(starts: list[int], widths: list[int], total: int,
                  what: str = "vocabulary") -> None:
    """The ranks' slices [start, start + width) must tile [0, total): no gap, no overlap."""
    expected = 0
    for i in sorted(range(len(starts)), key=lambda k: (starts[k], widths[k])):
        if starts[i] != expected:
            break
        expected += widths[i]
    if expected != total:
        slices = [(s, s + w) for s, w in zip(starts, widths, strict=True)]
        raise ValueError(f"the ranks' slices [start, start + width) of the {what} must tile "
                         f"[0, {total}) without gaps or overlaps, got {slices} (rank order)")


def _resolve_shard(group: Any, width: int, vocab_start_index: Any, vocab_size: Any,
                   device: torch.device, shape: tuple[int, ...],
                   names: tuple[str, str, str] = ("vocab_start_index", "vocab_size",
                                                  "vocabulary")) -> _Shard:
    """This rank's vocabulary slice: given, or from an all_gather of the slice widths.

    The gathered table is the same on every rank, so every check made on it raises on every
    rank alike (no rank is left waiting in a collective). ``shape`` is that of this rank's
    logits (or of the logits its weight shard makes), for the messages.
    """
    start_name, size_name, what = names
    vocab_start_index = _checks.non_negative_int(vocab_start_index, start_name,
                                                 allow_none=True)
    vocab_size = _checks.non_negative_int(vocab_size, size_name, allow_none=True)
    initialised = dist.is_available() and dist.is_initialized()
    if group is not None and not initialised:
        raise ValueError(f"group={group!r} was given but torch.distributed is not initialised; "
                         "call torch.distributed.init_process_group first (or pass group=None "
                         "to run as a single process)")
    world = dist.get_world_size(group) if initialised else 1
    if world == 1:
        if vocab_start_index not in (None, 0):
            raise ValueError(f"{start_name} must be 0 (or None) in a group of one process, "
                             f"got {vocab_start_index}")
        if vocab_size not in (None, width):
            raise ValueError(f"{size_name} must equal the shard width {width} (or be None) in a "
                             f"group of one process, got {vocab_size}")
        if width == 0:
            raise ValueError(f"the {what} must have at least one class, got a shard of "
                             f"width 0 in a group of one process (logits of shape {shape})")
        return _Shard(0, width, group, 1)
    if vocab_start_index is not None and vocab_size is not None:
        if vocab_start_index + width > vocab_size:
            raise ValueError(f"the slice [{start_name}, {start_name} + width) = "
                             f"[{vocab_start_index}, {vocab_start_index + width}) does not fit "
                             f"in {size_name}={vocab_size}")
        if device.type == "cpu":
            # One small all_gather of the slices, so overlaps and gaps raise (on every rank
            # alike) instead of giving a wrong loss. On an accelerator it would cost a host
            # sync per call, which giving both bounds exists to avoid: the slices are trusted.
            mine = torch.tensor([vocab_start_index, width], dtype=torch.int64)
            parts = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(parts, mine, group=group)
            table = torch.stack(parts).tolist()
            _check_tiling([row[0] for row in table], [row[1] for row in table], vocab_size,
                          what)
        return _Shard(vocab_start_index, vocab_size, group, world)
    mine = torch.tensor([-1 if vocab_start_index is None else vocab_start_index, width,
                         -1 if vocab_size is None else vocab_size],
                        dtype=torch.int64, device=device)
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine, group=group)
    table = torch.stack(parts).tolist()  # group-rank order
    starts = [row[0] for row in table]
    widths = [row[1] for row in table]
    total = sum(widths)
    if total == 0:
        raise ValueError(f"the {what} must have at least one class, got shards of width 0 "
                         f"on every rank (logits of shape {shape} here)")
    sizes = {row[2] for row in table if row[2] != -1}
    if sizes and sizes != {total}:
        raise ValueError(f"{size_name} must equal the sum of the shard widths {widths} = "
                         f"{total} on every rank that gives it, got {sorted(sizes)}")
    rank = dist.get_rank(group)
    if all(s == -1 for s in starts):
        return _Shard(sum(widths[:rank]), total, group, world)
    if any(s == -1 for s in starts):
        raise ValueError(f"{start_name} must be given on every rank of the group or on "
                         f"none, got {[None if s == -1 else s for s in starts]} (rank order)")
    _check_tiling(starts, widths, total, what)
    return _Shard(starts[rank], total, group, world)


def _local_targets(y: torch.Tensor, shard: _Shard, width: int, ignore_index: int):
    """(R, 1) column of the target in this shard (0 where it is not here), owned, valid."""
    valid = y != ignore_index
    local = y - shard.start
    own = valid & (local >= 0) & (local < width)
    tl = torch.where(own, local, torch.zeros_like(local)).unsqueeze(1)
    return tl, own, valid


def _shard_rows(x: torch.Tensor, tl: torch.Tensor, own: torch.Tensor, valid: torch.Tensor,
                shard: _Shard, eps: float, zc: float, *, grad_out: torch.Tensor | None = None,
                scale: torch.Tensor | None = None, lse: torch.Tensor | None = None):
    """Loss rows of a (R, V_p) block of logit columns, and optionally this shard's gradient.

    Returns ``(loss, z, lse)`` per row in the accumulation dtype: the main term (smoothing
    included) and the z-loss term, 0 on ignored rows, and the raw global log-sum-exp.
    ``grad_out`` (R, V_p; it may be ``x`` itself) receives ``scale_r * d loss_r / d x``, rounded
    once to its dtype. With ``lse`` given (a recompute in backward) nothing is communicated and
    only the gradient is produced (loss and z are None).
    """
    acc = acc_dtype(x.dtype)
    r, vp = x.shape
    v = shard.vocab_size
    step = max(1, _BLOCK // max(vp, 1))
    blocks = [(i, min(r, i + step)) for i in range(0, r, step)]
    # With a buffer of the accumulation dtype the exponentials are kept in it and later scaled
    # in place: one exp per logit. Otherwise (half-precision buffer) they are recomputed per
    # block, which costs a second exp but no N x V_p float32 tensor.
    keep_e = grad_out is not None and grad_out.dtype == acc and lse is None
    loss = zrow = s = None
    if lse is None:
        if vp:
            m = x.amax(dim=1).to(acc)
        else:
            m = torch.full((r,), -math.inf, dtype=acc, device=x.device)
        _all_reduce(m, _max_op(), shard)
        # A row of -inf only: shift by 0 so exp gives 0 rather than NaN.
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        stats = torch.zeros((3, r), dtype=acc, device=x.device)
        for i0, i1 in blocks:
            zb = x[i0:i1].to(acc)
            if vp:
                # Read the target logit and the row sum before the block may be overwritten.
                zy = zb.gather(1, tl[i0:i1]).squeeze(1)
                stats[1, i0:i1] = torch.where(own[i0:i1], zy, torch.zeros_like(zy))
                if eps:
                    stats[2, i0:i1] = zb.sum(dim=1)
            if keep_e:
                assert grad_out is not None
                eb = torch.sub(zb, m[i0:i1, None], out=grad_out[i0:i1])
            else:
                eb = zb - m[i0:i1, None]
            stats[0, i0:i1] = eb.exp_().sum(dim=1)
        _all_reduce(stats, _sum_op(), shard)  # the one SUM: [sum exp, target logit, sum z]
        s, zy, sz = stats.unbind(0)
        lse = m + torch.log(s)
        main = (1.0 - eps) * (lse - zy)
        if eps:
            main = main + eps * (lse - sz / v)
        zero = torch.zeros_like(lse)
        loss = torch.where(valid, main, zero)
        lv = torch.where(valid, lse, zero)
        zrow = zc * lv * lv
    if grad_out is not None:
        assert scale is not None  # the caller passes the scale with the buffer
        sc = torch.where(valid, scale.to(acc), torch.zeros((), dtype=acc, device=x.device))
        if sc.dim() == 0:
            sc = sc.expand(r)
        # d loss / d z_c = p_c (1 + 2 z_loss lse) - (1 - eps) [c == y] - eps / V
        cp = sc * (1.0 + 2.0 * zc * lse)
        if keep_e:
            assert s is not None  # the sum of exponentials from the pass above
            cp = cp / s
        hot = torch.where(own, -(1.0 - eps) * sc, torch.zeros_like(sc)).unsqueeze(1)
        flat = (sc * (-eps / v)).unsqueeze(1) if eps else None
        for i0, i1 in blocks:
            out = grad_out[i0:i1]
            if keep_e:
                e = out
            elif out.dtype == acc:
                e = torch.sub(x[i0:i1].to(acc), lse[i0:i1, None], out=out).exp_()
            else:
                e = (x[i0:i1].to(acc) - lse[i0:i1, None]).exp_()
            if flat is not None:  # e * cp - eps / V * sc in one pass
                g = torch.addcmul(flat[i0:i1], e, cp[i0:i1, None], out=e)
            else:
                g = e.mul_(cp[i0:i1, None])
            if vp:
                g.scatter_add_(1, tl[i0:i1], hot[i0:i1])
            if g is not out:
                out.copy_(g)
    return loss, zrow, lse


def _refuse_double_backward() -> None:
    """A backward with create_graph=True would need collectives inside the graph of the
    gradient; refuse it rather than return a gradient that silently has no derivative."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "crossent.torch.distributed: a differentiable backward (create_graph=True, double "
            "backward) of the vocabulary-parallel losses is not supported; in a group of one "
            "process crossent.torch.cross_entropy / linear_cross_entropy support it")


class _VocabParallelCE(torch.autograd.Function):
    """(R, V_p) logits shard -> (loss, z_part); the shard's gradient is made in forward.

    A second backward through a retained graph (``retain_graph=True``, gradcheck) recomputes
    the gradient from the logits and the saved global lse, without communication; it is
    refused only where the logits were overwritten (``inplace_backward``).
    """

    @staticmethod
    def forward(ctx, x, tl, own, valid, shard: _Shard, opts: Opts, inplace: bool):
        acc = acc_dtype(x.dtype)
        gs = mean_scale(valid, opts.reduction, acc)
        buf = x if inplace else torch.empty_like(x, memory_format=torch.contiguous_format)
        loss, z, lse = _shard_rows(x, tl, own, valid, shard, opts.label_smoothing,
                                   opts.z_loss, grad_out=buf, scale=gs)
        if inplace:
            bump_version(x)
        out, zpart = reduce_rows(loss, z, opts.reduction, gs)
        ctx.buf, ctx.shard, ctx.opts, ctx.inplace = buf, shard, opts, inplace
        ctx.save_for_backward(None if inplace else x, tl, own, valid, lse, gs)
        ctx.mark_non_differentiable(zpart)
        return out.to(x.dtype), zpart.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_loss, grad_zpart):
        _refuse_double_backward()
        buf = ctx.buf
        ctx.buf = None  # hand the buffer over: autograd may adopt it as .grad without a copy
        if buf is None:
            if ctx.inplace:
                raise RuntimeError(
                    "crossent.torch.distributed.vocab_parallel_cross_entropy: backward ran "
                    "twice through the same graph after the logits were overwritten by the "
                    "gradient (inplace_backward, or a private copy of non-contiguous logits); "
                    "retain_graph=True is not supported there")
            x, tl, own, valid, lse, gs = ctx.saved_tensors
            buf = torch.empty_like(x, memory_format=torch.contiguous_format)
            _shard_rows(x, tl, own, valid, ctx.shard, ctx.opts.label_smoothing,
                        ctx.opts.z_loss, grad_out=buf, scale=gs, lse=lse)
        (buf,) = scale_by_grad_output((buf,), grad_loss, ctx.opts.reduction == "none")
        return buf, None, None, None, None, None, None


def _check_common(reduction, label_smoothing, z_loss, ignore_index, impl, target, name_x,
                  x) -> tuple[Opts, str]:
    """The argument checks both losses share; the options and ``impl``, checked."""
    require_tensor(x, name_x)
    require_tensor(target, "target")
    require_floating(x, name_x)
    require_class_indices(target)
    impl = check_impl(impl, IMPLS)
    # "parallel" is no row routine: the single-device functions never see it
    opts = check_options(reduction, label_smoothing, z_loss, None, ignore_index,
                         "auto" if impl == "parallel" else impl)
    return opts, impl


def _parallel(shard: _Shard, impl: str) -> bool:
    """Whether the vocabulary-parallel algorithm runs (else a group of one process hands over
    to the single-device function); refuses the C++ kernel for a group of several."""
    if shard.world == 1:
        return impl == "parallel"
    if impl in ("kernel", "triton"):
        raise ValueError(f"impl={impl!r}: the single-device kernels serve a group of one "
                         f"process only, this group has {shard.world}; use impl='auto' or "
                         "'torch'")
    return True


class _ShardOptions(TypedDict, total=False):
    """The vocabulary-parallel losses' common keyword-only options, for their overloads."""

    group: Any
    vocab_start_index: int | None
    vocab_size: int | None
    ignore_index: int
    label_smoothing: float
    reduction: str
    z_loss: float
    impl: str


class _LogitsOptions(_ShardOptions, total=False):
    inplace_backward: bool


class _LinearOptions(_ShardOptions, total=False):
    chunk_size: int | None


@overload
def vocab_parallel_cross_entropy(logits_shard: torch.Tensor, target: torch.Tensor, *,
                                 return_z_loss: Literal[False] = ...,
                                 **options: Unpack[_LogitsOptions]) -> torch.Tensor: ...
@overload
def vocab_parallel_cross_entropy(logits_shard: torch.Tensor, target: torch.Tensor, *,
                                 return_z_loss: Literal[True], **options: Unpack[_LogitsOptions]
                                 ) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def vocab_parallel_cross_entropy(logits_shard: torch.Tensor, target: torch.Tensor, *,
                                 return_z_loss: bool, **options: Unpack[_LogitsOptions]
                                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


def vocab_parallel_cross_entropy(
    logits_shard: torch.Tensor, target: torch.Tensor, *, group: Any = None,
    vocab_start_index: int | None = None, vocab_size: int | None = None,
    ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
    z_loss: float = 0.0, inplace_backward: bool = False, return_z_loss: bool = False,
    impl: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Softmax cross-entropy over a vocabulary split across the ranks of a process group.

    .. math::
        m_i = \max_{r} \max_{c \in r} z_{ic},\qquad
        \mathrm{lse}_i = m_i + \log \textstyle\sum_r \sum_{c \in r} e^{z_{ic} - m_i}

        \ell_i = (1-\varepsilon)(\mathrm{lse}_i - z_{i y_i})
                 + \varepsilon\,(\mathrm{lse}_i - \tfrac{1}{V}\textstyle\sum_c z_{ic})
                 + \lambda_z\, \mathrm{lse}_i^2

    Rank r holds the columns ``[start_r, start_r + V_r)`` of the logits (class dim LAST, the
    Megatron-LM convention; slices may be uneven, even empty). The forward does one
    ``all_reduce(MAX)`` of the row maxima and ONE ``all_reduce(SUM)`` of a stacked float32
    (3, R) tensor [sum of exponentials, target logit (0 on the ranks that do not own it), sum
    of logits]; every rank then has the loss, and computes and keeps its own gradient slice
    ``(softmax (1 + 2 z_loss lse) - (1 - eps) onehot - eps / V)`` times the reduction's scale,
    so the backward needs no communication. The result equals
    ``F.cross_entropy(torch.cat(shards, -1), target, label_smoothing=eps)`` (plus
    ``z_loss * lse**2``) on every rank. float16/bfloat16 logits are computed in float32 and
    the gradient is rounded once to the logits' dtype. When every target is ignored the mean is
    0 with a zero gradient (PyTorch gives NaN).

    If ``torch.distributed`` is not initialised and ``group`` is None, this is a group of one
    process: the shard is the whole vocabulary, and a group of one hands over to
    :func:`crossent.torch.cross_entropy` (the same numbers, one pass over the logits on CPU)
    unless ``impl="parallel"``.

    Args:
        logits_shard: (N, V_p) or (..., V_p) logits of this rank's vocabulary slice, class dim
            last; float16, bfloat16, float32 or float64. Or a DTensor of the full logits
            sharded on the class dimension (``Shard(-1)``, as under torchtitan's
            ``loss_parallel()``) over one mesh dimension: its group and slice are taken from
            it (``group``/``vocab_start_index``/``vocab_size`` are then ignored) and the loss
            comes back as a replicated DTensor.
        target: (N,) or (...) GLOBAL class indices in [0, V) (or ``ignore_index``), the same
            tensor on every rank.
        group: the tensor-parallel process group; None is the default group (or no group).
        vocab_start_index: first global class of this rank's slice. None derives it from an
            ``all_gather`` of the slice widths, in group-rank order (one small collective;
            on GPUs it costs a host sync: give ``vocab_start_index`` and ``vocab_size`` to skip
            it there; on CPU the given slices are still gathered once per call to check that
            they tile [0, V)).
        vocab_size: V, the total number of classes; None is the sum of the slice widths.
        ignore_index: target value whose rows count neither in the loss nor in the mean.
        label_smoothing: epsilon in [0, 1], PyTorch's meaning (``eps / V`` on every class).
        reduction: ``"mean"`` over non-ignored rows, ``"sum"`` or ``"none"`` (target's shape).
        z_loss: coefficient of the auxiliary ``lse**2`` term (PaLM), >= 0, on non-ignored rows.
        inplace_backward: write the gradient into ``logits_shard``'s memory (Megatron-LM does
            this): no extra N x V_p buffer, but the logits are destroyed; only for an
            intermediate nobody reads afterwards. Refused for a leaf requiring grad.
        return_z_loss: also return the (detached) z-loss part, reduced the same way.
        impl: which code runs. ``"auto"`` (default): the vocabulary-parallel algorithm in a
            group of several processes; in a group of one, the hand-over to
            :func:`crossent.torch.cross_entropy` with ``impl="auto"`` (the C++ kernel on CPU
            where available, the Triton kernel on CUDA). ``"kernel"`` / ``"triton"`` /
            ``"torch"``: in a group of one, that hand-over with the C++ kernel, the Triton
            kernel (a ValueError where they cannot serve) or torch ops; in a group of
            several, ``"torch"`` is the parallel algorithm (torch ops) and ``"kernel"`` and
            ``"triton"`` a ValueError. ``"parallel"``: the parallel algorithm, with its
            collectives, whatever the size of the group (a group of one runs it too: for
            tests and benchmarks of that code path). The same on every rank.

    Returns:
        The loss, the same on every rank: a scalar, or ``target``'s shape for ``"none"``; in
        the logits' dtype. With ``return_z_loss=True``, ``(loss, z_loss_part)``. The gradient
        w.r.t. ``logits_shard`` is this rank's slice of the full gradient.

    Raises:
        ValueError: bad options (``ignore_index`` not an integer within int64 included),
            shapes, slice bounds (slices that do not tile [0, V): with both
            ``vocab_start_index`` and ``vocab_size`` given this is checked, by one small
            all_gather, on CPU tensors only; on an accelerator, where it would cost a host
            sync, explicit slices are trusted), no class at all, a ``group`` without an
            initialised ``torch.distributed``, (CPU) a target out of range,
            ``inplace_backward`` on a leaf requiring grad or a view of one; ``impl`` not one
            of ``"auto"``, ``"kernel"``, ``"triton"``, ``"torch"``, ``"parallel"`` (the
            message names the value), or ``"kernel"`` / ``"triton"`` where that kernel cannot
            serve (a group of several processes, a device, dtype or build without it).
        TypeError: non-floating logits or non-integer targets.
        RuntimeError: a differentiable backward (``create_graph=True``) in a group of more
            than one process.

    Example:
        >>> import torch
        >>> from crossent.torch.distributed import vocab_parallel_cross_entropy
        >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], requires_grad=True)
        >>> target = torch.tensor([0, 2])
        >>> loss = vocab_parallel_cross_entropy(logits, target)  # one process: whole vocab
        >>> torch.allclose(loss, torch.nn.functional.cross_entropy(logits, target))
        True
        >>> loss.backward(); logits.grad.shape
        torch.Size([2, 3])

    Under ``torchrun`` each rank passes its own columns instead, e.g.
    ``vocab_parallel_cross_entropy(full[:, start:start + width], target)``.

    Aliases: Megatron-LM ``tensor_parallel.vocab_parallel_cross_entropy``; NeMo
    ``vocab_parallel_cross_entropy``; PyTorch DTensor ``loss_parallel()`` with
    ``F.cross_entropy``.

    References:
        Shoeybi et al., 2019, "Megatron-LM: Training Multi-Billion Parameter Language Models
        Using Model Parallelism" (sec. 3, parallel cross-entropy); PaLM z-loss (Chowdhery
        et al., 2022).
    """
    if is_dtensor(logits_shard):
        # DTensor logits sharded on the classes: their local block, group and offset
        if not (group is None and vocab_start_index is None and vocab_size is None):
            raise ValueError("group, vocab_start_index and vocab_size come from DTensor "
                             "logits_shard itself; do not pass them with one")
        local, group, start, total, mesh = class_sharded(logits_shard, "logits_shard")
        out = vocab_parallel_cross_entropy(
            local, replicated_activation(target, "target"), group=group,
            vocab_start_index=start, vocab_size=total, ignore_index=ignore_index,
            label_smoothing=label_smoothing, reduction=reduction, z_loss=z_loss,
            inplace_backward=inplace_backward, return_z_loss=return_z_loss, impl=impl)
        if isinstance(out, tuple):
            return as_replicated(out[0], mesh), as_replicated(out[1], mesh)
        return as_replicated(out, mesh)
    opts, impl = _check_common(reduction, label_smoothing, z_loss, ignore_index, impl, target,
                               "logits_shard", logits_shard)
    reduction = opts.reduction
    if logits_shard.dim() < 1:
        raise ValueError("logits_shard must have at least one dimension (its classes, last)")
    if tuple(target.shape) != tuple(logits_shard.shape[:-1]):
        raise ValueError(f"target must have shape {tuple(logits_shard.shape[:-1])} "
                         f"(logits_shard without its last, class, dimension), got "
                         f"{tuple(target.shape)}")
    width = logits_shard.shape[-1]
    shard = _resolve_shard(group, width, vocab_start_index, vocab_size, logits_shard.device,
                           tuple(logits_shard.shape))
    batch = tuple(target.shape)
    n = math.prod(batch)
    x = logits_shard.reshape(n, width)
    if x.stride(-1) != 1 or (n > 1 and x.stride(0) != width):
        x = x.contiguous()
    y = target.reshape(n).to(device=x.device, dtype=torch.int64)
    check_labels(y, shard.vocab_size, opts.ignore_index)
    grad = needs_grad(logits_shard)
    if inplace_backward and grad:
        refuse_inplace_on_leaf(logits_shard, "logits_shard")
    if not _parallel(shard, impl):
        loss, zpart = cross_entropy(logits_shard if logits_shard.dim() == 2 else x, y,
                                    ignore_index=opts.ignore_index,
                                    label_smoothing=opts.label_smoothing, reduction=reduction,
                                    z_loss=opts.z_loss, inplace_backward=inplace_backward,
                                    return_z_loss=True, impl=opts.impl)
        return finish(loss, zpart, reduction, batch, return_z_loss)
    refuse_dual("vocab_parallel_cross_entropy", logits_shard)
    tl, own, valid = _local_targets(y, shard, width, opts.ignore_index)
    if grad:
        copied = x.untyped_storage().data_ptr() != logits_shard.untyped_storage().data_ptr()
        loss, zpart = _VocabParallelCE.apply(x, tl, own, valid, shard, opts,
                                             bool(inplace_backward or copied))
    else:
        acc = acc_dtype(x.dtype)
        with torch.no_grad():
            rows, z, _ = _shard_rows(x, tl, own, valid, shard, opts.label_smoothing,
                                     opts.z_loss)
            loss, zpart = reduce_rows(rows, z, reduction, mean_scale(valid, reduction, acc))
        loss, zpart = loss.to(x.dtype), zpart.to(x.dtype)
    return finish(loss, zpart, reduction, batch, return_z_loss)


def _linear_chunks(hidden, weight, bias, tl, own, valid, shard: _Shard, opts: Opts, chunk,
                   scale, need, loss_rows=None, z_rows=None, lse_rows=None, lse=None):
    """The chunk loop of the vocabulary-parallel linear cross-entropy.

    Fills ``loss_rows``/``z_rows``/``lse_rows`` (forward) or takes ``lse`` (a backward
    recompute: no collective per chunk). Returns ``(grad_h, grad_w, grad_b)`` for the inputs in
    ``need`` (None elsewhere), each times ``scale`` (0-d or per row); ``grad_h`` is summed over
    the group (hidden is replicated, each rank's slice contributes a part of it).
    """
    grad = any(need)
    # reduced precision: the partial grad_h is accumulated, and all-reduced, in float32
    grads = ChunkGrads(hidden, weight, need, acc_h=True)
    per_row = scale is not None and scale.dim() == 1
    for i0, i1, hc, lc in logit_chunks(hidden, weight, bias, chunk):
        loss, z, lse_c = _shard_rows(
            lc, tl[i0:i1], own[i0:i1], valid[i0:i1], shard, opts.label_smoothing, opts.z_loss,
            grad_out=lc if grad else None,  # the logits chunk becomes its own gradient
            scale=None if scale is None else (scale[i0:i1] if per_row else scale),
            lse=None if lse is None else lse[i0:i1])
        if lse is None:
            loss_rows[i0:i1] = loss
            z_rows[i0:i1] = z
            lse_rows[i0:i1] = lse_c
        if grad:
            grads.add(i0, i1, lc, hc)
    gh, gw, gb = grads.result(bias)
    if gh is not None:
        _all_reduce(gh, _sum_op(), shard)
        gh = gh.to(hidden.dtype)
    return gh, gw, gb


class _VocabParallelLinearCE(torch.autograd.Function):
    """(N, H) replicated hidden, (V_p, H) weight shard, (V_p,) bias shard -> (loss, z_part).

    mean/sum: all gradients are made chunk by chunk in the forward (grad_hidden all-reduced
    once at its end); backward scales them by grad_output. none: the per-row grad_output must
    enter before the sum over rows in grad_W, so backward recomputes the chunks from the saved
    global lse (no per-chunk collective) and all-reduces grad_hidden once; so does a second
    backward through a retained graph.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, tl, own, valid, shard: _Shard, opts: Opts,
                chunk: int):
        acc = acc_dtype(hidden.dtype)
        n = hidden.shape[0]
        gs = mean_scale(valid, opts.reduction, acc)
        need = tuple(ctx.needs_input_grad[:3])
        precompute = opts.reduction != "none"
        loss_rows = torch.empty(n, dtype=acc, device=hidden.device)
        z_rows = torch.empty_like(loss_rows)
        lse_rows = torch.empty_like(loss_rows)
        grads = _linear_chunks(hidden, weight, bias, tl, own, valid, shard, opts, chunk, gs,
                               need if precompute else (False, False, False),
                               loss_rows, z_rows, lse_rows)
        loss, zpart = reduce_rows(loss_rows, z_rows, opts.reduction, gs)
        ctx.shard, ctx.opts, ctx.chunk = shard, opts, chunk
        ctx.grads = grads if precompute else None
        ctx.save_for_backward(hidden, weight, bias, tl, own, valid, lse_rows, gs)
        ctx.mark_non_differentiable(zpart)
        return loss.to(hidden.dtype), zpart.to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_loss, grad_zpart):
        _refuse_double_backward()
        need = tuple(ctx.needs_input_grad[:3])
        grads = ctx.grads
        ctx.grads = None  # hand the tensors over: autograd may adopt them without a copy
        if grads is None:  # reduction="none", or a second backward: recompute from the lse
            hidden, weight, bias, tl, own, valid, lse, gs = ctx.saved_tensors
            scale = grad_loss.to(gs.dtype) * gs
            gh, gw, gb = _linear_chunks(hidden, weight, bias, tl, own, valid, ctx.shard,
                                        ctx.opts, ctx.chunk, scale, need, lse=lse)
            return gh, gw, gb, None, None, None, None, None, None
        gh, gw, gb = scale_by_grad_output(grads, grad_loss)
        return gh, gw, gb, None, None, None, None, None, None


@overload
def vocab_parallel_linear_cross_entropy(
    hidden: torch.Tensor, weight_shard: torch.Tensor, target: torch.Tensor,
    bias_shard: torch.Tensor | None = ..., *, return_z_loss: Literal[False] = ...,
    **options: Unpack[_LinearOptions]) -> torch.Tensor: ...
@overload
def vocab_parallel_linear_cross_entropy(
    hidden: torch.Tensor, weight_shard: torch.Tensor, target: torch.Tensor,
    bias_shard: torch.Tensor | None = ..., *, return_z_loss: Literal[True],
    **options: Unpack[_LinearOptions]) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def vocab_parallel_linear_cross_entropy(
    hidden: torch.Tensor, weight_shard: torch.Tensor, target: torch.Tensor,
    bias_shard: torch.Tensor | None = ..., *, return_z_loss: bool,
    **options: Unpack[_LinearOptions]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


def vocab_parallel_linear_cross_entropy(
    hidden: torch.Tensor, weight_shard: torch.Tensor, target: torch.Tensor,
    bias_shard: torch.Tensor | None = None, *, group: Any = None,
    vocab_start_index: int | None = None, vocab_size: int | None = None,
    chunk_size: int | None = None, ignore_index: int = -100, label_smoothing: float = 0.0,
    reduction: str = "mean", z_loss: float = 0.0, return_z_loss: bool = False,
    impl: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Cross-entropy of ``hidden @ W.T + b`` with W's rows (the vocabulary) split across ranks.

    .. math::
        \ell_i = \mathrm{CE}\big([h_i W_0^\top + b_0, \dots, h_i W_{P-1}^\top + b_{P-1}],\
                 y_i\big)

    The vocabulary-parallel loss of :func:`vocab_parallel_cross_entropy` combined with the
    chunked linear cross-entropy: no rank materialises even its own N x V_p logits. Rows are
    processed in chunks; per chunk a rank computes ``h_c @ W_p.T (+ b_p)``, takes part in the
    chunk's two collectives (row max, then one SUM of [sum exp, target logit, sum of logits]),
    turns the chunk in place into its gradient ``g`` (already scaled by the reduction: the
    mean's denominator comes from the targets up front), and accumulates
    ``grad_h += g @ W_p``, ``grad_W_p += g.T @ h_c``, ``grad_b_p += g.sum(0)``. ``grad_h`` is
    all-reduced (SUM) once at the end of the forward, since ``hidden`` is replicated over the
    tensor-parallel ranks: do not also all-reduce it in a "copy to tensor-parallel region"
    wrapper. Backward only rescales by ``grad_output`` (``reduction="none"``: it recomputes the
    chunks from the saved lse and all-reduces ``grad_h`` once, so every rank must run it).

    Args:
        hidden: (N, H) or (..., H) activations, replicated on every rank of the group.
        weight_shard: (V_p, H) rows ``[start, start + V_p)`` of the LM-head weight, same dtype.
        target: (N,) or (...) global class indices, the same on every rank.
        bias_shard: optional (V_p,) slice of the bias.
        group, vocab_start_index, vocab_size: as in :func:`vocab_parallel_cross_entropy`.
        chunk_size: rows per chunk, the same on every rank; None picks one from N, V / P and H
            (:func:`crossent.torch.choose_chunk_size`), identical on every rank.
        ignore_index, label_smoothing, reduction, z_loss, return_z_loss: as in
            :func:`vocab_parallel_cross_entropy`.
        impl: as in :func:`vocab_parallel_cross_entropy`; a group of one hands over to
            :func:`crossent.torch.linear_cross_entropy` (with that ``impl``) unless
            ``impl="parallel"``.

    Returns:
        The loss (scalar, or ``target``'s shape for ``"none"``) in ``hidden``'s dtype, the
        same on every rank; with ``return_z_loss=True``, ``(loss, z_loss_part)``.

    Raises:
        ValueError: bad options, shapes, slices (as for
            :func:`vocab_parallel_cross_entropy`), ``chunk_size`` or ``impl`` (an unknown
            value, or ``"kernel"`` where the kernel cannot serve); (CPU) a target out of
            range.
        TypeError: non-floating or mismatched dtypes, non-integer targets.
        RuntimeError: a differentiable backward (``create_graph=True``) in a group of more
            than one process.

    Example:
        >>> import torch
        >>> from crossent.torch.distributed import vocab_parallel_linear_cross_entropy
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(6, 4, generator=g, requires_grad=True)
        >>> w = torch.randn(10, 4, generator=g, requires_grad=True)
        >>> y = torch.tensor([1, 3, 5, 7, 9, -100])
        >>> loss = vocab_parallel_linear_cross_entropy(h, w, y, chunk_size=4)  # one process
        >>> torch.allclose(loss, torch.nn.functional.cross_entropy(h @ w.T, y))
        True
        >>> loss.backward(); w.grad.shape
        torch.Size([10, 4])

    Aliases: Megatron-LM's LM head (``ColumnParallelLinear`` + ``vocab_parallel_cross_entropy``)
    fused; Liger-Kernel ``LigerFusedLinearCrossEntropyLoss`` (single device); Apple Cut
    Cross-Entropy (single device).

    References:
        Shoeybi et al., 2019 (Megatron-LM); Wijmans et al., 2024, "Cut Your Losses in
        Large-Vocabulary Language Models".
    """
    opts, impl = _check_common(reduction, label_smoothing, z_loss, ignore_index, impl, target,
                               "hidden", hidden)
    reduction = opts.reduction
    require_tensor(weight_shard, "weight_shard")
    require_tensor(bias_shard, "bias_shard", optional=True)
    width = check_linear_shapes(hidden, weight_shard, bias_shard, target,
                                weight_name="weight_shard", bias_name="bias_shard", rows="V_p",
                                nonempty=False)  # a rank's slice may be empty
    chunk_size = _checks.positive_int(chunk_size, "chunk_size", allow_none=True)
    shard = _resolve_shard(group, width, vocab_start_index, vocab_size, hidden.device,
                           (*hidden.shape[:-1], width))
    batch = tuple(target.shape)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    if not h2.is_contiguous():
        h2 = h2.contiguous()
    n = h2.shape[0]
    y = target.reshape(n).to(device=h2.device, dtype=torch.int64)
    check_labels(y, shard.vocab_size, opts.ignore_index)
    if chunk_size is None:
        # From the group-wide V / P, not this rank's width: every rank must run the same
        # number of chunks, or the per-chunk collectives would not pair up.
        per_rank = -(-shard.vocab_size // shard.world)
        chunk_size = choose_chunk_size(n, per_rank, h2.shape[1], itemsize=h2.element_size(),
                                        device=h2.device.type)
    chunk = max(1, min(chunk_size, n))
    if not _parallel(shard, impl):
        return linear_cross_entropy(hidden, weight_shard, target, bias_shard,
                                    chunk_size=chunk, ignore_index=opts.ignore_index,
                                    label_smoothing=opts.label_smoothing, reduction=reduction,
                                    z_loss=opts.z_loss, return_z_loss=return_z_loss,
                                    impl=opts.impl)
    refuse_dual("vocab_parallel_linear_cross_entropy", hidden, weight_shard, bias_shard)
    tl, own, valid = _local_targets(y, shard, width, opts.ignore_index)
    if needs_grad(h2, weight_shard, bias_shard):
        loss, zpart = _VocabParallelLinearCE.apply(h2, weight_shard, bias_shard, tl, own, valid,
                                                   shard, opts, chunk)
    else:
        acc = acc_dtype(h2.dtype)
        rows = torch.empty(n, dtype=acc, device=h2.device)
        z, lse = torch.empty_like(rows), torch.empty_like(rows)
        with torch.no_grad():
            _linear_chunks(h2, weight_shard, bias_shard, tl, own, valid, shard, opts, chunk,
                           None, (False, False, False), rows, z, lse)
            loss, zpart = reduce_rows(rows, z, reduction, mean_scale(valid, reduction, acc))
        loss, zpart = loss.to(h2.dtype), zpart.to(h2.dtype)
    return finish(loss, zpart, reduction, batch, return_z_loss)


# --------------------------------------------------------------------------- margin softmax


def class_parallel_margin_cross_entropy(
    embeddings: torch.Tensor,
    class_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    group: Any = None,
    gather: bool = True,
    class_start_index: int | None = None,
    num_classes: int | None = None,
    sample_rate: float = 1.0,
    generator: torch.Generator | None = None,
    embedding_grad_scale: float = 1.0,
    **options: Unpack[MarginOptions],
) -> torch.Tensor:
    """Class-parallel margin softmax cross-entropy: each rank holds a slice of the class centres.

    Formula: that of :func:`crossent.torch.margin_linear_cross_entropy` over all ``C``
    classes of all ranks: ``l_i = logsumexp_j z_ij - z_iy``. Rank ``r`` holds the centres of
    classes ``[start_r, start_r + C_r)`` and visits only those, chunk by chunk; the per-row
    maximum, sum of exponentials and target logit meet in one ``all_reduce(MAX)`` and one
    ``all_reduce(SUM)``, and the embeddings' gradient sums in one ``all_reduce(SUM)`` in the
    backward: a constant number of collectives whatever ``C``. Each rank's gradient of its
    centres is exact and local.

    With ``gather=True`` each rank passes its own rows (sizes may differ); they are
    all-gathered (two ``all_gather`` and one of the sizes), the loss is that of the global
    batch ("none": this rank's rows) and the gradient reaching ``embeddings`` is this rank's
    rows of the global gradient. With ``gather=False`` every rank passes the same global
    batch. ``sample_rate < 1`` is Partial FC's negative sampling: each rank keeps the classes
    of its slice that some label names and random others up to ``int(sample_rate * C_r)``;
    the loss is then the softmax over the kept classes of all ranks, and the centres not kept
    get a zero gradient. ``sample_rate=1`` samples nothing (the exact loss).

    Args:
        embeddings: ``(N_r, D)`` this rank's rows (``gather=True``) or the global batch.
        class_weight: ``(C_r * sub_centers, D)`` this rank's class centres, class-major.
        labels: ``(N_r,)`` global class indices (or ``ignore_index``).
        options: ``margin_type``, ``margin``, ``scale``, ``easy_margin``, ``sub_centers``,
            ``chunk_size``, ``reduction``, ``ignore_index``, by keyword, as in (and defaulting
            as) :func:`crossent.torch.margin_linear_cross_entropy`.
        group: the process group (None: the default group; one process without
            ``torch.distributed``).
        gather: all-gather the rows of every rank (True) or take them as already global.
        class_start_index: ``start_r``; None: the slices follow rank order.
        num_classes: ``C``; None: the sum of the slices.
        sample_rate: the fraction of each slice's classes to visit, in (0, 1].
        generator: the CPU generator of the sampling (seed it for reproducible classes).
        embedding_grad_scale: multiplies the embeddings' gradient; the world size makes
            DDP's averaging of the backbone gradients give the gradient of this global loss
            (Partial FC does the same).

    Returns:
        The loss in the embeddings' dtype: the global batch's mean or sum on every rank, or
        per-row losses.

    Raises:
        TypeError: non-tensor or non-floating inputs, non-integer labels.
        ValueError: bad shapes or options (as the single-process function), slices that do
            not tile ``[0, C)``, a label out of range, ``sample_rate`` outside (0, 1].

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, W = torch.randn(4, 8, generator=g), torch.randn(6, 8, generator=g)
        >>> y = torch.tensor([0, 5, 2, 2])
        >>> loss = class_parallel_margin_cross_entropy(x, W, y, margin=0.3, scale=8.0)
        >>> from crossent.torch.margin_linear import margin_linear_cross_entropy
        >>> bool(torch.allclose(loss, margin_linear_cross_entropy(x, W, y, margin=0.3,
        ...                                                       scale=8.0)))
        True

    References: An et al. 2021, "Partial FC: Training 10 Million Identities on a Single
    Machine" (arXiv:2010.05222); Deng et al. 2019, "ArcFace" (arXiv:1801.07698).
    """
    rate = _checks.number(sample_rate, "sample_rate", low=0.0, high=1.0, low_open=True,
                          what="a fraction in (0, 1]")
    grad_scale = _checks.number(embedding_grad_scale, "embedding_grad_scale")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    par = Parallel(group, bool(gather), class_start_index, num_classes, rate, generator,
                   grad_scale)
    return margin_linear_cross_entropy(embeddings, class_weight, labels, **options,
                                       _parallel=par)
