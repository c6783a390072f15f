"""``crossent bench``: the benchmarks that ship with the package, run side by side.

Each benchmark module of this package (``crossent.bench.cross_entropy``, ...) defines
``main(argv) -> dict`` that runs its contenders side by side in one process, prints a table of
times, memory and ratios, and writes JSON and a PNG plot into the results folder: ``--out``, by
default a user folder (``~/.cache/crossent/bench``), never the package or a checkout's tracked
files. Each also runs on its own: ``python -m crossent.bench.cross_entropy --quick``. This
module discovers them, shows progress and gathers their results into one JSON summary.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import time
from pathlib import Path
from typing import Any

from .._errors import UsageError
from ._harness import default_results_dir


def discover() -> dict[str, str]:
    """Benchmark name -> module name, for every public module of this package."""
    return {m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")}


def main(args: Any) -> int:
    found = discover()
    if args.list:
        for name, module in found.items():
            print(f"{name:28} python -m {module}")
        return 0
    chosen = args.which or list(found)
    unknown = [w for w in chosen if w not in found]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(found)}")
    out_dir = Path(args.out) if args.out else default_results_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: cannot create it ({e.strerror or e})") from None
    # the scripts write their JSON and PNG where the shared harness is told to
    os.environ["CROSSENT_BENCH_OUT"] = str(out_dir.resolve())
    argv = ["--quick"] if args.quick else []
    try:
        from ..torch import _ext

        _ext.load()  # a first-use build of the kernels is timed by no benchmark
    except ImportError:
        pass
    summary: dict[str, Any] = {"quick": bool(args.quick), "benchmarks": {}}
    try:
        from rich.progress import Progress

        progress: Any = Progress(transient=True) if not args.json else None
    except ImportError:
        progress = None
    task = None
    if progress is not None:
        progress.start()
        task = progress.add_task("benchmarks", total=len(chosen))
    try:
        for name in chosen:
            if progress is not None:
                progress.update(task, description=f"bench {name}")
            t0 = time.perf_counter()
            result = importlib.import_module(found[name]).main(argv)
            # a script returns its results (a dict) or an exit status (0 = success)
            failed = isinstance(result, int) and result != 0
            summary["benchmarks"][name] = {"wall_s": time.perf_counter() - t0,
                                           "status": "failed" if failed else "ok",
                                           "result": None if isinstance(result, int) else result}
            if progress is not None:
                progress.advance(task)
    finally:
        if progress is not None:
            progress.stop()
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"wrote {path}")
    return 1 if any(b["status"] == "failed" for b in summary["benchmarks"].values()) else 0
