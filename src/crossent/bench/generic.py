"""Every loss with a native counterpart, fwd+bwd, against the op users call today.

    python -m crossent.bench.generic            # the shapes of the targets, plus 256x10
    python -m crossent.bench.generic --quick    # small smoke run

Each pair runs side by side in one process, alternating, median of ``--repeats`` rounds
(:func:`crossent.bench._harness.time_steps`), and the table gives crossent's time as a
multiple of the native one (the target is <= 1.0x). Pairs:

- torch ``sigmoid_cross_entropy`` vs ``F.binary_cross_entropy_with_logits`` (8192x80)
- torch ``sigmoid_focal_loss`` vs torchvision's formula, restated (8192x80)
- torch ``distillation_loss`` (T=2) vs ``F.kl_div(log_target=True) * T^2`` (256x1000)
- torch ``multi_margin_loss`` vs ``F.multi_margin_loss`` (256x1000)
- torch ``softmax_cross_entropy`` (the fused path) vs ``F.cross_entropy`` (4096x1000)
- ``jax.jit(jax.value_and_grad(softmax_cross_entropy))`` vs optax's (64x32768)
- NumPy ``value_and_grad(softmax_cross_entropy)`` vs eight lines of NumPy (4096x1000)

and every pair again at 256x10. For the torch pairs it also measures the extra
peak memory (RSS above the inputs) of one fwd+bwd of each side in a fresh process, at 8x the
rows (``--no-memory`` skips it). Writes ``generic*.json`` into the results folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _harness as H

Step = Callable[[], Any]


def _torch_pairs(n: int, c: int, rng: np.random.Generator) -> dict[str, tuple[Step, Step]]:
    import torch
    import torch.nn.functional as F

    import crossent

    x0 = torch.from_numpy(rng.normal(size=(n, c)).astype(np.float32))
    t = torch.from_numpy((rng.uniform(size=(n, c)) > 0.7).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, c, size=n))
    teacher = torch.from_numpy(rng.normal(size=(n, c)).astype(np.float32))
    x = x0.clone().requires_grad_()

    def fresh(fn: Callable[[torch.Tensor], torch.Tensor]) -> Step:
        def step() -> None:
            x.grad = None
            fn(x).backward()
        return step

    def tv_focal(v: torch.Tensor) -> torch.Tensor:  # torchvision.ops.sigmoid_focal_loss
        p = torch.sigmoid(v)
        ce = F.binary_cross_entropy_with_logits(v, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * ((1 - p_t) ** 2)
        return ((0.25 * t + 0.75 * (1 - t)) * loss).mean()

    def kd(v: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(v / 2, -1), F.log_softmax(teacher / 2, -1),
                        reduction="batchmean", log_target=True) * 4

    return {
        "sigmoid_cross_entropy": (fresh(lambda v: crossent.sigmoid_cross_entropy(v, t)),
                                  fresh(lambda v: F.binary_cross_entropy_with_logits(v, t))),
        "sigmoid_focal_loss": (fresh(lambda v: crossent.sigmoid_focal_loss(v, t)),
                               fresh(tv_focal)),
        "distillation_loss": (fresh(lambda v: crossent.distillation_loss(v, teacher,
                                                                         temperature=2.0)),
                              fresh(kd)),
        "multi_margin_loss": (fresh(lambda v: crossent.multi_margin_loss(v, y)),
                              fresh(lambda v: F.multi_margin_loss(v, y))),
        "softmax_cross_entropy": (fresh(lambda v: crossent.softmax_cross_entropy(v, y)),
                                  fresh(lambda v: F.cross_entropy(v, y))),
    }


def _numpy_pair(n: int, c: int, rng: np.random.Generator) -> tuple[Step, Step]:
    import crossent

    z = rng.normal(size=(n, c)).astype(np.float32)
    y = rng.integers(0, c, size=n)
    vag = crossent.value_and_grad(crossent.softmax_cross_entropy)

    def by_hand() -> tuple[Any, Any]:
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        lse = np.log(s) + m
        loss = (lse[:, 0] - z[np.arange(n), y]).mean()
        g = e / s
        g[np.arange(n), y] -= 1.0
        return loss, g / n

    return (lambda: vag(z, y)), by_hand


def _jax_pair(n: int, c: int, rng: np.random.Generator) -> tuple[Step, Step] | None:
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError:
        return None
    import crossent

    z = jnp.asarray(rng.normal(size=(n, c)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, c, size=n))
    ours = jax.jit(jax.value_and_grad(lambda s: crossent.softmax_cross_entropy(s, y)))
    theirs = jax.jit(jax.value_and_grad(
        lambda s: optax.softmax_cross_entropy_with_integer_labels(s, y).mean()))

    def run(f: Callable[[Any], Any]) -> Step:
        return lambda: jax.block_until_ready(f(z))

    return run(ours), run(theirs)


def _row(name: str, backend: str, shape: tuple[int, int], ours: Step, theirs: Step,
         native: str, repeats: int) -> dict[str, Any]:
    # calls per timed round: enough for ~20 ms, so microsecond steps are not clock noise, and
    # at least 3, so that a round times the steady state of a loop calling the loss (a lone
    # call after gc and after the other contender pays for page faults that depend on what
    # ran before it: NumPy at 4096x1000 read 0.68x to 1.08x that way)
    probe = H.time_steps({"native": theirs}, repeats=1, warmup=1)["native"].get("median_s")
    number = max(3, min(2000, int(0.02 / probe))) if probe else 3
    t = H.time_steps({"crossent": ours, "native": theirs}, repeats=repeats, warmup=2,
                     number=number)
    a, b = t["crossent"].get("median_s"), t["native"].get("median_s")
    return {"loss": name, "backend": backend, "shape": f"{shape[0]}x{shape[1]}",
            "native": native, "crossent_s": a, "native_s": b,
            "ratio": (a / b) if a and b else None,
            "error": t["crossent"].get("error") or t["native"].get("error")}


_NATIVE = {"sigmoid_cross_entropy": "F.binary_cross_entropy_with_logits",
           "sigmoid_focal_loss": "torchvision formula",
           "distillation_loss": "F.kl_div(log_target) * T^2",
           "multi_margin_loss": "F.multi_margin_loss",
           "softmax_cross_entropy": "F.cross_entropy"}
_SHAPES = {"sigmoid_cross_entropy": (8192, 80), "sigmoid_focal_loss": (8192, 80),
           "distillation_loss": (256, 1000), "multi_margin_loss": (256, 1000),
           "softmax_cross_entropy": (4096, 1000)}
COLUMNS = [("loss", "loss", ""), ("backend", "backend", ""), ("shape", "shape", ""),
           ("native", "against", ""), ("crossent_s", "crossent s", "{:.2e}"),
           ("native_s", "native s", "{:.2e}"), ("ratio", "crossent / native", "{:.2f}x"),
           ("memory_shape", "memory at", ""),
           ("crossent_extra_mib", "crossent extra MiB", "{:.1f}"),
           ("native_extra_mib", "native extra MiB", "{:.1f}")]


def _mib(b: int | None) -> float | None:
    return None if b is None else b / 2**20


# extra peak memory is measured at 8x the rows of the timing shape, where a buffer is large
# next to the allocator's and the page cache's noise
_MEMORY_ROWS = 8


def _memory(name: str, shape: tuple[int, int]) -> dict[str, Any]:
    """Extra peak RSS of one fwd+bwd of each side, each in a fresh process."""
    n, c = shape[0] * _MEMORY_ROWS, shape[1]
    out: dict[str, Any] = {}
    for side in ("crossent", "native"):
        r = H.measure_memory("crossent.bench.generic", f"{name}:{side}", {"n": n, "c": c})
        out[side] = r.get("extra_bytes")
        out.setdefault("error", r.get("error"))
    out["shape"] = f"{n}x{c}"
    return out


def _child(spec: str, case: str) -> None:
    import json

    name, side = spec.split(":")
    shape = json.loads(case)
    pair = _torch_pairs(shape["n"], shape["c"], np.random.default_rng(0))[name]
    step = pair[0] if side == "crossent" else pair[1]
    print(json.dumps(H.child_measure(step, lambda: None, lambda: 0)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="small shapes, 3 repeats")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child(a.child, a.case)
        return {}
    repeats = 3 if a.quick else a.repeats
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    try:
        import torch

        torch.manual_seed(0)
        for shape_set in ("target", "small"):
            for name, (n, c) in _SHAPES.items():
                if shape_set == "small" or a.quick:
                    n, c = (256, 10)
                ours, theirs = _torch_pairs(n, c, rng)[name]
                row = _row(name, "torch", (n, c), ours, theirs, _NATIVE[name], repeats)
                if shape_set == "target" and not (a.quick or a.no_memory):
                    mem = _memory(name, (n, c))
                    row["memory_shape"] = mem["shape"]
                    row["crossent_extra_mib"] = _mib(mem["crossent"])
                    row["native_extra_mib"] = _mib(mem["native"])
                rows.append(row)
            if a.quick:
                break
    except ImportError:
        print("(torch not installed: torch pairs skipped)")
    for n, c in ([(256, 10)] if a.quick else [(4096, 1000), (256, 10)]):
        ours, theirs = _numpy_pair(n, c, rng)
        rows.append(_row("softmax_cross_entropy", "numpy", (n, c), ours, theirs,
                         "hand-written NumPy", repeats))
    for n, c in ([(64, 1024)] if a.quick else [(64, 32768), (256, 10)]):
        jx = _jax_pair(n, c, rng)
        if jx is None:
            break
        rows.append(_row("softmax_cross_entropy", "jax (jit)", (n, c), *jx, "optax", repeats))
    print(f"fwd+bwd, float32, CPU ({H.machine()})")
    H.print_table(rows, COLUMNS)
    name = "generic_quick" if a.quick else "generic"
    path = H.save(name, {"machine": H.machine(), "rows": rows})
    print(f"wrote {path}")
    return {"rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
