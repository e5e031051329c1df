"""The method arms do what their papers say on tiny cases, and run through the runner."""

from __future__ import annotations

import copy
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pgm_plugins as pp
from pgm_plugins import hookimpl
from pgm_plugins.bench.arm import ArmContext
from pgm_plugins.bench.arms import UniHeadsControl
from pgm_plugins.bench.late_fusion import LateFusionRun
from pgm_plugins.bench.methods import method_arms
from pgm_plugins.bench.methods.heads import ProbeHeads
from pgm_plugins.bench.methods.mmpareto import MMParetoRun, integrate, min_norm_weights
from pgm_plugins.bench.methods.ogm_ge import (
    OgmGeRun,
    add_noise_,
    coefficients,
    discrepancy_ratios,
)
from pgm_plugins.bench.runner import Runner, RunnerError
from pgm_plugins.bench.step import Clip, Stage, Stepper
from pgm_plugins.errors import ConfigError
from tests.test_bench_runner import _records, registry, tiny  # noqa: F401
from tests.test_bench_runner import _suite as runner_suite


def _host(task: str = "classification", seed: int = 0):
    """The late-fusion host on tiny data and one training batch of it."""
    data = tiny(task=task)
    run = LateFusionRun(data, seed, data.modalities, hidden=32)
    inputs, y, _ = next(run.batches(data, np.arange(64), 64, None))
    return run, inputs, y


def _ctx(arm: str, task: str = "classification", setting=None, options=None) -> ArmContext:
    return ArmContext(
        arm,
        "late_fusion",
        ("a", "b"),
        task,
        2 if task == "classification" else None,
        0,
        dict(setting or {}),
        dict(options or {}),
    )


def _inject(run, factory, task: str = "classification"):
    config = {"task": task, "num_classes": 2 if task == "classification" else None}
    return pp.inject(run.model, sites=run.sites, config=config, block_factory=factory)


def _task_stage(run, inputs, y) -> Stage:
    """The host's forward as one stage without clipping (its gradients are read after it)."""
    return Stage({"task": F.cross_entropy(run.model(**inputs), y)})


class _Snapshot(OgmGeRun):
    """OGM-GE that keeps every encoder gradient just before and just after its modulation."""

    def after_backward(self, stage):
        parts = self.host.parts()
        self.before = {m: [p.grad.clone() for p in parts[m]] for m in parts}
        self.probes = [p.grad.clone() for p in self.handle.block.parameters()]
        self.k = dict(self._k)
        super().after_backward(stage)
        self.after = {m: [p.grad.clone() for p in parts[m]] for m in parts}


def _ogm_step(alpha: float, noise: bool, clip: Clip | None = None):
    """One Adam step of the late-fusion host with OGM-GE, and the same step of a copy of the
    host alone (same weights, same batch): (arm, probe scores, host with the arm, host alone)."""
    run, inputs, y = _host()
    alone = copy.deepcopy(run.model)
    arm = _Snapshot(_ctx("ogm_ge", setting={"alpha": alpha}, options={"noise": noise}))
    handle = _inject(run, arm.block_factory())
    arm.attach(run, handle)
    # the expected coefficients, from the probe heads on the encoders' features
    block = handle.block
    with torch.no_grad():
        scores = {}
        for m in ("a", "b"):
            z = block.heads[m](run.model.encoders[m](inputs[m]))
            scores[m] = float(torch.softmax(z, -1).gather(1, y.view(-1, 1)).sum())
    torch.manual_seed(0)
    stage = _task_stage(run, inputs, y)
    stage.clip = clip
    opt = torch.optim.Adam(run.model.parameters(), lr=0.01)
    Stepper(run.model, {"main": opt}, handle=handle, arm=arm).step(iter([stage]), y)
    plain = Stage({"task": F.cross_entropy(alone(**inputs), y)}, clip=clip)
    Stepper(alone, {"main": torch.optim.Adam(alone.parameters(), lr=0.01)}).step(iter([plain]), y)
    return arm, scores, run.model, alone


