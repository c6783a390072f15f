"""Benchmark harness: contenders side by side, alternating, medians, peak memory per process.

Timing: every contender runs in the same process on the same inputs, one after another in
each round (so drifts in machine load hit all of them alike), several rounds after a warm-up;
the median round time is reported, with the spread.

Peak memory on CPU: there is no allocator statistic, so each contender runs in a fresh
subprocess (``--child``): it builds the inputs, runs one warm-up step (compilation, lazy
loading), frees its outputs, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``),
reads the resident set, runs one step and reads the peak (``VmHWM``). The difference is the
step's extra peak memory, including the gradients it leaves behind; the gradients' size is
reported separately so "working memory" (peak minus gradients) can be compared too. On CUDA
``torch.cuda.max_memory_allocated`` is used in process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict


def default_results_dir() -> Path:
    """A user folder, never the installed package or a source checkout's tracked files:
    ``$XDG_CACHE_HOME/crossent/bench`` (``~/.cache/crossent/bench``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crossent" / "bench"


class GradCase:
    """A benchmark case whose steps fill the ``.grad`` of the tensors ``leaves()`` returns:
    the reset between steps and the size of the gradients every contender must return.

    ``spec`` holds the constructor's keyword arguments (a ``--child`` subprocess rebuilds the
    case from them) and ``device`` the device type its tensors live on."""

    spec: dict[str, Any]
    device: str = "cpu"

    def keep(self, **spec: Any) -> Any:
        """Keep the constructor's arguments as ``spec`` (and their device type); return a
        CPU ``torch.Generator`` seeded with ``spec["seed"]`` for the case's data."""
        import torch

        self.spec = spec
        self.device = torch.device(spec.get("device", "cpu")).type
        return torch.Generator().manual_seed(spec.get("seed", 0))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.spec)

    def leaves(self) -> Sequence[Any]:
        raise NotImplementedError

    def reset(self) -> None:
        for t in self.leaves():
            t.grad = None

    def grad_bytes(self) -> int:
        return sum(0 if t.grad is None else t.grad.numel() * t.grad.element_size()
                   for t in self.leaves())


def parser(doc: str, sizes: dict[str, int], dtypes: Sequence[str], contenders: Sequence[str]
           ) -> argparse.ArgumentParser:
    """The options every fwd+bwd benchmark script takes; ``sizes`` maps --n/--v/--h to defaults."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in sizes.items():
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--dtype", choices=sorted(dtypes), default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="small sizes, 2 repeats: a smoke run")
    p.add_argument("--sweep", action="store_true", help="scaling sweep over V and N (time only)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--contenders", type=names, default=list(contenders),
                   help=f"comma-separated (default: {','.join(contenders)})")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    return p


def names(text: str) -> list[str]:
    """A comma-separated command-line list."""
    return [name for name in text.split(",") if name]


def start(doc: str, sizes: dict[str, int], dtypes: Sequence[str], contenders: Sequence[str],
          case_cls: Any, make_step: Callable, argv: list[str] | None
          ) -> argparse.Namespace | None:
    """Parse a fwd+bwd benchmark's command line (:func:`parser`); None when this process is
    a ``--child`` that has measured its contender's memory (:func:`run_child`) and is done."""
    args = parser(doc, sizes, dtypes, contenders).parse_args(argv)
    return None if run_child(args, case_cls, make_step) else args


def run_child(args: argparse.Namespace, case_cls: Any, make_step: Callable) -> bool:
    """In a ``--child`` subprocess, measure one contender's peak memory and print it as JSON."""
    if not args.child:
        return False
    case = case_cls(**json.loads(args.case))
    print(json.dumps(child_measure(make_step(args.child, case), case.reset, case.grad_bytes)))
    return True


def results_dir() -> Path:
    """Where results go: ``$CROSSENT_BENCH_OUT`` (set by ``crossent bench --out``) or the
    user folder of :func:`default_results_dir`."""
    out = os.environ.get("CROSSENT_BENCH_OUT")
    path = Path(out) if out else default_results_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path

Step = Callable[[], Any]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Timing(TypedDict, total=False):
    """One contender's row of :func:`time_steps`: its seconds, or the error that dropped it."""

    median_s: float
    min_s: float
    max_s: float
    error: str


