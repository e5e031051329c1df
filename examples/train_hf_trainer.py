"""Train a PgM block inside a model with a Hugging Face ``Trainer`` (needs ``pgm-plugins[hf]``).

``PgMTrainer`` adds the block's auxiliary loss to the model's loss, optimizes the block's own
parameter groups, and writes the adapter-only checkpoint into each ``checkpoint-N/pgm``.

    python examples/train_hf_trainer.py   # writes pgm-hf-demo/ in the current folder
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainingArguments

import pgm_plugins as pp
from pgm_plugins.integrations.hf import PgMTrainer
from pgm_plugins.toy import LateFusion, make_uni_paired


class Regressor(nn.Module):
    """A host as the Trainer expects one: named inputs in, a dict with the loss out."""

    def __init__(self) -> None:
        super().__init__()
        self.net = LateFusion({"text": 16, "audio": 8})

    def forward(self, text, audio, labels=None):
        pred = self.net(text, audio)
        return {"loss": F.mse_loss(pred, labels), "logits": pred}


torch.manual_seed(0)
x, y = make_uni_paired(512)
rows = [{"text": x["text"][i], "audio": x["audio"][i], "labels": y[i]} for i in range(len(y))]

model = Regressor()
pp.inject(model.net, "toy.late_fusion", config={"task": "regression"})
args = TrainingArguments(
    output_dir="pgm-hf-demo",
    num_train_epochs=3,
    per_device_train_batch_size=32,
    learning_rate=3e-3,
    save_strategy="epoch",
    logging_steps=16,
    report_to=[],
    disable_tqdm=True,
    use_cpu=True,
)
trainer = PgMTrainer(model=model, args=args, train_dataset=rows)
trainer.train()  # logs loss (task + auxiliary) and pgm_aux

last = f"pgm-hf-demo/checkpoint-{trainer.state.global_step}/pgm"
fresh = Regressor()
pp.load(fresh.net, last)  # the block only; the host's weights come from the Trainer's checkpoint
losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; adapter-only checkpoint: {last}")
