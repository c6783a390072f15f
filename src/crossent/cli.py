"""The ``crossent`` command: list, explain, compute, plot, gradcheck, bench, train.

Every user error (missing file, unreadable format, shape mismatch, unknown loss or option)
is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_USAGE = 2


class UsageError(Exception):
    """Reported as one line on stderr with exit code 2."""


# --- output helpers -----------------------------------------------------------------------


def _table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table when rich is installed (and stdout is a terminal or not), else plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in
                  enumerate(columns)]
        if title:
            print(title)
        print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
        for r in rows:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
        return
    t = Table(title=title)
    for i, c in enumerate(columns):
        # the first column holds identifiers a reader will copy: never wrap them
        t.add_column(str(c), overflow="fold", no_wrap=i < 2)
    for r in rows:
        t.add_row(*(str(v) for v in r))
    Console(width=160 if not sys.stdout.isatty() else None).print(t)


def _fmt(x: float) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _spec(name: str) -> Any:
    from . import names

    try:
        return names.get(name)
    except KeyError as e:
        raise UsageError(e.args[0] if e.args else str(e)) from None


def _parse_sets(items: Sequence[str]) -> dict[str, Any]:
    from .lab import parse_option

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--set {item!r}: expected key=value")
        if "," in value:
            out[key] = [parse_option(key, v) for v in value.split(",")]
        else:
            out[key] = parse_option(key, value)
    return out


# --- list / explain -----------------------------------------------------------------------

LIST_FRAMEWORKS = ("PyTorch", "TensorFlow", "Keras", "Caffe", "Optax")


def cmd_list(args: argparse.Namespace) -> int:
    from . import names

    specs = names.catalog()
    if args.json:
        print(json.dumps([{"name": s.name, "family": s.family, "formula": s.formula,
                           "closed_form_gradient": s.grad is not None,
                           "aliases": {k: list(v) for k, v in s.aliases.items()}}
                          for s in specs], indent=2))
        return 0
    rows = []
    for s in specs:
        rows.append([s.family, s.name, _grad_status(s)]
                    + [", ".join(s.aliases.get(f, ())) or "-" for f in LIST_FRAMEWORKS])
    _table("crossent losses", ["family", "crossent", "grad", *LIST_FRAMEWORKS], rows)
    return 0


def _grad_status(spec: Any) -> str:
    if spec.grad is not None:
        return "yes"
    # a piecewise-constant loss (0-1 error) has no gradient for autodiff to find either
    return "none" if "piecewise constant" in (spec.gradient or "") else "autodiff"


def cmd_explain(args: argparse.Namespace) -> int:
    s = _spec(args.name)
    info = {"name": s.name, "family": s.family, "formula": s.formula, "gradient": s.gradient,
            "closed_form_gradient": s.grad is not None,
            "aliases": {k: list(v) for k, v in s.aliases.items()},
            "notes": list(s.notes), "references": list(s.references),
            "signature": _signature(s.fn)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{s.name}  ({s.family})")
    if args.name.strip() != s.name:
        print(f"  '{args.name}' is crossent.{s.name}")
    print(f"\n  crossent.{s.name}{info['signature']}")
    print(f"\nformula:   {s.formula}")
    print(f"gradient:  {s.gradient or '-'}"
          + ("" if s.grad is not None else "   (no closed form in crossent: use autodiff)"))
    print("\naliases:")
    for fw, al in s.aliases.items():
        print(f"  {fw:24} {', '.join(al)}")
    if s.notes:
        print("\ndifferences between frameworks:")
        for n in s.notes:
            print(f"  - {n}")
    if s.references:
        print("\nreferences:")
        for r in s.references:
            print(f"  - {r}")
    return 0


def _signature(fn: Any) -> str:
    import inspect

    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


# --- compute ------------------------------------------------------------------------------


def _read_array(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} {path}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix in (".csv", ".txt", ".tsv"):
            delim = "," if suffix == ".csv" else ("\t" if suffix == ".tsv" else None)
            arr = np.loadtxt(p, delimiter=delim, ndmin=1)
            if arr.size and np.all(arr == np.round(arr)) and "." not in p.read_text():
                arr = arr.astype(np.int64)  # integer labels written as integers
            return arr
    except (ValueError, OSError) as e:
        raise UsageError(f"{what} {path}: cannot read it ({str(e).splitlines()[0]})") from None
    raise UsageError(f"{what} {path}: unknown format {suffix!r}; use .npy, .csv or .txt")


def cmd_compute(args: argparse.Namespace) -> int:
    from .lab import input_kind

    s = _spec(args.name)
    pred = _read_array(args.pred, "--pred")
    target = _read_array(args.target, "--target")
    opts = _parse_sets(args.set or [])
    if "weight" in opts and isinstance(opts["weight"], list):
        opts["weight"] = np.asarray(opts["weight"], dtype=float)
    if "pos_weight" in opts and isinstance(opts["pos_weight"], list):
        opts["pos_weight"] = np.asarray(opts["pos_weight"], dtype=float)
    if np.issubdtype(pred.dtype, np.integer):
        pred = pred.astype(np.float64)
    if (np.issubdtype(target.dtype, np.integer) and target.shape == pred.shape
            and input_kind(s) != "multiclass"):
        target = target.astype(pred.dtype)  # 0/1 labels of a binary / multi-label loss
    try:
        if args.grad:
            from .gradients import value_and_grad

            try:
                vag = value_and_grad(s.fn)
            except ValueError as e:
                raise UsageError(str(e)) from None
            loss, g = vag(pred, target, **opts)
            np.save(args.grad, np.asarray(g))
        else:
            loss = s.fn(pred, target, **opts)
    except TypeError as e:
        raise UsageError(f"{s.name}: {e}") from None
    except ValueError as e:
        raise UsageError(f"{s.name}: {e}") from None
    loss = np.asarray(loss)
    if args.json:
        print(json.dumps({"loss": s.name, "value": loss.tolist(), "options": {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in opts.items()},
            "grad": args.grad}))
    else:
        print(np.array2string(loss, precision=10) if loss.ndim else f"{float(loss):.10g}")
        if args.grad:
            print(f"gradient written to {args.grad}", file=sys.stderr)
    return 0


# --- plot ---------------------------------------------------------------------------------


def _need_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError("plotting needs matplotlib: pip install 'crossent[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cmd_plot(args: argparse.Namespace) -> int:
    from ._samples import true_class_curve

    s = _spec(args.name)
    plt = _need_matplotlib()
    opts = _parse_sets(args.set or [])
    if args.sweep:
        key, eq, values = args.sweep.partition("=")
        if not eq or not values:
            raise UsageError(f"--sweep {args.sweep!r}: expected key=v1,v2,...")
        sweep = (key, [_parse_sets([f"{key}={v}"])[key] for v in values.split(",")])
    elif "focal" in s.name:
        # the figure of Lin et al. 2017: no alpha balancing, gamma in {0, 0.5, 1, 2, 5}
        sweep = ("gamma", [0, 0.5, 1, 2, 5])
        opts.setdefault("alpha", None)
    else:
        sweep = None
    pt = np.linspace(0.001, 0.999, 400)
    fig, (ax_l, ax_g) = plt.subplots(1, 2, figsize=(11, 4.2))
    for value in (sweep[1] if sweep else [None]):
        o = dict(opts)
        if sweep:
            o[sweep[0]] = value
        try:
            curve = true_class_curve(s.name, s.fn, pt, o)
        except (TypeError, ValueError) as e:
            raise UsageError(f"{s.name}: {e}") from None
        if curve is None:
            raise UsageError(f"plot draws losses of a class prediction; {s.name} ({s.family}) "
                             "is not one")
        loss, xlabel = curve
        label = f"{sweep[0]}={value}" if sweep else s.name
        ax_l.plot(pt, loss, label=label)
        # slope against the logit of p_t: d loss / d s with p_t = sigmoid(s)
        logit = np.log(pt) - np.log1p(-pt)
        ax_g.plot(pt, np.gradient(loss, logit), label=label)
    ax_l.set(xlabel=xlabel, ylabel="loss", title=f"{s.name}: loss",
             ylim=(0, 5 if "focal" in s.name else None))
    ax_g.set(xlabel=xlabel, ylabel="d loss / d logit",
             title="gradient w.r.t. the logit of p_t (along the curve)")
    for ax in (ax_l, ax_g):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = args.out or f"{s.name}.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(out)
    return 0


# --- gradcheck ----------------------------------------------------------------------------


def _resolve_callable(name: str) -> tuple[str, Any]:
    """A names-table name, or ``module:function`` for a user's own loss."""
    if ":" in name:
        import importlib

        mod, _, attr = name.partition(":")
        try:
            return name, getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"cannot import {name!r}: {e}") from None
    s = _spec(name)
    return s.name, s.fn


