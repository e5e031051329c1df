"""The injection engine: ``PgMInjection``, the module that lives inside the host and owns the block.

Design (why it looks like this): the unit of an injection is one ``nn.Module`` attached to the host
(``model.pgm_block``). It holds the block as a child, the description of its sites (plain,
picklable data) and whether it is enabled. The hooks on the host's layers are small picklable
callables that point at that module, not closures over an outside object; so ``copy.deepcopy``,
``torch.save(model)``, EMA copies and DDP / DataParallel replicas each carry their own working
block.

The state of one forward (captured modalities, clones, the block's outputs) belongs to that forward:
it lives in a per-thread stack of :class:`_Forward` records, pushed by a pre-hook on the host's root
module and popped by its forward hook. Threads never see each other's forwards, and nothing of a
forward is stored on the module itself: copies and pickles carry none of it.

**Which forwards an auxiliary loss covers** (the rule, per thread and per block):
``aux_loss()`` / ``loss_terms()`` cover every forward run with gradients enabled since the previous
read. A read does not drop them (reading twice gives the same terms); the first forward after a
read starts a new window. Forwards under ``no_grad`` / ``inference_mode`` are not kept. At most
``max_pending`` forwards (default 8) are kept unread; older ones are dropped (bounded memory for a
loop that never reads, such as embedding a data set in train mode) and the next read warns how many
were dropped. A forward that a backward pass already went through, or whose block parameters
changed in place since it ran (an optimizer step), cannot be backpropagated again, so a read skips
it. A read inside the host's forward (a zoo model computing its losses in ``forward``) covers that
forward too, and the next read does not count it again. A recomputation under activation
checkpointing is never counted as a forward. When nothing is left to cover, a read gives the
last forward's terms (an evaluation pass under ``no_grad``; or logging after ``backward``).
``remove()`` drops every thread's state.

Modes:

- **joint**: inside the host's forward, sites capture their modality as the host produces it and
  hand the host a clone; when the last modality arrives the block runs on all of them and writes its
  results into the earlier clones in place (sound only when the host reads no early modality first:
  checked once, by a dry run at plan time with ``example_inputs`` or at the first forward with that
  forward's inputs). Outside the host's forward (a tower or an ``encode_*`` method called on its
  own) a joint-mode site returns the host's own output: the block needs all modalities of a sample.
- **independent**: every call of a site runs the block on that modality at once, inside or outside
  the host's forward (dual encoders embedding a data set one modality at a time). The alignment
  loss pairs the k-th call of each modality since the last read.
"""

from __future__ import annotations

import sys
import threading
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils._pytree import tree_flatten, tree_unflatten

from pgm_plugins.block import ModalParts, PgMConfig, PgMOutput
from pgm_plugins.block.losses import check_targets, sum_terms, task_loss
from pgm_plugins.errors import InjectionError, InputError
from pgm_plugins.injection.site import (
    LAYOUTS,
    Junction,
    Site,
    TokenFrom,
    feature_axis,
    from_block,
    get_element,
    positions,
    repack,
    set_element,
    to_block,
    unpack,
    with_data,
)

__all__ = ["DEFAULT_MAX_PENDING", "PgMInjection", "SiteSlot", "find_injections"]

DEFAULT_MAX_PENDING = 8
#: teacher features for ``aux_loss``: one mapping modality -> tensor, or one per pending forward
Teacher = Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]] | None

#: per-thread engine state: ``stack`` of active forwards, ``probing`` depth of dry runs
_TLS = threading.local()
#: uids of injections whose DataParallel replicas ran training forwards (see ``aux_loss``)
_REPLICA_TRAINED: set[str] = set()


def _stack() -> list[_Forward]:
    stack = getattr(_TLS, "stack", None)
    if stack is None:
        stack = _TLS.stack = []
    return stack


def _probing() -> bool:
    return bool(getattr(_TLS, "probing", 0))


class probing:
    """Context manager: engine hooks pass values through unchanged (dry runs of a host)."""

    def __enter__(self) -> None:
        _TLS.probing = getattr(_TLS, "probing", 0) + 1

    def __exit__(self, *exc: object) -> None:
        _TLS.probing -= 1


@dataclass(frozen=True)
class SiteSlot:
    """One modality's site as the engine keeps it: picklable, no module references."""

    key: str
    site: Site
    layout: str | None  #: None: decided per call (2-D -> BD, 3-D -> BTD)
    width: int


class _Forward:
    """The state of one forward of the host through one injection (never stored on a module)."""

    __slots__ = (
        "args",
        "calls",
        "captured",
        "clones",
        "committed",
        "empty",
        "exc",
        "frame",
        "kwargs",
        "masks",
        "outputs",
        "owner",
        "packed",
        "read",
    )

    def __init__(self, owner: PgMInjection, args: Any = (), kwargs: Any = None) -> None:
        self.owner = owner
        self.args: tuple[Any, ...] = tuple(args)
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.masks: dict[str, Tensor] = {}
        self.captured: dict[str, Tensor] = {}
        self.clones: dict[str, tuple[Tensor, Tensor, str, Any]] = {}
        self.packed: dict[str, tuple[Tensor, PackedSequence]] = {}  #: data clone, the original
        self.calls: dict[str, int] = {}
        self.committed = False
        self.empty = False  #: a site saw a batch of 0 samples and passed it through
        self.read = False  #: a read inside this forward (a zoo's forward computing its losses)
        self.outputs: list[PgMOutput] = []
        #: the exception being handled when the forward began (a forward run inside a caller's
        #: ``except`` clause sees it in ``sys.exc_info()`` without having raised)
        self.exc: BaseException | None = sys.exc_info()[1]
        #: the frame that called the host (to tell a nested forward from a stale record)
        self.frame: Any = None


