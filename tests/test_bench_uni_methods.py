"""The uni-modal methods of Du et al. (ICML 2023) as arms: ``ume`` trains no fusion weight and
predicts the heads' ensemble; ``umt``'s teachers (the cached ``ume`` first stage) receive no
gradient, its pass-through leaves the features unchanged, its distillation reaches the student;
both run end to end through the runner and its executors."""

from __future__ import annotations

import json

import pytest
import torch

from pgm_plugins.bench.arm import ArmContext
from pgm_plugins.bench.late_fusion import LateFusionRun
from pgm_plugins.bench.methods.ume import UniModalEnsemble
from pgm_plugins.bench.methods.umt import FeatureDistill, distill_loss
from pgm_plugins.bench.runner import Runner
from pgm_plugins.bench.stages import MODEL_FILE
from pgm_plugins.bench.suite import parse_suite
from pgm_plugins.block import PgMConfig
from tests.test_bench_executors import ray_cluster  # noqa: F401
from tests.test_bench_runner import _records, registry  # noqa: F401
from tests.test_bench_runner import _suite as runner_suite


def _suite(registry, **changes):  # noqa: F811
    """The runner tests' tiny suite, with this module's arms and one seed."""
    return runner_suite(registry, **{"arms": ["ume", "umt"], "seeds": [0], **changes})


