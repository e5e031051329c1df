"""The injection engine and ``PgMHandle``, what ``inject`` returns.

Hooks on the site layers hand the block each modality's tensor. In **joint** mode the engine
defers: early modalities are cloned and the clones handed to the host; when the last expected
modality arrives the block runs on all of them, writes its results into the earlier clones in place
and returns the last one's result. Writing into a clone (never into a tensor the host made) keeps
autograd sound; a one-time check (``ReadWatch``) makes sure the host reads no clone before the
commit. In **independent** mode each site runs the block on its own modality at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pgm_plugins.block import ModalParts, PgMBlock, PgMOutput
from pgm_plugins.block.losses import sum_terms
from pgm_plugins.errors import InjectionError
from pgm_plugins.injection.probe import ReadWatch
from pgm_plugins.injection.site import (
    attach_hook,
    from_block,
    get_element,
    set_element,
    to_block,
)

if TYPE_CHECKING:
    from pgm_plugins.injection.plan import Plan, ResolvedSite

__all__ = ["PgMHandle"]


def _layout(rs: ResolvedSite, t: Tensor) -> str:
    return rs.layout or ("BD" if t.dim() == 2 else "BTD")


class PgMHandle:
    """A PgM block living inside a host model.

    Train with ``loss = task_loss + handle.aux_loss(targets)`` and an optimizer over
    ``handle.param_groups(base_lr)``. ``remove()`` gives the host back exactly.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.model = plan.model
        self.block: PgMBlock = plan.block
        self.enabled = True
        self.removed = False
        self._hooks: list[Any] = []
        self._outputs: list[PgMOutput] = []
        self._captured: dict[str, Tensor] = {}
        self._clones: dict[str, tuple[Tensor, str]] = {}
        self._calls: dict[str, int] = {}
        self._committed = False
        self._complete = True
        self._forwards = 0
        self._watch: ReadWatch | None = (
            ReadWatch() if plan.read_check == "on the first forward" else None
        )

    # ------------------------------------------------------------------ attach / remove
    @classmethod
    def _attach(cls, plan: Plan) -> PgMHandle:
        model = plan.model
        if hasattr(model, plan.prefix):
            raise InjectionError(
                f"the model already has an attribute {plan.prefix!r}; this plan "
                "was applied already (or another block is injected)."
            )
        self = cls(plan)
        model.add_module(plan.prefix, plan.block)
        try:
            for rs in plan.sites.values():
                self._hooks.append(attach_hook(rs.module, rs.site, self._make_hook(rs)))
            if plan.mode == "joint" and plan.junction is None:
                self._hooks.append(model.register_forward_pre_hook(self._begin))
                self._hooks.append(model.register_forward_hook(self._end, always_call=True))
        except BaseException:
            self._detach()
            raise
        return self

    def _detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if getattr(self.model, self.plan.prefix, None) is self.block:
            delattr(self.model, self.plan.prefix)

    def remove(self) -> nn.Module:
        """Take the block out and the hooks off; the host is then the model it was."""
        self._check_live()
        self._detach()
        self._reset()
        self.removed = True
        return self.model

    def enable(self) -> None:
        self._check_live()
        self.enabled = True

    def disable(self) -> None:
        """Keep the block attached but let the host run as if it were not there."""
        self._check_live()
        self.enabled = False

    def _check_live(self) -> None:
        if self.removed:
            raise InjectionError("this PgM handle was removed; inject again for a new one.")

    # ------------------------------------------------------------------ the hooks
    def _make_hook(self, rs: ResolvedSite) -> Callable[..., Any]:
        index = rs.site.element

        def handle(value: Any) -> Any:
            if not self.enabled:
                return None
            watch = self._watch
            if watch is not None and watch.paused == 0:
                with watch.pause():
                    return self._on_site(rs, value, index)
            return self._on_site(rs, value, index)

        return handle

    def _on_site(self, rs: ResolvedSite, value: Any, index: int | str | None) -> Any:
        calls = self._calls.get(rs.key, 0)
        self._calls[rs.key] = calls + 1
        if rs.site.call is not None and calls != rs.site.call:
            return None
        t = get_element(value, index)
        if not isinstance(t, Tensor):
            raise InjectionError(
                f"site {rs.site.describe()} gave a {type(t).__name__}, not a "
                "tensor; check the site's index."
            )
        layout = _layout(rs, t)
        x = to_block(t, layout)
        if self.plan.junction is not None:
            return set_element(value, index, from_block(self._run_junction(x), layout))
        if self.plan.mode == "independent":
            if any(rs.key in o.outputs for o in self._outputs):
                self._outputs.clear()  # the same modality again: a new step has begun
            out = self.block({rs.key: x})
            self._outputs.append(out)
            return set_element(value, index, from_block(out.outputs[rs.key], layout))
        # joint mode, deferred commit
        if rs.key in self._captured:
            raise InjectionError(
                f"layer {rs.site.layer!r} ran again before the block ran (it runs several times "
                "per forward); choose the call with Site(..., call=N)."
            )
        self._captured[rs.key] = x
        if len(self._captured) < len(self.plan.sites):
            clone = t.clone()
            self._clones[rs.key] = (clone, self.plan.sites[rs.key].layout or layout)
            if self._watch is not None:
                self._watch.track(clone, f"{rs.key!r} (layer {rs.site.layer!r})")
            return set_element(value, index, clone)
        out = self._commit()
        return set_element(value, index, from_block(out.outputs[rs.key], layout))

    def _commit(self) -> PgMOutput:
        out = self.block(self._captured)
        for key, (clone, layout) in self._clones.items():
            clone.copy_(from_block(out.outputs[key], layout))
        self._outputs = [out]
        self._committed = True
        if self._watch is not None:
            self._watch.clear()
        return out

    def _run_junction(self, x: Tensor) -> Tensor:
        assert self.plan.junction is not None
        widths = self.plan.junction.widths
        parts = dict(zip(widths, x.split(list(widths.values()), dim=-1), strict=True))
        out = self.block(parts)
        self._outputs = [out]
        return torch.cat([out.outputs[m] for m in widths], dim=-1)

    def _reset(self) -> None:
        self._captured, self._clones, self._calls = {}, {}, {}
        self._committed, self._complete = False, True

    def _begin(self, module: nn.Module, args: Any) -> None:
        self._reset()
        self._outputs = []
        if self._watch is not None:
            self._watch.__enter__()

    def _end(self, module: nn.Module, args: Any, output: Any) -> None:
        watch, violations = self._watch, []
        if watch is not None:
            watch.__exit__(None, None, None)
            if self._committed:  # the check is decided by the first forward that commits
                violations, self._watch = watch.violations, None
            else:  # reads of clones that are never written are harmless
                watch.violations.clear()
                watch.clear()
        self._forwards += 1
        if not self._committed and self._captured and self.enabled:
            # some modalities never arrived: the host already consumed the others unchanged,
            # so the block runs on those present only for its losses and parts
            self._complete = False
            self._clones = {}
            self._outputs = [self.block(self._captured)]
        self._captured, self._clones = {}, {}
        if violations:
            self.remove()
            raise InjectionError(
                "the PgM block was removed: in joint mode the host read an earlier modality "
                f"before the last one was produced ({'; '.join(violations)}). Choose sites where "
                "every modality is produced before any is consumed, or mode='independent'."
            )

    # ------------------------------------------------------------------ training API
    @property
    def outputs(self) -> list[PgMOutput]:
        """The block's outputs since the last forward began (one in joint mode)."""
        return list(self._outputs)

    def loss_terms(self, targets: Tensor | None = None) -> dict[str, Tensor]:
        """The block's auxiliary loss terms from the last forward, by name, weighted."""
        self._check_live()
        terms: dict[str, Tensor] = {}
        for out in self._outputs:
            for name, value in out.loss_terms(targets).items():
                terms[name] = terms[name] + value if name in terms else value
        if self.plan.mode == "independent" and len(self._outputs) > 1:
            cfg = self.block.config
            codes = {
                m: p.paired_learned
                for o in self._outputs
                for m, p in o.parts.items()
                if p.paired_learned is not None
            }
            sizes = {c.shape[0] for c in codes.values()}
            if (
                cfg.paired == "shared"
                and cfg.lambda_align > 0
                and len(codes) > 1
                and len(sizes) == 1
            ):
                terms["align"] = cfg.lambda_align * self.block.align_loss(codes)
        return terms

    def aux_loss(self, targets: Tensor | None = None) -> Tensor:
        """Sum of :meth:`loss_terms`; add it to the host's task loss."""
        self._check_live()
        if not self._outputs:
            raise InjectionError(
                "aux_loss() needs a forward pass of the model first (and the handle enabled)."
            )
        return sum_terms(self.loss_terms(targets), next(iter(self._outputs[0].outputs.values())))

    @property
    def parts(self) -> dict[str, ModalParts]:
        """Last forward's partitions per modality, detached (for plots)."""
        return {m: p.detach() for o in self._outputs for m, p in o.parts.items()}

    def stats(self) -> dict[str, Any]:
        """Uni-modal shares, decoder betas and state of the last forward, as plain numbers."""
        shares = {m: v for o in self._outputs for m, v in o.share_values().items()}
        return {
            "enabled": self.enabled,
            "mode": self.plan.mode,
            "shares": shares,
            "betas": self.block.betas(),
            "complete": self._complete,
            "forwards": self._forwards,
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

    def __enter__(self) -> PgMHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with pgm_plugins.inject(...) as handle:`` removes the block on leaving."""
        if not self.removed:
            self.remove()

    def __repr__(self) -> str:
        state = "removed" if self.removed else ("enabled" if self.enabled else "disabled")
        return (
            f"PgMHandle({self.plan.mode}, modalities={list(self.block.config.modalities)}, {state})"
        )
