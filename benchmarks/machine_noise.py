"""How much one cell moves between machines: committed cells rerun elsewhere, compared.

``python benchmarks/machine_noise.py`` pairs every record under ``--rerun`` (default
``benchmarks/results/machine``: ``<suite>/<record>.json``, rerun at the commit of the committed
records on another machine) with the committed record of the same file name under
``--committed`` (default ``benchmarks/results``), keeps the pairs whose cell digests agree (same
settings, data and code: only the machine differs), and prints per (suite, host, arm): the cells,
how many came out bit-identical (metrics and curves), the mean of rerun - committed of the test
primary metric with its 95 % interval, the spread of that difference, and for scale the spread
of the committed cells over seeds within a fold (the noise a paired comparison already has).
``--out FILE`` writes the same as JSON. The rerun machine is described by ``machine.json`` in
``--rerun`` when present (platform and :func:`~pgm_plugins.bench.results.cpu_identity`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from scipy import stats

REPO = Path(__file__).resolve().parents[1]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "key" in data else None


def _within_fold_sd(values: dict[tuple[Any, Any], float]) -> float:
    """The pooled standard deviation over seeds within each fold (nan with no fold of two)."""
    by_fold: dict[Any, list[float]] = defaultdict(list)
    for (fold, _seed), v in values.items():
        by_fold[fold].append(v)
    num = sum((len(v) - 1) * statistics.variance(v) for v in by_fold.values() if len(v) > 1)
    dof = sum(len(v) - 1 for v in by_fold.values() if len(v) > 1)
    return math.sqrt(num / dof) if dof else math.nan


def compare(committed: Path, rerun: Path) -> dict[str, Any]:
    """The pairs of ``rerun`` and ``committed`` records, summarised per (suite, host, arm)."""
    groups: dict[tuple[str, str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(
        list
    )
    skipped: list[str] = []
    for path in sorted(rerun.glob("*/*.json")):
        new = _load(path)
        if new is None:
            continue
        old = _load(committed / path.parent.name / path.name)
        if old is None:
            skipped.append(f"{path.parent.name}/{path.name}: no committed record")
        elif old.get("cell_digest") != new.get("cell_digest"):
            skipped.append(f"{path.parent.name}/{path.name}: other settings or code")
        else:
            key = new["key"]
            groups[(path.parent.name, key["host"], key["arm"])].append((old, new))
    rows = []
    for (suite, host, arm), pairs in sorted(groups.items()):
        primary = pairs[0][0]["primary"]
        diffs = [n["metrics"]["test"][primary] - o["metrics"]["test"][primary] for o, n in pairs]
        same = sum(
            1 for o, n in pairs if o["metrics"] == n["metrics"] and o["curves"] == n["curves"]
        )
        n = len(diffs)
        mean = statistics.fmean(diffs)
        sd = statistics.stdev(diffs) if n > 1 else math.nan
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
        committed_values = {
            (o["key"]["fold"], o["key"]["seed"]): o["metrics"]["test"][primary] for o, _ in pairs
        }
        rows.append(
            {
                "suite": suite,
                "host": host,
                "arm": arm,
                "metric": primary,
                "cells": n,
                "identical": same,
                "committed_mean": statistics.fmean(committed_values.values()),
                "rerun_mean": statistics.fmean(n_["metrics"]["test"][primary] for _, n_ in pairs),
                "diff_mean": mean,
                "diff_low": mean - half,
                "diff_high": mean + half,
                "diff_sd": sd,
                "seed_sd_within_fold": _within_fold_sd(committed_values),
                "committed_platforms": sorted({o["env"]["machine"]["platform"] for o, _ in pairs}),
            }
        )
    machine_file = rerun / "machine.json"
    machine = json.loads(machine_file.read_text()) if machine_file.is_file() else None
    return {"rerun_machine": machine, "rows": rows, "skipped": skipped}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| suite | host | arm | cells | bit-identical | committed | rerun | rerun - committed "
        "[95 %] | sd of the difference | sd over seeds (within fold) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['suite']} | {r['host']} | {r['arm']} | {r['cells']} | {r['identical']} | "
            f"{r['committed_mean']:.3f} | {r['rerun_mean']:.3f} | {r['diff_mean']:+.4f} "
            f"[{r['diff_low']:+.4f}, {r['diff_high']:+.4f}] | {r['diff_sd']:.4f} | "
            f"{r['seed_sd_within_fold']:.4f} |"
        )
    machine = result.get("rerun_machine")
    if machine:
        cpu = machine.get("cpu") or {}
        lines.append(
            f"\nrerun on {machine.get('platform')} ({cpu.get('model')}, "
            f"{cpu.get('capability')}: {'+'.join(cpu.get('isa') or [])})"
        )
    lines += [f"skipped: {s}" for s in result["skipped"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--committed", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--rerun", type=Path, default=REPO / "benchmarks" / "results" / "machine")
    parser.add_argument("--out", type=Path, help="also write the comparison as JSON here")
    args = parser.parse_args(argv)
    if not args.rerun.is_dir():
        print(f"no rerun folder {args.rerun}; pass --rerun DIR (<suite>/<record>.json)")
        return 2
    result = compare(args.committed, args.rerun)
    if not result["rows"]:
        print(f"no rerun record in {args.rerun} pairs with one under {args.committed}")
        return 2
    print(markdown(result))
    if args.out:
        from pgm_plugins._io import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
