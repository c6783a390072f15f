"""crossent.log_loss against scikit-learn's sklearn.metrics.log_loss (values) and a float64
restatement of its formula differentiated by torch autograd (gradients), on every backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import crossent
from tests._backends import BACKENDS, finite_difference, to_backend, to_numpy

metrics = pytest.importorskip("sklearn.metrics")
torch = pytest.importorskip("torch")


def _probs(n, c, seed):
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=n)


CASES = {
    "multiclass": (np.array([2, 0, 1, 2, 1]), _probs(5, 3, 0), {}),
    "strings": (np.array(["spam", "ham", "ham", "spam"]),
                np.array([[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), {}),
    "binary 1-D": (np.array([1, 0, 0, 1, 1]), np.array([0.9, 0.2, 0.6, 0.7, 0.5]), {}),
    "labels= a missing class": (np.array([0, 2, 2]), _probs(3, 4, 1),
                                {"labels": [0, 1, 2, 3]}),
    "weights": (np.array([2, 0, 1, 2, 1]), _probs(5, 3, 2),
                {"sample_weight": np.array([0.5, 2.0, 1.0, 0.0, 3.0])}),
    "sum": (np.array([2, 0, 1, 2, 1]), _probs(5, 3, 3), {"normalize": False}),
    "clipped 0 and 1": (np.array([0, 1, 1]),
                        np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), {}),
}


def _reference_grad(y_true, y_prob, kw):
    """The formula restated in float64 torch ops (one-hot of the sorted classes, clip, weighted
    mean), differentiated by autograd."""
    classes = np.unique(kw.get("labels", y_true))
    col = torch.from_numpy(np.searchsorted(classes, y_true))
    p = torch.from_numpy(np.asarray(y_prob, dtype=np.float64)).requires_grad_()
    full = torch.stack([1 - p, p], dim=1) if p.ndim == 1 else p
    eps = np.finfo(np.float64).eps
    per = -torch.log(full.clamp(eps, 1 - eps).gather(1, col[:, None])[:, 0])
    w = torch.from_numpy(kw["sample_weight"]) if "sample_weight" in kw else torch.ones(len(per),
                                                                                       dtype=per.dtype)
    value = (w * per).sum() / (w.sum() if kw.get("normalize", True) else 1.0)
    value.backward()
    return value.item(), p.grad.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_scikit_learn(case, backend):
    y_true, y_prob, kw = CASES[case]
    want = metrics.log_loss(y_true, y_prob, **kw)
    ref_value, ref_grad = _reference_grad(y_true, y_prob, kw)
    assert ref_value == pytest.approx(want, rel=1e-13)
    bkw = {k: (to_backend(backend, v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    value, grad = crossent.value_and_grad(crossent.log_loss, argnums=1)(
        y_true if y_true.dtype.kind == "U" else to_backend(backend, y_true),
        to_backend(backend, y_prob), **bkw)
    assert float(to_numpy(value)) == pytest.approx(want, rel=1e-13)
    np.testing.assert_allclose(to_numpy(grad), ref_grad, rtol=1e-12, atol=1e-300)


def test_gradient_matches_finite_differences_inside_the_clip():
    y_true, y_prob, kw = CASES["weights"]
    g = crossent.grad(crossent.log_loss, argnums=1)(y_true, y_prob, **kw)
    with warnings.catch_warnings():  # the perturbed rows no longer sum to one
        warnings.filterwarnings("ignore", "The y_prob values do not sum to one")
        fd = finite_difference(lambda p: crossent.log_loss(y_true, p, **kw), y_prob)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_float32_clips_at_its_own_epsilon():
    y = np.array([0, 1])
    p = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    got = crossent.log_loss(y, p)
    assert got.dtype == np.float32
    assert float(got) == pytest.approx(metrics.log_loss(y, p), rel=1e-6)


def test_torch_autograd_reaches_y_prob():
    y_true, y_prob, _ = CASES["multiclass"]
    p = torch.from_numpy(y_prob).requires_grad_()
    crossent.log_loss(torch.from_numpy(y_true), p).backward()
    np.testing.assert_allclose(p.grad.numpy(), _reference_grad(y_true, y_prob, {})[1],
                               rtol=1e-12)


def test_rows_not_summing_to_one_warn_as_scikit_learn():
    with pytest.warns(UserWarning, match="do not sum to one"):
        crossent.log_loss([0, 1], np.array([[0.5, 0.2], [0.3, 0.3]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crossent.log_loss([0, 1], np.array([[0.5, 0.5], [0.3, 0.7]]))


@pytest.mark.parametrize("args,kw,match", [
    (([0, 1, 2], np.array([[0.5, 0.5]] * 3)), {}, "2 class columns but there are 3"),
    (([0, 1], np.array([[0.5, 0.5]] * 3)), {}, "one label per row"),
    (([0, 5], np.array([[0.5, 0.5]] * 2)), {"labels": [0, 1]}, "not in labels"),
    (([0, 1], np.array([[1.5, -0.5]] * 2)), {}, "y_prob"),
    (([0, 1], np.array([[0.5, 0.5]] * 2)), {"sample_weight": np.array([1.0, -1.0])},
     "sample_weight"),
    (([0, 1], np.array([[0.5, 0.5]] * 2)), {"sample_weight": np.array([1.0])},
     "sample_weight"),
])
def test_errors(args, kw, match):
    with pytest.raises(ValueError, match=match):
        crossent.log_loss(*args, **kw)
    with pytest.raises(TypeError, match="y_prob"):
        crossent.log_loss([0, 1], np.array([[1, 0], [0, 1]]))
