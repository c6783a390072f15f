"""A transformers LlamaForCausalLM training step, stock against patched by crossent.

    python -m crossent.bench.hf            # tiny (V=32000, H=64) and wide (V=128256, H=1024)
    python -m crossent.bench.hf --quick    # small smoke run (the tiny config, shrunk)
    python -m crossent.bench.hf --configs wide --repeats 3

Contenders (one fwd+bwd of the model with labels, gradients for every parameter):
    stock     the model as transformers builds it: (B, T, V) logits, then ForCausalLMLoss
    patched   crossent.integrations.transformers.patch(model): linear_cross_entropy on the
              final hidden states and lm_head, no logits
Memory is the extra peak RSS of one training step in a fresh process (above the model, its
inputs and whatever a warm-up step leaves allocated), with and without the parameter
gradients both must produce. The logits (B*T x V) only show above the gradients (of the V x H
embedding and head among them) when B*T is large against H: the stock step's peak is the
larger of its logits' buffers mid-backward and the gradients at its end. Needs the
transformers extra (``pip install 'crossent[transformers]'``); without it the benchmark
reports itself skipped. Writes ``hf*.json`` and ``.png`` into the results folder
(``crossent bench --out``, default ``~/.cache/crossent/bench``).
"""

from __future__ import annotations

import importlib
import sys

import torch

from . import _harness as H

CONTENDERS = ("stock", "patched")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# name -> (vocab, hidden, intermediate, layers, heads, kv heads, batch, sequence)
Shape = tuple[int, int, int, int, int, int, int, int]
CONFIGS: dict[str, Shape] = {
    "tiny": (32000, 64, 128, 2, 4, 2, 8, 256),
    "wide": (128256, 1024, 2816, 1, 16, 4, 8, 512),
}
QUICK: dict[str, Shape] = {
    "tiny": (4096, 32, 64, 2, 4, 2, 4, 64),
    "wide": (16384, 128, 256, 1, 4, 2, 1, 128),
}


