"""A model and its example inputs from command-line specs (what ``pgm layers`` needs).

``build_model`` builds a model from ``MODULE:FACTORY`` (constructor arguments, a config object,
``timm:NAME`` through a zoo's ``create_model``), never downloading weights; ``example_inputs``
turns ``2x7:int`` / ``pixel_values=2x3x32x32`` into tensors for the dry run. Every bad spec is a
``ConfigError`` or ``UnknownNameError`` that names what was given, what is valid and the nearest
match.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import pkgutil
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from pgm_plugins.errors import ConfigError, UnknownNameError

__all__ = [
    "InputSpec",
    "build_model",
    "describe_forward",
    "example_inputs",
    "parse_assignments",
    "resolve_factory",
]


def _nearest(given: str, choices: Sequence[str], n: int = 3) -> list[str]:
    """Nearest ``choices``, case-insensitively (``ClipModel`` finds ``CLIPModel``)."""
    by_lower: dict[str, str] = {}
    for c in choices:
        by_lower.setdefault(c.lower(), c)
    close = difflib.get_close_matches(given.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[c] for c in close]


def _suggest(given: str, choices: Sequence[str], prefix: str = "") -> str:
    near = _nearest(given, choices)
    return f" Did you mean {' or '.join(repr(prefix + c) for c in near)}?" if near else ""


def _import(module_name: str) -> types.ModuleType:
    """Import ``module_name``; a missing module is an error naming the nearest importable one."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing != module_name and not module_name.startswith(missing + "."):
            raise ConfigError(
                f"importing {module_name!r} failed: it needs {missing!r}, which is not "
                f"installed (pip install the package that provides it)."
            ) from exc
        parent, _, leaf = missing.rpartition(".")
        try:
            where = importlib.import_module(parent).__path__ if parent else None
        except (ImportError, AttributeError):
            where = None
        found = [m.name for m in pkgutil.iter_modules(where)]
        prefix = f"{parent}." if parent else ""
        raise UnknownNameError(
            f"no module named {missing!r}.{_suggest(leaf, found, prefix)} "
            "Give an importable module, e.g. pgm_plugins.toy:LateFusion."
        ) from exc
    except ImportError as exc:
        raise ConfigError(f"importing {module_name!r} failed: {exc}") from exc


def _public_names(module: types.ModuleType) -> list[str]:
    """What a user can name in ``module``: its ``__all__``, else its public names that are not
    modules (``torch`` imported by the module is never a factory)."""
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return [str(n) for n in declared]
    loaded = vars(module)
    return [
        n
        for n in dir(module)
        if not n.startswith("_") and not isinstance(loaded.get(n), types.ModuleType)
    ]


def _is_submodule(module: types.ModuleType, name: str) -> bool:
    """Whether ``module`` is a package with a submodule ``name`` (not imported yet)."""
    if not hasattr(module, "__path__"):
        return False
    try:
        return importlib.util.find_spec(f"{module.__name__}.{name}") is not None
    except (ImportError, ValueError):
        return False


def _zoo(module: types.ModuleType) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """``(create_model, list_models)`` of a module with a model registry (timm, open_clip)."""
    create, listing = getattr(module, "create_model", None), getattr(module, "list_models", None)
    return (create, listing) if callable(create) and callable(listing) else None


def _zoo_factory(module: types.ModuleType, name: str) -> Callable[..., Any] | None:
    """``create_model(name, ...)`` with every ``pretrained*`` switch off, or None when the zoo
    has no model ``name``."""
    zoo = _zoo(module)
    if zoo is None:
        return None
    create, listing = zoo
    is_model = getattr(module, "is_model", None)
    if not (is_model(name) if callable(is_model) else name in listing()):
        return None
    try:
        params = inspect.signature(create).parameters.values()
    except (TypeError, ValueError):
        params = ()  # type: ignore[assignment]
    off = {p.name: False for p in params if p.name.startswith("pretrained") and p.default}

    def factory(**kwargs: Any) -> Any:
        return create(name, **{**off, **kwargs})

    factory.__name__ = factory.__qualname__ = f"{module.__name__}.create_model({name!r})"
    return factory