def test_ogm_ge_slows_the_dominant_modality_s_step_by_its_coefficient_and_not_the_other():
    """Under Adam a factor on the gradient cancels, so the arm scales the dominant encoder's
    step: it moves k times as far as the host alone moves it; the other encoder and the fusion
    head move exactly as far."""
    alpha = 0.5
    arm, scores, model, alone = _ogm_step(alpha, noise=False)
    dominant = max(scores, key=scores.get)
    other = min(scores, key=scores.get)
    rho = scores[dominant] / scores[other]
    assert rho > 1.0
    k = 1.0 - math.tanh(alpha * rho)
    assert arm.k[dominant] == pytest.approx(k, rel=1e-6) and arm.k[other] == 1.0
    start = _host()[0].model.state_dict()  # the same seed: the weights before the step
    moved, moved_alone = model.state_dict(), alone.state_dict()
    for name, p0 in start.items():
        step, step_alone = moved[name] - p0, moved_alone[name] - p0
        assert step_alone.abs().sum() > 0, name
        factor = k if name.startswith(f"encoders.{dominant}.") else 1.0
        assert torch.allclose(step, factor * step_alone, rtol=1e-4, atol=1e-7), name
    for before, after in zip(arm.before[dominant], arm.after[dominant], strict=True):
        assert torch.equal(after, before)  # without noise the gradients are the host's
    rec = arm.record()
    assert rec["slowed_share"] == {dominant: 1.0, other: 0.0} and rec["slows"] == "update"
    assert rec["coefficient_mean"][dominant] == pytest.approx(k, rel=1e-6)


def test_ogm_ge_probe_heads_are_clipped_apart_from_the_host():
    """The recipe's clipping by norm sees the host's gradients alone: the probes' loss never
    scales them down; the probe heads are clipped on their own."""
    clip = Clip("norm", 0.05)
    arm, _, _, _ = _ogm_step(0.5, noise=False, clip=clip)
    host = [g for m in arm.before for g in arm.before[m]]
    total = float(torch.sqrt(sum((g.double() ** 2).sum() for g in host)))
    assert total > clip.max  # the clip is active
    scale = clip.max / (total + 1e-6)
    for m in arm.before:
        for before, after in zip(arm.before[m], arm.after[m], strict=True):
            assert torch.allclose(after, before * scale, rtol=1e-5, atol=1e-9)
    probes = [p.grad for p in arm.handle.block.parameters()]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in probes)))
    assert norm == pytest.approx(
        min(clip.max, float(torch.sqrt(sum((g.double() ** 2).sum() for g in arm.probes)))), rel=1e-4
    )


def test_ogm_ge_noise_has_the_gradient_s_own_std_on_every_encoder():
    """Generalisation enhancement: g <- g + N(0, std(g)^2), per tensor, both encoders."""
    p = torch.nn.Parameter(torch.zeros(300, 300))
    p.grad = torch.randn(300, 300, generator=torch.Generator().manual_seed(1)) * 3.0
    before = p.grad.clone()
    add_noise_([p])
    residual = p.grad - before
    assert float(residual.std()) == pytest.approx(float(before.std()), rel=0.02)
    assert abs(float(residual.mean())) < 0.05
    # through the arm: every encoder gets noise, the fusion head none
    arm, _, _, _ = _ogm_step(0.5, noise=True)
    for m in ("a", "b"):
        before, after = arm.before[m][0], arm.after[m][0]  # the first Linear's weight
        residual = after - before
        assert float(residual.std()) == pytest.approx(float(before.std()), rel=0.3)
    assert all(
        torch.equal(a, b) for a, b in zip(arm.before["fusion"], arm.after["fusion"], strict=True)
    )


