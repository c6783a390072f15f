"""What the torch losses share: their options, the checks of their arguments, the autocast and
``torch.func`` plumbing, and the small pieces of their reductions and backward passes.

Used by :mod:`.cross_entropy`, :mod:`.linear` and :mod:`.distributed`; the numeric checks are
those of :mod:`crossent._checks`, which every backend shares.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd import forward_ad as _forward_ad

from .. import _checks
from .._reduce import safe_divide
from .._torch_autograd import autocast_enabled
from ._rows import acc_dtype, check_impl

# Logits dtypes that autocast casts to float32 for cross-entropy (float64 is left alone).
_AUTOCAST_FP32 = (torch.float16, torch.bfloat16, torch.float32)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Opts:
    """The scalar options of a torch loss, checked and normalised (:func:`check_options`)."""

    ignore_index: int
    label_smoothing: float
    reduction: str
    z_loss: float
    softcap: float | None = None
    impl: str = "auto"


def _concrete_float(value: Any, name: str) -> float:
    """A checked option as a Python float: the kernels and the per-row scalars need one."""
    try:
        return float(value)
    except Exception:  # a traced scalar (torch fake tensor) has no value to read here
        raise TypeError(f"{name} must be a concrete number on the torch path, got "
                        f"{type(value).__name__}") from None


# Options already validated, keyed by their values (plain Python numbers and strings only,
# never tensors, whose values may change): a training loop passes the same few options on
# every call, and this keeps their checks off the per-call cost of the fused path.
_CHECKED: dict[tuple, Opts] = {}
_NUM = (float, int)


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """PyTorch's deprecated ``size_average`` / ``reduce`` flags as a ``reduction`` string,
    mapped (and warned about) the way PyTorch's own losses do."""
    from torch.nn import _reduction

    return _reduction.legacy_get_string(size_average, reduce)


def check_options(reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any,
                  ignore_index: Any, impl: Any = "auto") -> Opts:
    """Validate the scalar options shared by the torch losses with the project's checks
    (:mod:`crossent._checks`) and return them normalised (Python numbers, NumPy scalars and
    0-d tensors accepted); ``impl`` is the row routine's (:func:`._rows.check_impl`)."""
    plain = (type(reduction) is str and type(label_smoothing) in _NUM
             and type(z_loss) in _NUM and (softcap is None or type(softcap) in _NUM)
             and type(ignore_index) is int and type(impl) is str)
    if plain:  # ints and floats of equal value normalise alike; ignore_index is an int
        key = (reduction, label_smoothing, z_loss, softcap, ignore_index, impl)
        hit = _CHECKED.get(key)
        if hit is not None:
            return hit
    red = _checks.reduction(reduction)
    eps = _concrete_float(_checks.unit_interval(label_smoothing, "label_smoothing"),
                          "label_smoothing")
    zc = _concrete_float(_checks.non_negative(z_loss, "z_loss"), "z_loss")
    cap = None
    if softcap is not None:
        cap = _concrete_float(
            _checks.number(softcap, "softcap", low=0.0, low_open=True,
                           what="a positive finite number or None"), "softcap")
    ii = _checks.index(ignore_index, "ignore_index")
    opts = Opts(ii, eps, red, zc, cap, check_impl(impl))
    if plain and len(_CHECKED) < 256:
        _CHECKED[key] = opts
    return opts


# --------------------------------------------------------------------------- arguments


def require_tensor(value: Any, name: str, *, optional: bool = False) -> None:
    """TypeError unless ``value`` is a tensor (or None, when ``optional``)."""
    if not isinstance(value, torch.Tensor) and not (optional and value is None):
        raise TypeError(f"{name} must be a torch.Tensor{' or None' if optional else ''}, got "
                        f"{type(value).__name__}")


