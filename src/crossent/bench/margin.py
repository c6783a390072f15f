"""Margin softmax (ArcFace) at 1e5 and 1e6 classes: chunked vs materialised, and per rank.

    python -m crossent.bench.margin            # N=512, D=512, C in {1e5, 1e6}, float32
    python -m crossent.bench.margin --quick    # small smoke run

Contenders (fwd+bwd, gradients w.r.t. the embeddings and the class centres):
    materialised  crossent.arcface_loss(x, W, y): the N x C logits and their temporaries
    pml           pytorch_metric_learning.losses.ArcFaceLoss (when installed)
    crossent      crossent.torch.margin_linear_cross_entropy(x, W, y): chunks of classes
Memory is the extra peak RSS of one step in a fresh process, relative to the N x C logits,
with and without the gradients every contender returns (dx, dW: dW alone is C x D). A
contender whose estimated need exceeds the memory available is skipped and says so.
Per-rank memory: the class-parallel loss on P = 1, 2, 4 gloo processes on this machine
(each rank holds C / P centres), the largest extra peak RSS of a rank. Writes
``margin*.json`` and ``.png`` into the results folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
from datetime import timedelta
from typing import Any

import torch

from . import _harness as H

CONTENDERS = ("materialised", "pml", "crossent")
# extra peak memory of a step in N x C float32 matrices (gradients included), as measured by
# this benchmark at C = 1e5 with a margin for safety, for the skip rule
_FULL_MATRICES = {"materialised": 11.5, "pml": 5.5, "crossent": 0.1}


class Case(H.GradCase):
    def __init__(self, n: int, d: int, c: int, seed: int = 0) -> None:
        g = self.keep(n=n, d=d, c=c, seed=seed)
        self.n, self.d, self.c = n, d, c
        self.x = torch.randn(n, d, generator=g).requires_grad_(True)
        self.w = (torch.randn(c, d, generator=g) * 0.01).requires_grad_(True)
        self.y = torch.randint(0, c, (n,), generator=g)
        self.logits_bytes = n * c * 4
        self.params = [self.x, self.w]

    def leaves(self) -> tuple:
        return tuple(self.params)


def make_step(name: str, c: Case):
    if name == "materialised":
        import crossent

        return lambda: crossent.arcface_loss(c.x, c.w, c.y, margin=0.5, scale=64.0).backward()
    if name == "pml":
        from pytorch_metric_learning.losses import ArcFaceLoss

        fn = ArcFaceLoss(num_classes=c.c, embedding_size=c.d, margin=math.degrees(0.5),
                         scale=64.0)
        # pml keeps W as (D, C): the same centres, transposed; its gradient counts as ours
        fn.W = torch.nn.Parameter(c.w.detach().T.contiguous())
        c.params.append(fn.W)
        return lambda: fn(c.x, c.y).backward()
    if name == "crossent":
        from crossent.torch import margin_linear_cross_entropy

        return lambda: margin_linear_cross_entropy(c.x, c.w, c.y, margin=0.5,
                                                   scale=64.0).backward()
    raise ValueError(f"unknown contender {name!r}")


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _skip_reason(name: str, case: Case) -> str | None:
    need = _FULL_MATRICES[name] * case.logits_bytes
    avail = _available_bytes()
    if avail is not None and need > 0.8 * avail:
        return (f"skipped: needs ~{need / 2**30:.0f} GiB, {avail / 2**30:.0f} GiB available")
    return None


def run_point(case: Case, contenders, repeats: int, memory: bool) -> list[dict]:
    steps, skipped = {}, {}
    for name in contenders:
        why = _skip_reason(name, case)
        if why:
            skipped[name] = why
            continue
        try:
            steps[name] = make_step(name, case)
        except ImportError as e:
            skipped[name] = f"skipped: {e}"
    times = H.time_steps(steps, repeats=repeats, warmup=1, reset=case.reset)
    times.update({name: {"error": why} for name, why in skipped.items()})
    rows = H.ratio_rows(times, contenders, {"x_materialised": "materialised"})
    for row in rows:
        if memory and "error" not in row:
            H.add_memory(row, H.step_memory(__spec__.name, row["name"], case, make_step),
                         case.logits_bytes)
    return rows


# --------------------------------------------------------------------------- per-rank memory


def _rank_child(a: argparse.Namespace) -> None:
    """One rank of a gloo group: its slice of the centres, one warm-up step, then the extra
    peak RSS of one step (printed as JSON)."""
    import gc

    import torch.distributed as dist

    from crossent.torch.distributed import class_parallel_margin_cross_entropy

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // a.world))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=a.rank,
                            world_size=a.world, timeout=timedelta(seconds=600))
    base, extra = divmod(a.c, a.world)
    local = base + (a.rank < extra)
    g = torch.Generator().manual_seed(a.rank)
    x = torch.randn(a.n // a.world, a.d, generator=g).requires_grad_(True)
    w = (torch.randn(local, a.d, generator=g) * 0.01).requires_grad_(True)
    y = torch.randint(0, a.c, (x.shape[0],), generator=g)

    def step() -> None:
        class_parallel_margin_cross_entropy(x, w, y, margin=0.5, scale=64.0).backward()

    def reset() -> None:
        x.grad = None
        w.grad = None

    def grads() -> int:
        return sum(t.grad.numel() * t.grad.element_size() for t in (x, w) if t.grad is not None)

    dist.barrier()
    out = H.child_measure(step, reset, grads)
    out["weight_bytes"] = w.numel() * w.element_size()
    gc.collect()
    dist.destroy_process_group()
    print(json.dumps(out))


def per_rank_memory(n: int, d: int, c: int, worlds=(1, 2, 4)) -> list[dict]:
    rows = []
    for world in worlds:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = [subprocess.Popen(
            [sys.executable, "-m", __spec__.name, "--rank-child", "--world", str(world),
             "--rank", str(r), "--port", str(port), "--n", str(n), "--d", str(d),
             "--c", str(c)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(world)]
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=1800)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            reports.append(json.loads(lines[-1]) if lines else {"error": err[-300:]})
        ok = [r for r in reports if "extra_bytes" in r]
        row: dict = {"world": world}
        if len(ok) == world:
            worst = max(ok, key=lambda r: r["extra_bytes"])
            row.update({"extra_bytes": worst["extra_bytes"], "grad_bytes": worst["grad_bytes"],
                        "weight_bytes": worst["weight_bytes"],
                        "held_bytes": worst["extra_bytes"] + worst["weight_bytes"]})
        else:
            row["error"] = next(r.get("error", "?") for r in reports if "extra_bytes" not in r)
        rows.append(row)
    if rows and "held_bytes" in rows[0]:
        for row in rows:
            if "held_bytes" in row:
                row["x_one_rank"] = row["held_bytes"] / rows[0]["held_bytes"]
    return rows


COLUMNS = [*H.time_columns("{:.2f}"), ("x_materialised", "x materialised", "{:.2f}"),
           *H.memory_columns(), ("error", "note", "")]
RANK_COLUMNS = [("world", "P", ""), ("weight_bytes", "centres/rank MiB", "{:.0f}"),
                ("extra_bytes", "extra peak MiB", "{:.0f}"),
                ("held_bytes", "held/rank MiB", "{:.0f}"), ("x_one_rank", "x P=1", "{:.2f}"),
                ("error", "note", "")]


def _mib(rows: list[dict]) -> list[dict]:
    return [{k: (v / 2**20 if k.endswith("_bytes") else v) for k, v in r.items()} for r in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--c", type=int, nargs="*", default=[100_000, 1_000_000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--contenders", type=H.names, default=list(CONTENDERS))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--rank-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rank_child:
        a.c = a.c[0]
        _rank_child(a)
        return 0
    if H.run_child(a, Case, make_step):
        return 0
    contenders = a.contenders
    n, d, sizes, repeats = a.n, a.d, a.c, a.repeats
    if a.quick:
        n, d, sizes, repeats = 64, 32, [5000], 2
    results: dict[str, Any] = {"machine": H.machine(), "points": []}
    for c in sizes:
        case = Case(n, d, c)
        rows = run_point(case, contenders, repeats, not a.no_memory)
        title = (f"ArcFace fwd+bwd, N={n} D={d} C={c} float32 cpu, "
                 f"{H.machine()['threads']} threads")
        print(title)
        H.print_table(rows, COLUMNS)
        point = {"case": case.as_dict(), "rows": rows}
        del case
        if not a.no_memory:
            ranks = per_rank_memory(n, d, c, (1, 2) if a.quick else (1, 2, 4))
            print(f"class-parallel, per rank (gloo, N={n} global rows, C={c}):")
            H.print_table(_mib(ranks), RANK_COLUMNS)
            point["ranks"] = ranks
        results["points"].append(point)
    name = "margin_quick" if a.quick else "margin"
    last = results["points"][-1]
    H.wrote(H.save(name, results),
            H.plot_bars(name, last["rows"], f"ArcFace fwd+bwd, C={last['case']['c']}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
