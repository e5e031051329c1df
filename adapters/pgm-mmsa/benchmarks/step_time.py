"""Training-step time of each MMSA host: plain, with identity hooks at the adapter's sites, with
the adapter's default PgM block and with ``SMALL_BLOCK`` (host+PgM / host is the number that
matters).

Each arm is its own copy of the host (same seed) with its own ``HostTrainer`` (the host's own
losses and optimizer groups; the block's aux loss and groups in the PgM arm). Arms are
interleaved in a shuffled order every round, so a load change on this shared machine hits all
arms alike; the result is the median over rounds. ``--repeats N`` runs the whole interleaved
measurement N times per host and reports the median of the N medians with their range (the
spread a reader should trust). ``--baseline REV`` adds an arm ``pgm_base``: the same default
block built by the block package of git revision ``REV`` (``benchmarks/block_cost.py`` loads
it), for a before/after comparison in one process. Inputs are random at the real data's widths
(step time does not depend on the values).

    python adapters/pgm-mmsa/benchmarks/step_time.py            # all six, 1 thread
    python adapters/pgm-mmsa/benchmarks/step_time.py --threads 2 --hosts lmf tfn
    python adapters/pgm-mmsa/benchmarks/step_time.py --hosts misa self_mm --baseline db2373e

Writes ``benchmarks/results/step_time.json`` (beside this script) with the machine, load,
commit, versions, configs and per-host numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from pgm_mmsa.adapters import SMALL_BLOCK
from pgm_mmsa.hosts import DATA_WIDTHS, build_host, example_inputs, host_info
from pgm_mmsa.recipes import HostTrainer

import pgm_plugins as pp

ARMS = ("host", "identity", "pgm", "pgm_small")
KINDS = ["mult", "misa", "self_mm", "tfn", "lmf", "mmim"]
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _baseline_factory(rev: str) -> Any:
    """``config -> block`` built by the block package of git revision ``rev``."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from block_cost import load_block_package

    package = load_block_package(rev)

    def build(config: pp.PgMConfig) -> Any:
        return package.PgMBlock(package.PgMConfig.from_dict(config.to_dict()))

    return build


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _labels(batch: int) -> torch.Tensor:
    return torch.arange(batch).remainder(2).float() * 2 - 1


def _adapter(kind: str, suffix: str) -> str:
    name = f"mmsa.{kind}{suffix}"
    return name if name in pp.list_adapters() else f"mmsa.{kind}"


def _arm(
    kind: str, arm: str, window: int, x: Any, suffix: str = "", factory: Any = None
) -> tuple[HostTrainer, dict[str, Any]]:
    torch.manual_seed(0)
    model = build_host(kind, widths=DATA_WIDTHS, seq_len=window)
    info: dict[str, Any] = {"host_parameters": sum(p.numel() for p in model.parameters())}
    handle = None
    if arm == "identity":
        sites = pp.get_adapter(f"mmsa.{kind}").sites_for(model)
        mods = dict(model.named_modules())
        for site in sites.values():
            mods[site.layer].register_forward_hook(lambda m, a, out: out)
    elif arm in ("pgm", "pgm_small", "pgm_base"):
        config = SMALL_BLOCK if arm == "pgm_small" else None
        handle = pp.inject(
            model,
            _adapter(kind, suffix),
            config=config,
            example_inputs=x,
            block_factory=factory if arm == "pgm_base" else None,
        )
        info["adapter"] = handle.plan.adapter
        info["block_parameters"] = sum(p.numel() for p in handle.block.parameters())
        info["block_config"] = handle.block.config.to_dict()
    trainer = HostTrainer(model, handle, train_samples=x[0].shape[0])
    return trainer, info


def _block_alone(trainer: HostTrainer, x: Any, y: torch.Tensor, rounds: int) -> dict[str, float]:
    """The block by itself on the tensors its sites saw: forward + aux loss + backward, and
    an Adam step over its parameters (the per-operation floor of any host+PgM step). The Adam is
    the one the trainer runs over the block: its optimizer groups, fused where torch supports it
    (a plain single-group Adam costs about twice as much on the block's small tensors)."""
    handle = trainer.handle
    inputs, masks = _block_inputs(trainer, x)
    block = handle.block
    groups = block.param_groups(1e-4)
    try:
        opt = torch.optim.Adam(groups, fused=True)
    except (RuntimeError, ValueError):
        opt = torch.optim.Adam(groups)
    fb, step = [], []
    for _ in range(rounds + 3):
        t0 = time.perf_counter()
        out = block(inputs, masks=masks)
        loss = out.aux_loss(y) + sum(v.sum() for v in out.outputs.values())
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t2 = time.perf_counter()
        fb.append(t1 - t0)
        step.append(t2 - t1)
    return {"forward_backward": statistics.median(fb[3:]), "adam_step": statistics.median(step[3:])}


def _block_calls_per_step(trainer: HostTrainer, x: Any, y: torch.Tensor) -> int:
    """How many times one trainer step runs the block (MMIM's recipe: two forward+backward
    passes per batch, its lld stage and its main stage, each through the block)."""
    calls = 0

    def count(*_: Any) -> None:
        nonlocal calls
        calls += 1

    hook = trainer.handle.block.register_forward_hook(count)
    try:
        trainer.step(x, y, torch.arange(x[0].shape[0]))
    finally:
        hook.remove()
    return calls


