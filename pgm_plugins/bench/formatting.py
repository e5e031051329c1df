"""How the report writes a number: one place for the report's tables and the methods comparison."""

from __future__ import annotations

import math

__all__ = ["number"]


def number(v: float | None, digits: int = 4) -> str:
    """``v`` with ``digits`` decimals; ``-`` for a missing or NaN value (no cells to average)."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"
