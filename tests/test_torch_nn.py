"""crossent.torch.nn Modules against their torch.nn counterparts."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import crossent  # noqa: E402
from crossent.torch import nn as cnn  # noqa: E402


@pytest.mark.filterwarnings("ignore:size_average and reduce")
def test_cross_entropy_loss_is_a_drop_in():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 3, generator=g)
    y = torch.randint(0, 5, (6, 3), generator=g)
    y[0, 0] = 2
    w = torch.rand(5, generator=g)
    # same positional order as torch.nn.CrossEntropyLoss(weight, size_average, ignore_index, ...)
    for args, kw in (((), {}), ((w, None, 2), {}), ((), dict(reduction="none")),
                     ((w,), dict(label_smoothing=0.2, reduction="sum")),
                     ((), dict(size_average=False))):
        ours, ref = cnn.CrossEntropyLoss(*args, **kw), torch.nn.CrossEntropyLoss(*args, **kw)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        la, lb = ours(xa, y), ref(xb, y)
        torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
        la.sum().backward()
        lb.sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-7)


def test_cross_entropy_loss_weight_is_a_buffer_and_extras():
    w = torch.rand(4)
    m = cnn.CrossEntropyLoss(w, z_loss=1e-3, softcap=10.0)
    assert "weight" in dict(m.named_buffers())
    assert m.to(torch.float64).weight.dtype == torch.float64
    assert "z_loss=0.001" in repr(m) and "softcap=10.0" in repr(m)
    with pytest.raises(ValueError, match="reduction"):
        cnn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="softcap"):
        cnn.CrossEntropyLoss(softcap=0.0)


def test_linear_cross_entropy_loss_owns_its_head():
    head = cnn.LinearCrossEntropyLoss(8, 50, bias=True, label_smoothing=0.1, chunk_size=3)
    ref = torch.nn.Linear(8, 50)
    ref.load_state_dict(head.linear.state_dict())  # the head is an nn.Linear, as in torch
    h = torch.randn(2, 5, 8)
    y = torch.randint(0, 50, (2, 5))
    loss = head(h, y)
    rloss = F.cross_entropy(ref(h).reshape(10, 50), y.reshape(10), label_smoothing=0.1)
    torch.testing.assert_close(loss, rloss)
    loss.backward()
    rloss.backward()
    torch.testing.assert_close(head.linear.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(head.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-7)
    nobias = cnn.LinearCrossEntropyLoss(8, 50, bias=False)
    assert nobias.bias is None and "bias=False" in repr(nobias)


def _need(name):
    if not hasattr(crossent, name):
        pytest.skip(f"crossent.{name} is not written yet")


def test_sigmoid_cross_entropy_loss():
    _need("sigmoid_cross_entropy")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=g)
    t = torch.rand(5, 3, generator=g)
    pw = torch.rand(3, generator=g) + 0.5
    w = torch.rand(5, 3, generator=g)
    for kw in (dict(), dict(pos_weight=pw, weight=w, reduction="sum"), dict(reduction="none")):
        torch.testing.assert_close(cnn.SigmoidCrossEntropyLoss(**kw)(x, t),
                                   torch.nn.BCEWithLogitsLoss(**kw)(x, t), rtol=1e-5, atol=1e-6)


def test_sigmoid_focal_loss():
    _need("sigmoid_focal_loss")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 4, generator=g)
    t = (torch.rand(6, 4, generator=g) > 0.5).float()
    p = torch.sigmoid(x)
    pt = p * t + (1 - p) * (1 - t)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    ref = ((0.25 * t + 0.75 * (1 - t)) * (1 - pt) ** 2 * ce).mean()  # torchvision's formula
    torch.testing.assert_close(cnn.SigmoidFocalLoss()(x, t), ref, rtol=1e-5, atol=1e-6)


def test_softmax_focal_loss():
    _need("softmax_focal_loss")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, generator=g)
    y = torch.randint(0, 5, (7,), generator=g)
    # gamma = 0 and no alpha is the plain cross-entropy
    torch.testing.assert_close(cnn.SoftmaxFocalLoss(gamma=0.0)(x, y), F.cross_entropy(x, y),
                               rtol=1e-5, atol=1e-6)
    logp = F.log_softmax(x, 1).gather(1, y[:, None]).squeeze(1)
    ref = (-(1 - logp.exp()) ** 2 * logp).mean()
    torch.testing.assert_close(cnn.SoftmaxFocalLoss()(x, y), ref, rtol=1e-5, atol=1e-6)
