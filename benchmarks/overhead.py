"""Training-step time of a tiny host: plain, identity hook, PgM block by hand, PgM injected.

The "block by hand" arm calls the same block inside the host's own forward, with no hooks: the
ratio of "+PgM (injected)" to it is the cost of the injection engine itself (hooks, clones,
deferred commit), apart from the block's own compute.

    python benchmarks/overhead.py [--batch 64] [--repeats 7] [--steps 50] [--out FILE]

Each arm is timed ``repeats`` times over ``steps`` training steps (after warm-up) with 2 threads;
the report gives the median step time, the interquartile range, and ratios to the plain host.
Results go to a self-describing JSON file (config, versions, machine, git commit).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import pgm_plugins as pp
from pgm_plugins._io import atomic_write_text
from pgm_plugins.toy import LateFusion, make_uni_paired


class ByHand(LateFusion):
    """The host with the block written into its forward, as a user editing the code would."""

    def __init__(self, widths: dict[str, int], hidden: int) -> None:
        super().__init__(widths, hidden=hidden)
        cfg = pp.PgMConfig(modalities={m: hidden for m in widths}, mix="gate")
        self.block = pp.PgMBlock(cfg)
        self.last: Any = None

    def forward(self, *inputs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        h = {m: enc(x) for (m, enc), x in zip(self.encoders.items(), inputs, strict=True)}
        self.last = self.block(h)
        out = torch.cat(list(self.last.outputs.values()), dim=-1)
        return self.fusion(out).squeeze(-1)


def build(arm: str, widths: dict[str, int], hidden: int) -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(0)
    if arm == "block by hand":
        return ByHand(widths, hidden), None
    model = LateFusion(widths, hidden=hidden)
    handle = None
    if arm == "identity hook":
        for enc in model.encoders.values():
            enc.register_forward_hook(lambda mod, args, out: out)
    elif arm == "+PgM (injected)":
        handle = pp.inject(model, "toy.late_fusion", config={"mix": "gate"})
    return model, handle


def make_step(arm: str, args: argparse.Namespace) -> Callable[[], None]:
    widths = {"text": 64, "audio": 32, "video": 48}
    model, handle = build(arm, widths, args.hidden)
    x, y = make_uni_paired(args.batch, seed=0, widths=widths)
    inputs = tuple(x.values())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(*inputs), y)
        if handle is not None:
            loss = loss + handle.aux_loss(y)
        elif isinstance(model, ByHand):
            loss = loss + model.last.aux_loss(y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(10):  # warm-up
        step()
    return step


def time_arms(arms: list[str], args: argparse.Namespace) -> dict[str, list[float]]:
    """Per-step seconds, ``repeats`` rounds; the arms take turns within a round, so a drift of
    the machine's speed spreads over all arms instead of biasing the last one."""
    steps = {arm: make_step(arm, args) for arm in arms}
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for _ in range(args.repeats):
        for arm, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[arm].append((time.perf_counter() - start) / args.steps)
    return times


def threaded_inference(args: argparse.Namespace, calls: int = 400) -> dict[str, Any]:
    """Inference calls per second of one injected model (eval, no_grad), served by one thread
    and by a pool of ``args.pool`` threads sharing the model (each torch op single-threaded, so
    the comparison is of the Python side: the engine's per-thread forward state, the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    widths = {"text": 64, "audio": 32, "video": 48}
    model, _ = build("+PgM (injected)", widths, args.hidden)
    model.eval()
    x, _ = make_uni_paired(args.batch, seed=0, widths=widths)
    inputs = tuple(x.values())
    expected = model(*inputs).detach()

    def call(_: int) -> bool:
        with torch.no_grad():
            return bool(torch.equal(model(*inputs), expected))

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        single_ok = all(call(i) for i in range(calls))
        single = calls / (time.perf_counter() - start)
        with ThreadPoolExecutor(max_workers=args.pool) as pool:
            start = time.perf_counter()
            pooled_ok = all(pool.map(call, range(calls)))
            pooled = calls / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return {
        "calls": calls,
        "pool": args.pool,
        "single_thread_calls_per_s": single,
        "pool_calls_per_s": pooled,
        "pool_over_single": pooled / single,
        "all_outputs_equal_single_thread": single_ok and pooled_ok,
    }


def git_commit() -> tuple[str | None, bool | None]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--pool", type=int, default=4, help="threads of the inference pool")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "overhead.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    arms = ["plain", "identity hook", "block by hand", "+PgM (injected)"]
    results = time_arms(arms, args)
    base = statistics.median(results["plain"])
    rows = {}
    for arm, times in results.items():
        q = statistics.quantiles(times, n=4)
        rows[arm] = {
            "median_s": statistics.median(times),
            "iqr_s": [q[0], q[2]],
            "ratio": statistics.median(times) / base,
            "times_s": times,
        }
        print(
            f"{arm:<14} {1e3 * rows[arm]['median_s']:8.3f} ms/step "
            f"(IQR {1e3 * q[0]:.3f}-{1e3 * q[2]:.3f})  x{rows[arm]['ratio']:.2f}"
        )
    engine = statistics.median(results["+PgM (injected)"]) / statistics.median(
        results["block by hand"]
    )
    print(f"injection engine: x{engine:.3f} over the same block called by hand")
    threads = threaded_inference(args)
    print(
        f"threaded inference: {threads['single_thread_calls_per_s']:.0f} calls/s on one thread, "
        f"{threads['pool_calls_per_s']:.0f} calls/s from {args.pool} threads "
        f"(x{threads['pool_over_single']:.2f}); outputs equal to single-threaded: "
        f"{threads['all_outputs_equal_single_thread']}"
    )
    model, handle = build("+PgM (injected)", {"text": 64, "audio": 32, "video": 48}, args.hidden)
    host_params = sum(p.numel() for p in model.parameters()) - handle.plan.block_parameters
    commit, dirty = git_commit()
    record = {
        "benchmark": "overhead",
        "config": vars(args) | {"out": str(args.out)},
        "host_parameters": host_params,
        "block_parameters": handle.plan.block_parameters,
        "arms": rows,
        "engine_ratio": engine,
        "threaded_inference": threads,
        "versions": {"pgm_plugins": pp.__version__, "torch": torch.__version__},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": torch.get_num_threads(),
        },
        "git": {"commit": commit, "dirty": dirty},
    }
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(
        f"host {host_params:,} parameters, block {handle.plan.block_parameters:,}; "
        f"written {args.out}"
    )


if __name__ == "__main__":
    main()
