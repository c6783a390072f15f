"""Run test cases on groups of gloo processes (CPU, 127.0.0.1, a free port chosen here).

``run_group(module, world, tmp_path, suite)`` starts ``python -m tests._gloo <module> ...``: a
fresh interpreter that imports torch once and forks the ranks from there (forking the pytest
process itself would be unsafe: it may already run JAX / OpenMP threads, and a fresh
interpreter per rank would pay the torch import per rank). Each rank runs
``<module>.cases(world, suite)`` (a list of ``(name, fn(rank))``) and writes its failures to a
JSON file, which ``run_group`` asserts on. Everything is bounded: the gloo timeout, the
launcher's join timeout (stragglers are terminated) and the subprocess timeout.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

GLOO_TIMEOUT_S = 30  # a collective left without a partner fails after this
JOIN_TIMEOUT_S = 120  # the launcher terminates ranks still running after this
RUN_TIMEOUT_S = 180  # the test kills the launcher after this
ROOT = Path(__file__).resolve().parents[1]


def _worker(module: str, rank: int, world: int, port: int, outdir: str, suite: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # several ranks share the machine's cores
    report = {"rank": rank, "cases": 0, "failures": []}
    try:
        cases = importlib.import_module(module).cases
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=GLOO_TIMEOUT_S))
        try:
            for name, fn in cases(world, suite):
                report["cases"] += 1
                try:
                    fn(rank)
                except AssertionError as e:  # a comparison after the collectives: go on
                    report["failures"].append(f"{name}: {e}")
                except Exception as e:  # the ranks' collectives may no longer pair up: stop
                    report["failures"].append(f"{name}: {type(e).__name__}: {e}")
                    break
        finally:
            dist.destroy_process_group()
    except Exception:
        report["failures"].append("worker: " + traceback.format_exc())
    Path(outdir, f"rank{rank}.json").write_text(json.dumps(report))


def _launch(module: str, world: int, port: int, outdir: str, suite: str) -> int:
    """Fork the ranks from this fresh interpreter, join them with a deadline."""
    importlib.import_module(module)  # torch and the module once, before the fork
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    procs = [ctx.Process(target=_worker, args=(module, r, world, port, outdir, suite))
             for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    stuck = [p for p in procs if p.is_alive()]
    for p in stuck:
        p.terminate()
    for p in stuck:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    return 0 if not stuck and all(p.exitcode == 0 for p in procs) else 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(module: str, world: int, tmp_path: Path, suite: str = "all") -> None:
    """Run ``module.cases(world, suite)`` on a group of ``world`` processes; assert that every
    rank ran every case without a failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in range(2):  # a second try only if another program took the free port
        out = tmp_path / f"try{attempt}"
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, "-m", "tests._gloo", module, str(world), str(_free_port()),
             str(out), suite], capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env,
            cwd=ROOT)
        if "address already in use" not in (proc.stdout + proc.stderr).lower():
            break
    reports = []
    for r in range(world):
        path = out / f"rank{r}.json"
        assert path.exists(), f"rank {r} wrote no report:\n{proc.stdout}\n{proc.stderr}"
        reports.append(json.loads(path.read_text()))
    failures = [f"rank {rep['rank']}: {f}" for rep in reports for f in rep["failures"]]
    assert not failures, "\n".join(failures[:20])
    assert proc.returncode == 0, proc.stderr
    expected = len(importlib.import_module(module).cases(world, suite))
    assert all(rep["cases"] == expected for rep in reports)


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                     sys.argv[5]))
