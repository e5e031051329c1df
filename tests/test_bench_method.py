"""The method study's pieces: arms and controls, synthetic ground truth, MOSI clean loader,
result files and statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pgm_plugins as pp
from pgm_plugins import PgMBlock, PgMConfig
from pgm_plugins.bench.arms import (
    ABLATIONS,
    ARMS,
    CapacityControl,
    block_factory,
    count_parameters,
    get_arm,
)
from pgm_plugins.bench.data.synthetic import make_synthetic, truth
from pgm_plugins.bench.hosts import LateFusionHost, host_sites
from pgm_plugins.bench.metrics import binary_metrics
from pgm_plugins.bench.probes import ridge_r2
from pgm_plugins.bench.results import ResultStore
from pgm_plugins.bench.stats import compare
from pgm_plugins.errors import UnknownNameError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _factory(name: str):
    """The block factory of the built-in block arm ``name``."""
    spec = get_arm(name)
    return block_factory(spec.kind, spec.changes)


def _config(widths: dict[str, int]) -> PgMConfig:
    return PgMConfig(modalities=widths, task="classification", num_classes=2)


@pytest.mark.parametrize(
    "widths", [{"a": 32, "b": 32, "c": 32}, {"t": 100, "a": 73, "v": 100}, {"x": 768, "y": 64}]
)
def test_capacity_control_matches_the_pgm_block_within_5_percent(widths):
    cfg = _config(widths)
    target = count_parameters(PgMBlock(cfg))
    control = _factory("capacity")(cfg)
    assert isinstance(control, CapacityControl)
    assert abs(count_parameters(control) - target) <= 0.05 * target


@pytest.mark.parametrize("arm", [a for a in ARMS if ARMS[a].block and a != "pgm-replace"])
def test_every_arm_is_injected_by_the_engine_and_is_the_identity_at_init(arm):
    torch.manual_seed(0)
    widths = {"a": 6, "b": 5, "c": 4}
    host = LateFusionHost(widths, hidden=8)
    x = {m: torch.randn(3, d) for m, d in widths.items()}
    ref = host(**x)
    handle = pp.inject(
        host,
        sites=host_sites(host),
        config={"task": "classification", "num_classes": 2},
        block_factory=_factory(arm),
    )
    assert torch.equal(host(**x), ref)
    loss = torch.nn.functional.cross_entropy(host(**x), torch.tensor([0, 1, 1]))
    (loss + handle.aux_loss(torch.tensor([0, 1, 1]))).backward()
    groups = handle.param_groups(base_lr=1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len([p for p in host.parameters() if p.requires_grad])
    handle.remove()
    assert torch.equal(host(**x), ref)


def _names(block: torch.nn.Module) -> set[str]:
    return {n for n, _ in block.named_parameters()}


@pytest.mark.parametrize(
    ("ablation", "removed_prefixes"),
    [
        ("pgm-no-uni", ("uni_learners.",)),
        ("pgm-no-paired", ("paired_learner.",)),
        ("pgm-no-decoder", ("decoders.",)),
        ("pgm-no-heads", ("uni_heads.", "paired_heads.", "paired_bias")),
        ("pgm-split", ("partitioners.",)),
    ],
)
def test_ablations_remove_exactly_what_they_name(ablation, removed_prefixes):
    cfg = _config({"a": 16, "b": 12})
    full = _names(PgMBlock(cfg))
    ablated = _names(_factory(ablation)(cfg))
    removed = full - ablated
    assert removed and all(n.startswith(removed_prefixes) for n in removed), removed
    assert ablated <= full  # nothing added


def test_the_gate_partitioner_adds_only_its_channel_logits():
    cfg = _config({"a": 16, "b": 12})
    added = _names(_factory("pgm-gate")(cfg)) - _names(PgMBlock(cfg))
    assert added == {"partitioners.a.logits", "partitioners.b.logits"}


def test_ablations_that_change_no_module_change_only_their_switch():
    cfg = _config({"a": 16, "b": 12})
    base = PgMBlock(cfg)
    one_lr = _factory("pgm-one-lr")(cfg)
    assert {g["lr"] for g in one_lr.param_groups(1e-3)} == {1e-3}
    assert len({g["lr"] for g in base.param_groups(1e-3)}) > 1  # the default has lr_mult
    scaled = _factory("pgm-gradscale")(cfg)
    assert scaled.config.kappa("a", "uni") == 0.5 and base.config.kappa("a", "uni") == 1.0
    assert scaled.config.kappa("a", "paired") == 1.0
    for name in ("pgm-attention", "pgm-shared", "pgm-replace", "pgm-gate"):
        changed = _factory(name)(cfg).config
        diff = {k for k in cfg.to_dict() if cfg.to_dict()[k] != changed.to_dict()[k]}
        assert diff <= set(ABLATIONS[name]), (name, diff)


def test_unknown_arm_names_the_nearest():
    with pytest.raises(UnknownNameError, match=r"unknown arm 'capacty'.*Did you mean 'capacity'"):
        get_arm("capacty")


def test_committed_truth_is_what_the_generator_defines():
    committed = json.loads((REPO / "benchmarks/results/method/synthetic_truth.json").read_text())
    assert committed["normal"] == json.loads(json.dumps(truth(False)))
    assert committed["swapped"] == json.loads(json.dumps(truth(True)))
    assert truth()["true_uni_share"] == {"a": 0.75, "b": 0.25, "c": None}


def test_synthetic_paired_factor_predicts_only_jointly():
    tr, te = make_synthetic("train", 0), make_synthetic("test", 0)
    assert torch.equal(make_synthetic("train", 0).x["a"], tr.x["a"])  # deterministic
    assert not torch.equal(make_synthetic("train", 1).x["a"], tr.x["a"])

    def product(s):
        pa = s.factors["paired.a"].sum(1) / s.factors["paired.a"].shape[1] ** 0.5
        pb = s.factors["paired.b"].sum(1) / s.factors["paired.b"].shape[1] ** 0.5
        return (pa * pb).numpy().astype(np.float64)

    def feats(s, mods, with_products=False):
        x = np.concatenate([s.x[m].numpy() for m in mods], 1).astype(np.float64)
        if with_products:  # pairwise products across a and b: what a bilinear layer can form
            a, b = s.x["a"].numpy(), s.x["b"].numpy()
            x = np.concatenate([x, (a[:, :, None] * b[:, None, :]).reshape(len(a), -1)], 1)
        return x

    y_tr, y_te = product(tr), product(te)
    for mods in (["a"], ["b"], ["a", "b"]):  # linear in the features: nothing
        assert ridge_r2(feats(tr, mods), y_tr, feats(te, mods), y_te) < 0.05
    joint = ridge_r2(feats(tr, ["a", "b"], True), y_tr, feats(te, ["a", "b"], True), y_te)
    assert joint > 0.5
    noise = ridge_r2(feats(tr, ["c"]), tr.score.numpy(), feats(te, ["c"]), te.score.numpy())
    assert noise < 0.05


def test_mosi_loader_names_the_missing_file_and_where_it_looked(tmp_path):
    from pgm_plugins.bench.data.mosi import load_clean

    (tmp_path / "mosi-utterance" / "text").mkdir(parents=True)
    (tmp_path / "mosi-utterance" / "text" / "text_test0.csv").write_text("0\n")
    with pytest.raises(FileNotFoundError, match=r"audio/audio_test0.csv.*looked in .*mosi-utt"):
        load_clean(tmp_path)


@pytest.mark.data
def test_mosi_clean_folds_are_grouped_by_video(monkeypatch):
    from pgm_plugins.bench.data.location import data_root
    from pgm_plugins.bench.data.mosi import clean_folds, load_clean

    if not (data_root() / "mosi-utterance" / "text_test.csv").is_file():
        pytest.skip(f"MOSI data not found under {data_root()} (set PGM_DATA_DIR)")
    data = load_clean()
    assert len(data.y) == 752 and len(set(data.video)) == 31
    assert {m: v.shape[1] for m, v in data.x.items()} == {"text": 100, "audio": 73, "video": 100}
    assert load_clean().digest == data.digest
    for seed in (0, 1):
        folds = clean_folds(data, seed)
        assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(752))
        for f in folds:
            groups = [set(data.video[idx]) for idx in (f.train, f.valid, f.test)]
            assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
            assert len(f.train) + len(f.valid) + len(f.test) == 752
    assert [f.test.tolist() for f in clean_folds(data, 0)] != [
        f.test.tolist() for f in clean_folds(data, 1)
    ]


def test_result_store_writes_whole_files_skips_finished_and_reruns_corrupt(tmp_path, capsys):
    store = ResultStore(tmp_path)
    key = {"arm": "pgm", "seed": 3, "fold": "0/1"}
    assert store.load(key) is None
    path = store.write(key, {"metrics": {"test": {"acc": 0.7}}})
    assert path.parent == tmp_path and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert store.load(key)["metrics"]["test"]["acc"] == 0.7
    path.write_text('{"key": {"arm": "pgm"')  # a torn file
    assert store.load(key) is None
    assert "corrupt result file" in capsys.readouterr().err
    assert list(store.records()) == []


def test_corrected_resampled_t_test_widens_the_plain_one():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.7, 0.02, 15), rng.normal(0.69, 0.02, 15)
    plain = compare(a, b)
    assert plain.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    corrected = compare(a, b, test_train_ratio=0.25)
    assert corrected.high - corrected.low > plain.high - plain.low
    assert corrected.p > plain.p and corrected.detectable > plain.detectable
    assert plain.low < plain.mean < plain.high


def test_binary_metrics_match_hand_counts():
    y = np.array([1, 1, 0, 0, 1])
    prob = np.array([0.9, 0.4, 0.2, 0.6, 0.8])
    m = binary_metrics(y, prob)
    assert m["acc"] == pytest.approx(3 / 5)
    # class 1: tp 2, fp 1, fn 1 -> f1 2/3; class 0: tp 1, fp 1, fn 1 -> 1/2
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["f1_weighted"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2) / 5)
    assert m["auroc"] == pytest.approx(5 / 6)
