"""Train a PgM block inside a PyTorch Lightning module (needs ``pgm-plugins[lightning]``).

``PgMModuleMixin`` adds the block's auxiliary loss to what ``training_step`` returns and gives
``configure_optimizers`` the block's own parameter groups.

    python examples/train_lightning.py
"""

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import pgm_plugins as pp
from pgm_plugins.integrations.lightning import PgMModuleMixin
from pgm_plugins.toy import LateFusion, make_uni_paired


class Regressor(PgMModuleMixin, L.LightningModule):
    pgm_lr = 3e-3  # the base of the block's groups and the host's rate

    def __init__(self) -> None:
        super().__init__()
        self.model = LateFusion({"text": 16, "audio": 8})
        pp.inject(self.model, "toy.late_fusion", config={"task": "regression"})

    def training_step(self, batch, batch_idx):
        text, audio, y = batch  # the mixin reads the targets from the batch's last item
        loss = F.mse_loss(self.model(text, audio), y)
        self.log("task_loss", loss)
        return loss  # the mixin adds the auxiliary loss


torch.manual_seed(0)
x, y = make_uni_paired(512)
loader = DataLoader(TensorDataset(x["text"], x["audio"], y), batch_size=32, shuffle=True)
module = Regressor()
trainer = L.Trainer(
    max_epochs=3,
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


def task_loss() -> float:
    with torch.no_grad():  # a forward with gradients would count as one to train on
        return F.mse_loss(module.model(x["text"], x["audio"]), y).item()


before = task_loss()
trainer.fit(module, loader)
after = task_loss()
pp.save(module.pgm_handle, "pgm-lightning-demo")  # the adapter-only checkpoint
print(f"task loss {before:.3f} -> {after:.3f}; pgm_aux {trainer.callback_metrics['pgm_aux']:.3f}")
