"""GPU benchmark: the fused and the linear cross-entropy against what GPU users run today.

    crossent bench gpu                            # the full suite on cuda:0
    python -m crossent.bench.gpu --quick          # smaller shapes
    python -m crossent.bench.gpu --device cpu --quick   # a smoke run of the plumbing (no GPU)

Cases (fwd+bwd, every contender on the same inputs, bfloat16 and float32):
    fused   (B*T, V) in (8192, 32768), (16384, 131072), (4096, 262144): gradient w.r.t. the
            logits
    linear  (B*T, H, V) = (8192, 4096, 128256): gradients w.r.t. the hidden states and the
            weight

Contenders (each where it imports; one that fails, e.g. out of memory, is reported and
skipped):
    eager           F.cross_entropy(logits, y)  /  F.cross_entropy(h @ W.T, y)
    compile         the same function under torch.compile (dynamic shapes, one compilation
                    per kind and dtype; compilation is in the warm-up, not in the times; run
                    after all the other contenders, so the time budget drops these first)
    torch-chunked   F.linear_cross_entropy(h, W, y)  (linear only, torch >= 2.13)
    liger           Liger-Kernel's LigerCrossEntropyLoss / LigerFusedLinearCrossEntropyLoss
    cce             apple/ml-cross-entropy's cut_cross_entropy.linear_cross_entropy (linear)
    crossent        crossent.torch.cross_entropy / linear_cross_entropy (impl="auto": Triton)
    crossent-inplace  crossent.torch.cross_entropy(..., inplace_backward=True) on logits that
                    are an intermediate (fused only)
    crossent-lowacc crossent.torch.linear_cross_entropy(..., accum_dtype=W.dtype): grad_W
                    summed in bf16 (one in-place addmm per chunk) instead of a float32 buffer
                    (linear only; the same as crossent in float32)

Time: CUDA events around each step, the median of 20 steps after 3 warm-up steps (on CPU,
``--device cpu``, the wall clock). Memory: ``torch.cuda.max_memory_allocated`` during one step
minus what was allocated before it, as a multiple of the logits' size, with and without the
gradients every contender returns (CUDA only). The whole suite keeps to a time budget
(``--budget-s``, 220 s by default, under 4 minutes with start-up on an H100/H200-class GPU):
contenders left when it is spent are reported as skipped. One line is printed per contender,
then the table, the targets and a Markdown table for the README; ``gpu.json`` and ``gpu.png``
go into the results folder (``crossent bench --out``, default ``~/.cache/crossent/bench``).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from . import _harness as H

FUSED_SHAPES = ((8192, 32768), (16384, 131072), (4096, 262144))
LINEAR_SHAPES = ((8192, 4096, 128256),)
QUICK_FUSED = ((4096, 32768),)
QUICK_LINEAR = ((2048, 1024, 32768),)
SMOKE_FUSED = ((64, 1000),)  # --device cpu: the plumbing only
SMOKE_LINEAR = ((64, 32, 1000),)
FUSED_CONTENDERS = ("eager", "compile", "liger", "crossent", "crossent-inplace")
LINEAR_CONTENDERS = ("eager", "compile", "torch-chunked", "liger", "cce", "crossent",
                     "crossent-lowacc")
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
WARMUP, REPEATS = 3, 20
# One compiled function per kind, with dynamic shapes: reused by every shape and dtype
_COMPILED: dict[str, Any] = {}


class Case:
    """Inputs of one (kind, shape, dtype) point, made on the device."""

    def __init__(self, kind: str, shape: tuple[int, ...], dtype: str, device: str) -> None:
        g = torch.Generator(device=device).manual_seed(0)
        dt = _DTYPES[dtype]
        self.kind, self.shape, self.dtype, self.device = kind, shape, dtype, device
        if kind == "fused":
            n, v = shape
            self.x = (torch.randn(n, v, generator=g, device=device) * 2).to(dt)
            self.x.requires_grad_(True)
            self.leaves: tuple[torch.Tensor, ...] = (self.x,)
        else:
            n, h, v = shape
            self.h = torch.randn(n, h, generator=g, device=device).to(dt).requires_grad_(True)
            self.w = (torch.randn(v, h, generator=g, device=device) / h**0.5).to(dt)
            self.w.requires_grad_(True)
            self.leaves = (self.h, self.w)
        self.y = torch.randint(0, v, (n,), generator=g, device=device)
        self.logits_bytes = n * v * torch.empty((), dtype=dt).element_size()

    def reset(self) -> None:
        for t in self.leaves:
            t.grad = None

    def grad_bytes(self) -> int:
        return sum(0 if t.grad is None else t.grad.numel() * t.grad.element_size()
                   for t in self.leaves)

    def label(self) -> str:
        return f"{self.kind} {'x'.join(map(str, self.shape))} {self.dtype}"


def make_step(name: str, c: Case) -> Callable[[], Any]:
    """One fwd+bwd of contender ``name`` on case ``c``; raises ImportError / RuntimeError
    where it cannot run."""
    fused = c.kind == "fused"
    if name == "eager":
        return (lambda: F.cross_entropy(c.x, c.y).backward()) if fused else \
            (lambda: F.cross_entropy(c.h @ c.w.T, c.y).backward())
    if name == "compile":
        f = _COMPILED.get(c.kind)
        if f is None:
            fn = (lambda x, y: F.cross_entropy(x, y)) if fused else \
                (lambda h, w, y: F.cross_entropy(h @ w.T, y))
            f = _COMPILED[c.kind] = torch.compile(fn, dynamic=True)
        return (lambda: f(c.x, c.y).backward()) if fused else \
            (lambda: f(c.h, c.w, c.y).backward())
    if name == "torch-chunked":
        if fused:
            raise RuntimeError("a linear contender")
        if not hasattr(F, "linear_cross_entropy"):
            raise RuntimeError("this torch has no F.linear_cross_entropy")
        return lambda: F.linear_cross_entropy(c.h, c.w, c.y).backward()
    if name == "liger":
        if fused:
            from liger_kernel.transformers.cross_entropy import LigerCrossEntropyLoss

            ce = LigerCrossEntropyLoss()
            # Liger writes the gradient into its input's memory: a copy of its own keeps the
            # logits of the contenders after it intact (its steps then read gradients as
            # logits, which changes no time)
            xl = c.x.detach().clone().requires_grad_(True)
            c.leaves = (*c.leaves, xl)
            return lambda: ce(xl, c.y).backward()
        from liger_kernel.transformers.fused_linear_cross_entropy import (
            LigerFusedLinearCrossEntropyLoss,
        )

        flce = LigerFusedLinearCrossEntropyLoss()
        return lambda: flce(c.w, c.h, c.y).backward()
    if name == "cce":
        if fused:
            raise RuntimeError("a linear contender")
        from cut_cross_entropy import linear_cross_entropy as cce

        return lambda: cce(c.h, c.w, c.y).backward()
    import crossent.torch as ct

    if name == "crossent":
        return (lambda: ct.cross_entropy(c.x, c.y).backward()) if fused else \
            (lambda: ct.linear_cross_entropy(c.h, c.w, c.y).backward())
    if name == "crossent-lowacc":
        if fused:
            raise RuntimeError("a linear contender")
        return lambda: ct.linear_cross_entropy(c.h, c.w, c.y, accum_dtype=c.w.dtype).backward()
    if name == "crossent-inplace":
        if not fused:
            raise RuntimeError("a fused contender")

        def step() -> None:
            # logits that are an intermediate (as an LM head's output is): the gradient is
            # written into their memory, and the add's backward hands it to x as its .grad
            ct.cross_entropy(c.x + 0.0, c.y, inplace_backward=True).backward()
        return step
    raise ValueError(f"unknown contender {name!r}")


def _time(step: Callable[[], Any], c: Case, cuda: bool) -> list[float]:
    """Seconds of each of ``REPEATS`` steps after ``WARMUP`` (CUDA events on a GPU)."""
    for _ in range(WARMUP):
        c.reset()
        step()
    out = []
    if cuda:
        pairs = []
        for _ in range(REPEATS):
            c.reset()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            step()
            b.record()
            pairs.append((a, b))
        torch.cuda.synchronize()
        out = [a.elapsed_time(b) / 1e3 for a, b in pairs]
    else:
        for _ in range(REPEATS):
            c.reset()
            t0 = time.perf_counter()
            step()
            out.append(time.perf_counter() - t0)
    c.reset()
    return out


def run_contender(name: str, c: Case, cuda: bool) -> dict[str, Any]:
    """One contender on one case: its median time and (on CUDA) its extra peak memory."""
    row: dict[str, Any] = {"name": name}
    leaves = c.leaves
    try:
        step = make_step(name, c)
        ts = _time(step, c, cuda)
        row.update(median_s=statistics.median(ts), min_s=min(ts))
        if cuda:
            mem = H.cuda_measure(step, c.reset, c.grad_bytes)
            H.add_memory(row, mem, c.logits_bytes)
    except Exception as exc:  # ImportError, OOM, a contender that does not take this case
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    finally:
        c.reset()
        c.leaves = leaves  # drop a contender's private inputs
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return row


def _line(c: Case, row: dict[str, Any], eager: float | None) -> str:
    head = f"{c.label():32} {row['name']:17}"
    if "error" in row:
        return f"{head} {row['error']}"
    text = f"{head} {row['median_s'] * 1e3:9.2f} ms"
    if eager:
        text += f"  {row['median_s'] / eager:5.2f}x eager"
    if "extra_x_logits" in row:
        text += (f"  extra {row['extra_bytes'] / 2**30:6.2f} GiB = {row['extra_x_logits']:.2f}x"
                 f" logits ({row['work_x_logits']:.2f}x without the gradients)")
    return text


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The issue's GPU targets, checked against the measured rows (where both sides ran)."""
    out = []
    for res in results:
        rows = {r["name"]: r for r in res["rows"] if "median_s" in r}
        me = rows.get("crossent")
        if me is None:
            continue
        label = res["label"]

        def ratio(other: str, rows: dict = rows, me: dict = me) -> float | None:
            o = rows.get(other)
            return me["median_s"] / o["median_s"] if o else None

        checks: list[tuple[str, float | None, float]] = []
        if res["kind"] == "fused":
            checks += [("time vs liger", ratio("liger"), 0.8),
                       ("time vs eager", ratio("eager"), 0.5)]
            if "work_x_logits" in me:
                checks.append(("extra memory x logits", me["extra_x_logits"], 1.0))
            inplace = rows.get("crossent-inplace")
            if inplace and "work_x_logits" in inplace:
                checks.append(("inplace: memory beyond the gradient x logits",
                               inplace["work_x_logits"], 0.0))
        else:
            checks += [("time vs eager", ratio("eager"), 1.0),
                       ("time vs cce", ratio("cce"), 1.0)]
            if "work_x_logits" in me:
                checks.append(("memory beyond the gradients x logits", me["work_x_logits"],
                               0.05))
            low = rows.get("crossent-lowacc")
            if low and "work_x_logits" in low:
                checks.append(("accum_dtype=W.dtype: memory beyond the gradients x logits",
                               low["work_x_logits"], 0.05))
        for what, value, limit in checks:
            if value is None:
                out.append(f"{label:32} {what}: not measured (contender missing)")
            else:
                ok = value <= limit + 1e-9
                out.append(f"{label:32} {what}: {value:.3f} (target <= {limit}) "
                           f"{'met' if ok else 'NOT met'}")
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    """The README table: one line per case and contender."""
    lines = ["| case | contender | median ms | x eager | extra memory x logits "
             "(without gradients) |", "|---|---|---:|---:|---:|"]
    for res in results:
        eager = next((r["median_s"] for r in res["rows"]
                      if r["name"] == "eager" and "median_s" in r), None)
        for r in res["rows"]:
            if "median_s" not in r:
                continue
            xe = f"{r['median_s'] / eager:.2f}" if eager else "-"
            mem = (f"{r['extra_x_logits']:.2f} ({r['work_x_logits']:.2f})"
                   if "extra_x_logits" in r else "-")
            lines.append(f"| {res['label']} | {r['name']} | {r['median_s'] * 1e3:.2f} | {xe} "
                         f"| {mem} |")
    return "\n".join(lines)


