"""The Triton row kernel compiled ahead of time for real GPUs, without one: Triton's NVIDIA
backend (with the ptxas its wheel ships) turns the kernel into a cubin for sm_80 (A100) and
sm_90 (H100/H200). This catches what the interpreter lets through (types, constexpr branches,
scalar masks the compiler rejects) and checks that ptxas keeps every variant in registers: a
spill to the stack (local memory) would cost the memory-bound kernel its bandwidth.

It runs in a subprocess, because this test session's Triton interprets (TRITON_INTERPRET=1 is
set before Triton is imported).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
triton = pytest.importorskip("triton", reason="needs triton (pip install triton)")

SCRIPT = textwrap.dedent(r"""
    import json, os, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from crossent.torch import _triton_kernels as K, _triton_rows as R

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                             "cuobjdump")
    variants = json.loads(sys.argv[1])
    kernel = K.rows_kernel
    out = []
    for v in variants:
        dt = v["dtype"]
        sig = {"x_ptr": f"*{dt}", "sx": "i64", "t_ptr": f"*{dt}" if v["PROB"] else "*i64",
               "st": "i64", "w_ptr": "*fp32", "g_ptr": f"*{dt}", "sg": "i64",
               "gs_ptr": "*fp32", "gs_stride": "i32", "zs_ptr": "*fp32",
               "zs_stride": "i32", "loss_ptr": "*fp32", "z_ptr": "*fp32",
               "lse_ptr": "*fp32", "V": "i32", "eps": "fp32", "zc": "fp32", "cap": "fp32",
               "ignore_index": "i64"}
        const = {k: v[k] for k in ("PROB", "HAS_W", "CAP", "SMOOTH", "GRAD", "GS_PTR",
                                   "ZS_PTR")}
        const["BLOCK"] = R.MAX_BLOCK
        sig.update({k: "constexpr" for k in const})
        src = ASTSource(fn=kernel, signature=sig,
                        constexprs={(kernel.arg_names.index(k),): c for k, c in const.items()})
        ck = triton.compile(src, target=GPUTarget("cuda", v["arch"], 32),
                            options={"num_warps": R.warps(R.MAX_BLOCK),
                                     "enable_fp_fusion": True})
        with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
            f.write(ck.asm["cubin"])
        res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True)
        os.unlink(f.name)
        line = next((ln for ln in res.stdout.splitlines() if "REG:" in ln), "")
        usage = dict(kv.split(":") for kv in line.split() if ":" in kv)
        out.append({**v, "regs": int(usage.get("REG", -1)), "stack": int(usage.get("STACK", -1))})
    print(json.dumps(out))
""")

ALL_ON = dict(HAS_W=True, CAP=True, SMOOTH=True, GRAD=True, GS_PTR=True, ZS_PTR=True)
ALL_OFF = dict(HAS_W=False, CAP=False, SMOOTH=False, GRAD=False, GS_PTR=False, ZS_PTR=False)
VARIANTS = (
    [dict(ALL_ON, PROB=prob, dtype=dt, arch=90) for prob in (False, True)
     for dt in ("bf16", "fp16", "fp32")]
    + [dict(ALL_OFF, PROB=False, dtype="bf16", arch=90),
       dict(ALL_ON, PROB=True, dtype="bf16", arch=80),
       dict(ALL_ON, PROB=False, dtype="fp32", arch=80)]
)


def test_every_variant_compiles_for_sm80_and_sm90_without_spills():
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not os.path.exists(os.path.join(tools, "ptxas")):
        pytest.skip("this triton wheel ships no ptxas (no NVIDIA backend)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(VARIANTS)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(VARIANTS)
    for r in results:
        assert r["regs"] > 0, r
        assert r["stack"] == 0, f"spills to the stack: {r}"