def _on_stack(frame: Any) -> bool:
    """Whether ``frame`` is still running in this thread (a caller of the current frame)."""
    f: Any = sys._getframe(1)
    while f is not None:
        if f is frame:
            return True
        f = f.f_back
    return False


def _caller_frame() -> Any:
    """The frame of ``nn.Module._call_impl`` running the root's pre-hook: it lives as long as
    the host's forward (the hook's own frames end when it returns)."""
    f: Any = sys._getframe(1)
    while f is not None and f.f_code.co_name != "_call_impl":
        f = f.f_back
    return f


def _resolve(owner: PgMInjection) -> PgMInjection:
    """The injection a hook acts for in this thread: the one whose forward is running, when that
    is a replica of the hook's own (``nn.DataParallel`` shares hook objects between replicas,
    which keep the module's ``uid``); else the hook's own."""
    stack = getattr(_TLS, "stack", None)
    if stack:
        for fwd in reversed(stack):
            if fwd.owner is owner:
                return owner
            if fwd.owner.uid == owner.uid:
                return fwd.owner
    return owner


class _Spent:
    """A flag a gradient hook sets when a backward pass goes through a recorded forward."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def __call__(self, grad: Tensor) -> None:
        self.done = True


class _Local(threading.local):
    """Per-thread, per-injection record of forwards not yet covered by a read."""

    def __init__(self) -> None:
        self.pending: list[list[PgMOutput]] = []  #: one entry per forward (or independent call)
        #: the block parameters at each forward and the sum of their version counters then
        self.versions: list[tuple[list[Tensor], int] | None] = []
        self.spent: list[_Spent] = []  #: set once a backward pass went through the forward
        self.read = False  #: the pending forwards were read; the next forward starts a new window
        self.dropped = 0
        self.last: list[PgMOutput] = []  #: outputs of the last forward, for parts and stats
        self.forwards = 0
        self.complete = True


# ---------------------------------------------------------------------- hooks
class _EngineHook:
    """Base of the engine's hooks: picklable, deep-copyable, bound to the injection module."""

    def __init__(self, owner: PgMInjection) -> None:
        self.owner = owner


class _SiteOutputHook(_EngineHook):
    def __init__(self, owner: PgMInjection, key: str) -> None:
        super().__init__(owner)
        self.key = key

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        return _resolve(self.owner)._on_site(self.key, output)


class _SiteInputHook(_SiteOutputHook):
    def __call__(self, module: nn.Module, args: Any, kwargs: Any) -> Any:
        new = _resolve(self.owner)._on_site(self.key, args)
        return None if new is None else (new, kwargs)


