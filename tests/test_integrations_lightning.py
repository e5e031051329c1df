"""``PgMModuleMixin``: a Lightning module's training loss gains the PgM block's auxiliary loss,
once per step, and its default optimizer the block's groups."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

pytest.importorskip(
    "lightning", reason="the lightning extra is not installed: pip install '.[lightning]'"
)

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pgm_plugins as pp
from pgm_plugins.errors import InputError
from pgm_plugins.integrations.lightning import PgMModuleMixin
from pgm_plugins.toy import LateFusion

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


class Regressor(PgMModuleMixin, L.LightningModule):
    def __init__(self, task: str = "regression") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = LateFusion({"text": 6, "audio": 4}, hidden=8)
        pp.inject(self.model, "toy.late_fusion", config={"task": task})
        self.double()

    def training_step(self, batch, batch_idx):
        text, audio, y = batch
        return F.mse_loss(self.model(text, audio), y)


class SGDRegressor(Regressor):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(n=8):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(n, *d, generator=g, dtype=torch.float64) for d in ((6,), (4,), ()))


def fit(module, batch_size, accumulate=1, batches=None):
    trainer = L.Trainer(
        max_steps=1,
        accumulate_grad_batches=accumulate,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(TensorDataset(*data()), batch_size=batch_size)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer.fit(module, loader)
    return {n: p.detach() - before[n] for n, p in module.named_parameters()}


def test_training_step_returns_the_task_loss_plus_the_aux_loss():
    module = Regressor()
    text, audio, y = batch = data()
    total = module.training_step(batch, 0)
    own = F.mse_loss(module.model(text, audio), y)  # a second forward: read on its own below
    handle = module.pgm_handle
    assert torch.allclose(total, own + handle.aux_loss(y))


def test_accumulated_gradients_equal_one_batch_of_the_same_size():
    """Lightning divides what training_step returns by accumulate_grad_batches, auxiliary loss
    included: two batches of four move every parameter as one batch of eight."""
    whole = fit(SGDRegressor(), batch_size=8)
    accumulated = fit(SGDRegressor(), batch_size=4, accumulate=2)
    assert any(v.abs().max() > 1e-4 for k, v in whole.items() if "pgm_block" in k)
    for name, delta in whole.items():
        torch.testing.assert_close(accumulated[name], delta, rtol=1e-9, atol=1e-12, msg=name)


def test_an_overriding_step_calling_super_adds_the_aux_loss_once():
    class Logged(Regressor):
        def training_step(self, batch, batch_idx):
            return {"loss": super().training_step(batch, batch_idx), "extra": 1}

    batch = data()
    plain = Regressor().training_step(batch, 0)
    out = Logged().training_step(batch, 0)
    assert set(out) == {"loss", "extra"}
    torch.testing.assert_close(out["loss"], plain)


def test_a_skipped_step_leaves_nothing_for_the_next():
    class Skipping(Regressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return None if batch_idx == 0 else loss

    module = Skipping()
    assert module.training_step(data(), 0) is None
    torch.testing.assert_close(
        module.training_step(data(), 1), Regressor().training_step(data(), 1)
    )


def test_manual_optimisation_adds_nothing():
    module = Regressor()
    module.automatic_optimization = False
    text, audio, y = batch = data()
    torch.testing.assert_close(
        module.training_step(batch, 0), F.mse_loss(module.model(text, audio), y)
    )


def test_default_optimizer_covers_the_module_with_the_blocks_rates():
    module = Regressor()
    module.head = nn.Linear(2, 2)  # outside the injected model: a host parameter too
    module.pgm_lr, module.pgm_host_lr = 1e-3, 1e-4
    optimizer = module.configure_optimizers()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert isinstance(optimizer, torch.optim.AdamW)
    assert groups["host"]["lr"] == pytest.approx(1e-4)
    assert groups["audio.partitioner"]["lr"] == pytest.approx(1e-2)
    covered = sorted(id(p) for g in groups.values() for p in g["params"])
    assert covered == sorted(id(p) for p in module.parameters())


def test_targets_not_found_say_how_to_give_them():
    class Pairs(Regressor):
        def training_step(self, batch, batch_idx):
            return F.mse_loss(self.model(batch["text"], batch["audio"]), batch["y"])

    text, audio, y = data()
    with pytest.raises(InputError, match=r"keys \['audio', 'text', 'y'\].*override of pgm_targets"):
        Pairs().training_step({"text": text, "audio": audio, "y": y}, 0)

    class Picked(Pairs):
        def pgm_targets(self, batch):
            return batch["y"]

    assert Picked().training_step({"text": text, "audio": audio, "y": y}, 0).ndim == 0


def test_the_readme_example_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "examples" / "train_lightning.py"), run_name="__main__")
    out = capsys.readouterr().out
    first, last = (float(v) for v in out.split("task loss ")[-1].split(";")[0].split(" -> "))
    assert last < first
    handle = pp.load(LateFusion({"text": 16, "audio": 8}), tmp_path / "pgm-lightning-demo")
    assert handle.block.config.task == "regression"
