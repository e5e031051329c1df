"""The result record of one benchmark cell: its schema, its checks, and the one reader.

A cell is one (suite, data set, protocol, host, arm, fold, seed). The runner writes one JSON
record per cell (:class:`CellRecord`, through :class:`~pgm_plugins.bench.results.ResultStore`);
the report, the tests and ``docs/results.md`` read them through :func:`read_record` /
:func:`read_records`, which upgrade older records to :data:`SCHEMA_VERSION` and say why a file
cannot be used. This module is the only place that knows the layout.

Versions (``schema_version``):

- **1**: records written before the schema had a version (no ``schema_version`` field). Same
  fields as 2. Their ``cell_digest``, where present, covers the data digest and the suite's
  settings but not the resolved block defaults, the arm's changes or the code version, so a changed
  default could not be told from the record; such records are read, and the report flags them.
- **2**: ``schema_version``; ``cell_settings`` (and so ``cell_digest``) also covers the block
  defaults of the installed code, the arm's kind and changes, and the code version
  (``digest_scheme: 2`` inside ``cell_settings``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from pgm_plugins.errors import choices_text, did_you_mean

__all__ = [
    "DIGEST_SCHEME",
    "KEY_FIELDS",
    "SCHEMA_VERSION",
    "CellKey",
    "CellRecord",
    "NewerRecordError",
    "Problem",
    "check_record",
    "provenance",
    "provenance_flags",
    "read_record",
    "read_records",
    "upgrade",
]

#: the version of :class:`CellRecord` this code writes
SCHEMA_VERSION = 2
#: the version of what ``cell_settings`` covers (see the module docstring)
DIGEST_SCHEME = 2
#: what a cell's data set asks of it (retrieval: the av-digits retrieval benchmark)
TASKS = ("classification", "regression", "retrieval")
KEY_FIELDS = ("suite", "dataset", "protocol", "host", "arm", "fold", "seed")


class CellKey(TypedDict):
    """What identifies a cell; also its file name."""

    suite: str  # the suite's name (its results folder)
    dataset: str  # the registered data set
    protocol: str  # the data set's protocol (its folds / features)
    host: str  # the registered bench host
    arm: str  # the arm (baseline, pgm, a control, an ablation, only.<modality>)
    fold: int  # index into the data set's folds for this seed
    seed: int  # seeds torch, numpy and the data set's per-seed splits


class CellRecord(TypedDict, total=False):
    """One cell's result, as written to ``<results>/<suite>/<key>.json``.

    Every field below is present in a record the runner writes (``total=False`` only because
    the runner adds ``block_config`` for arms with a block, and ``key`` when storing);
    ``docs/results.md`` explains each for readers of the files.
    """

    schema_version: int  # SCHEMA_VERSION when written (absent: 1)
    key: CellKey  # the cell
    status: str  # "done": the cell ran to its end (finished, or stopped as non-finite)
    stopped: str  # "patience", "epoch cap" or "non-finite" (failed: never scored)
    cell_digest: str  # SHA-256 of cell_settings (canonical JSON)
    cell_settings: dict[str, Any]  # everything besides the key that decides what is computed
    train_digest: str  # SHA-256 of the sorted training rows: which cells share training data
    independent_seeds: bool  # each seed draws fresh independent data (synthetic)
    suite: dict[str, Any]  # name, file, digest of the suite's TOML
    data: dict[str, Any]  # the data set's summary: name, protocol, task, digest, shapes, ...
    host: dict[str, Any]  # name, description, changes made to the published model
    arm: dict[str, Any]  # name, kind, description, changes
    setting: dict[str, Any]  # the arm's setting chosen on validation ({} without a grid)
    selection: list[dict[str, Any]]  # every candidate setting with its validation score
    primary: str  # the data set's primary metric
    higher_is_better: bool  # direction of the primary metric
    metrics: dict[str, dict[str, float]]  # "valid" and "test": {metric: value} at the best epoch
    sizes: dict[str, int]  # train / valid / test row counts
    curves: dict[str, list[float]]  # per epoch: train_loss, valid_loss, valid_primary
    best_epoch: int  # the epoch restored for scoring (0-based)
    epochs_run: int  # epochs trained before stopping
    epoch_cap: int  # the suite's epoch cap
    patience: int  # the suite's early-stopping patience
    train: dict[str, Any]  # the recipe: optimizer, lr, batch, clip, threads, lr_scale, device,
    # precision, stopped
    parameters: dict[str, int]  # host and block (or control) parameter counts
    time: dict[str, Any]  # wall_s, train_s, steps, step_ms (measured under whatever load)
    shares: dict[str, float] | None  # PgM arms: uni-modal share per modality on test data
    parts: dict[str, Any] | None  # PgM arms: pooled uni / paired parts of up to 200 test rows
    truth: dict[str, Any] | None  # synthetic data: the generator's ground truth
    # measured on test at scoring time (contributions.py): parts, shapley, probes, ...; optional
    # (older records lack it; null for retrieval and junction sites)
    contributions: dict[str, Any] | None
    env: dict[str, Any]  # package versions, git commit and dirty flag, machine, threads
    block_config: dict[str, Any]  # the block's or control's resolved config (arms with a block)
    upgraded_from: int  # set by the reader: the version the file was written with (0: legacy)
    extra: dict[str, Any]  # legacy layouts only: fields with no place here (probes, betas, notes)


#: top-level fields every usable record has (after :func:`upgrade`)
REQUIRED = (
    "key",
    "status",
    "suite",
    "data",
    "host",
    "arm",
    "setting",
    "selection",
    "primary",
    "higher_is_better",
    "metrics",
    "sizes",
    "curves",
    "best_epoch",
    "epochs_run",
    "epoch_cap",
    "patience",
    "train",
    "parameters",
    "time",
    "shares",
    "parts",
    "truth",
    "env",
)


@dataclass(frozen=True)
class Problem:
    """A result file left out, and why."""

    path: Path
    reason: str

    def text(self) -> str:
        return f"{self.path}: {self.reason}"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def file_name(key: Mapping[str, Any]) -> str:
    """The file name of a cell's record (``ResultStore`` lays files out by it)."""
    from pgm_plugins.bench.results import key_file_name

    return key_file_name(key)


