"""Build and load the C++ kernels at first use: ``_kernel.cpp`` (softmax cross-entropy rows),
``_binary_kernel.cpp`` (the element-wise sigmoid losses) and ``_kl_margin_kernel.cpp``
(distillation and multi-class margin rows), sharing ``_vec.h`` and the autograd node of
``_closed_form_node.h``.

The kernels are compiled with the system C++ compiler straight into one shared library of torch
ops (``torch.ops.crossent_ext.*``): no ninja and no pybind, so it needs only g++ (or ``$CXX``)
and the headers that ship inside the torch wheel. The library is cached in a per-user
directory keyed by the source, torch, the compiler flags and the CPU capability, so a test
session compiles it at most once; concurrent processes (pytest-xdist) serialise on a file lock
and the library is moved into place atomically.

Next to the library a build record (``crossent_ext.so.sha256``: its size and SHA-256) is
written, and a cached library is loaded only when it matches the record: mapping a file cut
short (a full disk, an interrupted copy of the cache) kills the process with SIGBUS, which no
``except`` can catch. A library that does not match is rebuilt; if that fails, the torch-ops
path runs and :func:`crossent.torch.backend_info` says why.

Environment:
    ``CROSSENT_NO_EXT=1``    never build or load it (the torch-ops path runs instead).
    ``CROSSENT_CACHE_DIR``   where to cache it (default ``$XDG_CACHE_HOME/crossent`` or
                             ``~/.cache/crossent``).
    ``CXX``                  the compiler (default ``g++``, then ``c++``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from .._native_build import build_locked, check_library, compiler, disabled

# the cache root's name here, so tests and tools reach it through this module
from .._native_build import cache_root as _cache_root

_HERE = Path(__file__).parent
_SOURCES = (_HERE / "_kernel.cpp", _HERE / "_binary_kernel.cpp", _HERE / "_kl_margin_kernel.cpp")
_HEADERS = (_HERE / "_vec.h", _HERE / "_closed_form_node.h")
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {"loaded": None, "error": None, "path": None, "seconds": None,
                          "rebuilt": None, "build_seconds": None}


def _capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older torch: assume no vector extension rather than guess
        return "DEFAULT"


def _flags(capability: str) -> list[str]:
    """Vector flags matching the ATen capability torch itself dispatches to on this CPU.

    Explicit ISA flags rather than -march=native: the cache may sit on a shared home directory,
    and the capability is part of the cache key, so a library never runs on a CPU without it.
    """
    if capability.startswith("AVX512"):
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if capability == "AVX2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return ["-DCPU_CAPABILITY=DEFAULT"]


# What a build took on the project's 2-core machines (the three sources compiled in parallel);
# printed as the expected wait before a build starts.
_TYPICAL_BUILD_S = 60


def _build(cxx: str, out: Path, flags: list[str]) -> None:
    """Compile the sources in parallel (one compiler per file), then link them."""
    from torch.utils import cpp_extension

    torch_lib = str(Path(torch.__file__).parent / "lib")
    compile_cmd = [
        cxx, "-O3", "-std=c++17", "-fPIC", "-fopenmp", "-DNDEBUG",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *flags,
        *[f"-I{p}" for p in cpp_extension.include_paths()],
    ]
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        objects = [Path(tmp) / f"{src.stem}.o" for src in _SOURCES]
        jobs = [subprocess.Popen([*compile_cmd, "-c", str(src), "-o", str(obj)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for src, obj in zip(_SOURCES, objects, strict=True)]
        failed = []
        for src, job in zip(_SOURCES, jobs, strict=True):
            _, err = job.communicate()
            if job.returncode != 0:
                failed.append(f"{src.name}:\n{err[-3000:]}")
        if failed:
            raise RuntimeError(f"{' '.join(compile_cmd)} -c ...\n" + "\n".join(failed))
        link_cmd = [cxx, "-shared", "-fopenmp", *map(str, objects), "-o", str(out),
                    f"-L{torch_lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_lib}"]
        proc = subprocess.run(link_cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(link_cmd)}\n{proc.stderr[-4000:]}")


# torch.compile calls this at trace time and keeps the answer as a constant (its lock, file
# checks and build are host work that dynamo could not trace without a graph break).
@torch.compiler.assume_constant_result
def load() -> bool:
    """Build (once per cache key) and load the kernel; False if unavailable, with the reason
    kept for :func:`crossent.torch.backend_info`. Never raises."""
    if _STATE["loaded"] is not None:
        return _STATE["loaded"]
    with _LOCK:
        if _STATE["loaded"] is not None:
            return _STATE["loaded"]
        ok = _load()
        _STATE["loaded"] = ok
        return ok


def _load() -> bool:
    import time

    if disabled():
        _STATE["error"] = "disabled by CROSSENT_NO_EXT"
        return False
    if sys.platform != "linux":
        _STATE["error"] = f"the C++ kernel is built on Linux only (platform {sys.platform})"
        return False
    cxx = compiler()
    if cxx is None:
        _STATE["error"] = "no C++ compiler found (set CXX)"
        return False
    try:
        source = b"\0".join(p.read_bytes() for p in (*_SOURCES, *_HEADERS))
    except OSError as exc:
        _STATE["error"] = f"kernel source missing: {exc}"
        return False
    cap = _capability()
    flags = _flags(cap)
    key = hashlib.sha256(
        b"\0".join([source, torch.__version__.encode(), sys.version.encode(), cap.encode(),
                    " ".join(flags).encode(), cxx.encode()])
    ).hexdigest()[:16]
    cache = _cache_root() / f"torch-ext-{key}"
    lib = cache / "crossent_ext.so"
    t0 = time.perf_counter()
    rebuilt_because = None
    try:
        # loaded in this process already
        already = hasattr(torch.ops.crossent_ext, "fused_pullback")
        problem = None if already else check_library(lib)
        if problem is not None:
            if lib.exists():
                rebuilt_because = f"the cached {lib} failed validation: {problem}"
            _STATE["build_seconds"] = build_locked(
                lib, lambda out: _build(cxx, out, flags),
                f"compiling the C++ CPU kernel, once for this torch and CPU (about "
                f"{_TYPICAL_BUILD_S} s; cached in {cache})")
        if not already:
            torch.ops.load_library(str(lib))
        _register_fake()
    except Exception as exc:  # any failure: fall back to the torch-ops path, say why once
        _STATE["error"] = f"{type(exc).__name__}: {exc}"
        if rebuilt_because:
            _STATE["error"] = f"{rebuilt_because}; rebuilding it failed: {_STATE['error']}"
        warnings.warn(
            "crossent: the C++ cross-entropy kernel is unavailable, using the torch-ops path "
            f"({_STATE['error'].splitlines()[0][:300]})",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    _STATE["path"] = str(lib)
    _STATE["seconds"] = round(time.perf_counter() - t0, 3)
    _STATE["rebuilt"] = rebuilt_because
    return True


def _register_fake() -> None:
    """Shape-only versions of the ops so torch.compile can trace through calls to them."""
    try:
        @torch.library.register_fake("crossent_ext::rows")
        def _(logits, target, weight, grad_out, grad_scale, z_scale, label_smoothing, z_loss,
              softcap, ignore_index):
            acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
            r = logits.shape[0]
            return (logits.new_empty((r,), dtype=acc), logits.new_empty((r,), dtype=acc),
                    logits.new_empty((r,), dtype=acc))

        def loss_and_z(logits, reduction, acc_out):  # what fused and fused_loss return
            shape = (logits.shape[0],) if reduction == 0 else ()
            dtype = logits.dtype
            if acc_out:
                dtype = torch.float64 if dtype == torch.float64 else torch.float32
            return logits.new_empty(shape, dtype=dtype), logits.new_empty(shape, dtype=dtype)

        @torch.library.register_fake("crossent_ext::fused")
        def _(logits, target, weight, grad_out, label_smoothing, z_loss, softcap, ignore_index,
              reduction, acc_out=False):
            return loss_and_z(logits, reduction, acc_out)

        @torch.library.register_fake("crossent_ext::binary")
        def _(logits, targets, weight, pos_weight, focal, alpha, gamma, reduction, want_grad):
            loss = logits.new_empty(logits.shape if reduction == 0 else ())
            return loss, logits.new_empty(logits.shape if want_grad else (0,))

        @torch.library.register_fake("crossent_ext::distill_rows")
        def _(student, teacher, temperature, reduction, want_grad):
            loss = student.new_empty((student.shape[0],) if reduction == 0 else ())
            return loss, student.new_empty(student.shape if want_grad else (0,))

        @torch.library.register_fake("crossent_ext::multi_margin_rows")
        def _(logits, labels, weight, p, margin, reduction, want_grad):
            loss = logits.new_empty((logits.shape[0],) if reduction == 0 else ())
            return loss, logits.new_empty(logits.shape if want_grad else (0,))

        @torch.library.register_fake("crossent_ext::fused_loss")
        def _(logits, target, weight, label_smoothing, z_loss, softcap, ignore_index,
              reduction, acc_out):
            return loss_and_z(logits, reduction, acc_out)

        @torch.library.register_fake("crossent_ext::binary_loss")
        def _(logits, targets, weight, pos_weight, focal, alpha, gamma, reduction):
            return logits.new_empty(logits.shape if reduction == 0 else ())

        @torch.library.register_fake("crossent_ext::distill_loss")
        def _(student, teacher, temperature, reduction):
            return student.new_empty((student.shape[0],) if reduction == 0 else ())

        @torch.library.register_fake("crossent_ext::multi_margin_loss")
        def _(logits, labels, weight, p, margin, reduction):
            return logits.new_empty((logits.shape[0],) if reduction == 0 else ())

        @torch.library.register_fake("crossent_ext::advise_hugepage")
        def _(t):
            return None
    except Exception:  # already registered, or an older torch: compile then graph-breaks
        pass


# The kernels' reduction argument, and back (a pullback op receives the code).
REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}
REDUCTION_NAMES = {code: name for name, code in REDUCTION_CODES.items()}

_PULLBACK_LIB: list[Any] = []  # the Library object that keeps the registrations alive
_REGISTERED: set[int] = set()  # the kernel tables already registered, by identity


def pullback_ops(kernels: dict[str, Any]) -> Any:
    """``torch.ops.crossent_ext``, once ``kernels`` (op name -> Python function, a module's
    constant table) are registered as the ``CompositeImplicitAutograd`` kernels of the
    ``*_pullback`` ops: those the C++ closed-form nodes call under ``create_graph``, the loss
    written in differentiable torch ops so that autograd records the second-order graph. The
    first call per table registers it; the others cost one set lookup."""
    if id(kernels) not in _REGISTERED:
        if not _PULLBACK_LIB:
            _PULLBACK_LIB.append(torch.library.Library("crossent_ext", "IMPL"))
        for name, fn in kernels.items():
            _PULLBACK_LIB[0].impl(name, fn, "CompositeImplicitAutograd")
        _REGISTERED.add(id(kernels))
    return torch.ops.crossent_ext


def info() -> dict[str, Any]:
    return {"available": bool(_STATE["loaded"]), "error": _STATE["error"],
            "library": _STATE["path"], "load_seconds": _STATE["seconds"],
            "rebuilt": _STATE["rebuilt"], "build_seconds": _STATE["build_seconds"]}
