"""Records of older layouts, read as :class:`~pgm_plugins.bench.record.CellRecord`: the first
method study's and the retrieval benchmark's first records.

The method study (``docs/method.md``) ran before the runner existed, through a loop of its own that
has since been removed: a late-fusion host (``LateFusionHost``, hidden 32) with AdamW over the
handle's groups, gradient clipping 1.0, early stopping on the **validation loss** (not the primary
metric), and on MOSI a grid of 4 settings (lr x dropout) chosen per arm on the mean validation
accuracy over all of the arm's cells. Its files (``benchmarks/results/method/<study>/``) have a
layout of their own: ``key`` = ``{data, arm, variant, seed}`` (synthetic, design) or
``{data, arm, setting, seed, fold}`` (MOSI, one file per grid setting).

:func:`convert` turns one study folder into cell records, so the report reads them like any
suite: one record per (arm, seed, fold); for the MOSI grid the record of the setting the study
chose (``setting``), with every candidate of the cell and its validation accuracy in
``selection`` and the rule in ``train.selected``. What has no place in the schema (probes, the
decoder's betas, notes) is kept under ``extra``. Nothing here writes files: the committed
records stay as they were written. Their ``upgraded_from`` is 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pgm_plugins.bench.record import SCHEMA_VERSION, Problem

__all__ = [
    "convert",
    "convert_retrieval",
    "is_method_study",
    "is_retrieval_layout",
    "retrieval_record",
]

#: data names of the study -> (registered data set, protocol)
DATA = {
    "synthetic": ("synthetic", "default"),
    "synthetic-swap": ("synthetic", "swap"),
    "mosi-clean": ("mosi-utterance", "clean"),
}
#: the synthetic generator's split sizes (``pgm_plugins.bench.data.synthetic.SPEC``)
SYNTHETIC_SIZES = {"train": 1000, "valid": 1000, "test": 2000}
#: metric names of the study -> the runner's names
METRICS = {"f1_weighted": "wf1", "f1_macro": "macro_f1"}
#: arm names of the study -> the runner's (its ``host`` arm is the runner's ``baseline``)
ARMS = {"host": "baseline"}
#: fields kept under ``extra``
EXTRA = ("probe", "betas", "note")
HOST_DESCRIPTION = (
    "LateFusionHost (per-modality Linear-GELU-Linear-GELU encoders, hidden 32, concat, MLP "
    "head); the method study's recipe: AdamW, clip 1.0, early stopping on validation loss"
)


def _env(raw: dict[str, Any]) -> dict[str, Any]:
    """The ``env`` field from a first-layout record's versions, git and machine fields."""
    return {k: raw.get(k) or {} for k in ("versions", "git", "machine")}


def _training(
    raw: dict[str, Any], curves: dict[str, Any], stopped: str, early_stopping: str
) -> dict[str, Any]:
    """The training fields of a first-layout record (curves, epochs, recipe, sizes of the
    model, wall time); ``early_stopping`` says what the loop stopped on."""
    spec = raw.get("train_spec") or raw["spec"]
    return {
        "curves": curves,
        "best_epoch": int(raw["best_epoch"]),
        "epochs_run": int(raw["epochs_run"]),
        "epoch_cap": int(spec["max_epochs"]),
        "patience": int(spec["patience"]),
        "train": {
            **spec,
            "optimizer": "AdamW",
            "early_stopping": early_stopping,
            "threads": (raw.get("machine") or {}).get("threads"),
            "stopped": stopped,
        },
        "parameters": {k: int(v) for k, v in raw["parameters"].items()},
        "time": {"wall_s": float(raw["wall_s"])},
    }


def is_method_study(record: Any) -> bool:
    """Is ``record`` a file of the method study's layout?"""
    key = record.get("key") if isinstance(record, dict) else None
    return isinstance(key, dict) and "data" in key and "dataset" not in key


def _metrics(split: dict[str, float]) -> dict[str, float]:
    return {METRICS.get(k, k): float(v) for k, v in split.items()}


def _arm_kind(name: str) -> str:
    from pgm_plugins.bench.arms import ARMS

    if name in ARMS:
        return ARMS[name].kind
    return "pgm"  # the design candidates: PgM blocks with changed switches