def test_ogm_ge_coefficients_for_more_than_two_modalities():
    scores = {"a": 3.0, "b": 1.0, "c": 2.0}
    assert discrepancy_ratios(scores) == {"a": 2.0, "b": 1.0 / 2.5, "c": 1.0}
    assert coefficients(scores, 0.3) == {"a": 1.0 - math.tanh(0.6), "b": 1.0, "c": 1.0}
    # two modalities ahead of a weak third: only the dominant one is slowed
    scores = {"a": 5.0, "b": 4.5, "c": 3.0}
    assert discrepancy_ratios(scores)["b"] > 1.0
    assert coefficients(scores, 0.3) == {"a": 1.0 - math.tanh(0.3 * 5.0 / 3.75), "b": 1.0, "c": 1.0}
    assert coefficients({"a": 2.0, "b": 1.0}, 0.1) == {"a": 1.0 - math.tanh(0.2), "b": 1.0}
    assert coefficients({"a": 1.0}, 0.1) == {"a": 1.0}


def test_ogm_ge_probe_heads_give_the_encoders_no_gradient_and_change_no_output():
    run, inputs, y = _host()
    plain = copy.deepcopy(run.model)
    handle = _inject(run, ProbeHeads)
    out = run.model(**inputs)
    assert torch.equal(out, plain(**inputs))
    task = F.cross_entropy(out, y)
    with_probes = task + handle.aux_loss(y)
    with_probes.backward()
    F.cross_entropy(plain(**inputs), y).backward()
    host = dict(plain.named_parameters())
    for name, p in run.model.named_parameters():
        if name in host:
            assert torch.equal(p.grad, host[name].grad), name
    heads = [p for n, p in run.model.named_parameters() if n not in host]
    assert heads and all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads)


@pytest.mark.parametrize("seed", range(6))
def test_mmpareto_weights_solve_the_two_gradient_min_norm_problem(seed):
    gen = torch.Generator().manual_seed(seed)
    g1 = torch.randn(40, generator=gen, dtype=torch.float64)
    g2 = torch.randn(40, generator=gen, dtype=torch.float64) * (0.2 + seed)
    if seed % 2:
        g2 = g2 - 1.5 * (g2 @ g1) / (g1 @ g1) * g1  # make them conflict
    w, rest = min_norm_weights(g1, g2)
    assert rest == pytest.approx(1.0 - w) and 0.0 <= w <= 1.0
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    norms = (grid[:, None] * g1 + (1 - grid[:, None]) * g2).norm(dim=1)
    best = int(norms.argmin())
    assert float((w * g1 + (1 - w) * g2).norm()) <= float(norms[best]) + 1e-9
    assert w == pytest.approx(float(grid[best]), abs=1e-4)


def test_mmpareto_no_conflict_sums_and_conflict_takes_a_common_descent_direction():
    g_mm = torch.tensor([1.0, 0.5, 0.0])
    g_uni = torch.tensor([2.0, -0.5, 1.0])  # cos > 0: no conflict
    got, info = integrate(g_mm, g_uni, gamma=1.5)
    assert not info["conflict"] and info["weights"] == (0.5, 0.5)
    assert torch.allclose(got, 1.5 * (g_mm + g_uni))
    g_uni = torch.tensor([-3.0, 1.0, 0.5])  # cos < 0: conflict
    got, info = integrate(g_mm, g_uni, gamma=1.0)
    w = info["weights"]
    assert info["conflict"] and w == min_norm_weights(g_mm, g_uni)
    direction = w[0] * g_mm + w[1] * g_uni
    assert float(torch.nn.functional.cosine_similarity(got, direction, dim=0)) == pytest.approx(1.0)
    assert float(got @ g_mm) >= -1e-6 and float(got @ g_uni) >= -1e-6
    # magnitude: never below the plain sum's
    assert float(got.norm()) == pytest.approx(
        max(float((2 * direction).norm()), float((g_mm + g_uni).norm())), rel=1e-6
    )


