"""The ``crossent`` command, run as a subprocess the way a person runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import crossent

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "crossent", *args], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("sub", ["", "list", "explain", "compute", "plot", "gradcheck", "bench",
                                 "train"])
def test_help_everywhere(sub):
    proc = run(*([sub] if sub else []), "--help")
    assert proc.returncode == 0
    assert "usage: crossent" in proc.stdout


def test_list_json_has_every_family_and_framework_aliases():
    proc = run("list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert "CrossEntropyLoss" in rows["softmax_cross_entropy"]["aliases"]["PyTorch"]
    assert "SoftmaxWithLoss" in rows["softmax_cross_entropy"]["aliases"]["Caffe"]
    assert rows["sigmoid_cross_entropy"]["closed_form_gradient"] is True
    assert {"softmax", "sigmoid", "focal", "information"} <= {r["family"] for r in rows.values()}


def test_list_table_is_printed():
    proc = run("list")
    assert proc.returncode == 0
    assert "softmax_cross_entropy" in proc.stdout and "SoftmaxWithLoss" in proc.stdout


def test_explain_caffe_name():
    proc = run("explain", "SoftmaxWithLoss")
    assert proc.returncode == 0, proc.stderr
    assert "softmax_cross_entropy" in proc.stdout
    assert "formula" in proc.stdout and "gradient" in proc.stdout
    assert "CrossEntropyLoss" in proc.stdout  # the PyTorch alias is listed too


def test_explain_json_for_a_spaced_alias():
    proc = run("explain", "Sigmoid Cross-Entropy", "--json")
    info = json.loads(proc.stdout)
    assert info["name"] == "sigmoid_cross_entropy"
    assert info["closed_form_gradient"] is True
    assert info["references"]


def test_explain_unknown_name_suggests_the_closest():
    assert_user_error(run("explain", "SoftmaxWithLos"), "SoftmaxWithLoss")


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4))
    labels = rng.integers(0, 4, size=5)
    np.save(tmp_path / "logits.npy", logits)
    np.save(tmp_path / "labels.npy", labels)
    np.savetxt(tmp_path / "logits.csv", logits, delimiter=",")
    np.savetxt(tmp_path / "labels.txt", labels, fmt="%d")
    return tmp_path, logits, labels


def test_compute_equals_the_library_call_and_writes_the_gradient(arrays):
    d, logits, labels = arrays
    proc = run("compute", "CrossEntropyLoss", "--pred", str(d / "logits.npy"), "--target",
               str(d / "labels.npy"), "--set", "label_smoothing=0.1", "--grad",
               str(d / "g.npy"), "--json")
    assert proc.returncode == 0, proc.stderr
    value = json.loads(proc.stdout)["value"]
    loss, g = crossent.value_and_grad(crossent.softmax_cross_entropy)(logits, labels,
                                                                      label_smoothing=0.1)
    assert value == pytest.approx(float(loss), rel=1e-12)
    np.testing.assert_allclose(np.load(d / "g.npy"), g, rtol=1e-12)


def test_compute_reads_csv_and_txt(arrays):
    d, logits, labels = arrays
    proc = run("compute", "softmax_cross_entropy", "--pred", str(d / "logits.csv"), "--target",
               str(d / "labels.txt"), "--set", "reduction=none")
    assert proc.returncode == 0, proc.stderr
    values = np.array(proc.stdout.strip().strip("[]").split(), dtype=float)
    np.testing.assert_allclose(
        values, crossent.softmax_cross_entropy(logits, labels, reduction="none"), rtol=1e-9)


@pytest.mark.parametrize("args,fragments", [
    (["--pred", "missing.npy", "--target", "labels.npy"], ["--pred", "no such file"]),
    (["--pred", "logits.npy", "--target", "labels.bin"], ["--target"]),
    (["--pred", "logits.npy", "--target", "short.npy"], ["shape", "(5,)", "(3,)"]),
    (["--pred", "logits.npy", "--target", "logits.npy"], ["targets", "[0, 1]"]),
    (["--pred", "logits.npy", "--target", "labels.npy", "--set", "gamma=2"], ["gamma"]),
    (["--pred", "logits.npy", "--target", "labels.npy", "--set", "reduction=avg"],
     ["reduction", "avg"]),
    (["--pred", "logits.npy", "--target", "labels.npy", "--set", "oops"], ["key=value"]),
])
def test_compute_errors_are_one_line(arrays, args, fragments):
    d, _, _ = arrays
    (d / "labels.bin").write_bytes(b"\x00\x01")
    np.save(d / "short.npy", np.array([0, 1, 2]))
    proc = run("compute", "softmax_cross_entropy", *args, cwd=d)
    assert_user_error(proc, *fragments)


def test_compute_unknown_loss():
    assert_user_error(run("compute", "SoftMaxLos", "--pred", "a.npy", "--target", "b.npy"),
                      "Softmax Loss")


def test_plot_focal_default_reproduces_lin_et_al(tmp_path):
    out = tmp_path / "focal.png"
    proc = run("plot", "sigmoid_focal_loss", "--out", str(out), "--set", "alpha=None")
    assert proc.returncode == 0, proc.stderr
    w, h = png_size(out)
    assert w > 400 and h > 200


def test_plot_with_a_sweep(tmp_path):
    out = tmp_path / "ls.png"
    proc = run("plot", "softmax_cross_entropy", "--sweep", "label_smoothing=0,0.1,0.3", "--out",
               str(out))
    assert proc.returncode == 0, proc.stderr
    png_size(out)


def test_plot_errors():
    assert_user_error(run("plot", "softmax_cross_entropy", "--sweep", "gamma"), "--sweep")


def test_gradcheck_passes_for_the_core_losses():
    proc = run("gradcheck", "softmax_cross_entropy", "BCEWithLogitsLoss", "BCELoss",
               "mean_squared_error", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert all(r["max_abs_error"] < 1e-6 for r in rows)


def test_gradcheck_fails_on_a_deliberately_wrong_gradient(tmp_path):
    (tmp_path / "wrongloss.py").write_text(textwrap.dedent("""
        import crossent
        from crossent.gradients import loss, scaled_pullback

        # a user's loss written the crossent way, with a closed form wrong by a factor of 2
        @loss(wrt=("logits",))
        def my_loss(need, logits, labels, *, reduction="mean"):
            value, pb = crossent.softmax_cross_entropy.with_pullback(
                need, logits, labels, reduction=reduction)
            if not need:
                return value, None
            import numpy as np
            return value, scaled_pullback(np, {"logits": 2 * pb(None)["logits"]},
                                          lambda c: c[..., None])
    """))
    proc = run("gradcheck", "wrongloss:my_loss", "--kind", "softmax_cross_entropy", "--json",
               env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)[0]["status"] == "FAIL"


def _check_train_outputs(out: Path, n_rows: int) -> dict:
    result = json.loads((out / "results.json").read_text())
    assert len(result["results"]) == n_rows
    for r in result["results"]:
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "rare_recall", "nll", "ece",
                    "time_s"):
            assert np.isfinite(r[key]), (key, r)
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["ece"] <= 1
    for png in ("learning_curves.png", "reliability.png"):
        png_size(out / png)
    return result


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_train_tiny_budget_writes_results_and_plots(tmp_path, backend):
    out = tmp_path / "run"
    proc = run("train", "--epochs", "3", "--backend", backend, "--out", str(out),
               "--losses", "SoftmaxWithLoss;softmax_cross_entropy:label_smoothing=0.1",
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    result = _check_train_outputs(out, 4)
    assert result["backend"] == backend
    assert {r["model"] for r in result["results"]} == {"linear", "mlp"}
    assert "balanced_accuracy" in proc.stdout


def test_train_learns_something(tmp_path):
    out = tmp_path / "run"
    proc = run("train", "--epochs", "30", "--models", "linear", "--losses",
               "softmax_cross_entropy", "--backend", "numpy", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["results"]
    assert row["accuracy"] > 0.8  # digits is easy even long-tailed; chance is 0.1


def test_train_on_a_users_csv(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 3)), rng.normal(3, 1, (40, 3))])
    y = np.array(["a"] * 40 + ["b"] * 40)
    lines = ["f1,f2,species,f3"] + [f"{r[0]},{r[1]},{lab},{r[2]}" for r, lab in zip(x, y,
                                                                                  strict=True)]
    (tmp_path / "t.csv").write_text("\n".join(lines))
    out = tmp_path / "run"
    proc = run("train", "--data", str(tmp_path / "t.csv"), "--label", "species", "--epochs",
               "20", "--models", "linear", "--losses", "BCEWithLogitsLoss", "--out", str(out),
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    result = _check_train_outputs(out, 1)
    assert result["data"]["classes"] == 2 and result["results"][0]["accuracy"] > 0.9


@pytest.mark.parametrize("args,fragments", [
    (["--data", "nope.csv"], ["--data", "no such file"]),
    (["--losses", "SoftmaxWithLos"], ["SoftmaxWithLoss"]),
    (["--models", "resnet"], ["resnet"]),
    (["--backend", "tpu"], ["--backend"]),
    (["--losses", "softmax_cross_entropy:frobnicate=1"], ["frobnicate"]),
])
def test_train_errors_are_one_line(tmp_path, args, fragments):
    proc = run("train", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "o"), *args)
    assert_user_error(proc, *fragments)


def test_train_label_column_must_exist(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,0\n2,1\n3,0\n4,1\n")
    proc = run("train", "--data", str(tmp_path / "t.csv"), "--label", "y", "--epochs", "1")
    assert_user_error(proc, "--label", "'y'", "a, b")


def test_bench_lists_the_benchmarks():
    proc = run("bench", "--list")
    assert proc.returncode == 0, proc.stderr
    for name in ("cross_entropy", "linear_cross_entropy", "linear_distillation", "vocab_parallel"):
        assert name in proc.stdout


def test_bench_unknown_benchmark():
    assert_user_error(run("bench", "nope"), "nope", "cross_entropy")


def test_bench_out_that_cannot_be_created(tmp_path):
    (tmp_path / "f").write_text("")
    assert_user_error(run("bench", "vocab_parallel", "--out", str(tmp_path / "f" / "sub")),
                      "--out")


def test_bench_quick_run_writes_json_and_plot(tmp_path):
    # run away from any checkout: the benchmarks ship in the package, and the results go to
    # the user folder by default, not into the package or a source tree
    out = tmp_path / "cache" / "crossent" / "bench"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    try:  # the kernel built for the suite stays where it is (a rebuild would take a minute)
        from crossent.torch import _ext

        env["CROSSENT_CACHE_DIR"] = str(_ext._cache_root())
    except ImportError:
        pass
    proc = run("bench", "--quick", "vocab_parallel", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tmp_path = out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["benchmarks"]["vocab_parallel"]["status"] == "ok"
    result = json.loads((tmp_path / "vocab_parallel_quick.json").read_text())
    assert result
    png_size(tmp_path / "vocab_parallel_quick.png")


# --- user errors found after the first release: each one line on stderr, exit 2 ------------


def run_blocking(modules: list[str], *args: str, cwd: Path | None = None
                 ) -> subprocess.CompletedProcess:
    """``crossent ARGS`` in a Python where importing each of ``modules`` fails."""
    code = ("import sys\n"
            f"for m in {modules!r}:\n"
            "    sys.modules[m] = None  # makes `import m` raise ImportError\n"
            "from crossent.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=240)


def strict_json(text: str) -> object:
    """``json.loads`` that refuses NaN and Infinity, as JSON itself (and most parsers) do."""
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def two_class_csv(path: Path, n: int = 20) -> Path:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (n, 2)), rng.normal(3, 1, (n, 2))])
    y = ["a"] * n + ["b"] * n
    path.write_text("\n".join(["f1,f2,label"] + [f"{r[0]},{r[1]},{lab}" for r, lab in
                                                   zip(x, y, strict=True)]))
    return path


def test_compute_npz_named_npy_is_a_usage_error(arrays):
    d, logits, _ = arrays
    np.savez(d / "both.npz", logits=logits)
    (d / "both.npz").rename(d / "both.npy")
    proc = run("compute", "softmax_cross_entropy", "--pred", "both.npy", "--target",
               "labels.npy", cwd=d)
    assert_user_error(proc, "--pred both.npy", ".npz")


def test_compute_set_list_with_a_non_number(arrays):
    d, _, _ = arrays
    proc = run("compute", "softmax_cross_entropy", "--pred", "logits.npy", "--target",
               "labels.npy", "--set", "weight=1,2,x", cwd=d)
    assert_user_error(proc, "weight=1,2,x", "'x'", "not")


@pytest.mark.parametrize("grad,fragments", [
    ("/nonexistent-dir/g.npy", ["--grad", "/nonexistent-dir", "does not exist"]),
    ("g.xyz", ["--grad", ".xyz", ".npy", ".csv"]),
    ("g", ["--grad", "no extension"]),
    (".", ["--grad", "is a directory"]),
])
def test_compute_grad_output_path_is_checked(arrays, grad, fragments):
    d, _, _ = arrays
    proc = run("compute", "softmax_cross_entropy", "--pred", "logits.npy", "--target",
               "labels.npy", "--grad", grad, cwd=d)
    assert_user_error(proc, *fragments)
    assert sorted(p.name for p in d.iterdir()) == ["labels.npy", "labels.txt", "logits.csv",
                                                    "logits.npy"]


@pytest.mark.parametrize("name", ["g.csv", "g.tsv", "g.txt", "g.npy", "G.NPY"])
def test_compute_grad_writes_the_format_its_extension_names(arrays, name):
    d, logits, labels = arrays
    proc = run("compute", "softmax_cross_entropy", "--pred", "logits.npy", "--target",
               "labels.npy", "--grad", name, "--json", cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert strict_json(proc.stdout)["grad"] == name
    written = sorted(p.name for p in d.iterdir() if p.name.lower().startswith("g."))
    assert written == [name]  # not g.csv.npy
    _, g = crossent.value_and_grad(crossent.softmax_cross_entropy)(logits, labels)
    if name.lower().endswith(".npy"):
        got = np.load(d / name)
    else:
        got = np.loadtxt(d / name, delimiter={".csv": ",", ".tsv": "\t"}.get(name[-4:]))
    np.testing.assert_allclose(got, g, rtol=1e-12)
    proc = run("compute", "softmax_cross_entropy", "--pred", "logits.npy", "--target",
               "labels.npy", "--grad", name, cwd=d)
    assert proc.stderr.strip() == f"gradient written to {name}"


@pytest.mark.parametrize("out,fragments", [
    ("/nonexistent-dir/p.png", ["--out", "/nonexistent-dir", "does not exist"]),
    (".", ["--out", "is a directory"]),
    ("p.xyz", ["--out", ".xyz", ".png", ".pdf", ".svg"]),
])
def test_plot_out_must_be_an_image_file_that_can_be_written(tmp_path, out, fragments):
    proc = run("plot", "softmax_cross_entropy", "--out", out, cwd=tmp_path)
    assert_user_error(proc, *fragments)
    assert not list(tmp_path.iterdir())


def test_train_out_is_an_existing_file(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    proc = run("train", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "taken"))
    assert_user_error(proc, "--out", "taken", "not a directory")


@pytest.mark.parametrize("name", [":foo", "foo:", "os:sep"])
def test_gradcheck_malformed_loss_name(name):
    assert_user_error(run("gradcheck", name), repr(name))


@pytest.mark.parametrize("args,flag,value", [
    (["gradcheck", "softmax_cross_entropy"], "--seed", "-1"),
    (["train"], "--seed", "-1"),
    (["train"], "--batch-size", "0"),
    (["train"], "--epochs", "0"),
])
def test_negative_seed_and_zero_counts_are_usage_errors(tmp_path, args, flag, value):
    assert_user_error(run(*args, flag, value, cwd=tmp_path), flag, value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad_row,fragments", [
    ("5,6", ["line 4", "2 fields", "3"]),
    ("5,6,", ["line 4", "no label", "'y'"]),
])
def test_train_csv_row_missing_its_label(tmp_path, bad_row, fragments):
    rows = ["a,b,y", "1,2,0", "3,4,1", bad_row, "7,8,1", "1,3,0", "2,4,1"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    proc = run("train", "--data", str(tmp_path / "t.csv"), "--epochs", "1", "--no-progress",
               "--out", str(tmp_path / "o"))
    assert_user_error(proc, "--data", *fragments)


def test_train_checks_every_loss_before_training_any(tmp_path):
    out = tmp_path / "o"
    proc = run("train", "--losses", "softmax_cross_entropy;softmax_focal_loss:gamma=-1",
               "--models", "linear", "--epochs", "1", "--out", str(out))
    assert_user_error(proc, "softmax_focal_loss:gamma=-1", "gamma")
    assert not out.exists()  # nothing was trained, nothing written
    assert "training" not in proc.stdout


def test_compute_empty_csv_is_one_clear_line(arrays):
    d, _, _ = arrays
    (d / "empty.csv").write_text("")
    proc = run("compute", "softmax_cross_entropy", "--pred", "empty.csv", "--target",
               "labels.npy", cwd=d)
    assert_user_error(proc, "--pred empty.csv", "no numbers")
    assert "Warning" not in proc.stderr


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf"])
def test_train_refuses_non_finite_features(tmp_path, cell):
    rows = ["a,b,y", "1,2,0", f"3,{cell},1", "5,6,0", "7,8,1", "1,3,0", "2,4,1"]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "o"
    proc = run("train", "--data", str(tmp_path / "t.csv"), "--epochs", "1", "--no-progress",
               "--out", str(out))
    assert_user_error(proc, "--data", "line 3", "'b'", repr(cell), "finite")
    assert not out.exists()


def test_every_json_the_command_writes_is_strict(tmp_path):
    # two classes and 15 reliability bins: most bins are empty, their accuracy is NaN
    data = two_class_csv(tmp_path / "t.csv")
    out = tmp_path / "o"
    proc = run("train", "--data", str(data), "--epochs", "1", "--models", "linear", "--losses",
               "softmax_cross_entropy", "--backend", "numpy", "--no-plots", "--out", str(out),
               "--json")
    assert proc.returncode == 0, proc.stderr
    strict_json(proc.stdout)
    result = strict_json((out / "results.json").read_text())
    assert None in result["reliability"]["softmax_cross_entropy | linear"]["accuracy"]
    # a NaN logit gives a NaN loss: null in the output, not a bare NaN
    (tmp_path / "p.csv").write_text("nan,1\n0,1\n")
    (tmp_path / "y.txt").write_text("0\n1\n")
    proc = run("compute", "softmax_cross_entropy", "--pred", "p.csv", "--target", "y.txt",
               "--set", "reduction=none", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert strict_json(proc.stdout)["value"][0] is None


SKLEARN = ["sklearn", "sklearn.datasets", "sklearn.metrics", "sklearn.model_selection"]


@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_train_on_users_data_needs_no_scikit_learn(tmp_path, backend):
    data = two_class_csv(tmp_path / "t.csv")
    out = tmp_path / "o"
    proc = run_blocking(SKLEARN, "train", "--data", str(data), "--epochs", "5", "--models",
                        "linear", "--losses", "softmax_cross_entropy", "--backend", backend,
                        "--no-plots", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = strict_json((out / "results.json").read_text())["results"]
    assert row["accuracy"] > 0.9 and 0.9 < row["balanced_accuracy"] <= 1
    assert 0.9 < row["macro_f1"] <= 1


def test_train_builtin_data_without_scikit_learn_names_the_extra(tmp_path):
    proc = run_blocking(SKLEARN, "train", "--epochs", "1", "--no-progress", "--out",
                        str(tmp_path / "o"))
    assert_user_error(proc, "scikit-learn", "pip install 'crossent[cli]'", "--data")


# --- usage snippets -------------------------------------------------------------------------

_HELPERS = {"backend_info", "choose_chunk_size", "choose_class_chunk", "choose_distill_chunk",
            "is_patched", "unpatch"}


def _public(module_name):
    import importlib

    mod = importlib.import_module(module_name)
    return {f"{module_name}.{n}" for n in mod.__all__ if n not in _HELPERS}


def test_every_torch_entry_point_is_listed_under_a_loss():
    pytest.importorskip("torch")
    from crossent import names

    listed = {e.partition(" ")[0] for s in names.catalog() for e in s.torch_entry_points}
    public = (_public("crossent.torch") | _public("crossent.torch.nn")
              | _public("crossent.torch.distributed"))
    assert public - listed == set()
    if importlib.util.find_spec("transformers") is not None:
        public |= _public("crossent.integrations.transformers")
    assert listed - public == set()


def test_every_usage_line_names_a_real_callable_and_accepted_options():
    pytest.importorskip("torch")
    import importlib
    import inspect
    import re

    from crossent import cli, names

    for spec in names.catalog():
        lines = cli.usage_lines(spec)
        assert lines[:2] == ["import crossent", f"loss = crossent.{spec.name}(" + ", ".join(
            p.name for p in inspect.signature(spec.fn).parameters.values()
            if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD) + ")  # NumPy, "
            "PyTorch, JAX, any array-API library"]
        for imp, call in zip(lines[2::2], lines[3::2], strict=True):
            module, attr = re.fullmatch(r"from (\S+) import (\w+)", imp).groups()
            if module.startswith("crossent.integrations") and \
                    importlib.util.find_spec("transformers") is None:
                continue
            obj = getattr(importlib.import_module(module), attr)
            assert attr in call
            for opt in re.findall(r'(\w+)="(\w+)"', call):
                target = obj.__init__ if isinstance(obj, type) else obj
                params = inspect.signature(target).parameters
                assert opt[0] in params or any(p.kind is p.VAR_KEYWORD
                                               for p in params.values()), (call, opt)


def test_explain_prints_the_usage_of_the_mmdet_focal_loss():
    proc = run("explain", "mmdet.FocalLoss")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert "from crossent.torch.nn import FocalLoss" in proc.stdout
    assert "loss = FocalLoss()(pred, target)" in proc.stdout
    info = json.loads(run("explain", "CosFace", "--json").stdout)
    assert ('loss = margin_linear_cross_entropy(embeddings, class_weight, labels, '
            'margin_type="cosface")') in info["usage"]
