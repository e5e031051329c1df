"""Dry runs: run a host once on example inputs and watch what happens at its layers.

Used by ``plan`` (widths, layouts, call counts, the order in which modalities arrive, and the
joint-mode check) and by ``list_layers``. A dry run changes nothing: it runs under ``no_grad``,
restores every buffer (BatchNorm statistics) and the RNG state, and removes its hooks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from pgm_plugins.errors import InjectionError
from pgm_plugins.injection.site import Site, attach_hook, get_element, set_element, with_data

__all__ = ["ReadWatch", "call_model", "dry_run", "probe_sites"]

# functions that read a tensor's metadata, never its values
_METADATA = {
    "size",
    "dim",
    "numel",
    "stride",
    "is_contiguous",
    "is_floating_point",
    "element_size",
    "data_ptr",
    "storage_offset",
    "__len__",
    "get_device",
    "is_complex",
    "untyped_storage",
    "_is_view",
}


def _name(func: Any) -> str:
    return getattr(func, "__name__", None) or str(func)


def _same_storage(a: Tensor, b: Tensor) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return False


class ReadWatch(TorchFunctionMode):
    """Records host operations that read a tracked tensor's values (views of it are tracked too).

    The joint mode hands the host clones of the early modalities and writes the block's results
    into them when the last modality arrives; a host operation that reads such a clone before then
    would see the unprocessed values (and may have saved it for backward), so the plan is refused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tracked: dict[int, tuple[Tensor, str]] = {}
        self.violations: list[str] = []
        self.paused = 0

    def track(self, t: Tensor, label: str) -> None:
        self.tracked[id(t)] = (t, label)

    def clear(self) -> None:
        self.tracked.clear()

    @contextmanager
    def pause(self) -> Iterator[None]:
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.paused or not self.tracked:
            return func(*args, **kwargs)
        hits = [
            self.tracked[id(t)]
            for t in tree_leaves((args, kwargs))
            if isinstance(t, Tensor) and id(t) in self.tracked
        ]
        out = func(*args, **kwargs)
        if hits and _name(func) not in _METADATA:
            src, label = hits[0]
            name = _name(func)
            in_place = (name.endswith("_") and not name.startswith("__")) or name.startswith("__i")
            if in_place:  # the commit would overwrite what the host computed in place
                msg = f"{name} changed {label} in place"
                if msg not in self.violations:
                    self.violations.append(msg)
            elif isinstance(out, Tensor) and _same_storage(out, src):
                self.track(out, label)  # a view: reading it later is reading the clone
            elif isinstance(out, Tensor) or _name(func) != "__get__":
                msg = f"{_name(func)} read {label}"
                if msg not in self.violations:
                    self.violations.append(msg)
        return out


def call_model(model: nn.Module, example_inputs: Any) -> Any:
    """``model(*xs)`` for a tuple/list, ``model(**xs)`` for a dict, else ``model(xs)``."""
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    if isinstance(example_inputs, tuple | list):
        return model(*example_inputs)
    return model(example_inputs)


@contextmanager
def dry_run(model: nn.Module) -> Iterator[None]:
    """Leave no trace: no grad, buffers and RNG restored afterwards."""
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    with torch.random.fork_rng(devices=[]), torch.no_grad(), warnings.catch_warnings():
        # a reentrant torch.utils.checkpoint warns that no input requires grad: true only
        # because the dry run itself runs under no_grad
        warnings.filterwarnings("ignore", message="None of the inputs have requires_grad")
        try:
            yield
        finally:
            named = dict(model.named_buffers())
            for k, v in buffers.items():
                if k in named:
                    named[k].copy_(v)


@dataclass
class SiteProbe:
    calls: int = 0
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    not_tensor: str | None = None


@dataclass
class ProbeResult:
    sites: dict[str, SiteProbe]
    order: list[str]  #: keys in the order of their first arrival
    violations: list[str]
    batch: int | None = None  #: the inputs' common first axis (None when they disagree)


def _batch_of(inputs: Any) -> int | None:
    """The batch size, when every tensor among the inputs agrees on its first axis."""
    sizes = {int(t.shape[0]) for t in tree_leaves(inputs) if isinstance(t, Tensor) and t.dim() > 0}
    return sizes.pop() if len(sizes) == 1 else None


def probe_sites(
    model: nn.Module,
    sites: Mapping[str, Site],
    example_inputs: Any,
    check_reads: bool,
    call_as: str = "inputs",
) -> ProbeResult:
    """One dry run recording, per site: calls, tensor shapes and arrival order; optionally also
    which early modality the host reads before the last one arrives.

    ``call_as="args"``: ``example_inputs`` is ``(args, kwargs)`` of a real forward call.
    """
    from pgm_plugins.injection.engine import probing

    modules = dict(model.named_modules())
    result = {key: SiteProbe() for key in sites}
    order: list[str] = []
    watch = ReadWatch()
    handles = []

    def make_hook(key: str, site: Site) -> Callable[..., Any]:
        def handle(value: Any) -> Any:
            with watch.pause():
                rec = result[key]
                rec.calls += 1
                if site.call is not None and rec.calls - 1 != site.call:
                    return None
                try:
                    elem = get_element(value, site.element)
                except (KeyError, IndexError, AttributeError, TypeError) as exc:
                    rec.not_tensor = f"no element {site.index!r} ({type(exc).__name__}: {exc})"
                    return None
                packed = isinstance(elem, PackedSequence)
                if not isinstance(elem, Tensor) and not packed:
                    rec.not_tensor = f"element is a {type(elem).__name__}, not a tensor"
                    return None
                if packed:  # seen by the block padded: [B, T, d]
                    sizes = elem.batch_sizes
                    rec.shapes.append((int(sizes[0]), len(sizes), int(elem.data.shape[-1])))
                else:
                    rec.shapes.append(tuple(elem.shape))
                if key not in order:
                    order.append(key)
                if not check_reads or len(order) == len(sites):
                    watch.clear()  # the last modality arrived: later reads are fine
                    return None
                clone = elem.data.clone() if packed else elem.clone()
                watch.track(clone, f"{key!r} (layer {site.layer!r})")
                if packed:
                    return set_element(value, site.element, with_data(elem, clone))
                return set_element(value, site.element, clone)

        return handle

    try:
        for key, site in sites.items():
            handles.append(attach_hook(modules[site.layer], site, make_hook(key, site)))
        with dry_run(model), probing():
            if check_reads:
                with watch:
                    _call(model, example_inputs, call_as)
            else:
                _call(model, example_inputs, call_as)
    except InjectionError:
        raise
    except Exception as exc:
        raise InjectionError(
            f"the dry run with the example inputs failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    return ProbeResult(result, order, watch.violations, _batch_of(example_inputs))


def _call(model: nn.Module, inputs: Any, call_as: str) -> Any:
    if call_as == "args":
        args, kwargs = inputs
        return model(*args, **(kwargs or {}))
    return call_model(model, inputs)
