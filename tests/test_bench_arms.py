"""Arms as plugins: registered inline, run through the runner, refused where they do not fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from pgm_plugins import hookimpl
from pgm_plugins.bench.arm import ArmContext, ArmRun, ArmSpec
from pgm_plugins.bench.arms import get_arm
from pgm_plugins.bench.runner import Runner, RunnerError
from pgm_plugins.bench.suite import SuiteError
from pgm_plugins.errors import ConfigError, UnknownNameError
from tests.test_bench_runner import _records, registry  # noqa: F401
from tests.test_bench_runner import _suite as runner_suite

REPO = Path(__file__).resolve().parents[1]
CALLS: list[str] = []


class Recording(ArmRun):
    """Scales the task loss by the setting's ``w`` and records every hook it sees."""

    def losses(self, terms, stage):
        CALLS.append("losses")
        return {**terms, "task": self.ctx.setting["w"] * terms["task"]}

    def after_backward(self, stage):
        CALLS.append("after_backward")
        grads = [p.grad for p in self.host.model.parameters() if p.grad is not None]
        assert grads, "after_backward runs after backward"

    def predict(self, outputs, inputs):
        CALLS.append("predict")
        return outputs

    def record(self):
        return {"w": self.ctx.setting["w"], "saw_handle": self.handle is not None}


def _settings(ctx: ArmContext) -> list[dict]:
    return [{"w": float(w)} for w in ctx.options.get("weights", [1.0])]


def _plugin(*specs: ArmSpec) -> types.ModuleType:
    plugin = types.ModuleType("arm_plugin")

    @hookimpl
    def pgm_register_arms(register):
        for spec in specs:
            register(spec)

    plugin.pgm_register_arms = pgm_register_arms  # type: ignore[attr-defined]
    return plugin


@pytest.fixture
def arms(registry):  # noqa: F811
    registry.register_plugin(
        _plugin(
            ArmSpec("test.scaled", "task loss x w", make=Recording, settings=_settings),
            ArmSpec(
                "test.regression_only",
                "an arm for regression",
                tasks=("regression",),
            ),
        ),
        "arms",
    )
    registry.refresh()
    return registry


def _suite(registry, **changes):  # noqa: F811
    """The runner tests' tiny suite, with this module's arms and one seed."""
    return runner_suite(registry, **{"arms": ["baseline", "test.scaled"], "seeds": [0], **changes})


def test_a_plugin_arm_runs_through_the_runner_with_its_grid_and_hooks(arms, tmp_path):
    CALLS.clear()
    suite = _suite(arms, arm_options={"test.scaled": {"weights": [0.5, 2.0]}})
    runner = Runner(suite, tmp_path, registry=arms, quiet=True)
    cells = [c for c in runner.plan() if c.arm == "test.scaled"][:1]
    runner.run(cells)
    (record,) = _records(tmp_path / "t").values()
    assert record["arm"]["settings_tried"] == 2
    assert [s["setting"] for s in record["selection"]] == [{"w": 0.5}, {"w": 2.0}]
    assert record["arm"]["w"] == record["setting"]["w"]
    assert record["arm"]["saw_handle"] is False
    assert record["cell_settings"]["arm_options"] == {"weights": [0.5, 2.0]}
    assert {"losses", "after_backward", "predict"} <= set(CALLS)
    assert CALLS.index("losses") < CALLS.index("after_backward")


def test_a_losses_hook_changes_what_is_trained(arms, tmp_path):
    """w = 0 leaves the host untouched: the arm's losses reach the step."""
    from pgm_plugins.bench.late_fusion import LateFusionRun
    from pgm_plugins.bench.step import Stepper

    runner = Runner(_suite(arms), tmp_path, registry=arms, quiet=True)
    data = runner.load_data()
    run = LateFusionRun(data, 0, data.modalities)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    arm = Recording(
        ArmContext(
            "test.scaled", "late_fusion", data.modalities, "classification", 2, 0, {"w": 0.0}
        )
    )
    arm.attach(run, None)
    opt = run.optimizers(None)
    for g in opt["main"].param_groups:
        g["weight_decay"] = 0.0
    inputs, y, rows = next(run.batches(data, data.folds(0)[0].train, 16, None))
    Stepper(run.model, opt, arm=arm).step(run.stages(inputs, y, rows), y)
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_misspelt_arm_names_the_registered_ones(arms):
    with pytest.raises(UnknownNameError, match=r"'test\.scaeld'.*test\.scaled.*Did you mean"):
        get_arm("test.scaeld", arms)
    with pytest.raises(
        SuiteError, match=r"unknown arm 'test\.scaeld'.*Did you mean 'test\.scaled'"
    ):
        _suite(arms, arms=["baseline", "test.scaeld"])
    with pytest.raises(SuiteError, match=r"arm_options\.pgm names an arm the suite does not run"):
        _suite(arms, arm_options={"pgm": {}})


def test_an_arm_is_refused_on_a_task_it_does_not_support(arms, tmp_path):
    runner = Runner(
        _suite(arms, arms=["test.regression_only"]), tmp_path, registry=arms, quiet=True
    )
    with pytest.raises(RunnerError, match=r"supports regression; data set tiny .* classification"):
        runner.plan()
    assert not (tmp_path / "t").exists()