def resolve_factory(spec: str, what: str = "FACTORY") -> Callable[..., Any]:
    """The callable named by ``MODULE:NAME`` (``NAME`` may be dotted: ``pkg.mod:Class.build``).

    In a module with a model registry (``create_model`` and ``list_models``, as timm and
    open_clip have), ``NAME`` may also be one of its models: ``timm:resnet18`` is
    ``timm.create_model("resnet18")`` with pretrained weights off.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{spec!r} must be MODULE:{what}, e.g. pgm_plugins.toy:LateFusion, "
            "transformers:CLIPModel or timm:resnet18."
        )
    module = _import(module_name)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if i == 0 and (made := _zoo_factory(module, attr)) is not None:
            return made
        if i == 0 and _is_submodule(module, part):
            raise ConfigError(
                f"{spec!r}: {module_name}.{part} is a module; name what builds the model in "
                f"it: {module_name}.{part}:NAME."
            )
        if i == 0:
            names = _public_names(module)
            zoo = _zoo(module)
            models = [str(m) for m in zoo[1]()] if zoo else []
            hint = _suggest(attr, models) or _suggest(attr, names)
            kind = f" (neither a name it defines nor a model of {module_name}.list_models())"
            raise UnknownNameError(
                f"{module_name} has no {attr!r}{kind if zoo else ''}.{hint or ''}"
                + ("" if hint else f" It defines: {', '.join(sorted(names)[:20]) or '(nothing)'}.")
            )
        raise UnknownNameError(
            f"{spec!r}: {'.'.join(attr.split('.')[:i])} has no {part!r}."
            f"{_suggest(part, [n for n in dir(obj) if not n.startswith('_')])}"
        )
    if isinstance(obj, types.ModuleType):
        raise ConfigError(
            f"{spec!r}: {obj.__name__} is a module; name what builds the model in it: "
            f"{obj.__name__}:NAME."
        )
    if not callable(obj):
        raise ConfigError(
            f"{spec!r} is a {type(obj).__name__}, not a class or function that builds a "
            f"model; {module_name} defines {', '.join(sorted(_public_names(module))[:20])}."
        )
    return obj


def _set_dotted(out: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = out
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key!r}: {p!r} is given as {child!r} and as a mapping.")
        node = child
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        node[leaf] = _merged(node[leaf], value)
    else:
        node[leaf] = value


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        _set_dotted(out, key, value)
    return out


def parse_assignments(items: Sequence[str], option: str = "--kwargs") -> dict[str, Any]:
    """``["hidden_size=32", "text_config.num_hidden_layers=1", "act=gelu"]`` -> a nested dict.

    A value is read as JSON (``32``, ``true``, ``[1, 2]``, ``{"a": 1}``), else kept as a string;
    a dotted key sets one field of a nested mapping.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
            raise ConfigError(
                f"{option} {item!r}: write KEY=VALUE (VALUE as JSON, else a string), e.g. "
                "hidden_size=32 or text_config.num_hidden_layers=1."
            )
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        _set_dotted(out, key, value)
    return out


def _signature(fn: Any) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _label(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or fn)


def _build_config(factory: Any, config: str | None, config_kwargs: Mapping[str, Any]) -> Any | None:
    """The config object ``factory`` is built from, or None when it takes none."""
    own = getattr(factory, "config_class", None)
    own = own if inspect.isclass(own) else None
    if config is None and own is None:
        if config_kwargs:
            raise ConfigError(
                f"--config-kwargs: {_label(factory)} has no config class (config_class) to "
                "build; name one with --config MODULE:CLASS or a config .json file, or pass "
                f"its own arguments with --kwargs. It takes {_signature(factory)}."
            )
        return None
    maker: Any = own
    values = dict(config_kwargs)
    if config is not None and config.endswith(".json") and ":" not in config:
        path = Path(config)
        try:
            loaded = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--config {config!r}: cannot read it as JSON ({exc}).") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"--config {config!r} holds a {type(loaded).__name__}, not an object."
            )
        values = _merged(loaded, config_kwargs)
        if maker is None:
            maker = _auto_config(config, values)
    elif config is not None:
        maker = resolve_factory(config, "CONFIG")
    try:
        return maker(**values)
    except Exception as exc:
        raise ConfigError(
            f"building the config {_label(maker)}(**{values!r}) failed: "
            f"{type(exc).__name__}: {exc}. It takes {_signature(maker)}."
        ) from exc


def _auto_config(config: str, values: dict[str, Any]) -> Callable[..., Any]:
    """The Hugging Face config class that a ``config.json``'s ``model_type`` names."""
    model_type = values.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ConfigError(
            f"--config {config!r} states no model_type, and the factory has no config class; "
            "name the class with --config MODULE:CLASS and its values with --config-kwargs."
        )
    auto = resolve_factory("transformers:AutoConfig", "CONFIG")

    def for_model(**kwargs: Any) -> Any:
        return auto.for_model(model_type, **kwargs)  # type: ignore[attr-defined]

    for_model.__qualname__ = f"AutoConfig.for_model({model_type!r})"
    return for_model