def gradcheck_one(name: str, fn: Any, kind: str | None = None, seed: int = 0,
                  h: float = 1e-6) -> dict[str, Any]:
    """Closed-form gradient vs central finite differences at a random float64 point."""
    from . import _samples
    from .gradients import has_closed_form, value_and_grad

    if not has_closed_form(fn):
        return {"loss": name, "status": "no closed form"}
    args, kw = _samples.sample(kind or name, seed)
    pred, rest = np.array(args[0], dtype=np.float64), args[1:]
    _, g = value_and_grad(fn)(pred, *rest, **kw)
    g = np.asarray(g, dtype=np.float64)
    fd = np.zeros_like(pred)
    flat = pred.reshape(-1)
    for i in range(flat.size):
        up, dn = flat.copy(), flat.copy()
        up[i] += h
        dn[i] -= h
        fd.reshape(-1)[i] = (float(fn(up.reshape(pred.shape), *rest, **kw))
                             - float(fn(dn.reshape(pred.shape), *rest, **kw))) / (2 * h)
    abs_err = float(np.max(np.abs(g - fd))) if g.size else 0.0
    rel_err = abs_err / max(float(np.max(np.abs(fd))), 1e-12)
    ok = g.shape == pred.shape and (abs_err <= 1e-6 or rel_err <= 1e-5)
    return {"loss": name, "status": "ok" if ok else "FAIL", "max_abs_error": abs_err,
            "max_rel_error": rel_err}


