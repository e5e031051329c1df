"""The registries the hooks fill: validated at registration, listed with wildcards."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pgm_plugins.errors import PluginError, UnknownNameError, choices_text, did_you_mean

__all__ = ["Entry", "Registry", "natural_key"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
T = TypeVar("T")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``vit2`` before ``vit10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    plugin: str
    description: str = ""


class Registry(Generic[T]):
    """Name -> entry, one kind of thing (adapters, data sets, hosts, zoo patches)."""

    def __init__(self, kind: str, check: Callable[[Any], str | None] | None = None) -> None:
        self.kind = kind
        self._check = check
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, plugin: str, description: str = "") -> None:
        if self._check is not None and (problem := self._check(value)):
            raise PluginError(f"plugin {plugin!r} registered {self.kind} {name!r}: {problem}")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise PluginError(
                f"plugin {plugin!r} registered {self.kind} name {name!r}; names are "
                "lower case letters, digits, '.', '_' or '-'."
            )
        if name in self._entries:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin "
                f"{self._entries[name].plugin!r} and by plugin {plugin!r}."
            )
        self._entries[name] = Entry(name, value, plugin, description)

    def names(
        self, filter: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()
    ) -> list[str]:
        include = [filter] if isinstance(filter, str) else list(filter)
        excl = [exclude] if isinstance(exclude, str) else list(exclude)
        names = [
            n
            for n in self._entries
            if any(fnmatch.fnmatchcase(n, p) for p in include)
            and not any(fnmatch.fnmatchcase(n, p) for p in excl)
        ]
        return sorted(names, key=natural_key)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}."
                + did_you_mean(name, self._entries)
                + f" Registered: {choices_text(self._entries)}. Run `pgm plugins` to see which "
                "plugins loaded (and which failed)."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]
