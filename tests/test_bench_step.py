"""The runner owns the step: stages, clipping, the block's loss, precision, devices."""

from __future__ import annotations

import json
import types
from typing import ClassVar

import pytest
import torch
from torch import nn

from pgm_plugins import hookimpl
from pgm_plugins.bench.arm import ArmContext, ArmRun
from pgm_plugins.bench.runner import Runner, RunnerError
from pgm_plugins.bench.step import Clip, Stage, Stepper, resolve_device
from tests.test_bench_runner import _records, _suite, registry  # noqa: F401


def _two_layer(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))


def _manual_step(model: nn.Sequential, x: torch.Tensor, clip: float) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    model(x).square().mean().backward()
    nn.utils.clip_grad_value_(list(model.parameters()), clip)
    opt.step()


def test_one_stage_is_zero_grad_backward_clip_step():
    x = torch.randn(5, 3)
    ref, got = _two_layer(), _two_layer()
    _manual_step(ref, x, 0.01)
    opt = torch.optim.SGD(got.parameters(), lr=0.1)
    stepper = Stepper(got, {"main": opt})

    def stages():
        yield Stage({"task": got(x).square().mean()}, clip=Clip("value", 0.01))

    terms = stepper.step(stages())
    for a, b in zip(ref.parameters(), got.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert set(terms) == {"task", "loss"} and not terms["loss"].requires_grad


def test_two_stages_step_their_own_optimizers_in_order_and_report_the_last():
    """MMIM's shape: a first stage with its own optimizer and whole-model clipping, the work
    after the step runs once the generator resumes."""
    model = _two_layer()
    first = torch.optim.SGD(model[0].parameters(), lr=0.5)
    second = torch.optim.SGD(model[1].parameters(), lr=0.5)
    x = torch.randn(5, 3)
    seen = []

    def stages():
        before = model[1].weight.detach().clone()
        yield Stage(
            {"a": model(x).mean()},
            optimizer="first",
            clip=Clip("norm", 1e-3, over="model"),
            report=False,
        )
        seen.append(("after first", torch.equal(before, model[1].weight)))
        yield Stage({"b": model(x).square().mean()}, optimizer="second")
        seen.append(("after second", torch.equal(before, model[1].weight)))

    w0 = model[0].weight.detach().clone()
    terms = Stepper(model, {"first": first, "second": second}).step(stages())
    assert seen == [("after first", True), ("after second", False)]
    # the first stage moved layer 0 by at most lr * clip in norm
    assert 0 < float((model[0].weight.detach() - w0).norm()) <= 0.5 * 1e-3 + 1e-9
    assert set(terms) == {"b", "loss"}


def test_the_blocks_loss_joins_a_stage_and_after_backward_sees_unclipped_gradients():
    model = _two_layer()
    x = torch.randn(5, 3)

    class Handle:
        calls: ClassVar[list] = []

        def aux_loss(self, targets):
            self.calls.append(targets)
            return model[0].weight.sum() * 0 + 2.0

    grads = []

    class Arm(ArmRun):
        def after_backward(self, stage):
            grads.append(model[1].weight.grad.abs().max().item())

    stepper = Stepper(
        model,
        {"main": torch.optim.SGD(model.parameters(), lr=0.1)},
        handle=Handle(),
        arm=Arm(ArmContext("a", "h", ("x",), "regression", None, 0)),
    )
    y = torch.ones(5)

    def stages():
        yield Stage({"task": 100 * model(x).mean()}, clip=Clip("value", 1e-6))

    terms = stepper.step(stages(), y)
    assert float(terms["pgm"]) == 2.0 and Handle.calls[0] is y
    assert grads[0] > 1e-3  # before clipping
    assert float(terms["loss"]) == pytest.approx(float(terms["task"]) + 2.0)


def test_a_stage_naming_an_unknown_optimizer_says_which_exist():
    model = _two_layer()

    def stages():
        yield Stage({"t": model(torch.randn(2, 3)).mean()}, optimizer="mmilb")

    stepper = Stepper(model, {"main": torch.optim.SGD(model.parameters(), lr=0.1)})
    with pytest.raises(ValueError, match=r"'mmilb'.*\['main'\]"):
        stepper.step(stages())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_on_cpu(precision):
    model = _two_layer()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stepper = Stepper(model, {"main": opt}, precision=precision)
    x = torch.randn(8, 3)
    w0 = model[0].weight.detach().clone()

    def stages():
        out = model(x)
        assert out.dtype == (torch.bfloat16 if precision == "bf16" else torch.float16)
        yield Stage({"task": out.float().square().mean()})

    stepper.step(stages())
    assert model[0].weight.dtype == torch.float32  # weights stay fp32
    assert not torch.equal(model[0].weight, w0)
    assert (stepper.scaler is not None) == (precision == "fp16")


def test_devices_resolve_or_say_what_is_there():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="valid: cpu, cuda, cuda:N, auto"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"CUDA is not available.*--device cpu"):
            resolve_device("cuda:0")


def test_runner_refuses_a_bad_device_or_precision(registry, tmp_path):  # noqa: F811
    suite = _suite(registry)
    with pytest.raises(RunnerError, match="valid: cpu, cuda, cuda:N, auto"):
        Runner(suite, tmp_path, registry=registry, device="tpu")
    with pytest.raises(RunnerError, match=r"precision 'bf61'.*bf16"):
        Runner(suite, tmp_path, registry=registry, precision="bf61")
    assert not any(tmp_path.iterdir())


def test_precision_is_part_of_a_cells_identity_and_the_device_is_recorded(
    registry,  # noqa: F811
    tmp_path,
):
    suite = _suite(registry, arms=["pgm"], seeds=[0], epochs=1)
    fp32 = Runner(suite, tmp_path / "a", registry=registry, quiet=True)
    bf16 = Runner(suite, tmp_path / "b", registry=registry, quiet=True, precision="bf16")
    cell = fp32.plan()[0]
    assert "precision" not in fp32.cell_settings(cell)  # fp32 records keep their digest
    assert bf16.cell_settings(cell)["precision"] == "bf16"
    bf16.run(bf16.plan()[:1])
    (record,) = _records(tmp_path / "b" / suite.name).values()
    assert record["train"]["device"] == "cpu" and record["train"]["precision"] == "bf16"
    # a bf16 record is not reused by an fp32 run of the same folder
    again = Runner(suite, tmp_path / "b", registry=registry, quiet=True)
    with pytest.raises(RunnerError, match="precision"):
        again.run(again.plan()[:1])
    assert json.loads(json.dumps(record))["metrics"]["test"]["acc"] >= 0


def test_a_host_with_the_old_step_protocol_is_named(registry, tmp_path):  # noqa: F811
    from pgm_plugins.bench.late_fusion import LateFusionRun

    class OldRun(LateFusionRun):
        stages = None  # type: ignore[assignment]

        def step(self, inputs, targets, rows):
            return {}

    plugin = types.ModuleType("old_host_plugin")

    @hookimpl
    def pgm_register_bench_hosts(register):
        register("old", OldRun, "a host of the old protocol")

    plugin.pgm_register_bench_hosts = pgm_register_bench_hosts  # type: ignore[attr-defined]
    registry.register_plugin(plugin, "old")
    registry.refresh()
    runner = Runner(_suite(registry, hosts=["old"]), tmp_path, registry=registry, quiet=True)
    with pytest.raises(RunnerError, match=r"lacks stages \(it has the old step\(\)"):
        runner.run(runner.plan()[:1])
