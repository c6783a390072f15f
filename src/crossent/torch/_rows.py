"""The per-row fused softmax cross-entropy routine shared by the fused and the linear losses.

Contract (``rows_forward``): given a 2-D chunk of logits ``x`` (R, V) whose rows are contiguous
(``x.stride(1) == 1``), class-index targets (R,) or probability targets (R, V), it returns, per
row and in float32 (float64 for float64 logits):

- ``loss``: the main cross-entropy term, label smoothing and class weight included,
  ``(1 - eps) w_y (lse - z_y) + eps / V * sum_c w_c (lse - z_c)`` for a class index y and
  ``sum_c w_c t'_c (lse - z_c)`` with ``t' = (1 - eps) t + eps / V`` for probabilities;
  0 on rows whose target is ``ignore_index``;
- ``z``: the z-loss term ``z_loss * lse**2``, unweighted, 0 on ignored rows;
- ``lse``: ``logsumexp_c z_c``, 0 on ignored rows;

where ``z = softcap * tanh(x / softcap)`` when ``softcap`` is set and ``z = x`` otherwise.
When ``grad_out`` (R, V, dtype of ``x``, contiguous rows; it may be ``x`` itself) is given, it
receives ``grad_scale * d loss / d x + z_grad_scale * d z / d x`` row by row, computed in
float32 and rounded once to the dtype of ``x``; the scales are Python numbers, 0-d tensors, or
(R,) tensors (per-row scales). Ignored rows get a zero gradient.

Three implementations share the contract: the C++ kernel (``_kernel.cpp``: one exp per logit,
one read of the logits and one write of the gradient) on CPU, the Triton kernel
(:mod:`._triton_rows`: an online logsumexp over vocabulary blocks, then the gradient written
over the logits it reads) on CUDA, and a torch-ops version (any device and dtype, and the
fallback where neither kernel serves, e.g. ``CROSSENT_NO_EXT=1`` on CPU or float64 on CUDA).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _ext, _triton_rows

# Without a gradient the torch-ops path works on row blocks of at most this many elements, so
# it needs no N x V temporary.
_NOGRAD_BLOCK = 1 << 22


class RowStats(NamedTuple):
    """Per-row results of :func:`rows_forward` (float32, float64 for float64 logits)."""

    loss: torch.Tensor
    z: torch.Tensor
    lse: torch.Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


#: The dtypes the C++ kernels take.
EXT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

IMPLS = ("auto", "kernel", "triton", "torch")


def check_impl(impl: str, allowed: tuple[str, ...] = IMPLS) -> str:
    """The implementation choice of the fused losses: ``"auto"`` (the C++ kernel on CPU and
    the Triton kernel on CUDA where they can serve, else torch ops; ``CROSSENT_NO_EXT=1``
    makes torch ops the CPU default), ``"kernel"`` (the C++ kernel, an error where it cannot
    serve), ``"triton"`` (the Triton kernel: CUDA tensors, or CPU tensors under
    ``TRITON_INTERPRET=1``; an error where it cannot serve) or ``"torch"`` (torch ops).

    ``allowed``: the values a caller accepts, when it has more choices than these (the
    vocabulary-parallel losses add ``"parallel"``). ValueError naming ``impl`` otherwise."""
    if impl not in allowed:
        raise ValueError(f"impl must be one of {allowed}, got {impl!r}")
    return impl


def use_extension(x: torch.Tensor, impl: str = "auto") -> bool:
    """Whether the C++ kernel serves this tensor under ``impl`` (see :func:`check_impl`)."""
    if impl in ("torch", "triton"):
        return False
    ok = x.is_cpu and x.dtype in EXT_DTYPES and _ext.load()
    if impl == "kernel" and not ok:
        why = _ext.info().get("error") or f"{x.device.type} {x.dtype} tensors"
        raise ValueError(f"impl='kernel': the C++ kernel cannot serve this call ({why}); "
                         "use impl='auto' or 'torch'")
    return ok


def _as_scale(s: float | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if s is None:
        s = 1.0
    if isinstance(s, torch.Tensor):
        return s.to(device=like.device, dtype=acc_dtype(like.dtype))
    return torch.tensor(float(s), device=like.device, dtype=acc_dtype(like.dtype))


def rows_forward(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    grad_out: torch.Tensor | None = None,
    grad_scale: float | torch.Tensor | None = 1.0,
    z_grad_scale: float | torch.Tensor | None = None,
    impl: str = "auto",
) -> RowStats:
    """Per-row loss, z-loss and lse of a (R, V) logits chunk; optionally its gradient.

    See the module docstring for the contract. ``target`` is int64 (R,) or, for probability
    targets, a tensor of ``x``'s shape and dtype. ``impl`` chooses the implementation
    (:func:`check_impl`).
    """
    if z_grad_scale is None:
        z_grad_scale = grad_scale
    if use_extension(x, impl):
        gs: torch.Tensor | None = None
        zs: torch.Tensor | None = None
        if grad_out is not None:
            gs, zs = _as_scale(grad_scale, x), _as_scale(z_grad_scale, x)
        loss, z, lse = torch.ops.crossent_ext.rows(
            x, target, weight, grad_out, gs, zs, float(label_smoothing), float(z_loss),
            float(softcap or 0.0), int(ignore_index))
        return RowStats(loss, z, lse)
    if _triton_rows.serves(x, impl):
        return RowStats(*_triton_rows.rows(
            x, target, weight, grad_out, grad_scale if grad_out is not None else None,
            z_grad_scale if grad_out is not None else None, label_smoothing, z_loss, softcap,
            ignore_index))
    if grad_out is None:
        return _rows_torch_nograd(x, target, weight, ignore_index, label_smoothing, z_loss,
                                  softcap)
    return _rows_torch(x, target, weight, ignore_index, label_smoothing, z_loss, softcap,
                       grad_out, grad_scale, z_grad_scale)


def _rows_torch_nograd(x, target, weight, ignore_index, eps, zc, cap) -> RowStats:
    r, v = x.shape
    step = max(1, _NOGRAD_BLOCK // max(v, 1))
    if r <= step:
        return _rows_torch(x, target, weight, ignore_index, eps, zc, cap, None, None, None)
    parts = [
        _rows_torch(x[i:i + step], target[i:i + step], weight, ignore_index, eps, zc, cap,
                    None, None, None)
        for i in range(0, r, step)
    ]
    return RowStats(*(torch.cat(p) for p in zip(*parts, strict=True)))


def _rows_torch(x, target, weight, ignore_index, eps, zc, cap, grad_out, gs, zs) -> RowStats:
    """Torch-ops version of the row routine: same math, a few more passes over memory.

    The exponentials are computed straight into ``grad_out`` when it has the accumulation
    dtype, and turned into the gradient there, so no other N x V buffer is needed; every
    quantity that reads the logits is taken before, since ``grad_out`` may be ``x`` itself.
    """
    acc = acc_dtype(x.dtype)
    r, v = x.shape
    prob = target.is_floating_point()
    z = x.to(acc)  # x itself for float32/float64 logits: read only until grad_out is written
    t = None
    if cap:
        t = torch.tanh(z / cap)
        z = t * cap
    w = None if weight is None else weight.to(device=x.device, dtype=acc)
    wsum = float(v) if w is None else w.sum()
    m = z.amax(dim=1, keepdim=True)
    # A row of -inf only: shift by 0 so exp gives 0 rather than NaN, as the kernel does.
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    valid: torch.Tensor | None = None
    ysafe: torch.Tensor | None = None
    q: torch.Tensor | None = None
    if prob:
        q = target.to(acc)
        if eps:
            q = q * (1.0 - eps) + eps / v
        if w is not None:
            q = q * w
        tw = q.sum(dim=1)
        qz = (q * z).sum(dim=1)
    else:
        valid = target != ignore_index
        ysafe = torch.where(valid, target, torch.zeros_like(target)).unsqueeze(1)
        zy = z.gather(1, ysafe).squeeze(1)
        wy = torch.ones(r, dtype=acc, device=x.device) if w is None else w[ysafe.squeeze(1)]
        if eps:
            # eps / V * sum_c w_c z_c, each term scaled before the sum: near the float limit
            # the plain sum of the logits overflows where the loss is representable
            ew = torch.full((v,), eps / v, dtype=acc, device=x.device) if w is None \
                else w * (eps / v)
            sz = z @ ew
    if grad_out is not None and grad_out.dtype == acc:
        e = torch.sub(z, m, out=grad_out)
        e.exp_()
    else:
        e = torch.exp(z - m)
    s = e.sum(dim=1)
    lse = m.squeeze(1) + torch.log(s)
    if prob:
        main = tw * lse - qz
    else:
        # each product before the difference: near the float limit lse - z_y or wsum * lse
        # overflow where the loss itself is representable
        assert valid is not None and ysafe is not None  # set with the class labels above
        a = (1.0 - eps) * wy
        main = a * lse - a * zy
        if eps:
            main = main + ((eps / v) * wsum) * lse - sz
        zero = torch.zeros_like(lse)
        main = torch.where(valid, main, zero)
        lse = torch.where(valid, lse, zero)
    zrow = zc * lse * lse
    if grad_out is not None:
        gs = _as_scale(gs, x)
        zs = _as_scale(zs, x)
        gs_r = gs.reshape(-1, 1) if gs.dim() else gs
        if prob:
            coef_p = gs * tw
        else:
            coef_p = gs * ((1.0 - eps) * wy + (eps / v) * wsum)
        coef_p = coef_p + zs * 2.0 * zc * lse
        g = e.mul_((coef_p / s).unsqueeze(1))  # the exponentials become the gradient in place
        if q is not None:
            g.sub_(gs_r * q)
        else:
            assert ysafe is not None
            if eps:
                g.sub_(gs_r * (eps / v) * (1.0 if w is None else w))
            g.scatter_add_(1, ysafe, -(gs * (1.0 - eps) * wy).expand(r).unsqueeze(1))
        if t is not None:
            g.mul_(1.0 - t * t)
        if valid is not None:
            g.masked_fill_(~valid.unsqueeze(1), 0.0)
        if g is not grad_out:
            grad_out.copy_(g)
    return RowStats(main, zrow, lse)