def build_model(
    spec: str,
    kwargs: Mapping[str, Any] | None = None,
    config: str | None = None,
    config_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the model named by ``spec`` (``MODULE:FACTORY``, see ``resolve_factory``).

    ``kwargs`` go to the factory. A factory with a config class (a Hugging Face model class:
    ``config_class``) is called with ``config_class(**config_kwargs)``; ``config`` names another
    config (``MODULE:CLASS`` or a ``config.json`` file, whose ``model_type`` picks the Hugging
    Face config when the factory has none, as ``transformers:AutoModel`` does) and a factory
    with ``from_config`` is built through it. Nothing is downloaded: ``pretrained`` arguments
    are refused, ``from_pretrained`` is never called.
    """
    kwargs = dict(kwargs or {})
    for key, value in kwargs.items():
        if key.startswith("pretrained") and value:
            raise ConfigError(
                f"--kwargs {key}={value!r}: pgm layers builds random weights and downloads "
                "nothing; the layer names and shapes are the same without them."
            )
    factory = resolve_factory(spec)
    cfg = None if "config" in kwargs else _build_config(factory, config, config_kwargs or {})
    builder = getattr(factory, "from_config", factory) if cfg is not None else factory
    args = () if cfg is None else (cfg,)
    try:
        model = builder(*args, **kwargs)
    except Exception as exc:
        hint = "pass its arguments with --kwargs KEY=VALUE (JSON values)" + (
            " or a config with --config MODULE:CLASS and --config-kwargs" if cfg is None else ""
        )
        raise ConfigError(
            f"building {spec} failed: {type(exc).__name__}: {exc}. It takes "
            f"{_signature(builder)}; {hint}."
        ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{spec} returned a {type(model).__name__}, not a torch.nn.Module; name the "
            "function or class that builds the model."
        )
    return model


_SPEC = re.compile(r"(?:(?P<name>[A-Za-z_]\w*)=)?(?P<shape>\d+(?:[x,]\d+)*)(?::(?P<dtype>.+))?")


@dataclass(frozen=True)
class InputSpec:
    """One example input: ``[NAME=]SHAPE[:float|:int|:int:HIGH]`` (``2x16``,
    ``input_ids=2x7:int``, ``2x7:int:1000``).

    Floats are standard normal; ints are uniform in ``[0, HIGH)``, by default in ``[0, the
    smallest num_embeddings of the model's nn.Embedding layers)``, valid token ids for each.
    """

    name: str | None
    shape: tuple[int, ...]
    dtype: str = "float"
    high: int | None = None

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        m = _SPEC.fullmatch(text.strip())
        dtype = (m.group("dtype") or "float").lower() if m else ""
        kind, _, high = dtype.partition(":")
        if (
            not m
            or kind not in ("float", "int")
            or (high and (kind != "int" or not high.isdigit()))
        ):
            raise ConfigError(
                f"example input {text!r}: write [NAME=]SHAPE[:float|:int|:int:HIGH], e.g. 2x16, "
                "2x7:int, 2x7:int:1000 or pixel_values=2x3x32x32."
            )
        shape = tuple(int(v) for v in m.group("shape").replace(",", "x").split("x"))
        if high and int(high) < 1:
            raise ConfigError(f"example input {text!r}: HIGH must be at least 1.")
        return cls(m.group("name"), shape, kind, int(high) if high else None)

    def make(self, model: nn.Module, generator: torch.Generator) -> Tensor:
        if self.dtype == "float":
            return torch.randn(*self.shape, generator=generator)
        high = self.high
        if high is None:
            sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
            if not sizes:
                raise ConfigError(
                    f"example input {self}: the model has no nn.Embedding to bound the "
                    "integers by; give the bound, e.g. 2x7:int:1000."
                )
            high = min(sizes)
        return torch.randint(0, high, self.shape, generator=generator)

    def __str__(self) -> str:
        bound = f":{self.high}" if self.high is not None else ""
        text = "x".join(map(str, self.shape)) + (f":int{bound}" if self.dtype == "int" else "")
        return f"{self.name}={text}" if self.name else text


def example_inputs(specs: Sequence[InputSpec], model: nn.Module) -> Any:
    """Tensors for ``specs``, seeded: a tuple of positional inputs, or a dict of keyword
    inputs when every spec is named (``model(**inputs)``)."""
    named = [s for s in specs if s.name]
    if named and len(named) != len(specs):
        raise ConfigError(
            f"example inputs {' '.join(map(str, specs))}: give them all by name "
            "(input_ids=2x7:int pixel_values=2x3x32x32) or all by position (2x16 2x8)."
        )
    gen = torch.Generator().manual_seed(0)
    if named:
        names = [s.name for s in named]
        if len(set(names)) != len(names):
            raise ConfigError(f"example inputs {' '.join(map(str, specs))}: a name repeats.")
        return {s.name: s.make(model, gen) for s in named}
    return tuple(s.make(model, gen) for s in specs)


def describe_forward(model: nn.Module, inputs: Any, exc: BaseException) -> str:
    """Why a dry run failed, with what the model's forward takes and what it was given."""
    if isinstance(inputs, Mapping):
        given = ", ".join(f"{k}: {_tensor_text(v)}" for k, v in inputs.items())
    elif isinstance(inputs, tuple | list):
        given = ", ".join(_tensor_text(v) for v in inputs)
    else:
        given = _tensor_text(inputs)
    text = (
        f"the dry run failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}. "
        f"{type(model).__name__}.forward takes {_signature(model.forward)}; it was given "
        f"({given})."
    )
    floats = any(isinstance(t, Tensor) and t.is_floating_point() for t in tree_leaves(inputs))
    if floats and any(isinstance(m, nn.Embedding) for m in model.modules()):
        text += " Token ids are integers: write them as 2x7:int (or 2x7:int:HIGH)."
    return text + " Name keyword inputs as NAME=SHAPE, or pass --example-inputs MODULE:CALLABLE."


def _tensor_text(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{'x'.join(map(str, value.shape))} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__