def cmd_gradcheck(args: argparse.Namespace) -> int:
    from . import names

    targets = ([_resolve_callable(n) for n in args.names] if args.names
               else [(s.name, s.fn) for s in names.catalog()])
    results = []
    for name, fn in targets:
        try:
            results.append(gradcheck_one(name, fn, args.kind, args.seed))
        except KeyError as e:
            raise UsageError(f"{name}: {e.args[0]}; pass --kind with a known loss's inputs, "
                             "e.g. --kind softmax_cross_entropy") from None
    failed = [r for r in results if r["status"] == "FAIL"]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _table("closed-form gradient vs finite differences (float64)",
               ["loss", "status", "max abs error", "max rel error"],
               [[r["loss"], r["status"], _fmt(r.get("max_abs_error", "-")),
                 _fmt(r.get("max_rel_error", "-"))] for r in results])
    return 1 if failed else 0


# --- bench / train ------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args)


def _progress_factory(enabled: bool):
    if not enabled:
        return None, None
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None, None
    prog = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total} epochs"), TimeElapsedColumn(), transient=False)

    def start(total: int):
        overall = prog.add_task("all runs", total=total)

        def task(key: str):
            prog.update(overall, description=f"training {key}")
            return lambda: prog.advance(overall)

        return task

    return prog, start


