"""``PgMConfig``: every switch of the PgM-style block, validated, JSON round-trip with the version.

The block is reconstructed from the abstract of arXiv 2507.11661 (PgM, ACM MM 2025); the choices the
abstract leaves open are switches here (``docs/design.md``, "Switches"), so that benchmarks
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

PARTITIONERS = ("gate", "split", "project", "none")
PAIRED_KINDS = ("bilinear", "attention", "shared")
MIXES = ("gate", "replace")
TASKS = ("regression", "classification", "none")
REGRESSION_LOSSES = ("l1", "mse")
ALIGN_KINDS = ("infonce", "cmd")
#: the parts of a modality's block that get their own learning-rate factor
PART_NAMES = ("uni", "paired", "partitioner", "decoder")
#: the branches from a modality's representation into the block that carry a gradient scale
BRANCH_NAMES = ("uni", "paired")
_BOOL_FIELDS = ("uni_learner", "paired_learner", "decoder", "separate_lrs")
#: ``check_finite`` values besides the booleans
FINITE_MODES = ("deferred",)
#: the keyword arguments of ``torch.compile`` that ``compile`` may give
COMPILE_OPTIONS = ("backend", "mode", "fullgraph", "dynamic", "options")
_WIDTH_FIELDS = ("bottleneck", "uni_width", "paired_width", "decoder_width")


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _check_choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(
            f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}."
            + did_you_mean(str(value), valid)
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json_able(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def auto_bottleneck(width: int) -> int:
    """Default code width for a site of ``width``: a quarter of it, within [8, 64] and <= width.

    Keeps the default block a bottleneck (a 768-wide site gets a 64-wide code, not 768x768).
    """
    return min(width, max(8, min(64, round(width / 4))))


@dataclass
class PgMConfig:
    """Configuration of one PgM block.

    ``modalities`` maps each modality name to the width ``d_m`` of its representation at the
    insertion point, in the order the block sees them. Defaults were chosen on validation data
    (``docs/method.md``); loss weights are ours, not the paper's (its tables were not available).
    """

    modalities: dict[str, int] = _help("modality name -> width d_m of its representation")
    partitioner: str = _help(
        "modal partitioner, on the code z = h Q (Q: d_m x r with orthonormal columns): "
        "'project' (default: learned Q, the first round(rho*r) code channels are uni; the "
        "share is set per task, e.g. selected on validation), 'gate' (each code channel learns "
        "to be uni or paired: a hard 0/1 gate trained straight-through, uni share learned "
        "inside rho_bounds), 'split' (Q = identity: the first round(rho*d) dims of h are uni) "
        "or 'none' (no partition: both learners see all of z; the control arm)",
        "project",
    )
    rho: float | dict[str, float] = _help(
        "uni-modal share in [0, 1]: one float for all modalities, or a mapping per modality "
        "(modalities it leaves out get 0.5). Exact for 'split'/'project' (round(rho*r) "
        "channels); 'gate' starts at round(rho*r)/r clamped to rho_bounds",
        0.5,
    )
    rho_bounds: tuple[float, float] = _help(
        "bounds [lo, hi] the 'gate' partitioner's learned uni share is kept inside, exactly "
        "(the channels with the largest gate logits are uni when the count leaves them)",
        (0.125, 0.875),
    )
    tau: float = _help("temperature of the 'gate' partitioner's sigmoid (straight-through)", 1.0)
    bottleneck: int | None = _help(
        "width r of the partitioned code per modality; None sizes it to the site "
        "(a quarter of d_m, within [8, 64]); 'split' ignores it (r = d_m)",
        None,
    )
    paired: str = _help(
        "paired-modal learner: 'bilinear' (each modality's paired tokens attend to the other "
        "modalities' real tokens and are multiplied elementwise with what they read: a "
        "factorised bilinear interaction, for vectors and sequences), 'attention' (the same "
        "attention, concatenated and projected instead of multiplied: no interaction for "
        "[B, d] inputs; an ablation) or 'shared' (one weight-shared network plus a "
        "cross-modal alignment loss; runs on one modality at a time, for independent mode)",
        "bilinear",
    )
    uni_width: int | None = _help(
        "hidden width of each uni-modal learner; None: twice the site-sized code width", None
    )
    paired_width: int | None = _help(
        "common width w of the paired learner's projections; None: the smallest site-sized "
        "code width across the modalities",
        None,
    )
    heads: int = _help("attention heads of the 'bilinear' and 'attention' learners", 1)
    decoder_width: int | None = _help(
        "hidden width of each uni-paired decoder; None: twice the site-sized code width "
        "(for 'split', twice a quarter of d_m within [8, 64], not 2 d_m)",
        None,
    )
    dropout: float = _help("dropout inside the learners and decoders", 0.0)
    mix: str = _help(
        "how the host receives the rebuilt representation h_hat = h + dz Q^T: 'gate' "
        "(h + beta*(h_hat - h), beta a learnable scalar from 0: the identity at "
        "initialisation) or 'replace' (h_hat itself, the paper's literal reading)",
        "gate",
    )
    task: str = _help(
        "label kind the heads train on: 'regression', 'classification' or 'none' "
        "(no heads; contrastive pre-training)",
        "regression",
    )
    num_classes: int | None = _help("number of classes when task='classification'", None)
    regression_loss: str = _help("loss for regression heads: 'mse' or 'l1'", "mse")
    align: str = _help(
        "alignment loss of the 'shared' paired learner: 'infonce' or 'cmd'", "infonce"
    )
    align_temperature: float = _help("InfoNCE temperature", 0.1)
    lambda_uni: float = _help(
        "weight of the uni-modal heads' task losses (their mean over the configured modalities)",
        0.5,
    )
    lambda_paired: float = _help("weight of the paired head's task loss", 0.5)
    lambda_rec: float = _help(
        "weight of the partition's reconstruction loss ||h - h Q Q^T||^2 / d (mean over "
        "modalities): keeps the learned code's subspace informative; it never penalises the "
        "change the host receives",
        0.1,
    )
    lambda_align: float = _help("weight of the 'shared' learner's alignment loss", 0.1)
    lambda_teacher: float = _help(
        "weight of the teacher distillation (PgM guided by uni-modal training): a linear map "
        "from each modality's pooled uni part predicts that modality's uni-modal teacher "
        "features, standardised per batch (mean over modalities); only the uni part and its "
        "map get its gradient. 0 (default) builds no map; > 0 needs the teacher's features, "
        "aux_loss(targets, teacher={modality: features})",
        0.0,
    )
    teacher_widths: dict[str, int] = _help(
        "width of each modality's teacher features (modalities it leaves out: d_m, as when the "
        "teacher is a uni-modal model of the same host at the same sites)",
        factory=dict,
    )
    uni_learner: bool = _help("ablation switch: False removes the uni-modal learners", True)
    paired_learner: bool = _help("ablation switch: False removes the paired-modal learner", True)
    decoder: bool = _help(
        "ablation switch: False removes the decoders (the host then receives "
        "h unchanged; the learners act only through their heads)",
        True,
    )
    separate_lrs: bool = _help(
        "ablation switch: False gives every optimizer group the base learning rate (lr_mult "
        "ignored); gradient scaling is a separate switch (grad_scale)",
        True,
    )
    lr_mult: dict[str, float] = _help(
        "learning-rate multiplier per optimizer group name or fnmatch pattern "
        "('text.uni', '*.paired', '*.partitioner', 'audio.decoder', 'paired.shared'); the "
        "default lets the gate logits and Q move 10x faster (chosen on validation, "
        "docs/method.md). A mapping you give replaces the default",
        factory=lambda: {"*.partitioner": 10.0},
    )
    grad_scale: dict[str, float] = _help(
        "gradient-scale factor kappa per '<modality>.<branch>' (branch 'uni' or 'paired', or a "
        "pattern such as '*.paired') on every path from h_m through the block into the host",
        factory=dict,
    )
    check_finite: bool | str = _help(
        "raise a clear error naming the modality when an input holds NaN or inf (skipped "
        "while torch.compile traces): True checks every forward at once (one host sync per "
        "forward); 'deferred' does the same on CPU and, on a GPU, checks without a sync: the "
        "error is raised at a later forward, at most a few behind (or at "
        "PgMBlock.raise_if_nonfinite()); False never checks",
        True,
    )
    compile: bool | dict[str, Any] = _help(
        "run the block's computation (not its input checks) through torch.compile: False "
        "(eager), True (torch.compile's defaults) or a mapping of its keyword arguments "
        "(backend, mode, fullgraph, dynamic, options; e.g. {'mode': 'reduce-overhead'} for "
        "CUDA graphs where shapes are static). Compiled lazily at the first forward; a "
        "forward already inside torch.compile runs the block as it is",
        False,
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
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(
                    f"{name}={value!r} ({type(value).__name__}) must be True or False; strings "
                    "and numbers are not read as booleans."
                )
        self._validate_finite_and_compile()
        _check_choice("partitioner", self.partitioner, PARTITIONERS)
        _check_choice("paired", self.paired, PAIRED_KINDS)
        _check_choice("mix", self.mix, MIXES)
        _check_choice("task", self.task, TASKS)
        _check_choice("regression_loss", self.regression_loss, REGRESSION_LOSSES)
        _check_choice("align", self.align, ALIGN_KINDS)
        if self.task == "classification":
            if (
                isinstance(self.num_classes, bool)
                or not isinstance(self.num_classes, int)
                or self.num_classes < 2
            ):
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
        for name in _WIDTH_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive int or None (auto).")
        if isinstance(self.heads, bool) or not isinstance(self.heads, int) or self.heads < 1:
            raise ConfigError(f"heads={self.heads!r} must be a positive int.")
        if self.paired in ("bilinear", "attention"):
            for m in self.modalities:
                w = self.paired_dim(m)
                if w % self.heads:
                    raise ConfigError(
                        f"paired_width={w} (modality {m!r}) must be divisible by "
                        f"heads={self.heads} for the {self.paired!r} learner."
                    )
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r} must be a number in [0, 1).")
        for name in ("tau", "align_temperature"):
            value = getattr(self, name)
            if not (_is_number(value) and value > 0):
                raise ConfigError(f"{name}={value!r} must be a finite number > 0.")
        for f in dataclasses.fields(self):
            if f.name.startswith("lambda_"):
                value = getattr(self, f.name)
                if not _is_number(value) or value < 0:
                    raise ConfigError(f"{f.name}={value!r} must be a finite number >= 0.")
        self._validate_bounds()
        self._validate_teacher_widths()
        self.lr_mult = self._validate_factors("lr_mult", self.lr_mult, self.group_names())
        self.grad_scale = self._validate_factors(
            "grad_scale", self.grad_scale, self.branch_names(), allow_zero=True
        )
        if self.partitioner in ("split", "project"):
            for m in self.modalities:  # raises on a part of zero width
                self.part_widths(m)

    def _validate_finite_and_compile(self) -> None:
        if not isinstance(self.check_finite, bool) and self.check_finite not in FINITE_MODES:
            raise ConfigError(
                f"check_finite={self.check_finite!r} ({type(self.check_finite).__name__}) must be "
                f"True or False, or {choices_text(FINITE_MODES)}; strings other than those and "
                "numbers are not read as booleans."
                + did_you_mean(str(self.check_finite), FINITE_MODES)
            )
        options = self.compile
        if isinstance(options, bool):
            return
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"compile={options!r} ({type(options).__name__}) must be True, False or a mapping "
                f"of torch.compile keyword arguments ({choices_text(COMPILE_OPTIONS)}), e.g. "
                "{'mode': 'reduce-overhead'}."
            )
        self.compile = dict(options)
        for key, value in self.compile.items():
            if key not in COMPILE_OPTIONS:
                raise ConfigError(
                    f"compile option {key!r} is not one PgMConfig passes to torch.compile; "
                    f"valid: {choices_text(COMPILE_OPTIONS)}."
                    + did_you_mean(str(key), COMPILE_OPTIONS)
                )
            kinds = {
                "backend": (str,),
                "mode": (str, type(None)),
                "fullgraph": (bool,),
                "dynamic": (bool, type(None)),
                "options": (dict,),
            }[key]
            if not isinstance(value, kinds) or (key == "options" and not _json_able(value)):
                want = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
                note = " of JSON values (the config is saved as JSON)" if key == "options" else ""
                raise ConfigError(f"compile[{key!r}]={value!r} must be {want}{note}.")

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
            if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"rho for {key!r} is {value!r}; it must be a number in [0, 1].")

    def _validate_teacher_widths(self) -> None:
        if not isinstance(self.teacher_widths, Mapping):
            raise ConfigError(
                f"teacher_widths={self.teacher_widths!r} must be a mapping modality -> width, "
                "e.g. {'text': 768}."
            )
        self.teacher_widths = dict(self.teacher_widths)
        for name, width in self.teacher_widths.items():
            if name not in self.modalities:
                raise ConfigError(
                    f"teacher_widths names modality {name!r}, which is not configured; "
                    f"configured: {choices_text(self.modalities)}."
                    + did_you_mean(str(name), self.modalities)
                )
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ConfigError(
                    f"teacher_widths[{name!r}]={width!r} must be a positive int (the width of "
                    "that modality's teacher features)."
                )

    def _validate_bounds(self) -> None:
        b = self.rho_bounds
        ok = (
            isinstance(b, list | tuple)
            and len(b) == 2
            and all(_is_number(v) for v in b)
            and 0.0 <= b[0] <= b[1] <= 1.0
        )
        if not ok:
            raise ConfigError(
                f"rho_bounds={b!r} must be two numbers 0 <= lo <= hi <= 1, e.g. (0.125, 0.875)."
            )
        self.rho_bounds = (float(b[0]), float(b[1]))

    @staticmethod
    def _validate_factors(
        name: str, table: Any, valid: list[str], allow_zero: bool = False
    ) -> dict[str, float]:
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"{name} must be a mapping of names or patterns to numbers, got {table!r}."
            )
        for pattern, value in table.items():
            if not isinstance(pattern, str) or not fnmatch.filter(valid, pattern):
                raise ConfigError(
                    f"{name} key {pattern!r} matches no name; valid names: {choices_text(valid)}."
                    + did_you_mean(str(pattern), valid)
                )
            ok = _is_number(value) and (value >= 0 if allow_zero else value > 0)
            if not ok:
                bound = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"{name}[{pattern!r}]={value!r} must be a finite number {bound}.")
        return {str(k): float(v) for k, v in table.items()}

    # ------------------------------------------------------------------ derived values
    def rho_for(self, modality: str) -> float:
        """Uni-modal share of ``modality`` (exact for split/project, the start for gate)."""
        if isinstance(self.rho, Mapping):
            return float(self.rho.get(modality, 0.5))
        return float(self.rho)

    def code_width(self, modality: str) -> int:
        """Width r of the code ``z = h Q`` that is partitioned (``d_m`` for 'split')."""
        d = self.modalities[modality]
        if self.partitioner == "split":
            return d
        return min(d, self.bottleneck) if self.bottleneck is not None else auto_bottleneck(d)

    def part_widths(self, modality: str) -> tuple[int, int]:
        """Widths ``(uni, paired)`` of the parts; 'gate' and 'none' keep the code's width
        (the gate's parts are masks of the same code: disjoint channels, zero elsewhere)."""
        r = self.code_width(modality)
        if self.partitioner in ("gate", "none"):
            return r, r
        k = round(self.rho_for(modality) * r)
        if k < 1 or k > r - 1:
            raise ConfigError(
                f"partitioner={self.partitioner!r} with rho={self.rho_for(modality)} leaves a part "
                f"of width 0 for modality {modality!r} (code width {r}); use rho in "
                f"[{1 / r:.3g}, {1 - 1 / r:.3g}] or partitioner='gate'."
            )
        return k, r - k

    def _size(self, modality: str) -> int:
        # the site-sized width the learners are scaled by (the code width, except for 'split',
        # whose code is the whole of h: its learners stay as small as the other partitioners')
        d = self.modalities[modality]
        if self.bottleneck is not None:
            return min(d, self.bottleneck)
        return auto_bottleneck(d)

    def teacher_width(self, modality: str) -> int:
        """Width of ``modality``'s teacher features (``teacher_widths``, else ``d_m``)."""
        return self.teacher_widths.get(modality, self.modalities[modality])

    def uni_hidden(self, modality: str) -> int:
        return self.uni_width if self.uni_width is not None else 2 * self._size(modality)

    def paired_dim(self, modality: str | None = None) -> int:
        """Common width w of the paired learner (the smallest site-sized width when auto)."""
        if self.paired_width is not None:
            return self.paired_width
        return min(self._size(m) for m in self.modalities)

    def decoder_hidden(self, modality: str) -> int:
        if self.decoder_width is not None:
            return self.decoder_width
        return 2 * self._size(modality)

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
        return [*names, "paired.shared"]

    def branch_names(self) -> list[str]:
        """Names ``<modality>.<branch>`` of the branches that carry a gradient-scale factor."""
        return [f"{m}.{p}" for m in self.modalities for p in BRANCH_NAMES]

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

    def kappa(self, modality: str, branch: str) -> float:
        """Gradient-scale factor on ``modality``'s ``branch`` (independent of separate_lrs)."""
        return self._lookup(self.grad_scale, f"{modality}.{branch}")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rho_bounds"] = list(self.rho_bounds)
        data["pgm_plugins_version"] = __version__
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PgMConfig:
        """Build from ``to_dict()`` output; unknown keys warn and are dropped."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"a PgM config must be a mapping of field names to values, got "
                f"{type(data).__name__} {data!r:.80}; valid fields: {', '.join(cls.help())}."
            )
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
    def from_fields(cls, fields: Any, **overrides: Any) -> PgMConfig:
        """Build from user-given fields (a mapping), with clear errors for a non-mapping or an
        unknown field (nearest match named). ``overrides`` (e.g. ``modalities``) win."""
        if not isinstance(fields, Mapping):
            raise ConfigError(
                f"a PgM config must be a mapping of field names to values (or a PgMConfig), got "
                f"{type(fields).__name__} {fields!r:.80}; valid fields: {', '.join(cls.help())}."
            )
        data = dict(fields) | overrides
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError(
                f"unknown PgMConfig field {unknown[0]!r}; valid fields: {', '.join(known)}."
                + did_you_mean(str(unknown[0]), known)
            )
        return cls(**data)

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