def require_floating(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def require_class_indices(target: torch.Tensor) -> None:
    """The targets of the linear and vocabulary-parallel losses: integer class indices."""
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")


def check_linear_shapes(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        target: torch.Tensor | None, *, weight_name: str = "weight",
                        bias_name: str = "bias", rows: str = "V", nonempty: bool = True,
                        hidden_name: str = "hidden") -> int:
    """Dtypes and shapes of ``hidden (..., H)``, ``weight (rows, H)``, ``bias (rows,)`` and
    ``target (...)`` (None: no target to check) for a linear + cross-entropy loss; returns
    the number of weight rows. ``nonempty``: a weight without rows (logits with no class) is
    an error here."""
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise TypeError(f"{hidden_name}, {weight_name} and {bias_name} must share a dtype, got "
                        f"{hidden.dtype}, {weight.dtype}"
                        + ("" if bias is None else f", {bias.dtype}"))
    if hidden.dim() < 1 or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"{weight_name} must have shape ({rows}, H) with H = "
                         f"{hidden_name}.shape[-1], got {hidden_name} {tuple(hidden.shape)} "
                         f"and {weight_name} {tuple(weight.shape)}")
    v = weight.shape[0]
    if nonempty and v == 0:
        raise ValueError(f"{weight_name} must have at least one row (class): the logits would "
                         f"have shape {(*hidden.shape[:-1], 0)}")
    if bias is not None and tuple(bias.shape) != (v,):
        raise ValueError(f"{bias_name} must have shape ({v},), got {tuple(bias.shape)}")
    if target is not None and tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"target must have shape {tuple(hidden.shape[:-1])} ({hidden_name} "
                         f"without its last dimension), got {tuple(target.shape)}")
    return v


def check_labels(target: torch.Tensor, num_classes: int, ignore_index: int,
                 name: str = "target") -> None:
    """Labels in [0, C) or equal to ignore_index. CPU only: on an accelerator the check would
    cost a host sync, and an out-of-range label there raises in the gather instead."""
    if (target.device.type != "cpu" or target.numel() == 0 or torch.compiler.is_compiling()
            or transform_active(target)):
        return  # compiled graphs: the gather (or the kernel) raises on a bad label
    # torch itself serves as the namespace of the shared checks (they use any, min, max and
    # where only), which keeps array_api_compat off this per-call path.
    _checks.labels_in_range(torch, target, num_classes, ignore_index, name)


def check_probabilities(target: torch.Tensor, name: str = "target") -> None:
    """Probability targets in [0, 1]. CPU only (a host read), skipped under tracing."""
    if (target.device.type != "cpu" or target.numel() == 0 or torch.compiler.is_compiling()
            or transform_active(target)):
        return
    _checks.in_unit_interval(torch, target, name)


def refuse_inplace_on_leaf(t: torch.Tensor, name: str) -> None:
    """inplace_backward writes into ``t``'s memory: refuse a leaf that requires grad, and a
    view of one (``leaf[:]``, ``leaf.view(...)``), whose values it would overwrite."""
    base = t._base if t._base is not None else t
    if t.requires_grad and base.is_leaf and base.requires_grad:
        raise ValueError(
            f"inplace_backward=True writes the gradient into the logits' memory, so {name} "
            "must be an intermediate result, not a leaf tensor that requires grad or a view "
            "of one")


# --------------------------------------------------------------------------- torch.func, autocast


_TRANSFORMS_ACTIVE = getattr(torch._C, "_are_functorch_transforms_active", None)
_WRAPPED = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)


def transform_active(*tensors: torch.Tensor | None) -> bool:
    """Whether a torch.func transform (grad, vmap, jacrev...) is running (or, on a torch
    without the global query, wraps an input), or a forward-mode AD level is open.

    The fused autograd Functions and kernel nodes read raw storage, which functorch's wrapper
    tensors do not have, and define no forward-mode derivative (a dual input's tangent would be
    dropped without a word): then the losses run as compositions of differentiable torch ops.
    """
    if torch.compiler.is_compiling():
        return False  # dynamo traces real tensors (and cannot trace the queries below)
    return _transformed(tensors)


def kernel_call(*tensors: torch.Tensor | None) -> bool:
    """Whether an eager call can reach the kernel ops with their C++ nodes: not compiling (the
    ops have no autograd formula dynamo can trace), and no transform as in
    :func:`transform_active`. One compile query instead of two: microseconds count at small
    shapes."""
    return not torch.compiler.is_compiling() and not _transformed(tensors)


def _transformed(tensors: tuple[torch.Tensor | None, ...]) -> bool:
    if _forward_ad._current_level >= 0:
        return True
    if _TRANSFORMS_ACTIVE is not None:
        return _TRANSFORMS_ACTIVE()
    return _WRAPPED is not None and any(
        isinstance(t, torch.Tensor) and _WRAPPED(t) for t in tensors)


