"""``PgMConfig``: every switch of the PgM-style block, validated, JSON round-trip with the version.

The block is reconstructed from the abstract of arXiv 2507.11661 (PgM, ACM MM 2025); the choices the
abstract leaves open are switches here (see ``../shared/design/PGM_METHOD.md``), so that benchmarks
decide between readings and every result file records which reading produced it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgm_plugins._version import __version__
from pgm_plugins.errors import ConfigError, choices_text, did_you_mean

__all__ = ["PART_NAMES", "PgMConfig"]

PARTITIONERS = ("gate", "split", "project")
PAIRED_KINDS = ("attention", "shared")
MIXES = ("gate", "replace")
TASKS = ("regression", "classification", "none")
REGRESSION_LOSSES = ("l1", "mse")
ALIGN_KINDS = ("infonce", "cmd")
#: the two parts of a modality's representation that get their own learning-rate factor
PART_NAMES = ("uni", "paired")


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _check_choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(
            f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}."
            + did_you_mean(str(value), valid)
        )


@dataclass
class PgMConfig:
    """Configuration of one PgM block.

    ``modalities`` maps each modality name to the width ``d_m`` of its representation at the
    insertion point, in the order the block sees them. Everything else has a default taken from
    ``PGM_METHOD.md``; loss weights are ours, not the paper's (its tables were not available).
    """

    modalities: dict[str, int] = _help("modality name -> width d_m of its representation")
    partitioner: str = _help(
        "modal partitioner: 'gate' (learned soft gate), 'split' (fixed first "
        "round(rho*d) dims are uni-modal), 'project' (two projections)",
        "gate",
    )
    rho: float | dict[str, float] = _help(
        "target uni-modal share in [0, 1]: one float for all modalities, or a mapping per "
        "modality (modalities it leaves out get 0.5)",
        0.5,
    )
    tau: float = _help("temperature of the gate partitioner's sigmoid", 1.0)
    paired: str = _help(
        "paired-modal learner: 'attention' (cross-modal attention over ordered "
        "pairs, needs modalities together) or 'shared' (weight-shared network plus "
        "an alignment loss; works on one modality at a time)",
        "attention",
    )
    uni_width: int = _help("width of each uni-modal learner's hidden layer and output", 64)
    paired_width: int = _help("common width the paired parts are projected to", 64)
    heads: int = _help("attention heads of the 'attention' paired learner", 4)
    decoder_width: int = _help("hidden width of each uni-paired decoder", 128)
    dropout: float = _help("dropout inside the learners and decoders", 0.0)
    mix: str = _help(
        "how the host receives the rebuilt representation: 'gate' "
        "(h + beta*(h_hat - h), beta learnable from 0: identity at initialisation) or "
        "'replace' (h_hat)",
        "gate",
    )
    task: str = _help(
        "label kind the heads train on: 'regression', 'classification' or 'none' "
        "(no heads; contrastive pre-training)",
        "regression",
    )
    num_classes: int | None = _help("number of classes when task='classification'", None)
    regression_loss: str = _help("loss for regression heads: 'l1' or 'mse'", "l1")
    align: str = _help(
        "alignment loss of the 'shared' paired learner: 'infonce' or 'cmd'", "infonce"
    )
    align_temperature: float = _help("InfoNCE temperature", 0.1)
    lambda_uni: float = _help("weight of the uni-modal heads' task losses", 0.5)
    lambda_paired: float = _help("weight of the paired head's task loss", 0.5)
    lambda_rec: float = _help("weight of the decoders' reconstruction losses", 0.1)
    lambda_rho: float = _help("weight of the gate's uni-share loss (rho_hat - rho)^2", 0.1)
    lambda_orth: float = _help("weight of the 'project' partitioner's orthogonality loss", 0.1)
    lambda_align: float = _help("weight of the 'shared' learner's alignment loss", 0.1)
    uni_learner: bool = _help("ablation switch: False removes the uni-modal learners", True)
    paired_learner: bool = _help("ablation switch: False removes the paired-modal learner", True)
    decoder: bool = _help(
        "ablation switch: False removes the decoders (the host then receives "
        "h unchanged; the learners act only through their heads)",
        True,
    )
    separate_lrs: bool = _help(
        "ablation switch: False gives every group the base learning rate "
        "and every gradient-scale factor 1",
        True,
    )
    lr_mult: dict[str, float] = _help(
        "learning-rate multiplier per optimizer group name or fnmatch pattern "
        "('text.uni', '*.paired', 'partitioner', 'decoder', 'paired.shared')",
        factory=dict,
    )
    grad_scale: dict[str, float] = _help(
        "gradient-scale factor kappa per '<modality>.<part>' (or pattern such as '*.paired') on "
        "the branches leaving h_m into the host",
        factory=dict,
    )
    check_finite: bool = _help(
        "raise a clear error naming the modality when an input holds NaN or inf", True
    )

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        if not isinstance(self.modalities, Mapping) or not self.modalities:
            raise ConfigError(
                f"modalities={self.modalities!r} must be a non-empty mapping name -> width, "
                "e.g. {'text': 128, 'audio': 32}."
            )
        self.modalities = dict(self.modalities)
        for name, width in self.modalities.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(
                    f"modality name {name!r} must be a Python identifier "
                    "(letters, digits, underscores)."
                )
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ConfigError(f"width of modality {name!r} is {width!r}; give a positive int.")
        _check_choice("partitioner", self.partitioner, PARTITIONERS)
        _check_choice("paired", self.paired, PAIRED_KINDS)
        _check_choice("mix", self.mix, MIXES)
        _check_choice("task", self.task, TASKS)
        _check_choice("regression_loss", self.regression_loss, REGRESSION_LOSSES)
        _check_choice("align", self.align, ALIGN_KINDS)
        if self.task == "classification":
            if not isinstance(self.num_classes, int) or self.num_classes < 2:
                raise ConfigError(
                    f"task='classification' needs num_classes >= 2; "
                    f"got num_classes={self.num_classes!r}."
                )
        elif self.num_classes is not None:
            raise ConfigError(
                f"num_classes={self.num_classes!r} is only valid with "
                f"task='classification' (task={self.task!r})."
            )
        self._validate_rho()
        for name in ("uni_width", "paired_width", "heads", "decoder_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive int.")
        if self.paired == "attention" and self.paired_width % self.heads:
            raise ConfigError(
                f"paired_width={self.paired_width} must be divisible by "
                f"heads={self.heads} for the attention learner."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r} must be in [0, 1).")
        for name in ("tau", "align_temperature"):
            if not (isinstance(getattr(self, name), int | float) and getattr(self, name) > 0):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a positive number.")
        for f in dataclasses.fields(self):
            if f.name.startswith("lambda_"):
                value = getattr(self, f.name)
                if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                    raise ConfigError(f"{f.name}={value!r} must be a finite number >= 0.")
        self.lr_mult = self._validate_factors("lr_mult", self.lr_mult, self.group_names())
        self.grad_scale = self._validate_factors(
            "grad_scale", self.grad_scale, self.branch_names(), allow_zero=True
        )
        if self.partitioner in ("split", "project"):
            for m in self.modalities:  # raises on a part of zero width
                self.part_widths(m)

    def _validate_rho(self) -> None:
        values = self.rho.items() if isinstance(self.rho, Mapping) else [("rho", self.rho)]
        if isinstance(self.rho, Mapping):
            self.rho = dict(self.rho)
            unknown = [k for k in self.rho if k not in self.modalities]
            if unknown:
                raise ConfigError(
                    f"rho names modalities {unknown} that are not configured; configured: "
                    f"{choices_text(self.modalities)}." + did_you_mean(unknown[0], self.modalities)
                )
        for key, value in values:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0.0 <= float(value) <= 1.0
            ):
                raise ConfigError(f"rho for {key!r} is {value!r}; it must be a number in [0, 1].")

    @staticmethod
    def _validate_factors(
        name: str, table: Any, valid: list[str], allow_zero: bool = False
    ) -> dict[str, float]:
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{name} must be a mapping of names or patterns to numbers, got {table!r}."
            )
        for pattern, value in table.items():
            if not fnmatch.filter(valid, pattern):
                raise ConfigError(
                    f"{name} key {pattern!r} matches no name; valid names: {choices_text(valid)}."
                    + did_you_mean(pattern, valid)
                )
            ok = (
                isinstance(value, int | float)
                and math.isfinite(value)
                and (value >= 0 if allow_zero else value > 0)
            )
            if not ok:
                bound = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"{name}[{pattern!r}]={value!r} must be a finite number {bound}.")
        return {str(k): float(v) for k, v in table.items()}

    # ------------------------------------------------------------------ derived values
    def rho_for(self, modality: str) -> float:
        """Target uni-modal share of ``modality``."""
        if isinstance(self.rho, Mapping):
            return float(self.rho.get(modality, 0.5))
        return float(self.rho)

    def part_widths(self, modality: str) -> tuple[int, int]:
        """Widths ``(uni, paired)`` of the partitioner's output for ``modality``."""
        d = self.modalities[modality]
        if self.partitioner == "gate":
            return d, d
        k = round(self.rho_for(modality) * d)
        if k < 1 or k > d - 1:
            raise ConfigError(
                f"partitioner={self.partitioner!r} with rho={self.rho_for(modality)} leaves a part "
                f"of width 0 for modality {modality!r} (d={d}); use rho in "
                f"[{1 / d:.3g}, {1 - 1 / d:.3g}] or partitioner='gate'."
            )
        return k, d - k

    @property
    def has_labels(self) -> bool:
        return self.task != "none"

    @property
    def out_dim(self) -> int:
        """Output width of the task heads (1 for regression)."""
        return self.num_classes if self.task == "classification" and self.num_classes else 1

    def group_names(self) -> list[str]:
        """Names of every optimizer group this configuration can produce."""
        names = [f"{m}.{p}" for m in self.modalities for p in PART_NAMES]
        return [*names, "paired.shared", "partitioner", "decoder"]

    def branch_names(self) -> list[str]:
        """Names ``<modality>.<part>`` of the branches that carry a gradient-scale factor."""
        return [f"{m}.{p}" for m in self.modalities for p in PART_NAMES]

    @staticmethod
    def _lookup(table: Mapping[str, float], name: str) -> float:
        # the last matching key wins, so a specific key after a pattern overrides it
        value = 1.0
        for pattern, factor in table.items():
            if fnmatch.fnmatchcase(name, pattern):
                value = factor
        return value

    def lr_multiplier(self, group: str) -> float:
        return self._lookup(self.lr_mult, group) if self.separate_lrs else 1.0

    def kappa(self, modality: str, part: str) -> float:
        return self._lookup(self.grad_scale, f"{modality}.{part}") if self.separate_lrs else 1.0

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["pgm_plugins_version"] = __version__
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PgMConfig:
        """Build from ``to_dict()`` output; unknown keys warn and are dropped."""
        data = dict(data)
        data.pop("pgm_plugins_version", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(
                f"PgMConfig ignores unknown keys {unknown} (written by another version "
                f"of pgm_plugins?).",
                UserWarning,
                stacklevel=2,
            )
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> PgMConfig:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically (a temporary file renamed into place)."""
        from pgm_plugins._io import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PgMConfig:
        return cls.from_json(Path(path).read_text())

    def replace(self, **changes: Any) -> PgMConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
