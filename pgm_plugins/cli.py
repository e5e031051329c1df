"""The ``pgm`` command: ``pgm plugins``, ``pgm adapters [FILTER]``, ``pgm layers M:FACTORY``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from pgm_plugins._version import __version__


def _cmd_plugins(args: argparse.Namespace) -> int:
    from pgm_plugins.registry import get_registry

    reg = get_registry()
    for info in sorted(reg.plugins.values(), key=lambda i: i.name):
        dist = f"{info.distribution} {info.version}" if info.distribution else "(built in)"
        status = f"FAILED: {info.error}" if info.error else ", ".join(info.hooks)
        print(f"{info.name:<28} {dist:<32} {status}")
    return 1 if args.strict and any(i.error for i in reg.plugins.values()) else 0


def _cmd_adapters(args: argparse.Namespace) -> int:
    from pgm_plugins.registry import get_registry

    reg = get_registry()
    names = reg.adapters.names(args.filter)
    if not names:
        print(
            f"no adapter matches {args.filter!r}; registered: "
            f"{', '.join(reg.adapters.names()) or '(none)'}",
            file=sys.stderr,
        )
        return 1
    for name in names:
        entry = reg.adapters.entry(name)
        print(f"{name:<28} {entry.value.mode:<12} {entry.plugin:<28} {entry.description}")
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: write it as 2x16 or 2,16") from None


def _load_factory(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(
            f"pgm layers: {spec!r} must be MODULE:FACTORY, e.g. pgm_plugins.toy:LateFusion"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"pgm layers: cannot import {module_name!r}: {exc}") from exc
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_")]
        from pgm_plugins.errors import did_you_mean

        raise SystemExit(f"pgm layers: {module_name} has no {attr!r}.{did_you_mean(attr, public)}")
    return getattr(module, attr)


def _cmd_layers(args: argparse.Namespace) -> int:
    import torch

    from pgm_plugins.injection import format_layers, list_layers

    model = _load_factory(args.factory)()
    example = None
    if args.example_shapes:
        gen = torch.Generator().manual_seed(0)
        example = tuple(torch.randn(*s, generator=gen) for s in args.example_shapes)
    print(format_layers(list_layers(model, args.filter, example)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgm", description="PgM blocks in other people's models")
    parser.add_argument("--version", action="version", version=f"pgm-plugins {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="loaded plugins, their versions, hooks and load errors")
    p.add_argument("--strict", action="store_true", help="exit 1 if a plugin failed to load")
    p.set_defaults(func=_cmd_plugins)
    p = sub.add_parser("adapters", help="registered adapters (fnmatch FILTER)")
    p.add_argument("filter", nargs="?", default="*")
    p.set_defaults(func=_cmd_adapters)
    p = sub.add_parser("layers", help="named layers of a model built by MODULE:FACTORY()")
    p.add_argument("factory", metavar="MODULE:FACTORY")
    p.add_argument("--filter", default="*", help="fnmatch pattern on layer names")
    p.add_argument(
        "--example-shapes",
        nargs="+",
        type=_shape,
        metavar="SHAPE",
        help="random positional inputs of these shapes (e.g. 2x16 2x8) for a dry "
        "run that adds call counts and output shapes",
    )
    p.set_defaults(func=_cmd_layers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        from pgm_plugins.errors import PgMError

        if isinstance(exc, PgMError):
            print(f"pgm {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
