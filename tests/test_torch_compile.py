"""torch.compile: the fused and the linear cross-entropy trace into one graph (no graph break,
``fullgraph=True``), compiled and eager agree in value and gradients, and the C++ kernels are
well-formed torch.library custom ops (``torch.library.opcheck``)."""

import pytest
import torch
import torch._dynamo as dynamo

import crossent
from crossent.torch import cross_entropy, linear_cross_entropy

# dynamo's tracing warns about things it handles (the autograd Functions it inlines, the
# non-leaf .grad it probes): warnings of torch's own that the suite's "error" filter would
# turn into failures
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

CE_OPTIONS = [
    {"label_smoothing": 0.1, "z_loss": 1e-3, "weight": "w"},
    {"softcap": 5.0, "reduction": "sum"},
    {"reduction": "none", "ignore_index": 2},
]


def _data(n=12, c=7, h=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    y[1] = -100  # an ignored row
    hid = torch.randn(n, h, generator=gen, dtype=torch.float64)
    w = torch.randn(c, h, generator=gen, dtype=torch.float64)
    cw = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
    return x, y, hid, w, cw


def _kw(opts, cw):
    return {k: (cw if v == "w" else v) for k, v in opts.items()}


def _leaves(*ts):
    return [t.detach().clone().requires_grad_(t.is_floating_point()) for t in ts]


def _value_and_grads(fn, args):
    out = fn(*args)
    out.sum().backward()
    return out.detach(), [a.grad for a in args if a.requires_grad]


def _assert_same(fn, compiled, args):
    ref, gref = _value_and_grads(fn, _leaves(*args))
    got, ggot = _value_and_grads(compiled, _leaves(*args))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(ggot, gref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("opts", CE_OPTIONS, ids=str)
def test_cross_entropy_has_no_graph_break(kernel_backend, opts):
    x, y, _, _, cw = _data()
    kw = _kw(opts, cw)
    y[1] = kw.get("ignore_index", -100)

    def step(a, t):
        return cross_entropy(a * 2.0, t, **kw)

    dynamo.reset()
    explained = dynamo.explain(step)(x.requires_grad_(), y)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    _assert_same(step, torch.compile(step, fullgraph=True, backend="aot_eager"), (x, y))


@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3, "chunk_size": 5},
                                  {"softcap": 5.0, "reduction": "sum"}], ids=str)
def test_linear_cross_entropy_has_no_graph_break(kernel_backend, opts):
    _, y, hid, w, _ = _data()

    def step(h, wt, t):
        return linear_cross_entropy(h, wt, t, **opts)

    dynamo.reset()
    explained = dynamo.explain(step)(hid.requires_grad_(), w.requires_grad_(), y)
    assert explained.graph_break_count == 0, explained.break_reasons
    _assert_same(step, torch.compile(step, fullgraph=True, backend="aot_eager"), (hid, w, y))


def test_probability_targets_compile():
    x, _, _, _, _ = _data()
    p = torch.softmax(torch.randn(x.shape, dtype=x.dtype), dim=1)

    def step(a, q):
        return cross_entropy(a, q, label_smoothing=0.05)

    dynamo.reset()
    assert dynamo.explain(step)(x.requires_grad_(), p).graph_break_count == 0
    _assert_same(step, torch.compile(step, fullgraph=True, backend="aot_eager"), (x, p))


def test_a_compiled_training_step_with_inductor():
    """One real compile (inductor's C++ codegen): a tiny LM head trained for two steps, the
    fused and the linear cross-entropy in one graph, against the same steps eagerly."""
    torch.manual_seed(0)
    x, y, hid, w, _ = _data(n=16, c=11, h=6)
    x, hid, w = x.float(), hid.float(), w.float()

    def loss_fn(a, h, wt, t):
        return cross_entropy(a * 1.5, t, label_smoothing=0.1) + linear_cross_entropy(h, wt, t)

    compiled = torch.compile(loss_fn, fullgraph=True, backend="inductor")
    for fn in (loss_fn, compiled):
        a, h, wt = _leaves(x, hid, w)
        losses = []
        for _ in range(2):
            loss = fn(a, h, wt, y)
            loss.backward()
            with torch.no_grad():
                for p in (a, h, wt):
                    p -= 0.1 * p.grad
                    p.grad = None
            losses.append(loss.detach())
        if fn is loss_fn:
            ref, ref_params = losses, (a.detach(), h.detach(), wt.detach())
    for got, want in zip(losses, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip((a, h, wt), ref_params, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def test_generic_losses_compile_and_agree():
    """The generic definitions (the fused CPU paths step aside under compile) trace too."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    t = torch.rand(6, 4, generator=gen, dtype=torch.float64)

    def step(a, q):
        return crossent.sigmoid_focal_loss(a, q)

    _assert_same(step, torch.compile(step, backend="aot_eager"), (x, t))


# --- the kernels as custom ops --------------------------------------------------------------


def _ops():
    ext = pytest.importorskip("crossent.torch._ext")
    if not ext.load():
        pytest.skip(f"C++ kernel unavailable: {ext.info()['error']}")
    return torch.ops.crossent_ext


def _op_cases():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 9, generator=gen)
    y = torch.randint(0, 9, (6,), generator=gen)
    y[0] = -100
    w = torch.rand(9, generator=gen)
    p = torch.softmax(torch.randn(6, 9, generator=gen), dim=1)
    t = torch.rand(6, 9, generator=gen)
    return [
        ("fused", (x, y, w, torch.empty_like(x), 0.1, 1e-3, 0.0, -100, 1, False)),
        ("fused", (x, p, None, None, 0.0, 0.0, 4.0, -100, 0, True)),
        ("rows", (x, y, None, torch.empty_like(x), torch.tensor(0.5), torch.tensor(0.5), 0.1,
                  0.0, 0.0, -100)),
        ("binary", (x, t, None, None, False, -1.0, 2.0, 1, True)),
        ("binary", (x, t, None, None, True, 0.25, 2.0, 0, False)),
        ("distill_rows", (x, torch.randn(6, 9, generator=gen), 2.0, 1, True)),
        ("multi_margin_rows", (x, y.clamp(min=0), w, 2, 1.0, 2, True)),
    ]


@pytest.mark.parametrize("case", range(len(_op_cases())))
def test_kernels_pass_opcheck(case):
    ops = _ops()
    name, args = _op_cases()[case]
    # schema (mutation declared), fake (meta) implementation, and dynamo/AOT tracing
    torch.library.opcheck(getattr(ops, name).default, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))
