"""Tiny hosts with stable layer names, covering the shapes sites must handle.

Each case: a factory (seeded, so two calls give the same weights), example inputs, and the sites
(or junction) that put a block into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pgm_plugins import Junction, Site
from pgm_plugins.toy import LateFusion


class DictEncoders(nn.Module):
    """Encoders return dicts; the host reads ``["feat"]``."""

    class Enc(nn.Module):
        def __init__(self, d_in: int, d: int) -> None:
            super().__init__()
            self.lin = nn.Linear(d_in, d)

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"feat": torch.tanh(self.lin(x)), "norm": x.norm(dim=-1)}

    def __init__(self) -> None:
        super().__init__()
        self.enc_a, self.enc_b = self.Enc(5, 6), self.Enc(3, 4)
        self.out = nn.Linear(10, 2)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.out(torch.cat([self.enc_a(a)["feat"], self.enc_b(b)["feat"]], -1))


@dataclass
class EncoderOutput:
    """A model-output object (attributes, not a mapping), like many zoos return."""

    last_hidden_state: Tensor
    pooled: Tensor


class ObjectOutputs(nn.Module):
    """Encoders return ``EncoderOutput``; the site reads its ``pooled`` attribute."""

    class Enc(nn.Module):
        def __init__(self, d_in: int, d: int) -> None:
            super().__init__()
            self.lin = nn.Linear(d_in, d)

        def forward(self, x: Tensor) -> EncoderOutput:
            seq = self.lin(x)
            return EncoderOutput(last_hidden_state=seq, pooled=seq.mean(1))

    def __init__(self) -> None:
        super().__init__()
        self.text, self.image = self.Enc(3, 6), self.Enc(4, 5)
        self.out = nn.Linear(11, 1)

    def forward(self, t: Tensor, i: Tensor) -> Tensor:
        a, b = self.text(t), self.image(i)
        return self.out(torch.cat([a.pooled, b.pooled], -1))


class ConvSeq(nn.Module):
    """Channel-first Conv1d encoders ``[B, C, T]`` (layout BDT), different lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv1d(3, 6, 1), nn.Conv1d(2, 4, 1)
        self.out = nn.Linear(10, 1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        ha, hb = self.conv_a(a), self.conv_b(b)
        return self.out(torch.cat([ha.mean(-1), hb.mean(-1)], -1))


class SharedEncoder(nn.Module):
    """One encoder called twice per forward (once per modality): sites choose the call."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 6)
        self.out = nn.Linear(12, 1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.out(torch.cat([self.enc(a), self.enc(b)], -1))


class InputSites(nn.Module):
    """The modalities are read at the inputs of the fusion layer (a forward pre-hook)."""

    class Fuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(11, 1)

        def forward(self, a: Tensor, b: Tensor) -> Tensor:
            return self.lin(torch.cat([a, b], -1))

    def __init__(self) -> None:
        super().__init__()
        self.enc_a, self.enc_b = nn.Linear(3, 5), nn.Linear(4, 6)
        self.fuse = self.Fuse()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.fuse(torch.relu(self.enc_a(a)), torch.relu(self.enc_b(b)))


class Concat(nn.Module):
    """Modalities concatenated into one tensor before a layer: a junction."""

    def __init__(self) -> None:
        super().__init__()
        self.enc_a, self.enc_b = nn.Linear(3, 5), nn.Linear(4, 6)
        self.mix = nn.Identity()
        self.out = nn.Linear(11, 1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.out(self.mix(torch.cat([self.enc_a(a), self.enc_b(b)], -1)))


class EarlyRead(nn.Module):
    """Reads modality a (``a * 2``) before modality b is produced: joint mode must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.enc_a, self.enc_b = nn.Linear(3, 4), nn.Linear(3, 4)
        self.out = nn.Linear(8, 1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        ha = self.enc_a(a)
        ha2 = ha * 2
        return self.out(torch.cat([ha2, self.enc_b(b + ha.mean())], -1))


def _seeded(cls: Callable[..., nn.Module], *args: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return cls(*args)

    return build


def _randn(*shapes: tuple[int, ...]) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randn(*s, generator=g) for s in shapes)


@dataclass
class Case:
    id: str
    factory: Callable[[], nn.Module]
    inputs: tuple[Tensor, ...]
    sites: dict[str, Any] | None = None
    junction: Junction | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _two_tower() -> nn.Module:
    from pgm_example_plugin import TwoTower

    torch.manual_seed(0)
    return TwoTower()


CASES = [
    Case(
        "vectors",
        _seeded(LateFusion),
        _randn((3, 16), (3, 8)),
        {"text": "encoders.text", "audio": "encoders.audio"},
    ),
    Case(
        "tuple-seq-first",
        _two_tower,
        _randn((5, 3, 6), (7, 3, 4)),
        {
            "image": Site("image", index=0, layout="TBD"),
            "sound": Site("sound", index=0, layout="TBD"),
        },
    ),
    Case(
        "dict-output",
        _seeded(DictEncoders),
        _randn((3, 5), (3, 3)),
        {"a": Site("enc_a", index="feat"), "b": Site("enc_b", index="feat")},
    ),
    Case(
        "object-output",
        _seeded(ObjectOutputs),
        _randn((3, 4, 3), (3, 6, 4)),
        {"text": Site("text", index="pooled"), "image": Site("image", index="pooled")},
    ),
    Case(
        "channel-first",
        _seeded(ConvSeq),
        _randn((3, 3, 5), (3, 2, 4)),
        {"a": "conv_a", "b": Site("conv_b", layout="BDT")},
    ),
    Case(
        "called-twice",
        _seeded(SharedEncoder),
        _randn((3, 4), (3, 4)),
        {"a": Site("enc", call=0), "b": Site("enc", call=1)},
    ),
    Case(
        "input-sites",
        _seeded(InputSites),
        _randn((3, 3), (3, 4)),
        {"a": Site("fuse", at="input", index=0), "b": Site("fuse", at="input", index=1)},
    ),
    Case(
        "junction",
        _seeded(Concat),
        _randn((3, 3), (3, 4)),
        junction=Junction("mix", widths={"a": 5, "b": 6}),
    ),
]
