"""The ``pgm-guided`` arm: PgM guided by uni-modal training, through the runner."""

from __future__ import annotations

import pytest

from pgm_plugins.bench.arm import ArmRun, ArmSpec
from pgm_plugins.bench.arms import UniHeadsControl, get_arm
from pgm_plugins.bench.methods.guided import GuidedArm, guided_arm, guided_grid
from pgm_plugins.bench.runner import Runner
from tests.test_bench_arms import _plugin, _suite
from tests.test_bench_runner import _records, registry  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


class UniOnly(ArmRun):
    """A first stage standing in for ``ume``: uni-modal heads, the host's fusion loss dropped."""

    def block_factory(self):
        return UniHeadsControl

    def losses(self, terms, stage):
        return {k: v for k, v in terms.items() if k != "task"}


SEEN: list[dict] = []


class Spying(GuidedArm):
    def aux_kwargs(self):
        got = super().aux_kwargs()
        SEEN.append({m: tuple(t.shape) for m, t in got["teacher"].items()})
        return got


def test_the_grid_is_a_coordinate_grid_over_rho_plus_the_weights():
    grid = guided_grid(("a", "b", "c"))
    assert len(grid) == 3 + 3 * 2
    assert grid[0] == {"rho": {"a": 0.5, "b": 0.5, "c": 0.5}, "lambda_teacher": 0.3}
    assert [g["lambda_teacher"] for g in grid[:3]] == [0.3, 0.1, 1.0]
    assert grid[3] == {"rho": {"a": 0.25, "b": 0.5, "c": 0.5}, "lambda_teacher": 0.3}
    assert grid[-1] == {"rho": {"a": 0.5, "b": 0.5, "c": 0.75}, "lambda_teacher": 0.3}
    assert len(guided_grid(("a", "b"), rhos=(0.75,), weights=(1.0,), weight=0.5)) == 3
    with pytest.raises(ValueError, match="weight 0 is the 'pgm' arm"):
        guided_grid(("a",), weights=(0.0,))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        guided_grid(("a",), rhos=(1.0,))


def test_the_arm_is_registered_with_ume_as_its_first_stage():
    spec = get_arm("pgm-guided")
    assert spec.first_stage == "ume"
    assert spec.block and set(spec.tasks) == {"classification", "regression"}


@pytest.mark.parametrize("dataset", ["tiny", "tiny-reg"])
def test_the_arm_distils_its_first_stage_and_records_the_chosen_setting(
    registry,  # noqa: F811
    tmp_path,
    dataset,
):
    SEEN.clear()
    spec = guided_arm("test.guided", first_stage="test.uni")
    registry.register_plugin(
        _plugin(
            ArmSpec("test.uni", "uni-modal first stage", make=UniOnly, block=True),
            ArmSpec(
                spec.name,
                spec.description,
                make=lambda ctx: Spying(ctx, "test.uni"),
                kind=spec.kind,
                settings=spec.settings,
                block=True,
                first_stage="test.uni",
            ),
        ),
        "guided",
    )
    registry.refresh()
    suite = _suite(
        registry,
        dataset=dataset,
        arms=["pgm", "test.guided"],
        arm_options={"test.guided": {"rhos": [0.75], "weights": [0.5]}},
    )
    runner = Runner(suite, tmp_path, registry=registry, quiet=True)
    cells = [c for c in runner.plan() if c.fold == 0]
    runner.run(cells)
    records = {r["arm"]["name"]: r for r in _records(tmp_path / "t").values()}
    guided, plain = records["test.guided"], records["pgm"]
    assert guided["arm"]["settings_tried"] == 3  # one weight, then a and b at 0.75
    chosen = guided["setting"]
    assert guided["arm"]["rho"] == chosen["rho"]
    assert guided["arm"]["lambda_teacher"] == chosen["lambda_teacher"] == 0.5
    assert guided["arm"]["teacher"] == "test.uni"
    assert guided["block_config"]["lambda_teacher"] == 0.5
    assert guided["block_config"]["rho"] == chosen["rho"]
    assert guided["cell_settings"]["first_stage"]["arm"] == "test.uni"
    # the teacher maps (one Linear per modality: uni width -> the site's width) are in the block
    assert guided["parameters"]["block"] > plain["parameters"]["block"]
    # every training step passed the teacher's site features of both modalities
    assert SEEN and all(set(s) == {"a", "b"} for s in SEEN)
