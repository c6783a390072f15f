"""crossent.torch.heads: margin-softmax Modules that own their class weights."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml

import crossent
from crossent import margin_softmax as M
from crossent.torch.heads import ArcFaceHead, CosFaceHead, LargeMarginSoftmaxHead, SphereFaceHead

HEADS = [
    (ArcFaceHead, M.arcface_loss, pml.ArcFaceLoss, dict(margin=0.4, scale=16.0)),
    (ArcFaceHead, M.arcface_loss, None, dict(margin=0.4, scale=16.0, easy_margin=True)),
    (CosFaceHead, M.cosface_loss, pml.CosFaceLoss, dict(margin=0.25, scale=20.0)),
    (SphereFaceHead, M.sphereface_loss, pml.SphereFaceLoss, dict(margin=3, scale=1.5)),
    (LargeMarginSoftmaxHead, M.large_margin_softmax_loss, pml.LargeMarginSoftmaxLoss,
     dict(margin=2, scale=1.0)),
]
IDS = ["arcface", "arcface-easy", "cosface", "sphereface", "lsoftmax"]


def _data(n=8, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("head_cls,fn,pml_cls,opts", HEADS, ids=IDS)
def test_head_equals_function_and_pml(head_cls, fn, pml_cls, opts):
    head = head_cls(6, 5, dtype=torch.float64, **opts)
    assert head.weight.shape == (5, 6) and head.weight.dtype == torch.float64
    x, y = _data()
    loss = head(x, y)
    loss.backward()
    with torch.no_grad():
        assert loss.item() == pytest.approx(fn(x, head.weight, y, **opts).item(), rel=1e-14)
    if pml_cls is None:
        return
    pml_opts = dict(opts)
    if head_cls is ArcFaceHead:
        pml_opts["margin"] = math.degrees(opts["margin"])
    ref = pml_cls(num_classes=5, embedding_size=6, **pml_opts).double()
    with torch.no_grad():
        ref.W.copy_(head.weight.T)
    ref_loss = ref(x, y)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    np.testing.assert_allclose(head.weight.grad.numpy(), ref.W.grad.T.numpy(), rtol=1e-9,
                               atol=1e-13)


@pytest.mark.parametrize("head_cls,fn,pml_cls,opts", HEADS, ids=IDS)
def test_head_logits(head_cls, fn, pml_cls, opts):
    head = head_cls(6, 5, dtype=torch.float64, **opts)
    x, y = _data(seed=1)
    with torch.no_grad():
        train = head.logits(x, y)
        plain = head.logits(x)
        # the margin logits are what the loss is softmax cross-entropy of
        assert F.cross_entropy(train, y).item() == pytest.approx(head(x, y).item(), rel=1e-13)
        u = F.normalize(x, dim=1)
        v = F.normalize(head.weight, dim=1)
        r = {
            LargeMarginSoftmaxHead: x.norm(dim=1, keepdim=True) * head.weight.norm(dim=1),
            SphereFaceHead: x.norm(dim=1, keepdim=True),
        }.get(head_cls, 1.0)
        torch.testing.assert_close(plain, opts["scale"] * r * (u @ v.T), rtol=1e-12,
                                   atol=1e-12)
        # the margin lowers only the target logit
        off = torch.ones_like(train, dtype=torch.bool)
        off[torch.arange(len(y)), y] = False
        torch.testing.assert_close(train[off], plain[off])
        assert (train[~off] <= plain[~off] + 1e-12).all()


@pytest.mark.parametrize("head_cls,fn,pml_cls,opts", HEADS, ids=IDS)
def test_head_backward_is_the_closed_form(head_cls, fn, pml_cls, opts):
    head = head_cls(6, 5, dtype=torch.float64, **opts)
    x, y = _data(seed=2)
    x.requires_grad_()
    loss = head(x, y)
    assert type(loss.grad_fn).__name__ == "_ClosedFormBackward"
    loss.backward()
    gx, gw = crossent.grad(fn, argnums=(0, 1))(x.detach(), head.weight.detach(), y, **opts)
    torch.testing.assert_close(x.grad, gx, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(head.weight.grad, gw, rtol=1e-13, atol=1e-15)


def test_heads_train():
    x, y = _data(n=32, d=4)
    for head in (ArcFaceHead(4, 5, scale=8.0), CosFaceHead(4, 5, scale=8.0),
                 SphereFaceHead(4, 5, margin=2), LargeMarginSoftmaxHead(4, 5, margin=2)):
        head = head.double()
        opt = torch.optim.SGD(head.parameters(), lr=0.5)
        first = head(x, y).item()
        for _ in range(30):
            opt.zero_grad()
            loss = head(x, y)
            loss.backward()
            opt.step()
        assert loss.item() < first, type(head).__name__


def test_heads_module_behaviour():
    head = ArcFaceHead(3, 2, margin=0.3, scale=10.0, reduction="none")
    assert set(head.state_dict()) == {"weight"}
    assert [p.shape for p in head.parameters()] == [torch.Size([2, 3])]
    assert "margin=0.3" in repr(head) and "easy_margin=False" in repr(head)
    out = head(torch.randn(4, 3), torch.tensor([0, 1, 1, 0]))
    assert out.shape == (4,)
    half = CosFaceHead(3, 2).to(torch.bfloat16)
    assert half(torch.randn(4, 3, dtype=torch.bfloat16), torch.tensor([0, 1, 1, 0])).dtype \
        == torch.bfloat16
    # same function, same registry: the closed-form gradient w.r.t. the embeddings
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    head = head.double()
    head(x, torch.tensor([0, 1, 1, 0])).sum().backward()
    _, g = crossent.value_and_grad(M.arcface_loss)(x.detach(), head.weight.detach(),
                                                   torch.tensor([0, 1, 1, 0]), margin=0.3,
                                                   scale=10.0, reduction="sum")
    torch.testing.assert_close(x.grad, g)


def test_heads_errors():
    with pytest.raises(ValueError, match=r"margin must be an angle in radians in \[0, pi\)"):
        ArcFaceHead(4, 3, margin=28.6)
    with pytest.raises(ValueError, match="margin must be a positive integer"):
        SphereFaceHead(4, 3, margin=0.5)
    with pytest.raises(ValueError, match="margin must be a non-negative finite number"):
        CosFaceHead(4, 3, margin=-1.0)
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        ArcFaceHead(4, 3, scale=-1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        CosFaceHead(4, 3, reduction="avg")
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        LargeMarginSoftmaxHead(4, 0)
    head = CosFaceHead(4, 3)
    with pytest.raises(ValueError, match=r"weight must have shape \(num_classes, embedding_dim=5"):
        head(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 3\)"):
        head.logits(torch.randn(2, 4), torch.tensor([0, 3]))
