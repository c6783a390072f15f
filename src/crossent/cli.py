"""The ``crossent`` command: list, explain, compute, plot, gradcheck, bench, train.

Every user error (missing file, unreadable format, shape mismatch, unknown loss or option)
is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from ._errors import UsageError  # re-exported: callers catch cli.UsageError

if TYPE_CHECKING:
    from rich.progress import Progress

EXIT_USAGE = 2

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


def _json_safe(obj: Any) -> Any:
    """``obj`` with NumPy values made plain and every NaN or infinity made None.

    JSON has no NaN: ``json.dumps`` would write a bare ``NaN`` that strict parsers (and most
    languages other than Python) reject, so a number that is not finite is written as null.
    """
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``obj``: what every JSON output of the command goes through."""
    return json.dumps(_json_safe(obj), indent=indent, allow_nan=False)


def _existing_ancestor(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_file(path: str, what: str, formats: Sequence[str],
                default_suffix: str | None = None) -> Path:
    """The file a writer may write ``path`` to, checked before any work is done.

    ``formats`` are the extensions (no dot, lower case) the writer can produce; a path without
    one gets ``default_suffix`` where given, so that the path reported is the path written.
    """
    p = Path(path)
    if not p.suffix and default_suffix and not p.is_dir():
        p = p.with_name(p.name + default_suffix)
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a directory; give a file name")
    if not p.parent.exists():
        raise UsageError(f"{what} {path}: directory {p.parent} does not exist")
    if not p.parent.is_dir():
        raise UsageError(f"{what} {path}: {p.parent} is not a directory")
    ext = p.suffix.lower().lstrip(".")
    if ext not in formats:
        given = f"unsupported extension .{ext}" if ext else "no extension"
        raise UsageError(f"{what} {path}: {given}; use "
                         + ", ".join(f".{f}" for f in formats))
    return p


def output_dir(path: str, what: str) -> Path:
    """A folder a writer may create (with its parents) or write into."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {path}: exists and is not a directory")
    base = _existing_ancestor(p)
    if base.exists() and not base.is_dir():
        raise UsageError(f"{what} {path}: {base} is not a directory")
    return p


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
            values = [parse_option(key, v) for v in value.split(",")]
            # the list options (weight, pos_weight) are per-class numbers
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))]
            if bad:
                raise UsageError(f"--set {item!r}: a list holds numbers; {bad[0]!r} is not one")
            out[key] = np.asarray(values, dtype=float)
        else:
            out[key] = parse_option(key, value)
    return out


# --- list / explain -----------------------------------------------------------------------

LIST_FRAMEWORKS = ("PyTorch", "TensorFlow", "Keras", "Caffe", "Optax")


def cmd_list(args: argparse.Namespace) -> int:
    from . import names

    specs = names.catalog()
    if args.json:
        print(dumps_json([{"name": s.name, "family": s.family, "formula": s.formula,
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
    return "autodiff" if spec.differentiable else "none"


def cmd_explain(args: argparse.Namespace) -> int:
    s = _spec(args.name)
    info = {"name": s.name, "family": s.family, "formula": s.formula, "gradient": s.gradient,
            "closed_form_gradient": s.grad is not None,
            "aliases": {k: list(v) for k, v in s.aliases.items()},
            "notes": list(s.notes), "references": list(s.references),
            "signature": _signature(s.fn), "usage": usage_lines(s)}
    if args.json:
        print(dumps_json(info, indent=2))
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
    print("\nusage:")
    for line in info["usage"]:
        print(f"  {line}")
    if s.notes:
        print("\ndifferences between frameworks:")
        for n in s.notes:
            print(f"  - {n}")
    if s.references:
        print("\nreferences:")
        for r in s.references:
            print(f"  - {r}")
    return 0


def _required(fn: Any, skip: int = 0) -> str:
    """The names of ``fn``'s required positional parameters (after the first ``skip``)."""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return "..."
    return ", ".join(p.name for p in params if p.default is p.empty
                     and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def usage_lines(spec: Any) -> list[str]:
    """How to call a loss: the generic function, then each PyTorch entry point with its
    import (a Module as ``Name(required init args)(forward args)``)."""
    import importlib

    from ._loss_table import USAGE_CALLS

    lines = ["import crossent",
             f"loss = crossent.{spec.name}({_required(spec.fn)})  # NumPy, PyTorch, JAX, "
             "any array-API library"]
    for entry in spec.torch_entry_points:
        dotted, _, option = entry.partition(" ")
        module, _, attr = dotted.rpartition(".")
        lines.append(f"from {module} import {attr}")
        if dotted in USAGE_CALLS:
            lines.append(USAGE_CALLS[dotted])
            continue
        try:
            obj: Any = getattr(importlib.import_module(module), attr)
        except ImportError:
            lines.append(f"loss = {attr}(...)  # needs PyTorch: pip install 'crossent[torch]'")
            continue
        if isinstance(obj, type):
            cls: Any = obj  # a Module class: its constructor, then its forward
            init = ", ".join(a for a in (_required(cls.__init__, 1), option) if a)
            lines.append(f"loss = {attr}({init})({_required(cls.forward, 1)})")
        else:
            args = ", ".join(a for a in (_required(obj), option) if a)
            lines.append(f"loss = {attr}({args})")
    return lines


def _signature(fn: Any) -> str:
    import inspect

    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


# --- compute ------------------------------------------------------------------------------


ARRAY_FORMATS = ("npy", "csv", "txt", "tsv")
_TEXT_DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": None}


def _read_array(path: str, what: str) -> np.ndarray:
    """The numeric array in ``path``; every way of failing to get one is a UsageError."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} {path}: no such file")
    suffix = p.suffix.lower()
    if suffix.lstrip(".") not in ARRAY_FORMATS:
        raise UsageError(f"{what} {path}: unknown format {suffix!r}; use .npy, .csv or .txt")
    try:
        # loadtxt warns (on stderr) about an empty file: the emptiness is reported below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if suffix == ".npy":
                arr = np.load(p, allow_pickle=False)
            else:
                arr = np.loadtxt(p, delimiter=_TEXT_DELIMITERS[suffix], ndmin=1)
    except (ValueError, OSError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{what} {path}: cannot read it ({first})") from None
    if not isinstance(arr, np.ndarray):  # np.load opens a .npz archive whatever its name
        arr.close()
        raise UsageError(f"{what} {path}: is an .npz archive, not one .npy array; save the "
                         "array with np.save")
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise UsageError(f"{what} {path}: holds {arr.dtype} values, not numbers")
    if arr.size == 0:
        raise UsageError(f"{what} {path}: holds no numbers")
    if (suffix != ".npy" and np.all(arr == np.round(arr)) and "." not in p.read_text()):
        arr = arr.astype(np.int64)  # integer labels written as integers
    return arr


def _write_array(p: Path, arr: np.ndarray, what: str) -> None:
    """Write ``arr`` in the format ``p``'s extension names (checked by ``output_file``)."""
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            # a file object, because np.save appends .npy to a name not ending in exactly that
            with p.open("wb") as f:
                np.save(f, arr, allow_pickle=False)
        else:
            np.savetxt(p, arr, delimiter=_TEXT_DELIMITERS[suffix] or " ")
    except ValueError as e:  # savetxt holds 1-D and 2-D arrays only
        raise UsageError(f"{what} {p}: cannot write a {arr.ndim}-D array as text ({e}); use "
                         ".npy") from None
    except OSError as e:
        raise UsageError(f"{what} {p}: cannot write it ({e.strerror or e})") from None


def cmd_compute(args: argparse.Namespace) -> int:
    from .lab import input_kind

    s = _spec(args.name)
    grad_path = output_file(args.grad, "--grad", ARRAY_FORMATS) if args.grad else None
    pred = _read_array(args.pred, "--pred")
    target = _read_array(args.target, "--target")
    opts = _parse_sets(args.set or [])
    if np.issubdtype(pred.dtype, np.integer):
        pred = pred.astype(np.float64)
    if (np.issubdtype(target.dtype, np.integer) and target.shape == pred.shape
            and input_kind(s) != "multiclass"):
        target = target.astype(pred.dtype)  # 0/1 labels of a binary / multi-label loss
    try:
        if grad_path is not None:
            from .gradients import value_and_grad

            try:
                vag = value_and_grad(s.fn)
            except ValueError as e:
                raise UsageError(str(e)) from None
            loss, g = vag(pred, target, **opts)
        else:
            loss = s.fn(pred, target, **opts)
    except TypeError as e:
        raise UsageError(f"{s.name}: {e}") from None
    except ValueError as e:
        raise UsageError(f"{s.name}: {e}") from None
    if grad_path is not None:
        _write_array(grad_path, np.asarray(g), "--grad")
    loss = np.asarray(loss)
    if args.json:
        print(dumps_json({"loss": s.name, "value": loss, "options": opts,
                          "grad": None if grad_path is None else str(grad_path)}))
    else:
        print(np.array2string(loss, precision=10) if loss.ndim else f"{float(loss):.10g}")
        if grad_path is not None:
            print(f"gradient written to {grad_path}", file=sys.stderr)
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
    from matplotlib.backend_bases import FigureCanvasBase

    # what savefig can write from the Agg canvas (it switches canvas for pdf, svg, ps)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    out = output_file(args.out or f"{s.name}.png", "--out", formats, default_suffix=".png")
    opts = _parse_sets(args.set or [])
    if args.sweep:
        key, eq, values = args.sweep.partition("=")
        if not eq or not values:
            raise UsageError(f"--sweep {args.sweep!r}: expected key=v1,v2,...")
        sweep = (key, [_parse_sets([f"{key}={v}"])[key] for v in values.split(",")])
    elif s.family == "focal":
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
             ylim=(0, 5 if s.family == "focal" else None))
    ax_g.set(xlabel=xlabel, ylabel="d loss / d logit",
             title="gradient w.r.t. the logit of p_t (along the curve)")
    for ax in (ax_l, ax_g):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except (OSError, RuntimeError, ValueError) as e:  # no permission; pgf without LaTeX
        raise UsageError(f"--out {out}: cannot write it ({str(e).splitlines()[0]})") from None
    finally:
        plt.close(fig)
    print(out)
    return 0


# --- gradcheck ----------------------------------------------------------------------------


def _resolve_callable(name: str) -> tuple[str, Any]:
    """A names-table name, or ``module:function`` for a user's own loss."""
    if ":" in name:
        import importlib

        mod, _, attr = name.partition(":")
        if not mod.strip() or not attr.strip():
            raise UsageError(f"{name!r}: expected a loss name or module:function, e.g. "
                             "mypkg.losses:my_loss")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"cannot import {name!r}: {e}") from None
        if not callable(fn):
            raise UsageError(f"{name!r} is a {type(fn).__name__}, not a function")
        return name, fn
    s = _spec(name)
    return s.name, s.fn


