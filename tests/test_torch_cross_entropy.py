"""crossent.torch.cross_entropy against torch.nn.functional.cross_entropy (never against itself).

Every check runs on the three implementations of the row routine: the C++ kernel ("ext",
skipped when it cannot be built here), the torch-ops fallback ("torch") and the Triton kernel
("triton": in Triton's interpreter without a GPU, skipped without Triton).
"""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import crossent.torch as ct  # noqa: E402
from crossent.torch import _ext, backend_info, cross_entropy  # noqa: E402
from crossent.torch._rows import rows_forward  # noqa: E402


def _ref(logits, target, grad_out=None, **kw):
    """F.cross_entropy in float64 on a detached copy: value and d(value . grad_out)/d logits."""
    x = logits.detach().double().requires_grad_(True)
    if "weight" in kw and kw["weight"] is not None:
        kw = {**kw, "weight": kw["weight"].double()}
    t = target.double() if target.is_floating_point() else target
    loss = F.cross_entropy(x, t, **kw)
    go = torch.ones_like(loss) if grad_out is None else grad_out.double()
    (g,) = torch.autograd.grad(loss, x, go)
    return loss, g


def _ours(logits, target, grad_out=None, **kw):
    x = logits.detach().clone().requires_grad_(True)
    loss = cross_entropy(x, target, **kw)
    go = torch.ones_like(loss) if grad_out is None else grad_out.to(loss.dtype)
    (g,) = torch.autograd.grad(loss, x, go)
    return loss, g


def _targets(n, c, gen, ignore_frac=0.0):
    y = torch.randint(0, c, (n,), generator=gen)
    if ignore_frac:
        drop = torch.rand(n, generator=gen) < ignore_frac
        y[drop] = -100
    return y


OPTIONS = list(itertools.product([False, True], [0.0, 0.3], ["mean", "sum", "none"],
                                 [0.0, 0.3]))


@pytest.mark.parametrize("n,c", [(1, 1), (5, 1), (1, 7), (6, 7), (9, 1000), (3, 5000)])
def test_index_targets_match_pytorch(kernel_backend, n, c):
    gen = torch.Generator().manual_seed(n * 1000 + c)
    x = torch.randn(n, c, generator=gen) * 3
    w = torch.rand(c, generator=gen) + 0.1
    for use_w, eps, red, ign in OPTIONS:
        y = _targets(n, c, gen, ign)
        if ign:
            y[0] = 0  # keep at least one row counted (all ignored: its own test)
        kw = dict(weight=w if use_w else None, label_smoothing=eps, reduction=red)
        go = torch.randn(n, generator=gen) if red == "none" else None
        ref, gref = _ref(x, y, go, **kw)
        out, g = _ours(x, y, go, **kw)
        assert out.dtype == x.dtype and out.shape == ref.shape
        torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6, msg=str(kw))
        torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=2e-7, msg=str(kw))


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_probability_targets_match_pytorch(kernel_backend, red):
    gen = torch.Generator().manual_seed(1)
    for n, c in [(1, 1), (4, 7), (5, 3000)]:
        x = torch.randn(n, c, generator=gen) * 2
        p = torch.softmax(torch.randn(n, c, generator=gen), dim=1)
        w = torch.rand(c, generator=gen) + 0.1
        for use_w, eps in itertools.product([False, True], [0.0, 0.2]):
            kw = dict(weight=w if use_w else None, label_smoothing=eps, reduction=red)
            go = torch.randn(n, generator=gen) if red == "none" else None
            ref, gref = _ref(x, p, go, **kw)
            out, g = _ours(x, p, go, **kw)
            torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)
            torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=2e-7)


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_spatial_and_unbatched_layouts(kernel_backend, red):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 3, 4, generator=gen)
    y = torch.randint(0, 5, (2, 3, 4), generator=gen)
    y[0, 1, 2] = -100
    w = torch.rand(5, generator=gen)
    go = torch.randn(2, 3, 4, generator=gen) if red == "none" else None
    for kw in (dict(reduction=red), dict(reduction=red, weight=w, label_smoothing=0.1)):
        ref, gref = _ref(x, y, go, **kw)
        out, g = _ours(x, y, go, **kw)
        torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=1e-7)
    p = torch.softmax(torch.randn(2, 5, 3, 4, generator=gen), dim=1)
    ref, gref = _ref(x, p, go, reduction=red)
    out, g = _ours(x, p, go, reduction=red)
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=1e-7)
    # unbatched (C,) with a class index () and with probabilities (C,)
    x1 = torch.randn(6, generator=gen)
    go1 = torch.tensor(0.7) if red == "none" else None
    for t in (torch.tensor(4), torch.softmax(torch.randn(6, generator=gen), 0)):
        ref, gref = _ref(x1, t, go1, reduction=red, label_smoothing=0.1)
        out, g = _ours(x1, t, go1, reduction=red, label_smoothing=0.1)
        assert out.shape == ref.shape
        torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=1e-7)


