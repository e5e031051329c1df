"""Sites and junctions: where a modality's representation is read from a host and written back.

A :class:`Site` names one layer of a model (dotted path, as in ``named_modules()``), whether its
input or output carries the modality, which element of a tuple / list / dict / model-output object,
the tensor layout, and which call when the layer runs several times per forward. A
:class:`Junction` is one layer whose tensor carries several modalities concatenated on the feature
axis, with their widths; the block splits it, runs, and merges the results back.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.hooks import RemovableHandle

from pgm_plugins.errors import InjectionError

__all__ = [
    "LAYOUTS",
    "InputMask",
    "Junction",
    "Site",
    "TokenFrom",
    "attach_hook",
    "from_block",
    "get_element",
    "set_element",
    "to_block",
]

#: tensor layouts a site may declare; the block always sees ``[B, d]`` or ``[B, T, d]``
LAYOUTS = ("BD", "BTD", "TBD", "BDT", "BDHW", "BHWD")
#: spatial layouts: the block sees the H x W positions as a sequence ``[B, H*W, d]``
SPATIAL = ("BDHW", "BHWD")
PLACES = ("output", "input")


def _check(layout: str | None, at: str, index: Any, call: int | None, dim: int | None) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise InjectionError(
            f"layout={layout!r} is not valid; choose one of {', '.join(map(repr, LAYOUTS))}."
        )
    if at not in PLACES:
        raise InjectionError(
            f"at={at!r} is not valid; choose 'output' (forward hook) or 'input' (forward pre-hook)."
        )
    path = index if isinstance(index, tuple) else (index,)
    if index is not None and (
        not path or not all(isinstance(i, int | str) and not isinstance(i, bool) for i in path)
    ):
        raise InjectionError(
            f"index={index!r} must be an int (tuple/list position), a str (dict key or "
            "attribute of a model-output object), or a tuple of them for nested outputs "
            "(an LSTM's (out, (h, c)): index=(1, 0) is h)."
        )
    if call is not None and (not isinstance(call, int) or call < 0):
        raise InjectionError(f"call={call!r} must be an int >= 0 (which call of the layer).")
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise InjectionError(f"dim={dim!r} must be a positive int.")


@dataclass(frozen=True)
class InputMask:
    """Where a site's padding mask comes from: an argument of the host's forward.

    ``arg`` is the position (int) or name (str) of the argument; ``row`` optionally picks
    ``x[:, row]`` (MMSA's BERT input ``[B, 3, L]`` keeps the attention mask in row 1). Non-zero
    entries are real tokens. The mask is read from the inputs of the host's forward, so a site's
    layer called on its own (outside that forward) runs unmasked.
    """

    arg: int | str
    row: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.arg, bool) or not isinstance(self.arg, int | str):
            raise InjectionError(
                f"InputMask(arg={self.arg!r}): give the position (int) or name (str) of the "
                "forward argument that holds the mask."
            )
        if self.row is not None and (isinstance(self.row, bool) or not isinstance(self.row, int)):
            raise InjectionError(f"InputMask(row={self.row!r}) must be an int or None.")

    def select(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
        """The boolean ``[B, T]`` mask from a forward's arguments, or None when absent."""
        if isinstance(self.arg, str):
            value = kwargs.get(self.arg)
        else:
            value = args[self.arg] if self.arg < len(args) else None
        if not isinstance(value, Tensor):
            return None
        if self.row is not None:
            value = value[:, self.row]
        return value != 0


@dataclass(frozen=True)
class TokenFrom:
    """A per-sample position read from another layer's input in the same call: ``rule="argmax"``
    takes ``ids.argmax(-1)`` of that layer's first positional argument (open_clip's end-of-text
    token: the largest id). The layer must run before the site's layer in every call."""

    layer: str
    rule: str = "argmax"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InjectionError(f"TokenFrom(layer={self.layer!r}) needs a dotted module path.")
        if self.rule != "argmax":
            raise InjectionError(f"TokenFrom(rule={self.rule!r}): the only rule is 'argmax'.")

    def positions(self, args: tuple[Any, ...]) -> Tensor | None:
        ids = args[0] if args else None
        return ids.argmax(dim=-1) if isinstance(ids, Tensor) and ids.dim() == 2 else None


@dataclass(frozen=True)
class Site:
    """One modality's place in a host.

    Attributes:
        layer: dotted module path, as listed by ``model.named_modules()`` (``"encoders.text"``).
        at: ``"output"`` (forward hook) or ``"input"`` (forward pre-hook).
        index: element of a tuple/list (int) or dict / model-output object (str); None for a
            plain tensor (for ``at="input"``, None means the first positional argument).
        layout: ``"BD"``, ``"BTD"``, ``"TBD"``, ``"BDT"``, or a feature map ``"BDHW"`` /
            ``"BHWD"`` (its positions become tokens); None infers it from the dry run (2-D: BD;
            3-D: BDT after a Conv1d, TBD when the batch is on axis 1, else BTD; 4-D: BDHW after a
            Conv2d / BatchNorm2d) and fails without one.
        call: which call of the layer within one forward (0-based); None acts on every call.
        token: a sequence site's position whose vector the block sees (``0``: a [CLS] token,
            ``-1``: the last), or a :class:`TokenFrom` (a position per sample, such as the
            end-of-text token); the other positions pass through unchanged.
        mask: an :class:`InputMask` naming the forward argument that marks real tokens; the
            block then pools, attends and computes losses over real tokens only.
        dim: the modality's width, when neither the layer nor a dry run can tell it.
    """

    layer: str
    at: str = "output"
    index: int | str | tuple[int | str, ...] | None = None
    layout: str | None = None
    call: int | None = None
    dim: int | None = None
    token: int | TokenFrom | None = None
    mask: InputMask | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InjectionError(f"layer={self.layer!r} must be a non-empty dotted module path.")
        if isinstance(self.index, list):
            object.__setattr__(self, "index", tuple(self.index))  # from JSON
        if isinstance(self.mask, Mapping):
            object.__setattr__(self, "mask", InputMask(**self.mask))  # from JSON
        if isinstance(self.token, Mapping):
            object.__setattr__(self, "token", TokenFrom(**self.token))  # from JSON
        _check(self.layout, self.at, self.index, self.call, self.dim)
        bad_token = isinstance(self.token, bool) or not isinstance(self.token, int | TokenFrom)
        if self.token is not None and bad_token:
            raise InjectionError(
                f"token={self.token!r} must be an int position (0, -1, ...) or a TokenFrom."
            )
        if self.mask is not None and not isinstance(self.mask, InputMask):
            raise InjectionError(
                f"mask={self.mask!r} must be an InputMask(arg=..., row=...) naming the forward "
                "argument that marks real tokens."
            )
        if self.mask is not None and self.token is not None:
            raise InjectionError("give a site either token= (one position) or mask=, not both.")

    @classmethod
    def coerce(cls, value: Site | str | Mapping[str, Any]) -> Site:
        """Accept a ``Site``, a layer path, or a mapping of ``Site`` fields."""
        if isinstance(value, Site):
            return value
        if isinstance(value, str):
            return cls(layer=value)
        if isinstance(value, Mapping):
            known = [f.name for f in dataclasses.fields(cls)]
            unknown = [k for k in value if k not in known]
            if unknown:
                from pgm_plugins.errors import did_you_mean

                raise InjectionError(
                    f"unknown Site field {unknown[0]!r}; valid fields: {', '.join(known)}."
                    + did_you_mean(str(unknown[0]), known)
                )
            if "layer" not in value:
                raise InjectionError(f"a site mapping needs 'layer'; got {dict(value)!r}.")
            return cls(**value)
        raise InjectionError(f"a site must be a Site, a layer path or a mapping; got {value!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists, the mask as a mapping), defaults left out."""
        out: dict[str, Any] = {}
        for k, v in dataclasses.asdict(self).items():
            if v is None or (k == "at" and v == "output"):
                continue
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    @property
    def element(self) -> int | str | tuple[int | str, ...] | None:
        """The index into the hooked value: for inputs, the first positional argument by default."""
        return 0 if self.at == "input" and self.index is None else self.index

    def describe(self) -> str:
        where = self.layer + ("" if self.at == "output" else " (input)")
        if self.index is not None:
            path = self.index if isinstance(self.index, tuple) else (self.index,)
            where += "".join(f"[{i!r}]" for i in path)
        if self.token is not None:
            where += f" token {self.token}"
        if self.call is not None:
            where += f" call {self.call}"
        return where


@dataclass(frozen=True)
class Junction:
    """One layer carrying several modalities concatenated on the feature axis.

    ``widths`` gives each modality's width in concatenation order; the tensor's feature axis must
    be their sum. The block runs on the split parts at once (joint by construction) and the merged
    result replaces the tensor.
    """

    layer: str
    widths: Mapping[str, int]
    at: str = "output"
    index: int | str | None = None
    layout: str | None = None
    call: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise InjectionError(f"layer={self.layer!r} must be a non-empty dotted module path.")
        if not isinstance(self.widths, Mapping) or len(self.widths) < 2:
            raise InjectionError(
                f"a Junction needs widths for two or more modalities, got {self.widths!r}."
            )
        _check(self.layout, self.at, self.index, self.call, None)
        object.__setattr__(self, "widths", dict(self.widths))

    def site(self) -> Site:
        """The tensor's place, as a site without a width."""
        return Site(self.layer, self.at, self.index, self.layout, self.call)

    def to_dict(self) -> dict[str, Any]:
        return {"junction": True, **self.site().to_dict(), "widths": dict(self.widths)}


def attach_hook(module: nn.Module, site: Site, fn: Callable[[Any], Any]) -> RemovableHandle:
    """Hook ``fn(value) -> new value | None`` onto ``module`` where ``site`` reads.

    For outputs ``value`` is the layer's output; for inputs it is the tuple of positional
    arguments (keyword arguments pass through unchanged). ``None`` leaves the value as it is.
    """
    if site.at == "input":

        def pre_hook(mod: nn.Module, args: Any, kwargs: Any) -> Any:
            new = fn(args)
            return None if new is None else (new, kwargs)

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return module.register_forward_hook(lambda mod, args, out: fn(out))


# ---------------------------------------------------------------------- layouts
def to_block(t: Tensor, layout: str) -> Tensor:
    """Host layout -> ``[B, d]`` / ``[B, T, d]`` (a feature map's positions become tokens)."""
    if layout == "TBD":
        return t.transpose(0, 1)
    if layout == "BDT":
        return t.transpose(1, 2)
    if layout == "BDHW":
        return t.flatten(2).transpose(1, 2)
    if layout == "BHWD":
        return t.flatten(1, 2)
    return t


def from_block(x: Tensor, layout: str, like: Tensor | None = None) -> Tensor:
    """``[B, d]`` / ``[B, T, d]`` -> host layout; spatial layouts take the shape of ``like``."""
    if layout in SPATIAL:
        if like is None:
            raise ValueError(f"from_block({layout!r}) needs the host tensor's shape (like=)")
        if layout == "BDHW":
            return x.transpose(1, 2).reshape(like.shape)
        return x.reshape(like.shape)
    return to_block(x, layout)  # both transposes are their own inverse


def feature_axis(layout: str) -> int:
    return {"BD": 1, "BTD": 2, "TBD": 2, "BDT": 1, "BDHW": 1, "BHWD": 3}[layout]


def positions(t: Tensor, layout: str) -> int | None:
    """How many tokens the block sees from ``t`` (None for ``BD``: one vector per sample)."""
    if layout == "BD":
        return None
    if layout in SPATIAL:
        h, w = (t.shape[2], t.shape[3]) if layout == "BDHW" else (t.shape[1], t.shape[2])
        return int(h * w)
    return int(t.shape[{"BTD": 1, "TBD": 0, "BDT": 2}[layout]])


# ---------------------------------------------------------------------- packed sequences
def packed_index(ps: PackedSequence) -> tuple[Tensor, Tensor, int, int]:
    """Where each row of ``ps.data`` sits in the padded ``[B, T, d]`` view: ``(b, t, B, T)``."""
    sizes = ps.batch_sizes.cpu()
    steps = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    rows = torch.cat([torch.arange(int(n)) for n in sizes])
    batch = ps.sorted_indices.cpu()[rows] if ps.sorted_indices is not None else rows
    device = ps.data.device
    return batch.to(device), steps.to(device), int(sizes[0]), len(sizes)


def unpack(ps: PackedSequence) -> tuple[Tensor, Tensor]:
    """A ``PackedSequence`` as padded ``[B, T, d]`` (zeros at padding) and its ``[B, T]`` mask."""
    b, t, batch, steps = packed_index(ps)
    data = ps.data
    padded = data.new_zeros(batch, steps, data.shape[-1]).index_put((b, t), data)
    mask = torch.zeros(batch, steps, dtype=torch.bool, device=data.device)
    mask[b, t] = True
    return padded, mask


def repack(ps: PackedSequence, padded: Tensor) -> Tensor:
    """The rows of ``ps.data`` taken back from a padded ``[B, T, d]`` tensor."""
    b, t, _, _ = packed_index(ps)
    return padded[b, t]


def with_data(ps: PackedSequence, data: Tensor) -> PackedSequence:
    """``ps`` with other data rows (same lengths and order)."""
    return PackedSequence(data, ps.batch_sizes, ps.sorted_indices, ps.unsorted_indices)


# ---------------------------------------------------------------------- containers
def get_element(value: Any, index: Any) -> Any:
    """The element a site names inside a layer's output (or positional inputs)."""
    if index is None:
        return value
    if isinstance(index, tuple):
        for i in index:
            value = get_element(value, i)
        return value
    if isinstance(value, Tensor):  # tensor[i] would silently pick a row
        raise TypeError(
            f"the value is a tensor of shape {tuple(value.shape)}, not a container; "
            "leave index=None"
        )
    if isinstance(index, int):
        return value[index]
    if isinstance(value, Mapping):
        return value[index]
    return getattr(value, index)


def set_element(value: Any, index: Any, new: Any) -> Any:
    """A copy of ``value`` with the element at ``index`` replaced; the original is not mutated."""
    if index is None:
        return new
    if isinstance(index, tuple):
        if len(index) == 1:
            return set_element(value, index[0], new)
        inner = set_element(get_element(value, index[0]), index[1:], new)
        return set_element(value, index[0], inner)
    if isinstance(value, tuple):
        items = list(value)
        items[index] = new
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        items = list(value)
        items[index] = new
        return items
    if type(value) is dict:  # a plain dict: rebuilt (traceable by torch.compile)
        return {**value, index: new}
    if dataclasses.is_dataclass(value) and not isinstance(value, Mapping):
        return dataclasses.replace(value, **{str(index): new})  # type: ignore[type-var]
    out = copy.copy(value)
    if isinstance(out, dict):
        out[index] = new
    else:
        setattr(out, str(index), new)
    return out
