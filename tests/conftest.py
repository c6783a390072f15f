"""Test-wide settings (JAX in float64, Keras on the JAX backend, a bounded hypothesis profile)
and the fixtures several test files share."""

import os
import sys
import zlib

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Without a GPU, crossent's Triton kernels are tested in Triton's interpreter, on CPU tensors;
# it has to be chosen before Triton is first imported. (With a GPU they run compiled.)
if not os.path.exists("/dev/nvidia0") and not os.path.exists("/dev/kfd"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

settings.register_profile("crossent", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("crossent")


# The Triton kernel's largest block while a test runs on it through ``kernel_backend``: small,
# so that the suite's vocabularies of a few thousand classes span several blocks.
TRITON_TEST_BLOCK = 1024


@pytest.fixture(params=["ext", "torch", "triton"])
def kernel_backend(request, monkeypatch):
    """Run a crossent.torch test on the C++ row kernel, on the torch-ops path, then on the
    Triton kernel (in Triton's interpreter on CPU tensors, where TRITON_INTERPRET=1)."""
    torch_ext = pytest.importorskip("crossent.torch._ext")
    if request.param == "ext":
        if not torch_ext.load():
            pytest.skip(f"C++ kernel unavailable: {torch_ext.info()['error']}")
    else:
        # the kernel unavailable, as on a machine that cannot build it: impl="auto" must then
        # run torch ops everywhere (tests of impl= itself pass it explicitly)
        monkeypatch.setattr(torch_ext, "load", lambda: False)
    if request.param == "triton":
        import torch

        triton_rows = pytest.importorskip("crossent.torch._triton_rows")
        probe = torch.empty(1, 1)
        why = triton_rows.why_not(probe)
        if why is not None:
            pytest.skip(f"the Triton kernel cannot run CPU tensors here: {why}")
        # impl="auto" takes the Triton kernel for every tensor it serves (float64 stays on
        # torch ops), as it does for CUDA tensors
        serves = triton_rows.serves
        monkeypatch.setattr(triton_rows, "serves", lambda x, impl: serves(x, impl) or (
            impl == "auto" and triton_rows.why_not(x) is None))
        monkeypatch.setattr(triton_rows, "MAX_BLOCK", TRITON_TEST_BLOCK)
    return request.param


@pytest.fixture(params=[("numpy", "float16"), ("torch", "float16"), ("torch", "bfloat16"),
                        ("jax", "float16"), ("jax", "bfloat16")], ids="-".join)
def half_precision(request):
    """A (backend, dtype) pair of a half-precision type on a backend that has it (NumPy has no
    bfloat16)."""
    return request.param


@pytest.fixture
def rng(request):
    """A NumPy generator of the test's own, seeded from its node id: a test's data does not
    depend on which tests ran before it (order, -k, xdist), and each parametrized case gets
    its own. CRC32 is stable across runs and machines, unlike the salted built-in ``hash``."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def _seed_torch(request):
    """Seed torch's global generator from the test's node id (as ``rng`` does for NumPy), so a
    ``torch.randn`` without a generator gives the same data whatever ran before."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="module")
def keras_float64():
    """Keras computes in its floatx (float32 by default): compare in float64 for a module
    (``pytestmark = pytest.mark.usefixtures("keras_float64")``)."""
    keras = pytest.importorskip("keras")
    old = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(old)
