"""The block's check that its inputs hold no NaN or inf, at once or deferred.

``PgMConfig.check_finite`` (``docs/design.md``, "Switches"): ``True`` checks every forward before
the block computes anything, which reads a device value on the host (one synchronisation per
forward: on a GPU the host waits for every kernel queued so far). ``'deferred'`` keeps that on CPU;
on a GPU each forward queues its per-modality flags, copies them to pinned host memory without
waiting and records an event; later forwards read the flags of forwards whose event has completed
(``Event.query()``, which never waits) and raise :class:`~pgm_plugins.errors.NonFiniteError`
naming the modality and the forward it came from. At most ``depth`` forwards stay unread: the
next one waits for the oldest, so an error surfaces at most ``depth`` forwards late and the
host never runs more than ``depth`` forwards ahead of the device on this account.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pgm_plugins.errors import NonFiniteError

__all__ = ["DeferredFiniteCheck", "check_finite_now"]

#: forwards a deferred check keeps unread before it waits for the oldest
DEFAULT_DEPTH = 8


def check_finite_now(inputs: Mapping[str, Tensor]) -> None:
    """Raise :class:`NonFiniteError` naming the first modality holding NaN or inf.

    One host sync per forward, not one per modality: NaN and inf carry into a sum, so a finite
    sum of every input proves them all finite; a non-finite one (or a finite input large enough
    to overflow it) is checked modality by modality."""
    total: Tensor | None = None
    for h in inputs.values():
        s = h.sum(dtype=torch.float32) if h.dtype in (torch.float16, torch.bfloat16) else h.sum()
        total = s if total is None else total + s
    if total is None or bool(torch.isfinite(total)):
        return
    for m, h in inputs.items():
        if not bool(torch.isfinite(h).all()):
            raise NonFiniteError(
                f"modality {m!r} holds NaN or inf values "
                f"({int((~torch.isfinite(h)).sum())} of {h.numel()})."
            )


@dataclass
class _Queued:
    forward: int  #: 1-based count of this checker's forwards
    names: list[str]
    flags: Tensor  #: [M] bool on the host (pinned when the inputs are on a GPU)
    event: Any  #: torch.cuda.Event recorded after the copy; None: ready (CPU tensors)


class DeferredFiniteCheck:
    """Per-forward finite flags, queued on the device and read on the host when ready.

    Exact (``isfinite(h).all()`` per modality, no sum that could overflow). On CPU tensors the
    flags are ready at once but are still read at the next :meth:`poll`, which keeps the class
    testable without a GPU; :class:`~pgm_plugins.block.pgm.PgMBlock` uses it on CUDA inputs only.
    """

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        if depth < 1:
            raise ValueError(f"depth={depth!r} must be at least 1.")
        self.depth = depth
        self.forwards = 0
        self._queue: deque[_Queued] = deque()

    @property
    def unread(self) -> int:
        """Forwards whose flags are not read yet."""
        return len(self._queue)

    def submit(self, inputs: Mapping[str, Tensor]) -> None:
        """Read what is ready, then queue this forward's flags (waiting for the oldest unread
        forward when ``depth`` are queued)."""
        self.poll()
        names = list(inputs)
        flags = torch.stack([torch.isfinite(h).all() for h in inputs.values()])
        event = None
        if flags.is_cuda:
            host = torch.empty(flags.shape, dtype=torch.bool, pin_memory=True)
            host.copy_(flags, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            flags = host
        self.forwards += 1
        self._queue.append(_Queued(self.forwards, names, flags, event))
        while len(self._queue) > self.depth:
            self._settle(self._queue.popleft(), wait=True)

    def poll(self) -> None:
        """Read every queued forward whose flags have arrived, oldest first, without waiting;
        raise :class:`NonFiniteError` for the first with a non-finite input."""
        while self._queue and (self._queue[0].event is None or self._queue[0].event.query()):
            self._settle(self._queue.popleft(), wait=False)

    def flush(self) -> None:
        """Wait for every queued forward and read it (raises as :meth:`poll`)."""
        while self._queue:
            self._settle(self._queue.popleft(), wait=True)

    def _settle(self, item: _Queued, wait: bool) -> None:
        if wait and item.event is not None:
            item.event.synchronize()
        bad = [m for m, ok in zip(item.names, item.flags.tolist(), strict=True) if not ok]
        if bad:
            self._queue.clear()  # the run is broken; later forwards' flags add nothing
            late = self.forwards - item.forward
            raise NonFiniteError(
                f"modality {bad[0]!r} held NaN or inf values at forward {item.forward} of this "
                f"block (check_finite='deferred' reads the check without a host sync, so this "
                f"is raised {late} forward(s) later); every modality affected: {bad}. Use "
                "check_finite=True to stop at the forward itself."
            )
