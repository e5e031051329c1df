"""How much of a trained host's prediction goes through the PgM block's rebuilt representation.

With ``mix="gate"`` (the default) the block hands the host ``h_m + beta_m (h_hat_m - h_m)``,
``beta_m`` a learned scalar from 0. This script trains cells of a suite as ``pgm bench run``
does (into a temporary folder: nothing committed is touched), and for each PgM arm's kept
setting reads every modality's learned ``beta_m`` and scores the test split twice: as trained,
and with every ``beta_m`` set to 0, where the host sees its own site features and nothing the
block computes reaches the prediction (the block's heads and losses still shaped the encoders
during training). The difference is what the block's forward contributes to the test metric.

    python benchmarks/block_mix.py mosi --hosts late_fusion mmsa.lmf --arms pgm --seeds 0 \\
        --data-dir ../shared/data --out benchmarks/results/block_mix-mosi.json

Writes the cells and a per (host, arm) summary (mean |beta|, the metric change with a 95 %
t-interval over the cells) as JSON, and prints the summary as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pgm_plugins._io import atomic_write_text


def _zeroed(block: Any) -> list[tuple[Any, float]]:
    """Set every decoder's ``beta`` to 0; return (parameter, old value) to restore."""
    import torch

    saved = []
    for d in getattr(block, "decoders", {}).values():
        beta = getattr(d, "beta", None)
        if beta is not None:
            saved.append((beta, float(beta.detach())))
            with torch.no_grad():
                beta.zero_()
    return saved


def measure_cells(
    suite: str,
    data_dir: Path,
    hosts: list[str],
    arms: list[str],
    seeds: list[int],
    folds: list[int],
) -> list[dict[str, Any]]:
    """Train the chosen cells of ``suite`` and measure each kept setting (the module docstring)."""
    import torch

    import pgm_plugins.bench.runner as runner_module
    from pgm_plugins.bench.runner import Runner
    from pgm_plugins.bench.suite import load_suite
    from pgm_plugins.registry import get_registry

    os.environ["PGM_DATA_DIR"] = str(data_dir)
    original = runner_module.measure_contributions
    captured: list[dict[str, Any]] = []

    def measure(run: Any, data: Any, train: Any, test: Any, handle: Any, **kw: Any) -> Any:
        out = original(run, data, train, test, handle, **kw)
        block = getattr(handle, "block", None)
        if out is not None and block is not None and callable(getattr(block, "betas", None)):
            betas = block.betas()
            saved = _zeroed(block)
            try:
                zero = original(run, data, train, test, handle, **kw)
            finally:
                with torch.no_grad():
                    for beta, value in saved:
                        beta.fill_(value)
            captured.append(
                {"betas": betas, "intact": out["intact"], "beta0": zero and zero["intact"]}
            )
        else:
            captured.append({})
        return out

    runner_module.measure_contributions = measure
    rows = []
    try:
        reg = get_registry()
        spec = load_suite(suite, datasets=reg.datasets.names(), hosts=reg.bench_hosts.names())
        with tempfile.TemporaryDirectory() as tmp:
            runner = Runner(spec, Path(tmp), quiet=True, registry=reg)
            cells = [
                c
                for c in runner.plan()
                if c.host in hosts and c.arm in arms and c.seed in seeds and c.fold in folds
            ]
            for cell in cells:
                captured.clear()
                runner.run([cell])
                record = runner.store.load(cell.key(spec.name))
                if record is None:  # the cell failed: the runner listed why
                    continue
                settings = [s["setting"] for s in record.get("selection") or []]
                kept = settings.index(record["setting"]) if record["setting"] in settings else 0
                got = captured[kept] if kept < len(captured) else {}
                if not got:
                    continue
                rows.append(
                    {
                        "host": cell.host,
                        "arm": cell.arm,
                        "fold": cell.fold,
                        "seed": cell.seed,
                        "metric": record["primary"],
                        "recorded_test": record["metrics"]["test"][record["primary"]],
                        **got,
                    }
                )
                print(
                    f"{cell.host} {cell.arm} fold {cell.fold} seed {cell.seed}: "
                    f"betas {got['betas']}, test {got['intact']:.4f}, beta 0 {got['beta0']:.4f}",
                    file=sys.stderr,
                )
    finally:
        runner_module.measure_contributions = original
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (host, arm): cells, mean |beta| (largest over modalities), and the mean of
    test(beta = 0) - test(as trained) with a 95 % t-interval over the cells."""
    from scipy import stats

    out = []
    for key in dict.fromkeys((r["host"], r["arm"]) for r in rows):
        mine = [r for r in rows if (r["host"], r["arm"]) == key]
        diffs = np.array([r["beta0"] - r["intact"] for r in mine], dtype=float)
        betas = np.array([max(abs(b) for b in r["betas"].values()) for r in mine], dtype=float)
        n = len(diffs)
        half = (
            float(stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n))
            if n > 1
            else math.nan
        )
        out.append(
            {
                "host": key[0],
                "arm": key[1],
                "cells": n,
                "metric": mine[0]["metric"],
                "max_abs_beta_mean": float(betas.mean()),
                "max_abs_beta_max": float(betas.max()),
                "change_mean": float(diffs.mean()),
                "change_low": float(diffs.mean() - half),
                "change_high": float(diffs.mean() + half),
                "cells_changed": int((np.abs(diffs) > 0).sum()),
            }
        )
    return out


def markdown(summary: list[dict[str, Any]]) -> list[str]:
    """The summaries as a Markdown table (a ``suite`` key in them adds its column)."""
    suite = any("suite" in s for s in summary)
    lines = [
        ("| suite " if suite else "")
        + "| host | arm | cells | largest abs(beta), mean (max) | test with beta = 0 minus as "
        "trained [95 %] | cells whose metric changed |",
        ("| --- " if suite else "") + "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            (f"| {s.get('suite', '')} " if suite else "")
            + f"| {s['host']} | {s['arm']} | {s['cells']} | {s['max_abs_beta_mean']:.4f} "
            f"({s['max_abs_beta_max']:.4f}) | {s['change_mean']:+.4f} [{s['change_low']:+.4f}, "
            f"{s['change_high']:+.4f}] ({s['metric']}) | {s['cells_changed']} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="a suite name or .toml path (its settings, its folds)")
    parser.add_argument("--hosts", nargs="+", required=True)
    parser.add_argument("--arms", nargs="+", default=["pgm"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--folds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ["PGM_DATA_DIR"]) if os.environ.get("PGM_DATA_DIR") else None,
        help="folder holding the data sets (else $PGM_DATA_DIR)",
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.data_dir is None or not args.data_dir.is_dir():
        parser.error(f"no data folder {args.data_dir}: give --data-dir or set PGM_DATA_DIR")
    rows = measure_cells(args.suite, args.data_dir, args.hosts, args.arms, args.seeds, args.folds)
    if not rows:
        print("no PgM cell among the chosen cells", file=sys.stderr)
        return 2
    from pgm_plugins.bench.results import environment

    summary = summarise(rows)
    out = {"suite": args.suite, "summary": summary, "cells": rows, "env": environment()}
    atomic_write_text(args.out, json.dumps(out, indent=1, default=str))
    print("\n".join(markdown(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
