"""Engine leftovers: checkpoint errors that name the field or tensor that differs, newer formats
and config fields refused, a stale handle leaving a newer block alone, a batch of 0 samples, and
file modes that follow the umask."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from test_injection import hooks_of, refused

import pgm_plugins as pp
from pgm_plugins._io import atomic_write_text, current_umask
from pgm_plugins.errors import CheckpointError, InjectionError
from pgm_plugins.injection.checkpoint import _digest
from pgm_plugins.toy import LateFusion

pytestmark = pytest.mark.usefixtures("one_thread")

X = (torch.randn(3, 16), torch.randn(3, 8))
CONFIG, TENSORS = "pgm_config.json", "pgm_block.safetensors"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    handle = pp.inject(LateFusion(), "toy.late_fusion")
    pp.save(handle, tmp_path)
    return tmp_path


def fresh() -> LateFusion:
    torch.manual_seed(0)
    return LateFusion()


def edit(directory: Path, change, resign: bool = False) -> None:
    """Change the saved config with ``change(meta)``; ``resign``: recompute the digest, as a
    newer pgm-plugins writing that config would."""
    meta = json.loads((directory / CONFIG).read_text())
    change(meta)
    if resign:
        meta["sha256"] = _digest((directory / TENSORS).read_bytes(), meta)
    (directory / CONFIG).write_text(json.dumps(meta))


# ---------------------------------------------------------------------- checkpoints
def test_an_edited_config_field_is_named(saved):
    edit(saved, lambda m: m["config"].__setitem__("rho", 0.25))
    with refused(fresh(), CheckpointError, r"differ from what was saved.*field 'config.rho' was"):
        pp.load(fresh(), saved)


def test_an_edited_tensor_is_named(saved):
    from safetensors.torch import load_file, save_file

    tensors = load_file(saved / TENSORS)
    name = sorted(tensors)[3]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, saved / TENSORS, metadata={"format": "pt"})
    with refused(fresh(), CheckpointError, rf"tensor '{name}' differs"):
        pp.load(fresh(), saved)


def test_a_truncated_tensor_file_says_so(saved):
    data = (saved / TENSORS).read_bytes()
    (saved / TENSORS).write_bytes(data[: len(data) // 2])
    with refused(
        fresh(), CheckpointError, rf"is {len(data) // 2:,} bytes, {len(data):,} when saved"
    ):
        pp.load(fresh(), saved)


def test_a_newer_format_is_refused_with_the_upgrade(saved):
    edit(saved, lambda m: m.update(format=m["format"] + 1), resign=True)
    with refused(fresh(), CheckpointError, r"declares checkpoint format \d+, newer .* Upgrade"):
        pp.load(fresh(), saved)


def test_config_fields_of_a_newer_version_are_refused_not_dropped(saved):
    edit(saved, lambda m: m["config"].update(rho_schedule="cosine"), resign=True)
    with refused(fresh(), CheckpointError, r"fields this pgm-plugins does not know.*rho_schedule"):
        pp.load(fresh(), saved)


def test_an_untouched_checkpoint_still_loads(saved):
    handle = pp.load(fresh(), saved)
    assert handle.adapter == "toy.late_fusion"


# ---------------------------------------------------------------------- stale handles
def test_a_stale_handle_leaves_a_newer_block_alone():
    model = LateFusion()
    old = pp.inject(model, "toy.late_fusion", config={"mix": "replace"})
    pp.handle_of(model).remove()  # the same block, taken out through another handle
    new = pp.inject(model, "toy.late_fusion", config={"mix": "replace"})
    out, n_hooks = model(*X), hooks_of(model)
    with pytest.raises(InjectionError, match="was removed"):
        old.remove()
    assert model.pgm_block is new.injection and hooks_of(model) == n_hooks
    torch.testing.assert_close(model(*X), out)
    # a block deleted by hand, the model injected again: the stale handle takes only its own
    # leftover hooks
    del model.pgm_block
    newer = pp.inject(model, "toy.late_fusion", config={"mix": "replace"})
    new.remove()
    assert model.pgm_block is newer.injection and not newer.removed
    model(*X)
    newer.aux_loss(torch.zeros(3)).backward()


# ---------------------------------------------------------------------- empty batches
@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_a_batch_of_zero_samples_passes_through_with_a_zero_loss(mode):
    model = LateFusion()
    config = {"paired": "shared"} if mode == "independent" else {}
    handle = pp.inject(model, "toy.late_fusion", mode=mode, config=config)
    model(*X)
    handle.aux_loss(torch.zeros(3)).backward()  # a step before, already read
    empty = (torch.randn(0, 16), torch.randn(0, 8))
    out = model(*empty)
    assert out.shape == (0,)
    aux = handle.aux_loss(torch.zeros(0))
    assert aux.item() == 0.0 and aux.requires_grad  # not the previous step's loss
    (out.sum() + aux).backward()


# ---------------------------------------------------------------------- file modes
@pytest.fixture
def umask_027():
    before = os.umask(0o027)
    yield
    os.umask(before)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask_and_keep_an_existing_mode(tmp_path, umask_027):
    assert current_umask() == 0o027
    atomic_write_text(tmp_path / "report.md", "x")
    assert mode_of(tmp_path / "report.md") == 0o640
    (tmp_path / "kept.md").write_text("old")
    (tmp_path / "kept.md").chmod(0o604)
    atomic_write_text(tmp_path / "kept.md", "new")
    assert mode_of(tmp_path / "kept.md") == 0o604
    handle = pp.inject(LateFusion(), "toy.late_fusion")
    pp.save(handle, tmp_path / "ckpt")
    assert {mode_of(p) for p in (tmp_path / "ckpt").iterdir()} == {0o640}


def test_downloads_follow_the_umask(tmp_path, umask_027):
    import hashlib

    from pgm_plugins.bench.data.fetch import fetch

    body = b"some data"

    class Response(io.BytesIO):
        headers: ClassVar[dict[str, str]] = {"Content-Length": str(len(body))}

    dest = fetch(
        "https://example.invalid/f",
        tmp_path / "f.bin",
        hashlib.sha256(body).hexdigest(),
        opener=lambda url, timeout: Response(body),
    )
    assert dest.read_bytes() == body and mode_of(dest) == 0o640