def refuse_dual(name: str, *tensors: torch.Tensor | None) -> None:
    """Raise where a loss has no composite path (its collectives run across processes) and an
    input carries a forward-mode tangent, which its autograd Function would drop.

    Raises:
        NotImplementedError: a dual input.
    """
    if _forward_ad._current_level >= 0 and any(
            isinstance(t, torch.Tensor) and _forward_ad.unpack_dual(t).tangent is not None
            for t in tensors):
        raise NotImplementedError(f"{name} has no forward-mode derivative across processes "
                                  "(torch.autograd.forward_ad); use reverse mode")


def autocast_dtype(device_type: str) -> torch.dtype:
    try:
        return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError):  # older torch
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype()
        return torch.get_autocast_gpu_dtype()


_NO_CONTEXT = contextlib.nullcontext()


def autocast_off(device_type: str, enabled: bool | None = None) -> Any:
    """A context that runs our own ops at the dtypes chosen here: autocast would otherwise
    recast the matmuls of the torch-ops paths to half precision behind our back.
    ``enabled``: whether autocast is on for ``device_type``, when the caller knows."""
    if enabled is None:
        enabled = autocast_enabled(device_type)
    return torch.autocast(device_type=device_type, enabled=False) if enabled else _NO_CONTEXT


def loss_dtype(x: torch.Tensor, amp: bool | None = None) -> torch.dtype:
    """The loss dtype: the input's, or float32 under autocast (cross-entropy is on autocast's
    float32 list, so F.cross_entropy returns float32 there). ``amp``: whether autocast is
    on for ``x``'s device, when the caller knows."""
    if amp is None:
        amp = autocast_enabled(x.device.type)
    return torch.float32 if amp and x.dtype in _AUTOCAST_FP32 else x.dtype


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd is recording and one of ``tensors`` requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# --------------------------------------------------------------------------- reductions


def safe_inv(d: torch.Tensor) -> torch.Tensor:
    """``1 / d``, and 0 where ``d`` is 0 (a mean over no counted row is 0, not NaN): the
    project's :func:`crossent._reduce.safe_divide` on tensors."""
    return safe_divide(torch, torch.ones_like(d), d)


def mean_scale(valid: torch.Tensor, reduction: str, acc: torch.dtype) -> torch.Tensor:
    """The scale of the unweighted reduction: 1 / (number of true entries of ``valid``, the
    non-ignored rows) for "mean" (0 when there is none), else 1; 0-d, of dtype ``acc``."""
    if reduction == "mean":
        return safe_inv(valid.sum().to(acc))
    return torch.ones((), dtype=acc, device=valid.device)


def reduce_rows(main: torch.Tensor, z: torch.Tensor, reduction: str, gs: Any,
                zs: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, z part)`` from the per-row main and z-loss terms: per row for "none", summed
    for "sum", and for "mean" the sums times the scales ``gs`` (main) and ``zs`` (z-loss;
    ``gs`` when None)."""
    if reduction == "none":
        return main + z, z
    zsum = z.sum()
    if reduction == "sum":
        return main.sum() + zsum, zsum
    zpart = zsum * (gs if zs is None else zs)
    return main.sum() * gs + zpart, zpart


def finish(loss: torch.Tensor, zpart: torch.Tensor, reduction: str, batch: tuple[int, ...],
           return_z_loss: bool) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The public result: per-row losses reshaped to the batch shape for "none", and the
    z-loss part alongside when asked."""
    if reduction == "none":
        loss, zpart = loss.reshape(batch), zpart.reshape(batch)
    return (loss, zpart) if return_z_loss else loss


# --------------------------------------------------------------------------- linear chunks


def logit_chunks(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 chunk: int) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """Yield ``(i0, i1, hidden[i0:i1], logits of those rows)``, the logits written into one
    reused ``(chunk, V)`` buffer: the only logits memory the chunked losses ever hold."""
    n = hidden.shape[0]
    buf = torch.empty((min(chunk, n), weight.shape[0]), dtype=hidden.dtype,
                      device=hidden.device)
    wt = weight.t()
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        hc, lc = hidden[i0:i1], buf[: i1 - i0]
        if bias is None:
            torch.mm(hc, wt, out=lc)
        else:
            torch.addmm(bias, hc, wt, out=lc)
        yield i0, i1, hc, lc