def _fusion_names(run) -> set[str]:
    ids = {id(p) for p in run.parts()["fusion"]}
    return {n for n, p in run.model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("dataset", ["tiny", "tiny-reg"])
def test_ume_trains_no_fusion_weights(registry, tmp_path, dataset):  # noqa: F811
    """The runner trains a ``ume`` cell and keeps its best model: the host's fusion part is
    exactly its initial weights, the encoders have moved."""
    runner = Runner(_suite(registry, dataset=dataset), tmp_path, registry=registry, quiet=True)
    cell = next(c for c in runner.plan() if c.arm == "ume" and c.fold == 0)
    record = runner.run_cell(cell, save_model=tmp_path / MODEL_FILE)
    trained = torch.load(tmp_path / MODEL_FILE, weights_only=True)
    fresh = LateFusionRun(runner.load_data(), cell.seed, runner.load_data().modalities)
    initial = fresh.model.state_dict()
    fusion = _fusion_names(fresh)
    assert fusion and all(torch.equal(trained[n], initial[n]) for n in fusion)
    encoders = [n for n in initial if n.startswith("encoders.")]
    assert any(not torch.equal(trained[n], initial[n]) for n in encoders)
    assert record["arm"]["dropped_host_terms"] == ["task"]
    expected = "logits" if dataset == "tiny" else "scores"
    assert record["arm"]["ensemble"].endswith(expected)
    assert record["arm"]["settings_tried"] == 1


def _ume_run(data, task="classification"):
    import pgm_plugins as pp
    from pgm_plugins.bench.step import Stepper

    run = LateFusionRun(data, 0, data.modalities)
    arm = UniModalEnsemble(ArmContext("ume", "late_fusion", data.modalities, task, 2, 0))
    config = {"task": task, "num_classes": 2 if task == "classification" else None}
    handle = pp.inject(run.model, sites=run.sites, config=config, block_factory=arm.block_factory())
    arm.attach(run, handle)
    stepper = Stepper(run.model, run.optimizers(handle), handle=handle, arm=arm)
    return run, arm, handle, stepper


def test_ume_predicts_the_mean_of_its_heads_and_each_encoder_gets_its_own_gradient(
    registry,  # noqa: F811
    tmp_path,
):
    data = Runner(_suite(registry), tmp_path, registry=registry, quiet=True).load_data()
    run, arm, handle, stepper = _ume_run(data)
    inputs, y, rows = next(run.batches(data, data.folds(0)[0].train, 16, None))
    # each head's loss reaches its own encoder and no other
    for m in data.modalities:
        run.model.zero_grad(set_to_none=True)
        out = handle.block({k: run.model.encoders[k](v) for k, v in inputs.items()})
        torch.nn.functional.cross_entropy(out.logits[f"uni.{m}"], y).backward()
        for other in data.modalities:
            got = [p.grad for p in run.model.encoders[other].parameters()]
            assert all(g is not None for g in got) == (other == m)
    stepper.step(run.stages(inputs, y, rows), y)
    with torch.no_grad():
        feats = {m: run.model.encoders[m](x) for m, x in inputs.items()}
        heads = [handle.block.heads[m](feats[m]) for m in data.modalities]
    got = arm.predict(run.predict(inputs), inputs)
    assert torch.allclose(got, torch.stack(heads).mean(0), atol=1e-6)
    with pytest.raises(RuntimeError, match="no head output"):
        arm.predict(got, inputs)  # each prediction reads its own forward's heads


def test_ume_clips_each_modality_on_its_own(registry, tmp_path):  # noqa: F811
    """One modality's large gradient does not scale the other's (a joint clip would)."""
    from pgm_plugins.bench.step import Clip, Stage

    data = Runner(_suite(registry), tmp_path, registry=registry, quiet=True).load_data()
    run, arm, handle, _ = _ume_run(data)
    inputs, y, _ = next(run.batches(data, data.folds(0)[0].train, 16, None))
    run.model.train()
    run.model(**inputs)
    loss = arm.losses({"task": torch.zeros(()), "pgm": handle.aux_loss(y)}, None)["uni"]
    loss.backward()
    alone = {m: [p.grad.clone() for p in arm._modality_params()[m]] for m in data.modalities}
    big = data.modalities[0]
    for p in arm._modality_params()[big]:
        p.grad.mul_(1e4)
    stage = Stage({}, clip=Clip("norm", 1.0))
    arm.after_backward(stage)
    assert stage.clip is None
    small = data.modalities[1]
    norm = torch.sqrt(sum((g**2).sum() for g in alone[small]))
    expected = [g * min(1.0, 1.0 / float(norm + 1e-6)) for g in alone[small]]
    got = [p.grad for p in arm._modality_params()[small]]
    assert all(torch.allclose(a, b, rtol=1e-5) for a, b in zip(got, expected, strict=True))


def test_feature_distill_passes_features_through_and_its_loss_is_the_mse():
    cfg = PgMConfig(modalities={"a": 4, "b": 3}, task="classification", num_classes=2)
    block = FeatureDistill(cfg, 2.0)
    h = {"a": torch.randn(5, 4, requires_grad=True), "b": torch.randn(5, 6, 3)}
    mask = {"b": torch.arange(6)[None, :] < torch.tensor([1, 2, 3, 6, 6])[:, None]}
    out = block(h, mask)
    assert out.outputs["a"] is h["a"] and out.outputs["b"] is h["b"] and not out.losses
    t = {"a": torch.randn(5, 4), "b": torch.randn(5, 6, 3)}
    block.teacher = t
    out = block(h, mask)
    pooled_b = lambda x: (x * mask["b"][..., None]).sum(1) / mask["b"].sum(1, keepdim=True)  # noqa: E731
    expected = 2.0 * (
        ((h["a"] - t["a"]) ** 2).mean() + ((pooled_b(h["b"]) - pooled_b(t["b"])) ** 2).mean()
    )
    assert torch.allclose(out.losses["distill"], expected)
    out.losses["distill"].backward()
    assert h["a"].grad is not None
    with torch.no_grad():  # evaluation: no loss, whatever the teacher holds
        assert not block(h, mask).losses
    with pytest.raises(ValueError, match="student's site features have shape"):
        distill_loss({"a": h["a"]}, {"a": torch.zeros(4, 4)})


def test_umt_teachers_receive_no_gradient_and_the_distillation_trains_the_student(
    registry,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """A ``umt`` cell through the runner (its ``ume`` first stage built first): after every
    backward the teacher's parameters have no gradient and equal the cached first stage, and
    the distillation term is part of what the student trains."""
    from pgm_plugins.bench.methods.umt import UniModalTeacher

    seen: list[dict] = []

    def losses(self, terms, stage):
        seen.append({"distill": float(terms["pgm"].detach()), "terms": sorted(terms)})
        return terms

    def after_backward(self, stage):
        teacher = self.first_stages["ume"]
        params = list(teacher.run.model.parameters())
        seen[-1]["no_grad"] = all(p.grad is None and not p.requires_grad for p in params)
        seen[-1]["state"] = {k: v.clone() for k, v in teacher.run.model.state_dict().items()}

    monkeypatch.setattr(UniModalTeacher, "losses", losses)
    monkeypatch.setattr(UniModalTeacher, "after_backward", after_backward)
    suite = _suite(registry, arms=["umt"], arm_options={"umt": {"weights": [1.0]}})
    runner = Runner(suite, tmp_path, registry=registry, quiet=True)
    done = runner.run([c for c in runner.plan() if c.fold == 0])
    assert not done["failed"], done["failed"]
    assert seen and all(s["no_grad"] for s in seen)
    assert all(s["terms"] == ["pgm", "task"] and s["distill"] > 0 for s in seen)
    (artifact,) = (tmp_path / "t" / "artifacts").iterdir()
    cached = torch.load(artifact / MODEL_FILE, weights_only=True)
    for s in (seen[0], seen[-1]):
        assert all(torch.equal(s["state"][k], cached[k]) for k in cached)
    (record,) = _records(tmp_path / "t").values()
    assert record["arm"]["teacher"] == "ume" and record["arm"]["w"] == 1.0
    assert record["cell_settings"]["first_stage"]["arm"] == "ume"
    assert record["parameters"]["block"] == 0


def test_umt_refuses_a_bad_weight_grid_before_any_cell(registry, tmp_path):  # noqa: F811
    from pgm_plugins.errors import ConfigError

    suite = _suite(registry, arms=["umt"], arm_options={"umt": {"weights": ["big"]}})
    runner = Runner(suite, tmp_path, registry=registry, quiet=True)
    with pytest.raises(
        ConfigError, match=r"\[arm_options\.umt\] weights must be a non-empty list.*default \[0\.1"
    ):
        runner.plan()
    assert not (tmp_path / "t").exists()


@pytest.fixture
def workers(core_registry):
    import bench_workers_plugin

    core_registry.register_plugin(bench_workers_plugin, "bench_workers_plugin")
    core_registry.refresh()
    return core_registry


@pytest.mark.parametrize(
    "kind",
    [
        "inprocess",
        pytest.param("pool", marks=pytest.mark.slow),
        pytest.param("ray", marks=pytest.mark.slow),
    ],
)
def test_the_ume_first_stage_is_built_once_per_seed_shared_and_reused(
    workers, tmp_path, kind, request
):
    """``pgm bench run``'s path on every executor: two arms on the ``ume`` first stage and
    ``ume`` itself, two seeds: two first stages built, each the ``ume`` cell's own training;
    a second run builds none."""
    from pgm_plugins.bench.executors import InProcess, ProcessPool, RayExecutor

    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    make = {"inprocess": InProcess, "pool": lambda: ProcessPool(2), "ray": RayExecutor}[kind]
    table = {
        "dataset": "tiny-workers",
        "hosts": ["late_fusion"],
        "arms": ["ume", "umt", "workers.umt_again"],
        "seeds": [0, 1],
        "epochs": 1,
        "patience": 1,
        "batch": 24,
        "arm_options": {"umt": {"weights": [1.0]}, "workers.umt_again": {"weights": [0.5]}},
    }
    suite = parse_suite(
        "w",
        table,
        datasets=workers.datasets.names(),
        hosts=workers.bench_hosts.names(),
        arms=workers.arms.names(),
    )
    runner = Runner(suite, tmp_path, registry=workers, threads=1, quiet=True)
    cells = runner.plan()
    assert len({p.digest for c in cells for p in runner.prerequisites(c)}) == 2
    summary = runner.run(cells, executor=make())
    assert summary["built"] == 2 and summary["ran"] == 6 and not summary["failed"], summary
    records = _records(tmp_path / "w")
    artifacts = sorted((tmp_path / "w" / "artifacts").iterdir())
    assert len(artifacts) == 2
    built = [json.loads((a / "record.json").read_text()) for a in artifacts]
    ume = [r for r in records.values() if r["arm"]["name"] == "ume"]
    # the first stage is the ume cell's training: same digest, same metrics
    assert sorted((r["cell_digest"], json.dumps(r["metrics"])) for r in built) == sorted(
        (r["cell_digest"], json.dumps(r["metrics"])) for r in ume
    )
    for path in (tmp_path / "w").glob("*.json"):
        path.unlink()
    again = Runner(suite, tmp_path, registry=workers, threads=1, quiet=True)
    summary = again.run(cells, executor=make())
    assert summary["built"] == 0 and summary["ran"] == 6 and not summary["failed"], summary