def test_mmpareto_backward_integrates_encoder_gradients_and_sums_the_rest():
    run, inputs, y = _host()
    arm = MMParetoRun(_ctx("mmpareto", setting={"gamma": 1.5}))
    handle = _inject(run, arm.block_factory())
    arm.attach(run, handle)
    ref = copy.deepcopy(run.model)
    ref_handle = pp.handle_of(ref)
    # the expected gradients, loss by loss, on a copy
    out = ref(**inputs)
    l_mm = F.cross_entropy(out, y)
    logits = {k[4:]: v for o in ref_handle.outputs for k, v in o.logits.items()}
    l_uni = {m: F.cross_entropy(z, y) for m, z in logits.items()}
    (l_mm + sum(l_uni.values())).backward(retain_graph=True)
    plain = {n: p.grad.clone() for n, p in ref.named_parameters()}
    expected = {}
    for m in ("a", "b"):
        ps = list(ref.encoders[m].parameters())
        g_mm = torch.cat([g.reshape(-1) for g in torch.autograd.grad(l_mm, ps, retain_graph=True)])
        g_m = torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(l_uni[m], ps, retain_graph=True)]
        )
        expected[m], _ = integrate(g_mm, g_m, 1.5)
    opt = torch.optim.SGD(run.model.parameters(), lr=0.0)
    terms = Stepper(run.model, {"main": opt}, handle=handle, arm=arm).step(
        iter([_task_stage(run, inputs, y)]), y
    )
    assert {"task", "uni.a", "uni.b"} <= set(terms) and "pgm" not in terms
    for name, p in run.model.named_parameters():
        m = name.split(".")[1] if name.startswith("encoders.") else None
        if m is None:
            assert torch.allclose(p.grad, plain[name], atol=1e-6), name
    for m in ("a", "b"):
        got = torch.cat([p.grad.reshape(-1) for p in run.model.encoders[m].parameters()])
        assert torch.allclose(got, expected[m], atol=1e-6)
        assert not torch.allclose(
            got,
            torch.cat(
                [
                    plain[n].reshape(-1)
                    for n, _ in ref.named_parameters()
                    if n.startswith(f"encoders.{m}.")
                ]
            ),
        )
    assert arm.record()["gamma"] == 1.5


def _suite(registry, **changes):  # noqa: F811
    """The runner tests' tiny suite, with this module's arms and one seed."""
    return runner_suite(registry, **{"arms": ["ogm_ge", "mmpareto"], "seeds": [0], **changes})


def test_both_arms_run_through_the_runner_and_record_their_settings(registry, tmp_path):  # noqa: F811
    options = {"ogm_ge": {"alphas": [0.1, 0.8]}, "mmpareto": {"gammas": [1.0, 1.5]}}
    runner = Runner(_suite(registry, arm_options=options), tmp_path, registry=registry, quiet=True)
    runner.run(runner.plan(folds=[0]))
    recs = {r["arm"]["name"]: r for r in _records(tmp_path / "t").values()}
    ogm, par = recs["ogm_ge"], recs["mmpareto"]
    assert ogm["arm"]["settings_tried"] == 2 and par["arm"]["settings_tried"] == 2
    assert [s["setting"] for s in ogm["selection"]] == [{"alpha": 0.1}, {"alpha": 0.8}]
    assert [s["setting"] for s in par["selection"]] == [{"gamma": 1.0}, {"gamma": 1.5}]
    assert ogm["arm"]["alpha"] == ogm["setting"]["alpha"] and ogm["arm"]["noise"] is True
    assert set(ogm["arm"]["slowed_share"]) == {"a", "b"}
    assert sum(ogm["arm"]["slowed_share"].values()) > 0  # a modality was slowed on some step
    assert par["arm"]["gamma"] == par["setting"]["gamma"]
    assert 0.0 <= par["arm"]["conflict_share"]["a"] <= 1.0
    assert "Peng" in ogm["arm"]["paper"] and "Wei" in par["arm"]["paper"]
    for r in (ogm, par):
        assert r["parameters"]["block"] > 0 and 0 <= r["metrics"]["test"]["acc"] <= 1
    # the default grids: three alphas, one gamma
    assert [s.name for s in method_arms()] == ["ogm_ge", "mmpareto", "ume", "umt", "pgm-guided"]
    ctx = _ctx("ogm_ge")
    assert len(method_arms()[0].grid(ctx)) == 3 and len(method_arms()[1].grid(ctx)) == 1


