"""The PgM block's cost inside a host's training step: host+PgM / host, eager and with the
block's cost switches (``PgMConfig.compile``, ``check_finite='deferred'``), on any device.

One prepared script for a GPU machine (random inputs and random weights: nothing outside this
repository and its adapters is read). Cases:

- ``mult``: pgm-mmsa's MulT (``build_host("mult")``, MOSI widths 768/5/20, MOSI-length windows
  of 50, batch 32, fp32), the block at its three projections (adapter ``mmsa.mult``);
- ``timm_av``: pgm-timm's ``timm.av`` towers (``AvTowers``, ``timm:vit_base_patch16_224`` image
  tower on random one-channel 224x224 images, 32x20 audio frames, batch 256, bf16 autocast), the
  block at ``encoders.image`` / ``encoders.audio``;
- ``late_fusion``: the core's late-fusion host on MOSI-like utterance vectors (768/5/20, hidden
  32, batch 32, fp32).

Arms, each its own copy of the model from one initialisation, run interleaved (host, pgm, ...,
host, pgm, ... so a shared machine's load hits all alike): ``host`` (no block), ``pgm`` (eager,
the defaults), ``deferred`` (``check_finite='deferred'``), ``compiled`` (``deferred`` plus
``compile=True``) and, on CUDA, ``graphs`` (``deferred`` plus ``compile={'mode':
'reduce-overhead'}``: CUDA graphs). A step is zero_grad, the forward under autocast, the host's
loss plus the block's ``aux_loss``, backward and AdamW's step, timed to the device's completion
(``torch.cuda.synchronize``). Warm-up steps (compilation included) are timed and reported apart.
Reported per arm: median and quartiles of the step time, the median of the per-round ratio to
the host with its quartiles, operators (CPU) or kernels (CUDA) per step from ``torch.profiler``,
and on CUDA the host syncs per step (``torch.cuda.set_sync_debug_mode('warn')``).

    python benchmarks/gpu_block_cost.py --device cuda --out gpu_block_cost.json
    python benchmarks/gpu_block_cost.py --device cpu --steps 3 --small --out /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pgm_plugins as pp

CASES = ("mult", "timm_av", "late_fusion")
#: config changes per arm (None: no block)
ARMS: dict[str, dict[str, Any] | None] = {
    "host": None,
    "pgm": {},
    "deferred": {"check_finite": "deferred"},
    "compiled": {"check_finite": "deferred", "compile": True},
    "graphs": {"check_finite": "deferred", "compile": {"mode": "reduce-overhead"}},
}


@dataclass
class Case:
    """One host: how to build it (seeded), its inputs and targets, its loss, where the block
    goes, and the autocast dtype (None: fp32)."""

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.device], tuple[tuple[Any, ...], dict[str, Tensor], Tensor]]
    loss: Callable[[Any, Tensor], Tensor]
    sites: Any  #: an adapter name or a sites mapping for ``pp.inject``
    dtype: torch.dtype | None
    batch: int
    describe: str


def _mult(small: bool) -> Case:
    from pgm_mmsa.hosts import build_host, example_inputs

    seq, batch = (8, 4) if small else (50, 32)

    def inputs(device: torch.device) -> tuple[tuple[Any, ...], dict[str, Tensor], Tensor]:
        args = example_inputs("mult", seq_len=seq, batch=batch)
        args = tuple(_to(a, device) for a in args)
        y = torch.randn(batch, 1, generator=torch.Generator().manual_seed(1)).to(device)
        return args, {}, y

    return Case(
        "mult",
        lambda: build_host("mult", seq_len=seq).train(),
        inputs,
        lambda out, y: F.l1_loss(out["M"], y),
        "mmsa.mult",
        None,
        batch,
        f"MulT, MOSI widths 768/5/20, window {seq}, batch {batch}, fp32",
    )


def _timm_av(small: bool) -> Case:
    from pgm_timm.bench import AvTowers

    if small:
        tower, opts, side, batch = "timm:test_vit", {"img_size": 32}, 32, 4
    else:
        tower, opts, side, batch = "timm:vit_base_patch16_224", {}, 224, 256
    frames, coeffs = 32, 20

    def inputs(device: torch.device) -> tuple[tuple[Any, ...], dict[str, Tensor], Tensor]:
        g = torch.Generator().manual_seed(0)
        kwargs = {
            "image": torch.rand(batch, 1, side, side, generator=g).to(device),
            "audio": torch.randn(batch, frames, coeffs, generator=g).to(device),
        }
        return (), kwargs, torch.randint(0, 10, (batch,), generator=g).to(device)

    return Case(
        "timm_av",
        lambda: AvTowers(tower, coeffs, 128, 10, tower_options=opts).train(),
        inputs,
        lambda out, y: F.cross_entropy(out.float(), y),
        {"image": "encoders.image", "audio": "encoders.audio"},
        torch.bfloat16,
        batch,
        f"timm.av, {tower} on 1x{side}x{side} images, audio {frames}x{coeffs}, batch {batch}, "
        "bf16 autocast",
    )


def _late_fusion(small: bool) -> Case:
    from pgm_plugins.bench.hosts import LateFusionHost

    widths = {"text": 768, "audio": 5, "vision": 20}
    batch = 4 if small else 32

    def inputs(device: torch.device) -> tuple[tuple[Any, ...], dict[str, Tensor], Tensor]:
        g = torch.Generator().manual_seed(0)
        kwargs = {m: torch.randn(batch, d, generator=g).to(device) for m, d in widths.items()}
        return (), kwargs, torch.randn(batch, 1, generator=g).to(device)

    return Case(
        "late_fusion",
        lambda: LateFusionHost(widths, hidden=32, out_dim=1).train(),
        inputs,
        lambda out, y: F.l1_loss(out, y),
        {m: f"encoders.{m}" for m in widths},
        None,
        batch,
        f"late fusion, MOSI-like vectors 768/5/20, hidden 32, batch {batch}, fp32",
    )


BUILDERS: dict[str, Callable[[bool], Case]] = {
    "mult": _mult,
    "timm_av": _timm_av,
    "late_fusion": _late_fusion,
}


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, tuple | list):
        return type(x)(_to(v, device) for v in x)
    return x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Arm:
    """One model (the case's host, a block injected with ``changes`` unless None) and its AdamW."""

    def __init__(
        self, case: Case, changes: dict[str, Any] | None, device: torch.device, seed: int
    ) -> None:
        torch.manual_seed(seed)
        self.case, self.device = case, device
        self.model = case.build().to(device)
        self.handle = None
        options = (changes or {}).get("compile")
        self.graphs = isinstance(options, dict) and options.get("mode") == "reduce-overhead"
        if changes is not None:
            sites = case.sites
            kwargs: dict[str, Any] = (
                {"adapter": sites} if isinstance(sites, str) else {"sites": sites}
            )
            self.handle = pp.inject(self.model, config=changes, **kwargs)
            groups = self.handle.param_groups(base_lr=1e-4, weight_decay=1e-4)
        else:
            groups = [{"params": list(self.model.parameters()), "lr": 1e-4, "weight_decay": 1e-4}]
        self.opt = torch.optim.AdamW(groups)
        self.args, self.kwargs, self.y = case.inputs(device)

    def _autocast(self) -> Any:
        if self.case.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.case.dtype)

    def forward_backward(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.model(*self.args, **self.kwargs)
            loss = self.case.loss(out, self.y)
            if self.handle is not None:
                loss = loss + self.handle.aux_loss()
        loss.backward()

    def step(self) -> None:
        mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
        if self.graphs and mark is not None:
            mark()  # a new iteration: CUDA-graph outputs of the last one may be overwritten
        self.forward_backward()
        self.opt.step()

    def timed_step(self) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        self.step()
        _sync(self.device)
        return time.perf_counter() - t0

    def finish(self) -> None:
        if self.handle is not None:
            self.handle.block.raise_if_nonfinite()


def count_ops(arm: Arm) -> dict[str, int]:
    """Operators (aten calls, on the CPU) and, on CUDA, kernels launched in one step: the
    forward and backward, and the optimizer's step apart (its cost grows with the number of
    parameter groups, which the block adds; a fused or foreach optimizer is the host's choice)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if arm.device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    out: dict[str, int] = {}
    for part, run in (("fwd_bwd", arm.forward_backward), ("optimizer", arm.opt.step)):
        with profile(activities=acts) as prof:
            run()
            _sync(arm.device)
        events = list(prof.events())
        out[f"aten_calls_{part}"] = sum(e.name.startswith("aten::") for e in events)
        if arm.device.type == "cuda":
            cuda = getattr(torch.autograd.DeviceType, "CUDA", None)
            out[f"cuda_kernels_{part}"] = sum(
                getattr(e, "device_type", None) == cuda for e in events
            )
    return out


def count_syncs(arm: Arm) -> int | None:
    """Host-device synchronisations in one step (CUDA only: ``set_sync_debug_mode('warn')``
    warns at each one)."""
    if arm.device.type != "cuda" or not hasattr(torch.cuda, "set_sync_debug_mode"):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            arm.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    _sync(arm.device)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def _spread(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {
        "median": statistics.median(values),
        "q1": q[0],
        "q3": q[2],
        "min": min(values),
        "max": max(values),
    }


def run_case(
    name: str, arms: list[str], device: torch.device, steps: int, warmup: int, small: bool
) -> dict[str, Any]:
    case = BUILDERS[name](small)
    record: dict[str, Any] = {"case": name, "describe": case.describe, "arms": {}}
    built: dict[str, Arm] = {}
    for arm_name in arms:
        t0 = time.perf_counter()
        try:
            arm = Arm(case, ARMS[arm_name], device, seed=0)
            warm = [arm.timed_step() for _ in range(warmup)]
        except Exception as exc:  # one arm's failure (a torch without inductor) is a result
            record["arms"][arm_name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(f"  {name} {arm_name}: failed: {exc}", file=sys.stderr, flush=True)
            continue
        built[arm_name] = arm
        record["arms"][arm_name] = {
            "build_and_warmup_s": time.perf_counter() - t0,
            "warmup_steps_s": warm,
        }
    for arm_name, arm in built.items():
        try:
            record["arms"][arm_name].update(count_ops(arm))
            record["arms"][arm_name]["syncs_per_step"] = count_syncs(arm)
        except Exception as exc:  # counting is information; the timings still run
            record["arms"][arm_name]["count_error"] = f"{type(exc).__name__}: {exc}"[:2000]
    times: dict[str, list[float]] = {a: [] for a in built}
    order = list(built)
    for r in range(steps):
        for arm_name in order if r % 2 == 0 else list(reversed(order)):
            try:
                times[arm_name].append(built[arm_name].timed_step())
            except Exception as exc:  # an arm that breaks mid-run is dropped, and said so
                record["arms"][arm_name]["error"] = f"step {r}: {type(exc).__name__}: {exc}"
                print(f"  {name} {arm_name}: failed: {exc}", file=sys.stderr, flush=True)
                order.remove(arm_name)
                del built[arm_name], times[arm_name]
    for arm_name, arm in built.items():
        arm.finish()
        entry = record["arms"][arm_name]
        entry["step_ms"] = {k: 1e3 * v for k, v in _spread(times[arm_name]).items()}
        if "host" in times and arm_name != "host":
            ratios = [a / h for a, h in zip(times[arm_name], times["host"], strict=True)]
            entry["ratio_to_host"] = _spread(ratios)
    return record


def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("timm", "pgm_plugins"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # a missing package is recorded, not fatal
            out[name] = None
    return out


def _device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "platform": platform.platform()}
    info["cpus"] = os.cpu_count()
    info["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return info


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(record, f, indent=2)
    os.replace(f.name, path)


def _lines(record: dict[str, Any]) -> Iterator[str]:
    yield f"{record['case']}: {record['describe']}"
    for arm, e in record["arms"].items():
        if "error" in e or "step_ms" not in e:
            yield f"  {arm:9s} failed: {e.get('error', '?')[:200]}"
            continue
        s = e["step_ms"]
        text = f"  {arm:9s} {s['median']:8.2f} ms [{s['q1']:.2f}, {s['q3']:.2f}]"
        if "ratio_to_host" in e:
            r = e["ratio_to_host"]
            text += f"  x{r['median']:.3f} [{r['q1']:.3f}, {r['q3']:.3f}]"
        if "aten_calls_fwd_bwd" in e:
            text += f"  aten {e['aten_calls_fwd_bwd']}+{e['aten_calls_optimizer']}"
        if e.get("cuda_kernels_fwd_bwd") is not None:
            text += f"  kernels {e['cuda_kernels_fwd_bwd']}+{e['cuda_kernels_optimizer']}"
        if e.get("syncs_per_step") is not None:
            text += f"  syncs {e['syncs_per_step']}"
        text += f"  warm-up {e['build_and_warmup_s']:.1f} s"
        yield text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cases", nargs="+", default=["mult", "timm_av"], choices=CASES)
    ap.add_argument("--arms", nargs="+", default=None, choices=list(ARMS))
    ap.add_argument("--steps", type=int, default=40, help="timed steps per arm (interleaved)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per arm (compilation)")
    ap.add_argument("--small", action="store_true", help="tiny shapes (a smoke run on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    ap.add_argument("--out", type=Path, help="JSON record to write (atomically)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # fp32 means fp32: TF32 would make the host's matmuls cheaper than the block's
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    arms = args.arms or [a for a in ARMS if device.type == "cuda" or a != "graphs"]
    if "host" not in arms:
        arms = ["host", *arms]
    record: dict[str, Any] = {
        "benchmark": "PgM block cost inside a host's training step (host+PgM / host)",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "arms": {a: ARMS[a] for a in arms},
        "versions": _versions(),
        "machine": _device_info(device),
        "results": [],
    }
    for name in args.cases:
        t0 = time.perf_counter()
        res = run_case(name, arms, device, args.steps, args.warmup, args.small)
        res["wall_s"] = time.perf_counter() - t0
        record["results"].append(res)
        for line in _lines(res):
            print(line, flush=True)
        if args.out:
            _write(args.out, record)  # what is done survives a later case's failure
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
