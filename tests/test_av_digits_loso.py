"""av-digits leave-one-speaker-out: no fold scores images it trained on (``held_out`` and the
``loso`` protocol), the protocol's folds and image groups, and the report's test over its
folds x seeds. The data tests are marked ``data`` and skip without av-digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_bench_report import record

from pgm_plugins.bench.data import av_digits as av
from pgm_plugins.bench.data.bench_data import BenchData
from pgm_plugins.bench.data.catalog import load_dataset
from pgm_plugins.bench.data.location import data_root
from pgm_plugins.bench.report import build_report
from pgm_plugins.bench.results import ResultStore
from pgm_plugins.bench.runner import train_digest
from pgm_plugins.bench.stats import compare
from pgm_plugins.errors import ConfigError

SPEAKERS = list(av.LOSO_VALID)


@pytest.fixture(scope="module")
def images() -> dict[bytes, int]:
    """MNIST-5k row of each image (its pixels / 255 as float32 bytes)."""
    if not (data_root() / av.DATASET / "pairs.csv").is_file():
        pytest.skip(f"av-digits not found under {data_root()} (set PGM_DATA_DIR)")
    flat = av._av_loaded(None, 32, True).images.reshape(5000, -1)
    return {flat[i].tobytes(): i for i in range(len(flat))}


@pytest.fixture(scope="module")
def loso(images) -> BenchData:
    return load_dataset("av-digits", protocol="loso")


def _rows(images: dict[bytes, int], x: np.ndarray) -> set[int]:
    return {images[v.tobytes()] for v in x}


def _check_unseen(images: dict[bytes, int], x: np.ndarray, trained: set[int], what: str) -> None:
    seen = sorted(_rows(images, x) & trained)
    assert not seen, f"{len(seen)} {what} images are training images (rows {seen[:5]} ...)"


def _trained_on(data: BenchData, train: np.ndarray, images: dict[bytes, int]) -> set[int]:
    """The MNIST-5k rows a fold's training sees: its fixed pairs and three epochs of re-draws."""
    seen = _rows(images, data.x["image"][train])
    assert data.redraw is not None
    for seed in range(3):
        seen |= _rows(images, data.redraw(train, np.random.default_rng(seed))["image"])
    return seen


@pytest.mark.data
@pytest.mark.parametrize("speaker", ["george", "theo"])
def test_a_held_out_speaker_is_never_scored_on_training_images(images, speaker):
    # george trains under the speaker protocol, so his clips' fixed pairs are training images;
    # theo tests there, and his fold validates on yweweler's (training) pairs
    held = load_dataset("av-digits", held_out=speaker)
    (fold,) = held.folds(0)
    trained = _trained_on(held, fold.train, images)
    _check_unseen(images, held.x["image"][fold.test], trained, "test")
    _check_unseen(images, held.x["image"][fold.valid], trained, "validation")
    assert held.protocol == "loso"


@pytest.mark.data
def test_loso_has_six_speaker_folds_with_disjoint_images(images, loso):
    assert av.PROTOCOLS == ("speaker", "loso") and loso.protocol == "loso"
    group, pair = loso.extras["image_group"], loso.extras["image_row"]
    folds = loso.folds(0)
    assert [f.fold for f in folds] == list(range(6))
    for k, (f, speaker) in enumerate(zip(folds, SPEAKERS, strict=True)):
        assert set(loso.groups[f.test]) == {speaker}
        assert set(loso.groups[f.valid]) == {av.LOSO_VALID[speaker]}
        assert set(loso.groups[f.train]) == set(SPEAKERS) - {speaker, av.LOSO_VALID[speaker]}
        assert (len(f.train), len(f.valid), len(f.test)) == (2000, 500, 500)
        trained = _trained_on(loso, f.train, images)
        assert set(group[sorted(trained)]) == set(loso.groups[f.train])  # training groups only
        _check_unseen(images, loso.x["image"][f.test], trained, f"{speaker}'s test")
        _check_unseen(images, loso.x["image"][f.valid], trained, f"{speaker}'s validation")
        same = loso.folds(3)[k]
        assert same.seed == 3 and np.array_equal(same.train, f.train)  # seeds repeat the split
    # every clip paired with a distinct image of its digit and of its own speaker's group
    labels = av._av_loaded(None, 32, True).image_label
    assert len(set(pair.tolist())) == 3000 and (labels[pair] == loso.y).all()
    assert (group[pair] == loso.groups).all()
    assert np.array_equal(
        loso.x["image"], av._av_loaded(None, 32, True).images.reshape(5000, -1)[pair]
    )
    sizes = {(s, d): int(((group == s) & (labels == d)).sum()) for s in SPEAKERS for d in range(10)}
    assert set(sizes.values()) == {83, 84} and sum(sizes.values()) == 5000