def test_mmpareto_runs_on_regression_and_ogm_ge_is_refused_there(registry, tmp_path):  # noqa: F811
    runner = Runner(
        _suite(registry, dataset="tiny-reg", arms=["mmpareto"]),
        tmp_path,
        registry=registry,
        quiet=True,
    )
    (record,) = [runner.run_cell(c) for c in runner.plan(folds=[0])]
    assert record["block_config"]["task"] == "regression" and record["primary"] == "mae"
    runner = Runner(
        _suite(registry, dataset="tiny-reg", arms=["ogm_ge"]),
        tmp_path,
        registry=registry,
        quiet=True,
    )
    with pytest.raises(RunnerError, match=r"'ogm_ge' supports classification; .* regression"):
        runner.plan()


def test_a_misspelt_option_is_refused_before_any_cell(registry, tmp_path):  # noqa: F811
    bad = {"ogm_ge": {"alpha": [0.1]}}
    runner = Runner(
        _suite(registry, arms=["ogm_ge"], arm_options=bad), tmp_path, registry=registry, quiet=True
    )
    with pytest.raises(
        ConfigError, match=r"no option 'alpha'; valid: 'alphas', 'noise'.*Did you mean 'alphas'"
    ):
        runner.plan()
    assert not (tmp_path / "t").exists()
    with pytest.raises(ConfigError, match=r"alphas must be a non-empty list of positive numbers"):
        method_arms()[0].grid(_ctx("ogm_ge", options={"alphas": [0.0]}))
    with pytest.raises(ConfigError, match=r"noise must be true or false"):
        OgmGeRun(_ctx("ogm_ge", options={"noise": "yes"}))


@pytest.mark.parametrize(
    ("arm", "typo", "meant"), [("pgm-guided", "weigths", "weights"), ("umt", "weight", "weights")]
)
def test_every_method_refuses_an_option_it_does_not_take(arm, typo, meant):
    spec = {s.name: s for s in method_arms()}[arm]
    with pytest.raises(ConfigError, match=rf"no option '{typo}'.*Did you mean '{meant}'"):
        spec.grid(_ctx(arm, options={typo: [0.1]}))


def test_uni_heads_are_what_mmpareto_injects():
    assert MMParetoRun(_ctx("mmpareto")).block_factory() is UniHeadsControl


def test_a_misspelt_arm_names_every_registered_arm(registry):  # noqa: F811
    """Twenty arms and more are registered now: the error still names each one."""
    from pgm_plugins.bench.arms import get_arm
    from pgm_plugins.bench.suite import SuiteError
    from pgm_plugins.errors import UnknownNameError

    names = registry.arms.names()
    assert len(names) >= 20  # with only.<modality>, over the old limit of twenty
    with pytest.raises(UnknownNameError) as got:
        get_arm("ogm-ge", registry)
    assert all(repr(n) in str(got.value) for n in names) and "Did you mean 'ogm_ge'" in str(
        got.value
    )
    with pytest.raises(SuiteError) as got:
        _suite(registry, arms=["mmpareto", "mm_pareto"])
    assert all(repr(n) in str(got.value) for n in names)


