"""Fused cross-entropy against eager and compiled ``F.cross_entropy``: fwd+bwd time and memory.

    python -m crossent.bench.cross_entropy            # N=4096, V=32768, float32
    python -m crossent.bench.cross_entropy --quick    # small smoke run
    python -m crossent.bench.cross_entropy --sweep    # V 1k..256k at N=1024, N 1..16k at V=32k

Writes ``cross_entropy*.json`` and ``.png`` into the results folder (``crossent bench --out``,
default ``~/.cache/crossent/bench``) and prints a table with each contender's time relative to
eager and to ``torch.compile``, its extra peak memory relative to the logits (gradient
included: eager's is ~3x), and for crossent the bandwidth and the fraction of the floor. The
floor is measured here, in the same process: one ``exp`` over the logits into a warm buffer
(one exp, one read, one write per logit) plus first-touching a fresh logits-sized buffer (the
page faults any new gradient tensor costs).
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from . import _harness as H

CONTENDERS = ("eager", "compiled", "crossent", "crossent-torchops")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Case(H.GradCase):
    def __init__(self, n: int, v: int, dtype: str = "float32", device: str = "cpu",
                 seed: int = 0) -> None:
        g = self.keep(n=n, v=v, dtype=dtype, device=device, seed=seed)
        x = torch.randn(n, v, generator=g).to(_DTYPES[dtype])
        self.x = x.to(device).requires_grad_(True)
        self.y = torch.randint(0, v, (n,), generator=g).to(device)
        self.logits_bytes = self.x.numel() * self.x.element_size()

    def leaves(self) -> tuple:
        return (self.x,)


def make_step(name: str, case: Case):
    x, y = case.x, case.y
    if name == "eager":
        return lambda: F.cross_entropy(x, y).backward()
    if name == "compiled":
        fn = torch.compile(F.cross_entropy, dynamic=False)
        return lambda: fn(x, y).backward()
    import crossent.torch as ct

    if name == "crossent":
        return lambda: ct.cross_entropy(x, y).backward()
    if name == "crossent-torchops":
        def step():
            ct.cross_entropy(x, y, impl="torch").backward()

        return step
    raise ValueError(f"unknown contender {name!r}")


def floor_seconds(case: Case, repeats: int = 3) -> float:
    """One exp pass over the logits into a warm buffer, plus first-touching a fresh buffer
    (with the same transparent-huge-page hint crossent gives its gradient buffers)."""
    from crossent.torch import _ext

    advise = _ext.load() and case.x.device.type == "cpu"
    x = case.x.detach()
    buf = torch.empty_like(x)
    buf.zero_()
    exp_t, touch_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.exp(x, out=buf)
        exp_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fresh = torch.empty_like(x)
        if advise:
            torch.ops.crossent_ext.advise_hugepage(fresh)
        fresh.zero_()
        touch_t.append(time.perf_counter() - t0)
        del fresh
    return sorted(exp_t)[len(exp_t) // 2] + sorted(touch_t)[len(touch_t) // 2]


def run_point(case: Case, contenders, repeats: int, memory: bool, script: str) -> list[dict]:
    steps = {}
    for name in contenders:
        try:
            steps[name] = make_step(name, case)
        except Exception as exc:
            print(f"skipping {name}: {exc}")
    times = H.time_steps(steps, repeats=repeats, warmup=1, reset=case.reset)
    floor = floor_seconds(case) if case.device == "cpu" else None
    baselines = {"x_eager": "eager", "x_compiled": "compiled"}
    rows = H.ratio_rows(times, contenders, baselines)
    for row in rows:
        med = row.get("median_s")
        if med and row["name"].startswith("crossent"):
            # DRAM traffic of the fused pass: read the logits once, write the gradient once
            row["GB_s"] = 2 * case.logits_bytes / med / 1e9
            if floor:
                row["floor_frac"] = floor / med
        if memory and "error" not in row:
            H.add_memory(row, H.step_memory(script, row["name"], case, make_step),
                         case.logits_bytes)
    if floor:
        rows.append({"name": "floor (exp pass + page faults)", "median_s": floor,
                     **H.ratios(floor, times, baselines)})
    return rows


COLUMNS = [*H.time_columns("{:.4f}"), ("x_eager", "x eager", "{:.2f}"),
           ("x_compiled", "x compiled", "{:.2f}"), *H.memory_columns("{:.2f}"),
           ("GB_s", "GB/s", "{:.1f}"), ("floor_frac", "floor frac", "{:.2f}")]


def main(argv: list[str] | None = None) -> int:
    a = H.start(__doc__, {"n": 4096, "v": 32768}, list(_DTYPES), CONTENDERS, Case, make_step,
                argv)
    if a is None:
        return 0
    script = __spec__.name
    import crossent.torch as ct

    info = ct.backend_info()
    print(f"crossent backend: {info['cpu']}  ({H.machine()})")
    if a.sweep:
        return _sweep(a, a.contenders, info)
    n, v, repeats = a.n, a.v, a.repeats
    if a.quick:
        n, v, repeats = 256, 4096, 2
    case = Case(n, v, a.dtype, a.device)
    rows = run_point(case, a.contenders, repeats, not a.no_memory, script)
    title = (f"cross-entropy fwd+bwd, N={n} V={v} {a.dtype} {a.device}, "
             f"{H.machine()['threads']} threads")
    H.report("cross_entropy_quick" if a.quick else "cross_entropy", title, rows, COLUMNS,
             {"case": case.as_dict(), "machine": H.machine(), "backend": info})
    return 0


def _sweep(a, contenders: list[str], info: dict) -> int:
    contenders = [c for c in contenders if c != "crossent-torchops"]
    sweeps: dict[str, list[dict]] = {"V": [], "N": []}
    points = [("V", 1024, v) for v in (1024, 4096, 16384, 65536, 262144)]
    points += [("N", n, 32768) for n in (1, 16, 256, 4096, 16384)]
    if a.quick:
        points = [("V", 64, 1024), ("V", 64, 8192), ("N", 1, 4096), ("N", 128, 4096)]
    for var, n, v in points:
        torch._dynamo.reset()  # each size compiles afresh instead of hitting the recompile limit
        case = Case(n, v, a.dtype, a.device)
        H.sweep_point(sweeps, var, n, v,
                      run_point(case, contenders, 2 if a.quick else 3, False, ""))
        del case
    name = "cross_entropy_sweep_quick" if a.quick else "cross_entropy_sweep"
    H.wrote(H.save(name, {"machine": H.machine(), "backend": info, "sweeps": sweeps}),
            H.plot_sweep(name, sweeps, f"cross-entropy fwd+bwd scaling, {a.dtype} {a.device}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
