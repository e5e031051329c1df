"""Real data: two epochs of every MMSA host (with its default PgM block) on MOSI utterance
features, clean protocol; the training loss goes down. Skips when the data are absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pgm_mmsa.data import check_widths, load_clean, video_folds
from pgm_mmsa.hosts import build_host, host_info
from pgm_mmsa.recipes import HostTrainer

import pgm_plugins as pp
from pgm_plugins.bench.data.location import data_root

KINDS = ["mult", "misa", "self_mm", "tfn", "lmf", "mmim"]
WINDOW = 2
TRAIN_ROWS = 256
BATCH = 32

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def mosi():
    if not (data_root() / "mosi-utterance" / "text_test.csv").is_file():
        pytest.skip(f"MOSI utterance features not found under {data_root()} (set PGM_DATA_DIR)")
    return load_clean()


def test_clean_protocol_shape(mosi):
    assert len(mosi) == 752 and len(set(mosi.videos)) == 31
    assert set(np.unique(mosi.labels)) == {-1.0, 1.0}
    for train, test in video_folds(mosi.videos):
        assert not {mosi.videos[i] for i in train} & {mosi.videos[i] for i in test}
    x, y = mosi.batch("misa", [0, 1, 2], window=3)
    mask = x[0][:, 1, :]  # MMSA's attention-mask row: real utterances first
    assert torch.all(mask[:, 0] == 1) and torch.all(mask.sum(1) >= 1)
    assert torch.equal(y, torch.from_numpy(mosi.labels[:3].astype(np.float32)))


@pytest.mark.parametrize("kind", KINDS)
def test_two_epochs_loss_decreases(mosi, kind):
    torch.manual_seed(0)
    model = build_host(kind, widths=mosi.widths, seq_len=WINDOW)
    check_widths(host_info(model).widths, mosi.widths)
    handle = pp.inject(model)
    train = video_folds(mosi.videos, seed=0)[0][0][:TRAIN_ROWS]
    stats = mosi.standardizer(train)
    trainer = HostTrainer(model, handle, train_samples=len(mosi))
    epoch_loss = []
    for epoch in range(2):
        order = np.random.default_rng(epoch).permutation(train)
        losses = []
        for start in range(0, len(order) - 1, BATCH):
            rows = order[start : start + BATCH]
            x, y = mosi.batch(kind, rows, WINDOW, stats)
            losses.append(trainer.step(x, y, torch.from_numpy(rows))["task"])
        epoch_loss.append(float(np.mean(losses)))
        trainer.next_epoch()
    assert all(np.isfinite(epoch_loss))
    assert epoch_loss[1] < epoch_loss[0], epoch_loss
    assert handle.stats()["complete"]