def _cell(raw: dict[str, Any], suite: str) -> dict[str, Any]:
    """One study file as a cell record (``setting`` / ``selection`` filled in by the caller)."""
    key = raw["key"]
    arm = ARMS.get(key["arm"], key["arm"])
    dataset, protocol = DATA[key["data"]]
    spec = raw["train_spec"]
    epochs_run = int(raw["epochs_run"])
    curves = dict(raw["curves"])
    if "valid_acc" in curves:
        curves["valid_primary"] = curves.pop("valid_acc")
    digest = raw.get("data_digest")
    if isinstance(digest, dict):  # synthetic: one digest per split
        digest = ",".join(f"{k}:{v}" for k, v in sorted(digest.items()))
    stopped = "epoch cap" if epochs_run >= int(spec["max_epochs"]) else "patience"
    return {
        "schema_version": SCHEMA_VERSION,
        "upgraded_from": 0,
        "key": {
            "suite": suite,
            "dataset": dataset,
            "protocol": protocol,
            "host": "late_fusion",
            "arm": arm,
            "fold": int(key.get("fold", 0)),
            "seed": int(key["seed"]),
        },
        "status": "done",
        "stopped": stopped,
        "independent_seeds": dataset == "synthetic",
        "suite": {"name": suite, "file": None, "digest": None},
        "data": {
            "name": dataset,
            "protocol": protocol,
            "task": "classification",
            "digest": digest,
            "description": f"the method study's {key['data']} data",
        },
        "host": {"name": "late_fusion", "description": HOST_DESCRIPTION, "changes": []},
        "arm": {
            "name": arm,
            "kind": _arm_kind(arm),
            "description": raw.get("arm_description", ""),
            "changes": raw.get("arm_changes") or {},
        },
        "setting": {},
        "selection": [],
        "primary": "acc",
        "higher_is_better": True,
        "metrics": {s: _metrics(raw["metrics"][s]) for s in ("valid", "test")},
        "sizes": dict(raw.get("sizes") or SYNTHETIC_SIZES),
        **_training(raw, curves, stopped, "validation loss"),
        "shares": raw.get("shares") or None,
        "parts": None,
        "truth": {"true_uni_share": raw["truth"]} if raw.get("truth") else None,
        "env": _env(raw),
        "block_config": raw.get("block_config"),
        "extra": {k: raw[k] for k in EXTRA if k in raw},
    }


def _check(raw: Any) -> str | None:
    if not is_method_study(raw):
        return "not a record of the method study's layout"
    key = raw["key"]
    if key["data"] not in DATA:
        return f"unknown study data {key['data']!r}; valid: {', '.join(DATA)}"
    for field in ("train_spec", "metrics", "curves", "parameters", "best_epoch", "epochs_run"):
        if field not in raw:
            return f"missing field {field!r} (partial record)"
    if not all(isinstance(raw["metrics"].get(s), dict) for s in ("valid", "test")):
        return "'metrics' must hold 'valid' and 'test' objects"
    if "acc" not in raw["metrics"]["test"]:
        return "metrics.test lacks 'acc'"
    return None


def _choose(cells: list[tuple[Path, dict[str, Any]]]) -> dict[str, int]:
    """The study's rule: per arm, the grid setting with the best mean validation accuracy
    over all of that arm's cells (ties: the lower index)."""
    scores: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _, raw in cells:
        key = raw["key"]
        scores[key["arm"]][int(key["setting"])].append(float(raw["metrics"]["valid"]["acc"]))
    chosen = {}
    for arm, by_setting in scores.items():
        means = {g: sum(v) / len(v) for g, v in by_setting.items()}
        chosen[arm] = max(sorted(means), key=lambda g: means[g])
    return chosen