def time_steps(steps: dict[str, Step], *, repeats: int = 5, warmup: int = 1,
               reset: Callable[[], None] | None = None, number: int = 1
               ) -> dict[str, Timing]:
    """Median, min and max seconds of each step, running them alternately ``repeats`` times.

    ``reset`` runs (untimed) before each step, e.g. to drop ``.grad`` from the previous one.
    ``number`` > 1 times that many back-to-back calls per round and reports the time of one
    (for steps of microseconds, where one call is below the clock's and the cache's noise).
    A step that raises is dropped and reported with its error.
    """
    alive = dict(steps)
    errors: dict[str, str] = {}
    for _ in range(warmup):
        for name, step in list(alive.items()):
            try:
                if reset:
                    reset()
                step()
            except Exception as exc:  # a contender that cannot run here (e.g. compile)
                errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                del alive[name]
    times: dict[str, list[float]] = {name: [] for name in alive}
    for _ in range(repeats):
        for name, step in alive.items():
            if reset:
                reset()
            gc.collect()
            t0 = time.perf_counter()
            for _ in range(number):
                step()
            times[name].append((time.perf_counter() - t0) / number)
    out: dict[str, Timing] = {
        name: {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts)}
        for name, ts in times.items()
    }
    for name, err in errors.items():
        out[name] = {"error": err}
    if reset:
        reset()
    return out