class ChunkGrads:
    """The gradients of ``hidden @ weight.T + bias`` accumulated chunk by chunk.

    For each chunk of rows ``i0:i1`` (hidden ``hc``, and ``g``: the chunk's logits buffer
    turned into d loss / d logits), :meth:`add` writes ``grad_h[i0:i1] = g @ W`` and
    accumulates ``grad_W += g.T @ hc`` and ``grad_b += g.sum(0)``, for the inputs in ``need``
    (grad_h, grad_W, grad_b). The first chunk writes grad_W and grad_b (no zero fill, no
    read). Reduced-precision weights accumulate grad_W (and grad_b) in float32, and with
    ``acc_h`` grad_h too (a partial sum that is all-reduced afterwards); ``gw_dtype``
    overrides grad_W's accumulation dtype.
    """

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor,
                 need: tuple[bool, bool, bool], *, acc_h: bool = False,
                 gw_dtype: torch.dtype | None = None) -> None:
        self.need_h, self.need_w, self.need_b = need
        self.weight = weight
        self.acc = acc_dtype(hidden.dtype)
        half = hidden.dtype in (torch.float16, torch.bfloat16)
        # gw_dtype = the weight's own half dtype: each chunk is one in-place addmm (no
        # V x H float32 accumulator, no V x H temporary), the running sum rounded per chunk
        self.gw_dtype = gw_dtype or (self.acc if half else hidden.dtype)
        self.gh = torch.empty_like(hidden, dtype=self.acc if half and acc_h else None) \
            if self.need_h else None
        self.gw: torch.Tensor | None = None
        self.gb: torch.Tensor | None = None

    def add(self, i0: int, i1: int, g: torch.Tensor, hc: torch.Tensor) -> None:
        if self.gh is not None:
            out = self.gh[i0:i1]
            if out.dtype == g.dtype:
                torch.mm(g, self.weight, out=out)
            else:
                out.copy_(torch.mm(g, self.weight))
        if self.need_w:
            if self.gw is None:
                self.gw = torch.mm(g.t(), hc).to(self.gw_dtype)
            elif self.gw.dtype == g.dtype:
                self.gw.addmm_(g.t(), hc)
            else:
                self.gw.add_(torch.mm(g.t(), hc))
        if self.need_b:
            part = g.sum(dim=0, dtype=self.acc)
            self.gb = part if self.gb is None else self.gb.add_(part)

    def result(self, bias: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """``(grad_h, grad_W, grad_b)``, None where not needed; grad_W and grad_b in the
        dtypes of ``weight`` and ``bias`` (zeros when no chunk ran); grad_h as accumulated."""
        weight = self.weight
        gw, gb = self.gw, self.gb
        if self.need_w:
            if gw is None:  # no rows at all
                gw = torch.zeros(weight.shape, dtype=self.gw_dtype, device=weight.device)
            gw = gw.to(weight.dtype)
        if self.need_b:
            if gb is None:
                gb = torch.zeros(weight.shape[0], dtype=self.acc, device=weight.device)
            assert bias is not None  # need_b: there is a bias
            gb = gb.to(bias.dtype)
        return self.gh, gw, gb


# --------------------------------------------------------------------------- backward


def bump_version(t: torch.Tensor) -> None:
    """Mark a tensor as modified in place so autograd catches any op that saved it."""
    try:
        torch.autograd.graph.increment_version(t)
    except Exception:  # older torch: no public way; the in-place write stays unchecked
        pass


def scale_by_grad_output(grads: tuple, grad_loss: torch.Tensor, per_row: bool = False
                         ) -> tuple:
    """Gradients computed in the forward, times ``grad_output``, in place (None entries stay
    None). ``per_row`` (reduction "none"): ``grad_loss`` holds one factor per row of each
    gradient. A scalar ``grad_output`` of 1 on CPU (``loss.backward()``, where reading it is
    free) skips the pass."""
    if per_row:
        return tuple(None if g is None else g.mul_(grad_loss.to(g.dtype).unsqueeze(1))
                     for g in grads)
    # Reading a CPU scalar is no device synchronisation; a compiled graph and accelerator
    # tensors always take the multiply (a data-dependent branch would break the graph or
    # wait on the device).
    if not torch.compiler.is_compiling() and grad_loss.is_cpu and grad_loss.item() == 1.0:
        return grads
    return tuple(None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads)



def core_loss(name: str) -> Any:
    """The generic crossent function ``name``, imported on first use (the core package does
    not import torch, and the Modules must not import the core at import time)."""
    import crossent

    fn = getattr(crossent, name, None)
    if fn is None:
        raise NotImplementedError(f"crossent.{name} is not available in this installation")
    return fn
