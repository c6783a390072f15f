"""The softmax cross-entropy row routine as a Triton kernel: ``impl="triton"``, the default for
CUDA tensors where Triton imports.

It implements the contract of :func:`._rows.rows_forward` (the per-row loss, z-loss and lse
of a (R, V) chunk of logits, and optionally its gradient written into ``grad_out``, which may
be the logits themselves) with one program per row and two passes over blocks of the
vocabulary:

1. an online max / sum-exp (the running sum rescaled whenever the max grows), with the
   target's terms (``z_y``, the smoothing sums, ``sum_c q_c z_c`` for probabilities) read on
   the way; the loss, z-loss and lse follow from them;
2. with a gradient, ``scale * (softmax - target)`` (softcap's derivative and the z-loss
   term folded into per-row scalars) written block by block over the logits it reads.

float16 / bfloat16 / float32 logits are read in their dtype and computed in float32; the
gradient is rounded once to the logits' dtype. Nothing is read back to the host: the class
weights' sum, the per-row scales and every option stay on the device or are kernel
arguments, so a call never synchronises. A class index out of range (which the CPU paths
reject before computing) gives a NaN loss on its row instead of a read out of bounds.

float64 logits are not served (Triton passes scalar arguments in float32, which would cap the
options' precision below float64): ``impl="auto"`` runs them on torch ops.

Blocks hold up to 4096 classes, with one warp per 512 (16 values a thread: ptxas keeps every
variant in registers). The launcher is the torch op ``crossent_triton::rows``, with a fake
(shape-only) version, so ``torch.compile(fullgraph=True)`` keeps it as one node.

``TRITON_INTERPRET=1`` (set before Triton is first imported) runs the same kernel on CPU
tensors in Triton's interpreter: that is how the test suite checks it without a GPU, beside
compiling every variant ahead of time for sm_80 and sm_90 with the ptxas Triton ships.
"""

from __future__ import annotations

import os
from typing import Any

import torch

# Elements per block of a row (smaller vocabularies take the next power of two), and one warp
# per 512 of them: 16 values per thread, which ptxas fits in registers (about 125 for every
# variant, no spills, for sm_80 and sm_90; 32 per thread spill to the stack).
MAX_BLOCK = 4096

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _probe() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # not installed, or a build that does not match this torch
        return f"{type(exc).__name__}: {exc}"
    return None


# Decided once, at import (torch.compile then traces these lookups as constants): whether
# Triton imports, and whether it interprets, which Triton itself reads when a kernel is
# defined. (Importing Triton here costs nothing extra: torch's compiler stack imports it
# whenever it is installed.)
_IMPORT_ERROR = _probe()
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_DEVICE_OK: dict[int, bool] = {}


def import_error() -> str | None:
    """Why Triton does not import here (None when it does)."""
    return _IMPORT_ERROR


def available() -> bool:
    """Whether Triton imports here."""
    return _IMPORT_ERROR is None


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``), on CPU."""
    return INTERPRET


def _device_ok(index: int) -> bool:
    ok = _DEVICE_OK.get(index)
    if ok is None:
        if torch.compiler.is_compiling():
            return True  # asked for the first time inside a trace: the eager call decides
        # Triton's NVIDIA backend compiles for compute capability 7.0 (Volta) and newer
        ok = bool(torch.version.hip) or torch.cuda.get_device_capability(index) >= (7, 0)
        _DEVICE_OK[index] = ok
    return ok


def why_not(x: torch.Tensor) -> str | None:
    """Why the Triton kernel cannot serve ``x``'s rows (None when it can)."""
    err = import_error()
    if err is not None:
        return f"Triton does not import ({err})"
    if x.dtype not in DTYPES:
        return f"it serves float16, bfloat16 and float32 logits, not {x.dtype}"
    if x.is_cuda:
        return None if _device_ok(x.device.index or 0) else "this GPU is older than sm_70"
    if x.is_cpu and interpreting():
        return None
    return (f"it runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1), not on "
            f"{x.device.type} tensors")


def serves(x: torch.Tensor, impl: str) -> bool:
    """Whether the Triton kernel runs ``x``'s rows under ``impl``: always for ``"triton"``
    (a ValueError naming the reason where it cannot), for ``"auto"`` on CUDA tensors it can
    serve, never otherwise."""
    if impl == "triton":
        why = why_not(x)
        if why is not None:
            raise ValueError(f"impl='triton' cannot serve this call: {why}; use impl='auto' "
                             "or 'torch'")
        return True
    return impl == "auto" and x.is_cuda and why_not(x) is None


def _kernel() -> Any:
    """The kernel module, imported at the first launch (Triton then compiles each variant of
    the kernel the first time it runs, and caches it on disk)."""
    from . import _triton_kernels

    return _triton_kernels