def gradcheck_one(name: str, fn: Any, kind: str | None = None, seed: int = 0,
                  h: float = 1e-6) -> dict[str, Any]:
    """Closed-form gradient vs central finite differences at a random float64 point."""
    from . import _samples
    from .gradients import default_argnum, has_closed_form, value_and_grad

    if not has_closed_form(fn):
        return {"loss": name, "status": "no closed form"}
    args, kw = _samples.sample(kind or name, seed)
    pos = default_argnum(fn)  # the prediction; y_prob for a labels-first metric
    pred = np.array(args[pos], dtype=np.float64)

    def call(x: np.ndarray) -> Any:
        return fn(*args[:pos], x, *args[pos + 1:], **kw)

    _, g = value_and_grad(fn)(*args[:pos], pred, *args[pos + 1:], **kw)
    g = np.asarray(g, dtype=np.float64)
    fd = np.zeros_like(pred)
    flat = pred.reshape(-1)
    with warnings.catch_warnings():  # probes off the simplex may warn (rows not summing to 1)
        warnings.simplefilter("ignore", UserWarning)
        for i in range(flat.size):
            up, dn = flat.copy(), flat.copy()
            up[i] += h
            dn[i] -= h
            fd.reshape(-1)[i] = (float(call(up.reshape(pred.shape)))
                                 - float(call(dn.reshape(pred.shape)))) / (2 * h)
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
        print(dumps_json(results, indent=2))
    else:
        _table("closed-form gradient vs finite differences (float64)",
               ["loss", "status", "max abs error", "max rel error"],
               [[r["loss"], r["status"], _fmt(r.get("max_abs_error", "-")),
                 _fmt(r.get("max_rel_error", "-"))] for r in results])
    return 1 if failed else 0


