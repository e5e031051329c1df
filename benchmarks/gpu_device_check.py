"""The same cells on the device's CPU and on CUDA: one cell per arm of ``av-digits-timm``.

For each arm (baseline, pgm, capacity, uni_heads, mslr; mslr at its first learning-rate
setting) the cell of seed 0 is built twice from the same seed, on the CPU and on ``--device``
(fp32, TF32 off, cuDNN deterministic), and trains its first ``--steps`` steps on the same
batches; the per-step training losses must agree within ``--rtol`` (relative, default 1e-3:
the two devices run other kernels, so each operation differs in its last bits, about 1e-6
relative, and 20 AdamW steps of a ResNet-18 with batch norm carry that forward; a wrong
device placement, a CPU generator on CUDA tensors or a TF32 matmul moves the losses by
1e-3 and more). Then the speed (steps per second, the first step excluded as warm-up) on
each, and, for information, a full cell per arm on the device (``--epochs``, default 3) with
its test metrics. The runner's own code trains every step (``Runner._prepare`` and the
``Stepper``), so what is checked is what ``pgm bench run --device cuda`` runs.

It needs no data folder: ``--pack OUT.npz`` (run where ``$PGM_DATA_DIR`` holds av-digits)
writes the data set's 3,000 rows with seed 0's split into one compressed ``.npz`` (about
10 MB) that ``--data`` reads through the ``npz`` data set:

    python benchmarks/gpu_device_check.py --pack benchmarks/.gpu/av-digits.npz
    python benchmarks/gpu_device_check.py --data benchmarks/.gpu/av-digits.npz --device cuda
    python benchmarks/gpu_device_check.py --data tiny.npz --device cpu --steps 2  # smoke test

Prints one line per arm and writes a JSON record to ``--out`` when given; the exit status is 1
when an arm's losses differ by more than ``--rtol``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ARMS = ("baseline", "pgm", "capacity", "uni_heads", "mslr")


def pack(out: Path, data_dir: str | None) -> Path:
    """Write av-digits (every row, seed 0's train / valid / test split) as an ``npz`` file."""
    from pgm_plugins.registry import get_registry

    data = get_registry().datasets.entry("av-digits").value(protocol=None, data_dir=data_dir)
    fold = next(iter(data.folds(0)))
    split = np.full(len(data.y), "", dtype="<U5")
    for name in ("train", "valid", "test"):
        split[getattr(fold, name)] = name
    keep = split != ""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        labels=np.asarray(data.y)[keep],
        split=split[keep],
        image=np.asarray(data.x["image"], dtype=np.float32)[keep],
        audio=np.asarray(data.x["audio"], dtype=np.float32)[keep],
    )
    return out


def _runner(data: Path, arm: str, device: str, results: Path, epochs: int) -> Any:
    from pgm_plugins.bench.runner import Runner
    from pgm_plugins.bench.suite import parse_suite
    from pgm_plugins.registry import get_registry

    reg = get_registry()
    table = {
        "description": "gpu device check: av-digits-timm, one cell per arm",
        "dataset": "npz",
        "options": {"path": str(data.resolve())},
        "hosts": ["timm.av"],
        "arms": [arm],
        "seeds": [0],
        "epochs": epochs,
        "patience": 3,
    }
    suite = parse_suite(
        "gpu-device-check", table, datasets=reg.datasets.names(), hosts=reg.bench_hosts.names()
    )
    return Runner(suite, results, device=device, quiet=True, registry=reg)


def first_steps(runner: Any, steps: int) -> tuple[list[float], list[float]]:
    """The first ``steps`` training losses of the runner's one cell, and each step's seconds
    (the loss read, a host sync, ends the step)."""
    cell = runner.plan()[0]
    raw = runner.load_data()
    fold = runner.folds(cell.seed)[cell.fold]
    data, _ = runner._standardised(fold, cell.seed)
    arm = runner.arm(cell.arm)
    grid = arm.grid(runner._context(arm, cell.host, raw, cell.seed, {}, raw.modalities))
    t = runner._prepare(cell, arm, data, raw.modalities, grid[0])
    losses: list[float] = []
    seconds: list[float] = []
    try:
        while len(losses) < steps:
            for inputs, targets, rows in t.run.batches(data, fold.train, t.batch, t.rng):
                if len(losses) == steps:
                    break
                start = time.perf_counter()
                terms = t.stepper.step(t.run.stages(inputs, targets, rows), targets)
                losses.append(float(terms["loss"]))
                seconds.append(time.perf_counter() - start)
    finally:
        if t.handle is not None:
            t.handle.remove()
    return losses, seconds


