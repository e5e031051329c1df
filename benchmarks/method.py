"""The method study of issue 8: does the PgM block earn its place?

Runs arms x seeds (x folds) through ``pgm_plugins.bench`` and prints, per arm, the test metric as
mean +- std, its difference to the host and to the same-size capacity control with a 95 %
interval and a paired test over seeds (plain t over independent seeds on synthetic data; the
corrected resampled t-test over folds x seeds on MOSI). One JSON file per cell under
``benchmarks/results/method/<suite>/``; a rerun skips finished cells.

    python benchmarks/method.py --quick                 # synthetic, 5 arms x 5 seeds (make bench)
    python benchmarks/method.py synthetic               # every arm and ablation, 10 seeds, probes
    python benchmarks/method.py design                  # PgM design candidates, chosen on valid
    python benchmarks/method.py mosi [--data-dir DIR]   # MOSI clean, 5 folds x 3 seeds
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgm_plugins.bench.arms import ARMS, Arm, get_arm
from pgm_plugins.bench.data.synthetic import digest as synthetic_digest
from pgm_plugins.bench.data.synthetic import make_synthetic, truth
from pgm_plugins.bench.results import ResultStore, environment
from pgm_plugins.bench.stats import compare
from pgm_plugins.bench.train import TrainSpec, mlp_r2, ridge_r2, run_cell

RESULTS = Path(__file__).resolve().parent / "results" / "method"  # --results overrides
QUICK_ARMS = ["baseline", "pgm", "capacity", "interaction", "uni_heads"]
SYNTHETIC_ARMS = [*QUICK_ARMS, *[a for a in ARMS if a.startswith("pgm-")]]
MOSI_ARMS = ["baseline", "pgm", "capacity", "interaction", "uni_heads", "pgm-no-heads", "pgm-gate"]
#: the tuning grid every arm gets on MOSI (the same budget: 4 settings, chosen on validation)
MOSI_GRID = [{"lr": lr, "dropout": dropout} for lr in (1e-3, 3e-3) for dropout in (0.0, 0.3)]
#: PgM design candidates compared on the synthetic validation splits (design suite)
DESIGNS: dict[str, dict[str, Any]] = {
    "gate-bilinear": {"lr_mult": {}},
    "gate-bilinear-plr10": {"lr_mult": {"*.partitioner": 10.0}},
    "project-bilinear": {"partitioner": "project"},
    "split-bilinear": {"partitioner": "split"},
    "gate-attention": {"paired": "attention"},
    "gate-bilinear-norec": {"lambda_rec": 0.0},
    "gate-bilinear-noheads": {"lambda_uni": 0.0, "lambda_paired": 0.0},
    "gate-bilinear-replace": {"mix": "replace"},
}
#: the block settings every PgM-family arm starts from (chosen by the design suite)
BLOCK_DEFAULTS: dict[str, Any] = {}


def _tensors(split: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    return split.x, split.y


def synthetic_probe(test: Any) -> Callable[[Any, Any], dict[str, Any]]:
    """Probes on held-out test data: what the uni and paired parts carry (first half fits the
    probe, second half scores it)."""
    product = torch.ones(len(test.y))
    for m in ("a", "b", "c"):
        p = test.factors[f"paired.{m}"]
        if p.shape[1]:
            product = product * p.sum(1) / p.shape[1] ** 0.5
    half = len(test.y) // 2

    def probe(handle: Any, model: Any) -> dict[str, Any]:
        parts = handle.parts
        out: dict[str, Any] = {}
        for m, part in parts.items():
            feats = {"uni": part.uni_learned, "paired": part.paired_learned}
            for name, f in feats.items():
                if f is None:
                    continue
                x = f.reshape(f.shape[0], -1).numpy().astype(np.float64)
                targets = {"product": product.numpy()}
                for kind in ("uni", "paired"):
                    t = test.factors[f"{kind}.{m}"]
                    if t.shape[1]:
                        targets[f"{kind}_factors"] = t.sum(1).numpy() / t.shape[1] ** 0.5
                for tname, y in targets.items():
                    y = y.astype(np.float64)
                    out[f"{m}.{name}->{tname}.linear"] = ridge_r2(
                        x[:half], y[:half], x[half:], y[half:]
                    )
                    out[f"{m}.{name}->{tname}.mlp"] = mlp_r2(x[:half], y[:half], x[half:], y[half:])
        return out

    return probe


def run_synthetic(
    suite: str,
    arms: Sequence[str],
    seeds: Sequence[int],
    spec: TrainSpec,
    block: Mapping[str, Any],
    probes: Sequence[str] = (),
    swap: bool = False,
    variant: str = "",
) -> list[dict[str, Any]]:
    store = ResultStore(RESULTS / suite)
    env = environment()
    records = []
    for seed in seeds:
        splits = {k: make_synthetic(k, seed, swap) for k in ("train", "valid", "test")}
        data = {k: _tensors(v) for k, v in splits.items()}
        for name in arms:
            arm = get_arm(name) if isinstance(name, str) else name
            key = {
                "data": "synthetic" + ("-swap" if swap else ""),
                "arm": arm.name,
                "variant": variant or "default",
                "seed": seed,
            }
            record = store.load(key)
            if record is None:
                probe = synthetic_probe(splits["test"]) if arm.name in probes else None
                record = run_cell(arm, data, seed, spec, block, probe)
                record.update(env)
                record["data_digest"] = {k: synthetic_digest(v) for k, v in splits.items()}
                record["truth"] = truth(swap)["true_uni_share"]
                store.write(key, record)
                record["key"] = key
                print(
                    f"  {key} test acc {record['metrics']['test']['acc']:.3f} "
                    f"({record['wall_s']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            records.append(record)
    return records


def table(
    records: Sequence[dict[str, Any]],
    metric: str = "acc",
    split: str = "test",
    by: Sequence[str] = ("seed",),
    ratio: float = 0.0,
) -> str:
    """Markdown table: arm, mean +- std, difference to host and to capacity (95 % CI, p, wins)."""
    cells: dict[str, dict[tuple[Any, ...], float]] = defaultdict(dict)
    params: dict[str, int] = {}
    for r in records:
        cells[r["arm"]][tuple(r[k] for k in by)] = r["metrics"][split][metric]
        params[r["arm"]] = r["parameters"]["block"]
    lines = [
        f"| arm | block params | {split} {metric} mean +- std | n | vs baseline | vs capacity |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm, vals in cells.items():
        v = np.array(list(vals.values()))
        row = [
            arm,
            f"{params[arm]:,}",
            f"{v.mean():.4f} +- {v.std(ddof=1) if len(v) > 1 else 0:.4f}",
            str(len(v)),
        ]
        for ref in ("baseline", "capacity"):
            if ref == arm or ref not in cells:
                row.append("-")
                continue
            common = sorted(set(vals) & set(cells[ref]))
            if len(common) < 2:
                row.append("-")
                continue
            c = compare([vals[k] for k in common], [cells[ref][k] for k in common], ratio)
            row.append(c.text())
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def share_report(records: Sequence[dict[str, Any]]) -> str:
    """Learned uni shares per modality against the truth (gate partitioner only)."""
    lines = []
    by_data: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in records:
        if r.get("shares") and (r.get("block_config") or {}).get("partitioner") == "gate":
            by_data[r["key"]["data"]].append(r["shares"])
    for data, shares in by_data.items():
        mean = {m: float(np.mean([s[m] for s in shares])) for m in shares[0]}
        tr = truth(data.endswith("swap"))["true_uni_share"]
        known = [m for m in mean if tr.get(m) is not None]
        order_ok = sum(
            (s[known[0]] - s[known[1]]) * (tr[known[0]] - tr[known[1]]) > 0 for s in shares
        )
        lines.append(
            f"{data}: learned uni share (mean over {len(shares)} seeds) "
            + ", ".join(f"{m}={v:.3f} (truth {tr[m]})" for m, v in mean.items())
            + f"; order of {known[0]} vs {known[1]} recovered in {order_ok}/{len(shares)} seeds"
        )
    return "\n".join(lines)


def probe_report(records: Sequence[dict[str, Any]]) -> str:
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        for k, v in (r.get("probe") or {}).items():
            acc[r["arm"]][k].append(v)
    lines = ["| arm | probe (held-out R^2) | mean +- std |", "| --- | --- | --- |"]
    for arm, probes in acc.items():
        for k, v in sorted(probes.items()):
            lines.append(f"| {arm} | {k} | {np.mean(v):.3f} +- {np.std(v):.3f} |")
    return "\n".join(lines)


def cmd_synthetic(args: argparse.Namespace, quick: bool) -> str:
    spec = TrainSpec()
    start = time.perf_counter()
    if quick:
        recs = run_synthetic(
            "quick", args.arms or QUICK_ARMS, args.seeds or range(5), spec, BLOCK_DEFAULTS
        )
        out = ["## quick (synthetic, test accuracy)", table(recs)]
    else:
        seeds = args.seeds or range(10)
        recs = run_synthetic(
            "synthetic",
            args.arms or SYNTHETIC_ARMS,
            seeds,
            spec,
            BLOCK_DEFAULTS,
            probes=("pgm", "interaction"),
        )
        swap = run_synthetic(  # the learned-share partitioner, on the moved mix
            "synthetic", ["pgm-gate"], seeds, spec, BLOCK_DEFAULTS, probes=("pgm-gate",), swap=True
        )
        out = [
            "## synthetic (test accuracy)",
            table(recs),
            "",
            "## shares",
            share_report([r for r in recs if r["arm"] == "pgm-gate"] + swap),
            "",
            "## probes",
            probe_report([r for r in recs if r["arm"] in ("pgm", "interaction")]),
        ]
    out.append(f"\n({time.perf_counter() - start:.0f} s; cells in {RESULTS})")
    return "\n".join(out)


def cmd_design(args: argparse.Namespace) -> str:
    spec = TrainSpec()
    recs = []
    for name, change in DESIGNS.items():
        arm = Arm(name, f"design candidate {change}", change)
        recs += run_synthetic(
            "design", [arm], args.seeds or range(5), spec, BLOCK_DEFAULTS, variant=name
        )
    return "## design candidates (synthetic, VALIDATION accuracy)\n" + table(
        recs, split="valid"
    ).replace("vs capacity", "-")


def run_mosi(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pgm_plugins.bench.data.mosi import clean_folds, load_clean, standardise

    data = load_clean(args.data_dir)
    store = ResultStore(RESULTS / "mosi")
    env = environment()
    records = []
    seeds = args.seeds or range(3)
    for seed in seeds:
        for fold in clean_folds(data, seed):
            x = standardise(data.x, fold.train)

            def part(
                idx: np.ndarray, x: dict[str, np.ndarray] = x
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
                return ({m: torch.tensor(v[idx]) for m, v in x.items()}, torch.tensor(data.y[idx]))

            cell_data = {
                "train": part(fold.train),
                "valid": part(fold.valid),
                "test": part(fold.test),
            }
            for name in args.arms or MOSI_ARMS:
                arm = get_arm(name)
                for g, setting in enumerate(MOSI_GRID):
                    key = {
                        "data": "mosi-clean",
                        "arm": arm.name,
                        "setting": g,
                        "seed": seed,
                        "fold": fold.fold,
                    }
                    record = store.load(key)
                    if record is None:
                        spec = TrainSpec(
                            lr=setting["lr"],
                            dropout=setting["dropout"],
                            batch=64,
                            max_epochs=60,
                            patience=10,
                            hidden=32,
                        )
                        record = run_cell(arm, cell_data, seed, spec, BLOCK_DEFAULTS)
                        record.update(env)
                        record["data_digest"] = data.digest
                        record["fold"] = fold.fold
                        record["sizes"] = {
                            "train": len(fold.train),
                            "valid": len(fold.valid),
                            "test": len(fold.test),
                        }
                        record["setting"] = setting
                        store.write(key, record)
                        print(
                            f"  {key} valid {record['metrics']['valid']['acc']:.3f} "
                            f"({record['wall_s']:.1f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
                    record["fold"] = fold.fold
                    record["setting_index"] = g
                    records.append(record)
    return records


def cmd_mosi(args: argparse.Namespace) -> str:
    start = time.perf_counter()
    recs = run_mosi(args)
    chosen = []
    lines = ["## MOSI clean: setting chosen per arm on mean validation accuracy"]
    for arm in dict.fromkeys(r["arm"] for r in recs):
        rs = [r for r in recs if r["arm"] == arm]
        by_setting: dict[int, list[float]] = defaultdict(list)
        for r in rs:
            by_setting[r["setting_index"]].append(r["metrics"]["valid"]["acc"])
        best = max(by_setting, key=lambda g: np.mean(by_setting[g]))
        lines.append(
            f"- {arm}: "
            + ", ".join(
                f"{MOSI_GRID[g]} valid {np.mean(v):.4f}" for g, v in sorted(by_setting.items())
            )
            + f" -> chosen {MOSI_GRID[best]}"
        )
        chosen += [r for r in rs if r["setting_index"] == best]
    ratio = float(np.mean([r["sizes"]["test"] / r["sizes"]["train"] for r in chosen]))
    lines += [
        "",
        f"## MOSI clean, test (5 folds x {len(set(r['seed'] for r in chosen))} seeds; "
        f"corrected resampled t-test, n_test/n_train = {ratio:.3f})",
    ]
    for metric in ("acc", "f1_weighted"):
        lines += ["", f"### {metric}", table(chosen, metric, by=("seed", "fold"), ratio=ratio)]
    lines.append(f"\n({time.perf_counter() - start:.0f} s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "suite", nargs="?", default="quick", choices=["quick", "synthetic", "design", "mosi"]
    )
    parser.add_argument("--quick", action="store_true", help="the quick synthetic suite")
    parser.add_argument(
        "--arms", nargs="+", help=f"arms (default per suite); valid: {', '.join(ARMS)}"
    )
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--data-dir", help="folder holding mosi-utterance/ (else $PGM_DATA_DIR)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", help=f"folder for the cells' result files (default {RESULTS})")
    parser.add_argument("--out", help="also write the printed report to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.results:
        RESULTS = Path(args.results)
    for name in args.arms or []:
        get_arm(name)  # fail before running anything
    suite = "quick" if args.quick else args.suite
    if suite in ("quick", "synthetic"):
        text = cmd_synthetic(args, suite == "quick")
    elif suite == "design":
        text = cmd_design(args)
    else:
        text = cmd_mosi(args)
    print(text)
    if args.out:
        from pgm_plugins._io import atomic_write_text

        atomic_write_text(Path(args.out), text + "\n")


if __name__ == "__main__":
    main()