def _plot(results: list[dict[str, Any]], title: str, name: str) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        print("(matplotlib not available: no plot)")
        return None
    shown = [r for r in results if any("median_s" in row for row in r["rows"])]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 2, figsize=(11, 2.4 * len(shown)), squeeze=False)
    for (ax_t, ax_m), res in zip(axes, shown, strict=True):
        ok = [r for r in res["rows"] if "median_s" in r]
        names = [r["name"] for r in ok]
        ax_t.barh(names, [r["median_s"] * 1e3 for r in ok], color="tab:blue")
        ax_t.set_title(res["label"], fontsize=9)
        ax_t.set_xlabel("fwd+bwd ms (median)")
        ax_m.barh(names, [r.get("extra_x_logits", 0.0) for r in ok], color="tab:orange")
        ax_m.set_xlabel("extra peak memory (x logits)")
        for ax in (ax_t, ax_m):
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = H.results_dir() / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any] | int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="one smaller shape per kind")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--contenders", default=",".join(dict.fromkeys(FUSED_CONTENDERS
                                                                   + LINEAR_CONTENDERS)))
    p.add_argument("--budget-s", type=float, default=220.0,
                   help="stop starting contenders after this many seconds")
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("crossent bench gpu: no CUDA device here, nothing measured "
              "(--device cpu runs the plumbing on CPU)")
        return {"skipped": "no CUDA device"}
    dtypes = [d for d in a.dtypes.split(",") if d]
    unknown = [d for d in dtypes if d not in _DTYPES]
    if unknown:
        raise SystemExit(f"--dtypes: unknown {unknown[0]!r}; choose from {', '.join(_DTYPES)}")
    chosen = H.names(a.contenders)
    if cuda:
        fused_shapes, linear_shapes = (QUICK_FUSED, QUICK_LINEAR) if a.quick else \
            (FUSED_SHAPES, LINEAR_SHAPES)
        dev_name = torch.cuda.get_device_name(torch.device(a.device))
    else:
        fused_shapes, linear_shapes = SMOKE_FUSED, SMOKE_LINEAR
        dev_name = "cpu"
    import crossent.torch as ct

    info = ct.backend_info()
    print(f"crossent bench gpu on {dev_name}: crossent's {a.device} path is "
          f"{info['cuda'] if cuda else info['cpu']}")
    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    plan = [("fused", s, FUSED_CONTENDERS) for s in fused_shapes] + \
        [("linear", s, LINEAR_CONTENDERS) for s in linear_shapes]
    # Two phases: every case without torch.compile, then the compiled contender of each case
    # (dynamic shapes: one compilation per kind and dtype, not per shape). Compiling is most
    # of the suite's time, so when the budget runs out, compiled rows are what is lost.
    for phase in ("run", "compile"):
        for kind, shape, contenders in plan:
            for dtype in dtypes:
                names = [c for c in contenders if c in chosen and (c == "compile") == (
                    phase == "compile")]
                if not names:
                    continue
                case = Case(kind, shape, dtype, a.device)
                res = next((r for r in results if r["label"] == case.label()), None)
                if res is None:
                    res = {"kind": kind, "shape": list(shape), "dtype": dtype,
                           "label": case.label(), "logits_bytes": case.logits_bytes,
                           "rows": []}
                    results.append(res)
                eager = next((r["median_s"] for r in res["rows"]
                              if r["name"] == "eager" and "median_s" in r), None)
                for name in names:
                    if time.perf_counter() - t_start > a.budget_s:
                        row: dict[str, Any] = {
                            "name": name,
                            "error": f"skipped: the {a.budget_s:.0f} s budget is spent"}
                    else:
                        row = run_contender(name, case, cuda)
                    if name == "eager" and "median_s" in row:
                        eager = row["median_s"]
                    print(_line(case, row, eager), flush=True)
                    res["rows"].append(row)
                # the table keeps the contenders' order
                res["rows"].sort(key=lambda r: contenders.index(r["name"]))
                del case
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
    wall = time.perf_counter() - t_start
    print(f"\n{len(results)} cases in {wall:.0f} s")
    checks = targets(results) if cuda else []  # the targets are GPU targets
    if checks:
        print("\ntargets:")
        for line in checks:
            print("  " + line)
    table = markdown(results)
    print("\n" + table)
    name = "gpu_quick" if a.quick or not cuda else "gpu"
    payload = {"device": dev_name, "machine": H.machine(), "backend": info, "wall_s": wall,
               "results": results, "targets": checks, "markdown": table}
    H.wrote(H.save(name, payload), _plot(results, f"cross-entropy fwd+bwd on {dev_name}", name))
    return payload


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)
