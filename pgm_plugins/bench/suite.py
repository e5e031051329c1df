"""Benchmark suites as TOML files (``benchmarks/suites/*.toml``), validated before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from pgm_plugins.bench.arms import ARMS
from pgm_plugins.errors import choices_text, did_you_mean

SUITES_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"
DATASETS = {"synthetic": ("default",), "mosi-utterance": ("clean",)}
HOSTS = ("late_fusion",)
_KEYS = {"dataset", "protocol", "hosts", "arms", "seeds", "folds", "epochs", "patience"}


class SuiteError(ValueError):
    """A suite file that cannot run: says what was given, what is valid, the nearest match."""


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: str
    protocol: str
    hosts: tuple[str, ...]
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: int
    epochs: int
    patience: int


def _check(kind: str, given: str, valid: Any, where: str) -> None:
    if given not in valid:
        raise SuiteError(
            f"{where}: unknown {kind} {given!r}; valid: {choices_text(valid)}."
            + did_you_mean(given, valid)
        )


def parse_suite(name: str, data: dict[str, Any], where: str = "suite") -> Suite:
    for key in data:
        _check("key", key, sorted(_KEYS), where)
    for key in ("dataset", "hosts", "arms", "seeds"):
        if key not in data:
            raise SuiteError(f"{where}: missing key {key!r}; a suite needs {sorted(_KEYS)}.")
    dataset = str(data["dataset"])
    _check("data set", dataset, sorted(DATASETS), where)
    protocol = str(data.get("protocol", DATASETS[dataset][0]))
    _check(f"protocol of {dataset}", protocol, DATASETS[dataset], where)
    for host in data["hosts"]:
        _check("host", host, HOSTS, where)
    for arm in data["arms"]:
        _check("arm", arm, sorted(ARMS), where)
    seeds = data["seeds"]
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise SuiteError(
            f"{where}: seeds must be a non-empty list of integers >= 0, got {seeds!r}."
        )
    ints = {k: data.get(k, d) for k, d in (("folds", 1), ("epochs", 20), ("patience", 5))}
    for key, value in ints.items():
        if not isinstance(value, int) or value < 1:
            raise SuiteError(f"{where}: {key} must be an integer >= 1, got {value!r}.")
    return Suite(
        name,
        dataset,
        protocol,
        tuple(data["hosts"]),
        tuple(data["arms"]),
        tuple(seeds),
        ints["folds"],
        ints["epochs"],
        ints["patience"],
    )


def load_suite(name: str, suites_dir: Path = SUITES_DIR) -> Suite:
    path = Path(name) if name.endswith(".toml") else suites_dir / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in suites_dir.glob("*.toml"))
        raise SuiteError(
            f"unknown suite {name!r} (looked for {path}); valid: {choices_text(known)}."
            + did_you_mean(name, known)
        )
    with path.open("rb") as fh:
        return parse_suite(path.stem, tomllib.load(fh), where=str(path))
