"""Chunked linear + cross-entropy against the materialised logits and torch's own version.

    python -m crossent.bench.linear_cross_entropy           # N=4096, H=512, V=32768, float32
    python -m crossent.bench.linear_cross_entropy --quick   # small smoke run
    python -m crossent.bench.linear_cross_entropy --sweep   # V 1k..256k, N 1..16k (time only)

Contenders (fwd+bwd, gradients w.r.t. hidden and weight):
    materialised   F.cross_entropy(h @ W.T, y)
    torch-chunked  F.linear_cross_entropy(h, W, y, options=LinearCrossEntropyOptions())
    crossent       crossent.torch.linear_cross_entropy(h, W, y)
Memory is the extra peak RSS of one step in a fresh process, relative to the size of the
materialised logits, with and without the gradients every contender must produce (dh, dW).
Writes ``linear_cross_entropy*.json`` and ``.png`` into the results folder (``crossent bench
--out``, default ``~/.cache/crossent/bench``).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from . import _harness as H

CONTENDERS = ("materialised", "torch-chunked", "crossent")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Case(H.GradCase):
    def __init__(self, n: int, h: int, v: int, dtype: str = "float32", device: str = "cpu",
                 seed: int = 0) -> None:
        g = self.keep(n=n, h=h, v=v, dtype=dtype, device=device, seed=seed)
        dt = _DTYPES[dtype]
        self.hid = torch.randn(n, h, generator=g).to(dt).to(device).requires_grad_(True)
        self.w = (torch.randn(v, h, generator=g) / h**0.5).to(dt).to(device).requires_grad_(True)
        self.y = torch.randint(0, v, (n,), generator=g).to(device)
        self.logits_bytes = n * v * self.hid.element_size()

    def leaves(self) -> tuple:
        return (self.hid, self.w)


def make_step(name: str, c: Case):
    if name == "materialised":
        return lambda: F.cross_entropy(c.hid @ c.w.T, c.y).backward()
    if name == "torch-chunked":
        if not hasattr(F, "linear_cross_entropy"):
            raise RuntimeError("this torch has no F.linear_cross_entropy")
        opts = torch.nn.LinearCrossEntropyOptions()
        return lambda: F.linear_cross_entropy(c.hid, c.w, c.y, options=opts).backward()
    if name == "crossent":
        import crossent.torch as ct

        return lambda: ct.linear_cross_entropy(c.hid, c.w, c.y).backward()
    raise ValueError(f"unknown contender {name!r}")


def run_point(case: Case, contenders, repeats: int, memory: bool, script: str) -> list[dict]:
    steps = {name: make_step(name, case) for name in contenders}
    times = H.time_steps(steps, repeats=repeats, warmup=1, reset=case.reset)
    rows = H.ratio_rows(times, contenders, {"x_materialised": "materialised",
                                            "x_torch_chunked": "torch-chunked"})
    for row in rows:
        if memory and "error" not in row:
            H.add_memory(row, H.step_memory(script, row["name"], case, make_step),
                         case.logits_bytes)
    return rows


COLUMNS = [*H.time_columns("{:.3f}"), ("x_materialised", "x materialised", "{:.2f}"),
           ("x_torch_chunked", "x torch-chunked", "{:.2f}"), *H.memory_columns()]


def main(argv: list[str] | None = None) -> int:
    a = H.start(__doc__, {"n": 4096, "h": 512, "v": 32768}, list(_DTYPES), CONTENDERS, Case,
                make_step, argv)
    if a is None:
        return 0
    import crossent.torch as ct

    info = ct.backend_info()
    print(f"crossent backend: {info['cpu']}  ({H.machine()})")
    if a.sweep:
        return _sweep(a, a.contenders, info)
    n, h, v, repeats = a.n, a.h, a.v, a.repeats
    if a.quick:
        n, h, v, repeats = 512, 64, 4096, 2
    case = Case(n, h, v, a.dtype, a.device)
    rows = run_point(case, a.contenders, repeats, not a.no_memory, __spec__.name)
    title = (f"linear cross-entropy fwd+bwd, N={n} H={h} V={v} {a.dtype} {a.device}, "
             f"{H.machine()['threads']} threads")
    H.report("linear_cross_entropy_quick" if a.quick else "linear_cross_entropy", title, rows,
             COLUMNS, {"case": case.as_dict(), "machine": H.machine(), "backend": info,
                       "chunk_size": ct.choose_chunk_size(n, v, h)})
    return 0


def _sweep(a, contenders: list[str], info: dict) -> int:
    sweeps: dict[str, list[dict]] = {"V": [], "N": []}
    points = [("V", 1024, v) for v in (1024, 4096, 16384, 65536, 262144)]
    points += [("N", n, 32768) for n in (1, 16, 256, 4096, 16384)]
    if a.quick:
        points = [("V", 64, 1024), ("V", 64, 8192), ("N", 1, 4096), ("N", 128, 4096)]
    h = 64 if a.quick else a.h
    for var, n, v in points:
        case = Case(n, h, v, a.dtype, a.device)
        H.sweep_point(sweeps, var, n, v,
                      run_point(case, contenders, 2 if a.quick else 3, False, ""))
        del case
    name = "linear_cross_entropy_sweep_quick" if a.quick else "linear_cross_entropy_sweep"
    H.wrote(H.save(name, {"machine": H.machine(), "backend": info, "H": h, "sweeps": sweeps}),
            H.plot_sweep(name, sweeps, f"linear cross-entropy fwd+bwd scaling, H={h} {a.dtype}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