def cmd_train(args: argparse.Namespace) -> int:
    from . import lab

    cfg = lab.RunConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        hidden=args.hidden, seed=args.seed)
    if args.quick:
        cfg.epochs = min(cfg.epochs, 30)
    losses = tuple(s.strip() for s in args.losses.split(";")) if args.losses else \
        lab.DEFAULT_LOSSES
    models = tuple(m.strip() for m in args.models.split(","))
    prog, start = _progress_factory(not args.json and not args.no_progress)
    try:
        if prog is not None:
            with prog:
                result = lab.run(losses, models=models, data_path=args.data, label=args.label,
                                 imbalance=args.imbalance, backend=args.backend, config=cfg,
                                 out=args.out, progress=start, plots=not args.no_plots)
        else:
            result = lab.run(losses, models=models, data_path=args.data, label=args.label,
                             imbalance=args.imbalance, backend=args.backend, config=cfg,
                             out=args.out, plots=not args.no_plots)
    except lab.LabError as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps({k: result[k] for k in ("data", "backend", "results", "out")},
                         indent=2))
        return 0
    d = result["data"]
    print(f"data: {d['name']}: {d['train']} train / {d['test']} test rows, {d['classes']} "
          f"classes, train counts {d['train_counts']}; backend {result['backend']}")
    cols = ["loss", "model", "accuracy", "balanced_accuracy", "macro_f1", "rare_recall", "nll",
            "ece", "time_s"]
    _table("test-set results (rare = the rarest third of the classes)", cols,
           [[r[c] if isinstance(r[c], str) else f"{r[c]:.3f}" for c in cols]
            for r in result["results"]])
    print(f"wrote {result['out']}/results.json" + "".join(f", {p}" for p in
                                                         result.get("plots", [])))
    return 0


# --- entry point --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own code)
        self.exit(EXIT_USAGE, f"crossent: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="crossent", description="Cross-entropy-family losses: learn, check, "
                "compare. Any framework's name for a loss is accepted.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    q = sub.add_parser("list", help="every loss by family with its aliases per framework")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("explain", help="formula, gradient, aliases and references of a loss")
    q.add_argument("name", help="any alias, e.g. SoftmaxWithLoss or 'Softmax Loss'")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_explain)

    q = sub.add_parser("compute", help="the loss of predictions in a file")
    q.add_argument("name")
    q.add_argument("--pred", required=True, help=".npy, .csv or .txt")
    q.add_argument("--target", required=True, help=".npy, .csv or .txt")
    q.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="loss option, e.g. --set label_smoothing=0.1 --set weight=1,2,3")
    q.add_argument("--grad", metavar="OUT.npy", help="also write the closed-form gradient")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_compute)

    q = sub.add_parser("plot", help="loss and gradient against the true-class probability")
    q.add_argument("name")
    q.add_argument("--sweep", help="key=v1,v2,... (focal losses default to gamma=0,0.5,1,2,5)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE")
    q.add_argument("--out", help="PNG file (default NAME.png)")
    q.set_defaults(func=cmd_plot)

    q = sub.add_parser("gradcheck", help="closed-form gradients vs finite differences")
    q.add_argument("names", nargs="*", help="losses (default: all), or module:function")
    q.add_argument("--kind", help="use the example inputs of this loss (for module:function)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_gradcheck)

    q = sub.add_parser("bench", help="run the benchmarks in benchmarks/")
    q.add_argument("which", nargs="*", help="benchmark names (default: all)")
    q.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    q.add_argument("--list", action="store_true", help="list the benchmarks")
    q.add_argument("--out", help="results folder (default benchmarks/results)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_bench)

    q = sub.add_parser("train", help="train classifiers with several losses and compare them")
    q.add_argument("--data", help="CSV file (default: built-in long-tailed digits)")
    q.add_argument("--label", help="label column of --data (default: the last)")
    q.add_argument("--losses", help="';'-separated NAME[:key=value,...], e.g. "
                   "'CrossEntropyLoss;softmax_focal_loss:gamma=2'")
    q.add_argument("--models", default="linear,mlp", help="linear and/or mlp")
    q.add_argument("--backend", default="auto", help="auto | torch | numpy")
    q.add_argument("--imbalance", type=float, default=10.0,
                   help="largest / smallest class size of the built-in data")
    q.add_argument("--epochs", type=int, default=80)
    q.add_argument("--lr", type=float, default=0.01)
    q.add_argument("--batch-size", type=int, default=128)
    q.add_argument("--hidden", type=int, default=64)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", help="output folder (default ./crossent-runs/<timestamp>)")
    q.add_argument("--quick", action="store_true", help="at most 30 epochs")
    q.add_argument("--no-plots", action="store_true")
    q.add_argument("--no-progress", action="store_true")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"crossent: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
