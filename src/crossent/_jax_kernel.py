"""The CPU kernel of softmax cross-entropy for JAX, registered as the loss's JAX path
(``@loss(jax=...)``).

On CPU, ``crossent.softmax_cross_entropy`` of ``(N, C)`` float32/float64 logits and integer
labels, without class or sample weights, masks or smoothing, is one XLA FFI custom call
(``_jax_ce.cpp``, compiled with the system C++ compiler at first use and cached as the torch
kernels are, see :mod:`crossent._native_build`): the loss, and under differentiation the loss
and its closed-form gradient ``scale (softmax(s) - onehot(y))`` from one exp per logit. XLA's
own program for the same loss (optax's, or the definition traced) takes three passes and two
exps per logit.

Differentiation: the loss is a ``jax.custom_jvp`` whose tangent is ``<gradient, ds>``, with the
gradient from the kernel; reverse mode transposes that into ``cotangent * gradient``, with no
further pass under ``jit`` (the cotangent of ``value_and_grad`` is the constant 1). The
(loss, gradient) pair is itself a ``custom_jvp``, whose gradient's tangent (the Hessian-vector
product) is the definition's own gradient differentiated by JAX, so second and higher
derivatives, ``jax.hessian`` and forward mode all hold. ``vmap`` batches the custom call (each
leading index one call of the loss). Other platforms lower the definition instead
(``jax.lax.platform_dependent``): a GPU or TPU program never sees the CPU target.

Environment: ``CROSSENT_NO_EXT=1`` never builds or loads it (the definition runs).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import _checks
from . import _native_build as B

_SOURCE = Path(__file__).with_name("_jax_ce.cpp")
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"loaded": None, "error": None, "path": None, "build_seconds": None}
_REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}
_TARGETS = {"crossent_ce": "CrossentCe", "crossent_ce_grad": "CrossentCeGrad"}


def _flags() -> list[str]:
    """AVX2 + FMA where the CPU has them (read from /proc/cpuinfo; the flags are part of the
    cache key, so a library never runs on a CPU without them); otherwise the compiler's
    baseline, where the vector code runs as SSE (or NEON) pairs."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= set(flags) else []


def _build(cxx: str, out: Path, include: str, flags: list[str]) -> None:
    import subprocess

    cmd = [cxx, "-O3", "-std=c++17", "-ffp-contract=fast", "-fPIC", "-shared", "-DNDEBUG",
           *flags, "-isystem", include, str(_SOURCE), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{proc.stderr[-4000:]}")


def load() -> bool:
    """Build (once per cache key), load and register the kernel; False if unavailable, with
    the reason in :func:`info`. Never raises."""
    if _STATE["loaded"] is not None:
        return bool(_STATE["loaded"])
    with _LOCK:
        if _STATE["loaded"] is None:
            _STATE["loaded"] = _load()
        return bool(_STATE["loaded"])


def _load() -> bool:
    if B.disabled():
        _STATE["error"] = "disabled by CROSSENT_NO_EXT"
        return False
    if sys.platform != "linux":
        _STATE["error"] = f"the C++ kernel is built on Linux only (platform {sys.platform})"
        return False
    cxx = B.compiler()
    if cxx is None:
        _STATE["error"] = "no C++ compiler found (set CXX)"
        return False
    try:
        import jax
        import jax.ffi
        import jaxlib
    except ImportError as exc:  # not a failure: a JAX without the FFI module (before 0.4.31)
        _STATE["error"] = f"this JAX has no jax.ffi ({exc})"
        return False
    try:
        include = jax.ffi.include_dir()
        flags = _flags()
        key = hashlib.sha256(b"\0".join([
            _SOURCE.read_bytes(), jaxlib.__version__.encode(), " ".join(flags).encode(),
            cxx.encode()])).hexdigest()[:16]
        lib = B.cache_root() / f"jax-ext-{key}" / "crossent_jax.so"
        if B.check_library(lib) is not None:
            _STATE["build_seconds"] = B.build_locked(
                lib, lambda out: _build(cxx, out, include, flags),
                f"compiling the C++ CPU kernel for JAX, once for this jaxlib and CPU (about "
                f"5 s; cached in {lib.parent})")
        handle = ctypes.cdll.LoadLibrary(str(lib))
        for target, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(handle, symbol)),
                                        platform="cpu")
    except Exception as exc:  # any failure: the definition serves every call, say why once
        _STATE["error"] = f"{type(exc).__name__}: {exc}"
        warnings.warn("crossent: the C++ kernel for JAX is unavailable, using the definition "
                      f"({_STATE['error'].splitlines()[0][:300]})", RuntimeWarning,
                      stacklevel=3)
        return False
    _STATE["path"] = str(lib)
    return True


def info() -> dict[str, Any]:
    return {"available": bool(_STATE["loaded"]), "error": _STATE["error"],
            "library": _STATE["path"], "build_seconds": _STATE["build_seconds"]}


