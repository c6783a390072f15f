"""``crossent bench``: find and run the benchmark scripts of ``benchmarks/``.

Each ``benchmarks/bench_*.py`` defines ``main(argv) -> dict`` that runs its contenders side by
side, prints a table of times, memory and ratios, and writes JSON and a PNG plot. This module
only discovers them (in ``$CROSSENT_BENCHMARKS``, ``./benchmarks`` or the source checkout's
``benchmarks/``), shows progress and gathers their results into one JSON summary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def benchmarks_dir() -> Path | None:
    candidates = []
    if os.environ.get("CROSSENT_BENCHMARKS"):
        candidates.append(Path(os.environ["CROSSENT_BENCHMARKS"]))
    candidates.append(Path.cwd() / "benchmarks")
    candidates.append(Path(__file__).resolve().parents[2] / "benchmarks")
    for c in candidates:
        if c.is_dir() and any(c.glob("bench_*.py")):
            return c
    return None


def discover() -> dict[str, Path]:
    d = benchmarks_dir()
    if d is None:
        return {}
    return {p.stem.removeprefix("bench_"): p for p in sorted(d.glob("bench_*.py"))}


def _load(path: Path) -> ModuleType:
    sys.path.insert(0, str(path.parent))  # benchmarks share a _harness module
    try:
        spec = importlib.util.spec_from_file_location(f"crossent_bench_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(path.parent))


def main(args: Any) -> int:
    from .cli import UsageError

    found = discover()
    if not found:
        raise UsageError("no benchmarks found: run from the crossent checkout or set "
                         "CROSSENT_BENCHMARKS to its benchmarks/ folder")
    if args.list:
        for name, path in found.items():
            print(f"{name:28} {path}")
        return 0
    chosen = args.which or list(found)
    unknown = [w for w in chosen if w not in found]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(found)}")
    out_dir = Path(args.out) if args.out else next(iter(found.values())).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    # the scripts write their JSON and PNG where the shared harness is told to
    os.environ["CROSSENT_BENCH_OUT"] = str(out_dir.resolve())
    argv = ["--quick"] if args.quick else []
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
            result = _load(found[name]).main(argv)
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