class Case(H.GradCase):
    """A LlamaForCausalLM with random weights (untied head) and one batch of labels."""

    def __init__(self, name: str, vocab: int, hidden: int, intermediate: int, layers: int,
                 heads: int, kv_heads: int, batch: int, seq: int, dtype: str = "float32",
                 device: str = "cpu", seed: int = 0) -> None:
        # through importlib: type checkers would otherwise analyse all of transformers
        transformers = importlib.import_module("transformers")
        self.spec = {"name": name, "vocab": vocab, "hidden": hidden,
                     "intermediate": intermediate, "layers": layers, "heads": heads,
                     "kv_heads": kv_heads, "batch": batch, "seq": seq, "dtype": dtype,
                     "device": device, "seed": seed}
        torch.manual_seed(seed)
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
            max_position_embeddings=max(seq, 64), tie_word_embeddings=False)
        config._attn_implementation = "sdpa"
        self.model = transformers.LlamaForCausalLM(config).to(_DTYPES[dtype]).to(device)
        self.model.train()
        g = torch.Generator().manual_seed(seed + 1)
        self.ids = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
        self.labels = self.ids.clone()
        self.labels[:, : seq // 8] = -100  # a prompt that is not trained on
        self.logits_bytes = batch * seq * vocab * torch.finfo(_DTYPES[dtype]).bits // 8
        self.device = device

    def leaves(self) -> list[torch.Tensor]:
        return list(self.model.parameters())


def make_step(name: str, c: Case) -> H.Step:
    if name not in CONTENDERS:
        raise ValueError(f"unknown contender {name!r}")
    from ..integrations.transformers import patch, unpatch

    def stock() -> None:
        c.model(input_ids=c.ids, labels=c.labels).loss.backward()

    def patched() -> None:
        # one model for both contenders: patching is a few attribute swaps
        patch(c.model)
        try:
            c.model(input_ids=c.ids, labels=c.labels).loss.backward()
        finally:
            unpatch(c.model)

    return stock if name == "stock" else patched


def run_point(case: Case, contenders: list[str], repeats: int, memory: bool,
              script: str) -> list[dict]:
    steps = {name: make_step(name, case) for name in contenders}
    times = H.time_steps(steps, repeats=repeats, warmup=1, reset=case.reset)
    rows = H.ratio_rows(times, contenders, {"x_stock_time": "stock"})
    for row in rows:
        row["config"] = case.spec["name"]
        if memory and "error" not in row:
            mem = H.step_memory(script, row["name"], case, make_step)
            H.add_memory(row, mem, case.logits_bytes)
            if "extra_bytes" in mem:
                row["extra_mib"] = mem["extra_bytes"] / 2**20
                row["work_mib"] = (mem["extra_bytes"] - mem["grad_bytes"]) / 2**20
    stock = next((r for r in rows if r["name"] == "stock"), {})
    for r in rows:
        if stock.get("extra_bytes") and "extra_bytes" in r:
            r["x_stock_mem"] = r["extra_bytes"] / stock["extra_bytes"]
        if stock.get("work_mib") and "work_mib" in r:
            r["x_stock_work"] = r["work_mib"] / stock["work_mib"]
    return rows


COLUMNS = [("config", "config", ""), ("name", "contender", ""),
           ("median_s", "median s", "{:.3f}"), ("min_s", "min s", "{:.3f}"),
           ("x_stock_time", "time x stock", "{:.2f}"),
           ("extra_mib", "extra peak MiB", "{:.0f}"), ("work_mib", "excl. grads MiB", "{:.0f}"),
           ("x_stock_mem", "mem x stock", "{:.2f}"), ("x_stock_work", "excl. grads x stock",
                                                      "{:.2f}"),
           ("extra_x_logits", "peak x logits", "{:.2f}")]


def main(argv: list[str] | None = None) -> int | dict:
    p = H.parser(__doc__, {}, list(_DTYPES), CONTENDERS)
    p.add_argument("--configs", help=f"comma-separated, from {', '.join(CONFIGS)} (default: "
                   f"all; with --quick: tiny, as each memory subprocess imports transformers)")
    a = p.parse_args(argv)
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        print("hf benchmark skipped: it needs transformers (pip install 'crossent[transformers]')")
        return {"skipped": "transformers is not installed"}
    if H.run_child(a, Case, make_step):
        return 0
    if a.sweep:
        p.error("the hf benchmark has no --sweep")
    contenders = a.contenders
    names = H.names(a.configs or ("tiny" if a.quick else ",".join(CONFIGS)))
    unknown = [n for n in names + contenders if n not in CONFIGS and n not in CONTENDERS]
    if unknown:
        p.error(f"unknown config or contender {unknown[0]!r}")
    table = QUICK if a.quick else CONFIGS
    repeats = 2 if a.quick else a.repeats
    print(f"transformers {transformers.__version__}  ({H.machine()})")
    rows: list[dict] = []
    cases = []
    for name in names:
        case = Case(name, *table[name], dtype=a.dtype, device=a.device)
        rows += run_point(case, contenders, repeats, not a.no_memory, __spec__.name)
        cases.append(case.as_dict())
        del case
    title = (f"LlamaForCausalLM training step (fwd+bwd), stock vs crossent patch, {a.dtype} "
             f"{a.device}, {H.machine()['threads']} threads")
    print(title)
    for spec in cases:
        print(f"  {spec['name']}: V={spec['vocab']} H={spec['hidden']} layers={spec['layers']} "
              f"B={spec['batch']} T={spec['seq']}")
    H.print_table(rows, COLUMNS)
    out = "hf_quick" if a.quick else "hf"
    path = H.save(out, {"cases": cases, "machine": H.machine(),
                        "transformers": transformers.__version__, "rows": rows})
    plot_rows = [{**r, "name": f"{r['config']} {r['name']}"} for r in rows]
    H.wrote(path, H.plot_bars(out, plot_rows, title))
    return {"rows": rows}


if __name__ == "__main__":
    result = main()
    sys.exit(result if isinstance(result, int) else 0)