def _rate(seconds: list[float]) -> float:
    timed = seconds[1:] or seconds
    return len(timed) / max(sum(timed), 1e-12)


def check_arm(data: Path, arm: str, device: str, steps: int, epochs: int) -> dict[str, Any]:
    """One arm: the first steps on the CPU and on ``device``, then a full cell on ``device``."""
    with tempfile.TemporaryDirectory() as tmp:
        cpu_losses, cpu_s = first_steps(_runner(data, arm, "cpu", Path(tmp) / "c", epochs), steps)
        dev_runner = _runner(data, arm, device, Path(tmp) / "d", epochs)
        dev_losses, dev_s = first_steps(dev_runner, steps)
        a, b = np.asarray(cpu_losses), np.asarray(dev_losses)
        rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-12)
        cell: dict[str, Any] | None = None
        if epochs > 0:
            cells = dev_runner.plan()
            dev_runner.run(cells)
            record = dev_runner.store.load(cells[0].key(dev_runner.suite.name))
            cell = {
                "test": record["metrics"]["test"],
                "epochs_run": record["epochs_run"],
                "wall_s": record["time"]["wall_s"],
                "step_ms": record["time"]["step_ms"],
                "device": record["train"]["device"],
            }
    return {
        "arm": arm,
        "losses_cpu": cpu_losses,
        "losses_device": dev_losses,
        "max_rel_diff": float(rel.max()),
        "first_rel_diff": float(rel[0]),
        "steps_per_s_cpu": _rate(cpu_s),
        "steps_per_s_device": _rate(dev_s),
        "speedup": _rate(dev_s) / _rate(cpu_s),
        "cell": cell,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", type=Path, help="write av-digits as an npz here, then stop")
    ap.add_argument("--data-dir", help="where av-digits is (default: $PGM_DATA_DIR)")
    ap.add_argument("--data", type=Path, help="the npz that --pack wrote")
    ap.add_argument("--device", default="cuda", help="the device to compare with the CPU")
    ap.add_argument("--steps", type=int, default=20, help="training steps compared per arm")
    ap.add_argument("--epochs", type=int, default=3, help="full cell on the device (0: none)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--rtol", type=float, default=1e-3, help="per-step relative loss tolerance")
    ap.add_argument("--out", type=Path, help="write the JSON record here")
    args = ap.parse_args(argv)
    if args.pack is not None:
        path = pack(args.pack, args.data_dir)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return 0
    if args.data is None or not args.data.is_file():
        ap.error(
            f"--data {args.data} is not a file; write one with --pack "
            "benchmarks/.gpu/av-digits.npz where $PGM_DATA_DIR holds av-digits."
        )
    if args.steps < 2:
        ap.error(f"--steps must be at least 2 (the first is warm-up); got {args.steps}.")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    results = []
    for arm in args.arms:
        got = check_arm(args.data, arm, args.device, args.steps, args.epochs)
        ok = got["max_rel_diff"] <= args.rtol
        got["ok"] = ok
        results.append(got)
        cell = got["cell"]
        print(
            f"{arm:<10} losses {'equal' if ok else 'DIFFER'} within {args.rtol:g} "
            f"(max rel diff {got['max_rel_diff']:.2e}, first step {got['first_rel_diff']:.2e}); "
            f"{got['steps_per_s_cpu']:.2f} -> {got['steps_per_s_device']:.2f} steps/s "
            f"(x{got['speedup']:.2f})"
            + (
                f"; cell on {cell['device']}: test acc {cell['test']['acc']:.4f} after "
                f"{cell['epochs_run']} epochs, {cell['wall_s']:.1f} s"
                if cell
                else ""
            ),
            flush=True,
        )
    record = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "steps": args.steps,
        "rtol": args.rtol,
        "arms": results,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(args.out)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
