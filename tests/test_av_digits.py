"""av-digits: the loader on the real data (skips when absent), retrieval metrics, pair re-drawing,
and a tiny end-to-end run of the retrieval benchmark (every arm, a few items, one epoch)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pgm_plugins.bench.data import av_digits
from pgm_plugins.bench.data.av_digits import load, redraw_pairs, retrieval_metrics
from pgm_plugins.bench.data.location import data_root
from pgm_plugins.bench.record import read_records

REPO = Path(__file__).resolve().parents[1]


def _have_data() -> bool:
    return (data_root() / av_digits.DATASET / "pairs.csv").is_file()


@pytest.fixture(scope="module")
def data():
    if not _have_data():
        pytest.skip(f"av-digits not found under {data_root()} (set PGM_DATA_DIR)")
    torch.set_num_threads(1)
    return load()


def _benchmark():
    path = REPO / "benchmarks" / "av_digits_retrieval.py"
    spec = importlib.util.spec_from_file_location("av_digits_retrieval_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_missing_file_is_named_with_where_it_looked(tmp_path):
    folder = tmp_path / "av-digits"
    folder.mkdir()
    (folder / "pairs.csv").write_text("split,digit,audio,speaker,image_row\n")
    with pytest.raises(FileNotFoundError, match=r"mnist_5k\.csv\.gz.*looked in .*av-digits"):
        load(tmp_path)


def test_missing_recording_is_named(tmp_path):
    real = data_root() / av_digits.DATASET
    if not real.is_dir():
        pytest.skip(f"av-digits not found under {data_root()} (set PGM_DATA_DIR)")
    folder = tmp_path / "av-digits"
    (folder / "fsdd").mkdir(parents=True)
    for name in av_digits.FILES:
        (folder / name).symlink_to(real / name)
    with pytest.raises(
        FileNotFoundError, match=r"3000 file\(s\) not found: .*recordings/0_george_0"
    ):
        load(tmp_path)


def test_retrieval_metrics_on_known_rankings():
    labels = np.array([0, 0, 1, 1])
    perfect = retrieval_metrics(np.eye(2)[labels], labels, np.eye(2)[labels], labels)
    assert perfect == {"p@1": 1.0, "p@10": 0.5, "map": 1.0}  # 4 gallery items, 2 relevant
    # one query, gallery ranked: wrong, right, wrong, right -> AP = (1/2 + 2/4) / 2
    query = np.array([[1.0, 0.0]])
    gallery = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [1.0, 0.3]])
    out = retrieval_metrics(query, np.array([1]), gallery, np.array([0, 1, 0, 1]))
    assert out["p@1"] == 0.0 and out["map"] == pytest.approx(0.5)


@pytest.mark.data
def test_loader_follows_the_protocol(data):
    assert data.images.shape == (5000, 28, 28) and 0.0 <= data.images.min() < data.images.max() <= 1
    assert data.audio_frames.shape == (3000, 32, 20) and data.audio_stats.shape == (3000, 40)
    for split, (clips, images, speakers) in {
        "train": (2000, 3000, {"george", "jackson", "nicolas", "yweweler"}),
        "valid": (500, 1000, {"lucas"}),
        "test": (500, 1000, {"theo"}),
    }.items():
        c, r = data.clips(split), data.image_rows(split)
        assert (len(c), len(r)) == (clips, images)
        assert set(data.audio_speaker[c]) == speakers
        assert np.bincount(data.audio_label[c], minlength=10).tolist() == [clips // 10] * 10
        assert set(data.image_split[data.pair_image[c]]) == {split}  # fixed pairs within split
    assert (data.image_label[data.pair_image] == data.audio_label).all()
    assert len(set(data.pair_image.tolist())) == 3000  # no image used twice
    train = data.clips("train")
    assert np.allclose(data.audio_stats[train].mean(0), 0, atol=1e-4)
    assert np.allclose(data.audio_stats[train].std(0), 1, atol=1e-3)
    # README: clips last 0.143-2.283 s; 25 ms windows every 10 ms give 13-228 frames
    assert data.audio_frame_count.min() >= 13 and data.audio_frame_count.max() <= 228
    with pytest.raises(KeyError, match=r"unknown split 'tset'.*test"):
        data.clips("tset")


@pytest.mark.data
def test_digest_covers_what_was_read(data):
    h = hashlib.sha256()
    for name in av_digits.FILES:
        h.update(name.encode())
        h.update((data.path / name).read_bytes())
    for rel in data.audio_path:
        h.update(str(rel).encode())
        h.update((data.path / rel).read_bytes())
    assert data.digest == h.hexdigest()


@pytest.mark.data
def test_redrawn_pairs_stay_within_split_and_digit(data):
    rng = np.random.default_rng(0)
    first, second = redraw_pairs(data, "train", rng), redraw_pairs(data, "train", rng)
    clips = data.clips("train")
    for pair in (first, second):
        assert (data.image_label[pair] == data.audio_label[clips]).all()
        assert set(data.image_split[pair]) == {"train"}
        assert len(set(pair.tolist())) == len(pair)  # 200 clips, 300 images per digit
    assert (first != second).mean() > 0.9


@pytest.mark.data
def test_tiny_end_to_end_run_of_every_arm(data, tmp_path, monkeypatch):
    bench = _benchmark()
    monkeypatch.setattr(bench.av_digits, "load", lambda *a, **k: data)
    code = bench.main(
        [
            "--results",
            str(tmp_path),
            "--seeds",
            "0",
            "1",
            "--limit",
            "40",
            "--max-epochs",
            "1",
            "--batch",
            "20",
            "--image-tower",
            "timm:test_resnet",
        ]
    )
    assert code == 0
    good, problems = read_records(tmp_path / "main", "main")
    assert problems == []
    records = [r for _, r in good]  # the result schema of pgm bench, read by its one reader
    assert sorted((r["key"]["arm"], r["key"]["seed"]) for r in records) == [
        (a, s) for a in ("baseline", "capacity", "pgm") for s in (0, 1)
    ]
    block = {r["key"]["arm"]: r["parameters"]["block"] for r in records}
    assert block["baseline"] == 0 and abs(block["capacity"] - block["pgm"]) <= 0.05 * block["pgm"]
    for r in records:
        assert r["key"]["dataset"] == "av-digits" and r["key"]["protocol"] == "retrieval"
        assert r["cell_digest"] and "upgraded_from" not in r
        for direction in ("a2i", "i2a"):
            m = r["metrics"]["test"]
            assert 0.0 <= m[f"p@1_{direction}"] <= 1.0 and 0.0 < m[f"map_{direction}"] <= 1.0
        assert r["data"]["digest"] == data.digest
        assert all(np.isfinite(r["curves"]["train_loss"]))
    pgm = [r for r in records if r["key"]["arm"] == "pgm"]
    assert all(r["curves"]["aux_loss"][0] > 0 for r in pgm)  # its auxiliary loss was trained
    assert pgm[0]["block_config"]["paired"] == "shared" and pgm[0]["block_config"]["task"] == "none"
    # a rerun with another recipe is refused, touching nothing; the same recipe skips every cell
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "main").glob("*.json")}
    args = ["--results", str(tmp_path), "--seeds", "0", "1", "--limit", "40", "--max-epochs", "1"]
    args += ["--batch", "20", "--image-tower", "timm:test_resnet"]
    assert bench.main([*args, "--lr", "0.01"]) == 2
    assert bench.main(args) == 0
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "main").glob("*.json")}
    # the same records through the report of pgm bench
    from pgm_plugins.bench.report import build_report

    report = build_report(tmp_path, "main", tmp_path / "report", plots=False)
    assert "host `dual_encoder`" in report.markdown and len(report.cells) == 6
    summary = (tmp_path / "main" / "summary.md").read_text()
    assert "pgm vs capacity" in summary and "| baseline | 2 |" in summary
    # the table rebuilds from the committed JSONs alone
    assert bench.main(["--results", str(tmp_path), "--summary-only"]) == 0


def test_supcon_loss_treats_same_label_items_as_positives():
    bench = _benchmark()
    y = torch.tensor([0, 0, 1, 1])
    aligned = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # same-digit items identical: the loss is log(number of positives) at low temperature
    low = bench.supcon_loss(aligned, aligned, y, y, 0.01)
    assert low.item() == pytest.approx(np.log(2), abs=1e-4)
    swapped = bench.supcon_loss(aligned, aligned.flip(0), y, y, 0.01)
    assert swapped.item() > 10


def _record(arm, seed, suite="main", valid=0.5, a2i=0.5, i2a=None, at=None):
    """A cell record as the retrieval benchmark writes it (``at``: p@1 and p@10, default mAP)."""
    from pgm_plugins.bench.legacy import retrieval_record

    i2a = a2i if i2a is None else i2a

    def both(x, y):
        return {
            "audio2image": {"p@1": at or x, "p@10": at or x, "map": x},
            "image2audio": {"p@1": at or y, "p@10": at or y, "map": y},
        }

    spec = {"image_tower": "timm:test_resnet", "dim": 8, "max_epochs": 2, "patience": 1}
    raw = {
        "key": {"arm": arm, "seed": seed},
        "spec": spec,
        "metrics": {"valid": both(valid, valid), "test": both(a2i, i2a)},
        "curves": {"train_loss": [1.0], "aux_loss": [0.0], "valid_map": [valid]},
        "parameters": {"host": 10, "block": 0},
        "best_epoch": 1,
        "epochs_run": 1,
        "wall_s": 1.0,
        "held_out": suite.removeprefix("loso-") if suite.startswith("loso-") else "theo",
    }
    return retrieval_record(raw, suite)


def test_select_takes_each_arms_best_validation_setting():
    bench = _benchmark()
    suites = {
        "a": [_record("baseline", s, "a", 0.8, 0.1) for s in (0, 1)]
        + [_record("pgm", s, "a", 0.5, 0.9) for s in (0, 1)],
        "b": [_record("baseline", s, "b", 0.7, 0.9) for s in (0, 1)]
        + [_record("pgm", s, "b", 0.6, 0.2) for s in (0, 1)],
    }
    records, notes = bench.select(suites)
    # chosen on validation, whatever the test numbers say
    chosen = {(r["key"]["arm"], r["metrics"]["test"]["map_a2i"]) for r in records}
    assert chosen == {("baseline", 0.1), ("pgm", 0.2)}
    assert notes[0].startswith("- baseline: `a`") and notes[1].startswith("- pgm: `b`")
    text = bench.summarise(records, None, notes)
    assert "Setting chosen per arm on validation mAP only" in text and "pgm vs baseline" in text


def test_loso_summary_pairs_arms_over_speakers_at_one_seed(tmp_path):
    bench = _benchmark()
    speakers = {"george": (0.8, 0.1), "jackson": (0.7, 0.08), "nicolas": (0.6, 0.12)}
    # pgm is 0.08-0.12 below baseline in every fold at seed 0 (mean 0.1); seed 1 (one fold
    # only) must be ignored
    folds = {
        sp: [
            _record("baseline", 0, f"loso-{sp}", a2i=base),
            _record("pgm", 0, f"loso-{sp}", a2i=base - gap),
        ]
        for sp, (base, gap) in speakers.items()
    }
    folds["george"].append(_record("pgm", 1, "loso-george", a2i=0.99))
    text = bench.summarise_loso(folds)
    assert "| george | 0.800 | 0.800 | 0.700 | 0.700 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| pgm vs baseline"))
    assert row.startswith("| pgm vs baseline | -0.100 [") and row.count("(0/3)") == 2
    assert "capacity" not in text  # no capacity cells: no column, no comparison
    for sp, records in folds.items():
        store = bench.ResultStore(tmp_path / f"loso-{sp}")
        for r in records:
            store.write(r["key"], {k: v for k, v in r.items() if k != "key"})
    assert bench.main(["--loso", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "loso.md").read_text() == text
    assert bench.main(["--loso", "--results", str(tmp_path / "none")]) == 1


def test_the_first_retrieval_records_read_as_cell_records():
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "av_digits"
    good, problems = read_records(root / "main", "main")
    assert problems == [] and len(good) == 9
    base = sorted(r["metrics"]["test"]["map_a2i"] for _, r in good if r["key"]["arm"] == "baseline")
    assert f"{np.mean(base):.3f}" == "0.862"  # the README's published number
    assert {r["key"]["fold"] for _, r in good} == {5}  # theo, the test speaker
    loso, _ = read_records(root / "loso-george", "loso-george")
    assert {r["data"]["test_speaker"] for _, r in loso} == {"george"}


@pytest.mark.data
def test_held_out_speaker_fold_restandardises_on_its_train_speakers(data):
    fold = av_digits.held_out_speaker(data, "george")
    assert set(fold.audio_speaker[fold.clips("test")]) == {"george"}
    assert set(fold.audio_speaker[fold.clips("valid")]) == {av_digits.LOSO_VALID["george"]}
    assert "george" not in set(fold.audio_speaker[fold.clips("train")])
    train = fold.clips("train")
    assert np.allclose(fold.audio_stats[train].mean(0), 0, atol=1e-4)
    # the same clips, only re-standardised: an affine map per coefficient
    i, j = fold.clips("test")[:2]
    ratio = (fold.audio_stats[i] - fold.audio_stats[j]) / (
        data.audio_stats[i] - data.audio_stats[j]
    )
    assert np.allclose(ratio, data.audio_norm["stats_sd"] / fold.audio_norm["stats_sd"], rtol=1e-3)
    assert (data.audio_split == "train").sum() == 2000  # the original is untouched
    with pytest.raises(KeyError, match=r"unknown speaker 'goerge'.*george"):
        av_digits.held_out_speaker(data, "goerge")


def test_device_option_refuses_a_device_this_torch_cannot_use(capsys):
    bench = _benchmark()
    with pytest.raises(SystemExit) as info:
        bench.main(["--device", "cuda:99", "--summary-only"])
    assert info.value.code == 2
    count = torch.cuda.device_count()
    assert f"--device cuda:99: this machine's torch sees {count} CUDA device(s)" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        bench.main(["--device", "gpu0", "--summary-only"])
    assert "'gpu0' is not a torch device; use cpu, cuda or cuda:N" in capsys.readouterr().err


def test_a_gpu_cell_is_its_own_cell_and_cpu_cells_keep_their_settings():
    bench = _benchmark()
    env = {"versions": {"pgm_plugins": "x"}}
    cpu = bench._cell_settings("pgm", bench.Spec(), "d", "theo", 0, env)
    assert "device" not in cpu  # the committed CPU records' settings, unchanged
    assert bench._cell_settings("pgm", bench.Spec(), "d", "theo", 0, env, "cpu") == cpu
    gpu = bench._cell_settings("pgm", bench.Spec(), "d", "theo", 0, env, "cuda:0")
    assert gpu == {"device": "cuda:0", **cpu}


@pytest.mark.data
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiny_run_on_the_gpu(data, tmp_path, monkeypatch):
    bench = _benchmark()
    monkeypatch.setattr(bench.av_digits, "load", lambda *a, **k: data)
    args = ["--results", str(tmp_path), "--seeds", "0", "--limit", "40", "--max-epochs", "1"]
    args += ["--batch", "20", "--image-tower", "timm:test_resnet", "--device", "cuda"]
    assert bench.main(args) == 0
    good, problems = read_records(tmp_path / "main", "main")
    assert problems == [] and len(good) == 3
    assert all(r["cell_settings"]["device"] == "cuda" for _, r in good)
