"""Arms of the method study: PgM, its ablations, and the controls, as block factories.

Every arm except ``baseline``, ``mslr`` and ``only.<m>`` is a module built from the same
``PgMConfig`` and injected by the same engine at the same sites
(``pgm_plugins.inject(..., block_factory=...)``), with the same zero-init gate (identity at
initialisation), optimizer and schedule; that is what makes them fair controls.

- ``pgm``: the default block.
- ``capacity``: a residual MLP over all modalities (pooled codes concatenated -> hidden ->
  per-modality change, ``h + beta * change``), its hidden width solved so that its parameter
  count is within 5 % of the PgM block's.
- ``interaction``: PgM's own interaction layer without the partition (``partitioner='none'``:
  both learners see the whole code), so a win can be credited to partitioning.
- ``uni_heads``: uni-modal heads alone on each site (Du et al. 2023's uni-modal training): a
  linear head per modality trained on the label, the host's features left unchanged.
- ``pgm-*``: ablations, each a configuration that removes exactly what it names.
- ``baseline``: the host alone, with its own losses and recipe.
- ``mslr``: per-modality learning rates alone (in the spirit of MSLR, Yao & Mihalcea 2022): the
  host, no block; each modality's encoder part at ``base_lr * s_m``, the scales chosen per cell on
  validation from a coordinate grid (:func:`lr_scale_grid`).
- ``only.<m>``: the late-fusion host on modality ``m`` alone (no block), once per data set.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pgm_plugins.bench.arm import ArmContext, ArmRun, ArmSpec
from pgm_plugins.block import PgMBlock, PgMConfig, PgMOutput
from pgm_plugins.block.mlp import masked_mean
from pgm_plugins.block.optim import make_param_groups
from pgm_plugins.errors import ConfigError, did_you_mean

__all__ = [
    "ABLATIONS",
    "ARMS",
    "BlockArm",
    "CapacityControl",
    "MslrArm",
    "UniHeadsControl",
    "block_factory",
    "builtin_arms",
    "count_parameters",
    "get_arm",
    "lr_scale_grid",
]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _Control(nn.Module):
    """What the injection engine needs from a block, for modules that are not PgM."""

    config: PgMConfig

    def check_inputs(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> None:
        PgMBlock.check_inputs(self, inputs, masks)  # type: ignore[arg-type]

    def named_param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"control": list(self.parameters())}

    def param_groups(self, base_lr: float, **defaults: Any) -> list[dict[str, Any]]:
        return make_param_groups(self.named_param_groups(), base_lr, None, **defaults)

    def betas(self) -> dict[str, float]:
        return {}

    def align_loss(self, codes: Mapping[str, Tensor], masks: Any = None) -> Tensor:
        ref = next(iter(codes.values()))
        return ref.new_zeros(())


class CapacityControl(_Control):
    """Residual MLP over all modalities: ``h_m + beta_m * Up_m(GELU(Down([pool h_n]_n)))``."""

    def __init__(self, config: PgMConfig, hidden: int) -> None:
        super().__init__()
        self.config = config
        total = sum(config.modalities.values())
        self.down = nn.Linear(total, hidden)
        self.up = nn.ModuleDict({m: nn.Linear(hidden, d) for m, d in config.modalities.items()})
        self.beta = nn.ParameterDict({m: nn.Parameter(torch.zeros(())) for m in config.modalities})

    @staticmethod
    def size(config: PgMConfig, hidden: int) -> int:
        total = sum(config.modalities.values())
        return total * hidden + hidden + hidden * total + total + len(config.modalities)

    @classmethod
    def matching(cls, config: PgMConfig, target: int) -> CapacityControl:
        """The control whose parameter count is nearest ``target`` (one hidden unit costs
        ``2 * sum(d_m) + 1`` parameters)."""
        total, n = sum(config.modalities.values()), len(config.modalities)
        hidden = max(1, round((target - total - n) / (2 * total + 1)))
        return cls(config, hidden)

    def forward(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> PgMOutput:
        self.check_inputs(inputs, masks)
        masks = masks or {}
        cfg = self.config
        ref = next(iter(inputs.values()))
        pooled = []
        for m, d in cfg.modalities.items():
            h = inputs.get(m)
            if h is None:
                pooled.append(ref.new_zeros(ref.shape[0], d))
            else:
                pooled.append(masked_mean(h if h.dim() == 3 else h.unsqueeze(1), masks.get(m)))
        hidden = torch.nn.functional.gelu(self.down(torch.cat(pooled, dim=-1)))
        outputs = {}
        for m in cfg.modalities:
            if m not in inputs:
                continue
            h = inputs[m]
            change = self.up[m](hidden)
            if h.dim() == 3:
                change = change.unsqueeze(1)
            out = h + self.beta[m] * change
            if h.dim() == 3 and masks.get(m) is not None:
                out = torch.where(masks[m].unsqueeze(-1), out, h)
            outputs[m] = out
        return PgMOutput(outputs, {}, {}, {}, {}, False, cfg)

    def betas(self) -> dict[str, float]:
        return {m: float(b.detach()) for m, b in self.beta.items()}


class UniHeadsControl(_Control):
    """A linear head per modality on the pooled site features; outputs unchanged. With
    ``detach`` (a subclass's class attribute) the heads read detached features: they train, the
    encoders get nothing from them."""

    detach = False

    def _pooled(self, h: Tensor, mask: Tensor | None) -> Tensor:
        pooled = masked_mean(h if h.dim() == 3 else h.unsqueeze(1), mask)
        return pooled.detach() if self.detach else pooled

    def __init__(self, config: PgMConfig) -> None:
        super().__init__()
        self.config = config
        self.heads = nn.ModuleDict(
            {m: nn.Linear(d, config.out_dim) for m, d in config.modalities.items()}
        )

    def forward(
        self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> PgMOutput:
        self.check_inputs(inputs, masks)
        masks = masks or {}
        logits = {
            f"uni.{m}": self.heads[m](self._pooled(h, masks.get(m))) for m, h in inputs.items()
        }
        return PgMOutput(dict(inputs), {}, {}, {}, logits, False, self.config)


#: ablation name -> the config change that removes exactly what it names
ABLATIONS: dict[str, dict[str, Any]] = {
    "pgm-no-uni": {"uni_learner": False},
    "pgm-no-paired": {"paired_learner": False},
    "pgm-no-decoder": {"decoder": False},
    "pgm-one-lr": {"separate_lrs": False},
    "pgm-gradscale": {"grad_scale": {"*.uni": 0.5}},
    "pgm-no-heads": {"lambda_uni": 0.0, "lambda_paired": 0.0},
    "pgm-split": {"partitioner": "split"},
    "pgm-project": {"partitioner": "project"},
    "pgm-gate": {"partitioner": "gate"},
    "pgm-attention": {"paired": "attention"},
    "pgm-shared": {"paired": "shared"},
    "pgm-replace": {"mix": "replace"},
}


class BlockArm(ArmRun):
    """An arm that injects a module built from the cell's ``PgMConfig`` with ``changes``: the
    PgM block, or the control ``kind`` names (``capacity``, ``uni_heads``)."""

    def __init__(
        self, ctx: ArmContext, kind: str = "pgm", changes: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(ctx)
        self.kind, self.changes = kind, dict(changes or {})

    def block_factory(self) -> Callable[[PgMConfig], nn.Module] | None:
        return block_factory(self.kind, self.changes)


def block_factory(kind: str, changes: Mapping[str, Any]) -> Callable[[PgMConfig], nn.Module]:
    """``factory(config) -> module`` of a block arm: PgM (with ``changes``), the same-size
    capacity control or uni-modal heads."""

    def build(config: PgMConfig) -> nn.Module:
        cfg = config.replace(**changes) if changes else config
        if kind == "capacity":
            return CapacityControl.matching(cfg, count_parameters(PgMBlock(config)))
        if kind == "uni_heads":
            return UniHeadsControl(cfg)
        return PgMBlock(cfg)

    return build


class MslrArm(ArmRun):
    """Per-modality learning rates: each setting's ``lr_scale`` scales the host's parts."""

    def lr_scale(self) -> dict[str, float] | None:
        scale = self.ctx.setting.get("lr_scale")
        return dict(scale) if scale else None


def _mslr_settings(ctx: ArmContext) -> list[dict[str, Any]]:
    """The ``mslr`` grid from ``[arm_options.mslr] scales`` (its only option, checked)."""
    for key in ctx.options:
        if key != "scales":
            raise ConfigError(
                f"[arm_options.mslr] has no option {key!r}; valid: 'scales' (the learning-rate "
                f"scales tried per modality, default {list(MSLR_SCALES)})."
                + did_you_mean(key, ["scales"])
            )
    scales = ctx.options.get("scales", MSLR_SCALES)
    if not (
        isinstance(scales, list | tuple)
        and scales
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in scales)
    ):
        raise ConfigError(
            f"[arm_options.mslr] scales must be a non-empty list of positive numbers; got "
            f"{scales!r}."
        )
    return lr_scale_grid(ctx.modalities, tuple(float(v) for v in scales))


def _block_spec(name: str, description: str, kind: str = "pgm", **changes: Any) -> ArmSpec:
    return ArmSpec(
        name,
        description,
        make=functools.partial(BlockArm, kind=kind, changes=changes),
        kind=kind,
        changes=changes,
        block=True,
    )


def builtin_arms() -> list[ArmSpec]:
    """The arms this package registers (through its bench plugin, as any plugin would)."""
    return [
        ArmSpec("baseline", "the host alone (its own losses and recipe)", kind="host"),
        ArmSpec(
            "mslr",
            "the host alone with per-modality learning rates (MSLR-style), scales chosen on valid",
            make=MslrArm,
            kind="mslr",
            paper="Yao & Mihalcea, Modality-specific learning rates, NAACL 2022",
            settings=_mslr_settings,
        ),
        _block_spec("pgm", "host + PgM block (defaults)"),
        _block_spec(
            "capacity",
            "host + residual MLP over all modalities, same size (+-5 %)",
            kind="capacity",
        ),
        _block_spec(
            "interaction",
            "host + PgM's interaction layer without the partition (partitioner='none')",
            partitioner="none",
        ),
        _block_spec("uni_heads", "host + uni-modal heads alone", kind="uni_heads"),
        *(
            _block_spec(name, f"PgM ablation {change}", **change)
            for name, change in ABLATIONS.items()
        ),
    ]


#: the built-in arms by name (the registry holds these and every plugin's)
ARMS: dict[str, ArmSpec] = {spec.name: spec for spec in builtin_arms()}


#: the learning-rate scales the ``mslr`` arm tries per modality (others at 1)
MSLR_SCALES: tuple[float, ...] = (0.25, 1.0, 4.0)


def lr_scale_grid(
    modalities: tuple[str, ...] | list[str], scales: tuple[float, ...] = MSLR_SCALES
) -> list[dict[str, Any]]:
    """Settings of the ``mslr`` arm: every modality at 1, then one modality at a time at each
    other scale (a coordinate grid: ``1 + M * (len(scales) - 1)`` settings)."""
    ones = {m: 1.0 for m in modalities}
    grid = [{"lr_scale": dict(ones)}]
    for m in modalities:
        for s in scales:
            if s != 1.0:
                grid.append({"lr_scale": {**ones, m: float(s)}})
    return grid


#: the single-modality arms are ``only.<modality>``; they run once per data set, under
SINGLE_PREFIX = "only."
#: this host (the runner plans them there, the report shows them in every host's table)
SINGLE_HOST = "late_fusion"


def single_arm(modality: str) -> ArmSpec:
    """``only.<modality>``: the late-fusion host on one modality, no block."""
    return ArmSpec(
        f"{SINGLE_PREFIX}{modality}",
        f"late-fusion host on {modality} alone",
        kind="single",
        modality=modality,
    )


def get_arm(name: str, registry: Any = None) -> ArmSpec:
    """The arm registered as ``name`` (``only.<modality>`` for any modality); an unknown name
    is an error naming the registered arms and the nearest one."""
    from pgm_plugins.errors import UnknownNameError, choices_text, did_you_mean
    from pgm_plugins.registry import get_registry

    if name.startswith(SINGLE_PREFIX) and len(name) > len(SINGLE_PREFIX):
        return single_arm(name[len(SINGLE_PREFIX) :])
    arms = (registry or get_registry()).arms
    names = [*arms.names(), f"{SINGLE_PREFIX}<modality>"]
    if name not in arms.names():
        raise UnknownNameError(
            f"unknown arm {name!r}; valid: {choices_text(names, limit=len(names))}."
            + did_you_mean(name, names)
        )
    return arms.entry(name).value