@pytest.mark.data
def test_loso_digest_and_description_state_the_protocol(loso):
    speaker = load_dataset("av-digits")
    held = load_dataset("av-digits", held_out="george")
    assert len({speaker.digest, loso.digest, held.digest}) == 3
    assert "leave one speaker out" in loso.description
    assert any("partitioned among the six speakers" in c for c in loso.changes)
    assert np.array_equal(held.x["image"], loso.x["image"])  # one fold of the same rows
    assert np.array_equal(held.folds(0)[0].test, loso.folds(0)[0].test)


def test_held_out_belongs_to_the_loso_protocol(tmp_path):
    # refused before anything is read (tmp_path has no data)
    with pytest.raises(ConfigError, match=r"held_out='theo' is a fold of protocol 'loso'"):
        load_dataset("av-digits", protocol="speaker", held_out="theo", data_dir=str(tmp_path))
    with pytest.raises(KeyError, match=r"unknown speaker 'jakson'.*Did you mean 'jackson'"):
        load_dataset("av-digits", held_out="jakson", data_dir=str(tmp_path))


@pytest.mark.data
def test_report_takes_the_corrected_resampled_t_over_speakers_x_seeds(loso, tmp_path):
    # records in the runner's shape for the loso folds (train_digest of each fold's rows): the
    # folds share training speakers, so the report must not treat 30 cells as independent
    rng = np.random.default_rng(0)
    values: dict[str, list[float]] = {"baseline": [], "pgm": []}
    store = ResultStore(tmp_path / "loso")
    for seed in range(5):
        for f in loso.folds(seed):
            for arm in values:
                v = float(0.9 + 0.01 * f.fold + 0.005 * rng.standard_normal())
                values[arm].append(v)
                store.write(*_record(arm, f.fold, seed, v, f.train, loso))
    rep = build_report(tmp_path, "loso", plots=False)
    assert rep.problems == []
    comp = rep.comparisons
    row = comp[(comp["arm"] == "pgm") & (comp["reference"] == "baseline")].iloc[0]
    assert row["test"] == "corrected" and row["n"] == 30
    assert row["ratio"] == pytest.approx(500 / 2000)
    want = compare(values["pgm"], values["baseline"], 500 / 2000)
    assert (row["low"], row["high"], row["p"]) == pytest.approx((want.low, want.high, want.p))


def _record(
    arm: str, fold: int, seed: int, acc: float, train: np.ndarray, data: BenchData
) -> tuple[dict, dict]:
    """test_bench_report's record, as a late-fusion cell of ``data`` trained on ``train``."""
    block = 0 if arm == "baseline" else 50
    key, body = record(data.name, data.protocol, "late_fusion", arm, fold, seed, block=block)
    test = {"acc": acc, "macro_f1": acc}
    body.update(
        suite={"name": "loso", "file": "loso.toml", "digest": "abc"},
        train_digest=train_digest(train),
        independent_seeds=bool(data.extras.get("independent_seeds", False)),
        data=dict(data.summary()),
        primary="acc",
        metrics={"valid": dict(test), "test": test},
        sizes={"train": len(train), "valid": 500, "test": 500},
    )
    return {**key, "suite": "loso"}, body


def test_the_loso_suite_runs_every_speaker_x_seed(tmp_path: Path):
    from pgm_plugins.bench.suite import load_suite

    suite = load_suite("av-digits-timm-loso")
    assert suite.dataset == "av-digits" and suite.protocol == "loso" and suite.folds == 6
    assert suite.hosts == ("timm.av",) and suite.seeds == (0, 1, 2, 3, 4)
    base = load_suite("av-digits-timm")
    assert (suite.epochs, suite.patience) == (base.epochs, base.patience)
    assert set(base.arms) <= set(suite.arms)