def test_all_ignored_gives_zero_not_nan(kernel_backend):
    x = torch.randn(4, 9, requires_grad=True)
    y = torch.full((4,), -100)
    w = torch.rand(9)
    for kw in (dict(), dict(weight=w), dict(label_smoothing=0.2, z_loss=1e-2)):
        loss = cross_entropy(x, y, **kw)
        assert loss.item() == 0.0
        (g,) = torch.autograd.grad(loss, x)
        assert torch.all(g == 0)
        assert torch.isnan(F.cross_entropy(x, y, **{k: v for k, v in kw.items()
                                                     if k != "z_loss"}))  # PyTorch: NaN
    assert torch.all(cross_entropy(x, y, reduction="none") == 0)
    assert cross_entropy(x, y, reduction="sum").item() == 0.0


def test_ignored_rows_with_custom_ignore_index(kernel_backend):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 11, generator=gen)
    y = torch.randint(0, 11, (7,), generator=gen)
    y[[1, 4]] = 3
    ref, gref = _ref(x, y, ignore_index=3, label_smoothing=0.1)
    out, g = _ours(x, y, ignore_index=3, label_smoothing=0.1)
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=1e-7)
    assert torch.all(g[[1, 4]] == 0)


def test_neg_inf_logits_in_early_blocks(kernel_backend):
    """Masked vocabulary (-inf) filling whole kernel blocks before the finite values."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6000, generator=gen)
    x[:, :4100] = float("-inf")
    x[1, 5000:] = float("-inf")
    y = torch.tensor([4200, 4999, 5999])
    ref, gref = _ref(x, y)
    out, g = _ours(x, y)
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision(kernel_backend, dtype, tol):
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(8, 3000, generator=gen) * 4).to(dtype)
    y = _targets(8, 3000, gen, 0.2)
    w = torch.rand(3000, generator=gen).to(dtype)
    for kw in (dict(), dict(weight=w, label_smoothing=0.1), dict(reduction="none")):
        # The reference sees the same rounded inputs, in float64: only our rounding differs.
        ref, gref = _ref(x, y, **kw)
        out, g = _ours(x, y, **kw)
        assert out.dtype == dtype and g.dtype == dtype
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
        # gradient rounded once to the dtype: within half an ulp of the exact value
        torch.testing.assert_close(g.double(), gref, rtol=tol, atol=tol * 1e-3)


def test_z_loss_and_return_z_loss(kernel_backend):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(10, 13, generator=gen) * 3
    y = _targets(10, 13, gen, 0.3)
    y[0] = 1
    w = torch.rand(13, generator=gen) + 0.5
    zc = 1e-2
    valid = y != -100
    for red, use_w in itertools.product(["mean", "sum", "none"], [False, True]):
        kw = dict(reduction=red, weight=w if use_w else None, label_smoothing=0.1)
        xr = x.double().requires_grad_(True)
        ce = F.cross_entropy(xr, y, **{**kw, "weight": w.double() if use_w else None})
        zrow = zc * torch.logsumexp(xr, 1) ** 2 * valid
        # documented: unweighted, averaged over the non-ignored rows for "mean"
        zref = {"mean": zrow.sum() / valid.sum(), "sum": zrow.sum(), "none": zrow}[red]
        ref = ce + zref
        go = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        (gref,) = torch.autograd.grad(ref, xr, go)
        xo = x.clone().requires_grad_(True)
        out, zpart = cross_entropy(xo, y, z_loss=zc, return_z_loss=True, **kw)
        (g,) = torch.autograd.grad(out, xo, go.float())
        torch.testing.assert_close(out.double(), ref.detach(), rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(zpart.double(), zref.detach(), rtol=2e-6, atol=2e-7)
        torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=2e-7)
        assert not zpart.requires_grad


def test_softcap(kernel_backend):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 2500, generator=gen) * 20
    y = _targets(6, 2500, gen, 0.2)
    p = torch.softmax(torch.randn(6, 2500, generator=gen), 1)
    cap = 15.0
    for t, kw in ((y, dict(label_smoothing=0.1, z_loss=1e-3)), (p, dict(reduction="sum"))):
        xr = x.double().requires_grad_(True)
        zc = kw.get("z_loss", 0.0)
        z = cap * torch.tanh(xr / cap)
        ref = F.cross_entropy(z, t.double() if t.is_floating_point() else t,
                              **{k: v for k, v in kw.items() if k != "z_loss"})
        if zc:
            valid = y != -100
            ref = ref + (zc * torch.logsumexp(z, 1) ** 2 * valid).sum() / valid.sum()
        (gref,) = torch.autograd.grad(ref, xr)
        out, g = _ours(x, t, softcap=cap, **kw)
        torch.testing.assert_close(out.double(), ref.detach(), rtol=2e-6, atol=2e-6)
        torch.testing.assert_close(g.double(), gref, rtol=1e-5, atol=1e-7)


def test_gradcheck_float64(kernel_backend):
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 5, -100, 2])
    w = torch.rand(6, generator=gen, dtype=torch.float64) + 0.1
    p = torch.softmax(torch.randn(4, 6, generator=gen, dtype=torch.float64), 1)
    for t, kw in ((y, dict(weight=w, label_smoothing=0.2, z_loss=0.1, softcap=3.0)),
                  (y, dict(reduction="none")), (p, dict(weight=w, reduction="sum"))):
        assert torch.autograd.gradcheck(lambda a, t=t, kw=kw: cross_entropy(a, t, **kw), (x,))
    # gradient with respect to probability targets, as PyTorch's composite gives it
    pt = p.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: cross_entropy(a, b, weight=w, label_smoothing=0.1), (x, pt))


def test_noncontiguous_inputs_and_no_mutation(kernel_backend):
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(12, 40, generator=gen)
    x = base[::2, ::3]  # neither rows nor columns contiguous
    y = torch.randint(0, x.shape[1], (6,), generator=gen)
    x_before, y_before = x.clone(), y.clone()
    ref, gref = _ref(x, y, label_smoothing=0.1)
    xl = x.clone().requires_grad_(True)
    logits = xl * 1.0  # non-leaf
    out = cross_entropy(logits.t().contiguous().t(), y, label_smoothing=0.1)
    out.backward()
    torch.testing.assert_close(out.double(), ref, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(xl.grad.double(), gref, rtol=1e-5, atol=1e-7)
    assert torch.equal(logits, x_before) and torch.equal(y, y_before)
    # column-sliced rows (stride(0) > C) work in place, without a copy, and are not modified
    wide = torch.randn(5, 30, generator=gen)
    xs = wide[:, :20].detach().requires_grad_(True)
    ys = torch.randint(0, 20, (5,), generator=gen)
    snapshot = wide.clone()
    out = cross_entropy(xs, ys)
    out.backward()
    torch.testing.assert_close(out, F.cross_entropy(wide[:, :20], ys))
    assert torch.equal(wide, snapshot)


def test_inplace_backward(kernel_backend):
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(5, 300, generator=gen)
    y = torch.randint(0, 300, (5,), generator=gen)
    ref, gref = _ref(x, y, label_smoothing=0.1)
    xl = x.clone().requires_grad_(True)
    logits = xl * 2.0  # an intermediate, e.g. an LM head output
    out = cross_entropy(logits, y, label_smoothing=0.1, inplace_backward=True)
    out.backward()
    torch.testing.assert_close(out.double(), _ref(2 * x, y, label_smoothing=0.1)[0],
                               rtol=2e-6, atol=2e-6)
    gl = _ref(2 * x, y, label_smoothing=0.1)[1]
    torch.testing.assert_close(xl.grad.double(), 2 * gl, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(logits.detach().double(), gl, rtol=1e-5, atol=1e-7)  # reused
    with pytest.raises(ValueError, match="leaf"):
        cross_entropy(x.clone().requires_grad_(True), y, inplace_backward=True)
    # an op that saved the logits for its backward notices they were overwritten
    s = xl.exp()  # ExpBackward saves its output
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        cross_entropy(s, y, inplace_backward=True).backward()
    # without a gradient nothing is written
    with torch.no_grad():
        keep = x.clone()
        cross_entropy(keep, y, inplace_backward=True)
    assert torch.equal(keep, x)
    del ref, gref


def test_no_grad_path_matches(kernel_backend):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(33, 2100, generator=gen, requires_grad=True)
    y = _targets(33, 2100, gen, 0.1)
    w = torch.rand(2100, generator=gen)
    for kw in (dict(), dict(weight=w, label_smoothing=0.2, reduction="none"),
               dict(softcap=5.0, z_loss=1e-3, reduction="sum")):
        with torch.no_grad():
            out = cross_entropy(x, y, **kw)
        assert not out.requires_grad
        with torch.enable_grad():
            grad_out = cross_entropy(x, y, **kw)
        torch.testing.assert_close(out, grad_out.detach(), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(cross_entropy(x, y, weight=w), F.cross_entropy(x, y, weight=w))


def test_backward_twice_through_a_retained_graph(kernel_backend):
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(3, 5, generator=gen, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    loss = cross_entropy(x, y, label_smoothing=0.1)
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)  # the gradient buffer was consumed: recomputed
    (loss * 3).backward()
    (g,) = torch.autograd.grad(F.cross_entropy(x, y, label_smoothing=0.1), x)
    torch.testing.assert_close(x.grad, 5 * g)
    # with inplace_backward the logits are gone: a second backward is refused
    logits = x * 1.0
    loss = cross_entropy(logits, y, inplace_backward=True)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_gradient_buffer_is_adopted_without_copy(kernel_backend, monkeypatch):
    """The forward's gradient buffer becomes logits.grad as is (no extra N x V copy)."""
    x = torch.randn(4, 3000, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    seen = []
    # the module, not the function of the same name that crossent.torch re-exports
    mod = importlib.import_module("crossent.torch.cross_entropy")
    orig_rows, orig_fused = mod.rows_forward, mod._fused

    def spy_rows(*args, **kw):
        if kw.get("grad_out") is not None:
            seen.append(kw["grad_out"].data_ptr())
        return orig_rows(*args, **kw)

    def spy_fused(x, target, weight, grad_out, opts, *rest):
        if grad_out is not None:
            seen.append(grad_out.data_ptr())
        return orig_fused(x, target, weight, grad_out, opts, *rest)

    monkeypatch.setattr(mod, "rows_forward", spy_rows)
    monkeypatch.setattr(mod, "_fused", spy_fused)
    handed = []  # what the backward node hands to .grad (a C++ node's buffer included)
    x.register_hook(lambda g: handed.append(g.data_ptr()))
    loss = cross_entropy(x, y)
    cpp_node = loss.grad_fn.name() == "CrossEntropyBackward"
    assert cpp_node == (kernel_backend == "ext")  # the C++ kernel's own node, or a Function
    loss.backward()
    assert handed == [x.grad.data_ptr()]
    # the Python paths: that buffer is the one the forward wrote (the C++ node keeps the
    # buffer its forward wrote and hands it over: see ClosedFormBackward)
    assert seen == ([] if cpp_node else handed)


def test_rows_contract_inplace_and_per_row_scale(kernel_backend):
    """_rows.rows_forward, as the linear CE uses it: gradient written over the logits chunk,
    scaled per row; checked against autograd of F.cross_entropy(reduction='none')."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(7, 2300, generator=gen) * 2
    y = _targets(7, 2300, gen, 0.3)
    scale = torch.rand(7, generator=gen)
    xr = x.double().requires_grad_(True)
    ref = F.cross_entropy(xr, y, reduction="none", label_smoothing=0.05)
    lse_ref = torch.logsumexp(xr, 1).detach() * (y != -100)
    (gref,) = torch.autograd.grad(ref, xr, scale.double())
    buf = x.clone()
    st = rows_forward(buf, y, label_smoothing=0.05, grad_out=buf, grad_scale=scale)
    assert st.loss.dtype == torch.float32
    torch.testing.assert_close(st.loss.double(), ref.detach(), rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(st.lse.double(), lse_ref, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(buf.double(), gref, rtol=1e-5, atol=1e-7)
    assert torch.all(st.z == 0)


def test_large_rows_unaligned():
    """A 68 MB problem: rows of 32771 logits (16 blocks and a tail, unaligned row starts),
    targets in the first vector and at the end of rows."""
    if not _ext.load():
        pytest.skip("C++ kernel unavailable")
    gen = torch.Generator().manual_seed(16)
    n, c = 520, 32771
    x = torch.randn(n, c, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    y[:16] = torch.arange(16)  # targets in the first vector, and at the row's end
    y[16:20] = c - torch.arange(1, 5)
    y[20] = -100
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    out = cross_entropy(xa, y, label_smoothing=0.1)
    ref = F.cross_entropy(xb, y, label_smoothing=0.1)
    out.backward()
    ref.backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-10)


def test_environment_switch_disables_the_extension():
    """CROSSENT_NO_EXT=1 runs the torch-ops path, and says so."""
    import os
    import subprocess
    import sys

    code = ("import torch, crossent.torch as ct; "
            "x = torch.randn(3, 5, requires_grad=True); "
            "ct.cross_entropy(x, torch.tensor([0, 1, 4])).backward(); "
            "i = ct.backend_info(); print(i['cpu'], i['extension']['error'])")
    env = {**os.environ, "CROSSENT_NO_EXT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "torch-ops" and "CROSSENT_NO_EXT" in out.stdout


@pytest.mark.parametrize("option", [
    {"reduction": "avg"}, {"label_smoothing": 1.5}, {"label_smoothing": -0.1},
    {"softcap": 0.0}, {"softcap": -1.0}, {"z_loss": -1e-4}, {"weight": torch.ones(5)},
], ids=lambda o: next(iter(o)))
def test_validation_errors_bad_option(option):
    # the message must name the option that is wrong
    with pytest.raises(ValueError, match=next(iter(option))):
        cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 2]), **option)


@pytest.mark.parametrize(("logits", "target", "error", "match"), [
    (torch.ones(3, 4), torch.tensor([0, 1]), ValueError, "target"),
    (torch.ones(3, 4), torch.full((3, 5), 0.2), ValueError, "target"),
    (torch.ones(3, 4, dtype=torch.int64), torch.tensor([0, 1, 2]), TypeError, "logits"),
    (torch.ones(3, 4), torch.tensor([True, False, True]), TypeError, "target"),
    (torch.ones(3, 4), torch.tensor([0, 4, 1]), ValueError, r"\[0, 4\)"),
    (torch.ones(3, 4), torch.tensor([0, -1, 1]), ValueError, "ignore_index"),
], ids=["target_shape", "soft_target_shape", "integer_logits", "bool_target", "class_range",
        "negative_index"])
def test_validation_errors_bad_input(logits, target, error, match):
    with pytest.raises(error, match=match):
        cross_entropy(logits, target)


# torch's own dynamo warns as it traces (warnings that the project's "error" filter would turn
# into failures): it probes the .grad of the (non-leaf) logits when it compiles the frame of
# cross_entropy after a graph break, instantiates the autograd Function (DeprecationWarning),
# and names the builtins it cannot trace when the first call builds the kernel inside the
# compiled region
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_torch_compile_compatible():
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(4, 50, generator=gen)
    y = torch.randint(0, 50, (4,), generator=gen)

    def step(a, t):
        return cross_entropy(a * 2.0, t, label_smoothing=0.1, z_loss=1e-3)

    compiled = torch.compile(step, backend="aot_eager")
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    out_c = compiled(xa, y)
    out_e = step(xb, y)
    out_c.backward()
    out_e.backward()
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(xa.grad, xb.grad)


def test_backend_info_reports_a_path():
    info = backend_info()
    assert info["cpu"] in ("cpp-extension", "torch-ops")
    try:
        import triton  # noqa: F401
        has_triton = True
    except ImportError:
        has_triton = False
    assert info["cuda"] == ("triton" if has_triton else "torch-ops")
    assert (info["triton"] is None) == has_triton
    assert (info["cpu"] == "cpp-extension") == info["extension"]["available"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_pytorch():
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(64, 5000, generator=gen).cuda()
    y = _targets(64, 5000, gen, 0.1).cuda()
    w = torch.rand(5000, generator=gen).cuda()
    for kw in (dict(), dict(weight=w, label_smoothing=0.1), dict(reduction="none")):
        ref, gref = _ref(x, y, **kw)
        out, g = _ours(x, y, **kw)
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(g.double(), gref, rtol=1e-4, atol=1e-6)
    xb = x.bfloat16()
    torch.testing.assert_close(_ours(xb, y)[0].double(), _ref(xb, y)[0], rtol=2e-2, atol=2e-2)


def test_impl_argument_chooses_the_implementation(monkeypatch):
    x = torch.randn(6, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 3, 10, -100, 2, 5])
    ref = F.cross_entropy(x, y, label_smoothing=0.1)
    impls = ["auto", "torch"] + (["kernel"] if _ext.load() else [])
    for impl in impls:
        xi = x.clone().requires_grad_()
        loss = ct.cross_entropy(xi, y, label_smoothing=0.1, impl=impl)
        lin = ct.linear_cross_entropy(x, torch.eye(11, dtype=torch.float64), y,
                                      label_smoothing=0.1, impl=impl)
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(lin, ref)
        loss.backward()
        assert torch.isfinite(xi.grad).all()
    with pytest.raises(ValueError, match="impl must be one of"):
        ct.cross_entropy(x, y, impl="cuda")
    monkeypatch.setattr(_ext, "load", lambda: False)  # a machine that cannot build the kernel
    with pytest.raises(ValueError, match="impl='kernel'"):
        ct.cross_entropy(x, y, impl="kernel")
    torch.testing.assert_close(ct.cross_entropy(x, y, label_smoothing=0.1), ref)


# --- the common call's direct route, and the kernel's row widths --------------------------

_COMMON = {"weight": None, "size_average": None, "reduce": None, "reduction": "mean",
           "label_smoothing": 0.0, "sample_weight": None, "z_loss": 0.0, "softcap": None,
           "inplace_backward": False, "return_z_loss": False, "impl": "auto",
           "ignore_index": -100}


def _takes_direct_route(logits, target, **changes):
    from crossent.torch.cross_entropy import _common_call

    return _common_call(logits, target, **{**_COMMON, **changes})


@pytest.mark.skipif(not _ext.load(), reason="the C++ kernel is not available here")
def test_the_common_call_takes_the_direct_route_and_nothing_else_does():
    x = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    assert _takes_direct_route(x, y)
    assert _takes_direct_route(x, y, reduction="none", ignore_index=3)
    # every deviation goes through the general checks
    for changes in ({"weight": torch.ones(5)}, {"label_smoothing": 0.1}, {"z_loss": 1e-4},
                    {"softcap": 30.0}, {"sample_weight": torch.ones(8)}, {"impl": "kernel"},
                    {"inplace_backward": True}, {"return_z_loss": True}, {"reduction": "avg"},
                    {"size_average": False}, {"ignore_index": 2 ** 64}, {"label_smoothing": 0},
                    {"ignore_index": torch.tensor(3)}, {"reduction": ["mean"]}):
        assert not _takes_direct_route(x, y, **changes), changes
    for logits, target in ((x.detach(), y), (x, y.int()), (x, y[:7]), (x, y.float()),
                           (x.t(), torch.randint(0, 8, (5,))), (x[:, None], y[:, None]),
                           (torch.nn.Parameter(x.detach()), y), (x[:0], y[:0])):
        assert not _takes_direct_route(logits, target)
    with torch.no_grad():
        assert not _takes_direct_route(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _takes_direct_route(x, y)
    assert torch.func.grad(lambda s: (_takes_direct_route(s, y) or 0) + s.sum())(
        x.detach()).eq(1).all()


@pytest.mark.skipif(not _ext.load(), reason="the C++ kernel is not available here")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_direct_route_matches_the_general_path(reduction, dtype):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(33, 7, generator=g) * 4).to(dtype)
    y = torch.randint(0, 7, (33,), generator=g)
    y[::5] = 2  # ignored rows
    direct = _ours(x, y, reduction=reduction, ignore_index=2)
    general = _ours(x, y, reduction=reduction, ignore_index=2, impl="kernel")
    for a, b in zip(direct, general, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    ref = _ref(x, y, reduction=reduction, ignore_index=2)
    tol = 2e-2 if dtype is torch.bfloat16 else 1e-6
    for a, b in zip(direct, ref, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)


@pytest.mark.skipif(not _ext.load(), reason="the C++ kernel is not available here")
def test_the_direct_route_refuses_a_label_out_of_range_like_the_general_path():
    x = torch.randn(4, 3, requires_grad=True)
    messages = []
    for impl in ("auto", "kernel"):
        with pytest.raises(ValueError, match=r"class indices in \[0, 3\)") as err:
            cross_entropy(x, torch.tensor([0, 3, 1, 2]), impl=impl)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert x.grad is None
    with pytest.raises(ValueError, match="reduction"):  # an unhashable value, worded as usual
        cross_entropy(x, torch.tensor([0, 1, 1, 2]), reduction=["mean"])


@pytest.mark.parametrize("impl", ["auto", "torch"])
def test_every_row_width_against_float64(impl):
    # widths around each vector size (8 lanes on AVX2, 16 on AVX-512) and the 1024-class
    # block: the kernel's full vectors, its overlapping last vector and its narrow rows
    g = torch.Generator().manual_seed(11)
    for c in [*range(1, 41), 63, 64, 65, 1023, 1024, 1025, 2050]:
        x = torch.randn(6, c, generator=g) * 6
        x[0, -1] = 30.0  # the row's maximum in the last lane
        y = torch.randint(0, c, (6,), generator=g)
        got = _ours(x, y, impl=impl, reduction="sum")
        ref = _ref(x, y, reduction="sum")
        for a, b in zip(got, ref, strict=True):
            torch.testing.assert_close(a.double(), b, rtol=2e-6, atol=1e-6, msg=f"C={c}")


def test_exp_in_the_kernels_is_accurate_down_to_gradual_underflow():
    # the sigmoid loss's gradient at label 0 is sigmoid(x) = e / (1 + e), e = exp(x): for
    # x < -17 it is exp(x) to the last bit, so this sweeps the kernels' vectorised exp
    # (inline on AVX2 / AVX-512, Sleef elsewhere) over its whole range, against float64
    import crossent

    x64 = np.concatenate([np.linspace(-104.0, 30.0, 200_001),
                          [-87.3365, -87.33655, -103.28, -103.2789, -150.0, -1e30]])
    x = torch.tensor(x64.astype(np.float32), requires_grad=True)
    crossent.sigmoid_cross_entropy(x, torch.zeros_like(x), reduction="sum").backward()
    got = x.grad.double().numpy()
    xf = x.detach().double().numpy()
    ref = np.exp(xf - np.logaddexp(0.0, xf))  # sigmoid, without overflow at -1e30
    normal = ref >= np.finfo(np.float32).tiny
    ulps = np.abs(got - ref)[normal] / np.spacing(ref[normal].astype(np.float32))
    assert ulps.max() <= 4.0, ulps.max()
    # below the normal range: the kernels round gradual underflow, within two units of its
    # last place (2**-149); torch's sigmoid, the fallback's, flushes it to zero
    sub = np.abs(got - ref)[~normal]
    if backend_info()["cpu"] == "cpp-extension":
        assert (sub <= 2 * 2.0 ** -149).all(), sub.max()
    else:
        assert (sub <= np.finfo(np.float32).tiny).all(), sub.max()


def test_exp_keeps_nan_and_infinities():
    import crossent

    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 89.0, -104.5],
                     requires_grad=True)
    crossent.sigmoid_cross_entropy(x, torch.zeros(5), reduction="sum").backward()
    g = x.grad
    assert g[0].isnan() and g[1] == 1.0 and g[2] == 0.0 and g[3] == 1.0 and g[4] == 0.0
