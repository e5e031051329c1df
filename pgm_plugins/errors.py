"""One exception root for the library.

Specific errors also subclass the builtin a caller would naturally catch (``ValueError``,
``KeyError``, ``LookupError``), so ``except ValueError`` keeps working for code that does not know
this library. Messages follow one rule: what was given, what is valid, the nearest match, and what
to run next.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InjectionError",
    "InputError",
    "PgMError",
    "PluginError",
    "SiteError",
    "UnknownNameError",
    "did_you_mean",
    "nearest",
]


class PgMError(Exception):
    """Root of every error raised by pgm_plugins."""


class ConfigError(PgMError, ValueError):
    """A configuration value is invalid (kind, range, width, key)."""


class InputError(PgMError, ValueError):
    """A tensor handed to a block does not fit its configuration (width, modality, NaN, targets)."""


class NonFiniteError(InputError):
    """A block input holds NaN or inf values (training diverged upstream of the block)."""


class UnknownNameError(PgMError, KeyError):
    """A name (adapter, modality, group, layer) is not known. ``str()`` gives the plain message."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InjectionError(PgMError, ValueError):
    """An injection plan cannot be carried out; the model was left unchanged."""


class SiteError(InjectionError):
    """One or more sites do not match the model; every mismatch is listed."""


class CheckpointError(PgMError, ValueError):
    """A block checkpoint is corrupt, incomplete or made for another host."""


class PluginError(PgMError, RuntimeError):
    """A plugin failed to load or registered something invalid."""


def nearest(given: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The up to ``n`` choices nearest ``given`` (closest first; none when nothing is near)."""
    return difflib.get_close_matches(str(given), [str(c) for c in choices], n=n, cutoff=0.5)


def did_you_mean(given: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` for the nearest choices, or an empty string."""
    close = nearest(given, choices, n)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def choices_text(choices: Iterable[str], limit: int = 20) -> str:
    """Format a list of valid choices for an error message, truncated to ``limit`` entries."""
    items = sorted({str(c) for c in choices})
    shown = ", ".join(repr(c) for c in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return shown or "(none)"
