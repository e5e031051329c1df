"""Readers of downloaded feature files: the restricted unpickler, MMSA / MulT layouts (checked
against MMSA 2.2.1's own loader on files written here)."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from pgm_plugins.bench.data.pickles import read_mmsa_pkl, read_mult_pkl
from pgm_plugins.bench.data.safe_pickle import UnsafePickleError, safe_load_pickle
from pgm_plugins.errors import UnknownNameError

torch.set_num_threads(1)


def mmsa_split(rng: np.random.Generator, n: int, aligned: bool) -> dict[str, object]:
    t_len, a_len, v_len = (8, 8, 8) if aligned else (8, 12, 10)
    audio = rng.normal(size=(n, a_len, 5)).astype(np.float32)
    audio[0, -1, 0] = -np.inf  # MMSA's audio has -inf, which its loader sets to 0
    rec: dict[str, object] = {
        "raw_text": np.array([f"utterance {i}" for i in range(n)], dtype=object),
        "audio": audio,
        "vision": rng.normal(size=(n, v_len, 20)).astype(np.float32),
        "id": np.array([f"vid{i // 3}$_${i % 3}" for i in range(n)], dtype=object),
        "text": rng.normal(size=(n, t_len, 300)).astype(np.float32),
        "text_bert": rng.integers(0, 100, size=(n, 3, t_len)).astype(np.float32),
        "annotations": np.array(["Positive"] * n, dtype=object),
        "classification_labels": rng.integers(0, 3, size=n).astype(np.float32),
        "regression_labels": np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32),
    }
    if not aligned:
        rec["audio_lengths"] = rng.integers(1, a_len + 1, size=n).tolist()
        rec["vision_lengths"] = rng.integers(1, v_len + 1, size=n).tolist()
    return rec


def write_mmsa(path, aligned: bool = False, protocol: int = pickle.HIGHEST_PROTOCOL) -> dict:
    rng = np.random.default_rng(0)
    data = {s: mmsa_split(rng, n, aligned) for s, n in (("train", 9), ("valid", 4), ("test", 5))}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return data


def mmsa_loader_view(path, mode: str, aligned: bool):
    """What MMSA 2.2.1's own MMDataset reads from the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from MMSA.data_loader import MMDataset

    args = {
        "dataset_name": "mosi",
        "custom_feature": None,
        "featurePath": str(path),
        "use_bert": False,
        "feature_dims": [0, 0, 0],
        "feature_T": None,
        "feature_A": None,
        "feature_V": None,
        "need_data_aligned": aligned,
        "data_missing": False,
        "need_normalized": False,
    }
    return MMDataset(args, mode=mode)


@pytest.mark.parametrize("aligned", [False, True])
def test_mmsa_reader_reads_what_mmsas_own_loader_reads(tmp_path, aligned):
    path = tmp_path / ("aligned_50.pkl" if aligned else "unaligned_50.pkl")
    write_mmsa(path, aligned)
    ours = read_mmsa_pkl(path, "mosi")
    for split in ("train", "valid", "test"):
        ref = mmsa_loader_view(path, split, aligned)
        assert np.array_equal(ours[split]["text"], ref.text)
        assert np.array_equal(ours[split]["audio"], ref.audio)  # -inf -> 0 on both sides
        assert np.array_equal(ours[split]["vision"], ref.vision)
        assert np.array_equal(ours[split]["regression_labels"], ref.labels["M"].reshape(-1))
        assert list(ours[split]["id"]) == [str(i) for i in ref.ids]
        if not aligned:
            assert ours[split]["audio_lengths"].tolist() == list(ref.audio_lengths)
            assert ours[split]["vision_lengths"].tolist() == list(ref.vision_lengths)
        else:
            assert "audio_lengths" not in ours[split]
    assert ours["train"]["audio"][0, -1, 0] == 0.0


