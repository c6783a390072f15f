"""``crossent train``: train the same classifiers with several losses and compare them.

The default data set is scikit-learn's digits (it ships inside the package, so this runs
offline; scikit-learn is needed for nothing else, so ``--data`` runs without it), made
long-tailed with an imbalance ratio so that the losses built for imbalance
(focal, label smoothing, poly-1) have something to show. Models are softmax regression and a
one-hidden-layer MLP, trained with PyTorch autograd when torch is installed or with NumPy and
crossent's closed-form gradients otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_LOSSES = (
    "softmax_cross_entropy",
    "softmax_cross_entropy:label_smoothing=0.1",
    "softmax_focal_loss:gamma=2",
    "poly1_cross_entropy:epsilon=1",
)


class LabError(ValueError):
    """A user-facing error of ``crossent train`` (bad data, loss or option)."""


# --- data ---------------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _long_tail(y: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Indices keeping ``n_max * ratio**(-k/(C-1))`` samples of the k-th class."""
    classes = np.unique(y)
    n_max = min(int(np.sum(y == c)) for c in classes)
    keep = []
    for k, c in enumerate(classes):
        n_k = max(2, int(round(n_max * ratio ** (-k / max(len(classes) - 1, 1)))))
        idx = np.flatnonzero(y == c)
        keep.append(rng.choice(idx, size=min(n_k, idx.size), replace=False))
    return np.sort(np.concatenate(keep))


