"""Lightning: a LightningModule whose loss is crossent's (the drop-in ``CrossEntropyLoss`` on
logits, and ``linear_cross_entropy`` on the hidden states and the head's weight) trains under
``lightning.Trainer`` step for step as the same model trained by a plain PyTorch loop with
``torch.nn.functional.cross_entropy``."""

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

import crossent.torch.nn as cnn  # noqa: E402
from crossent.torch import linear_cross_entropy  # noqa: E402

F = torch.nn.functional
STEPS = 4
# lightning's own start-up chatter (no GPU, few workers, a tiny dataset): warnings the suite's
# "error" filter would turn into failures
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::PendingDeprecationWarning",
                                        "ignore::FutureWarning")


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 9))


def _data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS * 8, 6, generator=gen)
    y = torch.randint(0, 9, (STEPS * 8,), generator=gen)
    y[::5] = -100
    return torch.utils.data.TensorDataset(x, y)


class _Module(L.LightningModule):
    def __init__(self, fused_head: bool):
        super().__init__()
        self.net = _model()
        self.fused_head = fused_head
        self.loss_fn = cnn.CrossEntropyLoss(label_smoothing=0.1)
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.fused_head:  # the head's logits never built
            h = self.net[1](self.net[0](x))
            loss = linear_cross_entropy(h, self.net[2].weight, y, self.net[2].bias,
                                        label_smoothing=0.1)
        else:
            loss = self.loss_fn(self.net(x), y)
        self.losses.append(float(loss))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _plain_loop():
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for x, y in torch.utils.data.DataLoader(_data(), batch_size=8):
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses, net


@pytest.mark.parametrize("fused_head", [False, True])
def test_lightning_trainer_trains_as_the_plain_loop(fused_head, tmp_path):
    module = _Module(fused_head)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, torch.utils.data.DataLoader(_data(), batch_size=8))
    ref_losses, ref_net = _plain_loop()
    assert len(module.losses) == STEPS
    torch.testing.assert_close(torch.tensor(module.losses), torch.tensor(ref_losses),
                               rtol=1e-5, atol=1e-6)
    for p, q in zip(module.net.parameters(), ref_net.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