def child_measure(step: Step, reset: Callable[[], None], grad_bytes: Callable[[], int],
                  warmup: int = 3) -> dict:
    """In a fresh process: ``warmup`` steps, then the extra peak RSS of one step.

    A training loop's steady state, not its first steps: glibc serves a large buffer by mmap
    until one of that size has been freed, then from the heap, so the first steps' peaks
    depend on what ran before (one warm-up step left 8 MiB of noise either way at 2048x1000)."""
    for _ in range(warmup):
        reset()
        step()
    reset()
    gc.collect()
    can_reset = _reset_peak_rss()
    base = _status_kib("VmRSS")
    step()
    peak = _status_kib("VmHWM")
    if base is None or peak is None or not can_reset:
        import resource

        return {"error": "no /proc peak-RSS reset on this system",
                "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    return {"extra_bytes": (peak - base) * 1024, "grad_bytes": grad_bytes()}


def measure_memory(module: str, contender: str, case: dict, timeout: float = 900) -> dict:
    """Run ``python -m module --child CONTENDER --case JSON`` and return what it printed (a
    JSON line)."""
    cmd = [sys.executable, "-m", module, "--child", contender, "--case", json.dumps(case)]
    env = dict(os.environ)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def ratios(seconds: float | None, times: dict[str, Timing], baselines: dict[str, str]
           ) -> dict[str, float]:
    """``seconds`` over each baseline contender's median, keyed by the column that
    ``baselines`` maps to that contender; a column is absent where either time is missing."""
    out = {}
    for column, base in baselines.items():
        ref = times.get(base, {}).get("median_s")
        if seconds and ref:
            out[column] = seconds / ref
    return out


def ratio_rows(times: dict[str, Timing], contenders: Sequence[str], baselines: dict[str, str]
               ) -> list[dict[str, Any]]:
    """A table row per contender: its timing and its :func:`ratios` to the baselines."""
    rows = []
    for name in contenders:
        t = times.get(name, {})
        rows.append({"name": name, **t, **ratios(t.get("median_s"), times, baselines)})
    return rows


def step_memory(module: str, name: str, case: GradCase, make_step: Callable) -> dict:
    """One contender's extra peak memory: in a fresh ``python -m module`` process on CPU,
    from the allocator's peak in process on CUDA."""
    if case.device == "cpu":
        return measure_memory(module, name, case.as_dict())
    return cuda_measure(make_step(name, case), case.reset, case.grad_bytes)


def add_memory(row: dict, mem: dict, logits_bytes: int) -> None:
    """Put one memory measurement into a table row: the bytes, and both as multiples of the
    logits (with the gradients every contender returns, and without them)."""
    row.update({k: v for k, v in mem.items() if k in ("extra_bytes", "grad_bytes", "error")})
    if "extra_bytes" in mem:
        row["extra_x_logits"] = mem["extra_bytes"] / logits_bytes
        row["work_x_logits"] = (mem["extra_bytes"] - mem["grad_bytes"]) / logits_bytes


def cuda_measure(step: Step, reset: Callable[[], None], grad_bytes: Callable[[], int]) -> dict:
    import torch

    step()
    reset()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return {"extra_bytes": torch.cuda.max_memory_allocated() - base, "grad_bytes": grad_bytes()}


def machine() -> dict[str, Any]:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}
    try:
        info["load_avg"] = os.getloadavg()
    except OSError:
        pass
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    return info


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """rows: dicts; columns: (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        line = []
        for key, _, fmt in columns:
            v = r.get(key)
            line.append("-" if v is None else (fmt.format(v) if fmt else str(v)))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for i, c in enumerate(cells):
        pairs = enumerate(zip(c, widths, strict=True))
        print("  ".join(s.rjust(w) if j else s.ljust(w) for j, (s, w) in pairs))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def sweep_point(sweeps: dict[str, list[dict]], var: str, n: int, v: int,
                rows: list[dict]) -> None:
    """Print one point of a scaling sweep over ``var`` and add it to ``sweeps[var]`` (rows
    whose name starts with "floor" are reference lines, not contenders)."""
    times = {r["name"]: r for r in rows if not r["name"].startswith("floor")}
    print(f"{var} sweep  N={n:6d} V={v:7d}  " + "  ".join(
        f"{c}={t.get('median_s', float('nan')):.4f}s" for c, t in times.items()))
    sweeps[var].append({"N": n, "V": v, "times": times})


def time_columns(fmt: str) -> list[tuple[str, str, str]]:
    """The first columns of a contenders table: the name, the median and the best time."""
    return [("name", "contender", ""), ("median_s", "median s", fmt), ("min_s", "min s", fmt)]


def memory_columns(fmt: str = "{:.3f}") -> list[tuple[str, str, str]]:
    """The columns :func:`add_memory` fills: extra peak memory over one logits matrix, with
    and without the gradients every contender returns."""
    return [("extra_x_logits", "peak mem x logits", fmt), ("work_x_logits", "excl. grads", fmt)]


def save(name: str, payload: dict) -> Path:
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def wrote(path: Path, png: Path | None) -> None:
    print(f"wrote {path}" + (f" and {png}" if png else ""))


def report(name: str, title: str, rows: list[dict], columns: list[tuple[str, str, str]],
           payload: dict) -> None:
    """Print the title and the table, save ``payload`` with the rows as ``name.json`` and a
    bar plot of the rows as ``name.png`` into the results folder."""
    print(title)
    print_table(rows, columns)
    wrote(save(name, {**payload, "rows": rows}), plot_bars(name, rows, title))


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None (said once) without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        print("(matplotlib not available: no plot)")
        return None
    return plt


def _save_figure(plt: Any, fig: Any, name: str, title: str) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = results_dir() / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(name: str, rows: list[dict], title: str) -> Path | None:
    """Time and extra memory per contender, side by side."""
    plt = _pyplot()
    if plt is None:
        return None
    ok = [r for r in rows if r.get("median_s") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [r["name"] for r in ok]
    axes[0].barh(names, [r["median_s"] for r in ok], color="tab:blue")
    axes[0].set_xlabel("fwd+bwd time (s, median)")
    mem = [r.get("extra_x_logits") or 0.0 for r in ok]
    axes[1].barh(names, mem, color="tab:orange")
    axes[1].set_xlabel("extra peak memory (x logits)")
    for ax in axes:
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    return _save_figure(plt, fig, name, title)


def plot_sweep(name: str, sweeps: dict[str, list[dict]], title: str) -> Path | None:
    """One panel per swept variable: time per contender against it (log-log)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 3.8), squeeze=False)
    for ax, (var, points) in zip(axes[0], sweeps.items(), strict=True):
        contenders = sorted({c for p in points for c in p["times"]})
        for c in contenders:
            ok = [p for p in points if p["times"].get(c, {}).get("median_s")]
            xs = [p[var] for p in ok]
            ys = [p["times"][c]["median_s"] for p in ok]
            ax.plot(xs, ys, marker="o", label=c)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(var)
        ax.set_ylabel("fwd+bwd seconds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save_figure(plt, fig, name, title)