def _stratified_split(y: np.ndarray, test_size: float, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices holding each class in proportion, at least one row per side.

    Written here rather than taken from scikit-learn so that a user's own table (``--data``)
    trains without it.
    """
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = min(max(1, int(round(test_size * idx.size))), idx.size - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return (x_train - mu) / sd, (x_test - mu) / sd


def load_data(path: str | None = None, *, label: str | None = None, imbalance: float = 10.0,
              test_size: float = 0.3, seed: int = 0) -> Dataset:
    """The built-in long-tailed digits, or a CSV table with a label column."""
    rng = np.random.default_rng(seed)
    if path is None:
        if not imbalance >= 1:
            raise LabError(f"--imbalance must be >= 1, got {imbalance}")
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise LabError("the built-in digits data needs scikit-learn: pip install "
                           "'crossent[cli]' (or train on your own table with --data FILE.csv)"
                           ) from None
        d = load_digits()
        x, y_raw = d.data.astype(np.float64), d.target
        name = f"digits (long-tailed, imbalance {imbalance:g})"
        keep = _long_tail(y_raw, imbalance, rng) if imbalance > 1 else np.arange(y_raw.size)
        x, y_raw = x[keep], y_raw[keep]
    else:
        x, y_raw, name = _read_csv(path, label)
    classes, y = np.unique(y_raw, return_inverse=True)
    if classes.size < 2:
        raise LabError(f"the label column must hold at least 2 classes, got {classes.size}")
    counts = np.bincount(y)
    if counts.min() < 2:
        raise LabError(f"class {classes[counts.argmin()]!r} has fewer than 2 rows: cannot split")
    tr, te = _stratified_split(y, test_size, rng)
    xtr, xte = _standardise(x[tr], x[te])
    return Dataset(name, xtr, y[tr], xte, y[te], [str(c) for c in classes])


def _read_csv(path: str, label: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Features and labels of a CSV table; every fault of the file is a LabError naming it."""
    import csv

    p = Path(path)
    if not p.is_file():
        raise LabError(f"--data {path}: no such file")
    try:
        with p.open(newline="") as f:
            reader = csv.reader(f)
            # (line number, cells) of the non-blank rows: messages point at the line to fix
            rows = [(reader.line_num, r) for r in reader if any(v.strip() for v in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabError(f"--data {path}: cannot read it as CSV ({e})") from None
    if not rows:
        raise LabError(f"--data {path}: is empty; expected a header row and data rows")
    (_, header), body = rows[0], rows[1:]
    if len(body) < 2:
        raise LabError(f"--data {path}: needs a header row and at least 2 data rows")
    col = header[-1] if label is None else label
    if col not in header:
        raise LabError(f"--label {col!r} is not a column of {path}; columns: {', '.join(header)}")
    j = header.index(col)
    if len(header) < 2:
        raise LabError(f"--data {path}: no feature columns besides the label {col!r}")
    feats = np.empty((len(body), len(header) - 1))
    labels = []
    for k, (line, r) in enumerate(body):
        if len(r) != len(header):
            raise LabError(f"--data {path}: line {line} has {len(r)} fields, the header has "
                           f"{len(header)} (a missing label or feature?)")
        if not r[j].strip():
            raise LabError(f"--data {path}: line {line} has no label in column {col!r}")
        cells = [(header[i], v) for i, v in enumerate(r) if i != j]
        for i, (name, v) in enumerate(cells):
            try:
                feats[k, i] = float(v)
            except ValueError:
                raise LabError(f"--data {path}: feature columns must be numeric; line {line}, "
                               f"column {name!r} holds {v!r}") from None
            # a NaN would train to NaN weights and NaN metrics without a word
            if not math.isfinite(feats[k, i]):
                raise LabError(f"--data {path}: line {line}, column {name!r} holds {v!r}; "
                               "features must be finite numbers (drop or fill such rows)")
        labels.append(r[j])
    return feats, np.array(labels), p.name


# --- losses ---------------------------------------------------------------------------------


@dataclass
class LossChoice:
    label: str
    spec: Any  # names.LossSpec
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def sigmoid(self) -> bool:
        """One independent score per class (one-hot targets), not a softmax over classes."""
        return input_kind(self.spec) == "multilabel"


def input_kind(spec: Any) -> str | None:
    """"multiclass" for (logits, integer labels), "multilabel" for (logits, 0/1 targets): the
    names table's ``task`` field."""
    return spec.task


STRING_OPTIONS = ("reduction",)  # options whose values are words, "none" included


def parse_option(key: str, text: str) -> Any:
    """A ``key=value`` option's value: None, bool, int, float, or the text itself."""
    if key in STRING_OPTIONS:
        return text
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_loss(text: str) -> LossChoice:
    """``NAME[:key=value,...]`` with NAME any framework's name for a loss."""
    from . import names

    name, _, opts = text.partition(":")
    try:
        spec = names.get(name.strip())
    except KeyError as e:
        raise LabError(str(e.args[0]) if e.args else str(e)) from None
    options = {}
    for item in filter(None, (s.strip() for s in opts.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise LabError(f"loss option {item!r} in {text!r} must be key=value")
        options[key.strip()] = parse_option(key.strip(), value.strip())
    if input_kind(spec) is None:
        raise LabError(
            f"{spec.name} takes {spec.inputs}; train compares classification losses on "
            "logits (softmax, sigmoid, focal, poly-1, margin on scores...)"
        )
    return LossChoice(text, spec, options)


# --- models -------------------------------------------------------------------------------


def _init_params(model: str, d: int, c: int, hidden: int, rng: np.random.Generator
                 ) -> dict[str, np.ndarray]:
    if model == "linear":
        return {"W": rng.normal(0, 0.01, (d, c)), "b": np.zeros(c)}
    if model == "mlp":
        return {"W1": rng.normal(0, math.sqrt(2.0 / d), (d, hidden)), "b1": np.zeros(hidden),
                "W2": rng.normal(0, math.sqrt(1.0 / hidden), (hidden, c)), "b2": np.zeros(c)}
    raise LabError(f"--models: unknown model {model!r}; choose from linear, mlp")


class _NumpyModel:
    """Forward and manual backward for the two models, float64, Adam."""

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.p = {k: v.copy() for k, v in params.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t, self.lr = 0, lr

    def logits(self, x: np.ndarray) -> np.ndarray:
        p = self.p
        if "W" in p:
            return x @ p["W"] + p["b"]
        return np.maximum(x @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]

    def step(self, x: np.ndarray, g_logits: np.ndarray, weight_decay: float) -> None:
        p = self.p
        if "W" in p:
            grads = {"W": x.T @ g_logits, "b": g_logits.sum(0)}
        else:
            h_pre = x @ p["W1"] + p["b1"]
            h = np.maximum(h_pre, 0)
            gh = (g_logits @ p["W2"].T) * (h_pre > 0)
            grads = {"W2": h.T @ g_logits, "b2": g_logits.sum(0), "W1": x.T @ gh,
                     "b1": gh.sum(0)}
        self.t += 1
        b1, b2 = 0.9, 0.999
        for k, g in grads.items():
            if k.startswith("W"):
                g = g + weight_decay * p[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            mh = self.m[k] / (1 - b1 ** self.t)
            vh = self.v[k] / (1 - b2 ** self.t)
            p[k] = p[k] - self.lr * mh / (np.sqrt(vh) + 1e-8)


def _probabilities(logits: np.ndarray, sigmoid: bool) -> np.ndarray:
    from .activations import sigmoid as sig
    from .activations import softmax

    if sigmoid:  # one-vs-rest scores, renormalised to a distribution for the metrics
        s = sig(logits)
        return s / np.maximum(s.sum(-1, keepdims=True), 1e-300)
    return softmax(logits)


# --- metrics ------------------------------------------------------------------------------


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    acc, cnt = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        acc.append(float(correct[m].mean()) if m.any() else float("nan"))
        cnt.append(int(m.sum()))
    return {"edges": edges.tolist(), "accuracy": acc, "count": cnt}


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """The mean recall over the classes present in ``y`` (scikit-learn's definition)."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """The unweighted mean F1 over the classes in ``y`` or ``pred`` (scikit-learn's macro F1
    with zero_division=0)."""
    f1 = []
    for c in np.union1d(y, pred):
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)  # 2 tp + fp + fn
        f1.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def metrics(probs: np.ndarray, y: np.ndarray, rare: Sequence[int]) -> dict[str, float]:
    pred = probs.argmax(1)
    p_true = np.clip(probs[np.arange(y.size), y], 1e-300, 1.0)
    rare_mask = np.isin(y, rare)
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "macro_f1": _macro_f1(y, pred),
        "rare_recall": float((pred[rare_mask] == y[rare_mask]).mean()) if rare_mask.any()
        else float("nan"),
        "nll": float(-np.log(p_true).mean()),
        "ece": expected_calibration_error(probs, y),
    }


# --- training -----------------------------------------------------------------------------


@dataclass
class RunConfig:
    epochs: int = 80
    lr: float = 0.01
    batch_size: int = 128
    hidden: int = 64
    weight_decay: float = 1e-4
    seed: int = 0


def _targets_for(choice: LossChoice, y: np.ndarray, c: int, xp_float: Callable) -> Any:
    return xp_float(np.eye(c)[y]) if choice.sigmoid else y


def _train_numpy(choice: LossChoice, data: Dataset, model: str, cfg: RunConfig,
                 tick: Callable[[], None]) -> tuple[np.ndarray, list[dict[str, float]]]:
    from .gradients import value_and_grad

    try:
        vag = value_and_grad(choice.spec.fn)
    except ValueError as e:
        raise LabError(f"--backend numpy needs a closed-form gradient: {e}") from None
    rng = np.random.default_rng(cfg.seed)
    net = _NumpyModel(_init_params(model, data.x_train.shape[1], data.num_classes, cfg.hidden,
                                   rng), cfg.lr)
    history = []
    n = data.y_train.size
    for epoch in range(cfg.epochs):
        order = rng.permutation(n)
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            xb = data.x_train[idx]
            tb = _targets_for(choice, data.y_train[idx], data.num_classes, lambda a: a)
            loss, g = vag(net.logits(xb), tb, **choice.options)
            total += float(loss) * idx.size
            net.step(xb, np.asarray(g), cfg.weight_decay)
        history.append(_epoch_record(epoch, total / n, net.logits(data.x_test), data, choice))
        tick()
    return net.logits(data.x_test), history


def _train_torch(choice: LossChoice, data: Dataset, model: str, cfg: RunConfig,
                 tick: Callable[[], None]) -> tuple[np.ndarray, list[dict[str, float]]]:
    import torch

    # these models are tiny: intra-op threads only add wake-up latency (8 ms per step on a
    # loaded 2-core machine against 0.2 ms on one thread)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_torch_loop(choice, data, model, cfg, tick)
    finally:
        torch.set_num_threads(threads)


def _train_torch_loop(choice: LossChoice, data: Dataset, model: str, cfg: RunConfig,
                      tick: Callable[[], None]) -> tuple[np.ndarray, list[dict[str, float]]]:
    import torch

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    params = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True)
              for k, v in _init_params(model, data.x_train.shape[1], data.num_classes,
                                       cfg.hidden, rng).items()}

    def forward(x: torch.Tensor) -> torch.Tensor:
        if "W" in params:
            return x @ params["W"] + params["b"]
        return torch.relu(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]

    decay = [v for k, v in params.items() if k.startswith("W")]
    rest = [v for k, v in params.items() if not k.startswith("W")]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    xtr = torch.tensor(data.x_train, dtype=torch.float32)
    xte = torch.tensor(data.x_test, dtype=torch.float32)
    ytr = torch.tensor(data.y_train)
    fn = choice.spec.fn
    history = []
    n = ytr.numel()
    for epoch in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(n))
        total = 0.0
        for s in range(0, n, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            tb = (torch.nn.functional.one_hot(ytr[idx], data.num_classes).float()
                  if choice.sigmoid else ytr[idx])
            loss = fn(forward(xtr[idx]), tb, **choice.options)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        with torch.no_grad():
            test_logits = forward(xte).double().numpy()
        history.append(_epoch_record(epoch, total / n, test_logits, data, choice))
        tick()
    return test_logits, history


def _epoch_record(epoch: int, train_loss: float, test_logits: np.ndarray, data: Dataset,
                  choice: LossChoice) -> dict[str, float]:
    probs = _probabilities(test_logits, choice.sigmoid)
    p_true = np.clip(probs[np.arange(data.y_test.size), data.y_test], 1e-300, 1)
    return {"epoch": epoch + 1, "train_loss": train_loss,
            "test_accuracy": float((probs.argmax(1) == data.y_test).mean()),
            "test_nll": float(-np.log(p_true).mean())}


def check_loss(choice: LossChoice, num_classes: int, backend: str) -> None:
    """Call the loss once on two rows the way its trainer will, options and all.

    So that a bad option or a loss the backend cannot train fails before any training, not
    after the runs before it (and as one line, not a traceback from inside a training loop).
    """
    y = np.arange(2) % num_classes
    target = _targets_for(choice, y, num_classes, lambda a: a)
    if backend != "torch":
        from .gradients import value_and_grad

        try:
            vag = value_and_grad(choice.spec.fn)
        except ValueError as e:
            raise LabError(f"--backend numpy needs a closed-form gradient: {e}") from None
    try:
        if backend == "torch":
            import torch

            x = torch.zeros((2, num_classes), requires_grad=True)
            t = torch.from_numpy(target).float() if choice.sigmoid else torch.from_numpy(y)
            loss = choice.spec.fn(x, t, **choice.options)
        else:
            loss, _ = vag(np.zeros((2, num_classes)), target, **choice.options)
    except (TypeError, ValueError) as e:
        raise LabError(f"loss {choice.label!r}: {str(e).splitlines()[0]}") from None
    shape = tuple(np.shape(loss))
    if shape:
        raise LabError(f"loss {choice.label!r}: training needs one number per batch, got shape "
                       f"{shape} (leave reduction at 'mean' or 'sum')")
    if backend == "torch":
        loss.backward()


def resolve_backend(backend: str) -> str:
    if backend not in ("auto", "torch", "numpy"):
        raise LabError(f"--backend must be auto, torch or numpy, got {backend!r}")
    if backend == "numpy":
        return "numpy"
    try:
        import torch  # noqa: F401
    except ImportError:
        if backend == "torch":
            raise LabError("--backend torch: PyTorch is not installed "
                           "(pip install 'crossent[torch]')") from None
        return "numpy"
    return "torch"


def run(losses: Sequence[str] = DEFAULT_LOSSES, *, models: Sequence[str] = ("linear", "mlp"),
        data_path: str | None = None, label: str | None = None, imbalance: float = 10.0,
        backend: str = "auto", config: RunConfig | None = None, out: str | Path | None = None,
        progress: Callable[[int], Callable[[str], Callable[[], None]]] | None = None,
        plots: bool = True) -> dict[str, Any]:
    """Train every (loss, model) pair on the same split and write results.json and plots."""
    cfg = config or RunConfig()
    choices = []
    for text in losses:
        try:
            choices.append(parse_loss(text))
        except LabError as e:
            if text.startswith("poly1") and losses is DEFAULT_LOSSES:
                continue  # poly-1 joins the default comparison only where crossent has it
            raise e
    for m in models:
        if m not in ("linear", "mlp"):
            raise LabError(f"--models: unknown model {m!r}; choose from linear, mlp")
    be = resolve_backend(backend)
    data = load_data(data_path, label=label, imbalance=imbalance, seed=cfg.seed)
    for choice in choices:
        check_loss(choice, data.num_classes, be)
    out_dir = Path(out) if out else Path("crossent-runs") / time.strftime("%Y%m%d-%H%M%S")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabError(f"--out {out_dir}: cannot create it ({e.strerror or e})") from None
    counts = np.bincount(data.y_train, minlength=data.num_classes)
    rare = [int(c) for c in np.argsort(counts, kind="stable")[:max(1, data.num_classes // 3)]]
    trainer = _train_torch if be == "torch" else _train_numpy
    if be == "torch":
        from .torch import _ext

        _ext.load()  # a first-use build of the kernels is not part of any run's time
    start_task = progress(len(choices) * len(models) * cfg.epochs) if progress else None
    rows, curves, diagrams = [], {}, {}
    for choice in choices:
        for model in models:
            key = f"{choice.label} | {model}"
            tick = start_task(key) if start_task else (lambda: None)
            t0 = time.perf_counter()
            try:
                test_logits, history = trainer(choice, data, model, cfg, tick)
            except TypeError as e:
                raise LabError(f"loss {choice.label!r}: bad option ({e})") from None
            elapsed = time.perf_counter() - t0
            probs = _probabilities(test_logits, choice.sigmoid)
            row = {"loss": choice.label, "crossent": choice.spec.name, "model": model,
                   **metrics(probs, data.y_test, rare), "time_s": elapsed}
            rows.append(row)
            curves[key] = history
            diagrams[key] = reliability(probs, data.y_test)
    result = {
        "data": {"name": data.name, "train": int(data.y_train.size),
                 "test": int(data.y_test.size), "classes": data.num_classes,
                 "train_counts": counts.tolist(), "rare_classes": rare},
        "backend": be, "config": cfg.__dict__, "results": rows, "curves": curves,
        "reliability": diagrams,
    }
    from .cli import dumps_json

    (out_dir / "results.json").write_text(dumps_json(result, indent=2))
    result["out"] = str(out_dir)
    if plots:
        result["plots"] = _plot(result, out_dir)
    return result


def _plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    models = sorted({r["model"] for r in result["results"]})
    fig, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 7), squeeze=False)
    for j, model in enumerate(models):
        for key, hist in result["curves"].items():
            if not key.endswith(f"| {model}"):
                continue
            ep = [h["epoch"] for h in hist]
            lab = key.rsplit(" | ", 1)[0]
            axes[0, j].plot(ep, [h["test_nll"] for h in hist], label=lab)
            axes[1, j].plot(ep, [h["test_accuracy"] for h in hist], label=lab)
        axes[0, j].set_title(f"{model}: test NLL")
        axes[1, j].set_title(f"{model}: test accuracy")
        axes[1, j].set_xlabel("epoch")
        axes[0, j].legend(fontsize=7)
    fig.suptitle(result["data"]["name"])
    fig.tight_layout()
    path = out_dir / "learning_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    files.append(str(path))

    keys = list(result["reliability"])
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        d = result["reliability"][key]
        edges = np.array(d["edges"])
        mids = (edges[:-1] + edges[1:]) / 2
        ax.bar(mids, np.nan_to_num(d["accuracy"]), width=edges[1] - edges[0], edgecolor="k",
               alpha=0.7)
        ax.plot([0, 1], [0, 1], "r--", lw=1)
        ece = next(r["ece"] for r in result["results"]
                   if f"{r['loss']} | {r['model']}" == key)
        ax.set_title(f"{key}\nECE {ece:.3f}", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    path = out_dir / "reliability.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    files.append(str(path))
    return files