class NewerRecordError(ValueError):
    """A record written by a newer pgm-plugins: this version cannot read it, and must not run
    over it (``path``, ``version``)."""

    def __init__(self, path: Path, version: int) -> None:
        super().__init__(f"{path.name} (schema version {version})")
        self.path, self.version = path, version


def newer_version(record: Any) -> int | None:
    """The ``schema_version`` of ``record`` when a newer pgm-plugins wrote it, else None."""
    version = record.get("schema_version") if isinstance(record, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return version
    return None


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as :data:`SCHEMA_VERSION` (a new dict; ``upgraded_from`` says from which).

    Raises ``ValueError`` for a version newer than this code knows (a newer pgm-plugins wrote it).
    """
    version = record.get("schema_version", 1)
    if not _is_int(version) or version < 1:
        raise ValueError(f"'schema_version' is {version!r}, not a positive integer")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"written with schema version {version}, newer than this pgm-plugins reads "
            f"({SCHEMA_VERSION}); upgrade pgm-plugins to read it"
        )
    out = dict(record)
    if version == 1:  # same fields; the version was implicit
        out["schema_version"] = SCHEMA_VERSION
        out["upgraded_from"] = 1
    return out


def _check_key(key: Any, path: Path, suite: str | None) -> str | None:
    if not isinstance(key, dict):
        return f"'key' is {type(key).__name__}, not an object"
    lacking = [k for k in KEY_FIELDS if k not in key]
    extra = [k for k in key if k not in KEY_FIELDS]
    if lacking or extra:
        return (
            f"wrong key {key}: "
            + (f"lacks {', '.join(map(repr, lacking))}" if lacking else "")
            + ("; " if lacking and extra else "")
            + (f"unknown {', '.join(map(repr, extra))}" if extra else "")
            + f" (a key has {', '.join(KEY_FIELDS)})"
        )
    for k in KEY_FIELDS:
        want_int = k in ("fold", "seed")
        if (want_int and not _is_int(key[k])) or (not want_int and not isinstance(key[k], str)):
            return f"wrong key: {k}={key[k]!r} is not {'an integer' if want_int else 'a string'}"
    if suite is not None and key["suite"] != suite:
        return f"wrong key: suite {key['suite']!r}, but the file lies under suite {suite!r}"
    expected = file_name(key)
    if path.name != expected:
        return f"wrong key: the file name does not match its key {key} (expected {expected})"
    return None


def _check_names(record: dict[str, Any]) -> str | None:
    key = record["key"]
    for name, sub in (("data", "dataset"), ("host", "host"), ("arm", "arm")):
        part = record[name]
        if not isinstance(part, dict) or "name" not in part:
            return f"'{name}' is not an object with a 'name'"
        if part["name"] != key[sub]:
            return f"'{name}.name' is {part['name']!r}, the key says {key[sub]!r}"
    if record["data"].get("protocol") != key["protocol"]:
        return f"'data.protocol' is {record['data'].get('protocol')!r}, key {key['protocol']!r}"
    if record["data"].get("task") not in TASKS:
        return f"'data.task' is {record['data'].get('task')!r}; valid: {', '.join(TASKS)}"
    return None


def _check_metrics(record: dict[str, Any]) -> str | None:
    primary = record["primary"]
    if not isinstance(primary, str):
        return f"'primary' is {primary!r}, not a metric name"
    if not isinstance(record["higher_is_better"], bool):
        return f"'higher_is_better' is {record['higher_is_better']!r}, not true / false"
    metrics = record["metrics"]
    if not isinstance(metrics, dict) or not all(
        isinstance(metrics.get(s), dict) for s in ("valid", "test")
    ):
        return "'metrics' must hold 'valid' and 'test' objects"
    for split in ("valid", "test"):
        bad = [m for m, v in metrics[split].items() if not _is_number(v)]
        if bad:
            return f"metrics.{split}: {', '.join(bad)} not a number"
    test = metrics["test"]
    if primary not in test:
        return (
            f"metrics.test lacks the primary metric {primary!r}; it has "
            f"{choices_text(test)}." + did_you_mean(primary, test)
        )
    if not math.isfinite(test[primary]) and record.get("stopped") != "non-finite":
        return f"metrics.test.{primary} is {test[primary]} (not finite)"
    return None


def _check_counts(record: dict[str, Any]) -> str | None:
    sizes = record["sizes"]
    if not isinstance(sizes, dict) or not all(_is_int(sizes.get(s)) for s in ("train", "test")):
        return f"'sizes' must give integer 'train' and 'test' counts, got {sizes!r}"
    if sizes["train"] <= 0 or sizes["test"] <= 0:
        return f"'sizes' has an empty split: {sizes}"
    params = record["parameters"]
    if not isinstance(params, dict) or not all(_is_int(params.get(s)) for s in ("host", "block")):
        return f"'parameters' must give integer 'host' and 'block' counts, got {params!r}"
    tm = record["time"]
    if not isinstance(tm, dict) or not _is_number(tm.get("wall_s")):
        return f"'time' must give a number 'wall_s', got {tm!r}"
    if "step_ms" in tm and tm["step_ms"] is not None and not _is_number(tm["step_ms"]):
        return f"'time.step_ms' is {tm['step_ms']!r}, not a number"
    return None


def _check_block_fields(record: dict[str, Any]) -> str | None:
    shares = record["shares"]
    if shares is not None and (
        not isinstance(shares, dict) or not all(_is_number(v) for v in shares.values())
    ):
        return f"'shares' must be null or modality -> number, got {shares!r}"
    for name in ("parts", "truth"):
        if record[name] is not None and not isinstance(record[name], dict):
            return f"'{name}' must be null or an object"
    return _check_contributions(record.get("contributions"))


def _check_contributions(got: Any) -> str | None:
    """``contributions`` (optional): null, or ``parts`` (null or modality -> {uni, paired}),
    ``shapley`` (null or modality -> number), ``probes`` (modality -> number) and, optional,
    ``betas`` (null or modality -> number)."""
    if got is None:
        return None
    if not isinstance(got, dict) or not {"parts", "shapley", "probes"} <= set(got):
        return f"'contributions' must be null or an object with parts, shapley, probes; got {got!r}"

    def numbers(v: Any) -> bool:
        return isinstance(v, dict) and all(_is_number(x) for x in v.values())

    parts = got["parts"]
    if parts is not None and not (isinstance(parts, dict) and all(map(numbers, parts.values()))):
        return f"'contributions.parts' must be null or modality -> {{uni, paired}}, got {parts!r}"
    if got["shapley"] is not None and not numbers(got["shapley"]):
        return f"'contributions.shapley' must be null or modality -> number, got {got['shapley']!r}"
    if not numbers(got["probes"]):
        return f"'contributions.probes' must be modality -> number, got {got['probes']!r}"
    if got.get("betas") is not None and not numbers(got["betas"]):
        return f"'contributions.betas' must be null or modality -> number, got {got['betas']!r}"
    return None


def check_record(record: Any, path: Path, suite: str | None = None) -> str | None:
    """Why ``record`` (as read from ``path``, under suite ``suite`` when given) cannot be used,
    or None. ``record`` is checked as written: older versions are accepted (see :func:`upgrade`)."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    try:
        record = upgrade(record)
    except ValueError as exc:
        return str(exc)
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing field(s) {', '.join(map(repr, missing))} (partial record)"
    reason = _check_key(record["key"], path, suite)
    if reason is not None:
        return reason
    if record["status"] != "done":
        return f"status {record['status']!r}, not 'done' (unfinished cell)"
    for check in (_check_names, _check_metrics, _check_counts, _check_block_fields):
        reason = check(record)
        if reason is not None:
            return reason
    return None


def _parse(path: Path) -> tuple[Any, str | None]:
    """The JSON of ``path``, or ``(None, why)``."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except json.JSONDecodeError as exc:
        return None, f"corrupt JSON ({exc}); truncated or partly written?"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable ({exc})"


def _accept(raw: Any, path: Path, suite: str | None) -> tuple[dict[str, Any] | None, str | None]:
    reason = check_record(raw, path, suite)
    return (None, reason) if reason is not None else (upgrade(raw), None)


def read_record(path: Path, suite: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` upgraded to :data:`SCHEMA_VERSION`, or ``(None, why)``."""
    raw, why = _parse(path)
    return (None, why) if why is not None else _accept(raw, path, suite)


def read_records(
    folder: Path, suite: str | None = None
) -> tuple[list[tuple[Path, dict[str, Any]]], list[Problem]]:
    """Every usable record of ``folder`` (sorted by file name, upgraded) and the files left out.

    Files of the first method study's layout and of the retrieval benchmark's first layout
    (:mod:`pgm_plugins.bench.legacy`) are converted as a folder (the study chose each arm's
    setting over all of its cells)."""
    from pgm_plugins.bench import legacy

    good: list[tuple[Path, dict[str, Any]]] = []
    problems: list[Problem] = []
    older: dict[Any, list[tuple[Path, dict[str, Any]]]] = {
        legacy.convert: [],
        legacy.convert_retrieval: [],
    }
    for path in sorted(folder.glob("*.json")):
        raw, why = _parse(path)
        if legacy.is_method_study(raw):
            older[legacy.convert].append((path, raw))
        elif legacy.is_retrieval_layout(raw):
            older[legacy.convert_retrieval].append((path, raw))
        else:
            record, why = (None, why) if why is not None else _accept(raw, path, suite)
            if record is None:
                problems.append(Problem(path, str(why)))
            else:
                good.append((path, record))
    for convert, files in older.items():
        if files:
            converted, bad = convert(files, suite or folder.name)
            good += converted
            problems += bad
    return sorted(good, key=lambda t: str(t[0])), problems


def provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """Where a record came from, for the report's checks: ``commit``, ``dirty``,
    ``digest`` (the cell digest or None), ``scheme`` (what the digest covers: 0 none, 1, 2),
    ``device`` (``cpu``, ``cuda:N (name)``; records before devices trained on the CPU),
    ``precision`` (``fp32``, ``bf16``, ``fp16``), ``cpu`` (the CPU a CPU cell trained on, as
    :func:`cpu_label` writes it; None on another device or where the record does not say)."""
    git = (record.get("env") or {}).get("git") or {}
    device = str((record.get("train") or {}).get("device") or "cpu")
    machine = (record.get("env") or {}).get("machine")
    cpu = machine.get("cpu") if isinstance(machine, dict) else None
    settings = record.get("cell_settings")
    scheme = 0
    if record.get("cell_digest"):
        scheme = settings.get("digest_scheme", 1) if isinstance(settings, dict) else 1
    return {
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "digest": record.get("cell_digest"),
        "scheme": scheme,
        "device": device,
        "precision": str((record.get("train") or {}).get("precision") or "fp32"),
        "cpu": cpu_label(cpu) if device == "cpu" and isinstance(cpu, dict) else None,
    }


def cpu_label(cpu: Mapping[str, Any]) -> str:
    """``env.machine.cpu``'s vector units as one short text: torch's capability and the listed
    extensions the CPU has (what decides the kernels; the model name is left out, so two
    models with the same units are one kind)."""
    isa = "+".join(str(f) for f in cpu.get("isa") or []) or "none of the listed extensions"
    return f"{cpu.get('capability') or '?'}: {isa}"


def provenance_flags(provs: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a comparison's records do not share, each as a short phrase (empty: nothing to
    flag). ``provs``: :func:`provenance` of every record the comparison pairs. Flags records
    from more than one commit, from a working tree with uncommitted changes, without a cell
    digest, with a digest of an older scheme (what it covers: the module docstring), or trained
    on more than one kind of device (the same cell differs in the last bits between devices),
    in more than one precision (arms of one comparison run with different ``--precision``) or on
    CPUs with different vector units (the same cell differs between them too), and CPU cells
    that do not name their CPU where others do (older records: the mix cannot be ruled out)."""
    n = len(provs)
    out = []
    commits = Counter(str(p["commit"])[:10] if p.get("commit") else "unknown" for p in provs)
    if len(commits) > 1:
        out.append(f"{len(commits)} commits ({_tally(commits, by_count=True)})")
    dirty = sum(1 for p in provs if p.get("dirty"))
    if dirty:
        out.append(f"{dirty}/{n} from a tree with uncommitted changes")
    none = sum(1 for p in provs if not p.get("scheme"))
    if none:
        out.append(f"{none}/{n} predate the cell digest")
    older = sum(1 for p in provs if p.get("scheme") and p["scheme"] < DIGEST_SCHEME)
    if older:
        out.append(f"{older}/{n} with an older digest scheme")
    devices = Counter(str(p.get("device") or "cpu").split(":")[0].split(" ")[0] for p in provs)
    if len(devices) > 1:
        out.append(f"devices {_tally(devices)}")
    precisions = Counter(str(p.get("precision") or "fp32") for p in provs)
    if len(precisions) > 1:
        out.append(f"precisions {_tally(precisions)}")
    cpus = Counter(sorted(str(p["cpu"]) for p in provs if p.get("cpu")))  # ties: by name
    if len(cpus) > 1:
        out.append(f"{len(cpus)} kinds of CPU ({_tally(cpus, by_count=True)})")
    unnamed = devices["cpu"] - cpus.total()
    if cpus and unnamed:
        out.append(f"{unnamed}/{devices['cpu']} CPU cells do not name their CPU")
    return out


def _tally(counts: Counter[str], by_count: bool = False) -> str:
    """``"a x3, b x1"``: by name, or most first (ties in the order first counted)."""
    order = sorted(counts.items(), key=(lambda t: -t[1]) if by_count else None)
    return ", ".join(f"{name} x{k}" for name, k in order)
