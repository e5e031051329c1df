"""``PgMTrainer``: a Hugging Face ``Trainer`` that adds the PgM block's auxiliary loss, optimizes
the block's groups and writes the adapter-only checkpoint beside each of its checkpoints."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed: pip install '.[hf]'")
pytest.importorskip("accelerate", reason="the hf extra is not installed: pip install '.[hf]'")

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainingArguments

import pgm_plugins as pp
from pgm_plugins.errors import ConfigError, InjectionError, InputError
from pgm_plugins.integrations._common import require
from pgm_plugins.integrations.hf import PgMTrainer
from pgm_plugins.toy import LateFusion

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


class MeanLoss(nn.Module):
    """A host whose loss is a per-batch mean: the Trainer divides it under accumulation."""

    def __init__(self) -> None:
        super().__init__()
        self.net = LateFusion({"text": 6, "audio": 4}, hidden=8)

    def forward(self, text, audio, labels=None):
        pred = self.net(text, audio)
        return {"loss": F.mse_loss(pred, labels), "logits": pred}


class SumLoss(MeanLoss):
    """A host normalising its loss over the accumulated batch (``num_items_in_batch``): the
    Trainer leaves it undivided, so PgMTrainer divides the auxiliary loss itself."""

    accepts_loss_kwargs = True

    def forward(self, text, audio, labels=None, num_items_in_batch=None, **kwargs):
        pred = self.net(text, audio)
        return {"loss": (pred - labels).pow(2).sum() / num_items_in_batch, "logits": pred}


def rows(n=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    text, audio, y = (torch.randn(n, d, generator=g, dtype=dtype) for d in (6, 4, 1))
    return [{"text": text[i], "audio": audio[i], "labels": y[i, 0]} for i in range(n)]


def injected(cls=MeanLoss, task="regression"):
    torch.manual_seed(0)
    model = cls()
    pp.inject(model.net, "toy.late_fusion", config={"task": task})
    return model.double()


def args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"),
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        max_steps=1,
        per_device_train_batch_size=8,
    )
    return TrainingArguments(**{**base, **kw})


def one_step_delta(model, tmp_path, **kw):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    PgMTrainer(model=model, args=args(tmp_path, **kw), train_dataset=rows()).train()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


def test_compute_loss_adds_the_aux_loss_in_training_only(tmp_path):
    model = injected()
    trainer = PgMTrainer(model=model, args=args(tmp_path), train_dataset=rows())
    batch = trainer.data_collator(rows())
    handle = pp.handle_of(model.net)
    model.train()
    total = trainer.compute_loss(model, dict(batch))
    own = F.mse_loss(model.net(batch["text"], batch["audio"]), batch["labels"])
    assert torch.allclose(total, own + handle.aux_loss(batch["labels"]))
    model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.compute_loss(model, dict(batch)), own)  # eval: host's own


@pytest.mark.parametrize("cls", [MeanLoss, SumLoss], ids=["trainer-divides", "model-normalises"])
def test_accumulated_gradients_equal_one_batch_of_the_same_size(tmp_path, cls):
    """Four samples twice, accumulated, move every parameter (host and block) as one batch of
    eight does: the auxiliary loss is divided exactly once, whoever scales the task loss."""
    whole = one_step_delta(injected(cls), tmp_path / "a", per_device_train_batch_size=8)
    accumulated = one_step_delta(
        injected(cls), tmp_path / "b", per_device_train_batch_size=4, gradient_accumulation_steps=2
    )
    assert any(v.abs().max() > 1e-4 for k, v in whole.items() if "pgm_block" in k)
    for name, delta in whole.items():
        torch.testing.assert_close(accumulated[name], delta, rtol=1e-9, atol=1e-12, msg=name)


def test_the_optimizer_uses_the_blocks_groups_at_the_trainers_rate(tmp_path):
    model = injected()
    model.head = nn.Linear(2, 2)  # outside the injected module: trained as host too
    trainer = PgMTrainer(
        model=model, args=args(tmp_path, optim="adamw_torch", weight_decay=0.01, learning_rate=1e-3)
    )
    groups = {g["name"]: g for g in trainer.create_optimizer().param_groups}
    assert groups["text.partitioner"]["lr"] == pytest.approx(1e-2)  # lr_mult 10
    assert groups["text.uni"]["lr"] == pytest.approx(1e-3)
    assert groups["host"]["weight_decay"] == 0.01 and groups["host.no_decay"]["weight_decay"] == 0
    covered = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(covered) == sorted(id(p) for p in model.parameters())  # each once
    own = torch.optim.SGD(model.parameters(), lr=0.5)
    given = PgMTrainer(model=model, args=args(tmp_path), optimizers=(own, None))
    assert given.create_optimizer() is own


def test_an_optimizer_that_builds_its_own_groups_is_refused(tmp_path):
    trainer = PgMTrainer(model=injected(), args=args(tmp_path))
    trainer.get_optimizer_cls_and_kwargs = lambda a, m=None: (torch.optim.SGD, {"params": []})
    with pytest.raises(ConfigError, match=r"optimizers=.*handle\.param_groups"):
        trainer.create_optimizer()


def test_each_checkpoint_holds_the_adapter_only_checkpoint(tmp_path):
    model = injected()
    trainer = PgMTrainer(
        model=model, args=args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    )
    trainer.train_dataset = rows()
    trainer.train()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("checkpoint-*/pgm")) == ["pgm", "pgm"]
    handle = pp.load(MeanLoss().net, out / "checkpoint-2" / "pgm")
    trained = pp.handle_of(model.net).block.state_dict()
    for key, value in handle.block.state_dict().items():
        torch.testing.assert_close(value, trained[key].float(), msg=key)
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "pgm" / "pgm_config.json").is_file()


def test_targets_come_from_labels_or_the_users_picker(tmp_path):
    class NamedY(MeanLoss):
        def forward(self, text, audio, y=None):
            pred = self.net(text, audio)
            return {"loss": F.mse_loss(pred, y), "logits": pred}

    data = [{"text": r["text"], "audio": r["audio"], "y": r["labels"]} for r in rows()]
    model = injected(NamedY)
    trainer = PgMTrainer(model=model, args=args(tmp_path), train_dataset=data)
    with pytest.raises(
        InputError,
        match=r"regression heads.*keys \['audio', 'text', 'y'\].*"
        r"PgMTrainer\(pgm_targets=...\)",
    ):
        trainer.train()
    model = injected(NamedY)
    PgMTrainer(
        model=model, args=args(tmp_path), train_dataset=data, pgm_targets=lambda b: b["y"]
    ).train()
    headless = injected(NamedY, task="none")  # no heads: no targets needed
    PgMTrainer(model=headless, args=args(tmp_path), train_dataset=data).train()


def test_a_model_without_a_block_is_named(tmp_path):
    with pytest.raises(InjectionError, match="MeanLoss holds no PgM block; inject one first"):
        PgMTrainer(model=MeanLoss(), args=args(tmp_path))


def test_a_missing_extra_names_the_install_command():
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'pgm-plugins\[hf\]'"):
        require("pgm_no_such_module", "hf", "PgMTrainer")


def test_the_readme_example_trains_and_reloads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "examples" / "train_hf_trainer.py"), run_name="__main__")
    out = capsys.readouterr().out
    first, last = (float(v) for v in out.split("loss ")[-1].split(";")[0].split(" -> "))
    assert last < first
    assert (tmp_path / "pgm-hf-demo" / "checkpoint-48" / "pgm" / "pgm_block.safetensors").is_file()