# --- the loss ---------------------------------------------------------------------------------


def _call(with_grad: bool, z: Any, y: Any, reduction: str, ignore_index: int) -> Any:
    import jax

    value = jax.ShapeDtypeStruct(y.shape if reduction == "none" else y.shape[:-1], z.dtype)
    shapes = (value, jax.ShapeDtypeStruct(z.shape, z.dtype)) if with_grad else value
    call = jax.ffi.ffi_call("crossent_ce_grad" if with_grad else "crossent_ce", shapes,
                            vmap_method="broadcast_all")
    return call(z, y, reduction=np.int64(_REDUCTION_CODES[reduction]),
                ignore_index=np.int64(ignore_index))


def _contract(g: Any, dz: Any, reduction: str) -> Any:
    """The loss's tangent ``<gradient, dz>``: per row for "none", in all for a reduction."""
    import jax.numpy as jnp

    return jnp.sum(g * dz, axis=-1) if reduction == "none" else jnp.sum(g * dz)


def _definition_gradient(z: Any, y: Any, reduction: str, ignore_index: int) -> Any:
    from .classification import softmax_cross_entropy

    _, pullback = softmax_cross_entropy.with_pullback(("logits",), z, y, reduction=reduction,
                                                      ignore_index=ignore_index)
    assert pullback is not None  # a definition asked for a gradient returns a pullback
    return pullback(None)["logits"]


@functools.cache
def _functions() -> tuple[Any, Any]:
    """The loss and the (loss, gradient) pair as custom_jvp functions (made once: JAX is
    imported only by a call on JAX arrays)."""
    import jax

    @functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
    def value(z: Any, y: Any, reduction: str, ignore_index: int) -> Any:
        return _call(False, z, y, reduction, ignore_index)

    @functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
    def value_and_grad(z: Any, y: Any, reduction: str, ignore_index: int) -> Any:
        return tuple(_call(True, z, y, reduction, ignore_index))

    @value.defjvp
    def _(reduction: str, ignore_index: int, primals: Any, tangents: Any) -> Any:
        (z, y), (dz, _) = primals, tangents
        v, g = value_and_grad(z, y, reduction, ignore_index)
        return v, _contract(g, dz, reduction)

    @value_and_grad.defjvp
    def _(reduction: str, ignore_index: int, primals: Any, tangents: Any) -> Any:
        (z, y), (dz, _) = primals, tangents
        v, g = value_and_grad(z, y, reduction, ignore_index)
        # the Hessian-vector product: the definition's gradient, differentiated by JAX
        _, dg = jax.jvp(lambda s: _definition_gradient(s, y, reduction, ignore_index),
                        (z,), (dz,))
        return (v, g), (_contract(g, dz, reduction), dg)

    return value, value_and_grad


def softmax_cross_entropy(logits: Any, targets: Any, *, axis: Any = -1, weight: Any = None,
                          sample_weight: Any = None, ignore_index: Any = -100,
                          label_smoothing: Any = 0.0, where: Any = None,
                          reduction: Any = "mean") -> Any:
    """The kernel's path of :func:`crossent.softmax_cross_entropy` on JAX arrays (same
    signature): ``(N, C)`` float32/float64 logits, ``(N,)`` integer labels, no options beyond
    ``ignore_index`` and the reduction; ``NotImplemented`` for every other call (the
    definition serves it, and words any error)."""
    import jax
    import jax.numpy as jnp

    if not (isinstance(logits, jax.Array) and isinstance(targets, (jax.Array, np.ndarray))
            and logits.dtype in (jnp.float32, jnp.float64)
            and jnp.issubdtype(targets.dtype, jnp.integer)
            and _checks.plain_softmax_call(logits, targets, axis, weight, sample_weight,
                                           ignore_index, label_smoothing, where, reduction)
            and load()):
        return NotImplemented
    from ._array import concrete

    y = jnp.asarray(targets)
    if concrete(y):  # eager labels are checked, with the definition's words
        _checks.class_labels(jnp, y, logits, 1, ignore_index)
    if y.dtype not in (jnp.int32, jnp.int64):
        y = y.astype(jnp.int32)  # every other integer dtype's values fit
    value, _ = _functions()

    def generic(z: Any, labels: Any) -> Any:
        from . import _jax_autodiff
        from .classification import softmax_cross_entropy as sce
        from .gradients import _spec_of

        # the definition, with this call's own options
        return _jax_autodiff.apply(_spec_of(sce), [z, labels],
                                   {"axis": axis, "weight": weight,
                                    "sample_weight": sample_weight,
                                    "ignore_index": ignore_index,
                                    "label_smoothing": label_smoothing, "where": where,
                                    "reduction": reduction})

    return jax.lax.platform_dependent(
        logits, y, cpu=lambda z, labels: value(z, labels, reduction, ignore_index),
        default=generic)