def test_mmsa_reader_refuses_token_ids_and_missing_keys(tmp_path):
    data = write_mmsa(tmp_path / "a.pkl")
    for split in data.values():
        del split["text"]
    (tmp_path / "b.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"'text_bert' \(BERT token ids.*no 'text' features"):
        read_mmsa_pkl(tmp_path / "b.pkl")
    data = write_mmsa(tmp_path / "a.pkl")
    del data["valid"]
    (tmp_path / "c.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"missing valid"):
        read_mmsa_pkl(tmp_path / "c.pkl")
    with pytest.raises(UnknownNameError, match=r"'mosii'.*Did you mean 'mosi'"):
        read_mmsa_pkl(tmp_path / "a.pkl", "mosii")


def write_mult(path, dataset: str) -> dict:
    rng = np.random.default_rng(1)
    data = {}
    for split, n in (("train", 6), ("valid", 3), ("test", 4)):
        if dataset == "iemocap":
            hot = rng.integers(0, 2, size=(n, 4))
            labels = np.stack([1 - hot, hot], axis=-1).astype(np.float32)  # [N, 4, 2]
        else:
            labels = rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)
        data[split] = {
            "text": rng.normal(size=(n, 50, 300)).astype(np.float32),
            "audio": rng.normal(size=(n, 50, 74)).astype(np.float32),
            "vision": rng.normal(size=(n, 50, 35)).astype(np.float32),
            "labels": labels,
            "id": np.array([[f"v{i}", "0", "1"] for i in range(n)]),
        }
    path.write_bytes(pickle.dumps(data, protocol=2))
    return data


def test_mult_reader_layouts(tmp_path):
    data = write_mult(tmp_path / "mosi_data.pkl", "mosi")
    got = read_mult_pkl(tmp_path / "mosi_data.pkl", "mosi")
    assert got["train"]["labels"].shape == (6,)
    assert np.allclose(got["test"]["labels"], data["test"]["labels"].reshape(-1))
    assert got["valid"]["audio"].shape == (3, 50, 74)
    data = write_mult(tmp_path / "iemocap_data.pkl", "iemocap")
    got = read_mult_pkl(tmp_path / "iemocap_data.pkl", "iemocap")
    assert got["train"]["labels"].shape == (6, 4)
    assert np.array_equal(got["train"]["labels"], data["train"]["labels"].argmax(-1))
    data["train"]["labels"] = data["train"]["labels"][:, :3]
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=r"IEMOCAP labels have shape \(6, 3, 2\)"):
        read_mult_pkl(tmp_path / "bad.pkl", "iemocap")


def test_restricted_unpickler_loads_arrays_and_containers_of_every_protocol():
    obj = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "s": np.array(["x", "yz"], dtype=object),
        "u": np.array(["ab", "c"]),
        "scalar": np.float64(2.5),
        "nested": [(1, 2.0, "t", b"by"), {3, 4}, frozenset({5}), None, True],
    }
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = safe_load_pickle(pickle.dumps(obj, protocol=protocol))
        assert np.array_equal(back["a"], obj["a"]) and back["a"].dtype == np.float32
        assert back["s"].tolist() == ["x", "yz"] and back["u"].tolist() == ["ab", "c"]
        assert back["scalar"] == 2.5 and back["nested"] == obj["nested"]


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Custom:
    pass


def test_restricted_unpickler_refuses_code_and_foreign_classes(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": Exploit(marker)}))
    with pytest.raises(
        UnsafePickleError, match=r"evil\.pkl: the pickle asks for (posix|os)\.system"
    ):
        safe_load_pickle(path)
    assert not marker.exists()  # refused before anything ran
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*(posix|os)\.system"):
        read_mmsa_pkl(path)
    with pytest.raises(UnsafePickleError, match=r"Custom.*refusing to load it"):
        safe_load_pickle(pickle.dumps([Custom()]))
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        safe_load_pickle(b"cbuiltins\neval\n(S'1+1'\ntR.")