def convert(
    files: Iterable[tuple[Path, dict[str, Any]]], suite: str
) -> tuple[list[tuple[Path, dict[str, Any]]], list[Problem]]:
    """Cell records of one study folder's parsed files (``(path, raw)``, sorted by path)."""
    good: list[tuple[Path, dict[str, Any]]] = []
    problems: list[Problem] = []
    grid: list[tuple[Path, dict[str, Any]]] = []
    for path, raw in files:
        reason = _check(raw)
        if reason is not None:
            problems.append(Problem(path, reason))
        elif "setting" in raw["key"]:
            grid.append((path, raw))
        else:
            good.append((path, _cell(raw, suite)))
    if grid:
        chosen = _choose(grid)
        by_cell: dict[tuple[str, int, int], list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
        for path, raw in grid:
            k = raw["key"]
            by_cell[(k["arm"], int(k["seed"]), int(k["fold"]))].append((path, raw))
        for (arm, _, _), members in sorted(by_cell.items()):
            pick = chosen[arm]
            found = [(p, r) for p, r in members if int(r["key"]["setting"]) == pick]
            if not found:
                problems.append(Problem(members[0][0], f"the chosen setting {pick} is missing"))
                continue
            path, raw = found[0]
            record = _cell(raw, suite)
            record["setting"] = dict(raw.get("setting") or {})
            record["selection"] = [
                {"setting": r.get("setting"), "valid": float(r["metrics"]["valid"]["acc"])}
                for _, r in sorted(members, key=lambda t: int(t[1]["key"]["setting"]))
            ]
            record["train"]["selected"] = (
                "per arm, the setting with the best mean validation acc over the arm's cells"
            )
            good.append((path, record))
    good.sort(key=lambda t: str(t[0]))
    return good, problems


# ----------------------------------------------------------------- the retrieval benchmark
#: the av-digits speakers in the order that numbers the retrieval folds (the test speaker)
RETRIEVAL_SPEAKERS = ("george", "jackson", "nicolas", "yweweler", "lucas", "theo")
#: clips per split of a retrieval cell (500 per speaker: four train, one valid, one test)
RETRIEVAL_SIZES = {"train": 2000, "valid": 500, "test": 500}
RETRIEVAL_KINDS = {"baseline": "host", "pgm": "pgm", "capacity": "capacity"}


def is_retrieval_layout(record: Any) -> bool:
    """Is ``record`` a file of the retrieval benchmark's first layout (key ``{arm, seed}``)?"""
    key = record.get("key") if isinstance(record, dict) else None
    return isinstance(key, dict) and set(key) == {"arm", "seed"} and "spec" in record


def retrieval_record(raw: dict[str, Any], suite: str) -> dict[str, Any]:
    """The cell record of one retrieval cell, from what the retrieval benchmark measured
    (``raw``: ``key`` ``{arm, seed}``, ``spec``, nested ``metrics`` per direction, ``curves``,
    ``parameters``, ``best_epoch``, ``epochs_run``, ``wall_s``, ``held_out``, versions / git /
    machine). The benchmark writes new records through this; old files are read through it."""
    from pgm_plugins.bench.metrics import retrieval_scores

    spec = raw["spec"]
    held = raw.get("held_out") or (
        suite.removeprefix("loso-") if suite.startswith("loso-") else "theo"
    )
    epochs_run = int(raw["epochs_run"])
    stopped = "epoch cap" if epochs_run >= int(spec["max_epochs"]) else "patience"
    curves = dict(raw["curves"])
    curves["valid_primary"] = curves.pop("valid_map", [])
    arm = raw["key"]["arm"]
    limit = int(raw.get("limit") or 0)
    sizes = dict(RETRIEVAL_SIZES)
    if limit:
        sizes["train"] = limit
    return {
        "schema_version": SCHEMA_VERSION,
        "key": {
            "suite": suite,
            "dataset": "av-digits",
            "protocol": "retrieval",
            "host": "dual_encoder",
            "arm": arm,
            "fold": RETRIEVAL_SPEAKERS.index(held),
            "seed": int(raw["key"]["seed"]),
        },
        "status": "done",
        "stopped": stopped,
        "independent_seeds": False,
        "suite": {"name": suite, "file": None, "digest": None},
        "data": {
            "name": "av-digits",
            "protocol": "retrieval",
            "task": "retrieval",
            "digest": raw.get("data_digest"),
            "description": f"av-digits cross-modal retrieval, test speaker {held}",
            "test_speaker": held,
        },
        "host": {
            "name": "dual_encoder",
            "description": f"{spec['image_tower']} image tower + conv audio tower, "
            f"{spec['dim']}-d embeddings, class-aware InfoNCE",
            "changes": [],
        },
        "arm": {
            "name": arm,
            "kind": RETRIEVAL_KINDS.get(arm, "pgm"),
            "description": "",
            "changes": {},
        },
        "setting": {},
        "selection": [],
        "primary": "map",
        "higher_is_better": True,
        "metrics": {s: retrieval_scores(raw["metrics"][s]) for s in ("valid", "test")},
        "sizes": sizes,
        **_training(raw, curves, stopped, "validation map"),
        "shares": None,
        "parts": None,
        "truth": None,
        "env": _env(raw),
        "block_config": raw.get("block_config"),
        "extra": {k: raw[k] for k in ("betas", "limit") if k in raw},
    }


def convert_retrieval(
    files: Iterable[tuple[Path, dict[str, Any]]], suite: str
) -> tuple[list[tuple[Path, dict[str, Any]]], list[Problem]]:
    """Cell records of one folder of the retrieval benchmark's first layout."""
    good: list[tuple[Path, dict[str, Any]]] = []
    problems: list[Problem] = []
    for path, raw in files:
        missing = [
            f
            for f in ("spec", "metrics", "curves", "parameters", "best_epoch", "epochs_run")
            if f not in raw
        ]
        if missing:
            problems.append(Problem(path, f"missing field(s) {', '.join(map(repr, missing))}"))
            continue
        try:
            good.append((path, {**retrieval_record(raw, suite), "upgraded_from": 0}))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem(path, f"not a retrieval record ({exc!r})"))
    return good, problems
