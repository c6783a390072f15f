"""``crossent bench gpu``: its plumbing, run on CPU with tiny shapes (CI has no GPU), and its
target checks on made-up rows."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from crossent.bench import discover, gpu  # noqa: E402

FAST = "eager,torch-chunked,liger,cce,crossent,crossent-inplace,crossent-lowacc"


@pytest.fixture
def out(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSENT_BENCH_OUT", str(tmp_path))
    return tmp_path


def test_is_discovered_by_crossent_bench():
    assert discover()["gpu"] == "crossent.bench.gpu"


def test_cpu_smoke_run_reports_every_contender(out, capsys):
    payload = gpu.main(["--device", "cpu", "--contenders", FAST, "--dtypes", "float32"])
    printed = capsys.readouterr().out
    kinds = [r["kind"] for r in payload["results"]]
    assert kinds == ["fused", "linear"]
    for res in payload["results"]:
        rows = {r["name"]: r for r in res["rows"]}
        wanted = gpu.FUSED_CONTENDERS if res["kind"] == "fused" else gpu.LINEAR_CONTENDERS
        assert list(rows) == [c for c in wanted if c in FAST.split(",")]
        for name in ("eager", "crossent"):
            assert rows[name]["median_s"] > 0
        for name, row in rows.items():
            # one printed line per contender and case, with its time or why it did not run
            line = next(ln for ln in printed.splitlines()
                        if ln.startswith(res["label"]) and f" {name} " in ln)
            assert ("ms" in line) == ("median_s" in row)
            if "error" in row:
                assert row["error"] in line
    with pytest.raises(StopIteration):  # the CPU run checks no GPU target
        next(ln for ln in printed.splitlines() if "target <=" in ln)
    saved = json.loads((out / "gpu_quick.json").read_text())
    assert saved["markdown"] == payload["markdown"]
    assert "| fused 64x1000 float32 | crossent |" in payload["markdown"]
    assert (out / "gpu_quick.png").exists()


def test_crossent_inplace_leaves_the_inputs_of_the_other_contenders_intact(out):
    case = gpu.Case("fused", (8, 20), "float32", "cpu")
    before = case.x.detach().clone()
    for name in ("crossent-inplace", "crossent", "eager"):
        gpu.run_contender(name, case, cuda=False)
    assert (case.x.detach() == before).all()


def test_budget_skips_what_is_left(out, capsys):
    payload = gpu.main(["--device", "cpu", "--contenders", "eager,crossent", "--dtypes",
                        "float32", "--budget-s", "0"])
    rows = [r for res in payload["results"] for r in res["rows"]]
    assert rows and all("budget is spent" in r["error"] for r in rows)


def test_without_cuda_it_measures_nothing(out, capsys, monkeypatch):
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == {"skipped": "no CUDA device"}
    assert "no CUDA device" in capsys.readouterr().out


def test_bad_dtype_is_a_usage_error(out):
    with pytest.raises(SystemExit, match="float8"):
        gpu.main(["--device", "cpu", "--dtypes", "float8"])


def test_targets_are_checked_against_the_issue_limits():
    def row(name, ms, extra=None, work=None):
        r = {"name": name, "median_s": ms / 1e3}
        if extra is not None:
            r.update(extra_x_logits=extra, work_x_logits=work)
        return r

    results = [
        {"kind": "fused", "label": "F", "rows": [
            row("eager", 10.0), row("liger", 5.0), row("crossent", 3.9, 1.0, 0.0),
            row("crossent-inplace", 4.0, 1.0, 0.0)]},
        {"kind": "linear", "label": "L", "rows": [
            row("eager", 10.0), row("crossent", 11.0, 0.6, 0.04),
            row("crossent-lowacc", 10.5, 0.6, 0.06)]},
    ]
    lines = gpu.targets(results)
    assert "F                                time vs liger: 0.780 (target <= 0.8) met" in lines
    assert any(ln.startswith("F") and "time vs eager: 0.390" in ln and ln.endswith(" met")
               for ln in lines)
    assert any("extra memory x logits: 1.000 (target <= 1.0) met" in ln for ln in lines)
    assert any("inplace" in ln and ln.endswith(" met") for ln in lines)
    assert any(ln.startswith("L") and "time vs eager: 1.100" in ln and "NOT met" in ln
               for ln in lines)
    assert any(ln.startswith("L") and "time vs cce: not measured" in ln for ln in lines)
    assert any(ln.startswith("L") and "beyond the gradients x logits: 0.040" in ln
               and ln.endswith(" met") for ln in lines)
    assert any(ln.startswith("L") and "accum_dtype=W.dtype" in ln and "0.060" in ln
               and ln.endswith("NOT met") for ln in lines)


# torch.compile's own warnings on CPU (inductor's, and a torch.jit deprecation it triggers)
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_compiled_contenders_run_last_and_keep_their_place_in_the_table(out, capsys):
    payload = gpu.main(["--device", "cpu", "--contenders", "eager,compile,crossent",
                        "--dtypes", "float32"])
    lines = [ln for ln in capsys.readouterr().out.splitlines()
             if ln.startswith(("fused ", "linear "))]
    names = [ln.split()[3] for ln in lines]
    # every case's non-compiled contenders first, then the compiled ones (one compilation per
    # kind, dynamic shapes), which the time budget drops first
    assert names == ["eager", "crossent", "eager", "crossent", "compile", "compile"]
    for res in payload["results"]:
        assert [r["name"] for r in res["rows"]] == ["eager", "compile", "crossent"]
        assert res["rows"][1].get("median_s", 0) > 0, res["rows"][1]