# The root hooks only keep books (open and close a forward's record, the one-time read check);
# they run eagerly under torch.compile, where dynamo would otherwise trace them as frames of
# their own and replay their bookkeeping on thread-local records.
class _TokenSourceHook(_SiteOutputHook):
    """Records, per thread, the positions a ``TokenFrom`` reads from its layer's input."""

    def __call__(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if _probing():
            return
        owner = _resolve(self.owner)
        token = owner.slots[self.key].site.token
        assert isinstance(token, TokenFrom)
        positions = getattr(_TLS, "positions", None)
        if positions is None:
            positions = _TLS.positions = {}
        positions[(id(owner), self.key)] = token.positions(args)


class _RootPreHook(_EngineHook):
    @torch.compiler.disable
    def __call__(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        _owner_in(module, self.owner)._begin(module, args, kwargs)


class _RootHook(_EngineHook):
    @torch.compiler.disable
    def __call__(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        return _owner_in(module, self.owner)._end(output)


def _owner_in(root: nn.Module, owner: PgMInjection) -> PgMInjection:
    """The injection module inside ``root``: the hook's own, or a DataParallel replica's."""
    found = root._modules.get(owner.prefix)
    return found if isinstance(found, PgMInjection) else owner


# ---------------------------------------------------------------------- the module
class PgMInjection(nn.Module):
    """A PgM block inside a host, with everything its hooks need. Attached as ``model.<prefix>``.

    Users hold a :class:`~pgm_plugins.injection.handle.PgMHandle` (``pgm_plugins.handle_of(model)``
    gives one for any model, copies included); this module is what the model carries.
    """

    block: Any  #: the PgM block (or a control arm's module with the same contract)

    def __init__(
        self,
        block: nn.Module,
        slots: Mapping[str, SiteSlot],
        *,
        mode: str,
        junction: Junction | None,
        prefix: str,
        order: Sequence[str],
        read_check_pending: bool,
        adapter: str | None,
        spelled: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.block = block
        self.slots = dict(slots)
        self.mode = mode
        self.junction = junction
        self.prefix = prefix
        self.order = list(order)
        self.read_check_pending = read_check_pending
        self.adapter = adapter
        self.spelled = dict(spelled)
        self.enabled = True
        self.removed = False
        self.warned_missing = False
        self.max_pending = DEFAULT_MAX_PENDING
        #: names of the host parameters ``freeze_host`` switched off (they trained before)
        self.frozen: list[str] = []
        self.uid = uuid.uuid4().hex
        self._local = _Local()
        self._check_lock = threading.Lock()

    # transient state never travels with copies or pickles
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_local", None)
        state.pop("_check_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._local = _Local()
        self._check_lock = threading.Lock()

    @property
    def config(self) -> PgMConfig:
        config: PgMConfig = self.block.config
        return config

    def extra_repr(self) -> str:
        state = "removed" if self.removed else ("enabled" if self.enabled else "disabled")
        sites = {k: s.site.describe() for k, s in self.slots.items()}
        return f"mode={self.mode}, sites={sites}, {state}"

    # ------------------------------------------------------------------ attach / detach
    def attach(self, model: nn.Module, modules: Mapping[str, nn.Module]) -> None:
        """Add this module to ``model`` and hook the site layers (``modules``: key -> layer)."""
        model.add_module(self.prefix, self)
        try:
            for key, slot in self.slots.items():
                layer = modules[key]
                if slot.site.at == "input":
                    layer.register_forward_pre_hook(_SiteInputHook(self, key), with_kwargs=True)
                else:
                    layer.register_forward_hook(_SiteOutputHook(self, key))
            for key, layer in modules.items():
                if key.startswith("token source:"):
                    layer.register_forward_pre_hook(
                        _TokenSourceHook(self, key.split(":", 1)[1]), with_kwargs=True
                    )
            model.register_forward_pre_hook(_RootPreHook(self), with_kwargs=True)
            model.register_forward_hook(_RootHook(self), with_kwargs=True, always_call=True)
        except BaseException:
            self.detach(model)
            raise

    def freeze(self, model: nn.Module, names: Sequence[str]) -> None:
        """Switch off ``requires_grad`` of the host parameters ``names`` that train now, and
        remember them (see :mod:`pgm_plugins.injection.freeze`)."""
        params = dict(model.named_parameters())
        for name in names:
            p = params[name]
            if p.requires_grad and name not in self.frozen:
                p.requires_grad_(False)
                self.frozen.append(name)

    def unfreeze(self, model: nn.Module) -> None:
        """Switch back on every host parameter :meth:`freeze` switched off."""
        params = dict(model.named_parameters())
        for name in self.frozen:
            if name in params:
                params[name].requires_grad_(True)
        self.frozen = []

    def detach(self, model: nn.Module) -> None:
        """Take this module's hooks off every layer of ``model`` and the module out of it, and
        give back the ``requires_grad`` of the host parameters it froze."""
        self.unfreeze(model)
        for module in model.modules():
            for hooks, extras in (
                (
                    module._forward_hooks,
                    (module._forward_hooks_with_kwargs, module._forward_hooks_always_called),
                ),
                (module._forward_pre_hooks, (module._forward_pre_hooks_with_kwargs,)),
            ):
                for hid, hook in list(hooks.items()):
                    if isinstance(hook, _EngineHook) and hook.owner is self:
                        del hooks[hid]
                        for extra in extras:
                            extra.pop(hid, None)
        if model._modules.get(self.prefix) is self:
            delattr(model, self.prefix)
        self._local = _Local()  # drops every thread's tensors
        stack = getattr(_TLS, "stack", None)
        if stack:  # records of forwards interrupted in this thread (KeyboardInterrupt)
            stack[:] = [f for f in stack if f.owner is not self]

    # ------------------------------------------------------------------ the forward
    def _begin(self, root: nn.Module, args: Any, kwargs: Any) -> None:
        if _probing():
            return
        if self.read_check_pending and self.enabled:
            self._check_reads(root, args, kwargs)
        stack = _stack()
        if any(f.owner is self for f in stack):
            # a forward interrupted by KeyboardInterrupt never ran its end hook: drop it; one
            # whose caller is still running is an outer forward (the model calls itself)
            stack[:] = [f for f in stack if f.owner is not self or _on_stack(f.frame)]
        fwd = _Forward(self, args, kwargs)
        fwd.frame = _caller_frame()
        stack.append(fwd)

    def _end(self, output: Any) -> Any:
        if _probing():
            return None
        stack = _stack()
        fwd = next((f for f in reversed(stack) if f.owner is self), None)
        if fwd is None:
            return None
        stack.remove(fwd)
        exc = sys.exc_info()[1]
        if exc is not None and exc is not fwd.exc:
            return None  # the host's forward raised: torch runs this hook from its except clause
        if self.mode == "joint" and self.enabled and not self.warned_missing:
            silent = [k for k in self.slots if k not in fwd.calls]
            if silent and self.junction is None:
                self.warned_missing = True
                warnings.warn(
                    f"PgM sites {[self.slots[k].site.describe() for k in silent]} did not run in "
                    f"this forward of the host (their layers were never called), so the block "
                    "left the host's output unchanged and ran on the other modalities for its "
                    "losses only. If those modalities are missing on purpose, ignore this (it is "
                    "shown once); otherwise choose layers that run (pgm_plugins.list_layers("
                    "model, example_inputs=...) shows call counts).",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if fwd.captured and not fwd.committed and self.enabled:
            # some modalities never arrived: the host already consumed the others unchanged, so
            # the block runs on those present only for its losses and parts
            fwd.outputs.append(self._run(fwd.captured, fwd.masks))
        self._record(
            fwd.outputs,
            complete=fwd.committed or not fwd.captured,
            read=fwd.read,
            empty=fwd.empty,
        )
        if (
            self.training
            and torch.is_grad_enabled()
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            return _keep_alive(output, self)
        return None

    def _current(self) -> _Forward | None:
        stack = getattr(_TLS, "stack", None)
        if not stack:
            return None
        for fwd in reversed(stack):
            if fwd.owner is self:
                return fwd
        return None

    def _on_site(self, key: str, value: Any) -> Any:
        if _probing() or not self.enabled:
            return None
        fwd = self._current()
        slot = self.slots[key]
        if fwd is not None:
            calls = fwd.calls.get(key, 0)
            fwd.calls[key] = calls + 1
            if slot.site.call is not None and calls != slot.site.call:
                return None
        elif slot.site.call is not None and self.mode == "joint":
            return None
        recompute = _recomputing()
        if recompute and _in_reentrant_checkpoint():
            raise InjectionError(
                f"site {slot.site.describe()} runs inside torch.utils.checkpoint with "
                "use_reentrant=True: its first forward ran without gradients, so the PgM block "
                "and its auxiliary loss would get wrong gradients. Use "
                "torch.utils.checkpoint.checkpoint(..., use_reentrant=False)."
            )
        t = get_element(value, slot.site.element)
        if isinstance(t, PackedSequence):
            return self._on_packed(key, slot, value, t, fwd, recompute)
        if not isinstance(t, Tensor):
            raise InjectionError(
                f"site {slot.site.describe()} gave a {type(t).__name__}, not a tensor; check the "
                "site's index."
            )
        layout = _check_layout(slot, t)
        if t.shape[1 if layout == "TBD" else 0] == 0:
            # a batch of 0 samples (the last shard of a data set): nothing for the block to do
            if fwd is not None:
                fwd.empty = True
            elif not recompute:
                self._record([], complete=True, empty=True)
            return None
        full = to_block(t, layout)
        index = None if slot.site.token is None else _token_index(self, slot, full)
        x = full if index is None else full[index]
        mask = None
        if slot.site.mask is not None and fwd is not None:
            mask = slot.site.mask.select(fwd.args, fwd.kwargs)
            if mask is not None:
                _check_mask(slot, mask, x)
                fwd.masks[key] = mask
        if self.junction is not None:
            merged = from_block(self._junction(x, fwd), layout, t)
            return set_element(value, slot.site.element, merged)
        if self.mode == "independent":
            out = self._run({key: x}, {key: mask} if mask is not None else {})
            if fwd is not None:
                fwd.outputs.append(out)
            elif not recompute:
                self._record([out], complete=True)
            new = _write_back(slot, full, out.outputs[key], layout, t, index)
            return set_element(value, slot.site.element, new)
        # joint mode
        if fwd is None:
            if recompute:
                return self._recompute_joint(slot, value, t)
            return None  # outside the host's forward: the host's own output
        if key in fwd.captured:
            raise InjectionError(
                f"layer {slot.site.layer!r} ran again in one forward before the block ran (it "
                "runs several times per forward); choose the call with Site(..., call=N)."
            )
        fwd.captured[key] = x
        if len(fwd.captured) < len(self.slots):
            clone = t.clone()
            fwd.clones[key] = (clone, full, layout, index)
            return set_element(value, slot.site.element, clone)
        out = self._commit(fwd)
        new = _write_back(slot, full, out.outputs[key], layout, t, index)
        return set_element(value, slot.site.element, new)

    def _on_packed(
        self,
        key: str,
        slot: SiteSlot,
        value: Any,
        ps: PackedSequence,
        fwd: _Forward | None,
        recompute: bool,
    ) -> Any:
        """A site whose element is a ``PackedSequence`` (an RNN's output): the block sees it
        padded, ``[B, T, d]`` with the lengths as its mask, and the host gets it packed back."""
        if ps.data.shape[-1] != slot.width or slot.site.token is not None:
            raise InputError(
                f"site {slot.site.describe()} ({slot.key!r}) gave a PackedSequence of width "
                f"{ps.data.shape[-1]}; expected {slot.width} (token= does not apply to packed "
                "sequences)."
            )
        x, mask = unpack(ps)
        if self.mode == "independent" or self.junction is not None:
            out = self._run({key: x}, {key: mask})
            if fwd is not None:
                fwd.outputs.append(out)
            elif not recompute:
                self._record([out], complete=True)
            return set_element(
                value, slot.site.element, with_data(ps, repack(ps, out.outputs[key]))
            )
        if fwd is None:
            if recompute:
                return set_element(value, slot.site.element, with_data(ps, ps.data.clone()))
            return None
        if key in fwd.captured:
            raise InjectionError(
                f"layer {slot.site.layer!r} ran again in one forward before the block ran; choose "
                "the call with Site(..., call=N)."
            )
        fwd.captured[key] = x
        fwd.masks[key] = mask
        if len(fwd.captured) < len(self.slots):
            clone = ps.data.clone()
            fwd.packed[key] = (clone, ps)
            return set_element(value, slot.site.element, with_data(ps, clone))
        out = self._commit(fwd)
        return set_element(value, slot.site.element, with_data(ps, repack(ps, out.outputs[key])))

    def _commit(self, fwd: _Forward) -> PgMOutput:
        """Run the block on every captured modality and write the early ones into their clones."""
        out = self._run(fwd.captured, fwd.masks)
        for k, (clone, full_k, lay, index_k) in fwd.clones.items():
            clone.copy_(_write_back(self.slots[k], full_k, out.outputs[k], lay, clone, index_k))
        for k, (data, ps) in fwd.packed.items():
            data.copy_(repack(ps, out.outputs[k]))
        fwd.outputs.append(out)
        fwd.committed = True
        return out

    def _run(self, inputs: dict[str, Tensor], masks: Mapping[str, Tensor]) -> PgMOutput:
        """The block on some modalities (masks passed only when a site has one)."""
        if masks:
            out: PgMOutput = self.block(inputs, masks=dict(masks))
        else:
            out = self.block(inputs)
        return out

    def _recompute_joint(self, slot: SiteSlot, value: Any, t: Tensor) -> Any:
        """A site re-run by activation checkpointing (non-reentrant) in joint mode."""
        if self.order and slot.key == self.order[-1]:
            raise InjectionError(
                f"site {slot.site.describe()} is recomputed by activation checkpointing, and in "
                "joint mode the PgM block runs when this modality arrives: the recomputation "
                "cannot see the other modalities again. Checkpoint a tower of an earlier modality "
                "only, keep this layer outside the checkpointed region, or use "
                "mode='independent'."
            )
        # an early modality: the forward handed the host a clone, written later in place; the
        # recomputation repeats the clone (what the tensors saved inside the region saw)
        return set_element(value, slot.site.element, t.clone())

    def _junction(self, x: Tensor, fwd: _Forward | None) -> Tensor:
        assert self.junction is not None
        widths = self.junction.widths
        parts = dict(zip(widths, x.split(list(widths.values()), dim=-1), strict=True))
        out = self.block(parts)
        if fwd is not None:
            fwd.outputs.append(out)
            fwd.committed = True
        elif not _recomputing():
            self._record([out], complete=True)
        return torch.cat([out.outputs[m] for m in widths], dim=-1)

    # ------------------------------------------------------------------ records and reads
    def _record(
        self, outputs: list[PgMOutput], complete: bool, read: bool = False, empty: bool = False
    ) -> None:
        """Keep a forward's outputs for the next read (``empty``: a batch of 0 samples, kept with
        no outputs so that the read covering it gives a zero loss, not an older forward's)."""
        if not outputs and not empty:
            return
        local = self._local
        local.forwards += 1
        local.complete = complete
        local.last = outputs
        if not torch.is_grad_enabled() or not self.block.training:
            # an evaluation forward (no_grad, or eval mode with gradients on, as metric code
            # often runs): kept as the last forward for logging, never trained on
            return
        if getattr(self, "_is_replica", False):
            # nn.DataParallel runs replicas in worker threads: their records cannot reach the
            # thread that reads aux_loss()
            _REPLICA_TRAINED.add(self.uid)
            return
        if local.read:
            local.pending, local.versions, local.spent = [], [], []
            local.read, local.dropped = False, 0
        spent = _Spent()
        compiling = torch.compiler.is_compiling()
        if not compiling:
            for out in outputs:
                t = next(iter(out.outputs.values()))
                if t.requires_grad:
                    t.register_hook(spent)
                    break
        local.pending.append(outputs)
        local.versions.append(None if compiling else self._params_version())
        local.spent.append(spent)
        local.read = read  # read inside its own forward: the next forward starts a new window
        if len(local.pending) > self.max_pending:
            del local.pending[0], local.versions[0], local.spent[0]
            local.dropped += 1

    def _params_version(self) -> tuple[list[Tensor], int]:
        """The block's parameters and the sum of their version counters, which changes with
        every in-place update (an optimizer step).

        Walks ``_modules`` / ``_parameters`` directly, once per forward (``parameters()`` costs
        about four times as much in Python); a read checks the same tensors again
        (``_unchanged``) without walking the modules. A parameter shared by two modules counts
        twice, which keeps the sum a change detector: versions only grow."""
        params: list[Tensor] = []
        stack: list[nn.Module] = [self.block]
        while stack:
            module = stack.pop()
            params.extend(p for p in module._parameters.values() if p is not None)
            stack.extend(c for c in module._modules.values() if c is not None)
        return params, sum(p._version for p in params)

    def _live_pending(self) -> list[list[PgMOutput]]:
        """Pending forwards that can still be backpropagated: one a backward pass already went
        through, or whose block parameters changed in place since (an optimizer step), cannot,
        and is skipped."""
        local = self._local
        keep = [
            (v is None or _unchanged(*v)) and not s.done
            for v, s in zip(local.versions, local.spent, strict=True)
        ]
        if not all(keep):
            local.pending = [r for r, k in zip(local.pending, keep, strict=True) if k]
            local.versions = [v for v, k in zip(local.versions, keep, strict=True) if k]
            local.spent = [s for s, k in zip(local.spent, keep, strict=True) if k]
        return local.pending

    def pending(self) -> list[list[PgMOutput]]:
        """The forwards the next read covers (this thread), oldest first."""
        return list(self._live_pending())

    def loss_terms(
        self,
        targets: Tensor | Sequence[Tensor] | None = None,
        teacher: Teacher = None,
    ) -> tuple[dict[str, Tensor], int]:
        """Weighted auxiliary loss terms over the pending forwards; returns ``(terms, count)``.
        ``teacher``: the teacher features (``lambda_teacher > 0``), one mapping for every
        forward or a list, one per forward, like ``targets``."""
        if teacher is not None and self.config.lambda_teacher == 0:
            raise InputError(
                "teacher= was given but the block's lambda_teacher is 0, so nothing would read "
                "it; configure lambda_teacher > 0 (e.g. 0.5) or drop teacher=."
            )
        if _probing():
            return {}, 1  # a dry run of the engine (a zoo reading its losses in __call__)
        local = self._local
        records = list(self._live_pending())
        fwd = self._current()
        if fwd is not None and fwd.outputs:  # read inside the host's forward: it counts too
            records.append(list(fwd.outputs))
            fwd.read = True
        if not records and self.uid in _REPLICA_TRAINED:
            raise InjectionError(
                "the model ran under torch.nn.DataParallel, whose replicas run the PgM block in "
                "worker threads: their outputs are right, but the auxiliary loss of those "
                "forwards cannot be read. Train with DistributedDataParallel (one process per "
                "device, supported), or call the model without DataParallel."
            )
        if not records and local.last:
            # nothing to train on: the last forward (an eval pass under no_grad, or one already
            # backpropagated) still gives its loss, for logging
            records = [local.last]
        if local.dropped:
            warnings.warn(
                f"{local.dropped} training forwards of the PgM block were dropped unread (more "
                f"than max_pending={self.max_pending} forwards since the last aux_loss read); "
                "the auxiliary loss covers the last ones only. Read aux_loss() every step, or run "
                "forwards you do not train on under torch.no_grad().",
                RuntimeWarning,
                stacklevel=3,
            )
            local.dropped = 0
        local.read = True
        per_record = _targets_per_record(targets, records)
        per_teacher = _teacher_per_record(teacher, records)
        terms: dict[str, Tensor] = {}
        for outs, y, t in zip(records, per_record, per_teacher, strict=True):
            for out in outs:
                for name, value in out.loss_terms(y, t).items():
                    terms[name] = terms[name] + value if name in terms else value
        if self.mode == "independent":
            for name, value in self._cross_call_terms(records, targets).items():
                terms[name] = terms[name] + value if name in terms else value
        return terms, len(records)

    def _call_groups(self, records: list[list[PgMOutput]]) -> list[dict[str, Tensor]]:
        """One-modality calls grouped into samples seen by several modalities: the calls inside
        one host forward among themselves; calls on their own by the k-th call of each modality.
        Each group maps modality -> its paired code ``paired_learned``."""
        groups: list[dict[str, Tensor]] = []
        alone: dict[str, list[Tensor]] = {}
        for outs in records:
            codes = [
                (m, p.paired_learned)
                for o in outs
                if len(o.parts) == 1  # a call that saw several modalities pairs by itself
                for m, p in o.parts.items()
                if p.paired_learned is not None
            ]
            if len(outs) > 1:
                group: dict[str, Tensor] = {}
                for m, code in codes:
                    group.setdefault(m, code)
                groups.append(group)
            else:
                for m, code in codes:
                    alone.setdefault(m, []).append(code)
        counts = {m: len(v) for m, v in alone.items()}
        if len(counts) > 1 and len(set(counts.values())) > 1:
            warnings.warn(
                f"the calls since the last read embed the modalities unevenly ({counts}); the "
                "cross-call terms pair the k-th call of each modality, so the extra calls get "
                "none. Embed what you do not train on under torch.no_grad().",
                RuntimeWarning,
                stacklevel=5,
            )
        for k in range(max(counts.values(), default=0)):
            groups.append({m: v[k] for m, v in alone.items() if len(v) > k})
        usable = []
        for codes_k in groups:
            if len(codes_k) < 2:
                continue
            batches = {m: c.shape[0] for m, c in codes_k.items()}
            if len(set(batches.values())) != 1:
                warnings.warn(
                    f"calls paired across modalities have different batch sizes ({batches}); "
                    "that pair gets no cross-call term.",
                    RuntimeWarning,
                    stacklevel=5,
                )
                continue
            usable.append(codes_k)
        return usable

    def _cross_call_terms(
        self, records: list[list[PgMOutput]], targets: Tensor | Sequence[Tensor] | None
    ) -> dict[str, Tensor]:
        """Independent mode: the terms that need several modalities, over calls of one step: the
        alignment loss (``shared`` learner) and the paired head's task loss."""
        cfg = self.config
        align = cfg.paired == "shared" and cfg.lambda_align > 0
        head = (
            isinstance(targets, Tensor)
            and cfg.has_labels
            and cfg.lambda_paired > 0
            and getattr(self.block, "paired_bias", None) is not None
        )
        if not (align or head):
            return {}
        terms: dict[str, Tensor] = {}
        for codes in self._call_groups(records):
            found: dict[str, Tensor] = {}
            if align:
                found["align"] = cfg.lambda_align * self.block.align_loss(codes)
            batch = next(iter(codes.values())).shape[0]
            if head and isinstance(targets, Tensor) and targets.shape[0] == batch:
                y = check_targets(targets, cfg.task, batch, cfg.num_classes)
                logits = self.block.paired_logits(codes)
                found["task.paired"] = cfg.lambda_paired * task_loss(
                    logits, y, cfg.task, cfg.regression_loss
                )
            for name, value in found.items():
                terms[name] = terms[name] + value if name in terms else value
        return terms

    def aux_loss(
        self, targets: Tensor | Sequence[Tensor] | None = None, teacher: Teacher = None
    ) -> Tensor:
        terms, count = self.loss_terms(targets, teacher)
        if count == 0:
            raise InjectionError(
                "aux_loss() needs a forward of the model with the block enabled first; it covers "
                "the forwards run with gradients since the last read."
            )
        if _probing():
            return torch.zeros(())
        if not terms:
            # forwards of empty batches only: a zero that reaches every trainable block
            # parameter, so ``(task_loss + aux).backward()`` and DDP work as on any step
            params = [p for p in self.block.parameters() if p.requires_grad]
            if params:
                return torch.stack([p.reshape(-1)[:1].sum() for p in params]).sum() * 0.0
        like = next(iter(self._local.last[0].outputs.values())) if self._local.last else None
        if like is None:
            fwd = self._current()
            if fwd is None or not fwd.outputs:
                return torch.zeros((), device=self._device())
            like = next(iter(fwd.outputs[0].outputs.values()))
        return sum_terms(terms, like)

    def _device(self) -> torch.device:
        p = next(self.block.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def last_parts(self) -> dict[str, ModalParts]:
        return {m: p.detach() for o in self._local.last for m, p in o.parts.items()}

    def last_shares(self) -> dict[str, float]:
        return {m: v for o in self._local.last for m, v in o.share_values().items()}

    # ------------------------------------------------------------------ the joint-mode check
    def _check_reads(self, root: nn.Module, args: Any, kwargs: Any) -> None:
        """Run the joint-mode read check once, as a dry run with this forward's inputs."""
        from pgm_plugins.injection.probe import probe_sites

        with self._check_lock:
            if not self.read_check_pending:
                return
            sites = {k: s.site for k, s in self.slots.items()}
            with probing():
                result = probe_sites(root, sites, (args, kwargs), check_reads=True, call_as="args")
            if len(result.order) < len(sites):
                return  # a modality is missing: reads of clones never written are harmless
            self.read_check_pending = False
            if result.order:
                self.order = list(result.order)
            if result.violations:
                self.detach(root)
                self.removed = True
                raise InjectionError(
                    "the PgM block was removed: in joint mode the host reads an earlier modality "
                    f"before the last one is produced ({'; '.join(result.violations)}). Choose "
                    "sites where every modality is produced before any is consumed, or "
                    "mode='independent'."
                )


# ---------------------------------------------------------------------- helpers
def _check_layout(slot: SiteSlot, t: Tensor) -> str:
    layout = slot.layout or ("BD" if t.dim() == 2 else "BTD")
    if t.dim() != len(layout):
        raise InputError(
            f"site {slot.site.describe()} ({slot.key!r}) has layout {layout!r} "
            f"({len(layout)}-D) but the layer gave a tensor of shape {tuple(t.shape)}; give "
            f"Site(..., layout=...) matching the tensor ({', '.join(LAYOUTS)})."
        )
    axis = feature_axis(layout)
    if t.shape[axis] != slot.width:
        raise InputError(
            f"site {slot.site.describe()} ({slot.key!r}) should carry width {slot.width} on axis "
            f"{axis} (layout {layout!r}) but the tensor has shape {tuple(t.shape)}; wrong layout?"
        )
    count = positions(t, layout)
    token = slot.site.token
    if isinstance(token, int) and (count is None or not -count <= token < count):
        raise InputError(
            f"site {slot.site.describe()} ({slot.key!r}) picks token {slot.site.token} but the "
            f"tensor has shape {tuple(t.shape)} (layout {layout!r}); token= needs a sequence "
            "with that position."
        )
    if count == 0:
        raise InputError(
            f"site {slot.site.describe()} ({slot.key!r}) gave a zero-length sequence "
            f"(shape {tuple(t.shape)}); the PgM block needs at least one token."
        )
    return layout


def _unchanged(params: list[Tensor], total: int) -> bool:
    """Whether none of ``params`` was updated in place since their version sum was ``total``:
    the tensors a recorded forward saved can still be backpropagated."""
    return sum(p._version for p in params) == total


def _check_mask(slot: SiteSlot, mask: Tensor, x: Tensor) -> None:
    if x.dim() != 3 or tuple(mask.shape) != tuple(x.shape[:2]):
        raise InputError(
            f"site {slot.site.describe()} ({slot.key!r}): the mask from {slot.site.mask} has shape "
            f"{tuple(mask.shape)} but the site's tokens are {tuple(x.shape[:2])} ([B, T]); check "
            "InputMask(arg=..., row=...)."
        )


def _write_back(
    slot: SiteSlot, full: Tensor, out: Tensor, layout: str, like: Tensor, index: Any = None
) -> Tensor:
    """The block's result in the host's layout (``like``: the host's tensor, for its shape); a
    ``token`` site (``index``) changes that position only."""
    if index is None:
        return from_block(out, layout, like)
    new = full.clone()
    new[index] = out
    return from_block(new, layout, like)


def _token_index(owner: PgMInjection, slot: SiteSlot, full: Tensor) -> Any:
    """The index of a ``token`` site into ``[B, T, d]``: a position, or one per sample."""
    token = slot.site.token
    if not isinstance(token, TokenFrom):
        return (slice(None), token)
    found = getattr(_TLS, "positions", {}).pop((id(owner), slot.key), None)
    if found is None or found.shape != (full.shape[0],):
        raise InputError(
            f"site {slot.site.describe()} ({slot.key!r}) takes its token from layer "
            f"{token.layer!r}, which did not run (with [B, L] ids) before it in this call."
        )
    return (torch.arange(full.shape[0], device=full.device), found.to(full.device))


def _recomputing() -> bool:
    """True while autograd's engine runs (a forward recomputed by activation checkpointing)."""
    if torch.compiler.is_compiling():
        return False
    return bool(torch._C._current_graph_task_id() != -1)


def _in_reentrant_checkpoint() -> bool:
    frame = sys._getframe(1)
    for _ in range(64):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "backward" and code.co_filename.endswith(
            ("utils/checkpoint.py", "utils\\checkpoint.py")
        ):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _targets_per_record(
    targets: Tensor | Sequence[Tensor] | None, records: list[list[PgMOutput]]
) -> list[Tensor | None]:
    if targets is None or isinstance(targets, Tensor):
        if isinstance(targets, Tensor) and len(records) > 1:
            batches = sorted(
                {next(iter(o.outputs.values())).shape[0] for outs in records for o in outs}
            )
            if len(batches) > 1:
                raise InputError(
                    f"{len(records)} forwards are pending (batch sizes {batches}) and one targets "
                    "tensor cannot label them all; pass a list of targets, one per forward, in "
                    "the order the forwards ran."
                )
        return [targets] * len(records)
    per: list[Tensor | None] = list(targets)
    if len(per) != len(records):
        raise InputError(
            f"{len(per)} targets given for {len(records)} pending forwards; pass one targets "
            "tensor per forward since the last read (or one tensor for all)."
        )
    return per


def _teacher_per_record(
    teacher: Teacher, records: list[list[PgMOutput]]
) -> list[Mapping[str, Tensor] | None]:
    if teacher is None or isinstance(teacher, Mapping):
        return [teacher] * len(records)
    per: list[Mapping[str, Tensor] | None] = list(teacher)
    if len(per) != len(records):
        raise InputError(
            f"{len(per)} teacher mappings given for {len(records)} pending forwards; pass one "
            "mapping per forward since the last read (or one mapping for all)."
        )
    return per


def _keep_alive(output: Any, owner: PgMInjection) -> Any:
    """The output with a zero-valued dependency on every block parameter (DDP needs each
    parameter to take part in every step's graph, whatever the aux loss reads)."""
    leaves, spec = tree_flatten(output)
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, Tensor) and leaf.is_floating_point() and leaf.requires_grad:
            params = [p for p in owner.block.parameters() if p.requires_grad]
            if not params:
                return None
            zero = torch.stack([p.reshape(-1)[:1].sum() for p in params]).sum() * 0.0
            leaves[i] = leaf + zero.to(leaf.dtype)
            return tree_unflatten(leaves, spec)
    return None


def find_injections(model: nn.Module) -> list[PgMInjection]:
    """Every live ``PgMInjection`` attached directly to ``model`` (or to a compiled model's
    original module), in attachment order."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model) if _is_wrapper(model) else model
    return [m for m in model.children() if isinstance(m, PgMInjection) and not m.removed]


def _is_wrapper(model: nn.Module) -> bool:
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    return isinstance(model, DataParallel | DistributedDataParallel)