def test_a_spec_is_checked_when_it_is_made():
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        ArmSpec("x", "bad", tasks=("ranking",))
    spec = ArmSpec("x", "bad grid", settings=lambda ctx: [])
    with pytest.raises(ValueError, match="non-empty list of dicts"):
        spec.grid(ArmContext("x", "h", ("a",), "classification", 2, 0))


@pytest.mark.slow
def test_the_example_arm_from_its_entry_point_runs_from_the_command_line(tmp_path):
    """examples/pgm-example-arm is installed by make setup: its arm comes from the entry point."""
    pytest.importorskip("pgm_example_arm")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    suite = REPO / "examples" / "pgm-example-arm" / "weighted_uni_heads.toml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgm_plugins.cli",
            "bench",
            "run",
            str(suite),
            "--seeds",
            "0",
            "--arms",
            "example.weighted_uni_heads",
            "--results",
            str(tmp_path),
            "--quiet",
            "--no-report",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("*/*.json")
    record = json.loads(path.read_text())
    assert record["arm"]["name"] == "example.weighted_uni_heads"
    assert record["arm"]["settings_tried"] == 2
    assert record["arm"]["w"] in (0.5, 2.0)
    assert record["parameters"]["block"] > 0


class UniOnly(ArmRun):
    """A first stage: uni-modal heads at the sites, the host's fusion loss dropped."""

    def block_factory(self):
        from pgm_plugins.bench.arms import UniHeadsControl

        return UniHeadsControl

    def losses(self, terms, stage):
        return {k: v for k, v in terms.items() if k != "task"}


class Taught(ArmRun):
    """Reads its first stage's site features on every batch; they must not change."""

    def on_batch(self, inputs, targets, rows):
        teacher = self.first_stages["test.uni"]
        feats = teacher.features(inputs)
        self.shapes = {m: tuple(t.shape[1:]) for m, t in feats.items()}
        self.frozen = not any(p.requires_grad for p in teacher.run.model.parameters())

    def record(self):
        return {"teacher_shapes": self.shapes, "teacher_frozen": self.frozen}


def test_a_first_stage_is_built_once_and_shared_by_the_arms_that_need_it(registry, tmp_path):  # noqa: F811
    registry.register_plugin(
        _plugin(
            ArmSpec("test.uni", "uni-modal first stage", make=UniOnly, block=True),
            ArmSpec("test.taught", "reads the first stage", make=Taught, first_stage="test.uni"),
            ArmSpec("test.taught2", "reads it too", make=Taught, first_stage="test.uni"),
        ),
        "stages",
    )
    registry.refresh()
    suite = _suite(registry, arms=["test.taught", "test.taught2"])
    runner = Runner(suite, tmp_path, registry=registry, quiet=True)
    cells = [c for c in runner.plan() if c.fold == 0]
    assert len({p.digest for c in cells for p in runner.prerequisites(c)}) == 1
    runner.run(cells)
    records = _records(tmp_path / "t")
    assert len(records) == 2
    for record in records.values():
        assert record["arm"]["teacher_frozen"] is True
        assert set(record["arm"]["teacher_shapes"]) == {"a", "b"}
        assert record["cell_settings"]["first_stage"]["arm"] == "test.uni"
    (artifact,) = (tmp_path / "t" / "artifacts").iterdir()
    assert {p.name for p in artifact.iterdir()} == {"model.pt", "record.json"}
    stamp = (artifact / "model.pt").stat().st_mtime_ns
    # a second run reuses the built first stage (and the finished cells)
    again = Runner(suite, tmp_path, registry=registry, quiet=True)
    again.run(cells)
    assert (artifact / "model.pt").stat().st_mtime_ns == stamp


def _bad_grid(ctx: ArmContext) -> list[dict]:
    weights = ctx.options.get("weights", [1.0])
    if not isinstance(weights, list):
        raise ValueError(f"weights must be a list; got {weights!r}.")
    return [{"w": float(w)} for w in weights]


def test_a_bad_arm_option_is_refused_by_plan_before_any_cell_runs(registry, tmp_path):  # noqa: F811
    """An arm's grid is read from its options only when its cell runs: a bad option failed
    that cell after the others had trained (exit 1, records written), not the plan (exit 2)."""
    registry.register_plugin(
        _plugin(ArmSpec("test.grid", "a grid", make=Recording, settings=_bad_grid)), "grid"
    )
    registry.refresh()
    suite = _suite(
        registry, arms=["baseline", "test.grid"], arm_options={"test.grid": {"weights": "x"}}
    )
    runner = Runner(suite, tmp_path, registry=registry, quiet=True)
    with pytest.raises(RunnerError, match=r"arm 'test\.grid'.*weights.*'x'"):
        runner.plan()
    assert not (tmp_path / "t").exists()


def test_a_misspelt_mslr_option_is_refused_not_ignored(registry, tmp_path):  # noqa: F811
    """``[arm_options.mslr] scalez`` ran mslr on its default scales and said nothing."""
    suite = _suite(registry, arms=["mslr"], arm_options={"mslr": {"scalez": [1.0, 2.0]}})
    runner = Runner(suite, tmp_path, registry=registry, quiet=True)
    with pytest.raises(ConfigError, match=r"no option 'scalez'.*'scales'.*Did you mean 'scales'"):
        runner.plan()
    suite = _suite(registry, arms=["mslr"], arm_options={"mslr": {"scales": [0.0, "x"]}})
    with pytest.raises(ConfigError, match=r"scales must be a non-empty list of positive numbers"):
        Runner(suite, tmp_path, registry=registry, quiet=True).plan()
