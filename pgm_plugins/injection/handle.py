"""``PgMHandle``: the user's view onto a PgM block inside a host (what ``inject`` returns).

The handle owns nothing a model needs: the block, its sites, whether it is enabled and every hook
live in the model as a :class:`~pgm_plugins.injection.engine.PgMInjection` module. So a deep copy,
a pickle, an EMA copy or a DDP replica of the model works on its own, and
``pgm_plugins.handle_of(copy)`` gives a handle for the copy. The rule for which forwards an
auxiliary loss covers is in :mod:`pgm_plugins.injection.engine`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from pgm_plugins.block import ModalParts, PgMOutput
from pgm_plugins.errors import InjectionError
from pgm_plugins.injection.engine import PgMInjection, Teacher, find_injections
from pgm_plugins.injection.freeze import FreezeSpec, TrainableSummary, resolve_freeze, summarise

if TYPE_CHECKING:
    from pgm_plugins.injection.plan import Plan

__all__ = ["PgMHandle", "handle_of"]


class PgMHandle:
    """A PgM block living inside a host model.

    Train with ``loss = task_loss + handle.aux_loss(targets)`` and an optimizer over
    ``handle.param_groups(base_lr)``. ``remove()`` gives the host back exactly, the
    ``requires_grad`` of the parameters ``freeze_host`` froze included.

    ``aux_loss`` covers every forward run with gradients since the previous read (per thread);
    reading twice before the next forward gives the same loss; at most ``max_pending`` unread
    forwards are kept.
    """

    def __init__(self, model: nn.Module, injection: PgMInjection, plan: Plan | None = None) -> None:
        self.model = model
        self.injection = injection
        self.plan = plan

    # ------------------------------------------------------------------ views
    @property
    def block(self) -> Any:
        return self.injection.block

    @property
    def mode(self) -> str:
        return self.injection.mode

    @property
    def adapter(self) -> str | None:
        return self.injection.adapter

    @property
    def enabled(self) -> bool:
        return self.injection.enabled

    @property
    def removed(self) -> bool:
        return self.injection.removed

    @property
    def max_pending(self) -> int:
        """How many unread training forwards are kept (older ones are dropped with a warning)."""
        return self.injection.max_pending

    @max_pending.setter
    def max_pending(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InjectionError(f"max_pending={value!r} must be a positive int.")
        self.injection.max_pending = value

    # ------------------------------------------------------------------ state
    def remove(self) -> nn.Module:
        """Take the block out and the hooks off; the host is then the model it was.

        A handle whose block is no longer in the model (taken out by another handle, and the
        model injected again since) raises and leaves the newer block alone.
        """
        self._check_live()
        self.injection.detach(self.model)
        self.injection.removed = True
        return self.model

    # ------------------------------------------------------------------ which parameters train
    def freeze_host(self, spec: FreezeSpec = True) -> None:
        """Stop the host's parameters training: ``True`` all of them, or the host modules a name,
        an ``fnmatch`` pattern or a list of them match (validated first: a name that matches no
        module raises and freezes nothing). :meth:`unfreeze_host` and :meth:`remove` switch
        exactly these back on."""
        self._check_live()
        self.injection.freeze(self.model, resolve_freeze(self.model, spec, self.injection.prefix))

    def unfreeze_host(self) -> None:
        """Let the host parameters that ``freeze_host`` froze train again (others as they are)."""
        self._check_live()
        self.injection.unfreeze(self.model)

    def trainable_summary(self) -> TrainableSummary:
        """Trainable and total parameter counts of the model, the block and the host."""
        self._check_live()
        return summarise(self.model, self.injection.prefix, self.injection.frozen)

    def print_trainable_parameters(self) -> None:
        """Print peft's line (``trainable params: ... || all params: ... || trainable%: ...``),
        then the split between the PgM block and the host."""
        print(self.trainable_summary())

    def enable(self) -> None:
        self._check_live()
        self.injection.enabled = True

    def disable(self) -> None:
        """Keep the block attached but let the host run as if it were not there (copies keep
        this setting: it lives in the model)."""
        self._check_live()
        self.injection.enabled = False

    def _check_live(self) -> None:
        if self.injection.removed:
            raise InjectionError("this PgM handle was removed; inject again for a new one.")

    # ------------------------------------------------------------------ training API
    @property
    def outputs(self) -> list[PgMOutput]:
        """The block's outputs of the forwards the next read covers (this thread), oldest first."""
        return [o for outs in self.injection.pending() for o in outs]

    def loss_terms(
        self, targets: Tensor | Sequence[Tensor] | None = None, teacher: Teacher = None
    ) -> dict[str, Tensor]:
        """The block's auxiliary loss terms by name, weighted, summed over the forwards since the
        previous read. ``targets``: one tensor for every forward, or a list, one per forward.
        ``teacher``: with ``lambda_teacher > 0`` (and only then), each modality's teacher
        features for the batch, ``{modality: [B, c] or [B, T, c]}`` (or a list, one mapping per
        forward): their distillation into the uni parts (docs/design.md, "Losses")."""
        self._check_live()
        return self.injection.loss_terms(targets, teacher)[0]

    def aux_loss(
        self, targets: Tensor | Sequence[Tensor] | None = None, teacher: Teacher = None
    ) -> Tensor:
        """Sum of :meth:`loss_terms`; add it to the host's task loss."""
        self._check_live()
        return self.injection.aux_loss(targets, teacher)

    @property
    def parts(self) -> dict[str, ModalParts]:
        """Last forward's partitions per modality, detached (for plots)."""
        return self.injection.last_parts()

    def stats(self) -> dict[str, Any]:
        """Uni-modal shares, decoder betas and state of the last forward, as plain numbers."""
        inj = self.injection
        local = inj._local
        return {
            "enabled": inj.enabled,
            "mode": inj.mode,
            "shares": inj.last_shares(),
            "betas": inj.block.betas(),
            "complete": local.complete,
            "forwards": local.forwards,
            "pending": len(inj.pending()),
            "read_check": "pending (first eager forward)" if inj.read_check_pending else "done",
        }

    def param_groups(
        self,
        base_lr: float,
        host_lr: float | None = None,
        host_groups: Iterable[Mapping[str, Any]] | None = None,
        **defaults: Any,
    ) -> list[dict[str, Any]]:
        """Optimizer groups: the host's (one ``"host"`` group at ``host_lr``, default
        ``base_lr``, or your own ``host_groups``) plus the block's per (modality, part)."""
        self._check_live()
        block_ids = {id(p) for p in self.block.parameters()}
        if host_groups is not None:
            groups = [dict(g) for g in host_groups]
            clash = [
                g.get("name", i)
                for i, g in enumerate(groups)
                if any(id(p) in block_ids for p in g["params"])
            ]
            if clash:
                raise InjectionError(
                    f"host_groups {clash} contain the block's parameters; "
                    "build them from the host's parameters only."
                )
        else:
            host = [
                p for p in self.model.parameters() if p.requires_grad and id(p) not in block_ids
            ]
            groups = (
                [
                    {
                        "name": "host",
                        "params": host,
                        "lr": base_lr if host_lr is None else host_lr,
                        **defaults,
                    }
                ]
                if host
                else []
            )
        return groups + self.block.param_groups(base_lr, **defaults)

    def load_host_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> nn.modules.module._IncompatibleKeys:
        """Load the host's own ``state_dict`` (no block keys) into the injected model.

        The block's keys are expected to be absent; with ``strict`` (the default) any host key
        that is missing or unexpected still raises, naming the keys.
        """
        self._check_live()
        prefix = self.injection.prefix + "."
        own = {k: v for k, v in self.model.state_dict().items() if not k.startswith(prefix)}
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own and not k.startswith(prefix)]
        shapes = [
            f"{k!r} has shape {tuple(v.shape)}, the host's {tuple(own[k].shape)}"
            for k, v in state_dict.items()
            if k in own and isinstance(v, Tensor) and v.shape != own[k].shape
        ]
        # validated before anything is copied: a state_dict that does not fit changes nothing
        if shapes or (strict and (missing or unexpected)):
            from pgm_plugins.injection.plan import _near

            lines = (
                [f"missing host key {k!r}" for k in missing if strict]
                + [f"unexpected key {k!r}{_near(k, list(own))}" for k in unexpected if strict]
                + shapes
            )
            raise InjectionError(
                "the state_dict does not fit the host (nothing was loaded): "
                + "; ".join(lines)
                + f". (The PgM block's keys under {prefix!r} may be absent; load them with "
                "pgm_plugins.load.)"
            )
        result = self.model.load_state_dict(state_dict, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(prefix)]
        return nn.modules.module._IncompatibleKeys(missing, list(result.unexpected_keys))

    def __enter__(self) -> PgMHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with pgm_plugins.inject(...) as handle:`` removes the block on leaving."""
        if not self.removed:
            self.remove()

    def __repr__(self) -> str:
        state = "removed" if self.removed else ("enabled" if self.enabled else "disabled")
        return f"PgMHandle({self.mode}, modalities={list(self.block.config.modalities)}, {state})"


def handle_of(model: nn.Module, prefix: str | None = None) -> PgMHandle:
    """A handle for the PgM block inside ``model``: after ``copy.deepcopy``, ``torch.load`` of a
    whole model, an EMA copy, or when the original handle is out of reach.

    ``model`` may be wrapped by ``torch.compile`` or (Distributed)DataParallel. With several
    blocks injected under different prefixes, name one with ``prefix``.
    """
    found = find_injections(model)
    if prefix is not None:
        found = [m for m in found if m.prefix == prefix]
    if not found:
        raise InjectionError(
            f"{type(model).__name__} holds no PgM block"
            + (f" under prefix {prefix!r}" if prefix else "")
            + "; inject one with pgm_plugins.inject(model, ...)."
        )
    if len(found) > 1:
        raise InjectionError(
            f"{type(model).__name__} holds {len(found)} PgM blocks (prefixes "
            f"{[m.prefix for m in found]}); pass prefix= to choose one."
        )
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner) if not hasattr(inner, found[0].prefix) else inner
    return PgMHandle(inner, found[0])
