"""The PgM block's fixed per-step cost: aten calls by op and time of one training step.

One step = the block's forward on the tensors an MMSA host hands it, ``aux_loss`` (with labels)
plus a read of every output, backward, and a fused Adam step over the block's optimizer groups:
what the block adds to a host's step, without the host. Shapes (batch 32, window 8):

- ``misa``: three ``[B, 128]`` vectors (MISA's ``project_*`` sites);
- ``self_mm``: text ``[B, 8, 128]`` with a padding mask, audio ``[B, 16]``, vision ``[B, 32]``;
- ``lmf``: vectors of widths 64 / 16 / 128;
- ``mult``: three ``[B, 4, 50]`` sequences, no mask (MULT's default sites at window 8).

``--baseline REV`` also loads the block package of git revision ``REV`` (read with ``git show``,
imported under another name) and runs it as a second arm on the same inputs and weights,
interleaved with the working tree's block round by round, so the load of a shared machine hits
both alike; the result is the median and quartiles over rounds.

    python benchmarks/block_cost.py --baseline db2373e
    python benchmarks/block_cost.py --shapes misa --profile   # op table of one step

Writes a JSON record (atomically) to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import pgm_plugins.block as current_block

ROOT = Path(__file__).resolve().parent.parent
BATCH, WINDOW = 32, 8
SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "misa": {"text": (BATCH, 128), "audio": (BATCH, 128), "vision": (BATCH, 128)},
    "self_mm": {"text": (BATCH, WINDOW, 128), "audio": (BATCH, 16), "vision": (BATCH, 32)},
    "lmf": {"text": (BATCH, 64), "audio": (BATCH, 16), "vision": (BATCH, 128)},
    "mult": {m: (BATCH, 4, 50) for m in ("text", "audio", "vision")},
}


def load_block_package(rev: str) -> ModuleType:
    """``pgm_plugins/block`` as it was at git revision ``rev``, importable beside today's."""
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{rev}:pgm_plugins/block"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    name = "_pgm_block_" + "".join(c for c in rev if c.isalnum())
    where = Path(tempfile.mkdtemp(prefix="pgm_block_base_"))
    (where / name).mkdir()
    for file in listing:
        if not file.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "show", f"{rev}:pgm_plugins/block/{file}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (where / name / file).write_text(text.replace("pgm_plugins.block", name))
    sys.path.insert(0, str(where))
    return importlib.import_module(name)


def _inputs(shape: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    g = torch.Generator().manual_seed(0)
    xs = {m: torch.randn(s, generator=g).requires_grad_(True) for m, s in SHAPES[shape].items()}
    masks = None
    if shape == "self_mm":
        mask = torch.ones(BATCH, WINDOW, dtype=torch.bool)
        mask[::2, 5:] = False  # half the samples padded
        masks = {"text": mask}
    return xs, masks


class Arm:
    """One block (of a given package) with its fused Adam over its optimizer groups."""

    def __init__(self, package: ModuleType, shape: str, config: dict[str, Any]) -> None:
        cfg = package.PgMConfig.from_dict(config)
        torch.manual_seed(0)
        self.block = package.PgMBlock(cfg)
        self.xs, self.masks = _inputs(shape)
        self.y = torch.randn(BATCH, generator=torch.Generator().manual_seed(1))
        self.opt = torch.optim.Adam(self.block.param_groups(1e-4), fused=True)

    def step(self) -> None:
        out = self.block(self.xs, masks=self.masks)
        loss = out.aux_loss(self.y) + sum(o.sum() for o in out.outputs.values())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        for x in self.xs.values():
            x.grad = None


def agreement(arms: dict[str, Arm]) -> dict[str, Any]:
    """Largest relative difference between the arms' outputs, loss and parameter gradients of
    one step (the arms start from the same weights and took the same warm-up steps)."""
    got = {}
    for name, arm in arms.items():
        out = arm.block(arm.xs, masks=arm.masks)
        loss = out.aux_loss(arm.y) + sum(o.sum() for o in out.outputs.values())
        loss.backward()
        got[name] = {
            **{f"outputs.{m}": o.detach() for m, o in out.outputs.items()},
            "loss": loss.detach(),
            **{f"grad.{n}": p.grad for n, p in arm.block.named_parameters() if p.grad is not None},
        }
        arm.opt.zero_grad(set_to_none=True)
    ref = got["baseline"]
    worst, where = 0.0, ""
    for key, want in ref.items():
        diff = float((got["current"][key] - want).abs().max() / want.abs().max().clamp_min(1e-12))
        if diff >= worst:
            worst, where = diff, key
    return {
        "same_tensors": sorted(ref) == sorted(got["current"]),
        "max_rel_diff": worst,
        "at": where,
    }


def count_calls(arm: Arm) -> tuple[int, collections.Counter[str], Any]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        arm.step()
    calls = collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
    return sum(calls.values()), calls, prof


def run_shape(
    shape: str, packages: dict[str, ModuleType], rounds: int, warmup: int, show: bool
) -> dict[str, Any]:
    widths = {m: s[-1] for m, s in SHAPES[shape].items()}
    config = current_block.PgMConfig(modalities=widths).to_dict()
    arms = {name: Arm(pkg, shape, config) for name, pkg in packages.items()}
    record: dict[str, Any] = {
        "shape": shape,
        "inputs": {m: list(s) for m, s in SHAPES[shape].items()},
    }
    for arm in arms.values():
        for _ in range(warmup):
            arm.step()
    if "baseline" in arms:
        record["agreement"] = agreement(arms)
    for name, arm in arms.items():
        total, calls, prof = count_calls(arm)
        record.setdefault("aten_calls", {})[name] = total
        record.setdefault("top_ops", {})[name] = dict(calls.most_common(15))
        if show:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for name in order:
            t0 = time.perf_counter()
            arms[name].step()
            times[name].append(time.perf_counter() - t0)
    record["step_ms_median"] = {n: 1e3 * statistics.median(t) for n, t in times.items()}
    record["step_ms_quartiles"] = {
        n: [1e3 * q for q in statistics.quantiles(t, n=4)[::2]] for n, t in times.items()
    }
    record["block_parameters"] = sum(p.numel() for p in arms["current"].block.parameters())
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--baseline", help="git revision whose block runs as a second arm")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="print the op table of one step")
    ap.add_argument("--out", type=Path, help="JSON record to write (atomically)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    packages = {"current": current_block}
    if args.baseline:
        packages["baseline"] = load_block_package(args.baseline)
    load_before = os.getloadavg()
    results = []
    for shape in args.shapes:
        res = run_shape(shape, packages, args.rounds, args.warmup, args.profile)
        line = "  ".join(
            f"{n}: {res['aten_calls'][n]} aten calls, {res['step_ms_median'][n]:.2f} ms "
            f"[{res['step_ms_quartiles'][n][0]:.2f}, {res['step_ms_quartiles'][n][1]:.2f}]"
            for n in packages
        )
        if "agreement" in res:
            line += f"  max rel diff {res['agreement']['max_rel_diff']:.1e}"
        print(f"{shape:8s} {line}", flush=True)
        results.append(res)
    if args.out:
        record = {
            "benchmark": "PgM block fixed cost per training step",
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
            },
            "torch": torch.__version__,
            "commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
            "results": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=args.out.parent, delete=False, suffix=".tmp"
        ) as f:
            json.dump(record, f, indent=2)
        os.replace(f.name, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
