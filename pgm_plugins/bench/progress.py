"""One progress display for a grid, whichever executor runs it: done / running / failed and the
time left.

On a terminal it is a ``tqdm`` bar whose postfix counts the cells running and failed; elsewhere
(a log, CI) one line per finished cell::

    [3/16] late_fusion pgm fold 0 seed 1: test acc 0.8125 (1.9 s); elapsed 7 s, ETA 30 s

The estimate is the wall time so far over the cells finished in this run, times the cells left,
so with several workers it already counts their parallelism. ``quiet`` silences it all.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "clock"]


def clock(seconds: float) -> str:
    """``42 s``, ``3:07`` or ``1:02:03``: a duration as a progress line shows it."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """The display of one grid: ``total`` cells of which ``initial`` were already done."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        label: str = "",
        quiet: bool = False,
        stream: TextIO | None = None,
        bar: bool | None = None,
    ) -> None:
        """``bar``: force the tqdm bar on (True) or off (False); default: on a terminal."""
        self.total = total
        self.done = initial
        self.ran = 0
        self.failed = 0
        self.running = 0
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        use_bar = (self.stream.isatty() if bar is None else bar) and not quiet
        self._bar: Any = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=label or None, unit="cell", file=self.stream
            )
            self._postfix()

    # ------------------------------------------------------------------ events
    def started(self, text: str) -> None:
        """A cell (or prerequisite) was handed to a worker."""
        self.running += 1
        self._postfix(text)

    def requeued(self) -> None:
        """A running cell went back to the queue (its worker died; it runs again)."""
        self.running = max(0, self.running - 1)
        self._postfix()

    def finished(self, text: str, record: dict[str, Any]) -> None:
        """A cell's record was written."""
        self.running = max(0, self.running - 1)
        self.done += 1
        self.ran += 1
        if self._bar is not None:
            self._bar.update(1)
            self._postfix()
            return
        if self.quiet:
            return
        primary = record["primary"]
        result = (
            "diverged (non-finite), recorded as failed "
            if record.get("stopped") == "non-finite"
            else f"test {primary} {record['metrics']['test'][primary]:.4f} "
        )
        self._line(f"{text}: {result}({record['time']['wall_s']:.1f} s)")

    def built(self, text: str, seconds: float) -> None:
        """A prerequisite was built (it is not a cell: the counts stay)."""
        self.running = max(0, self.running - 1)
        self.note(f"built {text} ({seconds:.1f} s)")

    def skipped(self) -> None:
        """Another run finished a cell this one had planned."""
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)

    def failed_cell(self, text: str, why: str, *, cell: bool = True) -> None:
        """A cell (or, ``cell=False``, a prerequisite) failed: nothing written for it."""
        self.running = max(0, self.running - 1)
        self.failed += int(cell)
        if self._bar is not None:
            self._bar.write(f"failed: {text}: {why}", file=self.stream)
            self._postfix()
        elif not self.quiet:
            self._line(f"{text}: FAILED ({why})")

    def note(self, text: str) -> None:
        """A message between the lines (or above the bar)."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ helpers
    def eta(self) -> float | None:
        """Seconds left: wall time so far / cells finished here x cells left (None before the
        first)."""
        if not self.ran:
            return None
        left = self.total - self.done - self.failed
        return (time.perf_counter() - self.start) / self.ran * max(left, 0)

    def _line(self, head: str) -> None:
        elapsed = time.perf_counter() - self.start
        eta = self.eta()
        tail = f"elapsed {clock(elapsed)}, ETA {clock(eta) if eta is not None else '?'}"
        extra = f", {self.running} running" if self.running else ""
        extra += f", {self.failed} failed" if self.failed else ""
        print(
            f"[{self.done}/{self.total}] {head}; {tail}{extra}",
            file=self.stream,
            flush=True,
        )

    def _postfix(self, text: str = "") -> None:
        if self._bar is None:
            return
        parts = [f"running {self.running}"]
        if self.failed:
            parts.append(f"failed {self.failed}")
        if text:
            parts.append(text)
        self._bar.set_postfix_str(", ".join(parts), refresh=True)
