"""Building crossent's C++ kernels at first use, without any framework: the compiler, the
per-user cache, the build record that guards a cached library, and the locked build.

Used by the torch kernels (:mod:`crossent.torch._ext`) and the JAX kernel
(:mod:`crossent._jax_kernel`). A library is cached in a per-user directory keyed by what it
was built from; concurrent processes (pytest-xdist workers, DDP ranks) serialise on a file
lock and the library is moved into place atomically. Next to it a build record (its size and
SHA-256) is written, and a cached library is used only when it matches the record: mapping a
file cut short (a full disk, an interrupted copy of the cache) kills the process with SIGBUS,
which no ``except`` can catch.

Environment:
    ``CROSSENT_CACHE_DIR``   where to cache (default ``$XDG_CACHE_HOME/crossent`` or
                             ``~/.cache/crossent``).
    ``CXX``                  the compiler (default ``g++``, then ``c++``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def compiler() -> str | None:
    """The C++ compiler: ``$CXX``, else ``g++``, else ``c++``; None when there is none."""
    for cand in (os.environ.get("CXX"), "g++", "c++"):
        if cand and shutil.which(cand):
            return cand
    return None


def cache_root() -> Path:
    env = os.environ.get("CROSSENT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "crossent"


def disabled() -> bool:
    """``CROSSENT_NO_EXT`` set (to anything but 0): never build or load a kernel."""
    return os.environ.get("CROSSENT_NO_EXT", "") not in ("", "0")


def say(message: str) -> None:
    """One line on stderr: a build or a wait on another process's build is the only thing
    the kernels ever print (minutes of silence look like a hang)."""
    print(f"crossent: {message}", file=sys.stderr, flush=True)


def _record_path(lib: Path) -> Path:
    return lib.with_name(lib.name + ".sha256")


def _digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read with plain reads (never mapped, so a short file
    cannot fault)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _write_record(lib: Path) -> None:
    size, digest = _digest(lib)
    record = _record_path(lib)
    fd, tmp = tempfile.mkstemp(suffix=".sha256", dir=lib.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"size": size, "sha256": digest}, f)
        os.replace(tmp, record)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_library(lib: Path) -> str | None:
    """None when the cached library matches its build record, else what is wrong with it."""
    if not lib.exists():
        return "not built yet"
    try:
        record = json.loads(_record_path(lib).read_text())
        want = (int(record["size"]), str(record["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return "no valid build record next to it"
    try:
        got = _digest(lib)
    except OSError as exc:
        return f"unreadable ({exc})"
    if got != want:
        return (f"it does not match its build record (size {got[0]}, expected {want[0]}; "
                f"sha256 {got[1][:12]}, expected {want[1][:12]})")
    return None


def build_locked(lib: Path, build: Callable[[Path], None], announce: str) -> float | None:
    """Build ``lib`` with ``build(path)`` under the cache directory's lock, unless another
    process built a valid one meanwhile; says ``announce`` before compiling. Returns the
    build's seconds, or None when none ran.

    Raises:
        Exception: whatever ``build`` raised (the library is left as it was).
    """
    import fcntl

    cache = lib.parent
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process (a DDP rank, an xdist worker)
            say(f"waiting for another process to finish building the C++ kernel "
                f"({cache / 'build.lock'})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        problem = check_library(lib)  # it may have finished meanwhile
        if problem is None:
            return None
        say(announce)
        t_build = time.perf_counter()
        fd, tmp = tempfile.mkstemp(suffix=lib.suffix, dir=cache)
        os.close(fd)
        try:
            build(Path(tmp))
            os.replace(tmp, lib)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _write_record(lib)
        seconds = round(time.perf_counter() - t_build, 1)
        say(f"kernel built in {seconds} s")
        return seconds
