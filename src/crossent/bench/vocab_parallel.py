"""Vocabulary-parallel cross-entropy: per-rank peak memory against the number of processes P.

    python -m crossent.bench.vocab_parallel                 # N=4096, V=32768, H=1024
    python -m crossent.bench.vocab_parallel --quick         # N=512, V=8192, H=256 (< 20 s)
    python -m crossent.bench.vocab_parallel --out DIR       # where the JSON and PNG go

For P in 1, 2, 4 processes (gloo on CPU, 127.0.0.1) every rank holds V/P columns of the same
N x V logits (or V/P rows of the same LM-head weight) and runs one forward + backward of
``vocab_parallel_cross_entropy`` (and of ``vocab_parallel_linear_cross_entropy``). Peak memory
per rank is measured by the kernel: the resident set before the rank builds its inputs, then
the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` after the inputs
exist) over the step; the difference is the rank's inputs plus everything the step allocates,
gradients included. It should fall as ~1/P while the loss stays the same (to 1e-6, relative).
The inputs are generated in fixed blocks of 256 vocabulary entries, each from its own seed, so
every P sees exactly the same numbers. P=1 runs the same parallel code with a group of one
(``impl="parallel"``; by default users get the hand-over to ``crossent.torch.cross_entropy``
there instead).

The ranks are forked from one fresh interpreter (``--launch``) that imports torch once; large
allocations are forced to ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so freed memory leaves the
resident set and cannot hide the next allocation. Times are reported too, but the ranks share
this machine's cores (P=4 on a 2-core machine oversubscribes it): read them as a sanity check,
not as a scaling result.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import _harness as H

NAME = "vocab_parallel"
PROCS = (1, 2, 4)
BLOCK = 256  # vocabulary entries per generated block (fixed: the numbers do not depend on P)
METHODS = ("logits", "linear")
LOSS_RTOL = 1e-6


def _widths(v: int, p: int) -> list[int]:
    return [v // p + (1 if r < v % p else 0) for r in range(p)]


def _vocab_blocks(start: int, width: int, rows: int, seed: int, scale: float = 1.0):
    """Entries [start, start + width) of a (V, rows) matrix whose 256-entry blocks are each
    drawn from their own seed; returned as (width, rows)."""
    import torch

    out = torch.empty(width, rows)
    b0, b1 = start // BLOCK, (start + width - 1) // BLOCK if width else start // BLOCK - 1
    for b in range(b0, b1 + 1):
        blk = torch.randn(BLOCK, rows, generator=torch.Generator().manual_seed(seed + b))
        lo, hi = max(start, b * BLOCK), min(start + width, (b + 1) * BLOCK)
        out[lo - start:hi - start] = blk[lo - b * BLOCK:hi - b * BLOCK]
    return out.mul_(scale)


def _worker(rank: int, world: int, port: int, cfg: dict, path: str) -> None:
    import torch
    import torch.distributed as dist

    from crossent.torch.distributed import (
        vocab_parallel_cross_entropy,
        vocab_parallel_linear_cross_entropy,
    )

    # impl="parallel": P=1 runs the parallel algorithm too (not the hand-over to the fused
    # single-device functions), so every P measures the same code.
    impl = "parallel"
    torch.set_num_threads(max(1, cfg["threads"] // world))
    n, v, h, reps = cfg["n"], cfg["v"], cfg["h"], cfg["repeats"]
    width = _widths(v, world)[rank]
    start = sum(_widths(v, world)[:rank])
    report: dict = {"rank": rank}
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=300))
    try:
        g = torch.Generator().manual_seed(12345)
        y = torch.randint(0, v, (n,), generator=g)
        hidden0 = torch.randn(n, h, generator=g)
        # Warm-up on a tiny problem: gloo buffers, thread pools, lazy imports.
        small = torch.randn(4, 3, requires_grad=True)
        vocab_parallel_cross_entropy(small, torch.tensor([0, 1, 2, 0]), impl=impl).backward()
        vocab_parallel_linear_cross_entropy(torch.randn(4, 2, requires_grad=True),
                                            torch.randn(3, 2, requires_grad=True),
                                            torch.tensor([0, 1, 2, 0]), impl=impl).backward()

        def make(method):
            if method == "logits":
                x = _vocab_blocks(start, width, n, seed=1000).t().contiguous()
                return {"x": x.requires_grad_(True)}, x.numel() * 4
            w = _vocab_blocks(start, width, h, seed=2000, scale=h ** -0.5)
            return ({"h": hidden0.clone().requires_grad_(True), "w": w.requires_grad_(True)},
                    w.numel() * 4 + n * h * 4)

        def step(method, t):
            if method == "logits":
                loss = vocab_parallel_cross_entropy(t["x"], y, impl=impl)
            else:
                loss = vocab_parallel_linear_cross_entropy(t["h"], t["w"], y, impl=impl)
            loss.backward()
            return float(loss.detach())

        for method in cfg["methods"]:
            gc.collect()
            dist.barrier()
            base = H._status_kib("VmRSS")
            t, input_bytes = make(method)
            can_reset = H._reset_peak_rss()
            dist.barrier()
            t0 = time.perf_counter()
            loss = step(method, t)
            first = time.perf_counter() - t0
            peak = H._status_kib("VmHWM")
            times = [first]
            for _ in range(reps - 1):
                for x in t.values():
                    x.grad = None
                dist.barrier()
                t0 = time.perf_counter()
                step(method, t)
                times.append(time.perf_counter() - t0)
            peak_bytes = None
            if can_reset and base is not None and peak is not None:
                peak_bytes = (peak - base) * 1024
            report[method] = {
                "loss": loss,
                "input_bytes": input_bytes,
                "peak_bytes": peak_bytes,
                "median_s": statistics.median(times),
            }
            del t
    finally:
        dist.destroy_process_group()
    Path(path).write_text(json.dumps(report))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cfg: dict, out_path: str) -> int:
    """Run every P in turn, its ranks forked from this interpreter; write all reports."""
    import torch  # noqa: F401  (imported once here, inherited by the forked ranks)

    ctx: Any = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    results: dict = {}
    rc = 0
    with tempfile.TemporaryDirectory() as tmp:
        for world in cfg["procs"]:
            port = _free_port()
            paths = [os.path.join(tmp, f"p{world}_r{r}.json") for r in range(world)]
            procs = [ctx.Process(target=_worker, args=(r, world, port, cfg, paths[r]))
                     for r in range(world)]
            for p in procs:
                p.start()
            deadline = time.monotonic() + cfg["timeout"]
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
                    rc = 1
            reports = [json.loads(Path(q).read_text()) for q in paths if Path(q).exists()]
            if len(reports) != world:
                rc = 1
            results[str(world)] = reports
    Path(out_path).write_text(json.dumps(results))
    return rc


def _plot(rows: list[dict], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        print("(matplotlib not available: no plot)")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, color in zip(METHODS, ("tab:blue", "tab:orange"), strict=True):
        pts = [r for r in rows if r["method"] == method and r.get("peak_mb") is not None]
        if not pts:
            continue
        ps = [r["procs"] for r in pts]
        axes[0].plot(ps, [r["peak_mb"] for r in pts], marker="o", color=color,
                     label=f"{method}: measured")
        p1 = next((r for r in pts if r["procs"] == 1), pts[0])
        axes[0].plot(ps, [p1["peak_mb"] * p1["procs"] / p for p in ps], ls="--", color=color,
                     alpha=0.6, label=f"{method}: ideal 1/P")
        axes[1].plot(ps, [r["median_s"] for r in pts], marker="o", color=color, label=method)
    axes[0].set_ylabel("per-rank peak memory (MB)")
    axes[1].set_ylabel("fwd+bwd seconds (median)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(PROCS))
        ax.set_xticklabels([str(p) for p in PROCS])
        ax.set_xlabel("processes P")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run (< 20 s)")
    p.add_argument("--out", default=None, help="folder for the JSON and PNG "
                   "(default benchmarks/results)")
    p.add_argument("--n", type=int, default=None, help="rows (tokens)")
    p.add_argument("--v", type=int, default=None, help="vocabulary size")
    p.add_argument("--h", type=int, default=None, help="hidden size (linear version)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per P")
    a = p.parse_args(argv)
    n, v, h, reps = (512, 8192, 256, 2) if a.quick else (4096, 32768, 1024, 3)
    cfg: dict[str, Any] = {
        "n": a.n or n, "v": a.v or v, "h": a.h or h, "repeats": a.repeats or reps,
        "procs": list(PROCS), "methods": list(METHODS), "threads": os.cpu_count() or 1,
        "timeout": 120 if a.quick else 900, "dtype": "float32"}
    out_dir = Path(a.out) if a.out else H.results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = NAME + ("_quick" if a.quick else "")
    # Big blocks straight from mmap, returned on free: the resident set then tracks the step.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072",
           "OMP_NUM_THREADS": str(cfg["threads"])}
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = os.path.join(tmp, "raw.json")
        proc = subprocess.run([sys.executable, "-m", __spec__.name, "--launch",
                               json.dumps(cfg), raw_path], env=env, capture_output=True,
                              text=True, timeout=cfg["timeout"] * len(PROCS) + 60)
        raw = json.loads(Path(raw_path).read_text()) if os.path.exists(raw_path) else {}
    if proc.returncode != 0 or not raw:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
    logits_mb = cfg["n"] * cfg["v"] * 4 / 2**20
    rows: list[dict] = []
    for method in METHODS:
        ref = None
        for world in PROCS:
            reports = [r for r in raw.get(str(world), []) if method in r]
            if len(reports) != world:
                rows.append({"method": method, "procs": world, "error": "a rank failed"})
                continue
            res = [r[method] for r in reports]
            peaks = [r["peak_bytes"] for r in res]
            loss = res[0]["loss"]
            ref = loss if world == 1 else ref
            row = {
                "method": method, "procs": world,
                "vocab_per_rank": max(_widths(cfg["v"], world)),
                "input_mb": max(r["input_bytes"] for r in res) / 2**20,
                "peak_mb": None if None in peaks else max(peaks) / 2**20,
                "median_s": max(r["median_s"] for r in res),
                "loss": loss,
                "ranks_agree": all(r["loss"] == loss for r in res),
                "loss_rel_diff": None if ref is None else abs(loss - ref) / max(abs(ref), 1e-30),
            }
            row["peak_x_logits"] = None if row["peak_mb"] is None else row["peak_mb"] / logits_mb
            rows.append(row)
    ok_rows = [r for r in rows if "error" not in r]
    checks: dict = {}
    for method in METHODS:
        pts = {r["procs"]: r for r in ok_rows if r["method"] == method}
        if 1 in pts and pts[1]["peak_mb"]:
            # 1/P up to a fixed part (replicated hidden for "linear") and measurement noise.
            checks[f"{method}_memory_ratio_p4"] = (pts[4]["peak_mb"] / pts[1]["peak_mb"]
                                                   if 4 in pts and pts[4]["peak_mb"] else None)
        checks[f"{method}_loss_unchanged"] = bool(pts) and all(
            r["ranks_agree"] and r["loss_rel_diff"] is not None
            and r["loss_rel_diff"] <= LOSS_RTOL for r in pts.values())
    print(f"vocab-parallel cross-entropy, N={cfg['n']} V={cfg['v']} H={cfg['h']} float32, "
          f"gloo on CPU; full logits = {logits_mb:.1f} MB")
    H.print_table(ok_rows, [
        ("method", "method", ""), ("procs", "P", "{}"), ("vocab_per_rank", "V/P", "{}"),
        ("input_mb", "inputs MB", "{:.1f}"), ("peak_mb", "peak MB/rank", "{:.1f}"),
        ("peak_x_logits", "x full logits", "{:.3f}"), ("median_s", "fwd+bwd s", "{:.3f}"),
        ("loss", "loss", "{:.7f}"), ("loss_rel_diff", "rel diff vs P=1", "{:.1e}")])
    for r in rows:
        if "error" in r:
            print(f"{r['method']} P={r['procs']}: {r['error']}")
    for k, val in checks.items():
        print(f"{k}: {val if not isinstance(val, float) else round(val, 3)}")
    result: dict[str, Any] = {"name": NAME, "config": cfg, "machine": H.machine(), "rows": rows,
              "checks": checks, "logits_mb": logits_mb}
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=2))
    png = _plot(ok_rows, out_dir / f"{stem}.png",
                f"vocab-parallel CE per-rank peak memory, N={cfg['n']} V={cfg['v']} "
                f"H={cfg['h']} (gloo, CPU)")
    result["files"] = [str(json_path)] + ([str(png)] if png else [])
    print("wrote " + ", ".join(result["files"]))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--launch":
        sys.exit(_launch(json.loads(sys.argv[2]), sys.argv[3]))
    main(sys.argv[1:])
