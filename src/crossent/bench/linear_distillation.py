"""Chunked linear distillation against the materialised logits of student and teacher.

    python -m crossent.bench.linear_distillation           # N=4096, H=256 (teacher 512), V=32000
    python -m crossent.bench.linear_distillation --quick   # small smoke run

Contenders (fwd+bwd, gradients w.r.t. the student's hidden states and head; teacher frozen):
    materialised   T^2 F.kl_div(log_softmax(h_s W_s^T / T), log_softmax(h_t W_t^T / T),
                   log_target=True, reduction="batchmean"), both N x V logits built
    crossent       crossent.torch.linear_distillation_loss(h_s, W_s, h_t, W_t, temperature=T)
Memory is the extra peak RSS of one step in a fresh process, relative to ONE N x V logits
matrix, with and without the gradients every contender returns (dh_s, dW_s); the target is
at most 0.1 of one logits matrix beyond those gradients. Writes ``linear_distillation*.json``
and ``.png`` into the results folder (``crossent bench --out``, default
``~/.cache/crossent/bench``).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from . import _harness as H

CONTENDERS = ("materialised", "crossent")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_T = 2.0


class Case(H.GradCase):
    def __init__(self, n: int, h: int, v: int, dtype: str = "float32", device: str = "cpu",
                 seed: int = 0) -> None:
        g = self.keep(n=n, h=h, v=v, dtype=dtype, device=device, seed=seed)
        dt = _DTYPES[dtype]
        ht = 2 * h  # the teacher is wider than the student

        def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
            return (torch.randn(*shape, generator=g) * scale).to(dt).to(device)

        self.hs = rand(n, h).requires_grad_(True)
        self.ws = rand(v, h, scale=h**-0.5).requires_grad_(True)
        self.ht, self.wt = rand(n, ht), rand(v, ht, scale=ht**-0.5)
        self.logits_bytes = n * v * self.hs.element_size()

    def leaves(self) -> tuple:
        return (self.hs, self.ws)


def make_step(name: str, c: Case):
    if name == "materialised":
        def step() -> None:
            with torch.no_grad():
                log_p = F.log_softmax((c.ht @ c.wt.T).float() / _T, dim=-1)
            log_q = F.log_softmax((c.hs @ c.ws.T).float() / _T, dim=-1)
            (F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * _T**2).backward()

        return step
    if name == "crossent":
        import crossent.torch as ct

        return lambda: ct.linear_distillation_loss(c.hs, c.ws, c.ht, c.wt,
                                                   temperature=_T).backward()
    raise ValueError(f"unknown contender {name!r}")


COLUMNS = [*H.time_columns("{:.3f}"), ("x_materialised", "x materialised", "{:.2f}"),
           *H.memory_columns()]


def main(argv: list[str] | None = None) -> int:
    a = H.start(__doc__, {"n": 4096, "h": 256, "v": 32000}, list(_DTYPES), CONTENDERS, Case,
                make_step, argv)
    if a is None:
        return 0
    import crossent.torch as ct

    n, h, v, repeats = a.n, a.h, a.v, a.repeats
    if a.quick:
        n, h, v, repeats = 1024, 64, 8192, 2
    case = Case(n, h, v, a.dtype, a.device)
    steps = {name: make_step(name, case) for name in a.contenders}
    times = H.time_steps(steps, repeats=repeats, warmup=1, reset=case.reset)
    rows = H.ratio_rows(times, a.contenders, {"x_materialised": "materialised"})
    for row in rows:
        if not a.no_memory and "error" not in row:
            H.add_memory(row, H.step_memory(__spec__.name, row["name"], case, make_step),
                         case.logits_bytes)
    title = (f"linear distillation fwd+bwd, N={n} H={h} (teacher {2 * h}) V={v} T={_T} "
             f"{a.dtype} {a.device}, {H.machine()['threads']} threads")
    H.report("linear_distillation_quick" if a.quick else "linear_distillation", title, rows,
             COLUMNS, {"case": case.as_dict(), "machine": H.machine(),
                       "chunk_size": ct.choose_distill_chunk(n, v, case.hs.element_size())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
