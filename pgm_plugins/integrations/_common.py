"""What the trainer integrations share: finding the block inside what a trainer holds, choosing
the targets of the block's heads from a batch, and the optimizer groups of the whole module."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from pgm_plugins.errors import InjectionError, InputError
from pgm_plugins.injection import PgMHandle, handle_of
from pgm_plugins.injection.engine import PgMInjection

#: picks the targets of the block's heads out of a batch
TargetsFn = Callable[[Any], "Tensor | None"]


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or say which extra of pgm-plugins brings it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"{what} needs {module!r}, which is not installed ({exc}). Install it with "
            f"pip install 'pgm-plugins[{extra}]'.",
            name=module,
        ) from exc


def find_handle(root: nn.Module) -> PgMHandle:
    """The handle of the one PgM block anywhere inside ``root`` (a trainer's model, a
    ``LightningModule`` holding the injected model as an attribute), bound to the module the
    block was injected into, so ``pgm_plugins.save`` records that module as the host."""
    live = [
        m
        for m in root.modules()
        if any(isinstance(c, PgMInjection) and not c.removed for c in m.children())
    ]
    if not live:
        raise InjectionError(
            f"{type(root).__name__} holds no PgM block; inject one first: "
            "handle = pgm_plugins.inject(model, ...), then pass the model (or the module "
            "holding it) to the trainer."
        )
    if len(live) > 1:
        raise InjectionError(
            f"{type(root).__name__} holds PgM blocks in {len(live)} modules "
            f"({[type(m).__name__ for m in live]}); pass the handle of the one to train "
            "(pgm_handle=...)."
        )
    return handle_of(live[0])


def default_targets(batch: Any) -> Tensor | None:
    """A batch's labels as trainers lay them out: ``batch["labels"]`` of a mapping (the
    Hugging Face convention), the last item of a tuple or list of two or more (``(inputs,
    targets)``, a ``TensorDataset``'s ``[x1, x2, y]``), else None."""
    if isinstance(batch, Mapping):
        value = batch.get("labels")
        return value if isinstance(value, Tensor) else None
    if isinstance(batch, list | tuple) and len(batch) >= 2 and isinstance(batch[-1], Tensor):
        return batch[-1]
    return None


def targets_for(handle: PgMHandle, batch: Any, pick: TargetsFn, hook: str) -> Tensor | None:
    """The targets for ``handle.aux_loss``: ``pick(batch)`` when the block has task heads, None
    when it has none. A block with heads and no targets found is an error (its heads would
    silently never train); ``hook`` names how the user passes their own picker."""
    config = handle.block.config
    if not config.has_labels:
        return None
    targets = pick(batch)
    if targets is None:
        kind = type(batch).__name__
        keys = f" with keys {sorted(map(str, batch))}" if isinstance(batch, Mapping) else ""
        raise InputError(
            f"the PgM block has {config.task} heads, which need targets, and none were found in "
            f"the batch (a {kind}{keys}; looked for batch['labels'] or the last item of a "
            f"tuple or list). Say where they are with {hook}, or configure the block "
            "with task='none'."
        )
    return targets


def module_param_groups(
    root: nn.Module,
    handle: PgMHandle,
    lr: float,
    host_lr: float | None = None,
    weight_decay: float = 0.0,
    no_decay: Callable[[str], bool] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer groups over every trainable parameter of ``root``: the host's (everything
    outside the block, at ``host_lr``, default ``lr``; those ``no_decay(name)`` picks without
    weight decay) and the block's own per (modality, part), at ``lr`` times their multipliers
    (``PgMConfig.lr_mult``, docs/design.md)."""
    block_ids = {id(p) for p in handle.block.parameters()}
    host = [
        (n, p) for n, p in root.named_parameters() if p.requires_grad and id(p) not in block_ids
    ]
    split = no_decay or (lambda name: False)
    host_at = lr if host_lr is None else host_lr
    groups = [
        {"name": name, "params": params, "lr": host_at, "weight_decay": wd}
        for name, params, wd in (
            ("host", [p for n, p in host if not split(n)], weight_decay),
            ("host.no_decay", [p for n, p in host if split(n)], 0.0),
        )
        if params
    ]
    return groups + handle.block.param_groups(lr, weight_decay=weight_decay)
