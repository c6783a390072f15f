"""The package surface: lazy loading that really loads nothing, and exports that match the
modules' own ``__all__``."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import crossent


def _modules_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\n"
         "print(json.dumps(sorted(m for m in sys.modules if m.startswith('crossent'))))"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_names_loads_no_loss_module():
    loaded = _modules_after("import crossent.names; crossent.names.get('SoftmaxWithLoss')")
    assert not set(loaded) & {f"crossent.{m}" for m in crossent.LOSS_MODULES}, loaded
    assert "crossent.names" in loaded


def test_reading_a_loss_loads_its_module_only():
    loaded = _modules_after("import crossent; crossent.distillation_loss")
    assert "crossent.distillation" in loaded
    assert "crossent.margin_softmax" not in loaded and "crossent.ranking" not in loaded


def test_exports_are_the_modules_all():
    for module, names in crossent._EXPORTS.items():
        mod = importlib.import_module(f"crossent.{module}")
        if module in ("gradients", "names"):
            assert set(names) <= set(mod.__all__), module
        else:
            assert tuple(mod.__all__) == names, module
        for name in names:
            assert getattr(crossent, name) is getattr(mod, name)


def test_star_import_and_unknown_attribute():
    ns: dict = {}
    exec("from crossent import *", ns)
    assert set(crossent.__all__) <= set(ns)
    try:
        crossent.no_such_loss  # noqa: B018
    except AttributeError as e:
        assert "no_such_loss" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def _import_without(missing: str, module: str) -> subprocess.CompletedProcess:
    """Import ``module`` in a fresh interpreter where ``missing`` cannot be imported."""
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            f"import importlib; importlib.import_module({module!r})")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_a_missing_optional_dependency_names_its_extra():
    for missing, module, extra in [("torch", "crossent.torch", "crossent[torch]"),
                                   ("transformers", "crossent.integrations.transformers",
                                    "crossent[transformers]")]:
        out = _import_without(missing, module)
        assert out.returncode != 0
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("ImportError") and f"pip install '{extra}'" in last, last
    # the core itself needs neither
    assert _import_without("torch", "crossent.classification").returncode == 0


def test_the_built_wheel_runs_on_its_own_files(tmp_path):
    # what pip-installing crossent gives a user: the loss table (a data file), the benchmark
    # suite and the kernel sources must be in the wheel, not only in this checkout
    root = Path(__file__).resolve().parents[1]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("crossent-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
    for name in ("crossent/losses.toml", "crossent/py.typed", "crossent/bench/generic.py",
                 "crossent/torch/_kernel.cpp", "crossent/torch/_closed_form_node.h"):
        assert name in files, name
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    code = ("import crossent, crossent.names as n, json; "
            "print(json.dumps([crossent.__file__, n.get('SoftmaxWithLoss').name, "
            "len(n.catalog())]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    path, name, count = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(path).is_relative_to(site)
    assert name == "softmax_cross_entropy" and count == 35
    listed = subprocess.run([sys.executable, "-m", "crossent", "bench", "--list"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert listed.returncode == 0 and "generic" in listed.stdout, listed.stderr