def warps(block: int) -> int:
    """Warps per program for a block of ``block`` elements (see ``MAX_BLOCK``)."""
    return max(1, min(8, block // 512))


def _scale(s: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    """A gradient scale (the op's ``Tensor?``: None is 1) as kernel arguments: (pointer, row
    stride, is-a-pointer)."""
    if s is None:
        return x, 0, False
    s = s.to(device=x.device, dtype=torch.float32)
    if s.dim() and s.stride(0) != 1:
        s = s.contiguous()
    return s, (1 if s.dim() else 0), True


def _launch(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
            grad_out: torch.Tensor | None, grad_scale: Any, z_scale: Any,
            label_smoothing: float, z_loss: float, softcap: float,
            ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op's implementation: one program per row; the constexpr flags pick the variant."""
    r, v = x.shape
    loss = torch.empty(r, dtype=torch.float32, device=x.device)
    zrow = torch.empty_like(loss)
    lse = torch.empty_like(loss)
    if r == 0:
        return loss, zrow, lse
    kernels = _kernel()
    prob = target.is_floating_point()
    if prob and target.stride(1) != 1:
        target = target.contiguous()
    if weight is not None:
        weight = weight.to(device=x.device, dtype=torch.float32).contiguous()
    gs, gs_stride, gs_ptr = _scale(grad_scale, x)
    zs, zs_stride, zs_ptr = _scale(z_scale if z_scale is not None else grad_scale, x)
    block = min(MAX_BLOCK, kernels.triton.next_power_of_2(v))
    g = grad_out if grad_out is not None else x
    args = (x, x.stride(0), target, target.stride(0) if prob else 0,
            weight if weight is not None else x, g, g.stride(0),
            gs, gs_stride, zs, zs_stride, loss, zrow, lse,
            v, float(label_smoothing), float(z_loss), float(softcap or 1.0), int(ignore_index))
    meta = dict(PROB=prob, HAS_W=weight is not None, CAP=bool(softcap),
                SMOOTH=bool(label_smoothing), GRAD=grad_out is not None,
                GS_PTR=gs_ptr, ZS_PTR=zs_ptr, BLOCK=block,
                num_warps=warps(block), enable_fp_fusion=True)
    if x.is_cpu:
        # The interpreter evaluates both sides of every tl.where in NumPy, so the side a
        # row does not take (log 0 on an ignored row, 0 / 0 in tanh at 0) would raise
        # NumPy's floating-point warnings; the kernel's results never contain them.
        import numpy as np

        with np.errstate(all="ignore"):
            kernels.rows_kernel[(r,)](*args, **meta)
    else:
        with torch.cuda.device(x.device):
            kernels.rows_kernel[(r,)](*args, **meta)
    return loss, zrow, lse


def _library() -> Any:
    """Register the launcher as the torch op ``crossent_triton::rows`` (same schema as the C++
    kernel's ``crossent_ext::rows``), with a shape-only version for torch.compile: a compiled
    graph keeps the call as one opaque op instead of tracing into Triton's launcher.
    Registered at import (a library cannot be created inside a trace); it imports no Triton."""
    lib = torch.library.Library("crossent_triton", "DEF")
    lib.define(
        "rows(Tensor logits, Tensor target, Tensor? weight, Tensor(a!)? grad_out, "
        "Tensor? grad_scale, Tensor? z_scale, float label_smoothing, float z_loss, "
        "float softcap, int ignore_index) -> (Tensor, Tensor, Tensor)")
    for key in ("CUDA", "CPU"):
        lib.impl("rows", _launch, key)

    @torch.library.register_fake("crossent_triton::rows", lib=lib)
    def _(logits, target, weight, grad_out, grad_scale, z_scale, label_smoothing, z_loss,
          softcap, ignore_index):
        r = logits.shape[0]
        return (logits.new_empty((r,), dtype=torch.float32),
                logits.new_empty((r,), dtype=torch.float32),
                logits.new_empty((r,), dtype=torch.float32))

    return lib


_LIB = _library()


def rows(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
         grad_out: torch.Tensor | None, grad_scale: Any, z_scale: Any,
         label_smoothing: float, z_loss: float, softcap: float | None,
         ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The row routine on Triton (see :func:`._rows.rows_forward` for the contract); the
    scales are None (1), Python numbers or float tensors, 0-d or one per row."""
    gs = _as_tensor(grad_scale, x)
    zs = gs if z_scale is None else _as_tensor(z_scale, x)
    return torch.ops.crossent_triton.rows(x, target, weight, grad_out, gs, zs,
                                          float(label_smoothing), float(z_loss),
                                          float(softcap or 0.0), int(ignore_index))


def _as_tensor(s: Any, x: torch.Tensor) -> torch.Tensor | None:
    if s is None or isinstance(s, torch.Tensor):
        return s
    # a fill on the device, not a copy from the host (which would synchronise)
    return torch.full((), float(s), dtype=torch.float32, device=x.device)