# --- bench / train ------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    """Build (or find in the cache) the C++ CPU kernels now, so that no later run (a training
    step, a benchmark, the first of several DDP ranks) pays for the compile."""
    try:
        from .torch import _ext
    except ImportError:
        raise UsageError("crossent build needs PyTorch: pip install 'crossent[torch]'") from None
    ok = _ext.load()
    info = _ext.info()
    if args.json:
        print(json.dumps(info, indent=2))
    elif ok:
        built = info["build_seconds"]
        how = f"built in {built} s" if built is not None else "found in the cache"
        print(f"C++ kernel ready ({how}): {info['library']}")
    else:
        print(f"C++ kernel unavailable: {info['error']}; the torch-ops path runs instead",
              file=sys.stderr)
    # switched off on purpose (CROSSENT_NO_EXT) is not a failure; a broken build is
    return 0 if ok or os.environ.get("CROSSENT_NO_EXT", "") not in ("", "0") else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args)


_Progress = Callable[[int], Callable[[str], Callable[[], None]]]


def _progress_factory(enabled: bool) -> tuple[Progress | None, _Progress | None]:
    """A rich progress bar (or None) and the ``progress`` callback ``lab.run`` takes."""
    if not enabled:
        return None, None
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None, None
    prog = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total} epochs"), TimeElapsedColumn(), transient=False)

    def start(total: int) -> Callable[[str], Callable[[], None]]:
        # shown from the first epoch on, so that an error in the data or a loss found before
        # training is not preceded by an empty bar
        prog.start()
        overall = prog.add_task("all runs", total=total)

        def task(key: str) -> Callable[[], None]:
            prog.update(overall, description=f"training {key}")
            return lambda: prog.advance(overall)

        return task

    return prog, start


def cmd_train(args: argparse.Namespace) -> int:
    from . import lab

    if args.out:
        output_dir(args.out, "--out")
    cfg = lab.RunConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        hidden=args.hidden, seed=args.seed)
    if args.quick:
        cfg.epochs = min(cfg.epochs, 30)
    losses = tuple(s.strip() for s in args.losses.split(";")) if args.losses else \
        lab.DEFAULT_LOSSES
    models = tuple(m.strip() for m in args.models.split(","))
    prog, start = _progress_factory(not args.json and not args.no_progress)
    try:
        result = lab.run(losses, models=models, data_path=args.data, label=args.label,
                         imbalance=args.imbalance, backend=args.backend, config=cfg,
                         out=args.out, progress=start, plots=not args.no_plots)
    except lab.LabError as e:
        raise UsageError(str(e)) from None
    finally:
        # stop() prints a newline off a terminal even for a bar that never started
        if prog is not None and prog.live.is_started:
            prog.stop()
    if args.json:
        print(dumps_json({k: result[k] for k in ("data", "backend", "results", "out")},
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


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (a negative seed or a zero batch size would
    otherwise fail deep inside NumPy)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse's own code)
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
    q.add_argument("--grad", metavar="OUT.npy", help="also write the closed-form gradient "
                   "(.npy, or .csv, .tsv, .txt text)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_compute)

    q = sub.add_parser("plot", help="loss and gradient against the true-class probability")
    q.add_argument("name")
    q.add_argument("--sweep", help="key=v1,v2,... (focal losses default to gamma=0,0.5,1,2,5)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE")
    q.add_argument("--out", help="image file, .png, .pdf, .svg... (default NAME.png)")
    q.set_defaults(func=cmd_plot)

    q = sub.add_parser("gradcheck", help="closed-form gradients vs finite differences")
    q.add_argument("names", nargs="*", help="losses (default: all), or module:function")
    q.add_argument("--kind", help="use the example inputs of this loss (for module:function)")
    q.add_argument("--seed", type=_int_at_least(0), default=0)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_gradcheck)

    q = sub.add_parser("build", help="compile the PyTorch CPU kernels now (else at first use)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_build)

    q = sub.add_parser("bench", help="run the benchmarks that ship with crossent")
    q.add_argument("which", nargs="*", help="benchmark names (default: all)")
    q.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    q.add_argument("--list", action="store_true", help="list the benchmarks")
    q.add_argument("--out", help="results folder (default ~/.cache/crossent/bench)")
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
    q.add_argument("--epochs", type=_int_at_least(1), default=80)
    q.add_argument("--lr", type=_positive_float, default=0.01)
    q.add_argument("--batch-size", type=_int_at_least(1), default=128)
    q.add_argument("--hidden", type=_int_at_least(1), default=64)
    q.add_argument("--seed", type=_int_at_least(0), default=0)
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