def _block_inputs(
    trainer: HostTrainer, x: Any
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """What the block receives in one forward of ``x``: its inputs and padding masks, exactly
    as the engine hands them over (a pre-hook on the block, the first call)."""
    got: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]] = []

    def grab(mod: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if not got:
            masks = kwargs.get("masks", args[1] if len(args) > 1 else None)
            got.append((dict(args[0]), dict(masks) if masks else None))

    hook = trainer.handle.block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            trainer.model(*x)
    finally:
        hook.remove()
    inputs, masks = got[0]
    return {k: v.detach().clone() for k, v in inputs.items()}, masks


def run_host(
    kind: str,
    window: int,
    batch: int,
    rounds: int,
    warmup: int,
    suffix: str = "",
    repeats: int = 1,
    factory: Any = None,
) -> dict[str, Any]:
    x = example_inputs(kind, DATA_WIDTHS, seq_len=window, batch=batch)
    y = _labels(batch)
    index = torch.arange(batch)
    arms = {}
    infos = {}
    for arm in ARMS + (("pgm_base",) if factory is not None else ()):
        arms[arm], infos[arm] = _arm(kind, arm, window, x, suffix, factory)
    times: dict[str, list[float]] = {a: [] for a in arms}
    medians: dict[str, list[float]] = {a: [] for a in arms}
    order = list(arms)
    rng = random.Random(0)
    for _ in range(repeats):
        this: dict[str, list[float]] = {a: [] for a in arms}
        for r in range(warmup + rounds):
            rng.shuffle(order)
            for arm in order:
                t0 = time.perf_counter()
                arms[arm].step(x, y, index)
                dt = time.perf_counter() - t0
                if r >= warmup:
                    this[arm].append(dt)
        for a, t in this.items():
            times[a] += t
            medians[a].append(statistics.median(t))
    med = {a: statistics.median(m) for a, m in medians.items()}
    floor = _block_alone(arms["pgm"], x, y, rounds)
    calls = _block_calls_per_step(arms["pgm"], x, y)
    # the step time host+PgM would take if the block cost exactly what it costs alone
    floor_s = med["host"] + calls * floor["forward_backward"] + floor["adam_step"]
    q = {a: statistics.quantiles(t, n=4) for a, t in times.items()}
    ratios = {
        a: [m / h for m, h in zip(medians[a], medians["host"], strict=True)]
        for a in arms
        if a != "host"
    }
    extra = {}
    if factory is not None:
        extra = {
            "ratio_pgm_base": med["pgm_base"] / med["host"],
            "baseline_block_parameters": infos["pgm_base"]["block_parameters"],
        }
    return {
        "kind": kind,
        "adapter": infos["pgm"]["adapter"],
        "description": host_info(arms["host"].model).description,
        "host_parameters": infos["host"]["host_parameters"],
        "block_parameters": infos["pgm"]["block_parameters"],
        "block_config": infos["pgm"]["block_config"],
        "small_block_parameters": infos["pgm_small"]["block_parameters"],
        "small_block_config": infos["pgm_small"]["block_config"],
        "step_s_median": med,
        "step_s_quartiles": {a: [v[0], v[2]] for a, v in q.items()},
        "ratio_pgm": med["pgm"] / med["host"],
        "ratio_pgm_small": med["pgm_small"] / med["host"],
        "ratio_identity": med["identity"] / med["host"],
        "ratio_range_over_repeats": {a: [min(r), max(r)] for a, r in ratios.items()},
        "step_s_median_per_repeat": medians,
        **extra,
        "block_alone_s_median": floor,
        "block_calls_per_step": calls,
        "ratio_floor": floor_s / med["host"],
        "rounds": rounds,
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", nargs="+", default=KINDS, choices=KINDS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="independent interleaved measurements per host (median of medians, range)",
    )
    ap.add_argument("--baseline", help="git revision whose block runs as arm 'pgm_base'")
    ap.add_argument(
        "--variant",
        default="",
        help="adapter variant for the PgM arms where a host has it, e.g. '.cls'",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "step_time.json")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.rounds < 2:
        ap.error(f"--repeats must be >= 1 and --rounds >= 2; got {args.repeats}, {args.rounds}")
    torch.set_num_threads(args.threads)
    factory = _baseline_factory(args.baseline) if args.baseline else None
    load_before = os.getloadavg()
    started = time.time()
    results = []
    for kind in args.hosts:
        res = run_host(
            kind,
            args.window,
            args.batch,
            args.rounds,
            args.warmup,
            args.variant,
            args.repeats,
            factory,
        )
        m = res["step_s_median"]
        lo, hi = res["ratio_range_over_repeats"]["pgm"]
        base = f"  base x{res['ratio_pgm_base']:.3f}" if factory is not None else ""
        print(
            f"{kind:8s} host {m['host'] * 1e3:7.1f} ms  identity x{res['ratio_identity']:.3f}  "
            f"pgm x{res['ratio_pgm']:.3f} [{lo:.3f}, {hi:.3f}]{base}  small "
            f"x{res['ratio_pgm_small']:.3f}  floor x{res['ratio_floor']:.3f} "
            f"({res['block_calls_per_step']} block calls/step)  params host "
            f"{res['host_parameters']:,} block {res['block_parameters']:,} / "
            f"{res['small_block_parameters']:,}",
            flush=True,
        )
        results.append(res)
    record = {
        "benchmark": "pgm-mmsa step time",
        "settings": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()},
        "widths": DATA_WIDTHS,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "pgm_plugins": pp.__version__,
        },
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain")),
        "wall_s": time.time() - started,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False, suffix=".tmp") as f:
        json.dump(record, f, indent=2)
    os.replace(f.name, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