def test_mmpareto_backward_of_a_scaled_loss_gives_scaled_gradients():
    """Under fp16 the stepper hands backward the grad scaler's scaled loss: every gradient the
    arm writes must carry the same scale, so unscaling gives the fp32 result."""
    grads = []
    for scale in (1.0, 1024.0):
        run, inputs, y = _host()
        arm = MMParetoRun(_ctx("mmpareto"))
        handle = _inject(run, arm.block_factory())
        arm.attach(run, handle)
        stage = _task_stage(run, inputs, y)
        stage.targets = y
        terms = arm.losses({**stage.terms, "pgm": handle.aux_loss(y)}, stage)
        loss = sum(terms.values())
        assert arm.backward(terms, loss * scale, stage)
        grads.append({n: p.grad.clone() for n, p in run.model.named_parameters()})
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name] / 1024.0, g, rtol=1e-5, atol=1e-7), name


@pytest.mark.slow
def test_both_arms_run_from_the_command_line(tmp_path):
    """``pgm bench run`` of a suite file naming the arms: registered by the bench plugin's entry
    point, their grids read from ``[arm_options]``."""
    import json
    import os
    import subprocess
    import sys

    suite = tmp_path / "methods.toml"
    suite.write_text(
        'dataset = "synthetic"\nhosts = ["late_fusion"]\narms = ["ogm_ge", "mmpareto"]\n'
        "seeds = [0]\nepochs = 1\npatience = 1\nbatch = 100\n"
        "[arm_options.ogm_ge]\nalphas = [0.1, 0.8]\nnoise = false\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgm_plugins.cli",
            "bench",
            "run",
            str(suite),
            "--results",
            str(tmp_path / "out"),
            "--quiet",
            "--no-report",
            "--folds",
            "0",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    recs = {
        r["arm"]["name"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "out").glob("*/*.json"))
    }
    assert recs["ogm_ge"]["arm"]["settings_tried"] == 2 and recs["ogm_ge"]["arm"]["noise"] is False
    assert recs["mmpareto"]["arm"]["settings_tried"] == 1


def test_an_arm_is_left_out_on_a_host_that_trains_another_task(registry, tmp_path, capsys):  # noqa: F811
    """The MMSA hosts train as regression on +-1 labels of classification data: a
    classification-only arm (ogm_ge) runs on the suite's other hosts and is left out there,
    saying so; with no host that can take it, the plan is refused before any cell runs."""

    class AsRegression(LateFusionRun):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.block_config = {"task": "regression", "num_classes": None}

    plugin = types.ModuleType("regression_host_plugin")

    @hookimpl
    def pgm_register_bench_hosts(register):
        register("as_regression", AsRegression, "late fusion that says it trains regression")

    plugin.pgm_register_bench_hosts = pgm_register_bench_hosts  # type: ignore[attr-defined]
    registry.register_plugin(plugin, "regression_host")
    registry.refresh()
    suite = _suite(registry, hosts=["late_fusion", "as_regression"], arms=["baseline", "ogm_ge"])
    cells = Runner(suite, tmp_path, registry=registry).plan(folds=[0])
    assert sorted((c.host, c.arm) for c in cells) == [
        ("as_regression", "baseline"),
        ("late_fusion", "baseline"),
        ("late_fusion", "ogm_ge"),
    ]
    err = capsys.readouterr().err
    assert "arm 'ogm_ge' left out on as_regression: it trains as regression" in err
    assert "supports only classification" in err
    suite = _suite(registry, hosts=["as_regression"], arms=["ogm_ge"])
    runner = Runner(suite, tmp_path, registry=registry, quiet=True)
    with pytest.raises(
        RunnerError, match=r"ogm_ge support only classification, .* trains as regression"
    ):
        runner.plan()
    with pytest.raises(RunnerError, match=r"every host of this run \(as_regression\)"):
        Runner(
            _suite(registry, hosts=["late_fusion", "as_regression"], arms=["ogm_ge"]),
            tmp_path,
            registry=registry,
            quiet=True,
        ).plan(hosts=["as_regression"])
    assert not (tmp_path / "t").exists()
